"""Find every place like these: how well each method (geosearch/detect.py) finds a class from 5 positive and 5
negative examples, and what a scan of 100k and 1M tiles costs.

    cd bench && python bench_detect.py quality [--models default pretrained] [--trials 10]
    cd bench && python bench_detect.py scale [--tiles 100000 1000000]

quality, on two archives, for each class and method, over --trials draws of examples (seeded):
- RSSCN7's test split (the split bench_quality.py uses: 1,400 images, 200 per class), each image a tile; 5 images of
  the class are the positives, 5 of other classes the negatives; the other 1,390 are scored by the detector the
  examples teach (Detector.learn, as `geosearch detect` makes it). Also the score method from 5 positives alone.
- The labelled North Carolina scene (Landsat 7, bands 3, 2, 1), indexed at 16 px on the aligned grid in a Qdrant
  Edge store, each tile labelled as bench_quality.py labels them (the majority class of at least 10 labelled
  pixels); the examples are labelled tiles, and `detect` scans the store. Only labelled tiles that are not
  examples count: a detected unlabelled tile is neither right nor wrong. Classes with fewer than 8 labelled tiles
  are left out.
Precision, recall and F1 of the detected tiles against the labels, averaged over trials, per class and overall.

scale: a store of --tiles tiles (the shipped scenes indexed at 64 px with the default model, then noisy copies of
their vectors with real payloads moved at random, as bench_search.py makes them; no HNSW, which a scan does not
use), then in a fresh process `detect` over the whole store with 5 positive tiles (a real tile and the 4 real tiles
nearest it) and 5 negative ones (the real tiles least like it): seconds, tiles per second, detections, and that
process's peak resident memory (VmHWM), split into its anonymous part (the process's own memory, sampled after
each page: before the scan and at its peak) and the store's memory-mapped files at the end (page cache, which the
kernel can drop); then again with a threshold above 1, which keeps nothing, so that the scan's own memory shows
apart from the detections'.
"""

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import date
from pathlib import Path

import numpy as np
import rasterio
import torch
from bench_quality import NC_LABELS, NC_SCENE, majority_label, rsscn7_split
from bench_refine import archive_vectors
from bench_search import moved

from bench_store import noisy_copies, peak_rss_gb
from bench_tiling import CACHE
from geosearch.data import shipped_scenes
from geosearch.detect import METHODS, Detector, detect
from geosearch.embed import plan_scene
from geosearch.encoder.default import open_model
from geosearch.errors import GeosearchError
from geosearch.index import index_scenes
from geosearch.query import Query, build_query
from geosearch.store import open_backend
from geosearch.store.archive import Archive
from geosearch.tiling import TilingOptions

EXAMPLES = 5
NC_DETECT_TILE, MIN_CLASS = 16, 8


def vector_query(positives: np.ndarray, negatives: np.ndarray) -> Query:
    """A query of stored vectors, as build_query makes one of tile ids (the first positive is the query)."""
    examples = [Query(v, None, None, None, {}) for v in (*positives, *negatives)]
    return Query(positives[0], None, None, None, {}, positives=tuple(examples[1:len(positives)]),
                 negatives=tuple(examples[len(positives):]))


def rates(detected: np.ndarray, truth: np.ndarray) -> dict:
    hits = int((detected & truth).sum())
    precision = hits / detected.sum() if detected.any() else 0.0
    recall = hits / truth.sum()
    return {"precision": precision, "recall": recall,
            "f1": 2 * precision * recall / (precision + recall) if hits else 0.0}


def draw(rng: np.random.Generator, labels: np.ndarray, label: int, negatives: bool) -> tuple[np.ndarray, np.ndarray]:
    like = rng.choice(np.flatnonzero(labels == label), EXAMPLES, replace=False)
    unlike = rng.choice(np.flatnonzero(labels != label), EXAMPLES, replace=False) if negatives else np.array([], int)
    return like, unlike


WAYS = {f"{method}, 5+5": (method, True) for method in METHODS} | {"score, 5 positives only": ("score", False)}


