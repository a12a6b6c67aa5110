"""`geosearch serve`: the HTTP API, holding the model and the store for as long as it runs."""

import ipaddress
import signal
from contextlib import nullcontext
from pathlib import Path

import click

from geosearch.cli.main import cli
from geosearch.cli.options import open_archive, runtime_option, store_options
from geosearch.encoder.default import open_model
from geosearch.encoder.device import DEVICES, describe_device, resolve_device
from geosearch.errors import GeosearchError
from geosearch.store import served_at


def _local_url(host: str, port: int) -> str:
    """Where a client on this machine reaches a server bound to `host`."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _exit_cleanly(signum: int, _frame: object) -> None:
    """uvicorn stops on SIGTERM, then raises the signal again: exiting here instead lets the store be flushed
    and closed, and the server's record beside its lock removed."""
    raise SystemExit(128 + signum)


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
@click.option("--token", envvar="GEOSEARCH_TOKEN",
              help="Required on every request: 'Authorization: Bearer TOKEN', or as HTTP Basic auth's password.")
@click.option("--root", "roots", multiple=True, type=click.Path(file_okay=False, exists=True),
              help="An archive root: POST /index takes files under it only. Repeatable.")
@click.option("--model", "model_spec", default="default", show_default=True, envvar="GEOSEARCH_MODEL",
              help="A checkpoint file, 'default' or 'pretrained'.")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True, envvar="GEOSEARCH_DEVICE")
@runtime_option
@click.option("--threads", type=click.IntRange(1, 1024), help="Requests worked on at once; the others wait their "
              "turn (default: twice the cores, since most of a search holds Python's lock).")
@store_options
def serve(host: str, port: int, token: str | None, roots: tuple[str, ...], model_spec: str, device: str, runtime: str,
          threads: int | None, store: str | None, qdrant_url: str | None, api_key: str | None,
          collection: str) -> None:
    """Serve search, scenes, thumbnails and indexing over HTTP (OpenAPI at /docs)."""
    import uvicorn

    from geosearch.service.app import THREADS, Service, create_app
    from geosearch.service.locked import LockedBackend

    if not _is_loopback(host) and not token:
        raise GeosearchError(f"binding {host} exposes the archive beyond this machine: give --token "
                             "(or GEOSEARCH_TOKEN)")
    checkpoint, torch_device = open_model(model_spec), resolve_device(device)
    url = _local_url(host, port)
    signal.signal(signal.SIGTERM, _exit_cleanly)
    with open_archive(store, qdrant_url, api_key, collection, checkpoint.model_id, checkpoint.config.dim) as archive, \
            nullcontext() if qdrant_url else served_at(store, url):
        archive.backend = LockedBackend(archive.backend)
        service = Service(archive, checkpoint, torch_device, [Path(r).resolve() for r in roots], token, runtime)
        click.echo(f"geosearch serve: model {checkpoint.model_id} on {describe_device(torch_device)} "
                   f"({service.runtime_name}), "
                   f"store {archive.backend.location} ({collection}); {url}/docs")
        uvicorn.run(create_app(service, threads or THREADS), host=host, port=port, log_level="warning")
