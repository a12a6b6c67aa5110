"""`geosearch tile` as a user runs it: outputs, summaries, every bad input, config."""

import json
import shutil
from itertools import pairwise

import geopandas as gpd
import numpy as np
import pytest
import rasterio

from conftest import run_geosearch
from geosearch.data import AERIAL_3857, LANDSAT7_RGB, LANDSAT8_224077, LANDSAT8_224078


def error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


@pytest.mark.parametrize("suffix", ["geojson", "gpkg", "parquet"])
def test_tile_writes_the_grid(tmp_path, suffix):
    out = tmp_path / f"tiles.{suffix}"
    result = run_geosearch("tile", str(LANDSAT8_224078), str(LANDSAT7_RGB), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "2 scene(s): 32 tiles kept, 10 skipped" in result.stdout  # on the aligned grid: 22 + 10 kept
    frame = gpd.read_parquet(out) if suffix == "parquet" else gpd.read_file(out)
    assert len(frame) == 32 and frame.crs.to_epsg() == 4326
    assert set(frame.columns) >= {"tile_id", "place_id", "scene_id", "row", "col", "width", "height", "gsd_m",
                                  "valid_fraction"}
    assert (frame["valid_fraction"] >= 0.5).all()
    assert frame["tile_id"].is_unique


def test_geojson_follows_rfc7946(tmp_path):
    out = tmp_path / "tiles.geojson"
    assert run_geosearch("tile", str(AERIAL_3857), "--out", str(out), "--quiet").returncode == 0
    document = json.loads(out.read_text())
    assert document["type"] == "FeatureCollection" and "crs" not in document
    ring = document["features"][0]["geometry"]["coordinates"][0]
    assert ring[0] == ring[-1] and all(128 < lon < 129 and 37 < lat < 38 for lon, lat in ring)
    signed_area = sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in pairwise(ring))
    assert signed_area > 0  # exterior ring counter-clockwise


