"""The models a name stands for, each with its card in data/models: `default`, learned from places of public-domain
Landsat scenes (free to redistribute; MODEL_CARD.md); `rsscn7`, the earlier default, fine-tuned with SRL on RSSCN7
(research use only; MODEL_CARD.rsscn7.md); and `pretrained`, the ImageNet initialisation both start from
(Apache-2.0 weights only)."""

from functools import cache
from importlib.resources import files

from geosearch.encoder.checkpoint import Checkpoint, load_checkpoint
from geosearch.encoder.pretrained import pretrained_encoder

MODELS = files("geosearch") / "data" / "models"
DEFAULT_FILE = MODELS / "default.pt"
PRETRAINED_INIT = ("efficientnet_lite0", "imagenet")


@cache
def default_checkpoint() -> Checkpoint:
    return load_checkpoint(str(DEFAULT_FILE))


@cache
def rsscn7_checkpoint() -> Checkpoint:
    return load_checkpoint(str(MODELS / "rsscn7.pt"))


@cache
def pretrained_checkpoint() -> Checkpoint:
    """Built the same way every time, so its model id is stable."""
    encoder, initial_weights = pretrained_encoder(*PRETRAINED_INIT)
    return Checkpoint.of(encoder, {"initial_weights": initial_weights, "training": None,
                                   "notes": "pretrained initialisation, not fine-tuned"})


NAMED = {"default": default_checkpoint, "rsscn7": rsscn7_checkpoint, "pretrained": pretrained_checkpoint}


def open_model(spec: str) -> Checkpoint:
    """`default`, `rsscn7`, `pretrained`, or the path of a checkpoint file."""
    return NAMED[spec]() if spec in NAMED else load_checkpoint(spec)


def name_of(model_id: str) -> str | None:
    """The name that stands for `model_id`, if one does: an archive indexed before the default changed was made
    by what is now `rsscn7` (or, before that, `pretrained`)."""
    return next((name for name, checkpoint in NAMED.items() if checkpoint().model_id == model_id), None)
