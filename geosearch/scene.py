"""A scene opened for tiling: validated, its bands chosen, its ground resolution known, its stretch fixed.

All raster I/O goes through rasterio. Reads are windowed, and GDAL's block cache is capped while a scene is
open (unless the user set GDAL_CACHEMAX), so memory does not grow with the size of the scene.
"""

import hashlib
import os
import re
import warnings
from contextlib import ExitStack
from dataclasses import dataclass, field
from math import ceil, floor
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from pyproj import Geod, Transformer
from rasterio.enums import MaskFlags, Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.io import DatasetReaderBase
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from geosearch.acquired import acquired_of
from geosearch.bands import resolve_bands
from geosearch.errors import GeosearchError, SceneError, with_cause
from geosearch.files import check_readable, file_state
from geosearch.products import is_product, open_product
from geosearch.stretch import DEFAULT_PERCENTILES, ProfileStretches, Stretch

RASTER_SUFFIXES = frozenset({".tif", ".tiff", ".vrt", ".jp2", ".img", ".nc", ".hdf", ".h5", ".ntf", ".dt2", ".ecw"})
FLOAT32_MAX = float(np.finfo(np.float32).max)
GDAL_CACHE_BYTES = 256 * 2**20  # rasterio passes GDAL_CACHEMAX to GDALSetCacheMax64: bytes, not MB
MAX_UPSAMPLING = 16  # --gsd finer than 1/16 of the native resolution is almost surely a typo
STRETCH_SIDE = 1024  # the whole scene is read at most this many pixels across to measure its stretch...
STRETCH_WHOLE_MAX_PIXELS = 4096 * 4096  # ...when it has overviews or is no larger than this; else windows are sampled
STRETCH_SAMPLE_GRID = 8  # 8 × 8 evenly spread full-resolution windows
STRETCH_SAMPLE_SIDE = 256
ALIGNED_GSD_DIGITS = 3  # an aligned --gsd pixel is that many significant digits in CRS units, shared by nearby scenes
# Tags that name the sensor or the processing level, as GDAL exposes them for common products.
_SENSOR_TAGS = ("SPACECRAFT_ID", "SPACECRAFT_NAME", "SATELLITE", "PLATFORM", "MISSION", "SENSOR", "SENSOR_ID",
                "PROCESSING_LEVEL", "PRODUCT_TYPE", "DATA_TYPE")
_WGS84_GEOD = Geod(ellps="WGS84")


def find_scenes(paths: list[str], recursive: bool = False) -> list[str]:
    """Expand directories into the rasters they hold (by suffix); other paths pass through for GDAL to judge."""
    found: list[str] = []
    for path in paths:
        if not os.path.isdir(path) or is_product(path):  # a per-band product's folder is one scene
            found.append(path)
            continue
        candidates = Path(path).rglob("*") if recursive else Path(path).iterdir()
        found.extend(str(p) for p in sorted(candidates) if p.suffix.lower() in RASTER_SUFFIXES and p.is_file())
    return found


def ground_resolution(dataset: DatasetReaderBase) -> tuple[float, float]:
    """Metres on the ground per pixel along a row and down a column, measured geodesically at the scene centre.

    Right in any CRS: degrees, US survey feet, or Web Mercator (whose "metres" stretch with latitude).
    """
    col, row = dataset.width / 2, dataset.height / 2
    xs, ys = zip(*(dataset.transform @ point for point in ((col, row), (col + 1, row), (col, row + 1))), strict=True)
    lon, lat = Transformer.from_crs(dataset.crs, "EPSG:4326", always_xy=True).transform(xs, ys)
    _, _, along_row = _WGS84_GEOD.inv(lon[0], lat[0], lon[1], lat[1])
    _, _, down_column = _WGS84_GEOD.inv(lon[0], lat[0], lon[2], lat[2])
    return float(along_row), float(down_column)


