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

--hnsw: Qdrant Edge configured and optimized as `geosearch index` does it (store/edge_backend.py): build time,
then recall@10 against exact search and latency for several hnsw_ef, with ACORN as geosearch searches and at
hnsw_ef=256 without it, without a filter and with geo boxes that keep
about 10 % and 1 % of the points. Peak resident memory is the process's VmHWM.
"""

import argparse
import json
import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import numpy as np
import qdrant_edge as edge
import torch
from PIL import Image

from bench_tiling import CACHE
from geosearch.embed import EmbeddedBatch, embed_scenes, plan_scene
from geosearch.encoder.default import default_checkpoint
from geosearch.encoder.device import resolve_device
from geosearch.store import open_backend
from geosearch.store.archive import TILE_INDEXES
from geosearch.store.edge_backend import _filter, search_params
from geosearch.store.filters import GeoBox, where
from geosearch.tiling import TilingOptions

SHARED = Path(os.environ.get("GEOSEARCH_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
BOXES = {"box 10%": GeoBox("centroid", -50.0, -50.0, -18.38, -18.38),  # (31.62 / 100)² of the square
         "box 1%": GeoBox("centroid", -50.0, -50.0, -40.0, -40.0)}
QUERIES = 50  # the default; qdrant-client's local mode at 1M takes seconds per query, so it was run with fewer


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


def noisy_copies(real: np.ndarray, n: int, seed: int = 0, chunk: int = 1000) -> Iterator[np.ndarray]:
    """n noisy copies of the real vectors, chunk by chunk, so that 1M × 1280 floats are never held at once."""
    rng = np.random.default_rng(seed)
    for start in range(0, n, chunk):
        picked = real[rng.integers(0, len(real), min(chunk, n - start))]
        noisy = picked + rng.standard_normal(picked.shape, dtype=np.float32) * np.float32(0.3 / np.sqrt(real.shape[1]))
        yield noisy / np.linalg.norm(noisy, axis=1, keepdims=True)


def payloads(start: int, count: int, rng: np.random.Generator) -> list[dict]:
    lon, lat = rng.uniform(-50, 50, count), rng.uniform(-50, 50, count)
    return [{"scene_id": f"scene-{(start + i) // 1000}", "centroid": {"lon": float(x), "lat": float(y)},
             "min_lon": float(x) - 0.01, "min_lat": float(y) - 0.01, "max_lon": float(x) + 0.01,
             "max_lat": float(y) + 0.01, "model_id": "bench", "row": start + i, "col": 0}
            for i, (x, y) in enumerate(zip(lon, lat, strict=True))]


def percentiles(seconds: list[float]) -> dict:
    if not seconds:
        return {"p50_ms": None, "p95_ms": None}
    ms = np.array(seconds) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 2), "p95_ms": round(float(np.percentile(ms, 95)), 2)}


def upsert_all(backend, real: np.ndarray, size: int) -> float:
    """Upsert `size` noisy copies in batches of 1000, with payloads as `index` writes them; points per second."""
    rng, seconds = np.random.default_rng(1), 0.0
    for i, chunk in enumerate(noisy_copies(real, size)):
        ids = [str(uuid.UUID(int=i * 1000 + j + 1)) for j in range(len(chunk))]
        rows = payloads(i * 1000, len(chunk), rng)
        start = time.perf_counter()
        backend.upsert("tiles", ids, chunk, rows)
        seconds += time.perf_counter() - start
    start = time.perf_counter()
    backend.flush()
    return size / (seconds + time.perf_counter() - start)


def peak_rss_gb() -> float:
    """This process's peak resident memory (VmHWM)."""
    status = Path("/proc/self/status").read_text()
    return round(int(status.split("VmHWM:")[1].split()[0]) / 2**20, 2)


def run_backend(name: str, real: np.ndarray, size: int, queries: np.ndarray) -> dict:
    with tempfile.TemporaryDirectory(dir=CACHE) as folder:
        url = f"file://{folder}" if name == "qdrant-client" else None
        with open_backend(folder, url=url) as backend:
            backend.create_collection("tiles", real.shape[1], TILE_INDEXES)
            upsert = upsert_all(backend, real, size)
            plain, boxed = [], []
            for query in queries:
                t = time.perf_counter()
                backend.query("tiles", query, 10, exact=True)
                plain.append(time.perf_counter() - t)
                t = time.perf_counter()
                backend.query("tiles", query, 10, where(BOXES["box 10%"]), exact=True)
                boxed.append(time.perf_counter() - t)
            kept = backend.count("tiles", where(BOXES["box 10%"])) / size
    return {"upsert_per_s": round(upsert), "query": percentiles(plain), "query_box": percentiles(boxed),
            "box_fraction": round(kept, 3), "peak_rss_gb": peak_rss_gb()}


def run_hnsw(real: np.ndarray, size: int, queries: np.ndarray) -> Iterator[dict]:
    """geosearch's Edge backend, its shard configured as `index` configures it, optimized as `index` does."""
    with tempfile.TemporaryDirectory(dir=CACHE) as folder, open_backend(folder) as backend:
        backend.create_collection("tiles", real.shape[1], {"centroid": "geo"})
        shard = backend._shard("tiles")  # for the hnsw_ef sweep, which geosearch itself fixes at HNSW_EF
        upsert_all(backend, real, size)
        start = time.perf_counter()
        backend.optimize("tiles")
        build = time.perf_counter() - start
        info = shard.info()
        common = {"points": size, "build_s": round(build, 1), "indexed": info.indexed_vectors_count,
                  "segments": info.segments_count}

        def search(query, params, box):
            t = time.perf_counter()
            hits = shard.query(edge.QueryRequest(limit=10, query=edge.Query.Nearest(query.tolist()),
                                                 filter=_filter(where(box) if box else None), params=params))
            return {h.id for h in hits}, time.perf_counter() - t

        for filter_name, box in (("none", None), *BOXES.items()):
            exact = [search(q, search_params(exact=True), box) for q in queries]
            for ef, acorn in ((None, True), (64, True), (128, True), (256, True), (512, True), (256, False)):
                approx = [search(q, search_params(hnsw_ef=ef, acorn=acorn), box) for q in queries]
                recall = np.mean([len(a & e) / max(len(e), 1) for (a, _), (e, _) in zip(approx, exact, strict=True)])
                yield common | {"filter": filter_name, "hnsw_ef": ef or "default", "acorn": acorn,
                                "recall_at_10": round(float(recall), 4), **percentiles([s for _, s in approx]),
                                "exact": percentiles([s for _, s in exact]), "peak_rss_gb": peak_rss_gb()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--backends", nargs="+", default=["edge", "qdrant-client"])
    parser.add_argument("--hnsw", action="store_true")
    parser.add_argument("--queries", type=int, default=QUERIES, help="queries per measurement")
    args = parser.parse_args()
    real = real_embeddings()
    queries = next(noisy_copies(real, args.queries, seed=99))
    common = {"date": date.today().isoformat(), "real_vectors": len(real), "dim": real.shape[1]}
    for size in args.sizes:
        if args.hnsw:
            for row in run_hnsw(real, size, queries):
                print(json.dumps(common | row), flush=True)
            continue
        for backend in args.backends:
            row = {"backend": backend, "points": size, **run_backend(backend, real, size, queries)}
            print(json.dumps(common | row), flush=True)


if __name__ == "__main__":
    main()
