"""Ranking losses for deep metric learning on unit vectors: RLL (the base), SRL, DCL and LRML.

Notation and every formula follow ../shared/spec/losses.md (section numbers below). Distances are Euclidean
between L2-normalised embeddings, d ∈ [0, 2]. Each image of a batch is a query in turn against the rest of the
batch. Pair weights are constants (detached), as in the RLL authors' code: they say how much a pair counts, and
receive no gradient. Where the spec marks a choice as reconstructed or as our default, it is a named option here.
"""

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

EPS = 1e-5  # added to weight sums, as pytorch-metric-learning does (spec §2.3)


@dataclass(frozen=True)
class Pairs:
    """A batch's distances and which pairs are positives and negatives (no pair of an image with itself)."""

    distance: torch.Tensor  # (B, B)
    positive: torch.Tensor  # (B, B) bool
    negative: torch.Tensor  # (B, B) bool
    labels: torch.Tensor  # (B,)

    @classmethod
    def of(cls, embeddings: torch.Tensor, labels: torch.Tensor) -> "Pairs":
        squared = (2 - 2 * embeddings @ embeddings.T).clamp_min(1e-12)  # unit vectors: ‖a − b‖² = 2 − 2 a·b
        same = labels[:, None] == labels[None, :]
        itself = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
        return cls(squared.sqrt(), same & ~itself, ~same, labels)


