"""Aligned grids and archive stretches on real scenes: the same ground is the same tile (footprint and place id) in
scenes cut at unrelated origins, a profile's stretch is set once and reused, old-mode archives keep their mode, and
each bad input is one line with nothing stored touched."""

import json

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.windows import Window

from conftest import run_geosearch
from geosearch.data import AERIAL_3857, LANDSAT7_RGB, LANDSAT8_224077, LANDSAT8_224078
from geosearch.errors import GeosearchError, SceneError
from geosearch.grid import EdgeMode, GridMode, lattice_axis
from geosearch.index import tiling_of
from geosearch.store import open_backend
from geosearch.store.archive import Archive
from geosearch.store.filters import HasId, Match, where
from geosearch.stretch import StretchMode, parse_stretch
from geosearch.tiling import TilingOptions, plan_grid


def one_line(result) -> bool:
    return len(result.stderr.strip().splitlines()) == 1


def grid_of(path, options: TilingOptions, profiles=None):
    with options.open(str(path), profiles=profiles) as scene:
        return plan_grid(scene, options), scene.stretch, scene.profile


def shared_places(a, b) -> list[tuple[int, int]]:
    where = {place: j for j, place in enumerate(b.place_ids) if place}
    return [(i, where[place]) for i, place in enumerate(a.place_ids) if place in where]


