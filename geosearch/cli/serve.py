"""`geosearch serve`: the HTTP API, holding the model and the store for as long as it runs."""

import ipaddress
from pathlib import Path

import click

from geosearch.cli.main import cli
from geosearch.cli.options import open_archive, store_options
from geosearch.encoder.default import open_model
from geosearch.encoder.device import DEVICES, describe_device, resolve_device
from geosearch.errors import GeosearchError


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind; others need --token.")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True)
@click.option("--token", envvar="GEOSEARCH_TOKEN", help="Required as 'Authorization: Bearer TOKEN' on every request.")
@click.option("--root", "roots", multiple=True, type=click.Path(file_okay=False, exists=True),
              help="An archive root: POST /index takes files under it only. Repeatable.")
@click.option("--model", "model_spec", default="default", show_default=True, envvar="GEOSEARCH_MODEL",
              help="A checkpoint file, 'default' or 'pretrained'.")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True, envvar="GEOSEARCH_DEVICE")
@store_options
def serve(host: str, port: int, token: str | None, roots: tuple[str, ...], model_spec: str, device: str,
          store: str | None, qdrant_url: str | None, api_key: str | None, collection: str) -> None:
    """Serve search, scenes, thumbnails and indexing over HTTP (OpenAPI at /docs)."""
    import uvicorn

    from geosearch.service.app import Service, create_app
    from geosearch.service.locked import LockedBackend

    if not _is_loopback(host) and not token:
        raise GeosearchError(f"binding {host} exposes the archive beyond this machine: give --token "
                             "(or GEOSEARCH_TOKEN)")
    checkpoint, torch_device = open_model(model_spec), resolve_device(device)
    with open_archive(store, qdrant_url, api_key, collection, checkpoint.model_id, checkpoint.config.dim) as archive:
        archive.backend = LockedBackend(archive.backend)
        service = Service(archive, checkpoint, torch_device, [Path(r).resolve() for r in roots], token)
        click.echo(f"geosearch serve: model {checkpoint.model_id} on {describe_device(torch_device)}, "
                   f"store {archive.backend.location} ({collection}); http://{host}:{port}/docs")
        uvicorn.run(create_app(service), host=host, port=port, log_level="warning")
