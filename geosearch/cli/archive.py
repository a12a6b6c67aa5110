"""`geosearch index`, `import`, `scenes`, `remove` and `stats`: the archive."""

import json
import time
from contextlib import nullcontext
from pathlib import Path

import click
import geopandas as gpd
import torch
from rich.progress import Progress

from geosearch.acquired import parse_date
from geosearch.cli.main import PROGRESS_COLUMNS, cli, print_error, stderr
from geosearch.cli.options import (
    model_options,
    open_archive,
    plan_all,
    scene_arguments,
    scene_paths,
    store_options,
    through_server,
    tiling_from,
    tiling_options,
)
from geosearch.embedding_files import import_into, read_embeddings
from geosearch.encoder.checkpoint import Checkpoint
from geosearch.encoder.default import open_model
from geosearch.encoder.device import describe_device, resolve_device
from geosearch.errors import GeosearchError, SceneError, StoreServed
from geosearch.export import check_output_path, scenes_frame, write_features
from geosearch.grid import GridMode
from geosearch.index import archive_grid, archive_stretches, index_scenes
from geosearch.stac import Sources
from geosearch.store import open_backend
from geosearch.store.archive import Archive
from geosearch.store.backend import HNSW_MIN_TILES
from geosearch.tiling import TilingOptions


@cli.command()
@scene_arguments
@tiling_options
@model_options
@store_options
@click.option("--acquired", default="auto", show_default=True,
              help="Acquisition date (2020-05-18) for every scene, or 'auto': from tags, else the file name.")
@click.option("--force", is_flag=True, help="Index again scenes that are complete already.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars, no summary.")
def index(scenes: tuple[str, ...], recursive: bool, assets: tuple[str, ...] | None, model_spec: str, device: str,
          runtime: str, batch_size: int, workers: int | None, compile_model: bool, store: str | None,
          qdrant_url: str | None, api_key: str | None, collection: str, acquired: str, force: bool, as_json: bool,
          quiet: bool, **kwargs) -> None:
    """Tile, embed and store SCENES in the archive; scenes complete already are left as they are."""
    sources = scene_paths(scenes, recursive, assets)
    given = None if acquired == "auto" else parse_date(acquired)
    checkpoint = open_model(model_spec)
    torch_device = resolve_device(device)
    grid = GridMode(kwargs["grid"]) if kwargs["grid"] else None
    try:
        with open_archive(store, qdrant_url, api_key, collection, checkpoint.model_id, checkpoint.config.dim,
                          grid or GridMode.ALIGNED) as archive:
            summary, failures = index_into(archive, sources, tiling_from(kwargs), checkpoint, torch_device,
                                           show=not (quiet or as_json), grid=grid,
                                           stretch_from=kwargs["stretch_from"], acquired=given,
                                           auto_acquired=acquired == "auto", force=force, batch_size=batch_size,
                                           workers=workers, compile=compile_model, runtime=runtime)
    except StoreServed as served:
        summary, failures = index_through(served, collection, sources, checkpoint, force, not (quiet or as_json))
    if as_json:
        click.echo(json.dumps(summary | {"errors": [{"path": f.path, "error": f.problem} for f in failures]}, indent=2))
    elif not quiet:
        for note in summary["retiled"] + summary["off_lattice"] + summary["rewritten"] + summary["replaced"]:
            click.echo(f"note: {note}")
        click.echo(f"{summary['indexed']} scene(s) indexed, {summary['unchanged']} unchanged, {len(failures)} failed: "
                   f"{summary['tiles_stored']} tiles stored, {summary['tiles_skipped']} skipped, "
                   f"{summary['seconds']:.1f} s ({summary['tiles_per_s']} tiles/s); "
                   + (f"by geosearch serve at {summary['server']}" if "server" in summary else
                      f"{summary['tiles_in_store']} tiles in the store"
                      + (f", HNSW built in {summary['hnsw_seconds']:.1f} s" if summary["hnsw_seconds"] else "")))
    if failures:
        raise click.exceptions.Exit(1)


