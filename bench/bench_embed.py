"""Encoder-only images per second against end-to-end tiles per second (read, mask, stretch, embed), per backbone.

    python bench/bench_embed.py [--backbones default resnet18 ...] [--side 3072] [--device auto] [--batch-size 32]

The scene is the shipped Landsat 8 224077 crop's uint16 pixels repeated into a side × side tiled GeoTIFF
(DEFLATE), cached in bench/.cache; 256 px tiles. Encoder-only embeds the same tiles, read into memory first, in
the same batches on the same device. Backbones without packaged weights run with random weights: speed does not
depend on the weights.
"""

import argparse
import json
import platform
import time
from datetime import date

import numpy as np
import torch

from bench_tiling import large_geotiff
from geosearch.embed import EmbeddedBatch, PlannedScene, embed_scenes, plan_scene
from geosearch.encoder.backbones import BACKBONES
from geosearch.encoder.default import default_checkpoint
from geosearch.encoder.device import describe_device, resolve_device
from geosearch.encoder.pretrained import WEIGHT_SETS, pretrained_encoder
from geosearch.tiling import TilingOptions, read_tiles


def encoder_for(name: str):
    if name == "default":
        return default_checkpoint().encoder(), default_checkpoint().model_id
    weights = next((ws.split(":")[1] for ws in WEIGHT_SETS if ws.startswith(name + ":") and name not in
                    ("resnet18", "resnet50", "vgg16")), None)
    encoder, initial = pretrained_encoder(name, weights)
    return encoder, initial["name"]


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def encoder_only(encoder, tiles: torch.Tensor, device: torch.device, batch_size: int) -> float:
    encoder = encoder.to(device).eval()
    if device.type == "cuda":
        encoder = encoder.to(memory_format=torch.channels_last)
        tiles = tiles.pin_memory()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    with torch.inference_mode(), autocast:
        start = time.perf_counter()
        for batch in tiles.split(batch_size):
            encoder(batch.to(device, non_blocking=True)).float().cpu()
        synchronise(device)
    return len(tiles) / (time.perf_counter() - start)


def warm_up(encoder, tiles: torch.Tensor, device: torch.device, batch_size: int) -> None:
    """One full batch first, so neither timed run pays for kernel selection or first allocations."""
    encoder = encoder.to(device)
    if device.type == "cuda":
        encoder = encoder.to(memory_format=torch.channels_last)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    with torch.inference_mode(), autocast:
        encoder(tiles[:batch_size].to(device))
    synchronise(device)


def planned_tiles(side: int, tiling: TilingOptions) -> tuple[str, PlannedScene, torch.Tensor]:
    """The side × side scene, its plan, and its kept tiles read into memory (for encoder-only timing)."""
    path = str(large_geotiff(side))
    planned = plan_scene(path, tiling)
    with tiling.open(path, stretch=planned.stretch) as scene:
        tiles = torch.from_numpy(np.stack([t.pixels for t in read_tiles(scene, planned.grid) if t.kept]))
    return path, planned, tiles


def end_to_end(encoder, planned, tiling, device, batch_size, workers) -> tuple[float, int]:
    start = time.perf_counter()
    embedded = sum(len(r.indexes) for r in embed_scenes(encoder, [planned], tiling, device, batch_size, workers)
                   if isinstance(r, EmbeddedBatch))
    return embedded / (time.perf_counter() - start), embedded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbones", nargs="+", default=["default", *BACKBONES])
    parser.add_argument("--side", type=int, default=3072)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args()

    device = resolve_device(args.device)
    tiling = TilingOptions()
    _, planned, tiles = planned_tiles(args.side, tiling)
    for name in args.backbones:
        encoder, label = encoder_for(name)
        warm_up(encoder, tiles, device, args.batch_size)
        e2e, embedded = end_to_end(encoder, planned, tiling, device, args.batch_size, args.workers)
        only = encoder_only(encoder, tiles, device, args.batch_size)
        print(json.dumps({
            "date": date.today().isoformat(), "device": describe_device(device), "machine": platform.machine(),
            "backbone": name, "weights": label, "input_size": encoder.config.input_size,
            "tiles": embedded, "scene": f"{args.side}² uint16", "batch_size": args.batch_size,
            "encoder_only_per_s": round(only, 2), "end_to_end_per_s": round(e2e, 2), "ratio": round(e2e / only, 3),
        }), flush=True)


if __name__ == "__main__":
    main()
