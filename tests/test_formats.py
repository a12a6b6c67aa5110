"""Any raster GDAL reads: COG, VRT, JPEG 2000, 1 to N bands, integer and float types."""

import numpy as np
import pytest
import rasterio
import rasterio.shutil

from geosearch.data import AERIAL_3857, LANDSAT8_224077, LANDSAT8_224078
from geosearch.grid import GridMode
from geosearch.tiling import TilingOptions, survey

OPTIONS = TilingOptions(grid=GridMode.SCENE)


def test_cloud_optimized_geotiff():
    with rasterio.open(AERIAL_3857) as dataset:
        assert dataset.overviews(1) and dataset.profile["compress"] == "jpeg"
    assert survey(str(AERIAL_3857), OPTIONS).kept.sum() == 16


@pytest.mark.parametrize(("driver", "suffix"), [("VRT", "vrt"), ("JP2OpenJPEG", "jp2"), ("HFA", "img")])
def test_other_gdal_formats_tile_like_the_geotiff(tmp_path, driver, suffix):
    path = tmp_path / f"scene.{suffix}"
    options = {"QUALITY": "100", "REVERSIBLE": "YES"} if driver == "JP2OpenJPEG" else {}
    rasterio.shutil.copy(LANDSAT8_224078, path, driver=driver, **options)
    reference = survey(str(LANDSAT8_224078), TilingOptions(bands=(3, 2, 1), grid=GridMode.SCENE))
    result = survey(str(path), TilingOptions(bands=(3, 2, 1), grid=GridMode.SCENE))
    assert np.array_equal(result.grid.offsets, reference.grid.offsets)
    assert np.allclose(result.valid_fraction, reference.valid_fraction)
    assert result.scene["crs"] == reference.scene["crs"]


@pytest.mark.parametrize("count", [1, 2, 5, 8])
def test_any_band_count(derive, count):
    path = derive(LANDSAT8_224077, f"{count}.tif", data=lambda a: np.resize(a, (count, *a.shape[1:])))
    result = survey(str(path), OPTIONS)
    assert len(result.scene["bands"]) == 3 and result.kept.sum() == 20


def test_int16_with_negative_nodata(derive):
    path = derive(LANDSAT8_224078, "int16.tif", data=lambda a: np.where(a == 0, -9999, a - 7000).astype("int16"),
                  nodata=-9999)
    assert survey(str(path), OPTIONS).kept.sum() == 16
