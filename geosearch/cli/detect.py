"""`geosearch detect`: every place in the archive like the examples, as polygons."""

import time

import click
import geopandas as gpd
from rich.progress import Progress

from geosearch.cli.main import PROGRESS_COLUMNS, cli, stderr
from geosearch.cli.options import open_archive, query_model_options, store_options, through_server
from geosearch.cli.search import parse_example, sent_example, served_within, within_region
from geosearch.detect import METHODS, check_threshold
from geosearch.detect import detect as detect_places
from geosearch.errors import StoreServed
from geosearch.export import check_output_path, write_features
from geosearch.query import build_query, encoder_for
from geosearch.search import Filters


@cli.command()
@click.option("--bbox", nargs=4, type=float, metavar="MINX MINY MAXX MAXY",
              help="A place wanted: the land in this box.")
@click.option("--crs", default="EPSG:4326", show_default=True, help="CRS of --bbox and of boxes in the examples.")
@click.option("--tile", help="A place wanted: an indexed tile (its id).")
@click.option("--positive", "positives", multiple=True, metavar="EXAMPLE",
              help="Like the places wanted: a tile id, a box MINX,MINY,MAXX,MAXY in --crs, or a picture; repeatable.")
@click.option("--negative", "negatives", multiple=True, metavar="EXAMPLE",
              help="Unlike the places wanted: an example as for --positive; repeatable.")
@click.option("--method", type=click.Choice(METHODS), default=METHODS[0], show_default=True,
              help="score: cosine to the nearest positive, nearer no negative; classifier: logistic regression on "
                   "the examples.")
@click.option("--threshold", type=float,
              help="The score at which a tile is a detection (the method's: a cosine, or a probability). "
                   "[default: learned from the examples]")
@click.option("--within", help="Only tiles centred in MINLON,MINLAT,MAXLON,MAXLAT or in a polygon file.")
@click.option("--scene", "scenes", multiple=True, help="Only tiles of this scene (id or path); repeatable.")
@click.option("--after", help="Only tiles acquired on or after this date.")
@click.option("--before", help="Only tiles acquired on or before this date.")
@click.option("-o", "--out", type=click.Path(dir_okay=False), help="Write the places to .geojson, .gpkg or .parquet.")
@click.option("--json", "as_json", is_flag=True, help="Print the places as a GeoJSON FeatureCollection.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@query_model_options
@store_options
def detect(bbox: tuple | None, crs: str, tile: str | None, positives: tuple[str, ...], negatives: tuple[str, ...],
           method: str, threshold: float | None, within: str | None, scenes: tuple[str, ...], after: str | None,
           before: str | None, out: str | None, as_json: bool, quiet: bool, model_spec: str, device: str,
           runtime: str, store: str | None, qdrant_url: str | None, api_key: str | None, collection: str) -> None:
    """Find every place in the archive like the examples (a box or tile, and --positive ones) and unlike the
    --negative ones: each tile is scored, and touching detected tiles are merged into one polygon with its area."""
    check_threshold(threshold)  # before anything: a NaN cannot be sent to a server either
    like = [parse_example(value, crs, "--positive") for value in positives]
    unlike = [parse_example(value, crs, "--negative") for value in negatives]
    out_path = check_output_path(out) if out else None
    start = time.perf_counter()
    with Progress(*PROGRESS_COLUMNS, console=stderr, disable=quiet or as_json, transient=True) as progress:
        task = progress.add_task("tiles scored")

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total or None)

        try:
            with open_archive(store, qdrant_url, api_key, collection) as archive:
                filters = Filters.of(archive, within=within_region(within) if within else None, scenes=scenes,
                                     after=after, before=before)
                query = build_query(archive, bbox=bbox, crs=crs, tile=tile, positives=like, negatives=unlike,
                                    encoder=lambda: encoder_for(archive, model_spec, device, runtime))
                frame, detected, _ = detect_places(archive, query, method, threshold, filters, advance)
                scored = detected.scored
        except StoreServed as served:
            client = through_server(served, collection, {"bbox", "crs", "tile", "positives", "negatives", "method",
                                                         "threshold", "within", "scenes", "after", "before", "out",
                                                         "as_json", "quiet", "model_spec", "device", "runtime"})
            request = {"bbox": list(bbox) if bbox else None, "crs": crs, "tile_id": tile,
                       "positives": [sent_example(example, "--positive", served) for example in like],
                       "negatives": [sent_example(example, "--negative", served) for example in unlike],
                       "method": method, "threshold": threshold,
                       "within": served_within(within, served), "scenes": list(scenes),
                       "after": after, "before": before}
            job, places = client.detect(request, advance)
            frame, scored = gpd.GeoDataFrame.from_features(places, crs=4326), job["summary"]["tiles_scored"]
    if out_path:
        write_features(frame, out_path)
    if as_json:
        click.echo(frame.to_json(drop_id=True))
        return
    for place in frame.drop(columns="geometry").to_dict("records"):
        click.echo(f"{place['detection']:>4}  {place['score_max']:.4f}  {place['tiles']:>5} tile(s)  "
                   f"{place['area_m2'] / 1e6:10.3f} km²  {place['best_tile_id']}")
    tiles = int(frame["tiles"].sum()) if len(frame) else 0
    click.echo(f"{len(frame)} place(s) of {tiles} tile(s), from {scored} tile(s) scored in "
               f"{time.perf_counter() - start:.1f} s")
    if out_path:
        click.echo(f"wrote {out_path}")
