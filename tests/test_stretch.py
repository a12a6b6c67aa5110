"""One stretch per scene, from overviews, the whole scene or a window sample, recorded and reusable."""

import numpy as np
import pytest
import rasterio

from geosearch.data import AERIAL_3857, LANDSAT8_224077, LANDSAT8_224078
from geosearch.grid import GridMode
from geosearch.stretch import Stretch
from geosearch.tiling import TilingOptions, plan_grid, read_tiles
from support import write_mosaic_vrt

OPTIONS = TilingOptions(grid=GridMode.SCENE)


def full_resolution_percentiles(path, bands=(3, 2, 1), q=(2, 98)):
    with rasterio.open(path) as dataset:
        pixels = dataset.read(bands)
        valid = dataset.dataset_mask() > 0
    return np.array([np.percentile(band[valid], q) for band in pixels])


def check_limits_close(stretch, path, tolerance):
    expected = full_resolution_percentiles(path)
    span = expected[:, 1] - expected[:, 0]
    assert np.all(np.abs(np.array(stretch.low) - expected[:, 0]) < tolerance * span), (stretch, expected)
    assert np.all(np.abs(np.array(stretch.high) - expected[:, 1]) < tolerance * span), (stretch, expected)


def test_eight_bit_data_is_left_as_is():
    with OPTIONS.open(str(AERIAL_3857)) as scene:
        assert scene.stretch == Stretch.identity()
        grid = plan_grid(scene, OPTIONS)
        tile = next(read_tiles(scene, grid))
    with rasterio.open(AERIAL_3857) as dataset:
        assert np.array_equal(tile.pixels, dataset.read((1, 2, 3), window=grid.window(0)))


def test_stretch_from_overviews_is_close_to_full_resolution():
    with OPTIONS.open(str(LANDSAT8_224077)) as scene:
        assert scene.stretch.source == "overviews"
        check_limits_close(scene.stretch, LANDSAT8_224077, 0.02)


def test_stretch_of_a_small_scene_without_overviews_reads_it_whole():
    with OPTIONS.open(str(LANDSAT8_224078)) as scene:
        assert scene.stretch.source == "whole"
        check_limits_close(scene.stretch, LANDSAT8_224078, 0.02)


def test_stretch_of_a_large_scene_without_overviews_samples_windows(tmp_path):
    path = write_mosaic_vrt(LANDSAT8_224078, tmp_path / "large.vrt", 6400, 5120)
    with OPTIONS.open(str(path)) as scene:
        assert scene.stretch.source == "sample"
        check_limits_close(scene.stretch, LANDSAT8_224078, 0.05)


def test_every_tile_uses_the_scene_stretch_never_its_own():
    with OPTIONS.open(str(LANDSAT8_224078)) as scene, rasterio.open(LANDSAT8_224078) as dataset:
        low = np.array(scene.stretch.low)[:, None, None]
        high = np.array(scene.stretch.high)[:, None, None]
        grid = plan_grid(scene, OPTIONS)
        own_limits_differ = False
        for tile in read_tiles(scene, grid):
            raw = dataset.read((3, 2, 1), window=grid.window(tile.index)).astype(np.float64)
            expected = np.clip(np.round((raw - low) / (high - low) * 255), 0, 255)
            valid = dataset.dataset_mask(window=grid.window(tile.index)) > 0
            assert not valid.any() or np.abs(tile.pixels[:, valid] - expected[:, valid]).max() <= 1
            assert (tile.pixels[:, ~valid] == 0).all()
            if tile.kept:
                own = np.percentile(raw[:, valid], (2, 98), axis=1).T
                scene_limits = np.hstack([low[:, 0], high[:, 0]])
                own_limits_differ |= bool((np.abs(own - scene_limits) > 0.1 * (high - low)[:, 0]).any())
    # Tiles differ from the scene as a whole, so a per-tile stretch could not have passed the check above.
    assert own_limits_differ


def test_a_recorded_stretch_is_reused():
    with OPTIONS.open(str(LANDSAT8_224078)) as scene:
        recorded = scene.stretch.to_dict()
        first = next(read_tiles(scene, plan_grid(scene, OPTIONS))).pixels
    reused = Stretch.from_dict(recorded)
    assert reused == Stretch(**recorded)
    with OPTIONS.open(str(LANDSAT8_224078), stretch=reused) as scene:
        assert scene.stretch is reused
        assert np.array_equal(next(read_tiles(scene, plan_grid(scene, OPTIONS))).pixels, first)


def test_percentiles_are_an_option():
    with TilingOptions(percentiles=(0.5, 99.5), grid=GridMode.SCENE).open(str(LANDSAT8_224078)) as wide, OPTIONS.open(
        str(LANDSAT8_224078)
    ) as default:
        assert all(w < d for w, d in zip(wide.stretch.low, default.stretch.low, strict=True))
        assert all(w > d for w, d in zip(wide.stretch.high, default.stretch.high, strict=True))
        assert wide.stretch.percentiles == (0.5, 99.5)


@pytest.mark.parametrize("dtype", ["int16", "float32", "float64"])
def test_other_dtypes_stretch_to_uint8(derive, dtype):
    path = derive(LANDSAT8_224078, f"{dtype}.tif", data=lambda a: (a.astype(dtype) - 5000), nodata=-5000)
    with OPTIONS.open(str(path)) as scene:
        tiles = list(read_tiles(scene, plan_grid(scene, OPTIONS)))
    assert all(tile.pixels.dtype == np.uint8 for tile in tiles)
    assert max(tile.pixels.max() for tile in tiles) == 255 and sum(tile.kept for tile in tiles) == 16
