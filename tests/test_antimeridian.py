"""A scene in degrees across 180°: stored in [-180, 180], found by boxes on either side and across the
antimeridian (RFC 7946: min lon > max lon), by --within, and a scene past the pole refused in one line."""

import json

import shapely
from affine import Affine

from conftest import run_geosearch
from geosearch.data import LANDSAT7_RGB
from geosearch.query import Box


def test_a_box_across_the_antimeridian_is_two_parts_in_lon_lat():
    box = Box.parse((179.9, -17.0, -179.8, -16.9))
    parts = box.lonlat()
    assert parts.geom_type == "MultiPolygon" and parts.bounds == (-180.0, -17.0, 180.0, -16.9)
    assert abs(parts.area - 0.3 * 0.1) < 1e-9
    assert Box.parse((-179.8, -17.0, 179.9, -16.9)).lonlat().area > 300 * 0.1  # the long way round, as written


def test_a_scene_across_180_degrees_is_searched_on_both_sides(tmp_path, derive):
    """RGB.byte's real pixels placed in EPSG:4326 from 179.6° to 180.391° east (as some products write it)."""
    scene = derive(LANDSAT7_RGB, "fiji.tif", crs="EPSG:4326", transform=Affine(0.001, 0, 179.6, 0, -0.001, -16.5))
    store = str(tmp_path / "store")
    indexed = run_geosearch("index", str(scene), "--store", store, "--tile-size", "64", "-q")
    assert indexed.returncode == 0, indexed.stderr
    tiles = tmp_path / "tiles.geojson"
    assert run_geosearch("tile", str(scene), "--tile-size", "64", "-o", str(tiles), "-q").returncode == 0
    features = json.loads(tiles.read_text())["features"]
    assert all(-180 <= f["properties"]["centroid_lon"] <= 180 for f in features)
    assert sum(f["properties"]["centroid_lon"] < 0 for f in features) > 20  # east of 180°, stored as west

    def search(*args: str) -> list[dict]:
        result = run_geosearch("search", *args, "--store", store, "-k", "5", "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)["features"]

    assert len(search("--bbox", "-179.78", "-16.88", "-179.72", "-16.82")) == 5  # past 180 in the file
    assert len(search("--bbox", "179.97", "-16.88", "-179.97", "-16.82")) == 5  # across 180
    region = (-179.95, -17.2, -179.6, -16.5)
    within = search("--bbox", "179.80", "-16.88", "179.86", "-16.82", "--within", ",".join(map(str, region)))
    assert len(within) == 5
    inside = shapely.box(*region)
    assert all(inside.contains(shapely.centroid(shapely.geometry.shape(f["geometry"]))) for f in within)


def test_a_scene_past_the_pole_is_one_line(derive):
    scene = derive(LANDSAT7_RGB, "pole.tif", crs="EPSG:4326", transform=Affine(0.01, 0, 10, 0, -0.01, 91))
    result = run_geosearch("tile", str(scene))
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1
    assert "reaches latitude 91°, past the pole" in result.stderr
