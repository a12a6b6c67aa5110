"""The default model. Until a trained one ships, it is the pretrained initialisation that retrieves best on
RSSCN7 (bench/pretrained_rsscn7.py; BENCHMARKS.md), built the same way every time, so its model id is stable."""

from functools import cache

from geosearch.encoder.checkpoint import Checkpoint, load_checkpoint
from geosearch.encoder.pretrained import pretrained_encoder

DEFAULT_INIT = ("efficientnet_lite0", "imagenet")


@cache
def default_checkpoint() -> Checkpoint:
    encoder, initial_weights = pretrained_encoder(*DEFAULT_INIT)
    return Checkpoint.of(encoder, {"initial_weights": initial_weights, "training": None,
                                   "notes": "pretrained initialisation, not fine-tuned (geosearch's default)"})


def open_model(spec: str) -> Checkpoint:
    """`default`, or the path of a checkpoint file."""
    return default_checkpoint() if spec == "default" else load_checkpoint(spec)
