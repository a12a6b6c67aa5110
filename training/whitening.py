"""Learned whitening (Radenović, Tolias, Chum, "Fine-tuning CNN image retrieval with no human annotation",
TPAMI 2019, §3.3; cirtorch's `whitenlearn`): no gradient training, only the statistics of a pretrained encoder's
pooled features on the archive's own tiles. The within-place scatter (the differences between views of one
place) is whitened away, and the directions along which places differ most are kept. The result is a linear
projection on unit-length pooled features, which the engine's encoder holds as its head.
"""

from dataclasses import replace

import numpy as np
import torch
from sklearn.covariance import LedoitWolf
from sklearn.decomposition import PCA

from geosearch.encoder.checkpoint import Checkpoint
from geosearch.encoder.model import Encoder
from geosearch.errors import GeosearchError
from training.datasets import LabelledImages, Transform
from training.evaluate import embed_dataset


def same_label_pairs(labels: np.ndarray) -> np.ndarray:
    """(n, 2) index pairs of every two items with one label."""
    order = np.argsort(labels, kind="stable")
    pairs = []
    for group in np.split(order, np.flatnonzero(np.diff(labels[order])) + 1):
        a, b = np.triu_indices(len(group), k=1)
        pairs.append(np.stack([group[a], group[b]], axis=1))
    return np.concatenate(pairs) if pairs else np.empty((0, 2), dtype=int)


def learn_whitening(features: np.ndarray, pairs: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """A (dim, D) projection P and a bias b such that P x + b whitens the differences within `pairs` of unit
    `features` (n, D) and keeps the `dim` directions of most remaining variance. The within-pair covariance is
    shrunk (Ledoit-Wolf): an archive gives fewer matching pairs than a 1,280-d covariance has entries."""
    if len(pairs) < 2:
        raise GeosearchError("learned whitening needs matching pairs (views of one place); the data has none")
    if not 0 < dim <= features.shape[1]:
        raise GeosearchError(f"whitening to {dim} dimensions: choose 1 to {features.shape[1]}")
    mean = features.mean(axis=0)
    within = LedoitWolf(assume_centered=True).fit(features[pairs[:, 0]] - features[pairs[:, 1]]).covariance_
    whiten = np.linalg.inv(np.linalg.cholesky(within))
    rotation = PCA(n_components=dim).fit((features - mean) @ whiten.T).components_
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


def whiten(start: Checkpoint, data: LabelledImages, indices: np.ndarray, views: int, transform: Transform,
           dim: int, device: torch.device, workers: int = 1) -> Checkpoint:
    """Learn the whitening from the items at `indices` and `views` augmented views of each (views of one item and
    items of one label are the matching pairs); what it was learned from is in the metadata's `whitening`."""
    encoder = start.encoder()
    features, labels = [], []
    for view in range(views + 1):
        data.transform = transform if view else None
        torch.manual_seed(view)
        vectors, view_labels = embed_dataset(encoder, data, indices, device, workers=workers)
        features.append(vectors)
        labels.append(view_labels)
    data.transform = None
    features, labels = np.concatenate(features), np.concatenate(labels)
    pairs = same_label_pairs(labels)
    projection, bias = learn_whitening(features, pairs, dim)
    learned = {"items": len(indices), "views": views, "features": len(features), "pairs": len(pairs), "dim": dim}
    return whitened_checkpoint(start, projection, bias, {"whitening": learned})
