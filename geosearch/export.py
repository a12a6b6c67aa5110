"""Writing features: GeoJSON (RFC 7946), GeoPackage or GeoParquet, chosen by the file's extension."""

import os
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import geopandas as gpd
import shapely

from geosearch.errors import GeosearchError

FORMATS = {".geojson": "GeoJSON", ".json": "GeoJSON", ".gpkg": "GPKG", ".parquet": "GeoParquet"}


def check_output_path(path: str | Path, suffixes: Iterable[str] = FORMATS) -> Path:
    """Fail before any work if the output could not be written: unknown extension, missing directory, or a file
    that cannot be created there (no permission, a name too long, a directory in the way, /proc). Creating the
    file that will be written is the only true test."""
    path = Path(path)
    if path.suffix.lower() not in suffixes:
        raise GeosearchError(f"{path}: unknown output format; use one of {', '.join(suffixes)}")
    if not path.parent.is_dir():
        raise GeosearchError(f"{path}: directory {path.parent} does not exist")
    try:
        _partial(path).touch()
        _partial(path).unlink()
    except OSError as error:
        raise GeosearchError(f"{path}: cannot be written ({error.strerror})") from None
    if path.is_dir():
        raise GeosearchError(f"{path}: cannot be written (a directory of that name is in the way)")
    return path


def _partial(path: Path) -> Path:
    """Where a file is written before it replaces `path`."""
    return path.with_name(f".{path.name}.partial{path.suffix}")


def write_features(frame: gpd.GeoDataFrame, path: str | Path) -> Path:
    """Write the features to `path`, atomically (atomic_output)."""
    path = check_output_path(path)
    fmt = FORMATS[path.suffix.lower()]
    with atomic_output(path) as tmp:
        if fmt == "GeoParquet":
            frame.to_parquet(tmp)
        elif fmt == "GeoJSON":
            frame.to_crs(4326).to_file(tmp, driver="GeoJSON", layer=path.stem, RFC7946="YES", WRITE_BBOX="YES")
        else:
            frame.to_file(tmp, driver=fmt, layer=path.stem)
    return path


@contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """A temporary file to write, which replaces `path` only once complete: a failed write leaves what was there."""
    tmp = _partial(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except (OSError, RuntimeError) as error:  # pyogrio's errors are RuntimeErrors, and none says "disk full"
        raise GeosearchError(f"{path}: cannot be written ({_why_not_written(error, path.parent)}); "
                             "nothing there was changed") from None
    finally:
        tmp.unlink(missing_ok=True)


def _why_not_written(error: Exception, folder: Path) -> str:
    if shutil.disk_usage(folder).free < 2**20:
        return "no space left on its file system"
    return getattr(error, "strerror", None) or str(error).split("\n")[0]


def scenes_frame(records: list[dict]) -> gpd.GeoDataFrame:
    """The archive's scene records as footprint features."""
    columns = ("scene_id", "path", "status", "tiles", "acquired", "crs", "gsd_m", "model_id", "indexed_at")
    return gpd.GeoDataFrame([{key: r.get(key) for key in columns} for r in records],
                            geometry=[shapely.geometry.shape(r["footprint"]) for r in records], crs=4326)