def scene_id_of(path: str, dataset: DatasetReaderBase) -> str:
    """A stable id: the file's stem and a digest of its georeferencing, shape and size, so moving it keeps the id."""
    size = os.path.getsize(path) if os.path.isfile(path) else 0
    signature = (dataset.crs.to_wkt(), tuple(dataset.transform)[:6], dataset.shape, dataset.count, dataset.dtypes, size)
    digest = hashlib.sha1(repr(signature).encode()).hexdigest()[:10]
    return f"{re.sub(r'[^A-Za-z0-9._-]+', '_', Path(path).stem)}-{digest}"


def read_masked(
    dataset: DatasetReaderBase,
    bands: tuple[int, ...],
    window: Window | None = None,
    out_shape: tuple[int, int] | None = None,
    nodata: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Pixels (3, H, W) in the file's dtype and a (H, W) validity mask.

    A pixel is valid where any chosen band is: by `nodata` when given (a value the file does not declare),
    else by GDAL's masks (declared nodata, alpha band or mask band). Floats are valid only when finite and within
    float32's range, which the stretch computes in (a float64 fill of 1e300 is no value of the land).
    """
    shape = (len(bands), *out_shape) if out_shape else None
    pixels = dataset.read(bands, window=window, out_shape=shape)
    if nodata is not None:
        valid = (pixels != nodata).any(axis=0)
    elif all(MaskFlags.all_valid in dataset.mask_flag_enums[band - 1] for band in bands):
        valid = np.ones(pixels.shape[1:], dtype=bool)
    else:
        valid = (dataset.read_masks(bands, window=window, out_shape=shape) > 0).any(axis=0)
    if pixels.dtype.kind == "f":
        valid &= (np.abs(pixels) <= FLOAT32_MAX).all(axis=0)  # False for NaN and infinities too
    return pixels, valid


def _stretch_samples(dataset: DatasetReaderBase, bands: tuple[int, ...],
                     nodata: float | None) -> tuple[list[np.ndarray], str]:
    """Valid values per band for percentiles, and where they came from: overviews (or a full read of a small
    scene), else a fixed sample of full-resolution windows, so reading stays bounded on any scene."""
    if dataset.overviews(bands[0]) or dataset.width * dataset.height <= STRETCH_WHOLE_MAX_PIXELS:
        scale = max(1.0, max(dataset.width, dataset.height) / STRETCH_SIDE)
        out_shape = (max(1, round(dataset.height / scale)), max(1, round(dataset.width / scale)))
        pixels, valid = read_masked(dataset, bands, out_shape=out_shape, nodata=nodata)
        return [band[valid] for band in pixels], "overviews" if dataset.overviews(bands[0]) else "whole"
    side = STRETCH_SAMPLE_SIDE
    rows = np.linspace(0, dataset.height - side, STRETCH_SAMPLE_GRID).astype(int)
    cols = np.linspace(0, dataset.width - side, STRETCH_SAMPLE_GRID).astype(int)
    samples: list[list[np.ndarray]] = [[] for _ in bands]
    for row in rows:
        for col in cols:
            pixels, valid = read_masked(dataset, bands, Window(col, row, side, side), nodata=nodata)
            for channel, band in zip(samples, pixels, strict=True):
                channel.append(band[valid])
    return [np.concatenate(channel) for channel in samples], "sample"


def is_8bit(dataset: DatasetReaderBase, bands: tuple[int, ...]) -> bool:
    """8-bit data is shown as it is: it was made for display already."""
    return all(dataset.dtypes[band - 1] == "uint8" for band in bands)


def band_scaling(dataset: DatasetReaderBase, bands: tuple[int, ...]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Scale and offset from raw values to physical units (reflectance, radiance), per band, as the file says."""
    scales = tuple(float(dataset.scales[band - 1] or 1.0) for band in bands)
    return scales, tuple(float(dataset.offsets[band - 1] or 0.0) for band in bands)


def radiometric_profile(dataset: DatasetReaderBase, bands: tuple[int, ...]) -> str:
    """What makes two scenes' values comparable: data type, which bands of how many (by name where the file names
    them), the sensor and processing level where its tags say, and whether values are scaled to physical units."""
    names = ",".join(dataset.descriptions[band - 1] or str(band) for band in bands)
    tags = {key.upper(): value for key, value in dataset.tags().items()}
    sensor = ",".join(tags[key] for key in _SENSOR_TAGS if tags.get(key)) or "-"
    units = "dn" if band_scaling(dataset, bands) == ((1.0,) * len(bands), (0.0,) * len(bands)) else "scaled"
    return f"{dataset.dtypes[bands[0] - 1]}/{names} of {dataset.count}/{sensor}/{units}"


def _scene_stretch(dataset: DatasetReaderBase, bands: tuple[int, ...], profile: str, nodata: float | None,
                   percentiles: tuple[float, float], profiles: ProfileStretches | None) -> Stretch:
    """The stretch of a scene: identity for 8-bit data; its profile's where `profiles` knows it (in this file's raw
    values); else measured on the scene, and with `profiles` added to them for the later scenes of its profile."""
    if is_8bit(dataset, bands) and (profiles is None or profiles.fixed is None):
        return Stretch.identity()
    scales, offsets = band_scaling(dataset, bands)
    if profiles is not None and (shared := profiles.get(profile)) is not None:
        return shared.unscaled(scales, offsets, "given" if profiles.fixed else "archive")
    channels, source = _stretch_samples(dataset, bands, nodata)
    measured = Stretch.from_samples(channels, percentiles, source)
    if profiles is not None:
        profiles.add(profile, measured.scaled(scales, offsets))
    return measured


def shared_stretch(paths: list[str], bands: tuple[int, ...] | None, nodata: float | None,
                   percentiles: tuple[float, float]) -> tuple[str, Stretch]:
    """One stretch over several scenes of one profile (`--stretch-from`): percentiles of their values pooled, in
    physical units; returns the profile and the stretch."""
    pooled: list[list[np.ndarray]] = []
    profile = None
    for path in paths:
        with open_scene(path, bands=bands, nodata=nodata, stretch=Stretch.identity()) as scene:
            if profile is not None and scene.profile != profile:
                raise SceneError(path, f"is of profile {scene.profile}, {paths[0]} of {profile}: --stretch-from "
                                       "takes scenes of one profile")
            profile = scene.profile
            channels, _ = _stretch_samples(scene.dataset, scene.bands, scene.nodata_override)
            scales, offsets = band_scaling(scene.dataset, scene.bands)
            pooled.append([values * s + o for values, s, o in zip(channels, scales, offsets, strict=True)])
    merged = [np.concatenate([scene[band] for scene in pooled]) for band in range(3)]
    return profile or "", Stretch.from_samples(merged, percentiles, "stretch-from")


def _significant(value: float, digits: int) -> float:
    return float(f"{value:.{digits}g}")


def _resampled_view(
    dataset: DatasetReaderBase, ground: tuple[float, float], gsd: float, nodata: float | None, aligned: bool
) -> WarpedVRT:
    """The scene on a grid of `gsd` metre pixels in its own CRS, resampled on the fly by GDAL's warper. Aligned,
    the pixel is rounded to ALIGNED_GSD_DIGITS significant digits in CRS units and its origin snapped to whole
    pixels of the CRS, so nearby scenes in one CRS share the grid; else it keeps the scene's origin."""
    fx, fy = gsd / ground[0], gsd / ground[1]
    if min(fx, fy) < 1 / MAX_UPSAMPLING:
        raise GeosearchError(
            f"--gsd {gsd:g} m would upsample this {min(ground):.3g} m scene more than {MAX_UPSAMPLING}×; "
            "choose a coarser --gsd"
        )
    transform = dataset.transform @ Affine.scale(fx, fy)
    width, height = max(1, ceil(dataset.width / fx)), max(1, ceil(dataset.height / fy))
    if aligned:
        a, e = _significant(transform.a, ALIGNED_GSD_DIGITS), _significant(transform.e, ALIGNED_GSD_DIGITS)
        left, top = floor(transform.c / a) * a, floor(transform.f / e) * e
        right, bottom = dataset.transform @ (dataset.width, dataset.height)
        transform = Affine(a, 0.0, left, 0.0, e, top)
        width, height = max(1, ceil((right - left) / a)), max(1, ceil((bottom - top) / e))
    return WarpedVRT(
        dataset,
        crs=dataset.crs,
        transform=transform,
        width=width,
        height=height,
        resampling=Resampling.average if min(fx, fy) > 1 else Resampling.bilinear,
        src_nodata=dataset.nodata if nodata is None else nodata,
        add_alpha=True,
    )


@dataclass
class Scene:
    """An open scene. `grid` is what tiles are cut from: the file itself, or a view of it resampled to a GSD."""

    path: str
    scene_id: str
    dataset: DatasetReaderBase
    grid: DatasetReaderBase
    bands: tuple[int, int, int]
    band_source: str  # bands.BandChoice.source
    gsd_m: float
    native_gsd_m: float
    stretch: Stretch
    profile: str  # radiometric_profile
    nodata_override: float | None  # a nodata value the user gave that the file does not declare
    _exit: ExitStack = field(repr=False)

    @property
    def nodata(self) -> float | None:
        """The value that marks nodata in the file, given or declared."""
        return self.dataset.nodata if self.nodata_override is None else self.nodata_override

    @property
    def value_nodata(self) -> float | None:
        """The nodata value to apply to pixel values when reading `grid`: on the resampled view the warper's
        alpha band already marks a given nodata; on the file, values do."""
        return self.nodata_override if self.grid is self.dataset else None

    def read(self, row: int, col: int, size: int) -> tuple[np.ndarray, np.ndarray]:
        """A size × size window of `grid` at (row, col), padded with invalid pixels where it leaves the grid."""
        r0, c0 = max(row, 0), max(col, 0)
        r1, c1 = min(row + size, self.grid.height), min(col + size, self.grid.width)
        value_nodata = self.value_nodata
        try:
            if (r0, c0, r1, c1) == (row, col, row + size, col + size):
                return read_masked(self.grid, self.bands, Window(col, row, size, size), nodata=value_nodata)
            pixels = np.zeros((3, size, size), dtype=self.grid.dtypes[self.bands[0] - 1])
            valid = np.zeros((size, size), dtype=bool)
            if r1 > r0 and c1 > c0:
                inner = (slice(r0 - row, r1 - row), slice(c0 - col, c1 - col))
                pixels[(slice(None), *inner)], valid[inner] = read_masked(
                    self.grid, self.bands, Window(c0, r0, c1 - c0, r1 - r0), nodata=value_nodata
                )
            return pixels, valid
        except RasterioError as error:
            problem = f"cannot read pixels at row {row}, col {col} (truncated or corrupt?): {with_cause(error)}"
            raise SceneError(self.path, problem) from None

    def summary(self) -> dict:
        acquired = acquired_of(self.path, self.dataset)
        return {
            "scene_id": self.scene_id,
            "path": self.path,
            "crs": self.dataset.crs.to_string(),
            "width": self.dataset.width,
            "height": self.dataset.height,
            "band_count": self.dataset.count,
            "dtype": self.dataset.dtypes[0],
            "bands": list(self.bands),
            "band_source": self.band_source,
            "nodata": self.nodata,
            "native_gsd_m": round(self.native_gsd_m, 4),
            "gsd_m": round(self.gsd_m, 4),
            "stretch": self.stretch.to_dict(),
            "profile": self.profile,
            "acquired": acquired.isoformat() if acquired else None,  # from tags or the file name, when known
            "files": file_state(self.dataset.files),  # to tell a file rewritten since (index.changed_since)
        }

    def close(self) -> None:
        self._exit.close()

    def __enter__(self) -> "Scene":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_usable(path: str, dataset: DatasetReaderBase) -> None:
    if dataset.crs is None and dataset.gcps[0]:
        raise SceneError(path, "georeferenced by ground control points only; warp it onto a grid first (gdalwarp)")
    if dataset.crs is None:
        raise SceneError(path, "has no CRS; assign one first (gdal_edit.py -a_srs EPSG:…)")
    if dataset.transform.is_identity:
        raise SceneError(path, "has no geotransform, so its pixels have no place on the ground")
    if not np.isfinite(tuple(dataset.transform)[:6]).all() or dataset.transform.determinant == 0:
        raise SceneError(path, f"has a geotransform with a pixel size of 0 or values that are not numbers "
                               f"({tuple(dataset.transform)[:6]}); fix it (gdal_edit.py -a_ullr)")
    corners = [dataset.transform @ (col, row) for col in (0, dataset.width) for row in (0, dataset.height)]
    lon, lat = Transformer.from_crs(dataset.crs, "EPSG:4326", always_xy=True).transform(*zip(*corners, strict=True))
    if not (np.isfinite(lon).all() and np.isfinite(lat).all()):
        raise SceneError(path, f"reaches past where {dataset.crs.to_string()} is defined (its corners have no place "
                               "on the globe): its geotransform or its CRS is wrong")
    complex_bands = [kind for kind in dataset.dtypes if np.dtype(kind).kind == "c"]
    if complex_bands:
        raise SceneError(path, f"holds {complex_bands[0]} values, which show no image; write their amplitude to a "
                               "raster first")
    if dataset.crs.is_geographic:
        _, south, _, north = dataset.bounds
        if max(abs(south), abs(north)) > 90 + 1e-6:
            raise SceneError(path, f"reaches latitude {north if abs(north) > 90 else south:.6g}°, past the pole: "
                                   "its geotransform is wrong (fix it with gdal_edit.py -a_ullr)")


def open_scene(
    path: str,
    *,
    bands: tuple[int, ...] | None = None,
    gsd: float | None = None,
    nodata: float | None = None,
    stretch: Stretch | None = None,
    profiles: ProfileStretches | None = None,
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
    aligned: bool = True,
) -> Scene:
    """Open and check a scene. `nodata` overrides the file's own; `stretch` reuses a recorded one, else `profiles`
    gives (or learns) the stretch of the scene's profile, else the scene's own is measured. `aligned`: a --gsd
    grid snaps to the CRS (see _resampled_view)."""
    stack = ExitStack()
    try:
        if "GDAL_CACHEMAX" not in os.environ:
            stack.enter_context(rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES))
        product = is_product(path)
        if not product:  # a product's readers check each file they read
            check_readable(path)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                dataset = stack.enter_context(rasterio.open(open_product(path) if product else path))
        except RasterioError as error:
            raise SceneError(path, f"cannot be opened as a raster: {with_cause(error)}") from None
        for name in dataset.files:  # a VRT's sources among them, before any is read
            check_readable(name, path)
        _check_usable(path, dataset)
        try:
            chosen, band_source = resolve_bands(dataset, bands)
            ground = ground_resolution(dataset)
            native_gsd = (ground[0] + ground[1]) / 2
            override = nodata if nodata is not None and nodata != dataset.nodata else None
            profile = radiometric_profile(dataset, chosen)
            grid = dataset if gsd is None else \
                stack.enter_context(_resampled_view(dataset, ground, gsd, nodata, aligned))
            if stretch is None:
                stretch = _scene_stretch(dataset, chosen, profile, override, percentiles, profiles)
        except GeosearchError as error:
            raise SceneError(path, str(error)) from None
        except RasterioError as error:
            raise SceneError(path, f"cannot be read (truncated or corrupt?): {with_cause(error)}") from None
        return Scene(
            path=path,
            scene_id=scene_id_of(path, dataset),
            dataset=dataset,
            grid=grid,
            bands=chosen,
            band_source=band_source,
            gsd_m=gsd if gsd is not None else native_gsd,
            native_gsd_m=native_gsd,
            stretch=stretch,
            profile=profile,
            nodata_override=override,
            _exit=stack,
        )
    except BaseException:
        stack.close()
        raise
