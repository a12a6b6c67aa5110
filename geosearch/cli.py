"""The `geosearch` command: parses options, calls the engine, prints. No logic of its own."""

import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import click
import geopandas as gpd
import pandas as pd
import shapely
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from geosearch import __version__
from geosearch.acquired import parse_date
from geosearch.bands import parse_bands
from geosearch.config import load_config
from geosearch.data import shipped_scenes
from geosearch.embed import DEFAULT_BATCH_SIZE, EmbeddedBatch, PlannedScene, embed_scenes, gather, plan_scene
from geosearch.encoder.backbones import BACKBONES
from geosearch.encoder.checkpoint import Checkpoint, save_checkpoint
from geosearch.encoder.default import open_model
from geosearch.encoder.device import DEVICES, describe_device, resolve_device
from geosearch.encoder.pooling import POOLINGS
from geosearch.encoder.pretrained import WEIGHT_SETS, pretrained_encoder
from geosearch.errors import GeosearchError, SceneError
from geosearch.export import check_output_path, write_features
from geosearch.grid import EdgeMode
from geosearch.index import index_scenes
from geosearch.scene import find_scenes
from geosearch.store import open_backend
from geosearch.store.archive import Archive
from geosearch.tiling import DEFAULT_MIN_VALID, DEFAULT_TILE_SIZE, Survey, TilingOptions, survey

log = logging.getLogger("geosearch")
stderr = Console(stderr=True)


