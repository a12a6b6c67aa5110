"""Same place across scenes: how often a tile of one scene finds the tile of the same ground in another scene at
rank 1 and in the top 10, with the engine's tiling, stretch and embedding pipeline and training's metrics.

A tile's twin is the tile of the other scene with its place id (aligned grids), or else, on scene grids, the one
whose footprint overlaps it most, if their IoU is at least TWIN_IOU: cut at half-tile stride, the second scene
always has a tile overlapping three quarters of each side (IoU ≥ 0.39), except at its edges. Queries are the kept
tiles of the first scene that have a kept twin; the gallery is every kept tile of the second scene.
"""

from dataclasses import dataclass, replace

import numpy as np
import shapely
import torch

from geosearch.embed import embed_scenes, gather, plan_scene
from geosearch.encoder.checkpoint import Checkpoint
from geosearch.errors import GeosearchError
from geosearch.tiling import TileGrid, TilingOptions
from training.metrics import evaluate_retrieval

TWIN_IOU = 0.35


@dataclass(frozen=True)
class SamePlace:
    queries: int  # tiles of the first scene with a twin in the second
    gallery: int  # kept tiles of the second scene
    rank1: float
    rank10: float

    def to_dict(self) -> dict:
        return {"queries": self.queries, "gallery": self.gallery, "rank1": self.rank1, "rank10": self.rank10}


def twins(a: TileGrid, a_tiles: np.ndarray, b: TileGrid, b_tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For the tiles `a_tiles` of grid a: those with a twin among `b_tiles` of grid b, and the twin's position in
    `b_tiles`."""
    places = {b.place_ids[j]: k for k, j in enumerate(b_tiles) if b.place_ids[j]}
    if places:
        pairs = [(i, places[a.place_ids[j]]) for i, j in enumerate(a_tiles) if a.place_ids[j] in places]
    else:
        native = a.crs == b.crs
        mine = (a.footprints.native if native else a.footprints.wgs84)[a_tiles]
        theirs = (b.footprints.native if native else b.footprints.wgs84)[b_tiles]
        tree, pairs = shapely.STRtree(theirs), []
        for i, footprint in enumerate(mine):
            near = tree.query(footprint)
            if len(near):
                overlap = shapely.area(shapely.intersection(theirs[near], footprint))
                iou = overlap / (shapely.area(theirs[near]) + footprint.area - overlap)
                if iou.max() >= TWIN_IOU:
                    pairs.append((i, int(near[iou.argmax()])))
    found = np.array(pairs, dtype=np.int64).reshape(-1, 2)
    return found[:, 0], found[:, 1]


def same_place(scene_a: str, scene_b: str, checkpoint: Checkpoint, tiling: TilingOptions, device: torch.device,
               stride_b: int | None = None, batch_size: int = 64, workers: int | None = None,
               stretch_from: tuple[str, ...] = ()) -> SamePlace:
    """Every tile of `scene_a` with a twin in `scene_b` queries all of `scene_b`'s tiles. `stride_b` cuts the
    second scene more densely, so that on scene grids a well-overlapping twin exists."""
    profiles = tiling.profile_stretches(stretch_from=stretch_from)  # shared by both scenes, as in one archive
    planned = [plan_scene(scene_a, tiling, profiles),
               plan_scene(scene_b, replace(tiling, stride=stride_b) if stride_b else tiling, profiles)]
    results = embed_scenes(checkpoint.encoder(), planned, tiling, device, batch_size, workers)
    done, failures = gather(results, planned)
    if failures:
        raise failures[0]
    a, b = done
    queries, labels = twins(a.planned.grid, a.indexes, b.planned.grid, b.indexes)
    if not len(queries):
        raise GeosearchError(f"{scene_a} and {scene_b} have no tile of the same ground with valid data in both; "
                             "are they overlapping scenes?")
    result = evaluate_retrieval(a.vectors[queries], labels, b.vectors, np.arange(len(b.indexes)), ks=(1, 10))
    return SamePlace(queries=len(queries), gallery=len(b.indexes), rank1=result.recall_at_hit[1],
                     rank10=result.recall_at_hit[10])
