"""Options shared by several commands, and the helpers that turn them into engine objects."""

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import click
from click.core import ParameterSource

from geosearch.bands import parse_bands
from geosearch.cli.main import log, print_error
from geosearch.embed import DEFAULT_BATCH_SIZE, PlannedScene, plan_scenes
from geosearch.encoder.device import DEVICES
from geosearch.encoder.runtime import RUNTIMES
from geosearch.errors import GeosearchError, ModelMismatch, SceneError, StoreServed
from geosearch.grid import EdgeMode, GridMode
from geosearch.service.client import ServiceClient
from geosearch.stac import Sources, find_sources
from geosearch.store import check_collection, open_backend
from geosearch.store.archive import Archive
from geosearch.stretch import ProfileStretches, StretchMode, parse_stretch
from geosearch.tiling import DEFAULT_MIN_VALID, DEFAULT_TILE_SIZE, MIN_TILE_SIZE, TilingOptions


def _parsed_by(parse: Callable[[str], object]) -> Callable:
    """A click callback that parses an option's text with `parse`; its GeosearchError becomes a usage error."""

    def callback(_ctx: click.Context, _param: click.Parameter, value: str | None) -> object:
        if value is None:
            return None
        try:
            return parse(value)
        except GeosearchError as error:
            raise click.BadParameter(str(error)) from None

    return callback


def scene_arguments(command: Callable) -> Callable:
    """SCENES... (files, directories of rasters, STAC catalogs, collections or items), --recursive and --assets;
    expand them with scene_paths()."""
    command = click.option("--assets", callback=_parsed_by(parse_names), metavar="NAME[,NAME…]|PRESET",
                           help="STAC: the asset of each item to read; or several, its bands, stacked (by key or "
                                "eo:bands common name; true-color, false-color or swir name three). [default: the "
                                "item's raster of role visual, else data, else its only raster]")(command)
    command = click.option("-r", "--recursive", is_flag=True,
                           help="Look for rasters in subdirectories of directory arguments.")(command)
    return click.argument("scenes", nargs=-1, required=True)(command)


def parse_names(value: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in value.split(",") if name.strip())


def scene_paths(scenes: tuple[str, ...], recursive: bool, assets: tuple[str, ...] | None = None) -> Sources:
    """The rasters SCENES name, with what STAC says of them; an error when they name none."""
    sources = find_sources(scenes, recursive, assets or ())
    if not sources.paths and not sources.failures:
        raise GeosearchError(f"no rasters found in {', '.join(scenes)}")
    return sources