class _Group(click.Group):
    """Turns a GeosearchError anywhere below into click's one-line 'Error: …' and exit status 1."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except GeosearchError as error:
            raise click.ClickException(str(error)) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="geosearch")
@click.option("-v", "--verbose", is_flag=True, help="Also show GDAL's own warnings and debug messages.")
@click.pass_context
def cli(ctx: click.Context, verbose: bool) -> None:
    """Search satellite and aerial archives by what the land looks like."""
    logging.basicConfig(format="%(levelname)s: %(message)s", level=logging.DEBUG if verbose else logging.WARNING)
    logging.getLogger("rasterio").setLevel(logging.DEBUG if verbose else logging.CRITICAL)
    ctx.default_map = load_config()


def _bands(_ctx: click.Context, _param: click.Parameter, value: str | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        return parse_bands(value)
    except GeosearchError as error:
        raise click.BadParameter(str(error)) from None


def tiling_options(command: Callable) -> Callable:
    """The options that say how scenes are cut, shared by every command that reads scenes."""
    options = [
        click.option("--tile-size", type=click.IntRange(min=8), default=DEFAULT_TILE_SIZE, show_default=True,
                     envvar="GEOSEARCH_TILE_SIZE", help="Tile side in pixels of the tiling grid."),
        click.option("--stride", type=click.IntRange(min=1), envvar="GEOSEARCH_STRIDE",
                     help="Step between tiles in pixels; less than --tile-size makes tiles overlap. "
                          "[default: tile size]"),
        click.option("--edge", type=click.Choice([mode.value for mode in EdgeMode]), default=EdgeMode.SHIFT.value,
                     show_default=True, envvar="GEOSEARCH_EDGE",
                     help="Edge tiles: shift inward to end on the edge, pad with nodata, or drop."),
        click.option("--gsd", type=click.FloatRange(min=0, min_open=True), envvar="GEOSEARCH_GSD",
                     help="Resample to this ground sampling distance in metres. [default: native]"),
        click.option("--bands", callback=_bands, metavar="B[,G,B]",
                     help="1-based bands to show as red,green,blue, or one band as grey. [default: RGB by colour "
                          "interpretation or band description, else 1,2,3]"),
        click.option("--nodata", type=float, help="Treat this value as nodata (overrides the file's)."),
        click.option("--min-valid", type=click.FloatRange(0, 1), default=DEFAULT_MIN_VALID, show_default=True,
                     envvar="GEOSEARCH_MIN_VALID", help="Skip tiles with a smaller fraction of valid pixels."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _tiling(kwargs: dict) -> TilingOptions:
    return TilingOptions(
        tile_size=kwargs["tile_size"],
        stride=kwargs["stride"],
        edge=EdgeMode(kwargs["edge"]),
        gsd=kwargs["gsd"],
        bands=kwargs["bands"],
        nodata=kwargs["nodata"],
        min_valid=kwargs["min_valid"],
    )


PROGRESS_COLUMNS = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())


def _print_error(error: Exception) -> None:
    stderr.print(f"[red]error:[/red] {error}", markup=True, highlight=False, soft_wrap=True)


def _advance(progress: Progress, task: TaskID, done: int, total: int) -> None:
    progress.update(task, completed=done, total=total)


def _survey_all(paths: list[str], options: TilingOptions, quiet: bool) -> tuple[list[Survey], list[SceneError]]:
    """Survey each scene with a progress bar; a bad scene is reported and the rest go on."""
    surveys, failures = [], []
    with Progress(*PROGRESS_COLUMNS, console=stderr, disable=quiet, transient=True) as progress:
        scenes = progress.add_task("scenes", total=len(paths))
        for path in paths:
            tiles = progress.add_task(Path(path).name, total=None)
            try:
                surveys.append(survey(path, options, partial(_advance, progress, tiles)))
            except SceneError as error:
                failures.append(error)
                _print_error(error)
            progress.remove_task(tiles)
            progress.advance(scenes)
    return surveys, failures


def _report(surveys: list[Survey], failures: list[SceneError], seconds: float, out: Path | None, as_json: bool,
            quiet: bool) -> None:
    kept = sum(int(s.kept.sum()) for s in surveys)
    skipped = sum(int((~s.kept).sum()) for s in surveys)
    if as_json:
        click.echo(json.dumps({
            "scenes": [s.scene | {"tiles": len(s.grid), "kept": int(s.kept.sum())} for s in surveys],
            "failed": [{"path": f.path, "error": f.problem} for f in failures],
            "tiles_kept": kept, "tiles_skipped": skipped, "seconds": round(seconds, 3),
            "out": str(out) if out else None,
        }, indent=2))
        return
    if quiet:
        return
    for s in surveys:
        scene = s.scene
        click.echo(f"{Path(scene['path']).name}: {int(s.kept.sum())} tiles kept, {int((~s.kept).sum())} skipped "
                   f"({scene['crs']}, {s.grid.gsd_m:.3g} m, bands {scene['bands']}, "
                   f"stretch {scene['stretch']['source']})")
    rate = (kept + skipped) / seconds if seconds > 0 else 0.0
    failed = f", {len(failures)} failed" if failures else ""
    click.echo(f"{len(surveys)} scene(s){failed}: {kept} tiles kept, {skipped} skipped, "
               f"{seconds:.1f} s ({rate:.0f} tiles/s)")
    if out:
        click.echo(f"wrote {out}")


def _tile(paths: list[str], options: TilingOptions, out: Path | None, include_skipped: bool, as_json: bool,
          quiet: bool) -> None:
    start = time.perf_counter()
    surveys, failures = _survey_all(paths, options, quiet or as_json)
    if out and surveys:
        frame = pd.concat([s.to_frame(include_skipped) for s in surveys], ignore_index=True)
        write_features(gpd.GeoDataFrame(frame, geometry="geometry", crs=4326), out)
    _report(surveys, failures, time.perf_counter() - start, out if surveys else None, as_json, quiet)
    if failures:
        raise click.exceptions.Exit(1)


@cli.command()
@click.argument("scenes", nargs=-1, required=True)
@click.option("-r", "--recursive", is_flag=True, help="Look for rasters in subdirectories of directory arguments.")
@tiling_options
@click.option("-o", "--out", type=click.Path(dir_okay=False), help="Write the tiles to .geojson, .gpkg or .parquet.")
@click.option("--include-skipped", is_flag=True, help="Also write skipped tiles, with kept=false.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars, no summary.")
def tile(scenes: tuple[str, ...], recursive: bool, out: str | None, include_skipped: bool, as_json: bool,
         quiet: bool, **kwargs) -> None:
    """Cut SCENES (files, or directories of rasters) into tiles and report the grid with footprints."""
    out_path = check_output_path(out) if out else None
    paths = find_scenes(list(scenes), recursive)
    if not paths:
        raise GeosearchError(f"no rasters found in {', '.join(scenes)}")
    _tile(paths, _tiling(kwargs), out_path, include_skipped, as_json, quiet)


@cli.command()
@click.option("--out-dir", type=click.Path(file_okay=False), default="geosearch-demo", show_default=True,
              help="Where the demo writes its results.")
def demo(out_dir: str) -> None:
    """Tile the scenes shipped with geosearch and write their tile grid as GeoJSON."""
    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    paths = [str(p) for p in shipped_scenes()]
    _tile(paths, TilingOptions(), directory / "tiles.geojson", include_skipped=True, as_json=False, quiet=False)
    click.echo("open it in QGIS (or any GIS) over the scenes in " + str(Path(paths[0]).parent))


def model_options(command: Callable) -> Callable:
    """The options that say which model embeds, and where."""
    options = [
        click.option("--model", "model_spec", default="default", show_default=True, envvar="GEOSEARCH_MODEL",
                     help="A checkpoint file, or 'default'."),
        click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True,
                     envvar="GEOSEARCH_DEVICE", help="Where to run the encoder; auto takes CUDA when present."),
        click.option("--batch-size", type=click.IntRange(min=1), default=DEFAULT_BATCH_SIZE, show_default=True),
        click.option("--workers", type=click.IntRange(min=0),
                     help="Tile-reading processes. [default: 1 on CPU, cores - 1 (max 8) on CUDA]"),
        click.option("--compile", "compile_model", is_flag=True, help="torch.compile the encoder (pays on long runs)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _plan(paths: list[str], options: TilingOptions) -> tuple[list[PlannedScene], list[SceneError]]:
    planned, failures = [], []
    for path in paths:
        try:
            planned.append(plan_scene(path, options))
        except SceneError as error:
            failures.append(error)
            _print_error(error)
            continue
        if planned[-1].summary["band_source"] == "assumed":
            log.warning("%s: no colour interpretation or band names; bands 1, 2, 3 are taken as red, green, blue "
                        "(choose others with --bands)", path)
    return planned, failures


def _track(results: Iterator, progress: Progress, task: TaskID) -> Iterator:
    for result in results:
        if isinstance(result, EmbeddedBatch):
            progress.advance(task, result.read)
        yield result


@cli.command()
@click.argument("scenes", nargs=-1, required=True)
@click.option("-r", "--recursive", is_flag=True, help="Look for rasters in subdirectories of directory arguments.")
@tiling_options
@model_options
@click.option("-o", "--out", type=click.Path(dir_okay=False), required=True,
              help="GeoParquet file: one row per kept tile, its footprint, window and vector.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars, no summary.")
def embed(scenes: tuple[str, ...], recursive: bool, model_spec: str, device: str, batch_size: int,
          workers: int | None, compile_model: bool, out: str, as_json: bool, quiet: bool, **kwargs) -> None:
    """Embed the tiles of SCENES and write their vectors with footprints to a GeoParquet file."""
    out_path = check_output_path(out)
    if out_path.suffix.lower() != ".parquet":
        raise GeosearchError(f"{out_path}: embeddings are written as GeoParquet; use a .parquet file")
    paths = find_scenes(list(scenes), recursive)
    if not paths:
        raise GeosearchError(f"no rasters found in {', '.join(scenes)}")
    checkpoint = open_model(model_spec)
    torch_device = resolve_device(device)
    options = _tiling(kwargs)
    if not (quiet or as_json):
        click.echo(f"model {checkpoint.model_id} ({checkpoint.config.dim}-d) on {describe_device(torch_device)}")
    start = time.perf_counter()
    planned, failures = _plan(paths, options)
    results = embed_scenes(checkpoint.encoder(), planned, options, torch_device, batch_size, workers, compile_model)
    with Progress(*PROGRESS_COLUMNS, console=stderr, disable=quiet or as_json, transient=True) as progress:
        task = progress.add_task("tiles", total=sum(len(p.grid) for p in planned))
        done, failed = gather(_track(results, progress, task), planned)
    for error in failed:
        _print_error(error)
    failures += failed
    seconds = time.perf_counter() - start
    embedded = sum(len(s.indexes) for s in done)
    read = sum(len(s.planned.grid) for s in done)
    if done:
        frame = pd.concat([s.to_frame(checkpoint.model_id) for s in done], ignore_index=True)
        write_features(gpd.GeoDataFrame(frame, geometry="geometry", crs=4326), out_path)
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


@cli.group()
def model() -> None:
    """Encoders: list what is available, inspect a checkpoint, make one from pretrained weights."""


@model.command("info")
@click.argument("checkpoint", default="default")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def model_info(checkpoint: str, as_json: bool) -> None:
    """Print a checkpoint's model id, architecture, input, normalisation, bands and provenance."""
    info = open_model(checkpoint).info()
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    for key, value in info.items():
        click.echo(f"{key:>16}: {json.dumps(value) if isinstance(value, dict | list) else value}")


