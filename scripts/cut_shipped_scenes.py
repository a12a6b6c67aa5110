"""Cut the small real scenes shipped in geosearch/data/scenes from ../shared/data (see PROVENANCE.md).

Run once by a maintainer: `python scripts/cut_shipped_scenes.py ../shared/data/scenes`.
Every write is lossless: pixels are copied unchanged, only the container (crop, compression, tiling) changes.
"""

import shutil
import sys
from pathlib import Path

import rasterio
from rasterio.windows import Window

OUT = Path(__file__).resolve().parents[1] / "geosearch" / "data" / "scenes"

# The Landsat 8 pair shares one 30 m grid: 224078's pixel (0, 0) is 224077's pixel (col 778, row 346). The crops'
# origins are 477 px and -25 px apart in that frame, no multiple of any tile size: the aligned grid lines them up.
LANDSAT8_CROPS = {
    "landsat8_224077_20200518_bgr_utm21n_30m.tif":
        ("landsat8_224077_20200518_crop.tif", Window(301, 371, 1280, 1024), "COG"),
    "landsat8_224078_20200518_bgr_utm21n_30m.tif":
        ("landsat8_224078_20200518_crop.tif", Window(0, 0, 1280, 1024), "GTiff"),
}


def crop_landsat8(src_path: Path, dst_path: Path, window: Window, driver: str) -> None:
    """Crop with nodata=0 declared: 0 is the Landsat Level-1 fill value, which the source leaves undeclared."""
    with rasterio.open(src_path) as src:
        profile = {
            "driver": driver, "width": window.width, "height": window.height, "count": src.count,
            "dtype": src.dtypes[0], "crs": src.crs, "transform": src.window_transform(window), "nodata": 0,
            "compress": "deflate", "predictor": 2,
        }
        if driver == "COG":
            profile.update(blocksize=256, overview_resampling="average")
        else:
            profile.update(tiled=True, blockxsize=256, blockysize=256)
        with rasterio.open(dst_path, "w", **profile) as dst:
            dst.write(src.read(window=window))
            dst.descriptions = src.descriptions


def recompress(src_path: Path, dst_path: Path) -> None:
    """Whole scene, rewritten as a tiled DEFLATE GeoTIFF (it is stored as uncompressed strips)."""
    with rasterio.open(src_path) as src:
        profile = src.profile | {
            "compress": "deflate", "predictor": 2, "tiled": True, "blockxsize": 256, "blockysize": 256
        }
        with rasterio.open(dst_path, "w", **profile) as dst:
            dst.write(src.read())
            dst.colorinterp = src.colorinterp


def main(shared_scenes: Path) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for src_name, (dst_name, window, driver) in LANDSAT8_CROPS.items():
        crop_landsat8(shared_scenes / src_name, OUT / dst_name, window, driver)
    recompress(shared_scenes / "landsat7_rgb_utm18n_300m.tif", OUT / "landsat7_rgb_utm18n_300m.tif")
    shutil.copyfile(shared_scenes / "aerial_rgb_epsg3857_0p6m.tif", OUT / "aerial_rgb_epsg3857_0p6m.tif")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
