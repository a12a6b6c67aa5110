"""Refine with examples as a user would: precision@20 per round of marking results, RSSCN7 as the archive.

    cd bench && python bench_refine.py [--models default pretrained] [--queries 140] [--rounds 3]

The archive is RSSCN7's test split (1,400 images of 7 classes, 200 each; the split bench_quality.py uses), embedded
by the model and stored in a Qdrant Edge store. Each query is an image of the archive (--queries of them, as many of
each class, seed 0). Round 0 is the plain search: the query's nearest images. After each round the simulated user
marks every image shown as like the query (its class) or unlike it, and searches again with the query and the marks
as positives and negatives. Three ways are measured in one run: Archive.recommend, Qdrant's best-score
recommendation, which `geosearch search` uses for `--positive`/`--negative`; Qdrant's average-vector strategy (a
plain search for 2 avg(positives) - avg(negatives)); and, as the baseline, the plain search's next 20 without any
examples. Every round shows the 20 best images not shown before, nor the query. A query holds at most MAX_EXAMPLES
examples: the query, then the newest positives, then the newest negatives. P@20 is the fraction of the 20 shown
that are of the query's class; a round that finds fewer than 20 (the negatives rule the rest out) counts the
missing ones as misses.
"""

import argparse
import json
import platform
import tempfile
import uuid
from datetime import date

import numpy as np
import torch
from bench_quality import rsscn7_split

from bench_tiling import CACHE
from geosearch.encoder.default import open_model
from geosearch.encoder.runtime import load_encoder
from geosearch.query import MAX_EXAMPLES
from geosearch.store import open_backend
from geosearch.store.archive import Archive
from training.datasets import ClassFolders
from training.evaluate import embed_dataset

SHOWN = 20


def archive_vectors(model: str, data: ClassFolders, test: np.ndarray) -> tuple[str, np.ndarray, np.ndarray]:
    """The model id, and the test split's vectors and labels (cached in bench/.cache by model id)."""
    checkpoint = open_model(model)
    cached = CACHE / f"rsscn7_test_{checkpoint.model_id}.npz"
    if not cached.exists():
        encoder = load_encoder(checkpoint, torch.device("cpu"))
        vectors, labels = embed_dataset(encoder, data, test, torch.device("cpu"))
        CACHE.mkdir(exist_ok=True)
        np.savez(cached, vectors=vectors, labels=labels)
    saved = np.load(cached)
    return checkpoint.model_id, saved["vectors"], saved["labels"]


def examples(query: int, like: list[int], unlike: list[int]) -> tuple[list[int], list[int]]:
    """The query and the newest marks, positives first, within MAX_EXAMPLES."""
    positives = [query, *like[::-1][:MAX_EXAMPLES - 1]]
    return positives, unlike[::-1][:MAX_EXAMPLES - len(positives)]


def best_score(archive: Archive, positives: list[np.ndarray], negatives: list[np.ndarray], limit: int) -> list:
    """What `search` does with several examples."""
    return archive.recommend(positives, negatives, limit)


def average_vector(archive: Archive, positives: list[np.ndarray], negatives: list[np.ndarray], limit: int) -> list:
    """Qdrant's other strategy as it defines it: a plain search for avg(pos) + avg(pos) - avg(neg)."""
    mean = np.mean(positives, axis=0)
    return archive.nearest(2 * mean - np.mean(negatives, axis=0) if negatives else mean, limit)


def query_only(archive: Archive, positives: list[np.ndarray], _negatives: list[np.ndarray], limit: int) -> list:
    """No refinement: the next page of the plain search. Later pages are harder (the easy matches were shown)."""
    return archive.nearest(positives[0], limit)


STRATEGIES = {"best_score": best_score, "average_vector": average_vector, "query_only": query_only}


def session(archive: Archive, vectors: np.ndarray, labels: np.ndarray, ids: list[str], query: int,
            rounds: int, strategy: str) -> list[float]:
    """P@20 of each round for one query."""
    index_of = {tile_id: i for i, tile_id in enumerate(ids)}
    seen, like, unlike, precision = {query}, [], [], []
    for round_ in range(rounds + 1):
        limit = SHOWN + len(seen)
        if round_ == 0:
            hits = archive.nearest(vectors[query], limit)
        else:
            positives, negatives = examples(query, like, unlike)
            hits = STRATEGIES[strategy](archive, [vectors[i] for i in positives], [vectors[i] for i in negatives],
                                        limit)
        shown = [index_of[h.id] for h in hits if index_of[h.id] not in seen][:SHOWN]
        relevant = [i for i in shown if labels[i] == labels[query]]
        precision.append(len(relevant) / SHOWN)
        like += relevant
        unlike += [i for i in shown if labels[i] != labels[query]]
        seen.update(shown)
    return precision


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["default", "pretrained"])
    parser.add_argument("--queries", type=int, default=140)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    data, _, test = rsscn7_split()
    for model in args.models:
        model_id, vectors, labels = archive_vectors(model, data, test)
        classes = np.unique(labels)
        rng = np.random.default_rng(0)
        queries = np.concatenate([rng.choice(np.flatnonzero(labels == c), args.queries // len(classes),
                                             replace=False) for c in classes])
        ids = [str(uuid.UUID(int=i + 1)) for i in range(len(vectors))]
        with tempfile.TemporaryDirectory(dir=CACHE) as folder, open_backend(folder) as backend:
            archive = Archive.open(backend, "tiles", model_id, vectors.shape[1])
            backend.upsert("tiles", ids, vectors, [{"label": int(c)} for c in labels])
            for strategy in STRATEGIES:
                per_round = np.array([session(archive, vectors, labels, ids, int(q), args.rounds, strategy)
                                      for q in queries])
                print(json.dumps({"date": date.today().isoformat(), "machine": platform.node(), "model": model,
                                  "model_id": model_id, "strategy": strategy, "archive": len(vectors),
                                  "queries": len(queries),
                                  "p@20_per_round": [round(float(p), 4) for p in per_round.mean(axis=0)],
                                  "queries_better_at_last_round": round(float(np.mean(per_round[:, -1] >
                                                                                      per_round[:, 0])), 4)}),
                      flush=True)


if __name__ == "__main__":
    main()
