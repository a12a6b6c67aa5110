"""The ranking losses on tiny cases computed by hand, against pytorch-metric-learning's RLL, and the direction in
which each moves the embeddings."""

import math

import pytest
import torch
import torch.nn.functional as F

from training.losses import (
    EPS,
    LOSSES,
    DistributionConsistencyLoss,
    LearningToRankMultipleLoss,
    Pairs,
    RankedListLoss,
    SimilarityRetentionLoss,
    class_positive_weight,
)


def on_circle(*degrees: float) -> torch.Tensor:
    angles = torch.tensor(degrees, dtype=torch.float64) * math.pi / 180
    return torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)


def chord(degrees: float) -> float:
    """Distance between two unit vectors `degrees` apart."""
    return 2 * math.sin(math.radians(degrees) / 2)


def test_rll_by_hand():
    """α = 1.2, m = 0.4: positives count beyond 0.8, negatives inside 1.2.
    0° and 90° share class 0 (d = √2: a hard positive for each). 30° is class 1: 0.518 from 0°, a hard negative
    of 0° (and 0° of it); 1.0 from 90°, a hard negative of 90° (and 90° of it). 30° has no positive."""
    x, y = on_circle(0, 90, 30), torch.tensor([0, 0, 1])
    p = math.sqrt(2) - 0.8
    q0 = p / (1 + EPS) + (1.2 - chord(30)) * math.exp(10 * (1.2 - chord(30))) / (math.exp(10 * (1.2 - chord(30))) + EPS)
    q1 = p / (1 + EPS) + (1.2 - chord(60)) * math.exp(10 * (1.2 - chord(60))) / (math.exp(10 * (1.2 - chord(60))) + EPS)
    w0, w2 = math.exp(10 * (1.2 - chord(30))), math.exp(10 * (1.2 - chord(60)))
    q2 = ((1.2 - chord(30)) * w0 + (1.2 - chord(60)) * w2) / (w0 + w2 + EPS)
    assert RankedListLoss()(x, y).item() == pytest.approx((q0 + q1 + q2) / 3, rel=1e-6)


def test_rll_matches_pytorch_metric_learning():
    """PML writes (1 − λ′)L_P + λ′L_N with λ′ = 0.5: half the paper's L_P + L_N (spec §2.3)."""
    from pytorch_metric_learning.losses import RankedListLoss as PMLRankedListLoss

    torch.manual_seed(0)
    x, y = F.normalize(torch.randn(24, 16, dtype=torch.float64), dim=1), torch.arange(6).repeat_interleave(4)
    ours = RankedListLoss(alpha=1.2, margin=0.4, t_n=10)(x, y)
    theirs = PMLRankedListLoss(margin=0.4, Tn=10, alpha=1.2)(x, y)
    assert ours.item() == pytest.approx(2 * theirs.item(), rel=1e-4)


def test_srl_is_rll_with_positive_weighting_off():
    torch.manual_seed(1)
    x, y = F.normalize(torch.randn(32, 8, dtype=torch.float64), dim=1), torch.arange(4).repeat_interleave(8)
    rll = RankedListLoss(alpha=1.0, margin=0.3)(x, y)
    assert SimilarityRetentionLoss(alpha=1.0, margin=0.3, positive_weight="none")(x, y).item() == \
        pytest.approx(rll.item(), rel=1e-12)
    assert SimilarityRetentionLoss(alpha=1.0, margin=0.3)(x, y).item() > rll.item()  # ω ≥ 1, and some are easy


def test_srl_class_weight_by_hand():
    """Class 0 at 0°, 10°, 100°: from 0° and 10° one positive is easy (0.17 ≤ 0.8) and one hard (the far one);
    from 100° both are hard. So 2 easy, 4 hard: ω = 1 + 2/4, or 2/4 literally. Class 1 has no easy pair: ω = 1.
    Relative: divided by the mean over the queries, (3 × 1.5 + 2 × 1) / 5 = 1.3."""
    x, y = on_circle(0, 10, 100, 200, 300), torch.tensor([0, 0, 0, 1, 1])
    pairs = Pairs.of(x, y)
    everyone = torch.ones(5, dtype=torch.bool)
    assert class_positive_weight(pairs, 0.8, everyone, "one_plus_ratio").tolist() == [1.5, 1.5, 1.5, 1, 1]
    assert class_positive_weight(pairs, 0.8, everyone, "ratio").tolist() == [0.5, 0.5, 0.5, 0, 0]
    assert class_positive_weight(pairs, 0.8, everyone, "none").tolist() == [1] * 5
    relative = class_positive_weight(pairs, 0.8, everyone, "relative")
    assert relative.tolist() == pytest.approx([1.5 / 1.3] * 3 + [1 / 1.3] * 2)


def test_srl_queries_per_class():
    """With I queries per class, only those queries' losses are averaged, and they are drawn per class."""
    torch.manual_seed(2)
    x, y = F.normalize(torch.randn(16, 8, dtype=torch.float64), dim=1), torch.arange(4).repeat_interleave(4)
    generator = torch.Generator().manual_seed(0)
    sampled = SimilarityRetentionLoss(queries_per_class=1, generator=generator)(x, y)
    assert torch.isfinite(sampled) and sampled.item() != SimilarityRetentionLoss()(x, y).item()


