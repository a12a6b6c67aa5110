"""Training augmentation on uint8 tensors: crops, flips, 90° rotations (overhead imagery has no "up"), colour."""

import torch
from torch import nn

from geosearch._torchvision import import_torchvision


class RandomRot90(nn.Module):
    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.rot90(image, int(torch.randint(4, ())), dims=(-2, -1))


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
