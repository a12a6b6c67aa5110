"""Training augmentation on uint8 tensors. `train_transform` is for labelled images (crops, flips, quarter turns,
colour); `archive_views` makes a tile look the way the same ground looks in another scene of an archive."""

import math

import torch
import torch.nn.functional as F
from torch import nn

from geosearch._torchvision import import_torchvision


class RandomRot90(nn.Module):
    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.rot90(image, int(torch.randint(4, ())), dims=(-2, -1))


def _uniform(low: float, high: float, shape: tuple[int, ...] = ()) -> torch.Tensor:
    return low + (high - low) * torch.rand(shape)


def _to_bytes(image: torch.Tensor) -> torch.Tensor:
    return (image.clamp(0, 1) * 255).round().byte()


class BandGain(nn.Module):
    """A gamma for the whole tile, then a gain and an offset per band: another stretch, another calibration or
    another season's light moves every band's values, and each a little differently."""

    def __init__(self, gain: float = 0.2, offset: float = 0.06, gamma: float = 0.3):
        super().__init__()
        self.gain, self.offset, self.gamma = gain, offset, gamma

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        bands = image.shape[-3]
        gamma = math.exp(float(_uniform(-math.log1p(self.gamma), math.log1p(self.gamma))))
        gain = 1 + _uniform(-self.gain, self.gain, (bands, 1, 1))
        offset = _uniform(-self.offset, self.offset, (bands, 1, 1))
        return _to_bytes((image.float() / 255) ** gamma * gain + offset)


class Haze(nn.Module):
    """Thin haze or cloud: the tile blended toward a bright grey by up to `strength`."""

    def __init__(self, strength: float = 0.35):
        super().__init__()
        self.strength = strength

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        amount, level = float(_uniform(0, self.strength)), float(_uniform(0.6, 0.95))
        return _to_bytes((image.float() / 255) * (1 - amount) + level * amount)


class Resample(nn.Module):
    """The same ground seen at a coarser ground sample distance (up to `factor` ×), brought back to the tile's
    size, as an archive resampled to another GSD shows it."""

    def __init__(self, factor: float = 2.5):
        super().__init__()
        self.factor = factor

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        size = image.shape[-2:]
        coarse = [max(1, round(side / float(_uniform(1, self.factor)))) for side in size]
        x = F.interpolate(image[None].float(), size=coarse, mode="bilinear", antialias=True, align_corners=False)
        x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)
        return x[0].round().clamp(0, 255).byte()


def train_transform(size: int, crop_scale: tuple[float, float] = (0.5, 1.0), jitter: float = 0.2) -> nn.Module:
    """A random crop resized to `size`, flips, a quarter turn and colour jitter; the output stays uint8."""
    import_torchvision()
    from torchvision.transforms import v2 as transforms
    return transforms.Compose([
        transforms.RandomResizedCrop(size, scale=crop_scale, antialias=True),
        transforms.RandomHorizontalFlip(),
        transforms.RandomVerticalFlip(),
        RandomRot90(),
        transforms.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter, hue=jitter / 10),
    ])


def archive_views(band_swap: float = 0.0) -> nn.Module:
    """What differs between two scenes of one place (the sub-tile shift is the reader's: training/datasets.py):
    flips and quarter turns, stretch and per-band gain and offset, haze, blur or a coarser GSD, and with
    probability `band_swap` the bands in another order (an archive that mixes RGB and BGR products). The output
    keeps the tile's size and stays uint8."""
    import_torchvision()
    from torchvision.transforms import v2 as transforms
    return transforms.Compose([
        transforms.RandomHorizontalFlip(),
        transforms.RandomVerticalFlip(),
        RandomRot90(),
        BandGain(),
        transforms.RandomApply([Haze()], p=0.3),
        transforms.RandomChoice([transforms.GaussianBlur(5, sigma=(0.1, 1.2)), Resample(), nn.Identity()],
                                p=[0.25, 0.25, 0.5]),
        transforms.RandomApply([transforms.RandomChannelPermutation()], p=band_swap),
    ])
