"""Change between dates on real scenes: the false-alarm baseline, and a change made by hand.

    cd bench && python bench_change.py [--models default pretrained] [--tile-sizes 64 128]

The full Landsat 8 scenes 224/077 and 224/078 (../shared/data/scenes: same sensor, same day, overlapping by about
1,060 km²), and a copy of 224/077 dated a year later with a 150 × 150 px block of water pasted in at a fixed place
(the median spectrum of the darkest reservoir pixels in the shipped crop of 224/078, with 2 % noise), are indexed
on the aligned grid with the archive stretch (the defaults, nodata 0). Then `geosearch change`'s engine compares:
- 224/077 → 224/078, where nothing changed: the distribution of change scores over the places of their overlap is
  the false-alarm baseline (its 50th, 90th, 99th percentiles and maximum);
- 224/077 → its pasted copy: the rank and score of the place most under the water, and how many places of the
  no-change pair score above it.
"""

import argparse
import json
import platform
import tempfile
from datetime import date
from pathlib import Path

import numpy as np
import rasterio
import shapely
import torch
from bench_quality import PAIR
from rasterio.windows import Window

from bench_tiling import CACHE
from geosearch.change import change
from geosearch.data import LANDSAT8_224078
from geosearch.embed import plan_scene
from geosearch.encoder.default import open_model
from geosearch.footprints import WGS84
from geosearch.index import index_scenes
from geosearch.query import Box
from geosearch.search import Filters
from geosearch.store import open_backend
from geosearch.store.archive import Archive
from geosearch.tiling import TilingOptions

PASTED = Window(col_off=1100, row_off=700, width=150, height=150)
RESERVOIR = Window(col_off=1024, row_off=618, width=256, height=256)  # in the shipped crop of 224/078


def pasted_copy(folder: Path) -> tuple[Path, shapely.Geometry]:
    """224/077 a year later with water over PASTED; the file and the block's footprint in EPSG:4326."""
    with rasterio.open(LANDSAT8_224078) as b:
        reservoir = b.read(window=RESERVOIR).reshape(3, -1)
    darkest = reservoir[:, reservoir.sum(axis=0) <= np.percentile(reservoir.sum(axis=0), 5)]
    water = np.median(darkest, axis=1)
    with rasterio.open(PAIR[0]) as a:
        pixels, profile, transform, crs = a.read(), a.profile, a.transform, a.crs
    noise = np.random.default_rng(0).normal(0, 0.02, (3, PASTED.height, PASTED.width)) * water[:, None, None]
    rows, cols = PASTED.toslices()
    pixels[:, rows, cols] = np.clip(water[:, None, None] + noise, 1, 65535).astype(pixels.dtype)
    path = folder / "landsat8_224077_20210518_pasted.tif"
    with rasterio.open(path, "w", **profile) as later:
        later.write(pixels)
    block = Box.parse(rasterio.windows.bounds(PASTED, transform), crs.to_string()).polygon(WGS84)
    return path, block


def measure(model: str, tile_size: int, folder: Path, later: Path, block: shapely.Geometry) -> dict:
    checkpoint, tiling = open_model(model), TilingOptions(tile_size=tile_size, nodata=0)
    with open_backend(folder / f"store-{model}-{tile_size}") as backend:
        archive = Archive.open(backend, "tiles", checkpoint.model_id, checkpoint.config.dim)
        scenes = [plan_scene(str(p), tiling) for p in (*PAIR, later)]
        index_scenes(archive, checkpoint, scenes, tiling, torch.device("cpu"))

        def side(path: Path) -> Filters:
            return Filters.of(archive, scenes=[str(path)])

        same_day, pair = change(archive, side(PAIR[0]), side(PAIR[1]))
        pasted, _ = change(archive, side(PAIR[0]), side(later))
    places = pasted.geometry.to_numpy()
    under = int(np.argmax(shapely.area(shapely.intersection(places, block))))
    score = float(pasted["change"][under])
    baseline = same_day["change"].to_numpy()
    return {"model": model, "tile_size": tile_size, "pair_places": pair.places,
            "baseline": {f"p{q}": round(float(np.percentile(baseline, q)), 4) for q in (50, 90, 99)}
            | {"max": round(float(baseline.max()), 4)},
            "pasted_rank": under + 1, "pasted_change": round(score, 4), "places": len(pasted),
            "pair_places_above_pasted": int((baseline >= score).sum())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["default", "pretrained"])
    parser.add_argument("--tile-sizes", type=int, nargs="+", default=[64, 128])
    args = parser.parse_args()
    CACHE.mkdir(exist_ok=True)
    header = {"date": date.today().isoformat(), "machine": platform.node(), "threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory(dir=CACHE) as folder:
        later, block = pasted_copy(Path(folder))
        for model in args.models:
            for tile_size in args.tile_sizes:
                print(json.dumps(header | measure(model, tile_size, Path(folder), later, block)), flush=True)


if __name__ == "__main__":
    main()