def index_into(archive: Archive, sources: Sources, options: TilingOptions, checkpoint: Checkpoint,
               device: torch.device, show: bool, grid: GridMode | None = None, stretch_from: tuple[str, ...] = (),
               **index_options) -> tuple[dict, list[SceneError]]:
    """Plan, embed and store the scenes on the archive's grid (`grid`: the one asked for, if any) with its
    stretches, then build HNSW where the store's rule calls for it; returns the summary and every scene that
    failed. `show`: progress bars and the model/store line."""
    start = time.perf_counter()
    if show:
        click.echo(f"model {checkpoint.model_id} on {describe_device(device)}, "
                   f"store {archive.backend.location} ({archive.collection})")
    options = archive_grid(archive, options, grid)
    profiles = archive_stretches(archive, options, stretch_from)
    planned, failures = plan_all(sources, options, profiles)
    with Progress(*PROGRESS_COLUMNS, console=stderr, disable=not show, transient=True) as progress:
        task = progress.add_task("tiles", total=sum(len(p.grid) for p in planned))
        report = index_scenes(archive, checkpoint, planned, options, device, profiles=profiles,
                              on_tiles=lambda n: progress.advance(task, n), **index_options)
    with stderr.status("building the HNSW graph (minutes for a large archive)") \
            if show and archive.tile_count() >= HNSW_MIN_TILES else nullcontext():
        graph_start = time.perf_counter()
        optimized = archive.optimize()
        graph_seconds = time.perf_counter() - graph_start
    in_hnsw = archive.backend.indexed_count(archive.collection)
    for error in report.failed:
        print_error(error)
    seconds = time.perf_counter() - start
    summary = {"indexed": len(report.indexed), "unchanged": len(report.unchanged),
               "failed": len(failures) + len(report.failed), "tiles_stored": report.tiles_stored,
               "tiles_skipped": report.tiles_skipped, "tiles_in_store": archive.tile_count(),
               "tiles_in_hnsw": in_hnsw, "hnsw_seconds": round(graph_seconds, 3) if optimized and in_hnsw else 0,
               "seconds": round(seconds, 3),
               "grid": str(options.grid), "retiled": report.retiled, "off_lattice": report.off_lattice,
               "rewritten": report.rewritten, "replaced": report.replaced,
               "tiles_per_s": round(report.tiles_stored / seconds, 2) if seconds else None}
    return summary, failures + report.failed


def index_through(served: StoreServed, collection: str, sources: Sources, checkpoint: Checkpoint, force: bool,
                  show: bool) -> tuple[dict, list[SceneError]]:
    """index_into's work done by the `geosearch serve` that holds the store, as one of its index jobs: with the
    archive's tiling and stretches, and the server's model, which must be the one asked for. Its API takes raster
    files, not STAC."""
    if sources.described or sources.failures:
        raise GeosearchError(f"{served.url}: the geosearch serve holding the store indexes raster files, not STAC "
                             "catalogs: give it the files, or stop the server")
    paths = sources.paths
    client = through_server(served, collection, {"scenes", "recursive", "model_spec", "device", "runtime",
                                                 "batch_size", "workers", "compile_model", "force", "as_json",
                                                 "quiet"})
    served_model = client.health()["model_id"]
    if served_model != checkpoint.model_id:
        raise GeosearchError(f"{served.url}: the geosearch serve holding the store embeds with {served_model}, "
                             f"not {checkpoint.model_id}")
    start = time.perf_counter()
    with Progress(*PROGRESS_COLUMNS, console=stderr, disable=not show, transient=True) as progress:
        task = progress.add_task("tiles (geosearch serve)")
        job = client.index([str(Path(path).resolve()) for path in paths], force,
                           lambda done, total: progress.update(task, completed=done, total=total or None))
    failures = [SceneError(error["path"] or served.url, error["error"]) for error in job["errors"]]
    for error in failures:
        print_error(error)
    seconds = time.perf_counter() - start
    summary = job["summary"] or {"indexed": 0, "unchanged": 0, "tiles_stored": 0, "tiles_skipped": 0,
                                 "retiled": [], "off_lattice": [], "rewritten": [], "replaced": []}
    return summary | {"failed": len(failures), "seconds": round(seconds, 3), "server": served.url,
                      "tiles_per_s": round(summary["tiles_stored"] / seconds, 2)}, failures


