"""What `index` says about scenes that would otherwise surprise silently: all nodata, constant, already indexed
with another tiling."""

import json
import warnings

import numpy as np

from conftest import run_geosearch
from geosearch.data import AERIAL_3857, LANDSAT8_224078
from geosearch.tiling import TilingOptions, plan_grid, read_tiles


def test_an_all_nodata_scene_is_indexed_with_a_warning(tmp_path, derive):
    empty = derive(LANDSAT8_224078, "empty.tif", data=np.zeros_like)  # nodata = 0 declared: every pixel is fill
    result = run_geosearch("index", str(empty), "--store", str(tmp_path / "store"), "--json")
    assert result.returncode == 0, result.stderr
    assert "empty.tif: no tile is at least 50% valid (all nodata?); it is indexed with no tiles" in result.stderr
    assert json.loads(result.stdout)["tiles_stored"] == 0


def test_a_constant_scene_is_mid_grey_without_numpy_warnings(derive):
    flat = derive(LANDSAT8_224078, "flat.tif", data=lambda a: np.full_like(a, 7000), nodata=None)
    options = TilingOptions()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a RuntimeWarning from the stretch fails the test
        with options.open(str(flat)) as scene:
            tiles = list(read_tiles(scene, plan_grid(scene, options)))
    assert all((tile.pixels == 128).all() for tile in tiles)


def test_indexing_a_scene_again_with_another_tiling_says_so(tmp_path):
    store = str(tmp_path / "store")
    assert run_geosearch("index", str(AERIAL_3857), "--store", store, "-q").returncode == 0
    again = run_geosearch("index", str(AERIAL_3857), "--store", store, "--tile-size", "128")
    assert again.returncode == 0, again.stderr
    assert "0 scene(s) indexed, 1 unchanged" in again.stdout
    assert "is indexed already with --tile-size 256 --stride 256 at 0.4723 m, not --tile-size 128 --stride 128 " \
           "at 0.4723 m; it is left as it is (--force indexes it again as asked)" in again.stdout
    same = run_geosearch("index", str(AERIAL_3857), "--store", store)
    assert "note:" not in same.stdout
