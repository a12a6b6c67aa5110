"""Time on real imagery: the Landsat 8 crop 224/077, a copy of it a year later with a block of water pasted in by
hand at a known place, and the same-day crop 224/078 beside it (no change where they overlap). The pasted place
ranks first, above every place of the same-day pair; a place's history lists its tiles oldest first; bad sides are
one line each and change nothing."""

import json
import shutil

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from rasterio.windows import Window

from conftest import run_geosearch
from geosearch.change import change, history
from geosearch.data import AERIAL_3857, LANDSAT8_224077, LANDSAT8_224078
from geosearch.errors import GeosearchError
from geosearch.footprints import WGS84
from geosearch.query import Box, build_query
from geosearch.search import Filters
from geosearch.store import open_backend
from geosearch.store.archive import Archive
from geosearch.tiling import TilingOptions
from support import index_store

PASTED = Window(col_off=600, row_off=400, width=150, height=150)  # on no tile's edges at 128 px
RESERVOIR = Window(col_off=1024, row_off=618, width=256, height=256)  # of crop 224/078


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> dict:
    """The crops, and 224/077 a year later with water pasted over PASTED: the reservoir's darkest pixels' median
    spectrum, with noise as real water has."""
    folder = tmp_path_factory.mktemp("change")
    paths = {"a": folder / LANDSAT8_224077.name, "b": folder / LANDSAT8_224078.name,
             "later": folder / "landsat8_224077_20210601_crop.tif", "aerial": folder / AERIAL_3857.name}
    for key, source in (("a", LANDSAT8_224077), ("b", LANDSAT8_224078), ("aerial", AERIAL_3857)):
        shutil.copy(source, paths[key])
    with rasterio.open(LANDSAT8_224078) as b:
        reservoir = b.read(window=RESERVOIR).reshape(3, -1)
    darkest = reservoir[:, reservoir.sum(axis=0) <= np.percentile(reservoir.sum(axis=0), 5)]
    water = np.median(darkest, axis=1)
    with rasterio.open(LANDSAT8_224077) as a:
        pixels, profile = a.read(), a.profile
        pasted_box = shapely.box(*rasterio.windows.bounds(PASTED, a.transform))
        crs = a.crs
    noise = np.random.default_rng(0).normal(0, 0.02, (3, PASTED.height, PASTED.width)) * water[:, None, None]
    rows, cols = PASTED.toslices()
    pixels[:, rows, cols] = np.clip(water[:, None, None] + noise, 1, 65535).astype(np.uint16)
    with rasterio.open(paths["later"], "w", **profile) as later:
        later.write(pixels)
    footprint = Box.parse(pasted_box.bounds, crs.to_string()).polygon(WGS84)
    return {"paths": paths, "pasted": footprint}


@pytest.fixture(scope="module")
def store(tmp_path_factory, scenes):
    path = tmp_path_factory.mktemp("change-store") / "store"
    index_store(path, list(scenes["paths"].values()), TilingOptions(tile_size=128))
    return path


@pytest.fixture
def archive(store):
    with open_backend(store) as backend:
        yield Archive.open(backend, "tiles")


def scene_filter(archive: Archive, *paths) -> Filters:
    return Filters.of(archive, scenes=[str(p) for p in paths])


def test_the_pasted_change_ranks_first_above_every_place_of_the_same_day_pair(archive, scenes):
    paths = scenes["paths"]
    changed, report = change(archive, scene_filter(archive, paths["a"]), scene_filter(archive, paths["later"]))
    assert report.places == len(changed) > 50 and report.only_from == report.only_to == 0
    places = changed.geometry.to_numpy()
    overlap = shapely.area(shapely.intersection(places, scenes["pasted"])) / shapely.area(places)  # ratios: degrees do
    assert overlap[0] > 0, changed.head()  # the most changed place is under the pasted water
    assert int(np.argmax(overlap)) < 3  # the place most under it is among the first three
    assert list(changed["change"]) == sorted(changed["change"], reverse=True)
    assert (changed["acquired_from"].str[:10] == "2020-05-18").all()
    assert (changed["acquired_to"].str[:10] == "2021-06-01").all()

    same_day, pair = change(archive, scene_filter(archive, paths["a"]), scene_filter(archive, paths["b"]))
    assert pair.places == len(same_day) > 5 and pair.only_from > 0 and pair.only_to > 0  # crops overlap in part
    print(f"\nno-change baseline (same-day pair, {pair.places} places): change max {same_day['change'].max():.4f}, "
          f"median {same_day['change'].median():.4f}; pasted water: {changed['change'][0]:.4f}")
    assert same_day["change"].max() < changed["change"][0]


