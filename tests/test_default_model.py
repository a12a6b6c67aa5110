"""The models the names stand for: `default`, learned from places of public-domain scenes, with its card; `rsscn7`,
the earlier default fine-tuned on RSSCN7 (research use), with its card; and `pretrained`, their ImageNet start."""

from pathlib import Path

import torch

from geosearch.encoder.checkpoint import Checkpoint
from geosearch.encoder.default import DEFAULT_FILE, default_checkpoint, name_of, open_model
from geosearch.encoder.pretrained import pretrained_encoder
from training.datasets import ClassFolders, stratified_split
from training.evaluate import embed_dataset
from training.metrics import evaluate_retrieval

MODELS = Path(str(DEFAULT_FILE)).parent


def test_the_default_is_learned_from_public_domain_places_and_says_so():
    default = open_model("default")
    assert default is default_checkpoint() and name_of(default.model_id) == "default"
    assert (MODELS / "default.pt").stat().st_size <= 25 * 2**20 and default.info()["storage"] == ["float16"]
    assert default.metadata["training"]["dataset"].startswith("places of 2 scenes (landsat8_224077")
    assert default.metadata["initial_weights"]["licence"] == "Apache-2.0"
    assert "public domain" in default.metadata["data"]["terms"] and "redistribute" in default.metadata["notes"]
    card = (MODELS / "MODEL_CARD.md").read_text()
    assert default.model_id in card and f"{100 * default.metadata['evaluation']['map']:.1f}" in card


def test_rsscn7_is_the_earlier_default_and_says_it_is_for_research_only():
    rsscn7 = open_model("rsscn7")
    assert rsscn7.model_id != default_checkpoint().model_id and name_of(rsscn7.model_id) == "rsscn7"
    assert rsscn7.metadata["training"]["loss"] == "srl" and rsscn7.metadata["training"]["dataset"] == "rsscn7"
    assert "research" in rsscn7.metadata["data"]["terms"] and "research use only" in rsscn7.metadata["notes"]
    card = (MODELS / "MODEL_CARD.rsscn7.md").read_text()
    assert rsscn7.model_id in card and f"{100 * rsscn7.metadata['evaluation']['map']:.2f}" in card


def test_pretrained_names_the_initialisation_built_afresh():
    pretrained = open_model("pretrained")
    encoder, initial = pretrained_encoder("efficientnet_lite0", "imagenet")
    assert Checkpoint.of(encoder, {}).model_id == pretrained.model_id != default_checkpoint().model_id
    assert pretrained.metadata["initial_weights"] == initial and pretrained.metadata["training"] is None


def test_rsscn7_retrieves_unseen_rsscn7_images_better_than_its_start(shared_scenes):
    """Ten test-split images per class (never trained on) query each other."""
    data = ClassFolders(shared_scenes.parent / "rsscn7")
    _, test = stratified_split(data.labels, 0.5, seed=0)
    sample = [i for c in range(len(data.classes)) for i in test[data.labels[test] == c][:10]]
    mean_ap = {}
    for name in ("rsscn7", "pretrained"):
        vectors, labels = embed_dataset(open_model(name).encoder(), data, sample, torch.device("cpu"))
        mean_ap[name] = evaluate_retrieval(vectors, labels).map
    assert mean_ap["rsscn7"] > mean_ap["pretrained"] + 0.1, mean_ap
