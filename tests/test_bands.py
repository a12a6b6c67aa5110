"""Which bands become red, green and blue."""

import numpy as np
import pytest
import rasterio
from rasterio.enums import ColorInterp

from geosearch.bands import default_bands, parse_bands, resolve_bands
from geosearch.data import LANDSAT7_RGB, LANDSAT8_224077
from geosearch.errors import GeosearchError


def bands_of(path, requested=None):
    with rasterio.open(path) as dataset:
        return resolve_bands(dataset, requested).indexes


def source_of(path, requested=None):
    with rasterio.open(path) as dataset:
        return resolve_bands(dataset, requested).source


def test_rgb_from_colour_interpretation():
    assert bands_of(LANDSAT7_RGB) == (1, 2, 3)
    assert source_of(LANDSAT7_RGB) == "colorinterp"


def test_rgb_from_colour_interpretation_in_any_order(derive):
    path = derive(LANDSAT7_RGB, "bgr.tif", data=lambda a: a[::-1].copy(),
                  colorinterp=[ColorInterp.blue, ColorInterp.green, ColorInterp.red])
    assert bands_of(path) == (3, 2, 1)


def test_rgb_from_band_descriptions():
    """The Landsat 8 crops are stored blue, green, red, with descriptions B2_blue, B3_green, B4_red."""
    assert bands_of(LANDSAT8_224077) == (3, 2, 1)
    assert source_of(LANDSAT8_224077) == "descriptions"


def test_red_edge_and_nir_are_not_red(derive):
    path = derive(LANDSAT8_224077, "s2.tif", data=lambda a: np.concatenate([a, a[2:3]]),
                  descriptions=["blue", "green", "red edge 1", "red"])
    assert bands_of(path) == (4, 2, 1)


def test_first_three_bands_without_any_hint(shared_scenes):
    with rasterio.open(shared_scenes / "landsat7_etm_6band_olinda_utm25s_28m.tif") as dataset:
        assert dataset.count == 6 and dataset.colorinterp[0] == ColorInterp.gray
        assert default_bands(dataset) == ((1, 2, 3), "assumed")


def test_single_band_repeats_as_grey(derive):
    path = derive(LANDSAT8_224077, "one.tif", data=lambda a: a[2:3], colorinterp=[ColorInterp.gray])
    assert bands_of(path) == (1, 1, 1)
    assert source_of(path) == "grey"


def test_requested_bands():
    assert bands_of(LANDSAT8_224077, (1, 2, 3)) == (1, 2, 3)
    assert bands_of(LANDSAT8_224077, (2,)) == (2, 2, 2)
    assert source_of(LANDSAT8_224077, (2,)) == "given"


@pytest.mark.parametrize("requested", [(4, 3, 2), (0,), (1, 2, -1)])
def test_band_out_of_range(requested):
    with pytest.raises(GeosearchError, match=r"out of range: the scene has 3 band\(s\), 1 to 3"):
        bands_of(LANDSAT8_224077, requested)


def test_parse_bands():
    assert parse_bands("4,3,2") == (4, 3, 2)
    assert parse_bands("5") == (5,)
    for bad in ("4,3", "a,b,c", ""):
        with pytest.raises(GeosearchError):
            parse_bands(bad)
