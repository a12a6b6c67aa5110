"""The models `default` and `pretrained` name: the shipped SRL checkpoint with its card, and its initialisation."""

from pathlib import Path

import torch

from geosearch.encoder.checkpoint import Checkpoint
from geosearch.encoder.default import DEFAULT_FILE, default_checkpoint, open_model
from geosearch.encoder.pretrained import pretrained_encoder
from training.datasets import ClassFolders, stratified_split
from training.evaluate import embed_dataset
from training.metrics import evaluate_retrieval


def test_the_shipped_model_is_the_trained_one_with_its_card():
    default = open_model("default")
    assert default is default_checkpoint()
    path = Path(str(DEFAULT_FILE))
    assert path.stat().st_size <= 25 * 2**20 and default.info()["storage"] == ["float16"]
    assert default.metadata["training"]["loss"] == "srl" and default.metadata["training"]["dataset"] == "rsscn7"
    assert default.metadata["initial_weights"]["licence"] == "Apache-2.0"
    assert "research" in default.metadata["data"]["terms"]
    card = (path.parent / "MODEL_CARD.md").read_text()
    assert default.model_id in card and f"{100 * default.metadata['evaluation']['map']:.2f}" in card


def test_pretrained_names_the_initialisation_built_afresh():
    pretrained = open_model("pretrained")
    encoder, initial = pretrained_encoder("efficientnet_lite0", "imagenet")
    assert Checkpoint.of(encoder, {}).model_id == pretrained.model_id != default_checkpoint().model_id
    assert pretrained.metadata["initial_weights"] == initial and pretrained.metadata["training"] is None


def test_the_shipped_model_retrieves_unseen_rsscn7_images_better_than_its_start(shared_scenes):
    """Ten test-split images per class (never trained on) query each other."""
    data = ClassFolders(shared_scenes.parent / "rsscn7")
    _, test = stratified_split(data.labels, 0.5, seed=0)
    sample = [i for c in range(len(data.classes)) for i in test[data.labels[test] == c][:10]]
    mean_ap = {}
    for name in ("default", "pretrained"):
        vectors, labels = embed_dataset(open_model(name).encoder(), data, sample, torch.device("cpu"))
        mean_ap[name] = evaluate_retrieval(vectors, labels).map
    assert mean_ap["default"] > mean_ap["pretrained"] + 0.1, mean_ap
