"""The encoder in ONNX Runtime against PyTorch eager on the CPU: encoder-only and `geosearch index` end to end.

    cd bench && python bench_runtime.py [--models default pretrained] [--side 3072] [--reps 3]

The scene is bench_embed.py's: the shipped Landsat 8 224077 crop's pixels repeated into a side × side GeoTIFF,
256 px tiles (144 at 3072²), resized to the network's 224 px input. Encoder-only embeds those tiles, read into
memory first, in batches of 32 after a one-batch warm-up. End to end is `geosearch index SCENE --runtime R --json`
in its own process on a fresh store, timed as the command reports it (tiles stored per second of the run:
planning, reading, embedding, storing). The ONNX graph is exported once per model before any timing (its time is
reported apart); runtimes alternate within each repetition, and the median of the repetitions is reported. The
resizing and normalisation that run in PyTorch in front of the ONNX graph are timed alone once, as a share of the
ONNX Runtime encoder-only time: the most that moving them into the graph could gain.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date

import torch
from bench_embed import encoder_only, planned_tiles, warm_up

from geosearch.encoder.default import open_model
from geosearch.encoder.device import describe_device, resolve_device
from geosearch.encoder.runtime import OPSET, OnnxEncoder, load_encoder, onnx_cache, onnx_graph
from geosearch.tiling import TilingOptions

RUNTIMES = ("torch", "onnx")


def index_rate(scene: str, model: str, runtime: str) -> float:
    with tempfile.TemporaryDirectory() as store:
        result = subprocess.run([sys.executable, "-m", "geosearch", "index", scene, "--store", store, "--model", model,
                                 "--runtime", runtime, "--json"], capture_output=True, text=True, check=True)
    return json.loads(result.stdout)["tiles_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["default", "pretrained"])
    parser.add_argument("--side", type=int, default=3072)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    device = resolve_device("cpu")
    path, _, tiles = planned_tiles(args.side, TilingOptions())
    for model in args.models:
        checkpoint = open_model(model)
        (onnx_cache() / f"{checkpoint.model_id}-opset{OPSET}.onnx").unlink(missing_ok=True)  # time a first use
        start = time.perf_counter()
        onnx_graph(checkpoint, checkpoint.encoder())
        export_s = time.perf_counter() - start
        encoders = {runtime: load_encoder(checkpoint, device, runtime) for runtime in RUNTIMES}
        assert isinstance(encoders["onnx"], OnnxEncoder)
        with torch.inference_mode():
            cosine = float((encoders["torch"](tiles) * encoders["onnx"](tiles)).sum(dim=1).min())
        rates: dict[str, dict[str, list[float]]] = {r: {"encoder_only": [], "index": []} for r in RUNTIMES}
        for _ in range(args.reps):
            for runtime, encoder in encoders.items():
                warm_up(encoder, tiles, device, args.batch_size)
                rates[runtime]["encoder_only"].append(encoder_only(encoder, tiles, device, args.batch_size))
                rates[runtime]["index"].append(index_rate(path, model, runtime))
        with torch.inference_mode():  # the resizing and normalisation in front of the ONNX graph, alone
            start = time.perf_counter()
            for batch in tiles.split(args.batch_size):
                encoders["onnx"].preprocess(batch)
            preprocess_per_s = len(tiles) / (time.perf_counter() - start)
        median = {r: {k: statistics.median(v) for k, v in kinds.items()} for r, kinds in rates.items()}
        print(json.dumps({
            "date": date.today().isoformat(), "device": describe_device(device), "machine": platform.machine(),
            "cores": len(os.sched_getaffinity(0)), "model": model, "model_id": checkpoint.model_id,
            "tiles": len(tiles), "scene": f"{args.side}² uint16", "batch_size": args.batch_size, "reps": args.reps,
            "onnx_export_s": round(export_s, 1), "min_cosine": round(cosine, 7),
            "runs": {r: {k: [round(x, 2) for x in v] for k, v in kinds.items()} for r, kinds in rates.items()},
            **{f"{r}_{k}_per_s": round(v, 2) for r, kinds in median.items() for k, v in kinds.items()},
            "encoder_only_ratio": round(median["onnx"]["encoder_only"] / median["torch"]["encoder_only"], 2),
            "index_ratio": round(median["onnx"]["index"] / median["torch"]["index"], 2),
            "preprocess_per_s": round(preprocess_per_s, 1),
            "preprocess_share_of_onnx": round(median["onnx"]["encoder_only"] / preprocess_per_s, 3),
        }), flush=True)


if __name__ == "__main__":
    main()
