"""`geosearch history` and `geosearch change`: the same place on other dates, and what changed between two."""

import json
import re
from pathlib import Path

import click
import geopandas as gpd

from geosearch.change import change as change_places
from geosearch.change import history as place_history
from geosearch.cli.main import cli
from geosearch.cli.options import open_archive, query_model_options, store_options, through_server
from geosearch.cli.search import served_within, within_region
from geosearch.errors import GeosearchError, StoreServed
from geosearch.export import check_output_path, write_features
from geosearch.query import build_query, encoder_for
from geosearch.search import Filters
from geosearch.store.archive import Archive

_DATES = re.compile(r"^(?P<after>[^.]*)\.\.(?P<before>[^.]*)$")


def parse_side(values: tuple[str, ...], option: str) -> dict:
    """One side of a change as the user gives it: scenes (ids or paths) and at most one date range FROM..TO
    (either end may be left open), as the server's API takes it and Filters.of its keywords."""
    dates = [match for value in values if (match := _DATES.match(value))]
    if len(dates) > 1:
        raise GeosearchError(f"{option}: give at most one date range (FROM..TO) per side")
    after, before = (dates[0]["after"] or None, dates[0]["before"] or None) if dates else (None, None)
    return {"scenes": [value for value in values if not _DATES.match(value)], "after": after, "before": before}


def side_filters(archive: Archive, values: tuple[str, ...], option: str, within: str | None) -> Filters:
    """One side of a change, inside --within."""
    return Filters.of(archive, within=within_region(within) if within else None, **parse_side(values, option),
                      prefix=f"{option} ")


def write_and_print(frame: gpd.GeoDataFrame, out: Path | None, as_json: bool, line: str,
                    report: dict | None = None) -> None:
    """Write the features where asked, then print them: as GeoJSON (`report` in it as a foreign member), or one
    `line` (a format string) each."""
    if out:
        write_features(frame, out)
    if as_json:
        click.echo(json.dumps(json.loads(frame.to_json(drop_id=True)) | ({"report": report} if report else {})))
        return
    for row in frame.drop(columns="geometry").to_dict("records"):
        click.echo(line.format(**{key: "-" if value is None else value for key, value in row.items()}))
    if out:
        click.echo(f"wrote {out}")


@cli.command()
@click.option("--bbox", nargs=4, type=float, metavar="MINX MINY MAXX MAXY", help="The place under this box.")
@click.option("--crs", default="EPSG:4326", show_default=True, help="CRS of --bbox.")
@click.option("--tile", help="The place of this indexed tile (its id).")
@click.option("-o", "--out", type=click.Path(dir_okay=False), help="Write the tiles to .geojson, .gpkg or .parquet.")
@click.option("--json", "as_json", is_flag=True, help="Print the tiles as a GeoJSON FeatureCollection.")
@query_model_options
@store_options
def history(bbox: tuple | None, crs: str, tile: str | None, out: str | None, as_json: bool, model_spec: str,
            device: str, runtime: str, store: str | None, qdrant_url: str | None, api_key: str | None,
            collection: str) -> None:
    """This place on every date: the tiles of the same ground (place id) in every indexed scene, oldest first,
    each with its similarity to the query."""
    out_path = check_output_path(out) if out else None
    try:
        with open_archive(store, qdrant_url, api_key, collection) as archive:
            query = build_query(archive, bbox=bbox, crs=crs, tile=tile,
                                encoder=lambda: encoder_for(archive, model_spec, device, runtime))
            frame = place_history(archive, query)
    except StoreServed as served:
        client = through_server(served, collection, {"bbox", "crs", "tile", "out", "as_json", "model_spec",
                                                     "device", "runtime"})
        answer = client.history({"bbox": list(bbox) if bbox else None, "crs": crs, "tile_id": tile})
        frame = gpd.GeoDataFrame.from_features(answer, crs=4326)
    write_and_print(frame, out_path, as_json, "{step:>3}  {score:.4f}  {acquired:.10}  {scene_path}  {tile_id}")


@cli.command()
@click.option("--from", "from_", multiple=True, required=True, metavar="SCENE|FROM..TO",
              help="The earlier side: scenes (id or path) and/or one date range such as 2020-01-01..2020-12-31 "
                   "(an end may be left open); repeatable.")
@click.option("--to", multiple=True, required=True, metavar="SCENE|FROM..TO", help="The later side, alike.")
@click.option("--within", help="Only places centred in MINLON,MINLAT,MAXLON,MAXLAT or in a polygon file.")
@click.option("-n", "--top", type=click.IntRange(min=1), help="Print (and write) only the N most changed places.")
@click.option("-o", "--out", type=click.Path(dir_okay=False), help="Write the places to .geojson, .gpkg or .parquet.")
@click.option("--json", "as_json", is_flag=True, help="Print the places as a GeoJSON FeatureCollection.")
@store_options
def change(from_: tuple[str, ...], to: tuple[str, ...], within: str | None, top: int | None, out: str | None,
           as_json: bool, store: str | None, qdrant_url: str | None, api_key: str | None, collection: str) -> None:
    """What changed between two dates or sets of scenes: for every place covered by both, the cosine distance
    between its vectors (0 the same, up to 2), the most changed first."""
    out_path = check_output_path(out) if out else None
    try:
        with open_archive(store, qdrant_url, api_key, collection) as archive:
            frame, report = change_places(archive, side_filters(archive, from_, "--from", within),
                                          side_filters(archive, to, "--to", within))
        frame, report = frame.head(top) if top else frame, report.to_dict()
    except StoreServed as served:
        client = through_server(served, collection, {"from_", "to", "within", "top", "out", "as_json"})
        answer = client.change({"from": parse_side(from_, "--from"), "to": parse_side(to, "--to"),
                                "within": served_within(within, served), "top": top})
        frame, report = gpd.GeoDataFrame.from_features(answer, crs=4326), answer["report"]
    write_and_print(frame, out_path, as_json,
                    "{rank:>5}  {change:.4f}  {acquired_from:.10} → {acquired_to:.10}  {tile_id_to}", report)
    if as_json:
        return
    click.echo(f"{report['places']} place(s) compared; left out: {report['only_from']} covered only --from and "
               f"{report['only_to']} only --to (no valid tile on the other side), and {report['off_lattice_from']} + "
               f"{report['off_lattice_to']} tile(s) off the archive's lattice (no place id)")
