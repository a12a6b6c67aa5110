"""Store benchmarks on real embeddings, through geosearch's own backends.

    cd bench && python bench_store.py [--sizes 10000 100000 1000000] [--backends edge qdrant-client]
    cd bench && python bench_store.py --hnsw [--sizes 100000]

Real vectors: every scene in ../shared/data/scenes tiled at 128 px with stride 64, and every RSSCN7 image,
embedded with the default model (cached in bench/.cache). To reach N points they are replicated with small noise
(each copy x + 0.3·n/√d, renormalised: cosine ≈ 0.95 to its original). Every point gets a random centroid in
[-50, 50]² degrees, so the bounding-box filter [-50, -18.4]² keeps about 10 %.

Default mode, per backend and size, in a fresh store: upsert rate (batches of 1000, payloads as `index` writes
them), then 50 exact top-10 queries without and with the geo box filter (p50, p95). qdrant-client runs in local
mode, persisted in the store folder. It is the path this project can test without a server, not a server.

--hnsw: Qdrant Edge with HNSW built by optimize() (m=16, ef_construct=100); build time, then recall@10 against
exact search and latency for several hnsw_ef, without and with the filter. --full-scan-threshold (KB of vectors)
is where Qdrant's planner stops answering a filtered query exactly from the payload index and walks the graph:
Qdrant's default is 10000; 1 forces the graph for every filtered query.
"""

import argparse
import json
import os
import tempfile
import time
import uuid
from datetime import date
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench_tiling import CACHE
from geosearch.embed import EmbeddedBatch, embed_scenes, plan_scene
from geosearch.encoder.default import default_checkpoint
from geosearch.encoder.device import resolve_device
from geosearch.store import open_backend
from geosearch.store.filters import GeoBox, where
from geosearch.tiling import TilingOptions

