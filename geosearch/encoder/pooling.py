"""Global pooling of a feature map (B, C, h, w) into one descriptor per image, computed in float32."""

import torch
import torch.nn.functional as F
from torch import nn


class GeM(nn.Module):
    """Generalised mean pooling (Radenović et al.) with a learnable exponent p: p=1 is SPoC, p→∞ is MAC."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6):
        super().__init__()
        self.p = nn.Parameter(torch.tensor([float(p)]))
        self.eps = eps

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        p = self.p.float()
        return features.float().clamp(min=self.eps).pow(p).mean(dim=(-2, -1)).pow(1.0 / p)


class SPoC(nn.Module):
    """Sum-pooled convolutional features (here the mean, the same direction once normalised)."""

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features.float().mean(dim=(-2, -1))


class MAC(nn.Module):
    """Maximum activation of convolutions."""

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features.float().amax(dim=(-2, -1))


class GridPool(nn.Module):
    """Average over a cells × cells grid, flattened: keeps the layout (geoembed's head). C × cells² values."""

    def __init__(self, cells: int = 4):
        super().__init__()
        self.cells = cells

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(features.float(), self.cells).flatten(1)


POOLINGS = ("gem", "spoc", "mac", "grid")


def make_pooling(name: str, gem_p: float, grid: int) -> nn.Module:
    return {"gem": lambda: GeM(gem_p), "spoc": SPoC, "mac": MAC, "grid": lambda: GridPool(grid)}[name]()
