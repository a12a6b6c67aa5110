"""The user's polygon files (any format OGR reads, any CRS), read into lon/lat with one clear error for each way
they can be unusable."""

from pathlib import Path

import geopandas as gpd
import shapely

from geosearch.errors import GeosearchError
from geosearch.files import check_readable


def read_polygons(path: str | Path, what: str) -> gpd.GeoDataFrame:
    """The features of a vector file in EPSG:4326; `what` names the file in errors (e.g. "--within area.gpkg")."""
    check_readable(path, what)
    try:
        frame = gpd.read_file(path)
    except Exception as error:  # pyogrio raises its own errors for every kind of unreadable file
        raise GeosearchError(f"{what}: cannot be read as vector data: {error}") from None
    if frame.crs is None or frame.empty:
        raise GeosearchError(f"{what}: needs polygons with a CRS")
    frame = frame.to_crs(4326)
    if not (shapely.area(frame.geometry.values) > 0).any():
        raise GeosearchError(f"{what}: has no polygon with an area")
    return frame
