"""The baselines of the experiments, taken from pytorch-metric-learning rather than written again, beside this
project's own ranking losses. Every loss here maps (unit embeddings, labels) to a scalar."""

from collections.abc import Callable

import torch

from geosearch.errors import GeosearchError
from training.losses import LOSSES

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _pml(name: str, **options) -> LossFn:
    from pytorch_metric_learning import losses, miners

    if name == "contrastive":  # margin 0.5 on unit vectors (spec §6)
        return losses.ContrastiveLoss(pos_margin=0.0, neg_margin=options.get("margin", 0.5))
    if name == "triplet":  # batch-hard mining, margin 0.1
        loss, miner = losses.TripletMarginLoss(margin=options.get("margin", 0.1)), miners.BatchHardMiner()
        return lambda embeddings, labels: loss(embeddings, labels, miner(embeddings, labels))
    if name == "lifted":
        return losses.LiftedStructureLoss(neg_margin=options.get("neg_margin", 1.0), pos_margin=0.0)
    if name == "multi_similarity":
        loss = losses.MultiSimilarityLoss(alpha=options.get("alpha", 2.0), beta=options.get("beta", 50.0),
                                          base=options.get("base", 0.5))
        miner = miners.MultiSimilarityMiner(epsilon=options.get("epsilon", 0.1))
        return lambda embeddings, labels: loss(embeddings, labels, miner(embeddings, labels))
    raise KeyError(name)


BASELINES = ("contrastive", "triplet", "lifted", "multi_similarity")
ALL_LOSSES = (*sorted(LOSSES), *BASELINES)


def make_loss(name: str, **options) -> LossFn:
    """One of ALL_LOSSES, with its options (spec hyperparameters by default)."""
    if name in LOSSES:
        return LOSSES[name](**options)
    if name in BASELINES:
        return _pml(name, **options)
    raise GeosearchError(f"unknown loss {name!r}; choose one of {', '.join(ALL_LOSSES)}")
