"""Choosing the device: CUDA when asked for or available, else every CPU core."""

import os

import torch

from geosearch.errors import GeosearchError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> torch.device:
    if name not in DEVICES:
        raise GeosearchError(f"--device {name!r}: choose one of {', '.join(DEVICES)}")
    if name == "cuda" and not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda}, but no GPU seen"
        raise GeosearchError(
            f"--device cuda: CUDA is not available (torch {torch.__version__}, {build}); use --device cpu or auto"
        )
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        torch.set_num_threads(len(os.sched_getaffinity(0)))
        return torch.device("cpu")
    return torch.device("cuda")


def describe_device(device: torch.device) -> str:
    """"cuda (NVIDIA H100 80GB HBM3)" or "cpu (2 threads)": what the user sees the work ran on."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"
