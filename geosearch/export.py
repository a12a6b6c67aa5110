"""Writing features: GeoJSON (RFC 7946), GeoPackage or GeoParquet, chosen by the file's extension."""

import os
from collections.abc import Iterable
from pathlib import Path

import geopandas as gpd
import shapely

from geosearch.errors import GeosearchError

FORMATS = {".geojson": "GeoJSON", ".json": "GeoJSON", ".gpkg": "GPKG", ".parquet": "GeoParquet"}


def check_output_path(path: str | Path, suffixes: Iterable[str] = FORMATS) -> Path:
    """Fail before any work if the output could not be written: unknown extension or missing directory."""
    path = Path(path)
    if path.suffix.lower() not in suffixes:
        raise GeosearchError(f"{path}: unknown output format; use one of {', '.join(suffixes)}")
    if not path.parent.is_dir():
        raise GeosearchError(f"{path}: directory {path.parent} does not exist")
    if not os.access(path.parent, os.W_OK):
        raise GeosearchError(f"{path}: directory {path.parent} is not writable")
    return path


def write_features(frame: gpd.GeoDataFrame, path: str | Path) -> Path:
    """Write atomically: the features go to a temporary file that replaces `path` only once complete."""
    path = check_output_path(path)
    tmp = path.with_name(f".{path.name}.partial{path.suffix}")
    fmt = FORMATS[path.suffix.lower()]
    try:
        if fmt == "GeoParquet":
            frame.to_parquet(tmp)
        elif fmt == "GeoJSON":
            frame.to_crs(4326).to_file(tmp, driver="GeoJSON", layer=path.stem, RFC7946="YES", WRITE_BBOX="YES")
        else:
            frame.to_file(tmp, driver=fmt, layer=path.stem)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def scenes_frame(records: list[dict]) -> gpd.GeoDataFrame:
    """The archive's scene records as footprint features."""
    columns = ("scene_id", "path", "status", "tiles", "acquired", "crs", "gsd_m", "model_id", "indexed_at")
    return gpd.GeoDataFrame([{key: r.get(key) for key in columns} for r in records],
                            geometry=[shapely.geometry.shape(r["footprint"]) for r in records], crs=4326)
