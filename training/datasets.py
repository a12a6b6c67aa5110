"""Labelled images for training and evaluation: class folders (UCMD, PatternNet, RSSCN7, AID layouts), tiles of the
user's own scenes labelled by polygons, or places seen in several of the user's scenes, which need no labels; the
scenes are cut with the engine's own tiling."""

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import shapely
import torch
from PIL import Image
from torch.utils.data import Dataset

from geosearch.errors import GeosearchError
from geosearch.grid import GridMode
from geosearch.stretch import Stretch
from geosearch.tiling import TilingOptions, plan_grid, read_tile, read_tiles
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
        if not root.is_dir():
            raise GeosearchError(f"{root}: not a folder (of class folders: root/CLASS/image.jpg)")
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


class SceneTiles(LabelledImages):
    """Labelled tiles of georeferenced scenes, read with the engine's tiling and each scene's stretch as indexing
    measured it, so a model learns from the tiles it will later index."""

    tiling: TilingOptions
    tiles: list[LabelledTile]
    stretches: dict[str, Stretch]

    def _labelled(self, tiles: list[LabelledTile]) -> None:
        self.tiles = tiles
        self.labels = np.array([t.label for t in tiles])
        self.names = [f"{t.scene}:{t.row},{t.col}" for t in tiles]

    def read(self, tile: LabelledTile, shift: tuple[int, int] = (0, 0)) -> np.ndarray:
        with self.tiling.open(tile.scene, stretch=self.stretches[tile.scene]) as scene:
            return read_tile(scene, tile.row + shift[0], tile.col + shift[1], self.tiling.tile_size)[0]

    def pixels(self, index: int) -> np.ndarray:
        return self.read(self.tiles[index])


class PolygonTiles(SceneTiles):
    """Tiles of `scenes` whose footprint lies mostly (≥ `overlap`) inside a polygon of `polygons`, labelled by
    its `class_field`."""

    def __init__(self, polygons: str | Path, scenes: Sequence[str], class_field: str,
                 tiling: TilingOptions | None = None, overlap: float = 0.5, transform: Transform | None = None):
        super().__init__(transform)
        tiling = tiling or TilingOptions()
        frame = read_polygons(polygons, str(polygons))
        if class_field not in frame.columns:
            raise GeosearchError(f"{polygons}: no field {class_field!r} (fields: {', '.join(frame.columns[:-1])})")
        self.classes = sorted(str(c) for c in frame[class_field].unique())
        self.tiling = tiling
        tiles: list[LabelledTile] = []
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
                    tiles.append(LabelledTile(path, int(row), int(col), label))
        if not tiles:
            raise GeosearchError(f"{polygons}: no tile of the scenes lies {overlap:.0%} inside a polygon")
        self._labelled(tiles)


class PlaceTiles(SceneTiles):
    """Places as classes, from scenes with no labels: every place (tiling.py's place id: the same ground on one
    pixel lattice) that two or more of `scenes` see with valid data is a class, and its co-registered tiles are
    its images. Scenes share the archive's stretch per profile, as indexing gives them.

    While a `transform` is set (training), each read is shifted by up to `shift` of a tile in each direction, as
    two archives' tiles of one place rarely start on the same pixel; without one, tiles are read as indexed."""

    def __init__(self, scenes: Sequence[str], tiling: TilingOptions | None = None, shift: float = 0.125,
                 transform: Transform | None = None):
        super().__init__(transform)
        tiling = tiling or TilingOptions()
        if tiling.grid is not GridMode.ALIGNED:
            raise GeosearchError("places need the aligned grid (--grid aligned): only on it does the same "
                                 "ground have one place id in every scene")
        if len(set(scenes)) < 2:
            raise GeosearchError(f"places need two or more scenes that overlap, got {len(set(scenes))}: a place "
                                 "is a class when two scenes (or two dates) see it")
        self.tiling, self.shift, self.stretches = tiling, shift, {}
        seen: dict[str, list[LabelledTile]] = {}
        profiles = tiling.profile_stretches()
        for path in dict.fromkeys(scenes):
            with tiling.open(path, profiles=profiles) as scene:
                grid = plan_grid(scene, tiling)
                self.stretches[path] = scene.stretch
                for tile in read_tiles(scene, grid, tiling.min_valid):
                    if tile.kept and (place := grid.place_ids[tile.index]):
                        row, col = grid.offsets[tile.index]
                        seen.setdefault(place, []).append(LabelledTile(path, int(row), int(col), -1))
        self.classes = sorted(place for place, tiles in seen.items() if len({t.scene for t in tiles}) > 1)
        if not self.classes:
            raise GeosearchError(f"no place is seen with valid data by two of the {len(self.stretches)} scenes: "
                                 "they must overlap on one pixel lattice (one CRS and pixel size; --gsd resamples "
                                 "scenes of one CRS onto one)")
        self._labelled([replace(tile, label=label) for label, place in enumerate(self.classes)
                        for tile in seen[place]])

    def pixels(self, index: int) -> np.ndarray:
        reach = round(self.shift * self.tiling.tile_size) if self.transform else 0
        shift = torch.randint(-reach, reach + 1, (2,)).tolist() if reach else (0, 0)
        return self.read(self.tiles[index], tuple(shift))

    def apart_from(self, other: "PlaceTiles", items: np.ndarray) -> np.ndarray:
        """The items of the places that share no pixel with the tiles of `other` at `items`: cut at another tile
        size, the same scenes keep the ground `other` holds out to evaluate on out of training."""
        size, other_size = self.tiling.tile_size, other.tiling.tile_size
        touching = set()
        for scene in self.stretches:
            held = np.array([(t.row, t.col) for t in (other.tiles[i] for i in items) if t.scene == scene])
            mine = [i for i, t in enumerate(self.tiles) if t.scene == scene]
            if not len(held) or not mine:
                continue
            at = np.array([(self.tiles[i].row, self.tiles[i].col) for i in mine])
            overlap = ((at[:, None, :] < held[None, :, :] + other_size) &
                       (held[None, :, :] < at[:, None, :] + size)).all(axis=2).any(axis=1)
            touching.update(self.labels[np.array(mine)[overlap]])
        return np.flatnonzero(~np.isin(self.labels, list(touching)))


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


def class_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`test_fraction` of the classes (rounded, at least one) with all their items go to the test side: a model is
    measured on classes it never saw, as places of a new scene are."""
    classes = np.random.default_rng(seed).permutation(np.unique(labels))
    test_classes = classes[:max(1, round(len(classes) * test_fraction))]
    test = np.isin(labels, test_classes)
    return np.flatnonzero(~test), np.flatnonzero(test)


def save_split(path: str | Path, train: np.ndarray, test: np.ndarray, names: Sequence[str]) -> None:
    """The split as lists of item names, so a result can be reproduced and checked."""
    Path(path).write_text(json.dumps({"train": [names[i] for i in train], "test": [names[i] for i in test]}, indent=1))
