"""Retrieval quality of the pretrained initialisations on RSSCN7, to choose the default model.

    python bench/pretrained_rsscn7.py [--per-class 100]

Takes the first N images of each RSSCN7 class (../shared/data/rsscn7 or $GEOSEARCH_DATA/rsscn7); each image
queries all the others; prints mAP and P@10 per initialisation. No fine-tuning: the training issue's evaluation
supersedes this with the full protocol.
"""

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from geosearch.encoder.pretrained import pretrained_encoder

CANDIDATES = [("efficientnet_lite0", "imagenet", {}), ("efficientnet_lite2", "imagenet", {}),
              ("resnet18_aerial", "geoembed-v3", {}), ("resnet18_aerial", "geoembed-v3", {"pooling": "gem",
                                                                                           "embedding_dim": None})]


def load_images(root: Path, per_class: int) -> tuple[torch.Tensor, np.ndarray]:
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    images, labels = [], []
    for label, name in enumerate(classes):
        for path in sorted((root / name).glob("*.jpg"))[:per_class]:
            images.append(np.asarray(Image.open(path).convert("RGB")).transpose(2, 0, 1))
            labels.append(label)
    return torch.from_numpy(np.stack(images)), np.array(labels)


def mean_average_precision(vectors: np.ndarray, labels: np.ndarray, k: int = 10) -> tuple[float, float]:
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -np.inf)
    order = np.argsort(-similarity, axis=1)[:, :-1]
    relevant = labels[order] == labels[:, None]
    hits = np.cumsum(relevant, axis=1)
    precision = hits / np.arange(1, relevant.shape[1] + 1)
    ap = (precision * relevant).sum(axis=1) / relevant.sum(axis=1)
    return float(ap.mean()), float(relevant[:, :k].mean())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--only", nargs="*", help="initialisations to run, e.g. efficientnet_lite0:imagenet")
    args = parser.parse_args()
    root = Path(os.environ.get("GEOSEARCH_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")) / "rsscn7"
    images, labels = load_images(root, args.per_class)
    for backbone, weights, overrides in CANDIDATES:
        if args.only and f"{backbone}:{weights}" not in args.only:
            continue
        encoder, _ = pretrained_encoder(backbone, weights, **overrides)
        start = time.perf_counter()
        with torch.inference_mode():
            vectors = torch.cat([encoder(batch) for batch in images.split(32)]).numpy()
        seconds = time.perf_counter() - start
        map_, p10 = mean_average_precision(vectors, labels)
        print(json.dumps({"init": f"{backbone}:{weights}", **overrides, "images": len(labels), "mAP": round(map_, 4),
                          "P@10": round(p10, 4), "images_per_s": round(len(labels) / seconds, 1)}))


if __name__ == "__main__":
    main()
