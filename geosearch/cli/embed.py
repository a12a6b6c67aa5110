"""`geosearch embed`."""

import json
import time
from collections.abc import Iterator

import click
from rich.progress import Progress, TaskID

from geosearch.cli.main import PROGRESS_COLUMNS, cli, print_error, stderr
from geosearch.cli.options import model_options, plan_all, scene_arguments, scene_paths, tiling_from, tiling_options
from geosearch.embed import EmbeddedBatch, embed_scenes, gather
from geosearch.embedding_files import write_embeddings
from geosearch.encoder.default import open_model
from geosearch.encoder.device import describe_device, resolve_device
from geosearch.encoder.runtime import load_encoder
from geosearch.errors import GeosearchError
from geosearch.export import check_output_path
from geosearch.index import scene_record


def _track(results: Iterator, progress: Progress, task: TaskID) -> Iterator:
    for result in results:
        if isinstance(result, EmbeddedBatch):
            progress.advance(task, result.read)
        yield result


@cli.command()
@scene_arguments
@tiling_options
@model_options
@click.option("-o", "--out", type=click.Path(dir_okay=False), required=True,
              help="GeoParquet embedding file: one row per kept tile, its footprint, window and vector.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars, no summary.")
def embed(scenes: tuple[str, ...], recursive: bool, assets: tuple[str, ...] | None, model_spec: str, device: str,
          runtime: str, batch_size: int, workers: int | None, compile_model: bool, out: str, as_json: bool,
          quiet: bool, **kwargs) -> None:
    """Embed the tiles of SCENES and write their vectors with footprints to a GeoParquet file."""
    out_path = check_output_path(out)
    if out_path.suffix.lower() != ".parquet":
        raise GeosearchError(f"{out_path}: embeddings are written as GeoParquet; use a .parquet file")
    sources = scene_paths(scenes, recursive, assets)
    checkpoint = open_model(model_spec)
    torch_device = resolve_device(device)
    options = tiling_from(kwargs)
    if not (quiet or as_json):
        click.echo(f"model {checkpoint.model_id} ({checkpoint.config.dim}-d) on {describe_device(torch_device)}")
    start = time.perf_counter()
    profiles = options.profile_stretches(stretch_from=kwargs["stretch_from"])
    planned, failures = plan_all(sources, options, profiles)
    encoder = load_encoder(checkpoint, torch_device, runtime, compile_model)
    results = embed_scenes(encoder, planned, options, torch_device, batch_size, workers, compile_model)
    with Progress(*PROGRESS_COLUMNS, console=stderr, disable=quiet or as_json, transient=True) as progress:
        task = progress.add_task("tiles", total=sum(len(p.grid) for p in planned))
        done, failed = gather(_track(results, progress, task), planned)
    for error in failed:
        print_error(error)
    failures += failed
    seconds = time.perf_counter() - start
    embedded = sum(len(s.indexes) for s in done)
    read = sum(len(s.planned.grid) for s in done)
    if done:
        records = [scene_record(s.planned, options, checkpoint.model_id, s.planned.summary["acquired"]) for s in done]
        pages = ((s.to_frame(checkpoint.model_id).assign(acquired=record["acquired"]), s.vectors)
                 for s, record in zip(done, records, strict=True))
        # The stretches this run set, so that an import shares them with the scenes indexed after it.
        stretches = {profile: stretch.to_dict() for profile, stretch in profiles.added.items()} if profiles else None
        write_embeddings(out_path, pages, checkpoint.model_id, records, stretches, options.grid.value)
    summary = {"model_id": checkpoint.model_id, "device": describe_device(torch_device), "scenes": len(done),
               "failed": [{"path": f.path, "error": f.problem} for f in failures], "tiles_embedded": embedded,
               "tiles_skipped": read - embedded, "seconds": round(seconds, 3),
               "tiles_per_s": round(embedded / seconds, 2) if seconds else None, "out": str(out_path) if done else None}
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    elif not quiet:
        failed_text = f", {len(failures)} failed" if failures else ""
        click.echo(f"{len(done)} scene(s){failed_text}: {embedded} tiles embedded, {read - embedded} skipped, "
                   f"{seconds:.1f} s ({summary['tiles_per_s']} tiles/s)")
        if done:
            click.echo(f"wrote {out_path}")
    if failures:
        raise click.exceptions.Exit(1)
