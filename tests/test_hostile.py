"""Hostile files in the surfaces a user reaches from the command line (issue 30): FIFOs and devices where a scene
or a metadata file should be, scenes rewritten under an index run, bad per-band products and STAC items beside good
ones. Each is one line and a non-zero exit; nothing hangs; the good inputs beside a bad one still go through."""

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from conftest import run_geosearch
from geosearch.data import AERIAL_3857, LANDSAT8_224077, LANDSAT8_224078
from geosearch.embed import plan_scene
from geosearch.encoder.default import open_model
from geosearch.index import index_scenes
from geosearch.store import open_backend
from geosearch.store.archive import Archive
from geosearch.tiling import TilingOptions

BOX = ("--bbox", "-54.8315", "-25.2208", "-54.7783", "-25.1723")
TILING = TilingOptions(tile_size=128)


def error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def small_model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("models") / "small.pt"
    result = run_geosearch("model", "init", "--backbone", "resnet18", "--weights", "none", "--dim", "16",
                           "--input-size", "64", "--out", str(path))
    assert result.returncode == 0, result.stderr
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory, small_model) -> Path:
    path = tmp_path_factory.mktemp("hostile") / "store"
    result = run_geosearch("index", str(LANDSAT8_224077), "--store", str(path), "--model", str(small_model),
                           "--tile-size", "128", "-q")
    assert result.returncode == 0, result.stderr
    return path


def test_a_fifo_is_refused_at_once_and_the_store_stays_usable(store, small_model, tmp_path):
    fifo = tmp_path / "scene.tif"
    os.mkfifo(fifo)
    started = time.monotonic()
    searched = run_geosearch("search", "--raster", str(fifo), *BOX, "--store", str(store), "--model",
                             str(small_model))
    indexed = run_geosearch("index", str(fifo), str(LANDSAT8_224078), "--store", str(tmp_path / "new"), "--model",
                            str(small_model), "--tile-size", "128", "-q")
    assert time.monotonic() - started < 120
    for result in (searched, indexed):
        assert result.returncode == 1 and error_lines(result)[-1].endswith(
            f"{fifo}: {fifo} is not a regular file (a FIFO, device or socket), so it is not read"), result.stderr
    assert len(error_lines(searched)) == 1
    assert run_geosearch("stats", "--store", str(store)).returncode == 0  # the lock went with the process
    with open_backend(tmp_path / "new") as backend:  # the good scene beside the FIFO was indexed
        assert [r["status"] for r in Archive.open(backend, "tiles").scenes()] == ["complete"]


def _copy(scene: Path, path: Path) -> Path:
    """An uncompressed copy, which an in-place rewrite keeps the same size (so the same scene id)."""
    with rasterio.open(scene) as source:
        profile = source.profile | {"compress": "none", "tiled": False}
        profile.pop("blockxsize", None)
        profile.pop("blockysize", None)
        with rasterio.open(path, "w", **profile) as out:
            out.write(source.read())
    return path


def _invert(path: Path) -> None:
    with rasterio.open(path, "r+") as dataset:
        dataset.write(np.iinfo(dataset.dtypes[0]).max - dataset.read())


def test_a_scene_rewritten_while_it_is_indexed_keeps_no_tile(small_model, tmp_path):
    """The file rewritten after the first batch: the scene ends failed with no tile served, not complete with half
    its tiles from each version; the next run indexes the new pixels whole."""
    scene = _copy(LANDSAT8_224078, tmp_path / "scene.tif")
    checkpoint = open_model(str(small_model))
    planned = [plan_scene(str(scene), TILING, TILING.profile_stretches())]
    rewrites = []

    def rewrite_once(_: int) -> None:
        if not rewrites:
            time.sleep(0.01)  # a later mtime than the plan's, on any file system's clock
            _invert(scene)
            rewrites.append(True)

    with open_backend(tmp_path / "store") as backend:
        archive = Archive.open(backend, "tiles", checkpoint.model_id, checkpoint.config.dim)
        report = index_scenes(archive, checkpoint, planned, TILING, torch.device("cpu"), batch_size=4, workers=0,
                              on_tiles=rewrite_once)
        assert [error.problem for error in report.failed] == [
            "was rewritten while it was being indexed, so its tiles would mix old and new pixels; none is kept: "
            "index it again"]
        assert archive.tile_count() == archive.tile_count(pending=True) == 0
        assert [record["status"] for record in archive.scenes()] == ["failed"]
    again = run_geosearch("index", str(scene), "--store", str(tmp_path / "store"), "--model", str(small_model),
                          "--tile-size", "128", "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["indexed"] == 1, again.stderr


def test_a_rewritten_or_replaced_file_is_indexed_again(small_model, tmp_path):
    """A complete scene whose file was rewritten in place (same size, same scene id) is not "unchanged"; a path that
    now holds another raster loses the old scene's tiles, which would be served as that file's."""
    scene = _copy(LANDSAT8_224078, tmp_path / "scene.tif")
    args = ("--store", str(tmp_path / "store"), "--model", str(small_model), "--tile-size", "128", "--json")

    def index() -> dict:
        result = run_geosearch("index", str(scene), *args)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    first = index()
    assert first["indexed"] == 1 and index()["unchanged"] == 1
    time.sleep(0.01)
    _invert(scene)
    rewritten = index()
    assert rewritten["indexed"] == 1 and rewritten["rewritten"] == [
        f"{scene} was rewritten since it was indexed; it is indexed again"]
    shutil.copy(AERIAL_3857, scene)  # another raster at the same path
    replaced = index()
    assert replaced["indexed"] == 1 and len(replaced["replaced"]) == 1, replaced
    with open_backend(tmp_path / "store") as backend:
        archive = Archive.open(backend, "tiles")
        (record,) = archive.scenes()
        assert record["crs"] == "EPSG:3857" and archive.tile_count() == record["tiles"]
