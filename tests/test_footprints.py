"""Footprints against rasterio's own transforms, across CRSs, the antimeridian, and the Landsat 8 overlap."""

import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from rasterio.warp import transform as warp_transform
from rasterio.windows import bounds as window_bounds

from geosearch.data import AERIAL_3857, LANDSAT7_RGB, shipped_scenes
from geosearch.tiling import TilingOptions, plan_grid

OPTIONS = TilingOptions(tile_size=128)
METRES_PER_DEGREE = 111_320.0


def grid_of(path, options=OPTIONS):
    with options.open(str(path)) as scene:
        return plan_grid(scene, options)


def check_corners(path):
    grid = grid_of(path)
    with rasterio.open(path) as dataset:
        for index in range(len(grid)):
            left, bottom, right, top = window_bounds(grid.window(index), dataset.transform)
            native = np.array(grid.footprints.native[index].exterior.coords)
            assert {(x, y) for x, y in native} == {(left, top), (left, bottom), (right, bottom), (right, top)}
            lon, lat = warp_transform(dataset.crs, "EPSG:4326", [left, left, right, right], [top, bottom, bottom, top])
            vertices = np.array(grid.footprints.wgs84[index].exterior.coords)
            for corner in zip(lon, lat, strict=True):
                assert np.abs(vertices - corner).max(axis=1).min() < 1e-6, (path, index, corner)
            assert grid.footprints.wgs84[index].exterior.is_ccw  # RFC 7946: exterior rings counter-clockwise
            min_lon, min_lat, max_lon, max_lat = grid.footprints.bbox[index]
            envelope = shapely.envelope(grid.footprints.wgs84[index])
            assert shapely.box(min_lon, min_lat, max_lon, max_lat).equals(envelope)


@pytest.mark.parametrize("path", [str(p) for p in shipped_scenes()], ids=lambda p: p.rsplit("/", 1)[-1])
def test_corners_match_rasterio_on_shipped_scenes(path):
    check_corners(path)


@pytest.mark.parametrize("name", ["rmnp_rgb_epsg4326.tif", "landsat7_nc_5band_epsg32119_28m.tif",
                                  "landsat7_etm_6band_olinda_utm25s_28m.tif", "rgbn_4band_utm18n_5m.tif"])
def test_corners_match_rasterio_in_more_crss(shared_scenes, name):
    check_corners(str(shared_scenes / name))


def test_geographic_scene_footprints_stay_four_cornered(shared_scenes):
    grid = grid_of(shared_scenes / "rmnp_rgb_epsg4326.tif")
    assert all(len(polygon.exterior.coords) == 5 for polygon in grid.footprints.wgs84)


def test_long_edges_are_densified_to_a_tenth_of_a_pixel():
    """300 m pixels in UTM: a 154 km tile edge bows ~200 m away from its lon/lat chord; the footprint follows it."""
    options = TilingOptions(tile_size=512)
    grid = grid_of(LANDSAT7_RGB, options)
    polygon = grid.footprints.wgs84[0]
    with rasterio.open(LANDSAT7_RGB) as dataset:
        left, bottom, right, _ = window_bounds(grid.window(0), dataset.transform)
        xs = np.linspace(left, right, 101)
        lon, lat = warp_transform(dataset.crs, "EPSG:4326", xs, np.full_like(xs, bottom))
    edge = shapely.points(lon, lat)
    chord = shapely.LineString([(lon[0], lat[0]), (lon[-1], lat[-1])])
    assert (shapely.distance(chord, edge) * METRES_PER_DEGREE).max() > 100
    assert (shapely.distance(polygon.exterior, edge) * METRES_PER_DEGREE).max() < 0.1 * 300
    assert len(polygon.exterior.coords) > 5


def test_web_mercator_footprint_matches_its_ground_size():
    """0.597 Web Mercator 'metres' are 0.472 m on the ground at 37.7° N; a 128 px tile is 60 m across."""
    grid = grid_of(AERIAL_3857)
    assert grid.gsd_m == pytest.approx(0.597164 * np.cos(np.radians(37.669)), rel=1e-3)
    min_lon, _, max_lon, _ = grid.footprints.bbox[0]
    assert (max_lon - min_lon) * METRES_PER_DEGREE * np.cos(np.radians(37.669)) == pytest.approx(128 * 0.4725, rel=5e-3)


def test_tiles_across_the_antimeridian_are_split(derive):
    """Real pixels placed by a UTM 60N transform so that the scene straddles 180°."""
    path = derive(LANDSAT7_RGB, "fiji.tif", crs="EPSG:32660", transform=Affine(300, 0, 700_000, 0, -300, 2_000_000))
    grid = grid_of(path, TilingOptions())
    footprints = grid.footprints
    split = [i for i, geometry in enumerate(footprints.wgs84) if geometry.geom_type == "MultiPolygon"]
    assert split and len(split) < len(grid)
    for i in split:
        coords = shapely.get_coordinates(footprints.wgs84[i])
        assert coords[:, 0].min() >= -180 and coords[:, 0].max() <= 180
        assert footprints.bbox[i][0] > footprints.bbox[i][2]  # west > east across the antimeridian (RFC 7946 5.2)
        assert footprints.wgs84[i].area < 1.0  # two slivers of one ~0.6° tile, not a band around the globe
