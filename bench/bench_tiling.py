"""Tiles per second for reading, masking and stretching a large tiled GeoTIFF, in one process on this machine.

    python bench/bench_tiling.py [--side 16384] [--tile-size 256]

The scene is a real one made large: the Landsat 8 224077 crop's uint16 pixels repeated edge to edge into a
DEFLATE-compressed, 256 px tiled GeoTIFF, written window by window once and cached in bench/.cache.
"""

import argparse
import json
import os
import platform
import resource
import sys
import time
from datetime import date
from pathlib import Path

from geosearch.data import LANDSAT8_224077
from geosearch.tiling import TilingOptions, plan_grid, read_tiles

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"
sys.path.insert(0, str(HERE.parent / "tests"))
from support import write_repeated_geotiff  # noqa: E402  (shared with the memory test)


def large_geotiff(side: int) -> Path:
    path = CACHE / f"landsat8_mosaic_{side}.tif"
    if not path.exists():
        CACHE.mkdir(exist_ok=True)
        tmp = write_repeated_geotiff(LANDSAT8_224077, path.with_suffix(".partial.tif"), side,
                                     compress="deflate", predictor=2)
        tmp.rename(path)
    return path


def run(side: int, tile_size: int) -> dict:
    path = large_geotiff(side)
    options = TilingOptions(tile_size=tile_size)
    start = time.perf_counter()
    with options.open(str(path)) as scene:
        opened = time.perf_counter()
        grid = plan_grid(scene, options)
        planned = time.perf_counter()
        checksum = 0
        for tile in read_tiles(scene, grid, options.min_valid):
            checksum += int(tile.pixels[:, ::64, ::64].sum())  # touch the result so nothing is skipped
        done = time.perf_counter()
    read_seconds = done - planned
    megapixels = len(grid) * tile_size**2 / 1e6
    return {
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores, Python {platform.python_version()}",
        "scene": f"{side}×{side} px, 3 × uint16, DEFLATE, 256 px blocks, {path.stat().st_size / 2**20:.0f} MiB",
        "tile_size": tile_size,
        "tiles": len(grid),
        "open_and_stretch_s": round(opened - start, 3),
        "plan_grid_s": round(planned - opened, 3),
        "read_mask_stretch_s": round(read_seconds, 2),
        "tiles_per_s": round(len(grid) / read_seconds, 1),
        "megapixels_per_s": round(megapixels / read_seconds, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "stretch": scene.stretch.source,
        "checksum": checksum,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", type=int, default=16384)
    parser.add_argument("--tile-size", type=int, default=256)
    args = parser.parse_args()
    print(json.dumps(run(args.side, args.tile_size), indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