def tiling_options(command: Callable) -> Callable:
    """The options that say how scenes are cut, shared by every command that reads scenes."""
    options = [
        click.option("--tile-size", type=click.IntRange(min=MIN_TILE_SIZE), default=DEFAULT_TILE_SIZE,
                     show_default=True, envvar="GEOSEARCH_TILE_SIZE", help="Tile side in pixels of the tiling grid."),
        click.option("--stride", type=click.IntRange(min=1), envvar="GEOSEARCH_STRIDE",
                     help="Step between tiles in pixels; less than --tile-size makes tiles overlap. "
                          "[default: tile size]"),
        click.option("--edge", type=click.Choice([mode.value for mode in EdgeMode]), default=EdgeMode.SHIFT.value,
                     show_default=True, envvar="GEOSEARCH_EDGE",
                     help="Edge tiles: shift inward to end on the edge, pad with nodata, or drop."),
        click.option("--gsd", type=click.FloatRange(min=0, min_open=True), envvar="GEOSEARCH_GSD",
                     help="Resample to this ground sampling distance in metres. [default: native]"),
        click.option("--bands", callback=_parsed_by(parse_bands), metavar="B[,G,B]|PRESET",
                     help="1-based bands to show as red,green,blue, or one band as grey; or true-color, false-color "
                          "or swir, by band names. [default: RGB by colour interpretation or band description, else "
                          "1,2,3]"),
        click.option("--nodata", type=float, help="Treat this value as nodata (overrides the file's)."),
        click.option("--min-valid", type=click.FloatRange(0, 1), default=DEFAULT_MIN_VALID, show_default=True,
                     envvar="GEOSEARCH_MIN_VALID", help="Skip tiles with a smaller fraction of valid pixels."),
        click.option("--grid", type=click.Choice([mode.value for mode in GridMode]), envvar="GEOSEARCH_GRID",
                     help="aligned: tiles on a lattice fixed in the CRS, so the same ground is the same tile in "
                          "every scene; scene: from each scene's corner. [default: aligned, or the archive's]"),
        click.option("--stretch", callback=_parsed_by(parse_stretch), metavar="archive|scene|LO,HI[,LO,HI,LO,HI]",
                     envvar="GEOSEARCH_STRETCH",
                     help="To 8 bits by one stretch per radiometric profile (archive), each scene's own 2-98 % "
                          "(scene), or fixed limits. [default: archive]"),
        click.option("--stretch-from", multiple=True, type=click.Path(dir_okay=False), metavar="SCENE",
                     help="Set the profile's archive stretch from these scenes' pooled values (repeatable). "
                          "[default: the first scene of each profile]"),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def tiling_from(kwargs: dict) -> TilingOptions:
    return TilingOptions(
        tile_size=kwargs["tile_size"],
        stride=kwargs["stride"],
        edge=EdgeMode(kwargs["edge"]),
        gsd=kwargs["gsd"],
        bands=kwargs["bands"],
        nodata=kwargs["nodata"],
        min_valid=kwargs["min_valid"],
        grid=GridMode(kwargs["grid"] or GridMode.ALIGNED),
        stretch=kwargs["stretch"] or StretchMode.ARCHIVE,
    )


runtime_option = click.option(
    "--runtime", type=click.Choice(RUNTIMES), default="auto", show_default=True, envvar="GEOSEARCH_RUNTIME",
    help="What runs the encoder; auto takes ONNX Runtime on the CPU (about 2.5x PyTorch there), PyTorch on CUDA.")


def model_options(command: Callable) -> Callable:
    """The options that say which model embeds, and where."""
    options = [
        click.option("--model", "model_spec", default="default", show_default=True, envvar="GEOSEARCH_MODEL",
                     help="A checkpoint file, or 'default', 'rsscn7' or 'pretrained' (their cards: "
                          "geosearch/data/models/MODEL_CARD*.md)."),
        click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True,
                     envvar="GEOSEARCH_DEVICE", help="Where to run the encoder; auto takes CUDA when present."),
        click.option("--batch-size", type=click.IntRange(min=1), default=DEFAULT_BATCH_SIZE, show_default=True),
        click.option("--workers", type=click.IntRange(min=0),
                     help="Tile-reading processes. [default: 1 on CPU, cores - 1 (max 8) on CUDA]"),
        runtime_option,
        click.option("--compile", "compile_model", is_flag=True, help="torch.compile the encoder (pays on long runs)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def query_model_options(command: Callable) -> Callable:
    """The options that say which model embeds a query's boxes and pictures, and where."""
    options = [
        click.option("--model", "model_spec", default="default", show_default=True, envvar="GEOSEARCH_MODEL",
                     help="The checkpoint the archive was indexed with: a file, 'default' or 'pretrained'."),
        click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True,
                     envvar="GEOSEARCH_DEVICE"),
        runtime_option,
    ]
    for option in reversed(options):
        command = option(command)
    return command


def store_options(command: Callable) -> Callable:
    """Where the archive lives: the embedded store (a folder), or a Qdrant server."""
    options = [
        click.option("--store", type=click.Path(file_okay=False), envvar="GEOSEARCH_STORE",
                     help="Folder of the embedded Qdrant Edge store. [default: ~/.local/share/geosearch/store]"),
        click.option("--qdrant-url", envvar="GEOSEARCH_QDRANT_URL",
                     help="A Qdrant server or cluster (http[s]://…), or file:///DIR for qdrant-client's local mode."),
        click.option("--api-key", envvar="GEOSEARCH_QDRANT_API_KEY", help="API key of the Qdrant server."),
        click.option("--collection", default="tiles", show_default=True, envvar="GEOSEARCH_COLLECTION",
                     callback=_parsed_by(check_collection),
                     help="Collection (one embedding space) within the store."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@contextmanager
def open_archive(store: str | None, qdrant_url: str | None, api_key: str | None, collection: str,
                 model_id: str | None = None, dim: int | None = None,
                 grid: str = GridMode.ALIGNED) -> Iterator[Archive]:
    """The archive in the store; with a model id and dim, created (cut by `grid`) if it is not there yet, and
    the store with it."""
    with open_backend(store, qdrant_url, api_key, create=model_id is not None) as backend:
        try:
            archive = Archive.open(backend, collection, model_id, dim, grid)
        except ModelMismatch as error:
            from geosearch.encoder.default import name_of  # loads models: only on this path

            name = name_of(error.stored_model_id)
            raise ModelMismatch(f"{error} (--model {name})" if name else str(error), error.stored_model_id) from None
        yield archive


def through_server(served: StoreServed, collection: str, takes: Iterable[str]) -> ServiceClient:
    """The client of the `geosearch serve` that holds the store, for a command whose options it `takes` (by
    parameter name; the store's are taken). An option given that its API has no field for is an error, not
    silently dropped."""
    ctx = click.get_current_context()
    taken = {"store", "collection", *takes}
    given = [max(param.opts, key=len) for param in ctx.command.params if isinstance(param, click.Option)
             and param.name not in taken and ctx.get_parameter_source(param.name) is not ParameterSource.DEFAULT]
    server = f"{served.url}: the geosearch serve holding the store"
    if given:
        raise GeosearchError(f"{server} takes no {', '.join(given)}: leave {'it' if len(given) == 1 else 'them'} "
                             "out, or stop the server")
    client = ServiceClient.from_env(served.url)
    served_collection = client.health()["store"]["collection"]
    if served_collection != collection:
        raise GeosearchError(f"{server} serves collection {served_collection!r}, not {collection!r}")
    return client


def plan_all(sources: Sources, options: TilingOptions,
             profiles: ProfileStretches | None = None) -> tuple[list[PlannedScene], list[SceneError]]:
    """plan_scenes, saying on stderr which scenes (or STAC items) failed and which have only assumed band roles."""
    planned, failures = plan_scenes(sources.paths, options, profiles, sources.described)
    failures = sources.failures + failures
    for error in failures:
        print_error(error)
    for scene in planned:
        if scene.summary["band_source"] == "assumed":
            log.warning("%s: no colour interpretation or band names; bands 1, 2, 3 are taken as red, green, blue "
                        "(choose others with --bands)", scene.path)
    return planned, failures