def summarise(cells: dict[tuple[str, int], list[dict]]) -> dict:
    """Mean rates per way and class, and over classes."""
    out: dict = {}
    for (way, label), trials in cells.items():
        out.setdefault(way, {})[str(label)] = {key: round(float(np.mean([t[key] for t in trials if key in t])), 4)
                                               for key in {key for t in trials for key in t}}
    for per_class in out.values():
        per_class["mean"] = {key: round(float(np.mean([c[key] for c in per_class.values()])), 4)
                             for key in ("precision", "recall", "f1")}
    return out


def rsscn7_quality(model: str, trials: int) -> dict:
    data, _, test = rsscn7_split()
    _, vectors, labels = archive_vectors(model, data, test)
    cells: dict[tuple[str, int], list[dict]] = {}
    for way, (method, negatives) in WAYS.items():
        rng = np.random.default_rng(0)
        for label in np.unique(labels):
            for _ in range(trials):
                like, unlike = draw(rng, labels, label, negatives)
                detector = Detector.learn(vector_query(vectors[like], vectors[unlike]), method)
                rest = np.setdiff1d(np.arange(len(vectors)), np.concatenate([like, unlike]))
                found = detector.score(vectors[rest]) >= detector.threshold
                cells.setdefault((way, int(label)), []).append(
                    rates(found, labels[rest] == label) | {"threshold": detector.threshold, "refused": 0})
    return summarise(cells)


def nc_quality(model: str, trials: int, folder: Path) -> dict:
    checkpoint = open_model(model)
    tiling = TilingOptions(tile_size=NC_DETECT_TILE, bands=(3, 2, 1))
    with open_backend(folder / f"nc-{checkpoint.model_id}") as backend:
        archive = Archive.open(backend, "tiles", checkpoint.model_id, checkpoint.config.dim)
        if not archive.tile_count():
            index_scenes(archive, checkpoint, [plan_scene(str(NC_SCENE), tiling)], tiling, torch.device("cpu"))
        with rasterio.open(NC_LABELS) as labels_file:
            raster = labels_file.read(1, masked=True)
        (record,) = archive.scenes()
        tiles = [(tile_id, majority_label(raster, p["row"], p["col"], NC_DETECT_TILE))
                 for tile_id, p in archive.tiles(record["scene_id"])]
        ids = np.array([t for t, label in tiles if label >= 0])
        labels = np.array([label for _, label in tiles if label >= 0])
        classes = [c for c in np.unique(labels) if (labels == c).sum() >= MIN_CLASS]
        cells: dict[tuple[str, int], list[dict]] = {}
        for way, (method, negatives) in WAYS.items():
            rng = np.random.default_rng(0)
            for label in classes:
                for _ in range(trials):
                    like, unlike = draw(rng, labels, label, negatives)
                    query = build_query(archive, positives=[{"tile": t} for t in ids[like]],
                                        negatives=[{"tile": t} for t in ids[unlike]])
                    rest = np.setdiff1d(np.arange(len(ids)), np.concatenate([like, unlike]))
                    try:
                        _, detected, detector = detect(archive, query, method)
                    except GeosearchError:  # the examples do not separate: the user is told, nothing is found
                        cells.setdefault((way, int(label)), []).append(
                            rates(np.zeros(len(rest), bool), labels[rest] == label) | {"refused": 1})
                        continue
                    found = np.isin(ids[rest], detected.tile_ids)
                    cells.setdefault((way, int(label)), []).append(
                        rates(found, labels[rest] == label) | {"refused": 0, "threshold": detector.threshold,
                                                                "tiles_detected": len(detected.tile_ids)})
    return summarise(cells) | {"labelled_tiles": len(ids), "tiles": len(tiles),
                               "class_sizes": {str(c): int((labels == c).sum()) for c in classes}}


