"""How to learn the default's whitening: tile sizes of the places it learns from, the within-place covariance's
shrinkage and the output dimension, chosen on the validation split only (never the quality benchmark's cells).

The pretrained encoder's pooled features are embedded once: the training places of a places config (the whiten
recipe's) at each tile size with `whiten_views` archive views, places at other sizes only where they share no
ground with the held-out fifth; then every variant is learned with training/whitening.py and measured on

- views at 64 and 32 px: each held-out tile (the config's held-out places, and the 32 px places inside their
  ground) looks for a seeded archive view of its place among the views of every held-out tile (mAP);
- RSSCN7 validation: a fifth of RSSCN7's training half, each image querying the rest (mAP): broad classes.

The variant with the best mean of the three is the recipe's; a tie within half a point keeps the smaller output.

    python bench/bench_whitening.py training/configs/whiten.toml

Rows go to bench/whitening.jsonl with the machine and the date.
"""

import argparse
import itertools
import json
import platform
import sys
from dataclasses import replace
from datetime import date
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_quality import rsscn7_split  # noqa: E402
from bench_recipes import VIEW_SEED  # noqa: E402

from geosearch.encoder.default import open_model  # noqa: E402
from training.augment import archive_views  # noqa: E402
from training.datasets import stratified_split  # noqa: E402
from training.evaluate import embed_dataset  # noqa: E402
from training.metrics import evaluate_retrieval  # noqa: E402
from training.train import TrainConfig, load_dataset, split  # noqa: E402
from training.whitening import learn_whitening, same_label_pairs, view_features  # noqa: E402

CPU = torch.device("cpu")
SIZES = ((64,), (64, 32), (64, 32, 128))
SHRINKAGES = (None, 0.1, 0.25, 0.5)
DIMS = (256, 512, 1024)


def _embed(encoder, data, items, seed: int | None = None, transform=None) -> tuple[np.ndarray, np.ndarray]:
    data.transform = transform
    if seed is not None:
        torch.manual_seed(seed)
    vectors, labels = embed_dataset(encoder, data, items, CPU, workers=0)
    data.transform = None
    return vectors, labels


def features(config: TrainConfig) -> tuple[dict, dict]:
    """Training features per tile size and the validation sets, from the pretrained start."""
    encoder, views = open_model("pretrained").encoder(), archive_views(config.band_swap)
    places = load_dataset(config)
    train, held_out = split(config, places.labels)
    learn, check = {}, {}
    for size in sorted({s for sizes in SIZES for s in sizes}):
        cut = places if size == config.tile_size else load_dataset(replace(config, tile_size=size))
        items = train if cut is places else cut.apart_from(places, held_out)
        vectors, labels = view_features(encoder, cut, items, config.whiten_views, views, CPU, workers=0)
        learn[size] = vectors, labels
        if size <= config.tile_size:  # held-out ground holds whole tiles of this size
            check_items = held_out if cut is places else np.setdiff1d(np.arange(len(cut)), items)
            check[f"views {size}"] = (_embed(encoder, cut, check_items),
                                      _embed(encoder, cut, check_items, VIEW_SEED, views))
    data, rsscn7_train, _ = rsscn7_split()
    _, validation = stratified_split(data.labels[rsscn7_train], 0.2, seed=0)
    check["rsscn7 validation"] = _embed(encoder, data, rsscn7_train[validation])
    return learn, check


def measure(check: dict, projection: np.ndarray | None = None, bias: np.ndarray | None = None) -> dict:
    """mAP per validation set (percent) after the whitening (none without a projection), and their mean."""
    def project(vectors: np.ndarray) -> np.ndarray:
        if projection is None:
            return vectors
        whitened = vectors @ projection.T + bias
        return whitened / np.linalg.norm(whitened, axis=1, keepdims=True)

    scores = {}
    for name, value in check.items():
        if name.startswith("views"):
            (vectors, labels), (views, _) = value
            scores[name] = evaluate_retrieval(project(vectors), labels, project(views), labels).map
        else:
            scores[name] = evaluate_retrieval(project(value[0]), value[1]).map
    return {name: round(100 * score, 1) for name, score in scores.items()} | {
        "mean": round(100 * float(np.mean(list(scores.values()))), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", type=Path, help="A places config (its scenes, split, views).")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "whitening.jsonl")
    args = parser.parse_args()
    config = TrainConfig.from_toml(args.config)
    learn, check = features(config)
    stamp = {"machine": platform.node(), "date": str(date.today())}
    rows = [{"variant": "pretrained (no whitening)", **measure(check)}]
    for sizes, shrinkage, dim in itertools.product(SIZES, SHRINKAGES, DIMS):
        vectors = np.concatenate([learn[size][0] for size in sizes])
        projection, bias = learn_whitening(vectors, same_label_pairs(*(learn[s][1] for s in sizes)),
                                           dim, shrinkage)
        rows.append({"variant": f"tile sizes {'+'.join(map(str, sizes))}, shrinkage "
                                f"{'Ledoit-Wolf' if shrinkage is None else shrinkage}, {dim}-d",
                     **measure(check, projection, bias)})
    with args.out.open("a") as out:
        for row in rows:
            print(json.dumps(row), flush=True)
            out.write(json.dumps(row | stamp) + "\n")


if __name__ == "__main__":
    main()
