"""Where the encoder runs: PyTorch (CUDA, training, `--compile`) or ONNX Runtime on the CPU, where `index` runs 2.5
times as fast with the default model (BENCHMARKS.md). Both take the same uint8 tiles and give the same vectors
(cosine ≥ 0.999, tested on real tiles), so the model id, and with it the archive's embedding space, does not depend
on the runtime.

The ONNX graph is exported from the checkpoint on first use and cached by model id; the resizing and
normalisation in front of it stay in PyTorch, shared with the PyTorch path."""

import io
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from geosearch.encoder.checkpoint import Checkpoint
from geosearch.encoder.model import Encoder
from geosearch.errors import GeosearchError

RUNTIMES = ("auto", "torch", "onnx")
OPSET = 17
log = logging.getLogger(__name__)


def onnx_cache() -> Path:
    """$XDG_CACHE_HOME/geosearch/onnx, i.e. ~/.cache/geosearch/onnx by default."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "geosearch" / "onnx"


class _Network(nn.Module):
    """The part of the encoder that ONNX Runtime runs: normalised pixels at the input size in, unit vectors out."""

    def __init__(self, encoder: Encoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.encoder.head(self.encoder.trunk(pixels))


def _export(encoder: Encoder) -> bytes:
    graph = io.BytesIO()
    size = encoder.config.input_size
    with warnings.catch_warnings():  # the TorchScript exporter: the one that exports these networks as they are
        warnings.simplefilter("ignore")
        torch.onnx.export(_Network(encoder).eval(), torch.zeros(1, 3, size, size), graph, opset_version=OPSET,
                          dynamo=False, input_names=["pixels"], output_names=["vectors"],
                          dynamic_axes={"pixels": {0: "batch"}, "vectors": {0: "batch"}})
    return graph.getvalue()


def onnx_graph(checkpoint: Checkpoint, encoder: Encoder) -> bytes:
    """The checkpoint's graph, from the cache or exported now (and cached where the cache can be written)."""
    cached = onnx_cache() / f"{checkpoint.model_id}-opset{OPSET}.onnx"
    if cached.is_file():
        return cached.read_bytes()
    graph = _export(encoder)
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_name(f".{cached.name}.{os.getpid()}.partial")
        partial.write_bytes(graph)
        partial.replace(cached)
    except OSError as error:
        log.warning("%s: cannot cache the ONNX graph (%s); it is exported again next time", cached, error.strerror)
    return graph


class OnnxEncoder(nn.Module):
    """An Encoder's drop-in on the CPU: its own preprocessing, then the graph in ONNX Runtime."""

    def __init__(self, encoder: Encoder, graph: bytes):
        import onnxruntime

        super().__init__()
        self.config = encoder.config
        self.register_buffer("mean", encoder.mean, persistent=False)
        self.register_buffer("std", encoder.std, persistent=False)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = len(os.sched_getaffinity(0)), 1
        options.log_severity_level = 3  # its warnings about unused initialisers are not the user's
        # Threads that spin while they wait for work take the cores from the rest of the process: the server's
        # searches, which are mostly Python, and `index`'s reading.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = onnxruntime.InferenceSession(graph, options, providers=["CPUExecutionProvider"])

    preprocess = Encoder.preprocess

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pixels = self.preprocess(images.cpu()).numpy()
        return torch.from_numpy(self.session.run(None, {"pixels": np.ascontiguousarray(pixels)})[0])


Embedder = Encoder | OnnxEncoder  # what embeds tiles, in either runtime


def runtime_of(encoder: Embedder) -> str:
    """"onnx" or "torch": what a user is told the encoder runs in."""
    return "onnx" if isinstance(encoder, OnnxEncoder) else "torch"


def load_encoder(checkpoint: Checkpoint, device: torch.device, runtime: str = "auto",
                 compile: bool = False) -> Embedder:
    """The checkpoint's encoder in the runtime asked for: `auto` takes ONNX Runtime on the CPU (not with
    `compile`, which is PyTorch's) and falls back to PyTorch, with one warning, where ONNX Runtime is missing or
    broken; `onnx` runs on the CPU only, and its failure is an error."""
    if runtime not in RUNTIMES:
        raise GeosearchError(f"--runtime {runtime!r}: choose one of {', '.join(RUNTIMES)}")
    encoder = checkpoint.encoder()
    if runtime == "onnx" and (device.type != "cpu" or compile):
        raise GeosearchError("--runtime onnx runs on the CPU, without --compile; use --runtime torch for "
                             f"{'--compile' if compile else f'--device {device.type}'}")
    if runtime == "torch" or device.type != "cpu" or compile:
        return encoder
    try:
        return OnnxEncoder(encoder, onnx_graph(checkpoint, encoder))
    except Exception as error:  # ImportError, a broken install's own errors, an export that fails
        reason = (str(error).splitlines() or [""])[0]
        problem = f"ONNX Runtime cannot run {checkpoint.model_id} ({type(error).__name__}: {reason})"
        if runtime == "onnx":
            raise GeosearchError(f"{problem}; use --runtime torch") from None
        log.warning("%s; the encoder runs in PyTorch", problem)
        return encoder
