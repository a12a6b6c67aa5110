"""`geosearch demo`: the whole product on the scenes shipped with it, in one command."""

from contextlib import ExitStack
from pathlib import Path

import click

from geosearch.cli.archive import index_into
from geosearch.cli.main import cli
from geosearch.cli.options import open_archive
from geosearch.cli.search import answer, print_matches
from geosearch.data import shipped_scenes
from geosearch.encoder.default import open_model
from geosearch.encoder.device import resolve_device
from geosearch.encoder.runtime import load_encoder
from geosearch.errors import GeosearchError, ModelMismatch
from geosearch.query import Box, covering_scenes, scene_query
from geosearch.search import Filters
from geosearch.stac import Sources
from geosearch.tiling import TilingOptions

# Farmland cut by a wooded stream in the Landsat 8 scene of path 224, row 77 (Paraná, Brazil; lon/lat).
DEMO_BOX = (-54.8315, -25.2208, -54.7783, -25.1723)


@cli.command()
@click.option("--out-dir", type=click.Path(file_okay=False), default="geosearch-demo", show_default=True,
              help="Where the demo keeps its store and writes its results.")
@click.option("-k", type=click.IntRange(min=1), default=10, show_default=True, help="How many matches.")
def demo(out_dir: str, k: int) -> None:
    """Index the shipped scenes into a store of the demo's own, search from a box drawn over farmland, and write
    matches.geojson and matches.png."""
    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    checkpoint, device = open_model("default"), resolve_device("auto")
    box = Box.parse(DEMO_BOX)
    with ExitStack() as stack:
        try:
            archive = stack.enter_context(open_archive(str(directory / "store"), None, None, "tiles",
                                                       checkpoint.model_id, checkpoint.config.dim))
        except ModelMismatch as error:  # made by an earlier version's default model: the demo does not delete it
            raise GeosearchError(f"{directory / 'store'} holds vectors of model {error.stored_model_id}, not of "
                                 f"the default {checkpoint.model_id}: remove {directory} or pass another --out-dir"
                                 ) from None
        summary, failures = index_into(archive, Sources([str(p) for p in shipped_scenes()]), TilingOptions(),
                                       checkpoint, device, show=True)
        if failures:
            raise GeosearchError(f"{len(failures)} shipped scene(s) could not be indexed; is the installation whole?")
        click.echo(f"{summary['tiles_in_store']} tiles from {len(shipped_scenes())} scenes in {directory / 'store'}")
        click.echo(f"query: the box {list(DEMO_BOX)} (lon/lat)")
        query = scene_query(box, covering_scenes(archive, box), load_encoder(checkpoint, device), device)
        frame = answer(archive, query, k, Filters(), False, directory / "matches.geojson",
                         directory / "matches.png")
    print_matches(frame)
    click.echo(f"wrote {directory / 'matches.geojson'} (open it in QGIS over the scenes in "
               f"{shipped_scenes()[0].parent}) and {directory / 'matches.png'}")