SHARED = Path(os.environ.get("GEOSEARCH_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
BOX = GeoBox("centroid", -50.0, -50.0, -18.38, -18.38)  # (31.62 / 100)² ≈ 10 % of the square
QUERIES = 50


def real_embeddings() -> np.ndarray:
    checkpoint = default_checkpoint()
    cache = CACHE / f"real_{checkpoint.model_id}.npy"
    if cache.exists():
        return np.load(cache)
    encoder, device = checkpoint.encoder(), resolve_device("auto")
    tiling = TilingOptions(tile_size=128, stride=64)
    scenes = [plan_scene(str(p), tiling) for p in sorted((SHARED / "scenes").glob("*.tif"))]
    parts = [r.vectors for r in embed_scenes(encoder, scenes, tiling, device) if isinstance(r, EmbeddedBatch)]
    images = sorted((SHARED / "rsscn7").glob("*/*.jpg"))
    with torch.inference_mode():
        for start in range(0, len(images), 32):
            pixels = [np.asarray(Image.open(p).convert("RGB")).transpose(2, 0, 1) for p in images[start:start + 32]]
            parts.append(encoder(torch.from_numpy(np.stack(pixels))).numpy())
    vectors = np.concatenate(parts).astype(np.float32)
    CACHE.mkdir(exist_ok=True)
    np.save(cache, vectors)
    return vectors


def replicate(real: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """n noisy copies, made in chunks and in place so that 1M × 1280 floats need no more than their own 5 GB."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, real.shape[1]), dtype=np.float32)
    for start in range(0, n, 50_000):
        chunk = out[start:start + 50_000]
        rng.standard_normal(chunk.shape, dtype=np.float32, out=chunk)
        chunk *= 0.3 / np.sqrt(real.shape[1])
        chunk += real[rng.integers(0, len(real), len(chunk))]
        chunk /= np.linalg.norm(chunk, axis=1, keepdims=True)
    return out


def payloads(start: int, count: int, rng: np.random.Generator) -> list[dict]:
    lon, lat = rng.uniform(-50, 50, count), rng.uniform(-50, 50, count)
    return [{"scene_id": f"scene-{(start + i) // 1000}", "centroid": {"lon": float(x), "lat": float(y)},
             "min_lon": float(x) - 0.01, "min_lat": float(y) - 0.01, "max_lon": float(x) + 0.01,
             "max_lat": float(y) + 0.01, "model_id": "bench", "row": start + i, "col": 0}
            for i, (x, y) in enumerate(zip(lon, lat, strict=True))]


def percentiles(seconds: list[float]) -> dict:
    ms = np.array(seconds) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 2), "p95_ms": round(float(np.percentile(ms, 95)), 2)}


def run_backend(name: str, vectors: np.ndarray, queries: np.ndarray) -> dict:
    from geosearch.store.archive import TILE_INDEXES

    with tempfile.TemporaryDirectory(dir=CACHE) as folder:
        url = f"file://{folder}" if name == "qdrant-client" else None
        with open_backend(folder, url=url) as backend:
            backend.create_collection("tiles", vectors.shape[1], TILE_INDEXES)
            rng = np.random.default_rng(1)
            start = time.perf_counter()
            for i in range(0, len(vectors), 1000):
                chunk = vectors[i:i + 1000]
                ids = [str(uuid.UUID(int=i + j + 1)) for j in range(len(chunk))]
                backend.upsert("tiles", ids, chunk, payloads(i, len(chunk), rng))
            backend.flush()
            upsert = len(vectors) / (time.perf_counter() - start)
            plain, boxed, kept = [], [], []
            for query in queries:
                t = time.perf_counter()
                backend.query("tiles", query, 10, exact=True)
                plain.append(time.perf_counter() - t)
                t = time.perf_counter()
                backend.query("tiles", query, 10, where(BOX), exact=True)
                boxed.append(time.perf_counter() - t)
            kept = backend.count("tiles", where(BOX)) / len(vectors)
    return {"upsert_per_s": round(upsert), "query": percentiles(plain), "query_box": percentiles(boxed),
            "box_fraction": round(kept, 3)}


def run_hnsw(vectors: np.ndarray, queries: np.ndarray, full_scan_threshold: int) -> list[dict]:
    import qdrant_edge as edge

    from geosearch.store.edge_backend import _filter

    rows = []
    with tempfile.TemporaryDirectory(dir=CACHE) as folder:
        config = edge.EdgeConfig(
            vectors=edge.EdgeVectorParams(size=vectors.shape[1], distance=edge.Distance.Cosine),
            optimizers=edge.EdgeOptimizersConfig(indexing_threshold=1),
            hnsw_config=edge.HnswIndexConfig(m=16, ef_construct=100, full_scan_threshold=full_scan_threshold))
        shard = edge.EdgeShard.create(folder + "/shard", config)
        shard.update(edge.UpdateOperation.create_field_index("centroid", edge.PayloadSchemaType.Geo))
        rng = np.random.default_rng(1)
        for i in range(0, len(vectors), 1000):
            chunk = vectors[i:i + 1000]
            pairs = enumerate(zip(chunk.tolist(), payloads(i, len(chunk), rng), strict=True))
            shard.update(edge.UpdateOperation.upsert_points([edge.Point(i + j + 1, v, p) for j, (v, p) in pairs]))
        start = time.perf_counter()
        shard.optimize()
        build = time.perf_counter() - start
        box = _filter(where(BOX))

        def search(query, params, flt):
            t = time.perf_counter()
            hits = shard.query(edge.QueryRequest(limit=10, query=edge.Query.Nearest(query.tolist()), filter=flt,
                                                 params=params))
            return {h.id for h in hits}, time.perf_counter() - t

        for flt_name, flt in (("none", None), ("box", box)):
            exact = [search(q, edge.SearchParams(exact=True), flt) for q in queries]
            for ef in (None, 64, 128, 256, 512):
                approx = [search(q, edge.SearchParams(hnsw_ef=ef), flt) for q in queries]
                recall = np.mean([len(a & e) / max(len(e), 1) for (a, _), (e, _) in zip(approx, exact, strict=True)])
                rows.append({"points": len(vectors), "build_s": round(build, 1), "filter": flt_name,
                             "full_scan_threshold_kb": full_scan_threshold,
                             "hnsw_ef": ef or "default", "recall_at_10": round(float(recall), 4),
                             **percentiles([s for _, s in approx]),
                             "exact": percentiles([s for _, s in exact])})
        shard.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--backends", nargs="+", default=["edge", "qdrant-client"])
    parser.add_argument("--hnsw", action="store_true")
    parser.add_argument("--full-scan-threshold", type=int, default=10_000)
    args = parser.parse_args()
    real = real_embeddings()
    queries = replicate(real, QUERIES, seed=99)
    common = {"date": date.today().isoformat(), "real_vectors": len(real), "dim": real.shape[1]}
    for size in args.sizes:
        vectors = replicate(real, size)
        if args.hnsw:
            for row in run_hnsw(vectors, queries, args.full_scan_threshold):
                print(json.dumps(common | row), flush=True)
            continue
        for backend in args.backends:
            print(json.dumps(common | {"backend": backend, "points": size, **run_backend(backend, vectors, queries)}),
                  flush=True)


if __name__ == "__main__":
    main()
