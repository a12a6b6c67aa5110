"""Peak memory does not grow with scene size: real GeoTIFFs up to 20000² px, VRT mosaics up to 40000² px."""

import json
import subprocess
import sys

import pytest

from geosearch.data import AERIAL_3857, LANDSAT8_224077
from support import write_mosaic_vrt, write_repeated_geotiff

# VmHWM is the peak of this process's own address space. ru_maxrss would not do: Linux carries it across
# fork and exec, so a child started from a large parent (pytest, with models loaded) would report the parent's peak.
CHILD = """
import json, re, sys
from geosearch.grid import GridMode
from geosearch.tiling import TilingOptions, survey
result = survey(sys.argv[1], TilingOptions(grid=GridMode.SCENE))  # whole tiles from the corner: counts below
peak_kb = int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1))
print(json.dumps({"tiles": len(result.grid), "kept": int(result.kept.sum()), "peak_mb": peak_kb / 1024}))
"""
BASELINE_MB = 300  # interpreter, numpy, rasterio, pyproj, shapely, geopandas
GDAL_CACHE_MB = 256  # geosearch caps GDAL's block cache while a scene is open


def peak_memory(path) -> dict:
    result = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.slow
def test_peak_memory_is_flat_on_real_geotiffs(tmp_path):
    """10000² and 20000² px uint8 GeoTIFFs (0.3 and 1.2 GB): both fill the block cache, neither goes past it."""
    try:
        large = peak_memory(write_repeated_geotiff(AERIAL_3857, tmp_path / "large.tif", 10_000))
        huge = peak_memory(write_repeated_geotiff(AERIAL_3857, tmp_path / "huge.tif", 20_000))
    finally:
        for name in ("large.tif", "huge.tif"):
            (tmp_path / name).unlink(missing_ok=True)
    assert large["tiles"] == 40 * 40 and huge["tiles"] == 79 * 79 and huge["kept"] == huge["tiles"]
    assert huge["peak_mb"] < large["peak_mb"] + 32, (large, huge)
    assert huge["peak_mb"] < BASELINE_MB + GDAL_CACHE_MB, huge


@pytest.mark.slow
def test_peak_memory_is_flat_on_huge_mosaics(tmp_path):
    """20000² and 40000² px of uint16 (2.4 and 9.6 GB of pixels), every tile read, masked and stretched."""
    large = peak_memory(write_mosaic_vrt(LANDSAT8_224077, tmp_path / "large.vrt", 20_000, 20_000))
    huge = peak_memory(write_mosaic_vrt(LANDSAT8_224077, tmp_path / "huge.vrt", 40_000, 40_000))
    assert large["tiles"] == 79 * 79 and huge["tiles"] == 157 * 157 and huge["kept"] == huge["tiles"]
    # Four times the pixels: the peak moves by no more than the tiles' metadata.
    assert huge["peak_mb"] < large["peak_mb"] + 32, (large, huge)
    assert huge["peak_mb"] < BASELINE_MB + GDAL_CACHE_MB, huge