def test_a_place_on_every_date(archive, scenes):
    paths = scenes["paths"]
    changed, _ = change(archive, scene_filter(archive, paths["a"]), scene_filter(archive, paths["later"]))
    query = build_query(archive, tile=changed["tile_id_to"][0])
    steps = history(archive, query)
    by_path = dict(zip(steps["scene_path"], steps["score"], strict=True))
    assert {str(paths["a"]), str(paths["later"])} <= by_path.keys() <= {str(p) for p in paths.values()}
    assert list(steps["acquired"]) == sorted(steps["acquired"])
    assert list(steps["step"]) == list(range(1, len(steps) + 1))
    assert set(steps["place_id"]) == {changed["place_id"][0]}
    assert by_path[str(paths["later"])] == pytest.approx(1.0, abs=1e-5)  # the query itself
    assert by_path[str(paths["a"])] == pytest.approx(1 - changed["change"][0], abs=1e-5)

    # A box finds the place it lies most on: the pasted block's centre, drawn as a box of a few pixels.
    centre = scenes["pasted"].centroid
    box = build_query(archive, bbox=(centre.x - 1e-4, centre.y - 1e-4, centre.x + 1e-4, centre.y + 1e-4),
                      query_scene=str(paths["later"]))
    assert set(history(archive, box)["place_id"]) == {changed["place_id"][0]}


def test_bad_sides_are_one_line_and_change_nothing(archive, scenes):
    paths, count = scenes["paths"], archive.tile_count()
    a = scene_filter(archive, paths["a"])
    with pytest.raises(GeosearchError, match=r"^1 scene\(s\) are on both sides \(e\.g\. "):
        change(archive, a, scene_filter(archive, paths["a"], paths["later"]))
    with pytest.raises(GeosearchError, match=r"^the two sides share no place \(\d+ and \d+ places\): their scenes"):
        change(archive, a, scene_filter(archive, paths["aerial"]))
    with pytest.raises(GeosearchError, match=r"^the to side holds no tile: no indexed scene matches"):
        change(archive, a, Filters.of(archive, after="2030-01-01"))
    with pytest.raises(GeosearchError, match=r"^no scene 'nowhere.tif' in the archive"):
        scene_filter(archive, "nowhere.tif")
    assert archive.tile_count() == count


def test_the_cli_compares_dates_and_lists_a_place(store, scenes, tmp_path):
    out = tmp_path / "change.gpkg"
    result = run_geosearch("change", "--from", "2020-05-01..2020-05-31", "--to", "2021-01-01..", "-n", "5",
                           "-o", str(out), "--store", str(store))
    assert result.returncode == 0, result.stderr
    written = gpd.read_file(out)
    assert len(written) == 5 and written.intersects(scenes["pasted"])[0]
    summary = result.stdout.splitlines()[-1]
    assert "place(s) compared; left out: " in summary
    assert summary.endswith("tile(s) off the archive's lattice (no place id)")
    listed = run_geosearch("history", "--tile", written["tile_id_to"][0], "--json", "--store", str(store))
    assert listed.returncode == 0, listed.stderr
    assert {f["properties"]["scene_path"] for f in json.loads(listed.stdout)["features"]} >= {
        str(scenes["paths"]["a"]), str(scenes["paths"]["later"])}
    twice = run_geosearch("change", "--from", "2020-01-01..2020-12-31", "--from", "..2020-06-01", "--to",
                          str(scenes["paths"]["later"]), "--store", str(store))
    assert twice.returncode == 1 and twice.stderr.strip() == (
        "Error: --from: give at most one date range (FROM..TO) per side")
