"""Evaluate an encoder on a labelled set: embed it (no augmentation), then every item queries the rest (spec §7)."""

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from geosearch.encoder.model import Encoder
from training.datasets import LabelledImages
from training.metrics import Retrieval


def _stack(batch: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Images of one size per batch are the norm; mixed sizes are resized to the first's (the encoder resizes
    everything to its input anyway)."""
    size = batch[0][0].shape[-2:]
    images = [image if image.shape[-2:] == size else
              torch.nn.functional.interpolate(image[None].float(), size=tuple(size), mode="bilinear",
                                              antialias=True)[0].round().clamp(0, 255).byte()
              for image, _ in batch]
    return torch.stack(images), torch.tensor([label for _, label in batch])


def embed_dataset(encoder: Encoder, dataset: LabelledImages, indices: Sequence[int] | None, device: torch.device,
                  batch_size: int = 64, workers: int = 1,
                  on_batch: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Unit embeddings and labels of `indices` (all items by default)."""
    subset = Subset(dataset, list(indices)) if indices is not None else dataset
    loader = DataLoader(subset, batch_size=batch_size, num_workers=workers, collate_fn=_stack)
    encoder = encoder.to(device).eval()
    vectors, labels = [], []
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    with torch.inference_mode(), autocast:
        for images, batch_labels in loader:
            vectors.append(encoder(images.to(device)).float().cpu().numpy())
            labels.append(batch_labels.numpy())
            if on_batch:
                on_batch(len(images))
    return np.concatenate(vectors), np.concatenate(labels)


def report(result: Retrieval, classes: list[str], title: str, details: dict, out: Path) -> tuple[Path, Path]:
    """Write `out`.json (every number) and `out`.md (the table a person reads)."""
    data = {"title": title, **details, **result.to_dict()}
    data["map_per_class"] = {classes[c]: v for c, v in result.map_per_class.items()}
    json_path, md_path = out.with_suffix(".json"), out.with_suffix(".md")
    json_path.write_text(json.dumps(data, indent=2))
    ks = sorted(result.precision_at)
    lines = [f"# {title}", "", *(f"- {key}: {value}" for key, value in details.items()), "",
             "| mAP | mAP (trapezoidal) | " + " | ".join(f"P@{k}" for k in ks) + " |",
             "|---|---|" + "---|" * len(ks),
             f"| {result.map:.4f} | {result.map_trapz:.4f} | " +
             " | ".join(f"{result.precision_at[k]:.4f}" for k in ks) + " |", "",
             "| class | mAP |", "|---|---|",
             *(f"| {name} | {value:.4f} |" for name, value in data["map_per_class"].items())]
    md_path.write_text("\n".join(lines) + "\n")
    return json_path, md_path

