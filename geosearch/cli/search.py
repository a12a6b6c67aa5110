"""`geosearch search` and `geosearch export`: questions to the archive, and their answers as files."""

import time
import uuid
from pathlib import Path

import click
import geopandas as gpd
import shapely

from geosearch.cli.main import cli
from geosearch.cli.options import open_archive, query_model_options, store_options, through_server
from geosearch.embedding_files import archive_pages, write_embeddings
from geosearch.errors import GeosearchError, StoreServed
from geosearch.export import FORMATS, check_output_path, scenes_frame, write_features
from geosearch.query import Box, Query, build_query, encoder_for
from geosearch.search import Filters, hits_frame
from geosearch.search import search as search_archive
from geosearch.store.archive import Archive
from geosearch.vectors import read_polygons


def _bounds(value: str) -> tuple[float, float, float, float] | None:
    """A box written 'MINX,MINY,MAXX,MAXY', or None when the text is not four numbers."""
    try:
        bounds = tuple(float(v) for v in value.split(","))
    except ValueError:
        return None
    return bounds if len(bounds) == 4 else None


def within_bounds(value: str) -> tuple[float, float, float, float]:
    """--within as a lon/lat box 'MINLON,MINLAT,MAXLON,MAXLAT'."""
    bounds = _bounds(value)
    if bounds is None:
        raise GeosearchError(f"--within {value!r}: give MINLON,MINLAT,MAXLON,MAXLAT or a polygon file")
    return bounds


def parse_example(value: str, crs: str, option: str) -> dict:
    """--positive or --negative as build_query's keywords: a picture that exists, a box MINX,MINY,MAXX,MAXY in
    --crs, or a tile id."""
    if Path(value).is_file():
        return {"image": value}
    if (bounds := _bounds(value)) is not None:
        return {"bbox": bounds, "crs": crs}
    try:
        return {"tile": str(uuid.UUID(value))}
    except ValueError:
        raise GeosearchError(f"{option} {value!r}: give a tile id, a box MINX,MINY,MAXX,MAXY (in --crs) or the "
                             "path of a picture") from None


def sent_example(example: dict, option: str, served: StoreServed) -> dict:
    """An example as the server's API takes it, which has no pictures."""
    if "image" in example:
        raise GeosearchError(f"{served.url}: the geosearch serve holding the store takes no picture as an example "
                             f"({option} {example['image']}): leave it out, or stop the server")
    return {"tile_id": example["tile"]} if "tile" in example else {"bbox": list(example["bbox"]), "crs": example["crs"]}


def served_within(within: str | None, served: StoreServed) -> list[float] | None:
    """--within as the API of the server holding the store takes it: a lon/lat box, not a polygon file."""
    if within and Path(within).exists():
        raise GeosearchError(f"{served.url}: the geosearch serve holding the store takes --within as a lon/lat box "
                             "only, not a polygon file")
    return list(within_bounds(within)) if within else None


def within_region(value: str) -> shapely.Geometry:
    """A lon/lat box 'MINLON,MINLAT,MAXLON,MAXLAT', or a vector file of polygons in any CRS."""
    if Path(value).exists():
        return read_polygons(value, f"--within {value}").union_all()
    return Box.parse(within_bounds(value)).lonlat()


def print_matches(frame: gpd.GeoDataFrame) -> None:
    """One line per match of a hits_frame (or of the same features from a server)."""
    for match in frame.drop(columns="geometry").to_dict("records"):
        acquired = match["acquired"] if isinstance(match["acquired"], str) else "-"
        click.echo(f"{match['rank']:>3}  {match['score']:.4f}  {Path(match['scene_path']).name}  row {match['row']} "
                   f"col {match['col']}  {acquired[:10]}  {match['tile_id']}")


@cli.command()
@click.option("--bbox", nargs=4, type=float, metavar="MINX MINY MAXX MAXY", help="Query by the land in this box.")
@click.option("--crs", default="EPSG:4326", show_default=True, help="CRS of --bbox.")
@click.option("--tile", help="Query by an indexed tile (its id).")
@click.option("--image", type=click.Path(dir_okay=False), help="Query by a picture (PNG, JPEG…).")
@click.option("--query-scene", help="Read the box from this indexed scene (id or path). [default: the scene "
                                    "covering most of the box]")
@click.option("--raster", type=click.Path(dir_okay=False), help="Read the box from this raster (indexed or not).")
@click.option("--positive", "positives", multiple=True, metavar="EXAMPLE",
              help="Also like this: a tile id, a box MINX,MINY,MAXX,MAXY in --crs, or a picture; repeatable.")
@click.option("--negative", "negatives", multiple=True, metavar="EXAMPLE",
              help="Unlike the places wanted: an example as for --positive; repeatable.")
@click.option("-k", type=click.IntRange(min=1), default=20, show_default=True, help="How many matches.")
@click.option("--within", help="Only matches centred in MINLON,MINLAT,MAXLON,MAXLAT or in a polygon file.")
@click.option("--scene", "scenes", multiple=True, help="Only matches from this scene (id or path); repeatable.")
@click.option("--after", help="Only matches acquired on or after this date.")
@click.option("--before", help="Only matches acquired on or before this date.")
@click.option("--min-score", type=click.FloatRange(-1, 1), help="Only matches at least this similar (cosine).")
@click.option("--include-self", is_flag=True, help="Keep matches on the query's own ground (other scenes, dates).")
@click.option("--no-dedup", "dedup", is_flag=True, flag_value=False, default=True,
              help="Keep overlapping matches instead of only the best of each place.")
