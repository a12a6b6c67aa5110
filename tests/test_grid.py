"""Tile windows: counts and offsets for every edge mode, overlap, and scenes smaller than a tile."""

import numpy as np
import pytest
import rasterio

from geosearch.data import LANDSAT7_RGB
from geosearch.errors import GeosearchError
from geosearch.grid import EdgeMode, GridMode, axis_offsets, tile_offsets
from geosearch.tiling import TilingOptions, plan_grid


@pytest.mark.parametrize(
    ("edge", "expected"),
    [(EdgeMode.SHIFT, [0, 256, 512, 744]), (EdgeMode.PAD, [0, 256, 512, 768]), (EdgeMode.DROP, [0, 256, 512])],
)
def test_edge_modes_on_a_ragged_axis(edge, expected):
    assert axis_offsets(1000, 256, 256, edge).tolist() == expected


@pytest.mark.parametrize("edge", list(EdgeMode))
def test_an_exact_fit_is_the_same_in_every_mode(edge):
    assert axis_offsets(768, 256, 256, edge).tolist() == [0, 256, 512]


def test_overlapping_stride():
    assert axis_offsets(1000, 256, 128, EdgeMode.DROP).tolist() == [0, 128, 256, 384, 512, 640]
    assert axis_offsets(1000, 256, 128, EdgeMode.SHIFT).tolist() == [0, 128, 256, 384, 512, 640, 744]
    assert axis_offsets(1000, 256, 128, EdgeMode.PAD).tolist() == [0, 128, 256, 384, 512, 640, 768]


def test_edge_mode_given_as_text():
    assert axis_offsets(1000, 256, 256, "shift").tolist() == [0, 256, 512, 744]
    with pytest.raises(ValueError):
        axis_offsets(1000, 256, 256, "wrap")


def test_smaller_than_a_tile():
    assert axis_offsets(100, 256, 256, EdgeMode.PAD).tolist() == [0]
    for edge in (EdgeMode.SHIFT, EdgeMode.DROP):
        with pytest.raises(GeosearchError, match=r"smaller than one 256 px tile"):
            tile_offsets(100, 1000, 256, 256, edge)


@pytest.mark.parametrize(
    ("edge", "rows", "cols"),
    [("shift", [0, 256, 462], [0, 256, 512, 535]), ("pad", [0, 256, 512], [0, 256, 512, 768]),
     ("drop", [0, 256], [0, 256, 512])],
)
def test_windows_on_a_shipped_scene(edge, rows, cols):
    """RGB.byte is 791 × 718 px: not a whole number of 256 px tiles either way."""
    options = TilingOptions(edge=EdgeMode(edge), grid=GridMode.SCENE)
    with options.open(str(LANDSAT7_RGB)) as scene:
        assert (scene.grid.width, scene.grid.height) == (791, 718)
        grid = plan_grid(scene, options)
    expected = np.array([(r, c) for r in rows for c in cols])
    assert np.array_equal(grid.offsets, expected)
    assert grid.window(len(grid) - 1) == rasterio.windows.Window(cols[-1], rows[-1], 256, 256)
    assert len(set(grid.tile_ids)) == len(grid)
