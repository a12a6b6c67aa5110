"""Tiles per second for reading, masking and stretching a large tiled GeoTIFF, in one process on this machine.

    python bench/bench_tiling.py [--side 16384] [--tile-size 256] [--per-band | --both]

The scene is a real one made large: the Landsat 8 224077 crop's uint16 pixels repeated edge to edge into a
DEFLATE-compressed, 256 px tiled GeoTIFF, written window by window once and cached in bench/.cache. With
--per-band, the same pixels as a Sentinel-2-like per-band product (B02, B03, B04 at full resolution and a B11 at
half of it, each its own file, read through geosearch.products' VRT); --both runs the two, each in its own process
(for its own peak RSS), and prints their ratio.
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import rasterio
from rasterio.enums import Resampling
from rasterio.windows import Window

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


def large_product(side: int) -> Path:
    """The large GeoTIFF's bands as B02, B03, B04 files, and its first band at half resolution as B11."""
    folder = CACHE / f"s2like_product_{side}"
    if not folder.exists():
        source = large_geotiff(side)
        partial = folder.with_suffix(".partial")
        partial.mkdir(exist_ok=True)
        with rasterio.open(source) as mosaic:
            for band, name, factor in ((1, "B02", 1), (2, "B03", 1), (3, "B04", 1), (1, "B11", 2)):
                profile = mosaic.profile | {"count": 1, "width": side // factor, "height": side // factor,
                                            "transform": mosaic.transform @ mosaic.transform.scale(factor)}
                with rasterio.open(partial / f"{name}.tif", "w", **profile) as out:
                    for _, window in out.block_windows(1):
                        source_window = Window(window.col_off * factor, window.row_off * factor,
                                               window.width * factor, window.height * factor)
                        out.write(mosaic.read(band, window=source_window, out_shape=(window.height, window.width),
                                              resampling=Resampling.average), 1, window=window)
        partial.rename(folder)
    return folder


def run(side: int, tile_size: int, per_band: bool = False) -> dict:
    path = large_product(side) if per_band else large_geotiff(side)
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
        "scene": (f"per-band product: B02, B03, B04 {side}² and B11 {side // 2}² px, uint16, DEFLATE, 256 px "
                  f"blocks, {sum(p.stat().st_size for p in path.iterdir()) / 2**20:.0f} MiB" if per_band else
                  f"{side}×{side} px, 3 × uint16, DEFLATE, 256 px blocks, {path.stat().st_size / 2**20:.0f} MiB"),
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
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument("--per-band", action="store_true", help="the per-band product instead of the single file")
    kind.add_argument("--both", action="store_true", help="the single file, then the per-band product")
    args = parser.parse_args()
    if not args.both:
        print(json.dumps(run(args.side, args.tile_size, args.per_band), indent=2, ensure_ascii=False))
        return
    large_product(args.side)  # written before either is timed
    results = [json.loads(subprocess.run([sys.executable, __file__, "--side", str(args.side), "--tile-size",
                                          str(args.tile_size), *flag], check=True, capture_output=True,
                                         text=True).stdout) for flag in ([], ["--per-band"])]
    single, per_band = results
    print(json.dumps({"single_file": single, "per_band": per_band,
                      "per_band_over_single_tiles_per_s": round(per_band["tiles_per_s"] / single["tiles_per_s"], 3)},
                     indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
