"""The P×K sampler's batches and the retrieval metrics against rankings worked out by hand."""

import math
from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from geosearch.errors import GeosearchError
from training.metrics import evaluate_retrieval
from training.samplers import PKSampler


def test_pk_batches_hold_p_classes_of_k_distinct_images():
    labels = [c for c, n in enumerate([40, 25, 30, 12, 50, 5]) for _ in range(n)]
    sampler = PKSampler(labels, classes=4, per_class=6, seed=1)
    batches = list(sampler)
    assert len(batches) == len(labels) // 24
    for batch in batches:
        counts = Counter(labels[i] for i in batch)
        assert len(batch) == 24 and len(counts) == 4 and set(counts.values()) == {6}
        big_classes = [i for i in batch if labels[i] != 5]
        assert len(set(big_classes)) == len(big_classes)  # only the 5-image class may repeat an image
    used = Counter(i for batch in batches for i in batch)
    assert max(used.values()) <= 2
    assert list(PKSampler(labels, 4, 6, seed=1)) == batches  # reproducible
    sampler.set_epoch(1)
    assert list(sampler) != batches
    with pytest.raises(GeosearchError, match=r"7 classes per batch, but the data has 6 \(lower classes_per_batch\)"):
        PKSampler(labels, 7, 2)


def on_circle(*degrees: float) -> torch.Tensor:
    angles = torch.tensor(degrees) * math.pi / 180
    return torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)


def test_metrics_of_one_ranking_by_hand():
    """The query at 0° (class 0) ranks the gallery 10°, 20°, 30°, 40° with classes 1, 0, 1, 0: relevant at ranks
    2 and 4. AP = (1/2 + 2/4) / 2 = 0.5. Trapezoidal: ((0 + 1/2) + (1/3 + 2/4)) / 2 / 2 = 1/3."""
    result = evaluate_retrieval(on_circle(0), [0], on_circle(10, 20, 30, 40), [1, 0, 1, 0], ks=(1, 2, 4))
    assert result.map == pytest.approx(0.5)
    assert result.map_trapz == pytest.approx(1 / 3)
    assert result.precision_at == pytest.approx({1: 0.0, 2: 0.5, 4: 0.5})
    assert result.recall_at_hit == pytest.approx({1: 0.0, 2: 1.0, 4: 1.0})
    assert result.recall_at_frac == pytest.approx({1: 0.0, 2: 0.5, 4: 1.0})


def test_metrics_within_one_set_exclude_the_query():
    """Three of class 0 at 0°, 5°, 10° and two of class 1 at 90°, 95°: every query finds its own class first."""
    result = evaluate_retrieval(on_circle(0, 5, 10, 90, 95), [0, 0, 0, 1, 1], ks=(1, 2))
    assert result.map == pytest.approx(1.0) and result.precision_at[1] == pytest.approx(1.0)
    assert result.precision_at[2] == pytest.approx((1 + 1 + 1 + 0.5 + 0.5) / 5)
    assert result.map_per_class == pytest.approx({0: 1.0, 1: 1.0})


def test_chunked_metrics_match_a_plain_computation():
    torch.manual_seed(0)
    x, y = F.normalize(torch.randn(300, 16), dim=1), torch.randint(0, 5, (300,))
    small, big = evaluate_retrieval(x, y, chunk=7), evaluate_retrieval(x, y, chunk=1000)
    assert small.map == pytest.approx(big.map) and small.precision_at == pytest.approx(big.precision_at)
    s = (x @ x.T).numpy()
    aps, traps = [], []
    for i in range(len(x)):
        order = [j for j in np.argsort(-s[i], kind="stable") if j != i]
        rel = (y.numpy()[order] == y.numpy()[i]).astype(float)
        hits, ranks = np.cumsum(rel), np.arange(len(rel))
        aps.append((rel * hits / (ranks + 1)).sum() / rel.sum())
        before = np.where(ranks > 0, (hits - 1) / np.maximum(ranks, 1), 1.0)
        traps.append((rel * (before + hits / (ranks + 1)) / 2).sum() / rel.sum())
    assert small.map == pytest.approx(float(np.mean(aps)), rel=1e-6)
    assert small.map_trapz == pytest.approx(float(np.mean(traps)), rel=1e-6)
    lonely = evaluate_retrieval(on_circle(0), [2], on_circle(10, 20), [0, 1])  # nothing relevant: AP 0
    assert lonely.map == 0 and lonely.map_trapz == 0