@model.command("list")
def model_list() -> None:
    """Backbones and the pretrained weights available for them."""
    for name, spec in BACKBONES.items():
        weights = [ws.split(":")[1] for ws in WEIGHT_SETS if ws.startswith(name + ":")]
        available = ", ".join(weights) or "-"
        click.echo(f"{name:<20} {spec.channels:>5} channels  weights: {available}  ({spec.description})")


def _dim(_ctx: click.Context, _param: click.Parameter, value: str | None) -> int | str | None:
    if value is None:
        return "keep"
    if value == "none":
        return None
    if value.isdigit() and int(value) > 0:
        return int(value)
    raise click.BadParameter("give a positive number of dimensions, or 'none' for no projection")


@model.command("init")
@click.option("--backbone", type=click.Choice(list(BACKBONES)), required=True)
@click.option("--weights", help="imagenet, geoembed-v3, a state dict file (torchvision or timm layout), or none.")
@click.option("--pooling", type=click.Choice(POOLINGS), help="[default: that of the weights, else gem]")
@click.option("--dim", callback=_dim, help="Linear projection to this many dimensions, or 'none'. "
                                           "[default: that of the weights]")
@click.option("--input-size", type=click.IntRange(min=32),
              help="Side tiles are resized to. [default: that of the weights]")