def test_dcl_mines_the_nearest_classes_in_order():
    """Query 0° (class 0, with a hard positive at 100°). Class 1 at 20° and 170°, class 2 at 40°, class 3 at 60°:
    the nearest image of each class is 20°, 40°, 60°, ranked in that order; with Δ = 0.1 their boundaries are
    1.2, 1.3, 1.4."""
    x, y = on_circle(0, 100, 20, 170, 40, 60), torch.tensor([0, 0, 1, 1, 2, 3])
    loss = DistributionConsistencyLoss(delta=0.1, negative_classes=3, positive_weight="none")
    d, boundary = [chord(20), chord(40), chord(60)], [1.2, 1.3, 1.4]
    w = [math.exp(10 * (b - di)) for b, di in zip(boundary, d, strict=True)]
    ranking = sum(wi * (b - di) for wi, b, di in zip(w, boundary, d, strict=True)) / (sum(w) + EPS)
    balance = chord(100) - 0.8
    assert loss.per_query(x, y)[0].item() == pytest.approx(balance + ranking, rel=1e-9)
    two_classes = DistributionConsistencyLoss(delta=0.1, negative_classes=2, positive_weight="none")
    ranking2 = sum(wi * (b - di) for wi, b, di in zip(w[:2], boundary, d, strict=False)) / (sum(w[:2]) + EPS)
    assert two_classes.per_query(x, y)[0].item() == pytest.approx(balance + ranking2, rel=1e-9)
    with pytest.raises(ValueError, match="exceeds 2"):
        DistributionConsistencyLoss(alpha=1.8, delta=0.1, negative_classes=6)


def test_lrml_by_hand():
    """Query 0° with its positive at 90° and negatives at 30° (class 1) and 60° (class 2); τ = 0.7, Δ = 0.05."""
    x, y = on_circle(0, 90, 30, 60), torch.tensor([0, 0, 1, 2])
    d_n, boundary = [chord(30), chord(60)], [0.7, 0.75]
    w = torch.softmax(torch.tensor([10 * (b - d) for b, d in zip(boundary, d_n, strict=True)], dtype=torch.float64),
                      dim=0).tolist()
    expected = 0.5 * chord(90) ** 2 + sum(wi * 0.5 * max(b - d, 0) ** 2 for wi, b, d in zip(w, boundary, d_n,
                                                                                              strict=True))
    assert LearningToRankMultipleLoss(negatives=2).per_query(x, y)[0].item() == pytest.approx(expected, rel=1e-9)
    p = torch.softmax(-torch.tensor(d_n, dtype=torch.float64), dim=0)
    entropy = -(p * p.log()).sum().item()
    dsll = LearningToRankMultipleLoss(negatives=2, dsll=True).per_query(x, y)[0].item()
    assert dsll == pytest.approx(0.5 * chord(90) ** 2 + (expected - 0.5 * chord(90) ** 2) *
                                 (1 + entropy / math.log(2)), rel=1e-9)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_a_gradient_step_pulls_positives_in_and_pushes_negatives_out(name):
    """One SGD step on free embeddings: the violating positive pairs get closer, the violating negatives farther,
    and the loss falls."""
    torch.manual_seed(3)
    raw = torch.randn(32, 16, dtype=torch.float64, requires_grad=True)
    labels = torch.arange(4).repeat_interleave(8)
    loss_fn = LOSSES[name]()
    before = Pairs.of(F.normalize(raw, dim=1).detach(), labels)
    hard_pos = before.positive & (before.distance > 0.8)
    hard_neg = before.negative & (before.distance < 1.2)
    loss = loss_fn(F.normalize(raw, dim=1), labels)
    loss.backward()
    with torch.no_grad():
        stepped = raw - 0.5 * raw.grad
    after = Pairs.of(F.normalize(stepped, dim=1), labels)
    assert after.distance[hard_pos].mean() < before.distance[hard_pos].mean()
    assert after.distance[hard_neg].mean() > before.distance[hard_neg].mean()
    assert loss_fn(F.normalize(stepped, dim=1), labels).item() < loss.item()


def test_pair_weights_are_constants():
    """The weights receive no gradient (spec §2.4): the gradient equals that of the weighted sum with the weights
    computed apart and frozen."""
    torch.manual_seed(4)
    x = F.normalize(torch.randn(8, 4, dtype=torch.float64), dim=1).requires_grad_(True)
    y = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    RankedListLoss(t_p=1.0)(x, y).backward()
    grad = x.grad.clone()
    x.grad = None
    pairs = Pairs.of(x, y)
    d = pairs.distance
    hp, hn = pairs.positive & (d > 0.8), pairs.negative & (d < 1.2)
    wp, wn = torch.exp(d - 0.8).detach() * hp, torch.exp(10 * (1.2 - d)).detach() * hn
    manual = ((wp * (d - 0.8)).sum(1) / (wp.sum(1) + EPS) + (wn * (1.2 - d)).sum(1) / (wn.sum(1) + EPS)).mean()
    manual.backward()
    assert torch.allclose(grad, x.grad)