@cli.command()
@store_options
@click.option("--geojson", type=click.Path(dir_okay=False), help="Write the scenes' footprints to this file.")
@click.option("--json", "as_json", is_flag=True, help="Print the scene records as JSON.")
def scenes(store: str | None, qdrant_url: str | None, api_key: str | None, collection: str, geojson: str | None,
           as_json: bool) -> None:
    """List the archive's scenes: status, tile count, acquisition date, path."""
    out = check_output_path(geojson) if geojson else None
    try:
        with open_archive(store, qdrant_url, api_key, collection) as archive:
            records = archive.scenes()
        frame = scenes_frame(records)
    except StoreServed as served:  # the server's footprints carry the records' main fields
        footprints = through_server(served, collection, {"geojson", "as_json"}).scenes()
        frame = gpd.GeoDataFrame.from_features(footprints, crs=4326)
        records = [feature["properties"] for feature in footprints["features"]]
    if out:
        write_features(frame, out)
    if as_json:
        click.echo(json.dumps(records, indent=2))
        return
    for r in records:
        click.echo(f"{r['status']:<9} {r['tiles']:>7} tiles  {(r.get('acquired') or '-')[:10]:<10}  {r['path']}  "
                   f"({r['scene_id']})")
    click.echo(f"{len(records)} scene(s)" + (f"; wrote {out}" if out else ""))


@cli.command()
@click.argument("scene")
@store_options
def remove(scene: str, store: str | None, qdrant_url: str | None, api_key: str | None, collection: str) -> None:
    """Remove SCENE (its id, or its path) and all of its tiles from the archive."""
    with open_archive(store, qdrant_url, api_key, collection) as archive:
        for record in archive.find_scenes(scene):
            tiles = archive.remove_scene(record["scene_id"])
            click.echo(f"removed {record['path']} ({record['scene_id']}): {tiles} tiles")


@cli.command("import")
@click.argument("file", type=click.Path(dir_okay=False, exists=True))
@store_options
@click.option("--model-id", help="The model of a file that does not record it (the same model id, the same space).")
def import_file(file: str, store: str | None, qdrant_url: str | None, api_key: str | None, collection: str,
                model_id: str | None) -> None:
    """Load a GeoParquet embedding file (geosearch's, or made elsewhere: Earth Index, Major TOM, Clay…) into the
    archive, in a collection of its model; its tiles are then searched by tile id like any other."""
    embeddings = read_embeddings(file, model_id)
    with open_backend(store, qdrant_url, api_key, create=True) as backend:
        report = import_into(backend, embeddings, collection)
    click.echo(f"imported {report.tiles} tiles of {report.scenes} scene(s), model {report.model_id}, into collection "
               f"{report.collection!r}")


@cli.command()
@store_options
@click.option("--check", is_flag=True, help="Also read every stored vector to check the store (a minute a million "
                                            "tiles); the quick checks always run.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def stats(store: str | None, qdrant_url: str | None, api_key: str | None, collection: str, check: bool,
          as_json: bool) -> None:
    """The archive at a glance: store, model, scenes by status, tiles; one error line if the store is damaged."""
    try:
        with open_archive(store, qdrant_url, api_key, collection) as archive:
            info = archive.stats(thorough=check)
    except StoreServed as served:
        info = through_server(served, collection, {"as_json"}).stats()
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    for key, value in info.items():
        click.echo(f"{key:>16}: {value}")