@click.option("--half", is_flag=True, help="Store the weights as float16 (half the file size).")
@click.option("-o", "--out", type=click.Path(dir_okay=False), required=True)
def model_init(backbone: str, weights: str | None, pooling: str | None, dim: int | str | None, input_size: int | None,
               half: bool, out: str) -> None:
    """Write a checkpoint from pretrained weights (or random ones), ready for `embed` and for training."""
    overrides = {"pooling": pooling, "input_size": input_size}
    overrides = {key: value for key, value in overrides.items() if value is not None}
    if dim != "keep":
        overrides["embedding_dim"] = dim
    encoder, initial = pretrained_encoder(backbone, None if weights in (None, "none") else weights, **overrides)
    checkpoint = Checkpoint.of(encoder, {"initial_weights": initial, "training": None}, half=half)
    path = save_checkpoint(checkpoint, out)
    click.echo(f"wrote {path}: {checkpoint.model_id} ({checkpoint.config.dim}-d)")


def store_options(command: Callable) -> Callable:
    """Where the archive lives: the embedded store (a folder), or a Qdrant server."""
    options = [
        click.option("--store", type=click.Path(file_okay=False), envvar="GEOSEARCH_STORE",
                     help="Folder of the embedded Qdrant Edge store. [default: ~/.local/share/geosearch/store]"),
        click.option("--qdrant-url", envvar="GEOSEARCH_QDRANT_URL",
                     help="A Qdrant server or cluster (http[s]://…), or file:///DIR for qdrant-client's local mode."),
        click.option("--api-key", envvar="GEOSEARCH_QDRANT_API_KEY", help="API key of the Qdrant server."),
        click.option("--collection", default="tiles", show_default=True, envvar="GEOSEARCH_COLLECTION",
                     help="Collection (one embedding space) within the store."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@contextmanager
def _archive(store: str | None, qdrant_url: str | None, api_key: str | None, collection: str,
             model_id: str | None = None, dim: int | None = None) -> Iterator[Archive]:
    with open_backend(store, qdrant_url, api_key) as backend:
        yield Archive.open(backend, collection, model_id, dim)


@cli.command()
@click.argument("scenes", nargs=-1, required=True)
@click.option("-r", "--recursive", is_flag=True, help="Look for rasters in subdirectories of directory arguments.")
@tiling_options
@model_options
@store_options
@click.option("--acquired", default="auto", show_default=True,
              help="Acquisition date (2020-05-18) for every scene, or 'auto': from tags, else the file name.")
@click.option("--force", is_flag=True, help="Index again scenes that are complete already.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars, no summary.")
def index(scenes: tuple[str, ...], recursive: bool, model_spec: str, device: str, batch_size: int,
          workers: int | None, compile_model: bool, store: str | None, qdrant_url: str | None, api_key: str | None,
          collection: str, acquired: str, force: bool, as_json: bool, quiet: bool, **kwargs) -> None:
    """Tile, embed and store SCENES in the archive; scenes complete already are left as they are."""
    paths = find_scenes(list(scenes), recursive)
    if not paths:
        raise GeosearchError(f"no rasters found in {', '.join(scenes)}")
    given = None if acquired == "auto" else parse_date(acquired)
    checkpoint = open_model(model_spec)
    torch_device = resolve_device(device)
    options = _tiling(kwargs)
    start = time.perf_counter()
    with _archive(store, qdrant_url, api_key, collection, checkpoint.model_id, checkpoint.config.dim) as archive:
        if not (quiet or as_json):
            click.echo(f"model {checkpoint.model_id} on {describe_device(torch_device)}, "
                       f"store {archive.backend.location} ({collection})")
        planned, failures = _plan(paths, options)
        with Progress(*PROGRESS_COLUMNS, console=stderr, disable=quiet or as_json, transient=True) as progress:
            task = progress.add_task("tiles", total=sum(len(p.grid) for p in planned))
            report = index_scenes(archive, checkpoint, planned, options, torch_device, acquired=given,
                                  auto_acquired=acquired == "auto", force=force, batch_size=batch_size,
                                  workers=workers, compile=compile_model,
                                  on_tiles=lambda n: progress.advance(task, n))
        tiles_in_store = archive.tile_count()
    for error in report.failed:
        _print_error(error)
    failures += report.failed
    seconds = time.perf_counter() - start
    summary = {"indexed": len(report.indexed), "unchanged": len(report.unchanged), "failed": len(failures),
               "tiles_stored": report.tiles_stored, "tiles_skipped": report.tiles_skipped,
               "tiles_in_store": tiles_in_store, "seconds": round(seconds, 3),
               "tiles_per_s": round(report.tiles_stored / seconds, 2) if seconds else None}
    if as_json:
        click.echo(json.dumps(summary | {"errors": [{"path": f.path, "error": f.problem} for f in failures]}, indent=2))
    elif not quiet:
        click.echo(f"{summary['indexed']} scene(s) indexed, {summary['unchanged']} unchanged, {len(failures)} failed: "
                   f"{report.tiles_stored} tiles stored, {report.tiles_skipped} skipped, {seconds:.1f} s "
                   f"({summary['tiles_per_s']} tiles/s); {tiles_in_store} tiles in the store")
    if failures:
        raise click.exceptions.Exit(1)


@cli.command()
@store_options
@click.option("--geojson", type=click.Path(dir_okay=False), help="Write the scenes' footprints to this file.")
@click.option("--json", "as_json", is_flag=True, help="Print the scene records as JSON.")
def scenes(store: str | None, qdrant_url: str | None, api_key: str | None, collection: str, geojson: str | None,
           as_json: bool) -> None:
    """List the archive's scenes: status, tile count, acquisition date, path."""
    out = check_output_path(geojson) if geojson else None
    with _archive(store, qdrant_url, api_key, collection) as archive:
        records = archive.scenes()
    if out:
        frame = gpd.GeoDataFrame(
            [{key: r.get(key) for key in ("scene_id", "path", "status", "tiles", "acquired", "crs", "gsd_m",
                                           "model_id", "indexed_at")} for r in records],
            geometry=[shapely.geometry.shape(r["footprint"]) for r in records], crs=4326)
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
    with _archive(store, qdrant_url, api_key, collection) as archive:
        matches = [r for r in archive.scenes()
                   if scene in (r["scene_id"], r["path"]) or Path(r["path"]).resolve() == Path(scene).resolve()]
        if not matches:
            raise GeosearchError(f"no scene {scene!r} in the archive; `geosearch scenes` lists them")
        for record in matches:
            tiles = archive.remove_scene(record["scene_id"])
            click.echo(f"removed {record['path']} ({record['scene_id']}): {tiles} tiles")


@cli.command()
@store_options
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def stats(store: str | None, qdrant_url: str | None, api_key: str | None, collection: str, as_json: bool) -> None:
    """The archive at a glance: store, model, scenes by status, tiles."""
    with _archive(store, qdrant_url, api_key, collection) as archive:
        info = archive.stats()
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    for key, value in info.items():
        click.echo(f"{key:>16}: {value}")


def main() -> None:
    cli(prog_name="geosearch")