def build_store(folder: Path, tiles: int) -> None:
    """The shipped scenes indexed at 64 px, then noisy copies of their vectors with moved payloads up to `tiles`."""
    checkpoint, tiling = open_model("default"), TilingOptions(tile_size=64)
    rng = np.random.default_rng(0)
    with open_backend(folder) as backend:
        archive = Archive.open(backend, "tiles", checkpoint.model_id, checkpoint.config.dim)
        index_scenes(archive, checkpoint, [plan_scene(str(p), tiling) for p in shipped_scenes()], tiling,
                     torch.device("cpu"))
        real_ids, real, real_payloads = [], [], []
        for ids, vectors, payloads in archive.vector_pages():
            real_ids += ids
            real.append(vectors)
            real_payloads += payloads
        for i, chunk in enumerate(noisy_copies(np.concatenate(real), tiles - len(real_ids))):
            payloads = [moved(real_payloads[j], rng) for j in rng.integers(0, len(real_payloads), len(chunk))]
            backend.upsert("tiles", [str(uuid.UUID(int=i * 1000 + j + 1)) for j in range(len(chunk))], chunk,
                           payloads)
        # A real tile and its 4 nearest real tiles as positives, the 5 real tiles least like it as negatives.
        real = np.concatenate(real)
        order = np.argsort(-(real @ real[0]))
        picked = [*order[:EXAMPLES], *order[-EXAMPLES:]]
        (folder / "examples.json").write_text(json.dumps([real_ids[i] for i in picked]))


def scan_once(folder: Path, threshold: float | None) -> dict:
    """In this (fresh) process: detect with 5 positive and 5 negative tiles over the whole store, with the learned
    threshold or `threshold` (above 1: nothing kept, which measures the scan alone)."""
    examples = json.loads((folder / "examples.json").read_text())
    with open_backend(folder) as backend:
        archive = Archive.open(backend, "tiles")
        query = build_query(archive, positives=[{"tile": t} for t in examples[:EXAMPLES]],
                            negatives=[{"tile": t} for t in examples[EXAMPLES:]])
        anonymous = [resident_gb("RssAnon")]

        def sample(_done: int, _total: int) -> None:
            anonymous.append(resident_gb("RssAnon"))

        start = time.perf_counter()
        frame, detected, detector = detect(archive, query, threshold=threshold, progress=sample)
        seconds = time.perf_counter() - start
    return {"tiles": detected.scored, "seconds": round(seconds, 2), "tiles_per_s": round(detected.scored / seconds),
            "tiles_detected": len(detected.tile_ids), "polygons": len(frame), "threshold": detector.threshold,
            "peak_rss_gb": peak_rss_gb(), "anonymous_gb_before": anonymous[0],
            "anonymous_gb_peak": max(anonymous), "file_backed_gb_end": resident_gb("RssFile")}


def resident_gb(kind: str) -> float:
    """This process's resident memory of one kind now: RssAnon (its own heap) or RssFile (mapped files, here the
    store's segments, which the kernel can drop and read again)."""
    status = Path("/proc/self/status").read_text()
    return round(int(status.split(f"{kind}:")[1].split()[0]) / 2**20, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["quality", "scale", "scan-once"])
    parser.add_argument("--models", nargs="+", default=["default", "pretrained"])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--tiles", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--store", type=Path, help="(scan-once) the store to scan")
    parser.add_argument("--threshold", type=float, help="(scan-once) instead of the learned one")
    args = parser.parse_args()
    header = {"date": date.today().isoformat(), "machine": platform.node(), "threads": torch.get_num_threads()}
    if args.mode == "scan-once":
        print(json.dumps(scan_once(args.store, args.threshold)))
        return
    CACHE.mkdir(exist_ok=True)
    if args.mode == "quality":
        for model in args.models:
            print(json.dumps(header | {"model": model, "archive": "rsscn7", **rsscn7_quality(model, args.trials)}),
                  flush=True)
            print(json.dumps(header | {"model": model, "archive": "north-carolina",
                                       **nc_quality(model, args.trials, CACHE)}), flush=True)
        return
    for tiles in args.tiles:
        with tempfile.TemporaryDirectory(dir=CACHE) as folder:
            start = time.perf_counter()
            build_store(Path(folder), tiles)
            built = time.perf_counter() - start
            for threshold in ([], ["--threshold", "1.01"]):
                result = subprocess.run([sys.executable, __file__, "scan-once", "--store", folder, *threshold],
                                        check=True, capture_output=True, text=True)
                print(json.dumps(header | {"store_build_s": round(built)} | json.loads(result.stdout)), flush=True)


if __name__ == "__main__":
    main()
