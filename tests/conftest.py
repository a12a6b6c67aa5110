"""Fixtures: the shipped scenes, ../shared/data when present, and real-pixel variants written per test."""

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import rasterio

from geosearch.store.archive import Archive

REPO = Path(__file__).resolve().parents[1]


def shared_data() -> Path | None:
    path = Path(os.environ.get("GEOSEARCH_DATA", REPO.parent / "shared" / "data"))
    return path if (path / "scenes").is_dir() else None


@pytest.fixture
def shared_scenes() -> Path:
    path = shared_data()
    if path is None:
        pytest.skip("the larger real scenes are not here: put ../shared/data beside the repo or set GEOSEARCH_DATA")
    return path / "scenes"


@pytest.fixture
def derive(tmp_path: Path) -> Callable[..., Path]:
    """Write a variant of a real scene: `derive(src, "name.tif", data=fn(array)->array, **profile_changes)`."""

    def write(src: Path, name: str, data: Callable[[np.ndarray], np.ndarray] | None = None, window=None,
              descriptions=None, colorinterp=None, **changes) -> Path:
        with rasterio.open(src) as dataset:
            pixels = dataset.read(window=window)
            profile = dataset.profile | {"driver": "GTiff", "compress": "deflate", "tiled": True,
                                         "blockxsize": 256, "blockysize": 256}
            if window is not None:
                profile["transform"] = dataset.window_transform(window)
            source_interp, source_descriptions = dataset.colorinterp, dataset.descriptions
        pixels = data(pixels) if data else pixels
        profile.update(count=pixels.shape[0], height=pixels.shape[1], width=pixels.shape[2], dtype=pixels.dtype.name)
        profile.update(changes)
        path = tmp_path / name
        with rasterio.open(path, "w", **profile) as out:
            out.write(pixels)
            if descriptions:
                out.descriptions = descriptions
            elif len(source_descriptions) == pixels.shape[0] and any(source_descriptions):
                out.descriptions = source_descriptions
            if colorinterp:
                out.colorinterp = colorinterp
            elif len(source_interp) == pixels.shape[0]:
                out.colorinterp = source_interp
        return path

    return write


def cut_short(archive: Archive, path: str, tiles: int) -> list[str]:
    """What a run killed while storing a scene leaves: its record "indexing" and some of its tiles stored."""
    (record,) = archive.find_scenes(path)
    ids = [tile_id for tile_id, _ in archive.tiles(record["scene_id"])][:tiles]
    stored = archive.backend.points(archive.collection, ids)
    archive.begin_scene(record)
    archive.add_tiles(ids, np.stack([stored[i][0] for i in ids]), [stored[i][1] for i in ids])
    return ids


def run_geosearch(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """The real console entry point in a fresh process, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "geosearch", *args], capture_output=True, text=True, cwd=cwd,
        env=(os.environ | (env or {})), timeout=300,
    )


@pytest.fixture
def mount_tmpfs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """Mounts small real file systems (tmpfs, e.g. mount_tmpfs("400m")) that a test can fill or make read-only;
    the test is skipped where mounting needs a root it does not have."""
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        point = tmp_path / f"disk{len(mounted)}"
        point.mkdir()
        if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)],
                          capture_output=True).returncode != 0:
            pytest.skip("cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN)")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], check=True)


def fill_disk(disk: Path, leave: int) -> Path:
    """Take all the free space of `disk` but `leave` bytes, in one file."""
    filler = disk / "filler"
    with open(filler, "wb") as handle:
        os.posix_fallocate(handle.fileno(), 0, shutil.disk_usage(disk).free - leave)
    return filler
