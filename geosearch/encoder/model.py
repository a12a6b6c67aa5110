"""The encoder network: uint8 tiles in, L2-normalised embeddings out, preprocessing included."""

from dataclasses import asdict, dataclass, fields
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from geosearch.encoder.backbones import BACKBONES
from geosearch.encoder.pooling import POOLINGS, make_pooling
from geosearch.errors import GeosearchError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RGB = ("red", "green", "blue")


class LoadReport(NamedTuple):
    missing: list[str]
    unexpected: list[str]


def load_weights(module: nn.Module, state_dict: dict, what: str, new_layers: tuple[str, ...] = ()) -> LoadReport:
    """Load weights that must cover `module`; only layers under `new_layers` may start untrained (a new head)."""
    try:
        report = module.load_state_dict(state_dict, strict=False)
    except RuntimeError as error:  # shapes that do not fit
        first = next((line.strip() for line in str(error).splitlines() if "size mismatch" in line), str(error))
        raise GeosearchError(f"{what}: the weights do not fit ({first})") from None
    missing = [key for key in report.missing_keys
               if not key.endswith("num_batches_tracked") and not key.startswith(new_layers)]
    if missing or report.unexpected_keys:
        raise GeosearchError(
            f"{what}: the weights do not fit ({len(missing)} missing, e.g. {missing[:3]}; "
            f"{len(report.unexpected_keys)} unexpected, e.g. {report.unexpected_keys[:3]})"
        )
    return LoadReport(missing, list(report.unexpected_keys))


@dataclass(frozen=True)
class EncoderConfig:
    """Everything that defines an embedding space except the weights."""

    backbone: str
    pooling: str = "gem"
    gem_p: float = 3.0  # initial exponent of GeM pooling (learnable)
    grid: int = 4  # cells per side of grid pooling
    embedding_dim: int | None = 512  # linear projection after pooling; None keeps the pooled features
    normalize_pooled: bool = False  # unit-length pooled features before the projection (learned whitening's input)
    input_size: int = 224  # tiles are resized to this side before the network
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    bands: tuple[str, ...] = RGB  # what the three input channels must hold, in order

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise GeosearchError(f"unknown backbone {self.backbone!r}; choose one of {', '.join(BACKBONES)}")
        if self.pooling not in POOLINGS:
            raise GeosearchError(f"unknown pooling {self.pooling!r}; choose one of {', '.join(POOLINGS)}")

    @property
    def pooled_dim(self) -> int:
        channels = BACKBONES[self.backbone].channels
        return channels * self.grid**2 if self.pooling == "grid" else channels

    @property
    def dim(self) -> int:
        """Length of the output vectors."""
        return self.embedding_dim or self.pooled_dim

    def to_dict(self) -> dict:
        """Settings added after the first models leave the dict while off, so those models keep their ids."""
        data = asdict(self)
        if not self.normalize_pooled:
            del data["normalize_pooled"]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "EncoderConfig":
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise GeosearchError(f"unknown encoder settings {sorted(unknown)} (made by a newer geosearch?)")
        return cls(**{key: tuple(value) if isinstance(value, list) else value for key, value in data.items()})


class Encoder(nn.Module):
    """trunk → pooling → optional projection → L2 normalisation, with resizing and normalisation in front.

    Takes (B, 3, H, W) uint8 tiles (or floats in [0, 1]) on any device, so tiles travel to the GPU as bytes.
    """

    def __init__(self, config: EncoderConfig, trunk: nn.Module | None = None):
        super().__init__()
        self.config = config
        spec = BACKBONES[config.backbone]
        self.trunk = trunk if trunk is not None else spec.trunk(spec.build())
        self.pool = make_pooling(config.pooling, config.gem_p, config.grid)
        self.projection = nn.Linear(config.pooled_dim, config.embedding_dim) if config.embedding_dim else nn.Identity()
        self.register_buffer("mean", torch.tensor(config.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config.std).view(1, 3, 1, 1), persistent=False)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        size = self.config.input_size
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        return (x - self.mean) / self.std

    def head(self, features: torch.Tensor) -> torch.Tensor:
        """Trunk features (B, C, h, w) → unit embeddings: pooling, projection, L2 normalisation."""
        pooled = self.pool(features)
        if self.config.normalize_pooled:
            pooled = F.normalize(pooled, dim=-1)
        return F.normalize(self.projection(pooled).float(), dim=-1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.preprocess(images)
        if images.is_cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.head(self.trunk(x))