@click.option("-o", "--out", type=click.Path(dir_okay=False), help="Write matches to .geojson, .gpkg or .parquet.")
@click.option("--quicklook", type=click.Path(dir_okay=False), help="Write a PNG of the query and the best matches.")
@click.option("--json", "as_json", is_flag=True, help="Print the matches as a GeoJSON FeatureCollection.")
@query_model_options
@store_options
def search(bbox: tuple | None, crs: str, tile: str | None, image: str | None, query_scene: str | None,
           raster: str | None, positives: tuple[str, ...], negatives: tuple[str, ...], k: int, within: str | None,
           scenes: tuple[str, ...], after: str | None, before: str | None, min_score: float | None,
           include_self: bool, dedup: bool, out: str | None, quicklook: str | None, as_json: bool, model_spec: str,
           device: str, runtime: str, store: str | None, qdrant_url: str | None, api_key: str | None,
           collection: str) -> None:
    """Find the places in the archive that look like a box on the map, a tile or a picture, and like any more
    examples (--positive) but unlike others (--negative)."""
    like = [parse_example(value, crs, "--positive") for value in positives]
    unlike = [parse_example(value, crs, "--negative") for value in negatives]
    out_path = check_output_path(out) if out else None
    if quicklook:
        check_output_path(quicklook, (".png",))
    start = time.perf_counter()
    try:
        with open_archive(store, qdrant_url, api_key, collection) as archive:
            filters = Filters.of(archive, within=within_region(within) if within else None, scenes=scenes, after=after,
                                 before=before, min_score=min_score)
            query = build_query(archive, bbox=bbox, crs=crs, tile=tile, image=image, query_scene=query_scene,
                                raster=raster, positives=like, negatives=unlike,
                                encoder=lambda: encoder_for(archive, model_spec, device, runtime))
            frame = answer(archive, query, k, filters, include_self, out_path, quicklook, dedup)
    except StoreServed as served:
        client = through_server(served, collection, {"bbox", "crs", "tile", "positives", "negatives", "k",
                                                     "within", "scenes", "after", "before", "min_score",
                                                     "include_self", "dedup", "out", "as_json", "model_spec",
                                                     "device", "runtime"})
        request = {"bbox": list(bbox) if bbox else None, "crs": crs, "tile_id": tile,
                   "positives": [sent_example(example, "--positive", served) for example in like],
                   "negatives": [sent_example(example, "--negative", served) for example in unlike], "k": k,
                   "within": served_within(within, served), "scenes": list(scenes),
                   "after": after, "before": before, "min_score": min_score, "include_self": include_self,
                   "dedup": dedup}
        frame = gpd.GeoDataFrame.from_features(client.search(request), crs=4326)
        if out_path:
            write_features(frame, out_path)
    seconds = time.perf_counter() - start
    if as_json:
        click.echo(frame.to_json(drop_id=True))
        return
    print_matches(frame)
    click.echo(f"{len(frame)} match(es) in {seconds * 1000:.0f} ms")
    for path in filter(None, (out_path, quicklook)):
        click.echo(f"wrote {path}")


def answer(archive: Archive, query: Query, k: int, filters: Filters, include_self: bool, out: Path | None,
           quicklook: str | Path | None, dedup: bool = True) -> gpd.GeoDataFrame:
    """Search, then write the matches and the quicklook where asked."""
    hits = search_archive(archive, query, k, filters, include_self, dedup)
    frame = hits_frame(hits, query, filters)
    if out:
        write_features(frame, out)
    if quicklook:
        from geosearch.quicklook import write_quicklook  # Pillow's drawing, only when a picture is asked for

        write_quicklook(quicklook, query, hits, archive)
    return frame


@cli.command()
@click.argument("files", nargs=-1, required=True, metavar="[SOURCE] OUT")
@click.option("--scenes", "scene_footprints", is_flag=True, help="Write the archive's scene footprints to OUT.")
@click.option("--embeddings", is_flag=True,
              help="Write the archive's tiles with their vectors to OUT, a GeoParquet embedding file.")
@store_options
def export(files: tuple[str, ...], scene_footprints: bool, embeddings: bool, store: str | None,
           qdrant_url: str | None, api_key: str | None, collection: str) -> None:
    """Rewrite saved matches (SOURCE) as OUT, in the format its extension names; or write the archive's scene
    footprints (--scenes) or its tiles' embeddings (--embeddings) to OUT."""
    whole_archive = scene_footprints or embeddings
    if (scene_footprints and embeddings) or len(files) != (1 if whole_archive else 2):
        raise GeosearchError("give SOURCE OUT to rewrite saved matches, --scenes OUT for the scene footprints, or "
                             "--embeddings OUT for the tiles' embeddings")
    if embeddings:
        with open_archive(store, qdrant_url, api_key, collection) as archive:
            written = write_embeddings(files[0], archive_pages(archive), archive.model_id,
                                       archive.complete_scenes(), archive.stretches(), archive.grid)
        click.echo(f"wrote {written} tile(s) of model {archive.model_id} to {files[0]}")
        return
    out_path = check_output_path(files[-1])
    if scene_footprints:
        with open_archive(store, qdrant_url, api_key, collection) as archive:
            frame = scenes_frame(archive.scenes())
    else:
        source = Path(files[0])
        if source.suffix.lower() not in FORMATS or not source.is_file():
            raise GeosearchError(f"{source}: not a saved result ({', '.join(FORMATS)} file)")
        frame = gpd.read_parquet(source) if source.suffix.lower() == ".parquet" else gpd.read_file(source)
    write_features(frame, out_path)
    click.echo(f"wrote {len(frame)} feature(s) to {out_path}")
