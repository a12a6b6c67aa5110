"""Tile footprints in the scene's CRS and in EPSG:4326, computed for a whole grid at once.

A straight tile edge in a projected CRS is a curve in longitude/latitude. Each edge is densified just enough
that the reprojected chord stays within `tolerance_m` of the true curve; the level is chosen once per grid, so
tiles from a 4326 scene stay four-cornered and tiles of a wide UTM scene get the vertices they need.
"""

from dataclasses import dataclass

import antimeridian
import numpy as np
import shapely
from affine import Affine
from pyproj import CRS, Transformer

WGS84 = CRS.from_epsg(4326)
METRES_PER_DEGREE = 111_320.0
MAX_SEGMENTS_PER_EDGE = 64


@dataclass(frozen=True)
class Footprints:
    """Per-tile geometry for N tiles: shapely polygons, (N, 2) centroids and (N, 4) bounding boxes."""

    native: np.ndarray  # polygons in the scene CRS (4 corners: the pixel grid is affine there)
    wgs84: np.ndarray  # polygons (or multipolygons split at the antimeridian), lon/lat, counter-clockwise
    centroid: np.ndarray  # lon, lat of the tile centre pixel
    bbox: np.ndarray  # min_lon, min_lat, max_lon, max_lat (min_lon > max_lon across the antimeridian, RFC 7946)


def _ring(segments: int) -> np.ndarray:
    """Unit-square ring in (col, row) fractions: top-left, down the left edge, along the bottom, up the right, back.

    That order is counter-clockwise on a north-up map.
    """
    t = np.linspace(0.0, 1.0, segments, endpoint=False)
    left = np.stack([np.zeros_like(t), t], axis=1)
    bottom = np.stack([t, np.ones_like(t)], axis=1)
    right = np.stack([np.ones_like(t), 1 - t], axis=1)
    top = np.stack([1 - t, np.zeros_like(t)], axis=1)
    return np.concatenate([left, bottom, right, top, [[0.0, 0.0]]])


def _pixel_to_crs(transform: Affine, cols: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b, c, d, e, f = transform[:6]
    return a * cols + b * rows + c, d * cols + e * rows + f


def wrap_longitude(degrees: np.ndarray) -> np.ndarray:
    """Longitudes, or their differences, folded into [-180, 180), so a step across the antimeridian stays small."""
    return (degrees + 180.0) % 360.0 - 180.0


def _to_wgs84(transformer: Transformer, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lon/lat with longitudes in [-180, 180]: a scene in degrees may run past 180 (179.5 to 180.5), and what is
    stored and compared must not."""
    lon, lat = transformer.transform(x, y)
    lon = np.asarray(lon)
    return np.where(lon > 180, lon - 360, np.where(lon < -180, lon + 360, lon)), np.asarray(lat)


def _segments_needed(
    transformer: Transformer, transform: Affine, offsets: np.ndarray, size: int, tolerance_m: float
) -> int:
    """Fewest segments per edge (a power of two) whose lon/lat chords stay within tolerance of the true edge."""
    segments = 1
    while segments < MAX_SEGMENTS_PER_EDGE:
        ring = _ring(2 * segments)  # even vertices: the chord ends; odd vertices: the true midpoints
        cols = offsets[:, 1:2] + ring[None, :, 0] * size
        rows = offsets[:, 0:1] + ring[None, :, 1] * size
        lon, lat = _to_wgs84(transformer, *_pixel_to_crs(transform, cols, rows))
        mid_lon = lon[:, 0:-1:2] + wrap_longitude(lon[:, 2::2] - lon[:, 0:-1:2]) / 2
        mid_lat = (lat[:, 0:-1:2] + lat[:, 2::2]) / 2
        dx = wrap_longitude(lon[:, 1::2] - mid_lon) * np.cos(np.radians(lat[:, 1::2]))
        dy = lat[:, 1::2] - mid_lat
        if np.nanmax(np.hypot(dx, dy)) * METRES_PER_DEGREE <= tolerance_m:
            return segments
        segments *= 2
    return segments


def grid_footprints(transform: Affine, crs: CRS, offsets: np.ndarray, size: int, tolerance_m: float) -> Footprints:
    """Footprints of square tiles of `size` px at (row, col) `offsets` on a grid with this transform and CRS."""
    transformer = Transformer.from_crs(crs, WGS84, always_xy=True)
    n = len(offsets)

    corners = _ring(1)
    x, y = _pixel_to_crs(transform, offsets[:, 1:2] + corners[:, 0] * size, offsets[:, 0:1] + corners[:, 1] * size)
    native = shapely.polygons(np.stack([x, y], axis=-1))

    segments = _segments_needed(transformer, transform, offsets, size, tolerance_m) if n else 1
    ring = _ring(segments)
    lon, lat = _to_wgs84(
        transformer,
        *_pixel_to_crs(transform, offsets[:, 1:2] + ring[:, 0] * size, offsets[:, 0:1] + ring[:, 1] * size),
    )
    rings = shapely.polygons(np.stack([lon, lat], axis=-1))
    bbox = np.stack([lon.min(axis=1), lat.min(axis=1), lon.max(axis=1), lat.max(axis=1)], axis=1)
    wgs84 = shapely.orient_polygons(rings)
    # A ring whose longitudes span more than half the globe crosses the antimeridian: split it, as RFC 7946 asks.
    # Its planar orientation means nothing, so the split starts from the ring as traced.
    for i in np.flatnonzero(bbox[:, 2] - bbox[:, 0] > 180):
        wgs84[i] = antimeridian.fix_polygon(rings[i], fix_winding=False)
        bbox[i] = antimeridian.bbox(wgs84[i])

    centre_lon, centre_lat = _to_wgs84(
        transformer, *_pixel_to_crs(transform, offsets[:, 1] + size / 2, offsets[:, 0] + size / 2)
    )
    return Footprints(native=native, wgs84=wgs84, centroid=np.stack([centre_lon, centre_lat], axis=1), bbox=bbox)
