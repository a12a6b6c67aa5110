"""Learned whitening (Radenović, Tolias, Chum, "Fine-tuning CNN image retrieval with no human annotation",
TPAMI 2019, §3.3; cirtorch's `whitenlearn`): no gradient training, only the statistics of a pretrained encoder's
pooled features on the archive's own tiles. The within-place scatter (the differences between views of one
place) is whitened away, and the directions along which places differ most are kept. The result is a linear
projection on unit-length pooled features, which the engine's encoder holds as its head.
"""

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch
from sklearn.covariance import LedoitWolf, ShrunkCovariance
from sklearn.decomposition import PCA

from geosearch.encoder.checkpoint import Checkpoint
from geosearch.encoder.model import Encoder
from geosearch.errors import GeosearchError
from training.datasets import LabelledImages, Transform
from training.evaluate import embed_dataset


def same_label_pairs(*label_sets: np.ndarray) -> np.ndarray:
    """(n, 2) index pairs, into the sets' concatenation, of every two items with one label in one set: the sets
    (places cut at several tile sizes, say) number their labels each on its own, so they are kept apart."""
    pairs, first = [], 0
    for labels in label_sets:
        order = np.argsort(labels, kind="stable")
        for group in np.split(order, np.flatnonzero(np.diff(labels[order])) + 1):
            a, b = np.triu_indices(len(group), k=1)
            pairs.append(first + np.stack([group[a], group[b]], axis=1))
        first += len(labels)
    return np.concatenate(pairs) if pairs else np.empty((0, 2), dtype=int)


def check_shrinkage(shrinkage: float | None) -> None:
    """A shrinkage is a share of the way to the identity (0 to 1), or None for Ledoit-Wolf's own choice."""
    if shrinkage is not None and (isinstance(shrinkage, bool) or not isinstance(shrinkage, int | float)
                                  or not 0 <= shrinkage <= 1):
        raise GeosearchError(f"whitening shrinkage {shrinkage}: choose 0 to 1, or leave it out for Ledoit-Wolf")


def learn_whitening(features: np.ndarray, pairs: np.ndarray, dim: int,
                    shrinkage: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A (dim, D) projection P and a bias b such that P x + b whitens the differences within `pairs` of unit
    `features` (n, D) and keeps the `dim` directions of most remaining variance. The within-pair covariance is
    shrunk towards a multiple of the identity: an archive gives fewer matching pairs than a 1,280-d covariance has
    entries. `shrinkage` in [0, 1] sets how far; None lets Ledoit-Wolf choose."""
    if len(pairs) < 2:
        raise GeosearchError("learned whitening needs matching pairs (views of one place); the data has none")
    if not 0 < dim <= features.shape[1]:
        raise GeosearchError(f"whitening to {dim} dimensions: choose 1 to {features.shape[1]}")
    check_shrinkage(shrinkage)
    estimator = LedoitWolf(assume_centered=True) if shrinkage is None else ShrunkCovariance(
        shrinkage=shrinkage, assume_centered=True)
    mean = features.mean(axis=0)
    within = estimator.fit(features[pairs[:, 0]] - features[pairs[:, 1]]).covariance_
    whiten = np.linalg.inv(np.linalg.cholesky(within))
    # the full SVD: a randomized one would give another model at every run
    rotation = PCA(n_components=dim, svd_solver="full").fit((features - mean) @ whiten.T).components_
    projection = rotation @ whiten
    return projection.astype(np.float32), (-projection @ mean).astype(np.float32)


def whitened_checkpoint(start: Checkpoint, projection: np.ndarray, bias: np.ndarray, metadata: dict) -> Checkpoint:
    """`start` (an encoder without a projection) with the whitening as its head."""
    if start.config.embedding_dim is not None:
        raise GeosearchError(f"{start.model_id} has a {start.config.embedding_dim}-d projection already; learned "
                             "whitening starts from pooled features (e.g. --model pretrained)")
    trained = start.encoder()
    config = replace(start.config, embedding_dim=len(projection), normalize_pooled=True)
    encoder = Encoder(config, trunk=trained.trunk)
    encoder.pool.load_state_dict(trained.pool.state_dict())
    with torch.no_grad():
        encoder.projection.weight.copy_(torch.from_numpy(projection))
        encoder.projection.bias.copy_(torch.from_numpy(bias))
    return Checkpoint.of(encoder.eval(), {**start.metadata, **metadata})


def view_features(encoder: Encoder, data: LabelledImages, indices: np.ndarray, views: int, transform: Transform,
                  device: torch.device, workers: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings and labels of the items at `indices` as they are, then in each of `views` augmented views (view v
    seeded with v, so the same data give the same features)."""
    features, labels = [], []
    for view in range(views + 1):
        data.transform = transform if view else None
        torch.manual_seed(view)
        vectors, view_labels = embed_dataset(encoder, data, indices, device, workers=workers)
        features.append(vectors)
        labels.append(view_labels)
    data.transform = None
    return np.concatenate(features), np.concatenate(labels)


def whiten(start: Checkpoint, sources: Sequence[tuple[LabelledImages, np.ndarray]], views: int,
           transform: Transform, dim: int, shrinkage: float | None, device: torch.device,
           workers: int = 1) -> Checkpoint:
    """Learn the whitening from the items of each (data set, indices) source and `views` augmented views of each
    (views of one item and items of one label in one source are the matching pairs; several sources, such as
    places cut at several tile sizes, keep their labels apart); what it was learned from is in the metadata's
    `whitening`."""
    encoder = start.encoder()
    features, labels = [], []
    for data, indices in sources:
        vectors, source_labels = view_features(encoder, data, indices, views, transform, device, workers)
        features.append(vectors)
        labels.append(source_labels)
    features, pairs = np.concatenate(features), same_label_pairs(*labels)
    projection, bias = learn_whitening(features, pairs, dim, shrinkage)
    learned = {"items": sum(len(indices) for _, indices in sources), "views": views, "features": len(features),
               "pairs": len(pairs), "dim": dim, "shrinkage": shrinkage}
    return whitened_checkpoint(start, projection, bias, {"whitening": learned})
