"""Scenes → tiles → vectors. Worker processes read, mask and stretch tiles (each opening a scene once) and hand
over whole batches of uint8 tiles; the main process moves each batch to the device and embeds it. Per-tile work
stays in the readers; the main process handles batches only."""

import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from geosearch.encoder.model import RGB
from geosearch.encoder.runtime import Embedder
from geosearch.errors import GeosearchError, SceneError
from geosearch.stretch import ProfileStretches, Stretch
from geosearch.tiling import TileGrid, TilingOptions, plan_grid, read_tiles

DEFAULT_BATCH_SIZE = 64


@dataclass(frozen=True)
class PlannedScene:
    """A scene opened once in the main process: its grid and its stretch, which every reader reuses."""

    path: str
    grid: TileGrid
    stretch: Stretch
    summary: dict


def plan_scene(path: str, tiling: TilingOptions, profiles: ProfileStretches | None = None,
               described: dict | None = None) -> PlannedScene:
    """`described`: what a STAC item says of the scene, over what its file says (its acquisition date)."""
    with tiling.open(path, profiles=profiles) as scene:
        return PlannedScene(path, plan_grid(scene, tiling), scene.stretch, scene.summary() | (described or {}))


def plan_scenes(paths: list[str], tiling: TilingOptions, profiles: ProfileStretches | None = None,
                described: dict[str, dict] | None = None) -> tuple[list[PlannedScene], list[SceneError]]:
    """Plan each scene, its stretch from `profiles` (default: the run's own, TilingOptions.profile_stretches), with
    what STAC says of it (`described`, by path); one that cannot be opened is returned as a failure and the others
    go on."""
    profiles = tiling.profile_stretches() if profiles is None else profiles
    planned, failures = [], []
    for path in paths:
        try:
            planned.append(plan_scene(path, tiling, profiles, (described or {}).get(path)))
        except SceneError as error:
            failures.append(error)
    if profiles and profiles.chosen and planned and all(p.summary["profile"] != profiles.chosen for p in planned):
        raise GeosearchError(f"--stretch-from scenes are of profile {profiles.chosen}, which none of the scenes "
                             f"to cut is ({planned[0].summary['profile']}…); give scenes of their own profile")
    return planned, failures


@dataclass(frozen=True)
class EmbeddedBatch:
    scene: int  # index into the planned scenes
    indexes: np.ndarray  # tile indexes into the scene's grid, kept tiles only
    vectors: np.ndarray  # (n, dim) float32, unit length
    valid_fraction: np.ndarray
    read: int  # tiles read for this batch, kept or skipped


@dataclass(frozen=True)
class SceneFailure:
    scene: int
    error: SceneError


class _TileBatches(IterableDataset):
    """Batches of kept tiles. Work is split into chunks of one scene each, dealt round-robin to the workers."""

    def __init__(self, scenes: list[PlannedScene], tiling: TilingOptions, batch_size: int):
        self.scenes, self.tiling, self.batch_size = scenes, tiling, batch_size

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        chunks = [(s, start) for s, planned in enumerate(self.scenes)
                  for start in range(0, len(planned.grid), self.batch_size)]
        failed: set[int] = set()
        scene, current = None, None
        try:
            for s, start in chunks[worker::workers]:
                if s in failed:
                    continue
                planned = self.scenes[s]
                try:
                    if current != s:
                        if scene is not None:
                            scene.close()
                        scene, current = self.tiling.open(planned.path, stretch=planned.stretch), s
                    indexes = range(start, min(start + self.batch_size, len(planned.grid)))
                    tiles = [t for t in read_tiles(scene, planned.grid, self.tiling.min_valid, indexes) if t.kept]
                except SceneError as error:
                    failed.add(s)
                    yield {"scene": s, "error": error}
                    continue
                size = planned.grid.tile_size
                yield {
                    "scene": s,
                    "read": len(indexes),
                    "indexes": np.array([t.index for t in tiles], dtype=np.int64),
                    "valid_fraction": np.array([t.valid_fraction for t in tiles], dtype=np.float32),
                    "pixels": torch.from_numpy(np.stack([t.pixels for t in tiles]) if tiles
                                               else np.empty((0, 3, size, size), dtype=np.uint8)),
                }
        finally:
            if scene is not None:
                scene.close()


