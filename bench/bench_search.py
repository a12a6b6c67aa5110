"""End-to-end search latency in a warm process, at 100k stored tiles.

    cd bench && python bench_search.py [--tiles 100000] [--queries 50] [-k 20]

The store: the shipped scenes indexed for real with the default model, plus synthetic tiles up to --tiles. Each
synthetic tile is a noisy copy of a real embedding (as bench_store.py makes them) with the payload of a real tile,
its footprint moved to a random place in [-50, 50]² degrees. HNSW is built as `geosearch index` builds it.

What is timed, per query, is what `geosearch search --bbox … --out matches.geojson` does once the process is warm:
choose the scene under the box, read and embed its pixels, query the store, exclude the query's own ground,
de-duplicate, and write the GeoJSON. The boxes are tile-sized, at random places in the Landsat 8 scene 224/077.
"""

import argparse
import json
import tempfile
import time
import uuid
from datetime import date

import numpy as np
import shapely
import torch

from bench_store import CACHE, noisy_copies, peak_rss_gb, percentiles, real_embeddings
from geosearch.cli.search import answer
from geosearch.data import LANDSAT8_224077, shipped_scenes
from geosearch.embed import plan_scene
from geosearch.encoder.default import default_checkpoint
from geosearch.index import index_scenes
from geosearch.query import Box, covering_scenes, scene_query
from geosearch.search import Filters
from geosearch.store import open_backend
from geosearch.store.archive import Archive
from geosearch.tiling import TilingOptions


def moved(payload: dict, rng: np.random.Generator) -> dict:
    """The payload of a real tile, its footprint, centroid and bbox moved by a random offset."""
    dx, dy = rng.uniform(-50, 50) - payload["centroid"]["lon"], rng.uniform(-50, 50) - payload["centroid"]["lat"]
    footprint = shapely.transform(shapely.geometry.shape(payload["footprint"]), lambda xy: xy + np.array([dx, dy]))
    return payload | {"scene_id": f"synthetic-{rng.integers(1000)}",
                      "footprint": json.loads(shapely.to_geojson(footprint)),
                      "centroid": {"lon": payload["centroid"]["lon"] + dx, "lat": payload["centroid"]["lat"] + dy},
                      "min_lon": payload["min_lon"] + dx, "max_lon": payload["max_lon"] + dx,
                      "min_lat": payload["min_lat"] + dy, "max_lat": payload["max_lat"] + dy}


def build_store(folder: str, tiles: int) -> float:
    """The benchmark store in `folder`: the shipped scenes indexed for real, synthetic tiles up to `tiles`, HNSW
    built as `index` builds it. Returns the seconds the HNSW build took."""
    checkpoint, device, tiling = default_checkpoint(), torch.device("cpu"), TilingOptions()
    rng = np.random.default_rng(0)
    with open_backend(folder) as backend:
        archive = Archive.open(backend, "tiles", checkpoint.model_id, checkpoint.config.dim)
        index_scenes(archive, checkpoint, [plan_scene(str(p), tiling) for p in shipped_scenes()], tiling, device)
        real_payloads = [p for record in archive.scenes() for _, p in archive.tiles(record["scene_id"])]
        for i, chunk in enumerate(noisy_copies(real_embeddings(), tiles - archive.tile_count())):
            payloads = [moved(real_payloads[j], rng) for j in rng.integers(0, len(real_payloads), len(chunk))]
            ids = [str(uuid.UUID(int=i * 1000 + j + 1)) for j in range(len(chunk))]
            backend.upsert("tiles", ids, chunk, payloads)
        start = time.perf_counter()
        archive.optimize()
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiles", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("-k", type=int, default=20)
    args = parser.parse_args()
    checkpoint, device = default_checkpoint(), torch.device("cpu")
    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory(dir=CACHE) as folder:
        build = build_store(folder, args.tiles)
        with open_backend(folder) as backend:
            archive = Archive.open(backend, "tiles")
            encoder = checkpoint.encoder()
            x0, y0 = 703035 + rng.uniform(0, 1024 * 30, args.queries), -2808465 + rng.uniform(0, 768 * 30, args.queries)
            boxes = [Box.parse((x, y, x + 256 * 30, y + 256 * 30), "EPSG:32621") for x, y in zip(x0, y0, strict=True)]
            seconds, embedding, found = [], [], []
            with tempfile.TemporaryDirectory() as out:
                for n, box in enumerate([boxes[0], *boxes]):  # the first query warms the encoder up, untimed
                    t = time.perf_counter()
                    query = scene_query(box, covering_scenes(archive, box), encoder, device)
                    embedded = time.perf_counter()
                    matches = answer(archive, query, args.k, Filters(), False, f"{out}/matches.geojson", None)
                    if n:
                        seconds.append(time.perf_counter() - t)
                        embedding.append(embedded - t)
                        found.append(len(matches))
            print(json.dumps({"date": date.today().isoformat(), "tiles": archive.tile_count(), "k": args.k,
                              "queries": args.queries, "hnsw_build_s": round(build, 1),
                              "tiles_in_hnsw": backend.indexed_count("tiles"), "min_results": min(found),
                              "scene": LANDSAT8_224077.name, "end_to_end": percentiles(seconds),
                              "read_and_embed": percentiles(embedding), "peak_rss_gb": peak_rss_gb()}))


if __name__ == "__main__":
    main()
