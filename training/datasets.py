"""Labelled images for training and evaluation: class folders (UCMD, PatternNet, RSSCN7, AID layouts), or tiles of
the user's own scenes labelled by polygons, cut with the engine's own tiling."""

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import shapely
import torch
from PIL import Image
from torch.utils.data import Dataset

from geosearch.errors import GeosearchError
from geosearch.tiling import TilingOptions, plan_grid, read_tile
from geosearch.vectors import read_polygons

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp"}
Transform = Callable[[torch.Tensor], torch.Tensor]


class LabelledImages(Dataset):
    """(3, H, W) uint8 tensors with integer labels; `transform` (augmentation) applies on read."""

    classes: list[str]
    labels: np.ndarray
    names: list[str]  # one per item, stable across runs: what a split file lists

    def __init__(self, transform: Transform | None = None):
        self.transform = transform

    def pixels(self, index: int) -> np.ndarray:
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        pixels = torch.from_numpy(self.pixels(index))
        return (self.transform(pixels) if self.transform else pixels), int(self.labels[index])


class ClassFolders(LabelledImages):
    """One folder per class under `root`, images inside (UC Merced, PatternNet, RSSCN7, AID)."""

    def __init__(self, root: str | Path, transform: Transform | None = None):
        super().__init__(transform)
        root = Path(root)
        self.classes = sorted(d.name for d in root.iterdir() if d.is_dir())
        self.files = [f for c in self.classes for f in sorted((root / c).iterdir())
                      if f.suffix.lower() in IMAGE_SUFFIXES]
        if not self.files:
            raise GeosearchError(f"{root}: no images in class folders (root/CLASS/image.jpg)")
        self.labels = np.array([self.classes.index(f.parent.name) for f in self.files])
        self.names = [str(f.relative_to(root)) for f in self.files]

    def pixels(self, index: int) -> np.ndarray:
        with Image.open(self.files[index]) as image:
            return np.ascontiguousarray(np.asarray(image.convert("RGB")).transpose(2, 0, 1))


@dataclass(frozen=True)
class LabelledTile:
    scene: str
    row: int
    col: int
    label: int


class PolygonTiles(LabelledImages):
    """Tiles of `scenes` whose footprint lies mostly (≥ `overlap`) inside a polygon of `polygons`, labelled by
    its `class_field`. The tiling is the engine's, so a model learns from the tiles it will later index."""

    def __init__(self, polygons: str | Path, scenes: Sequence[str], class_field: str,
                 tiling: TilingOptions | None = None, overlap: float = 0.5, transform: Transform | None = None):
        super().__init__(transform)
        tiling = tiling or TilingOptions()
        frame = read_polygons(polygons, str(polygons))
        if class_field not in frame.columns:
            raise GeosearchError(f"{polygons}: no field {class_field!r} (fields: {', '.join(frame.columns[:-1])})")
        self.classes = sorted(str(c) for c in frame[class_field].unique())
        self.tiling = tiling
        self.tiles: list[LabelledTile] = []
        self.stretches = {}  # measured once per scene, as indexing does
        tree = shapely.STRtree(frame.geometry.values)
        for path in scenes:
            with tiling.open(path) as scene:
                grid = plan_grid(scene, tiling)
                self.stretches[path] = scene.stretch
                tile_index, polygon_index = tree.query(grid.footprints.wgs84, predicate="intersects")
                share = shapely.area(shapely.intersection(grid.footprints.wgs84[tile_index],
                                                          frame.geometry.values[polygon_index]))
                share = share / shapely.area(grid.footprints.wgs84[tile_index])
                for t, p in zip(tile_index[share >= overlap], polygon_index[share >= overlap], strict=True):
                    row, col = grid.offsets[t]
                    label = self.classes.index(str(frame[class_field].iloc[p]))
                    self.tiles.append(LabelledTile(path, int(row), int(col), label))
        if not self.tiles:
            raise GeosearchError(f"{polygons}: no tile of the scenes lies {overlap:.0%} inside a polygon")
        self.labels = np.array([t.label for t in self.tiles])
        self.names = [f"{t.scene}:{t.row},{t.col}" for t in self.tiles]

    def pixels(self, index: int) -> np.ndarray:
        tile = self.tiles[index]
        with self.tiling.open(tile.scene, stretch=self.stretches[tile.scene]) as scene:
            return read_tile(scene, tile.row, tile.col, self.tiling.tile_size)[0]


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per class, `test_fraction` of its items (rounded) go to the test side; fixed by the seed."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        cut = round(len(members) * test_fraction)
        test.extend(members[:cut])
        train.extend(members[cut:])
    return np.sort(np.array(train, dtype=int)), np.sort(np.array(test, dtype=int))


def save_split(path: str | Path, train: np.ndarray, test: np.ndarray, names: Sequence[str]) -> None:
    """The split as lists of item names, so a result can be reproduced and checked."""
    Path(path).write_text(json.dumps({"train": [names[i] for i in train], "test": [names[i] for i in test]}, indent=1))
