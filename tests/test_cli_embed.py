"""`geosearch embed` and `geosearch model` as a user runs them."""

import json

import geopandas as gpd
import numpy as np
import pytest
import torch

from conftest import run_geosearch
from geosearch.data import AERIAL_3857, LANDSAT8_224078
from geosearch.encoder.backbones import BACKBONES
from geosearch.encoder.checkpoint import load_checkpoint
from geosearch.encoder.default import default_checkpoint
from geosearch.tiling import TilingOptions, survey


def error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "small.pt"
    result = run_geosearch("model", "init", "--backbone", "resnet18", "--weights", "none", "--dim", "16",
                           "--input-size", "64", "--out", str(path))
    assert result.returncode == 0, result.stderr
    return path


def test_embed_with_the_default_model(tmp_path):
    out = tmp_path / "vectors.parquet"
    result = run_geosearch("embed", str(AERIAL_3857), "--out", str(out))
    assert result.returncode == 0, result.stderr
    model_id, dim = default_checkpoint().model_id, default_checkpoint().config.dim
    assert result.stdout.startswith(f"model {model_id} ({dim}-d) on cpu (")
    # 1024 px from pixel 9 of a 256 px lattice: 3 lattice tiles and a shifted one at each edge, per axis
    assert "1 scene(s): 25 tiles embedded, 0 skipped" in result.stdout
    frame = gpd.read_parquet(out)
    vectors = np.stack(frame["embedding"].to_numpy())
    assert frame["place_id"].notna().sum() == 9
    assert vectors.shape == (25, dim) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert (frame["model_id"] == model_id).all() and frame.crs.to_epsg() == 4326
    assert frame["tile_id"].is_unique


def test_embed_with_a_checkpoint_and_a_bad_scene(tmp_path, small_model):
    out = tmp_path / "vectors.parquet"
    bad = tmp_path / "bad.tif"
    bad.write_text("not a raster")
    result = run_geosearch("embed", str(LANDSAT8_224078), str(bad), "--model", str(small_model), "--tile-size", "128",
                           "--workers", "2", "--out", str(out), "--json")
    assert result.returncode == 1
    assert error_lines(result) == [f"error: {bad}: cannot be opened as a raster: '{bad}' not recognized as being in "
                                   "a supported file format."]
    summary = json.loads(result.stdout)
    assert summary["model_id"] == load_checkpoint(small_model).model_id and summary["scenes"] == 1
    assert summary["tiles_embedded"] + summary["tiles_skipped"] == len(
        survey(str(LANDSAT8_224078), TilingOptions(tile_size=128)).grid)
    assert len(gpd.read_parquet(out)) == summary["tiles_embedded"]


def test_model_info(small_model):
    result = run_geosearch("model", "info", str(small_model), "--json")
    info = json.loads(result.stdout)
    assert info["model_id"] == load_checkpoint(small_model).model_id and info["dim"] == 16
    assert info["initial_weights"]["name"] == "resnet18:random"
    default = run_geosearch("model", "info")
    assert f"model_id: {default_checkpoint().model_id}" in default.stdout and "Apache-2.0" in default.stdout
    listing = run_geosearch("model", "list")
    assert "efficientnet_lite0" in listing.stdout and "geoembed-v3" in listing.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "missing.pt"], "missing.pt: no such checkpoint file"),
        (["--model", "notes.txt"], "not a readable checkpoint"),
        (["--out", "vectors.geojson"], "embeddings are written as GeoParquet; use a .parquet file"),
    ],
)
def test_bad_model_or_output_is_one_line(tmp_path, args, message):
    (tmp_path / "notes.txt").write_text("hello")
    defaults = {"--out": "vectors.parquet"}
    given = dict(zip(args[::2], args[1::2], strict=True))
    argv = [item for key, value in (defaults | given).items() for item in (key, value)]
    result = run_geosearch("embed", str(AERIAL_3857), *argv, cwd=tmp_path)
    assert result.returncode == 1
    lines = error_lines(result)
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], result.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda(tmp_path):
    result = run_geosearch("embed", str(AERIAL_3857), "--device", "cuda", "--out", str(tmp_path / "v.parquet"))
    assert result.returncode == 1
    assert error_lines(result) == [f"Error: --device cuda: CUDA is not available (torch {torch.__version__}, "
                                   "a CPU-only build); use --device cpu or auto"]


def test_model_init_from_weights_that_do_not_fit(tmp_path):
    weights = tmp_path / "vgg.pth"
    torch.save(BACKBONES["vgg16"].build().state_dict(), weights)
    result = run_geosearch("model", "init", "--backbone", "resnet50", "--weights", str(weights),
                           "--out", str(tmp_path / "m.pt"))
    assert result.returncode == 1 and len(error_lines(result)) == 1
    assert "the weights do not fit" in result.stderr and not (tmp_path / "m.pt").exists()


def test_assumed_bands_are_warned_about(shared_scenes, tmp_path):
    result = run_geosearch("embed", str(shared_scenes / "landsat7_etm_6band_olinda_utm25s_28m.tif"), "--tile-size",
                           "128", "--out", str(tmp_path / "v.parquet"))
    assert result.returncode == 0, result.stderr
    assert "bands 1, 2, 3 are taken as red, green, blue (choose others with --bands)" in result.stderr
