"""The encoder in ONNX Runtime and in PyTorch: the same vectors on real tiles, the graph cached by model id, and a
broken ONNX Runtime install falling back to PyTorch with one warning line."""

import numpy as np
import pytest
import torch

from conftest import run_geosearch
from geosearch.data import AERIAL_3857, LANDSAT8_224077
from geosearch.embed import embed_scenes, gather, plan_scenes
from geosearch.encoder.default import default_checkpoint, pretrained_checkpoint
from geosearch.encoder.runtime import OPSET, OnnxEncoder, load_encoder, onnx_cache, runtime_of
from geosearch.errors import GeosearchError
from geosearch.tiling import TilingOptions

CPU = torch.device("cpu")


def _vectors(encoder, tiling: TilingOptions) -> np.ndarray:
    planned, failures = plan_scenes([str(AERIAL_3857), str(LANDSAT8_224077)], tiling)
    assert not failures
    done, failed = gather(embed_scenes(encoder, planned, tiling, CPU, batch_size=16, workers=0), planned)
    assert not failed
    return np.concatenate([scene.vectors for scene in done])


@pytest.mark.parametrize("checkpoint", [default_checkpoint, pretrained_checkpoint], ids=["default", "pretrained"])
def test_both_runtimes_give_the_same_vectors_on_real_tiles(checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    checkpoint = checkpoint()
    tiling = TilingOptions(tile_size=128)  # resized to the network's 224 px input, as 256 px tiles are
    onnx = load_encoder(checkpoint, CPU, "onnx")
    assert isinstance(onnx, OnnxEncoder) and runtime_of(onnx) == "onnx"
    torch_vectors, onnx_vectors = _vectors(load_encoder(checkpoint, CPU, "torch"), tiling), _vectors(onnx, tiling)
    assert len(torch_vectors) > 50 and onnx_vectors.shape == torch_vectors.shape
    assert (torch_vectors * onnx_vectors).sum(axis=1).min() >= 0.999
    assert np.allclose(np.linalg.norm(onnx_vectors, axis=1), 1, atol=1e-5)
    cached = onnx_cache() / f"{checkpoint.model_id}-opset{OPSET}.onnx"
    assert cached.is_file() and cached.stat().st_size > 1_000_000
    assert runtime_of(load_encoder(checkpoint, CPU)) == "onnx"  # auto, now from the cache


def test_runtime_choices_that_cannot_work_are_errors():
    checkpoint = default_checkpoint()
    with pytest.raises(GeosearchError, match=r"^--runtime onnx runs on the CPU, without --compile; use --runtime "
                                             r"torch for --compile$"):
        load_encoder(checkpoint, CPU, "onnx", compile=True)
    with pytest.raises(GeosearchError, match=r"^--runtime onnx runs on the CPU, without --compile; use --runtime "
                                             r"torch for --device cuda$"):
        load_encoder(checkpoint, torch.device("cuda"), "onnx")
    assert runtime_of(load_encoder(checkpoint, CPU, "auto", compile=True)) == "torch"  # --compile is PyTorch's


def test_a_broken_onnx_runtime_falls_back_to_pytorch_with_one_warning(tmp_path):
    """An install whose import fails (a wheel for another CPU, a missing library) is met the way users meet it."""
    broken = tmp_path / "site" / "onnxruntime"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text('raise ImportError("libonnxruntime.so.1: cannot open shared object file")\n')
    env = {"PYTHONPATH": str(tmp_path / "site"), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    auto = run_geosearch("embed", str(AERIAL_3857), "-o", str(tmp_path / "auto.parquet"), "-q", env=env)
    assert auto.returncode == 0, auto.stderr
    model_id = default_checkpoint().model_id
    assert [line for line in auto.stderr.splitlines() if line] == [
        f"WARNING: ONNX Runtime cannot run {model_id} (ImportError: libonnxruntime.so.1: cannot open shared object "
        "file); the encoder runs in PyTorch"]
    asked = run_geosearch("embed", str(AERIAL_3857), "-o", str(tmp_path / "onnx.parquet"), "--runtime", "onnx", env=env)
    assert asked.returncode == 1 and [line for line in asked.stderr.splitlines() if line] == [
        f"Error: ONNX Runtime cannot run {model_id} (ImportError: libonnxruntime.so.1: cannot open shared object "
        "file); use --runtime torch"]
    assert not (tmp_path / "onnx.parquet").exists()