def default_workers(device: torch.device) -> int:
    """On CUDA, readers on every core but one; on the CPU one reader, overlapping the encoder on the other cores."""
    cores = len(os.sched_getaffinity(0))
    return max(1, min(8, cores - 1)) if device.type == "cuda" else 1


def embed_scenes(
    encoder: Embedder,
    scenes: list[PlannedScene],
    tiling: TilingOptions,
    device: torch.device,
    batch_size: int = DEFAULT_BATCH_SIZE,
    workers: int | None = None,
    compile: bool = False,
) -> Iterator[EmbeddedBatch | SceneFailure]:
    """Embed every kept tile of the planned scenes. Batches come in reading order; a scene that fails part-way
    yields a SceneFailure, and its batches already yielded must be discarded by the consumer."""
    if tuple(encoder.config.bands) != RGB:
        raise GeosearchError(f"this model expects bands {list(encoder.config.bands)}; geosearch feeds red, green, "
                             "blue (choose them with --bands)")
    encoder = encoder.to(device).eval()
    if device.type == "cuda":
        encoder = encoder.to(memory_format=torch.channels_last)
    model = torch.compile(encoder) if compile else encoder
    workers = default_workers(device) if workers is None else workers
    loader = DataLoader(
        _TileBatches(scenes, tiling, batch_size), batch_size=None, num_workers=workers,
        pin_memory=device.type == "cuda", prefetch_factor=4 if workers else None,
    )
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    with torch.inference_mode(), autocast:
        for batch in loader:
            if "error" in batch:
                yield SceneFailure(batch["scene"], batch["error"])
                continue
            pixels = batch["pixels"]
            vectors = model(pixels.to(device, non_blocking=True)).float().cpu().numpy() if len(pixels) else \
                np.empty((0, encoder.config.dim), dtype=np.float32)
            yield EmbeddedBatch(batch["scene"], batch["indexes"].numpy(), vectors,
                                batch["valid_fraction"].numpy(), batch["read"])


@dataclass
class SceneVectors:
    """Every kept tile of one scene with its vector, in grid order."""

    planned: PlannedScene
    indexes: np.ndarray
    vectors: np.ndarray
    valid_fraction: np.ndarray

    def to_frame(self, model_id: str):
        grid = self.planned.grid
        valid = np.zeros(len(grid))
        valid[self.indexes] = self.valid_fraction
        kept = np.zeros(len(grid), dtype=bool)
        kept[self.indexes] = True
        frame = grid.to_frame(valid, kept)
        frame["model_id"] = model_id
        frame["embedding"] = list(self.vectors)
        return frame


def gather(
    results: Iterator[EmbeddedBatch | SceneFailure], scenes: list[PlannedScene]
) -> tuple[list[SceneVectors], list[SceneError]]:
    """Collect batches per scene; a scene that failed anywhere is dropped whole."""
    parts: dict[int, list[EmbeddedBatch]] = {i: [] for i in range(len(scenes))}
    failures: dict[int, SceneError] = {}
    for result in results:
        if isinstance(result, SceneFailure):
            failures.setdefault(result.scene, result.error)
        else:
            parts[result.scene].append(result)
    done = []
    for i, batches in parts.items():
        if i in failures:
            continue
        indexes = np.concatenate([b.indexes for b in batches]) if batches else np.empty(0, dtype=np.int64)
        order = np.argsort(indexes)
        vectors = np.concatenate([b.vectors for b in batches]) if batches else np.empty((0, 0), dtype=np.float32)
        valid = np.concatenate([b.valid_fraction for b in batches]) if batches else np.empty(0, dtype=np.float32)
        done.append(SceneVectors(scenes[i], indexes[order], vectors[order], valid[order]))
    return done, list(failures.values())