def _weighted_mean(values: torch.Tensor, weights: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per row: Σ w·v / (Σ w + EPS) over the masked pairs; 0 for a row with none."""
    weights = torch.where(mask, weights, torch.zeros_like(weights))
    return (weights * values).sum(dim=1) / (weights.sum(dim=1) + EPS)


def _negative_term(pairs: Pairs, alpha: float, t_n: float, mask: torch.Tensor,
                   extra_weight: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """L_N(i) over the negatives in `mask`, weighted by exp(T_n (α − d)) (§2.2); also each row's total weight."""
    weights = torch.exp(t_n * (alpha - pairs.distance)).detach()
    if extra_weight is not None:
        weights = weights * extra_weight
    weights = torch.where(mask, weights, torch.zeros_like(weights))
    return _weighted_mean(alpha - pairs.distance, weights, mask), weights.sum(dim=1)


class RankingLoss(nn.Module):
    """A loss that is the mean over the batch's queries of a per-query loss."""

    def per_query(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.per_query(embeddings, labels).mean()


class RankedListLoss(RankingLoss):
    """RLL (Wang et al., CVPR 2019; spec §2). Positives farther than α − m and negatives nearer than α are pulled
    and pushed, each weighted by how far it violates its boundary.

    `global_rescale` reproduces the authors' Caffe layer: each query counts by its share of the batch's total
    weight, rather than equally (spec §2.4)."""

    def __init__(self, alpha: float = 1.2, margin: float = 0.4, t_n: float = 10.0, t_p: float = 0.0,
                 lam: float = 1.0, global_rescale: bool = False):
        super().__init__()
        self.alpha, self.margin, self.t_n, self.t_p, self.lam = alpha, margin, t_n, t_p, lam
        self.global_rescale = global_rescale

    def _terms(self, embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pairs = Pairs.of(embeddings, labels)
        radius = self.alpha - self.margin
        hard_positive = pairs.positive & (pairs.distance > radius)
        hard_negative = pairs.negative & (pairs.distance < self.alpha)
        positive_weights = torch.exp(self.t_p * (pairs.distance - radius)).detach()
        loss_p = _weighted_mean(pairs.distance - radius, positive_weights, hard_positive)
        loss_n, negative_total = _negative_term(pairs, self.alpha, self.t_n, hard_negative)
        totals = torch.where(hard_positive, positive_weights, 0).sum(dim=1) + negative_total
        return loss_p + self.lam * loss_n, totals.detach()

    def per_query(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self._terms(embeddings, labels)[0]

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        per_query, totals = self._terms(embeddings, labels)
        if not self.global_rescale:
            return per_query.mean()
        return (per_query * totals).sum() / (totals.sum() + EPS)


PositiveWeight = Literal["one_plus_ratio", "relative", "ratio", "none"]


def class_positive_weight(pairs: Pairs, radius: float, queries: torch.Tensor, rule: PositiveWeight) -> torch.Tensor:
    """ω per query, from its class's count of easy (d ≤ α − m) and hard positive pairs among the class's queries
    (spec §3.3): 1 + easy/hard by default, easy/hard literally, or 1. "relative" is ours: 1 + easy/hard divided by
    its mean over the queries, so classes are weighted against each other while the positive term as a whole
    keeps RLL's balance with the negative term (1 + easy/hard alone grows with training and swamps it)."""
    if rule == "none":
        return torch.ones(len(pairs.labels), device=pairs.labels.device)
    easy = (pairs.positive & (pairs.distance <= radius) & queries[:, None]).sum(dim=1).float()
    hard = (pairs.positive & (pairs.distance > radius) & queries[:, None]).sum(dim=1).float()
    classes, index = torch.unique(pairs.labels, return_inverse=True)
    easy_c = torch.zeros(len(classes), device=easy.device).index_add_(0, index, easy)
    hard_c = torch.zeros(len(classes), device=hard.device).index_add_(0, index, hard)
    ratio = easy_c / hard_c.clamp_min(1)
    if rule == "ratio":
        return ratio[index]
    omega = (ratio + 1)[index]
    return omega / omega[queries].mean() if rule == "relative" else omega


def _pick_queries(labels: torch.Tensor, per_class: int | None, generator: torch.Generator | None) -> torch.Tensor:
    """I queries per class, chosen at random among the class's images in the batch; all of them when None."""
    chosen = torch.zeros(len(labels), dtype=torch.bool, device=labels.device)
    if per_class is None:
        return ~chosen
    for label in torch.unique(labels):
        members = torch.nonzero(labels == label).flatten()
        order = torch.randperm(len(members), generator=generator, device="cpu").to(labels.device)
        chosen[members[order[:per_class]]] = True
    return chosen


class SimilarityRetentionLoss(RankingLoss):
    """SRL (Zhao, Yuan, Zhao; IJGI 2020; spec §3): RLL's mining, with hard positives weighted per class by the
    ratio of easy to hard positives, so that a class tightening around its hypersphere keeps pulling in its last
    outliers without collapsing (the radius α − m is kept). With `positive_weight="none"` and every image a query,
    it equals RLL with T_p = 0.

    `negative_density` multiplies each negative's weight by its class's share of the query's negatives inside α
    (an unconfirmed reading of "weights from the surrounding distribution", spec §3.3)."""

    def __init__(self, alpha: float = 1.2, margin: float = 0.4, t_n: float = 10.0, lam: float = 1.0,
                 positive_weight: PositiveWeight = "one_plus_ratio", queries_per_class: int | None = None,
                 negative_density: bool = False, generator: torch.Generator | None = None):
        super().__init__()
        self.alpha, self.margin, self.t_n, self.lam = alpha, margin, t_n, lam
        self.positive_weight, self.queries_per_class = positive_weight, queries_per_class
        self.negative_density, self.generator = negative_density, generator

    def per_query(self, embeddings: torch.Tensor, labels: torch.Tensor,
                  queries: torch.Tensor | None = None) -> torch.Tensor:
        """Every image's loss as a query; ω counts the pairs of `queries` only (default: all images)."""
        pairs = Pairs.of(embeddings, labels)
        radius = self.alpha - self.margin
        queries = torch.ones_like(labels, dtype=torch.bool) if queries is None else queries
        hard_positive = pairs.positive & (pairs.distance > radius)
        hard_negative = pairs.negative & (pairs.distance < self.alpha)
        omega = class_positive_weight(pairs, radius, queries, self.positive_weight)
        loss_p = omega * _weighted_mean(pairs.distance - radius, torch.ones_like(pairs.distance), hard_positive)
        density = None
        if self.negative_density:
            same_class = (labels[None, :] == labels[:, None]).float()  # (j, j') share a class
            inside = hard_negative.float()
            density = (inside @ same_class) / inside.sum(dim=1, keepdim=True).clamp_min(1)
        loss_n, _ = _negative_term(pairs, self.alpha, self.t_n, hard_negative, density)
        return loss_p + self.lam * loss_n

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        queries = _pick_queries(labels, self.queries_per_class, self.generator)
        return self.per_query(embeddings, labels, queries)[queries].mean()


class DistributionConsistencyLoss(RankingLoss):
    """DCL (Fan, Zhao, Zhao; Remote Sensing 2020; spec §4). Per query: up to `positives` hardest positives
    (sample-balance term, weighted per class as in SRL), and the nearest image of each of the `negative_classes`
    nearest other classes, ranked, each held beyond its own boundary α + (r − 1)Δ (ranking-consistency term).

    `positive_threshold=False` takes the farthest positives even inside α − m (spec §4.2's option)."""

    def __init__(self, alpha: float = 1.2, margin: float = 0.4, t_n: float = 10.0, lam: float = 1.0,
                 delta: float = 0.0, positives: int = 5, negative_classes: int = 5,
                 positive_weight: PositiveWeight = "one_plus_ratio", positive_threshold: bool = True):
        super().__init__()
        if alpha + (negative_classes - 1) * delta > 2:
            raise ValueError(f"the last boundary α + {negative_classes - 1}Δ exceeds 2, the largest distance")
        self.alpha, self.margin, self.t_n, self.lam, self.delta = alpha, margin, t_n, lam, delta
        self.positives, self.negative_classes = positives, negative_classes
        self.positive_weight, self.positive_threshold = positive_weight, positive_threshold

    def per_query(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        pairs = Pairs.of(embeddings, labels)
        radius = self.alpha - self.margin
        candidates = pairs.positive & (pairs.distance > radius) if self.positive_threshold else pairs.positive
        # The k farthest candidate positives per query.
        far = torch.where(candidates, pairs.distance, torch.full_like(pairs.distance, -1.0))
        top, _ = far.topk(min(self.positives, far.shape[1]), dim=1)
        chosen = top >= 0
        violation = (top - radius).clamp_min(0)
        omega = class_positive_weight(pairs, radius, torch.ones_like(labels, dtype=torch.bool), self.positive_weight)
        loss_sb = omega * (violation * chosen).sum(dim=1) / chosen.sum(dim=1).clamp_min(1)
        # For each other class, its nearest image to the query; then the nearest classes, in order.
        classes, index = torch.unique(labels, return_inverse=True)
        per_class = torch.full((len(labels), len(classes)), float("inf"), dtype=pairs.distance.dtype,
                               device=embeddings.device)
        per_class = per_class.scatter_reduce(1, index.expand(len(labels), -1), pairs.distance, "amin")
        own = index[:, None] == torch.arange(len(classes), device=index.device)[None, :]
        per_class = torch.where(own, float("inf"), per_class)  # not the query's own class
        nearest, _ = per_class.topk(min(self.negative_classes, len(classes) - 1), dim=1, largest=False)
        present = torch.isfinite(nearest)
        nearest = torch.where(present, nearest, torch.zeros_like(nearest))
        boundary = self.alpha + self.delta * torch.arange(nearest.shape[1], dtype=nearest.dtype, device=nearest.device)
        weights = torch.where(present, torch.exp(self.t_n * (boundary - nearest)).detach(), 0)
        loss_rc = (weights * (boundary - nearest).clamp_min(0)).sum(dim=1) / (weights.sum(dim=1) + EPS)
        return loss_sb + self.lam * loss_rc


class LearningToRankMultipleLoss(RankingLoss):
    """LRML (Fan et al., IJGI 2019; spec §5) in tuple mode: per query its hardest positive (the pair term ½d²) and
    its `negatives` nearest negatives, ranked and each held beyond τ + (k − 1)Δ with softmax weights (the ranking
    term). `dsll` scales the ranking term by 1 + H/log(n), H the entropy of the negatives' softmax(−d) (DSLL)."""

    def __init__(self, tau: float = 0.7, delta: float = 0.05, temperature: float = 10.0, lam: float = 1.0,
                 negatives: int = 5, dsll: bool = False):
        super().__init__()
        self.tau, self.delta, self.temperature, self.lam = tau, delta, temperature, lam
        self.negatives, self.dsll = negatives, dsll

    def per_query(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        pairs = Pairs.of(embeddings, labels)
        has_positive = pairs.positive.any(dim=1)
        hardest = torch.where(pairs.positive, pairs.distance, torch.full_like(pairs.distance, -1.0)).amax(dim=1)
        loss_pair = torch.where(has_positive, 0.5 * hardest.clamp_min(0) ** 2, 0)
        far = torch.where(pairs.negative, pairs.distance, torch.full_like(pairs.distance, float("inf")))
        nearest, _ = far.topk(min(self.negatives, far.shape[1]), dim=1, largest=False)
        present = torch.isfinite(nearest)
        nearest = torch.where(present, nearest, torch.zeros_like(nearest))
        boundary = self.tau + self.delta * torch.arange(nearest.shape[1], dtype=nearest.dtype, device=nearest.device)
        logits = torch.where(present, self.temperature * (boundary - nearest), float("-inf")).detach()
        weights = torch.nan_to_num(torch.softmax(logits, dim=1))
        loss_rank = (weights * 0.5 * (boundary - nearest).clamp_min(0) ** 2).sum(dim=1)
        if self.dsll:
            p = torch.nan_to_num(torch.softmax(torch.where(present, -nearest, float("-inf")), dim=1)).detach()
            entropy = -(p * torch.log(p.clamp_min(1e-12))).sum(dim=1)
            loss_rank = loss_rank * (1 + entropy / torch.log(present.sum(dim=1).clamp_min(2).float()))
        return loss_pair + self.lam * loss_rank


LOSSES = {"rll": RankedListLoss, "srl": SimilarityRetentionLoss, "dcl": DistributionConsistencyLoss,
          "lrml": LearningToRankMultipleLoss}
