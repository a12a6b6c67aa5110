"""Resampling to a target ground sampling distance, in projected, Web Mercator and geographic CRSs."""

import pytest
import rasterio
from pyproj import Geod
from rasterio.warp import calculate_default_transform, reproject

from geosearch.data import AERIAL_3857, LANDSAT7_RGB, LANDSAT8_224078
from geosearch.errors import SceneError
from geosearch.grid import GridMode
from geosearch.tiling import TilingOptions, survey

GEOD = Geod(ellps="WGS84")


def assert_ground_square(polygon, side_m: float, rel: float = 3e-3) -> None:
    """A footprint covers a square of `side_m` on the ground: geodesic perimeter and area, whatever its rotation."""
    area, perimeter = GEOD.geometry_area_perimeter(polygon)
    assert perimeter == pytest.approx(4 * side_m, rel=rel)
    assert abs(area) == pytest.approx(side_m**2, rel=2 * rel)


def test_coarser_gsd_halves_the_grid():
    result = survey(str(LANDSAT8_224078), TilingOptions(tile_size=128, gsd=60, grid=GridMode.SCENE))
    assert result.scene["gsd_m"] == 60 and result.scene["native_gsd_m"] == pytest.approx(30, rel=2e-3)
    assert len(result.grid) == 5 * 4  # 1280 × 1024 px at 30 m → 640 × 512 px at 60 m
    assert_ground_square(result.grid.footprints.wgs84[0], 128 * 60)
    assert result.kept.sum() == 16  # the fill corner stays nodata through the warper's alpha


def test_finer_gsd_upsamples():
    result = survey(str(LANDSAT7_RGB), TilingOptions(gsd=100, grid=GridMode.SCENE))
    assert len(result.grid) == 10 * 9  # ceil(791 × 3) / 256 → 10 columns, ceil(718 × 3) / 256 → 9 rows
    assert 0 < result.kept.sum() < len(result.grid)


def test_web_mercator_gsd_is_measured_on_the_ground():
    result = survey(str(AERIAL_3857), TilingOptions(tile_size=128, gsd=1.0, grid=GridMode.SCENE))
    assert_ground_square(result.grid.footprints.wgs84[0], 128.0)


def test_geographic_scene_resampled_in_metres(tmp_path):
    """The 224078 crop reprojected to EPSG:4326 (degrees): tiles at --gsd 60 are 60 m pixels on the ground."""
    path = tmp_path / "geographic.tif"
    with rasterio.open(LANDSAT8_224078) as src:
        transform, width, height = calculate_default_transform(src.crs, "EPSG:4326", src.width, src.height, *src.bounds)
        profile = src.profile | {"crs": "EPSG:4326", "transform": transform, "width": width, "height": height}
        with rasterio.open(path, "w", **profile) as dst:
            for band in range(1, src.count + 1):
                reproject(rasterio.band(src, band), rasterio.band(dst, band))
            dst.descriptions = src.descriptions
    native = survey(str(path), TilingOptions(tile_size=64, grid=GridMode.SCENE))
    assert native.scene["native_gsd_m"] == pytest.approx(30, rel=0.05)
    result = survey(str(path), TilingOptions(tile_size=64, gsd=60, grid=GridMode.SCENE))
    for polygon in result.grid.footprints.wgs84[:5]:
        assert_ground_square(polygon, 64 * 60, rel=5e-3)


def test_absurd_upsampling_is_refused():
    with pytest.raises(SceneError, match=r"--gsd 1 m would upsample this 300 m scene more than 16×"):
        survey(str(LANDSAT7_RGB), TilingOptions(gsd=1, grid=GridMode.SCENE))
