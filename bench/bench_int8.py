"""Static int8 quantization of the encoder's ONNX graph, calibrated on real tiles, against the fp32 graph.

    cd bench && python bench_int8.py [--models default pretrained] [--calibration 256]

The int8 graph is ONNX Runtime's own static QDQ quantization (per-channel int8 weights, uint8 activations), with
its pre-processing pass, calibrated on --calibration images of the RSSCN7 training split (seed 0), which the test
split does not share. In one run, for the fp32 and the int8 graph of each model, both in ONNX Runtime on the CPU:
encoder-only images per second (the first 256 test images held in memory, batches of 32, after a warm-up batch,
fp32 and int8 alternating over --reps repetitions, median reported), the cosine of each int8 vector to its fp32
vector, and the RSSCN7 test split's mAP and P@10 as bench_quality.py computes them.
"""

import argparse
import json
import platform
import statistics
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch
from bench_quality import rsscn7_split
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quant_pre_process, quantize_static

from geosearch.encoder.default import open_model
from geosearch.encoder.model import Encoder
from geosearch.encoder.runtime import OnnxEncoder, onnx_graph
from training.evaluate import embed_dataset
from training.metrics import evaluate_retrieval

CPU = torch.device("cpu")


class _Batches(CalibrationDataReader):
    def __init__(self, pixels: np.ndarray, size: int = 16):
        self.batches = iter([{"pixels": pixels[i:i + size]} for i in range(0, len(pixels), size)])

    def get_next(self) -> dict | None:
        return next(self.batches, None)


def int8_graph(graph: bytes, encoder: Encoder, images: torch.Tensor) -> bytes:
    """The graph quantized statically, its activation ranges calibrated on `images` (uint8 tiles)."""
    with tempfile.TemporaryDirectory() as folder:
        fp32, prepared, int8 = (Path(folder) / name for name in ("fp32.onnx", "prepared.onnx", "int8.onnx"))
        fp32.write_bytes(graph)
        quant_pre_process(str(fp32), str(prepared))
        with torch.inference_mode():
            pixels = encoder.preprocess(images).numpy()
        quantize_static(str(prepared), str(int8), _Batches(pixels), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        return int8.read_bytes()


def images_per_s(encoder: OnnxEncoder, images: torch.Tensor, batch: int = 32) -> float:
    encoder(images[:batch])
    start = time.perf_counter()
    for i in range(0, len(images), batch):
        encoder(images[i:i + batch])
    return len(images) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["default", "pretrained"])
    parser.add_argument("--calibration", type=int, default=256)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    data, train, test = rsscn7_split()
    calibration = np.random.default_rng(0).permutation(train)[:args.calibration]
    timed = torch.stack([data[i][0] for i in test[:256]])
    for model in args.models:
        checkpoint = open_model(model)
        encoder = checkpoint.encoder().eval()
        graph = onnx_graph(checkpoint, encoder)
        start = time.perf_counter()
        quantized = int8_graph(graph, encoder, torch.stack([data[i][0] for i in calibration]))
        calibrate_s = time.perf_counter() - start
        runtimes = {"fp32": OnnxEncoder(encoder, graph), "int8": OnnxEncoder(encoder, quantized)}
        rates: dict[str, list[float]] = {name: [] for name in runtimes}
        for _ in range(args.reps):
            for name, runtime in runtimes.items():
                rates[name].append(images_per_s(runtime, timed))
        vectors, results = {}, {}
        for name, runtime in runtimes.items():
            vectors[name], labels = embed_dataset(runtime, data, test, CPU)
            results[name] = evaluate_retrieval(vectors[name], labels)
        cosines = np.sum(vectors["fp32"] * vectors["int8"], axis=1)
        row = {"date": date.today().isoformat(), "machine": platform.node(), "model": checkpoint.model_id,
               "calibration_images": len(calibration), "calibrate_s": round(calibrate_s, 1),
               "cosine_min": round(float(cosines.min()), 4), "cosine_median": round(float(np.median(cosines)), 4),
               **{f"{name}_images_per_s": round(statistics.median(rates[name]), 1) for name in runtimes},
               **{f"{name}_map": round(results[name].map, 4) for name in runtimes},
               **{f"{name}_p@10": round(results[name].precision_at[10], 4) for name in runtimes}}
        row["int8_speedup"] = round(row["int8_images_per_s"] / row["fp32_images_per_s"], 2)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
