"""Valid fractions from nodata values, alpha bands, a given nodata, NaN; skipping; all-nodata scenes."""

import logging

import numpy as np
import pytest
import rasterio
from rasterio.enums import ColorInterp

from geosearch.data import LANDSAT7_RGB, LANDSAT8_224078
from geosearch.grid import GridMode
from geosearch.tiling import TilingOptions, plan_grid, read_tiles, survey

OPTIONS = TilingOptions(grid=GridMode.SCENE)


def independent_valid_fractions(path, grid):
    """Valid fraction per tile from rasterio's dataset mask, padded with invalid pixels outside the scene."""
    with rasterio.open(path) as dataset:
        mask = dataset.dataset_mask() > 0
    size = grid.tile_size
    padded = np.zeros((mask.shape[0] + 2 * size, mask.shape[1] + 2 * size), dtype=bool)
    padded[size : size + mask.shape[0], size : size + mask.shape[1]] = mask
    return np.array([padded[r + size : r + 2 * size, c + size : c + 2 * size].mean() for r, c in grid.offsets])


@pytest.mark.parametrize("grid", list(GridMode))
@pytest.mark.parametrize("edge", ["shift", "pad", "drop"])
def test_valid_fraction_follows_the_nodata_border(edge, grid):
    """RGB.byte is a rotated Landsat 7 scene inside a nodata=0 frame. Aligned pad tiles start before the scene."""
    options = TilingOptions(edge=edge, grid=grid)
    result = survey(str(LANDSAT7_RGB), options)
    expected = independent_valid_fractions(LANDSAT7_RGB, result.grid)
    assert np.allclose(result.valid_fraction, expected)
    assert expected.min() < 0.99 and expected.max() > 0.99  # some tiles cross the nodata frame
    assert np.array_equal(result.kept, expected >= 0.5)


def test_padding_counts_as_nodata():
    result = survey(str(LANDSAT8_224078), TilingOptions(tile_size=300, edge="pad", grid=GridMode.SCENE))
    # 1280 × 1024 px in 300 px tiles: the last column holds 80 px of scene, the last row 124 px.
    last_column = result.grid.offsets[:, 1] == 1200
    assert result.valid_fraction[last_column].max() <= 80 / 300 + 1e-9
    assert not result.kept[last_column].any()


def test_landsat_fill_is_skipped():
    """The 224078 crop's north-east corner is outside the Landsat swath (fill value 0, declared nodata)."""
    result = survey(str(LANDSAT8_224078), OPTIONS)
    assert result.valid_fraction.min() == 0.0
    assert int(result.kept.sum()) == 16 and len(result.grid) == 20


def test_a_given_nodata_value_matches_a_declared_one(derive):
    undeclared = derive(LANDSAT8_224078, "undeclared.tif", nodata=None)
    with rasterio.open(undeclared) as dataset:
        assert dataset.nodata is None
    assert survey(str(undeclared), OPTIONS).kept.all()
    given = survey(str(undeclared), TilingOptions(nodata=0, grid=GridMode.SCENE))
    declared = survey(str(LANDSAT8_224078), OPTIONS)
    assert np.array_equal(given.valid_fraction, declared.valid_fraction)
    assert given.scene["stretch"] == declared.scene["stretch"]  # the fill does not drag the stretch down


def test_alpha_band_gives_the_mask(derive):
    def with_alpha(pixels):
        with rasterio.open(LANDSAT7_RGB) as dataset:
            alpha = dataset.dataset_mask()[None]
        return np.concatenate([pixels, alpha])

    path = derive(LANDSAT7_RGB, "rgba.tif", data=with_alpha, nodata=None,
                  colorinterp=[ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha])
    with_nodata = survey(str(LANDSAT7_RGB), OPTIONS)
    with_mask = survey(str(path), OPTIONS)
    assert with_mask.scene["bands"] == [1, 2, 3]
    assert np.allclose(with_mask.valid_fraction, with_nodata.valid_fraction)


def test_nan_is_never_valid(derive):
    def with_nan(pixels):
        pixels = pixels.astype("float32")
        pixels[:, :512, :] = np.nan
        return pixels

    path = derive(LANDSAT8_224078, "nan.tif", data=with_nan, nodata=None)
    result = survey(str(path), OPTIONS)
    top_half = result.grid.offsets[:, 0] < 512
    assert (result.valid_fraction[top_half] == 0).all()
    with OPTIONS.open(str(path)) as scene:
        assert np.isfinite(scene.stretch.low).all() and np.isfinite(scene.stretch.high).all()


def test_all_nodata_scene_yields_no_tiles_and_a_warning(derive, caplog):
    path = derive(LANDSAT8_224078, "empty.tif", data=np.zeros_like)
    with caplog.at_level(logging.WARNING, logger="geosearch"):
        result = survey(str(path), OPTIONS)
    assert not result.kept.any() and len(result.to_frame()) == 0
    assert "all nodata; it yields no tiles" in caplog.text


def test_nodata_pixels_are_zero_in_kept_tiles():
    with OPTIONS.open(str(LANDSAT7_RGB)) as scene:
        grid = plan_grid(scene, OPTIONS)
        for tile in read_tiles(scene, grid):
            with rasterio.open(LANDSAT7_RGB) as dataset:
                invalid = dataset.dataset_mask(window=grid.window(tile.index)) == 0
            assert (tile.pixels[:, invalid] == 0).all()