def test_include_skipped_and_json_summary(tmp_path):
    out = tmp_path / "tiles.geojson"
    result = run_geosearch("tile", str(LANDSAT8_224078), "--out", str(out), "--include-skipped", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["tiles_kept"] == 22 and summary["tiles_skipped"] == 8 and summary["failed"] == []
    scene = summary["scenes"][0]
    assert scene["bands"] == [3, 2, 1] and scene["stretch"]["source"] == "whole" and scene["crs"] == "EPSG:32621"
    frame = gpd.read_file(out)
    assert len(frame) == 30 and frame["kept"].sum() == 22


def test_directories_and_recursion(tmp_path):
    nested = tmp_path / "archive" / "2020"
    nested.mkdir(parents=True)
    shutil.copy(AERIAL_3857, tmp_path / "archive")
    shutil.copy(LANDSAT7_RGB, nested)
    (tmp_path / "archive" / "notes.txt").write_text("not a scene")
    flat = run_geosearch("tile", str(tmp_path / "archive"), "--json")
    deep = run_geosearch("tile", str(tmp_path / "archive"), "--recursive", "--json")
    assert len(json.loads(flat.stdout)["scenes"]) == 1
    assert len(json.loads(deep.stdout)["scenes"]) == 2


def test_tiling_options_reach_the_engine(tmp_path):
    result = run_geosearch("tile", str(LANDSAT8_224077), "--tile-size", "128", "--stride", "64", "--edge", "drop",
                           "--gsd", "60", "--bands", "1,2,3", "--min-valid", "0.9", "--grid", "scene", "--json")
    scene = json.loads(result.stdout)["scenes"][0]
    assert scene["tiles"] == 9 * 7 and scene["gsd_m"] == 60 and scene["bands"] == [1, 2, 3]


@pytest.fixture
def bad_scenes(tmp_path, derive):
    """One file for each kind of bad input, each made from real data."""
    not_raster = tmp_path / "notes.tif"
    not_raster.write_text("this is not a raster")
    no_crs = derive(LANDSAT8_224078, "no_crs.tif", crs=None)
    no_transform = tmp_path / "no_transform.tif"
    with rasterio.open(LANDSAT8_224078) as src, rasterio.open(
        no_transform, "w", driver="GTiff", width=src.width, height=src.height, count=3, dtype=src.dtypes[0]
    ) as dst:
        dst.write(src.read())
    small = derive(LANDSAT8_224078, "small.tif", window=((500, 600), (100, 200)))
    truncated_header = tmp_path / "truncated_header.tif"  # IFD at the end of the file: fails on open
    truncated_header.write_bytes(LANDSAT8_224078.read_bytes()[: LANDSAT8_224078.stat().st_size // 2])
    truncated_pixels = tmp_path / "truncated_pixels.tif"  # a COG: header first, so it opens and fails on read
    truncated_pixels.write_bytes(AERIAL_3857.read_bytes()[: AERIAL_3857.stat().st_size // 2])
    return {
        "not_raster": (not_raster, "cannot be opened as a raster"),
        "no_crs": (no_crs, "has no CRS"),
        "no_transform": (no_transform, "has no CRS"),
        "small": (small, "smaller than one 256 px tile"),
        "truncated_header": (truncated_header, "cannot be opened as a raster"),
        "truncated_pixels": (truncated_pixels, "truncated or corrupt"),
        "missing": (tmp_path / "missing.tif", "cannot be opened as a raster"),
    }


@pytest.mark.parametrize("case", ["not_raster", "no_crs", "no_transform", "small", "truncated_header",
                                  "truncated_pixels", "missing"])
def test_bad_input_is_one_clear_line(bad_scenes, case):
    path, problem = bad_scenes[case]
    result = run_geosearch("tile", str(path))
    assert result.returncode == 1
    lines = error_lines(result)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: {path}: ") and problem in lines[0], lines[0]
    assert "Traceback" not in result.stderr


def test_no_geotransform_with_a_crs(tmp_path):
    path = tmp_path / "crs_only.tif"
    with rasterio.open(LANDSAT8_224078) as src, rasterio.open(
        path, "w", driver="GTiff", width=64, height=64, count=1, dtype="uint16", crs=src.crs
    ) as dst:
        dst.write(src.read(1, window=((0, 64), (0, 64))), 1)
    result = run_geosearch("tile", str(path), "--tile-size", "32")
    assert result.returncode == 1 and "has no geotransform" in result.stderr


def test_band_out_of_range():
    result = run_geosearch("tile", str(LANDSAT8_224078), "--bands", "4,3,2")
    assert result.returncode == 1
    assert error_lines(result) == [f"error: {LANDSAT8_224078}: band 4 is out of range: the scene has 3 band(s), 1 to 3"]


def test_malformed_options_are_usage_errors(tmp_path):
    for args in (["--bands", "4,3"], ["--edge", "wrap"], ["--tile-size", "0"], ["--min-valid", "2"]):
        result = run_geosearch("tile", str(LANDSAT8_224078), *args)
        assert result.returncode == 2, args
        assert "Error: Invalid value" in result.stderr


def test_a_bad_scene_does_not_stop_the_others(bad_scenes, tmp_path):
    out = tmp_path / "tiles.geojson"
    bad = [str(bad_scenes[case][0]) for case in ("not_raster", "truncated_pixels", "small")]
    result = run_geosearch("tile", bad[0], str(LANDSAT8_224078), bad[1], str(AERIAL_3857), bad[2], "--out", str(out))
    assert result.returncode == 1
    assert len(error_lines(result)) == 3
    assert "2 scene(s), 3 failed: 47 tiles kept" in result.stdout
    assert len(gpd.read_file(out)) == 47


def test_output_problems_stop_before_any_work(tmp_path):
    missing_dir = run_geosearch("tile", str(AERIAL_3857), "--out", str(tmp_path / "nowhere" / "tiles.geojson"))
    assert missing_dir.returncode == 1
    nowhere = tmp_path / "nowhere"
    assert error_lines(missing_dir) == [f"Error: {nowhere}/tiles.geojson: directory {nowhere} does not exist"]
    unknown = run_geosearch("tile", str(AERIAL_3857), "--out", str(tmp_path / "tiles.csv"))
    assert unknown.returncode == 1 and "unknown output format" in unknown.stderr


def test_a_failed_run_keeps_the_previous_output(tmp_path, bad_scenes):
    out = tmp_path / "tiles.geojson"
    assert run_geosearch("tile", str(AERIAL_3857), "--out", str(out)).returncode == 0
    before = out.read_bytes()
    assert run_geosearch("tile", str(bad_scenes["not_raster"][0]), "--out", str(out)).returncode == 1
    assert out.read_bytes() == before
    assert not list(tmp_path.glob(".*partial*"))


def test_all_nodata_scene_warns_and_succeeds(derive):
    path = derive(LANDSAT8_224078, "empty.tif", data=np.zeros_like)
    result = run_geosearch("tile", str(path))
    assert result.returncode == 0
    assert error_lines(result) == [f"WARNING: {path}: all nodata; it yields no tiles"]
    assert "0 tiles kept, 30 skipped" in result.stdout


def test_config_file_then_environment_then_option(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text("[tile]\ntile_size = 128\n")
    env = {"GEOSEARCH_CONFIG": str(config), "GEOSEARCH_GRID": "scene"}  # whole tiles from the corner: 1024 px

    def tiles(*args, extra_env=None):
        result = run_geosearch("tile", str(AERIAL_3857), "--json", *args, env=env | (extra_env or {}))
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)["scenes"][0]["tiles"]

    assert tiles() == 64
    assert tiles(extra_env={"GEOSEARCH_TILE_SIZE": "512"}) == 4
    assert tiles("--tile-size", "256", extra_env={"GEOSEARCH_TILE_SIZE": "512"}) == 16
    config.write_text("[tile\n")
    broken = run_geosearch("tile", str(AERIAL_3857), env=env)
    assert broken.returncode == 1 and "cannot read config file" in broken.stderr