@pytest.mark.parametrize("tile_size", [64, 100, 256])
def test_crops_at_unrelated_origins_share_footprints_and_place_ids(tile_size):
    """The shipped crops start 477 columns and 25 rows apart on one 30 m grid; every tile of A over B's lattice
    tiles is one of B's, footprint for footprint; in scene mode, not one tile lines up."""
    options = TilingOptions(tile_size=tile_size)
    (a, _, _), (b, _, _) = grid_of(LANDSAT8_224077, options), grid_of(LANDSAT8_224078, options)
    pairs = shared_places(a, b)
    overlap_cols, overlap_rows = 1280 - 477, 1024 - 25  # the crops' overlap in pixels
    assert len(pairs) >= (overlap_cols // tile_size - 1) * (overlap_rows // tile_size - 1)
    for i, j in pairs:
        assert a.footprints.native[i].equals_exact(b.footprints.native[j], tolerance=1e-6)
        assert a.footprints.wgs84[i].equals_exact(b.footprints.wgs84[j], tolerance=1e-9)
        assert (a.offsets[i] - b.offsets[j]).tolist() == [-25, 477]  # the same ground, in each crop's pixels
    scene = TilingOptions(tile_size=tile_size, grid=GridMode.SCENE)
    (a_scene, _, _), (b_scene, _, _) = grid_of(LANDSAT8_224077, scene), grid_of(LANDSAT8_224078, scene)
    assert not any(p.equals_exact(q, 1e-6) for p in a_scene.footprints.native for q in b_scene.footprints.native)
    assert set(a_scene.place_ids) == {None}


def test_a_resampled_grid_snaps_to_the_same_lattice():
    """--gsd 60 on both crops: each is resampled on its own, and their 60 m tiles still coincide."""
    options = TilingOptions(tile_size=64, gsd=60)
    (a, _, _), (b, _, _) = grid_of(LANDSAT8_224077, options), grid_of(LANDSAT8_224078, options)
    pairs = shared_places(a, b)
    assert len(pairs) >= 9  # the overlap is about 400 × 500 px at 60 m
    for i, j in pairs:
        assert a.footprints.native[i].equals_exact(b.footprints.native[j], tolerance=1e-6)
    assert a.gsd_m == 60


def test_lattice_axis_edge_modes():
    """A scene whose first pixel is pixel 10 of the lattice frame, 100 px long, 32 px tiles."""
    starts, indexes, on = lattice_axis(10, 100, 32, 32, EdgeMode.PAD)
    assert starts.tolist() == [-10, 22, 54, 86] and indexes.tolist() == [0, 1, 2, 3] and on.all()
    starts, _, on = lattice_axis(10, 100, 32, 32, EdgeMode.DROP)
    assert starts.tolist() == [22, 54] and on.all()
    starts, _, on = lattice_axis(10, 100, 32, 32, EdgeMode.SHIFT)  # edge strips covered by shifted tiles
    assert starts.tolist() == [0, 22, 54, 68] and on.tolist() == [False, True, True, False]
    starts, indexes, _ = lattice_axis(-70_704, 100, 32, 32, EdgeMode.DROP)  # west of the CRS origin
    assert starts.tolist() == [16, 48] and indexes.tolist() == [-2209, -2208]


def test_a_rotated_scene_has_no_lattice_but_scene_grids_still_cut_it(derive):
    t = rasterio.open(LANDSAT7_RGB).transform
    rotated = derive(LANDSAT7_RGB, "rotated.tif", transform=t @ Affine.rotation(10))
    with pytest.raises(SceneError, match=r"rotated.tif: has a rotated or sheared geotransform.*--grid scene"):
        grid_of(rotated, TilingOptions())
    assert len(grid_of(rotated, TilingOptions(grid=GridMode.SCENE))[0]) > 0
    result = run_geosearch("tile", str(rotated))
    assert result.returncode == 1 and one_line(result) and "--grid scene" in result.stderr


def test_a_profile_stretch_is_set_by_the_first_scene_and_reused():
    options = TilingOptions()
    profiles = options.profile_stretches()
    _, first, profile = grid_of(LANDSAT8_224078, options, profiles)
    _, second, second_profile = grid_of(LANDSAT8_224077, options, profiles)
    assert profile == second_profile == "uint16/B4_red,B3_green,B2_blue of 3/-/dn"
    assert second.low == first.low and second.high == first.high and second.source == "archive"
    _, own, _ = grid_of(LANDSAT8_224077, TilingOptions(stretch=StretchMode.SCENE))
    assert own.low != first.low  # the crops' own percentiles differ
    _, aerial, _ = grid_of(AERIAL_3857, options, profiles)
    assert aerial.is_identity and list(profiles.added) == [profile]  # 8-bit data is shown as it is


def test_profiles_compare_physical_values(derive):
    """Two files of one sensor whose metadata scale raw values differently share a stretch in physical units."""
    a = derive(LANDSAT8_224078, "a.tif")
    b = derive(LANDSAT8_224077, "b.tif", data=lambda x: (x.astype(np.int32) + 1000).astype(np.uint16))
    for path, offset in ((a, -0.2), (b, -0.2275)):  # b's raw values carry 1000 more: its offset says so
        with rasterio.open(path, "r+") as dataset:
            dataset.scales, dataset.offsets = (2.75e-5,) * 3, (offset,) * 3
    options = TilingOptions()
    profiles = options.profile_stretches()
    _, first, profile = grid_of(a, options, profiles)
    _, second, _ = grid_of(b, options, profiles)
    assert profile.endswith("/scaled")
    assert second.low == pytest.approx(tuple(v + 1000 for v in first.low), abs=1e-6)
    assert profiles.added[profile].low == pytest.approx(tuple(v * 2.75e-5 - 0.2 for v in first.low))


def test_parse_stretch():
    assert parse_stretch("archive") is StretchMode.ARCHIVE and parse_stretch("scene") is StretchMode.SCENE
    assert parse_stretch("100,9000").low == (100, 100, 100)
    assert parse_stretch("1,2,3,4,5,6").high == (2, 4, 6)
    for bad in ("archve", "1,2,3", "5,1", "0,inf", "a,b"):
        with pytest.raises(GeosearchError, match=r"give archive, scene|each LO must be below its HI"):
            parse_stretch(bad)


def _scenes(store) -> list[dict]:
    result = run_geosearch("scenes", "--store", str(store), "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_index_records_the_archive_stretch_and_reuses_it_in_a_later_run(tmp_path):
    store = tmp_path / "store"
    first = run_geosearch("index", str(LANDSAT8_224078), "--store", str(store), "-q")
    assert first.returncode == 0, first.stderr
    second = run_geosearch("index", str(LANDSAT8_224077), str(AERIAL_3857), "--store", str(store), "--json")
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["grid"] == "aligned"
    a, b = (r for r in _scenes(store) if "landsat8" in r["path"])  # by path: 224077, then 224078
    assert a["stretch"]["low"] == b["stretch"]["low"] and a["stretch"]["source"] == "archive"
    assert a["tiling"]["grid"] == "aligned" and a["tiling"]["lattice"] == b["tiling"]["lattice"]
    # A scene of that profile from outside the archive is stretched by the archive's limits when queried.
    outside = run_geosearch("search", "--bbox", "-54.82", "-25.20", "-54.80", "-25.18", "--raster",
                            str(LANDSAT8_224077), "--store", str(store), "-k", "1", "--json")
    assert outside.returncode == 0, outside.stderr
    with open_backend(store) as backend:  # the same place in every scene is one indexed filter
        archive = Archive.open(backend, "tiles")
        places = {p["place_id"] for _, p in archive.tiles(a["scene_id"]) if "place_id" in p}
        twice = [place for place in places if backend.count("tiles", where(Match("place_id", place))) == 2]
        assert len(twice) >= 6  # the 256 px lattice tiles over both crops
    stretch_from = run_geosearch("index", str(LANDSAT7_RGB), "--store", str(store), "--stretch-from",
                                 str(LANDSAT8_224077))
    assert stretch_from.returncode == 1 and one_line(stretch_from)
    assert "profile uint16/B4_red,B3_green,B2_blue of 3/-/dn is set already" in stretch_from.stderr


def test_a_stretch_from_scene_of_another_profile_is_refused(tmp_path):
    store = tmp_path / "store"
    result = run_geosearch("index", str(LANDSAT8_224078), "--store", str(store), "--stretch-from", str(AERIAL_3857))
    assert result.returncode == 1 and one_line(result)
    assert "--stretch-from scenes are of profile uint8/1,2,3 of 3/-/dn" in result.stderr
    assert not (store / "edge").exists() or _scenes(store) == []
    pooled = run_geosearch("tile", str(LANDSAT8_224078), "--stretch-from", str(LANDSAT8_224077), "--stretch-from",
                           str(LANDSAT8_224078), "--json")
    assert pooled.returncode == 0, pooled.stderr
    own = run_geosearch("tile", str(LANDSAT8_224078), "--stretch", "scene", "--json")
    pooled_stretch, own_stretch = (json.loads(r.stdout)["scenes"][0]["stretch"] for r in (pooled, own))
    assert pooled_stretch["source"] == "archive" and pooled_stretch["low"] != own_stretch["low"]


def _as_before_aligned_grids(store) -> None:
    """Rewrite an archive's records as geosearch wrote them before aligned grids: no grid mode in the collection's
    record, no grid, lattice or profile in the scenes' records, no stretch records."""
    with open_backend(store) as backend:
        records = "tiles__scenes"
        for point_id, record in list(backend.scroll(records)):
            if record["kind"] == "stretch":
                backend.delete(records, where(HasId((point_id,))))
                continue
            old = {k: v for k, v in record.items() if k not in ("grid", "profile")}
            if "tiling" in old:
                old["tiling"] = {k: v for k, v in old["tiling"].items() if k not in ("grid", "lattice")}
            backend.upsert(records, [point_id], np.ones((1, 1), dtype=np.float32), [old])
        backend.flush()


def test_an_archive_from_before_aligned_grids_keeps_its_grid(tmp_path):
    store = tmp_path / "store"
    first = run_geosearch("index", str(LANDSAT8_224078), "--store", str(store), "--grid", "scene", "--stretch",
                          "scene", "-q")
    assert first.returncode == 0, first.stderr
    _as_before_aligned_grids(store)
    (old,) = _scenes(store)
    assert "grid" not in old["tiling"] and tiling_of(old).grid is GridMode.SCENE
    refused = run_geosearch("index", str(LANDSAT8_224077), "--store", str(store), "--grid", "aligned")
    assert refused.returncode == 1 and one_line(refused)
    assert "is cut with --grid scene" in refused.stderr and len(_scenes(store)) == 1
    kept = run_geosearch("index", str(LANDSAT8_224077), "--store", str(store), "--json")
    assert kept.returncode == 0, kept.stderr
    assert json.loads(kept.stdout)["grid"] == "scene"
    assert [r["tiling"].get("grid", "scene") for r in _scenes(store)] == ["scene", "scene"]
    with open_backend(store) as backend:
        tile_id = next(Archive.open(backend, "tiles").tiles(old["scene_id"]))[0]
    found = run_geosearch("search", "--tile", tile_id, "--store", str(store), "-k", "3", "--json")
    assert found.returncode == 0, found.stderr
    assert len(json.loads(found.stdout)["features"]) == 3


def test_index_says_when_a_scene_cannot_join_the_lattice(tmp_path, derive):
    """B moved by half a pixel: same CRS and pixel size, another phase; it overlaps A and shares no place."""
    store = tmp_path / "store"
    with rasterio.open(LANDSAT8_224078) as dataset:
        shifted = dataset.transform @ Affine.translation(0.5, 0)
    moved = derive(LANDSAT8_224078, "moved.tif", window=Window(0, 0, 1280, 1024), transform=shifted)
    assert run_geosearch("index", str(LANDSAT8_224077), "--store", str(store), "-q").returncode == 0
    result = run_geosearch("index", str(moved), "--store", str(store))
    assert result.returncode == 0, result.stderr
    assert "on another pixel lattice" in result.stdout and "no place ids in common" in result.stdout


def test_bad_grid_and_stretch_options_are_one_line(tmp_path):
    for args in (["--stretch", "bright"], ["--grid", "hex"]):
        result = run_geosearch("tile", str(LANDSAT8_224078), *args)
        assert result.returncode == 2 and ("--stretch" in result.stderr or "--grid" in result.stderr), args
    mixed = run_geosearch("tile", str(LANDSAT8_224078), "--stretch", "scene", "--stretch-from", str(LANDSAT8_224077))
    assert mixed.returncode == 1 and "--stretch-from sets a profile's stretch for --stretch archive" in mixed.stderr


def test_same_place_rates_on_a_users_own_pair():
    """`geosearch same-place`: the crops' overlap tiles find their twins with the defaults; scenes that do not
    overlap are one line."""
    result = run_geosearch("same-place", str(LANDSAT8_224077), str(LANDSAT8_224078), "--json")
    assert result.returncode == 0, result.stderr
    rates = json.loads(result.stdout)
    assert rates["queries"] >= 6 and rates["rank1"] >= 0.95 and rates["rank10"] >= rates["rank1"]
    apart = run_geosearch("same-place", str(AERIAL_3857), str(LANDSAT8_224078))
    assert apart.returncode == 1 and one_line(apart) and "no tile of the same ground" in apart.stderr
