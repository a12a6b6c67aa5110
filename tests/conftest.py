"""Fixtures: the shipped scenes, ../shared/data when present, and real-pixel variants written per test."""

import atexit
import multiprocessing
import os
import runpy
import shutil
import subprocess
import sys
import tempfile
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


# A fork server that has imported the CLI once: each run_geosearch is a fresh process forked from it, so it pays
# the CLI's imports (torch, geopandas: about 6 s on 2 cores) once per session, not once per command.
_FORKS = multiprocessing.get_context("forkserver")
_FORKS.set_forkserver_preload(["geosearch.cli", __name__])


def _geosearch_process(command: list[str], cwd: Path, env: dict, stdout: str, stderr: str) -> None:
    """`python -m geosearch ARGS` (`command` is ["geosearch", *ARGS]) in a forked child: the command's own file
    descriptors 1 and 2 (GDAL's messages included), environment and working directory; the exit status and the exit
    handlers of a real interpreter."""
    for descriptor, path in ((1, stdout), (2, stderr)):
        with open(path, "wb") as file:
            os.dup2(file.fileno(), descriptor)
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    sys.argv = command
    try:
        runpy.run_module("geosearch", run_name="__main__", alter_sys=True)
    finally:
        atexit._run_exitfuncs()


def run_geosearch(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """The real console entry point in a fresh process, as a user runs it. A variable that the interpreter or the
    loader reads as it starts (PYTHONPATH, LD_PRELOAD…) needs a new interpreter, not a fork of the server's."""
    command, env = ["geosearch", *args], os.environ | (env or {})
    if any(name.startswith(("PYTHON", "LD_")) and env[name] != os.environ.get(name) for name in env):
        return subprocess.run([sys.executable, "-m", *command], capture_output=True, text=True, cwd=cwd, env=env,
                              timeout=300)
    with tempfile.TemporaryDirectory() as folder:
        stdout, stderr = Path(folder) / "stdout", Path(folder) / "stderr"
        where = cwd or Path.cwd()  # a subprocess would start where the test is, not where the fork server started
        process = _FORKS.Process(target=_geosearch_process, args=(command, where, env, str(stdout), str(stderr)))
        process.start()
        process.join(timeout=300)
        if process.exitcode is None:
            process.kill()
            process.join()
            raise subprocess.TimeoutExpired(command, 300)
        return subprocess.CompletedProcess(command, process.exitcode, stdout.read_text(), stderr.read_text())


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
