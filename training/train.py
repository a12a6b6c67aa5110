"""Fine-tune an encoder with a ranking loss on class folders, resumably, and write an engine checkpoint and a
report. One run = one config (a TOML file for `geosearch train --config`)."""

import hashlib
import json
import math
import os
import tomllib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from geosearch.encoder.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from geosearch.encoder.device import resolve_device
from geosearch.encoder.model import Encoder
from geosearch.encoder.pretrained import pretrained_encoder
from geosearch.errors import GeosearchError
from geosearch.tiling import DEFAULT_TILE_SIZE, TilingOptions
from training.augment import train_transform
from training.baselines import make_loss
from training.datasets import ClassFolders, LabelledImages, PolygonTiles, save_split, stratified_split
from training.evaluate import embed_dataset, report
from training.metrics import Retrieval, evaluate_retrieval
from training.samplers import PKSampler


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a run. Learning rates and schedule follow spec §6 by default."""

    dataset: str  # a folder of class folders, or with `scenes` a polygon file (GeoPackage, GeoJSON)
    out: str  # the run's folder: split, resumable state, checkpoint, report
    backbone: str = "efficientnet_lite0"
    weights: str | None = "imagenet"  # named weights, a state dict file, or None / "none" (random)
    init: str | None = None  # a geosearch checkpoint to start from instead of backbone + weights
    pooling: str = "gem"
    embedding_dim: int | None = 512
    input_size: int | None = None  # None keeps the weights' own
    loss: str = "srl"
    loss_options: dict = field(default_factory=dict)
    classes_per_batch: int = 7
    per_class: int = 8
    epochs: int = 10
    batches_per_epoch: int | None = None  # None: as many as the training split holds
    lr_backbone: float = 1e-5
    lr_head: float = 1e-4
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    test_fraction: float = 0.5
    validation_fraction: float = 0.0  # > 0: evaluate on this share of the training split, never on the test split
    split_seed: int = 0  # the split stays fixed while `seed` varies
    seed: int = 0
    device: str = "auto"
    workers: int = 2
    half: bool = True  # store the checkpoint in float16
    scenes: list[str] = field(default_factory=list)  # train on these scenes' tiles, labelled by `dataset`'s polygons
    class_field: str = "class"  # the polygons' label field
    tile_size: int = DEFAULT_TILE_SIZE  # the tiling to learn from: the one the archive is indexed with
    gsd: float | None = None

    def __post_init__(self) -> None:
        if not 0 < self.test_fraction < 1 or not 0 <= self.validation_fraction < 1:
            raise GeosearchError(f"test_fraction must be in (0, 1) and validation_fraction in [0, 1), not "
                                 f"{self.test_fraction} and {self.validation_fraction}")

    @property
    def evaluated_split(self) -> str:
        """Which images the run is measured on."""
        return "validation" if self.validation_fraction else "test"

    @classmethod
    def from_toml(cls, path: str | Path, **overrides) -> "TrainConfig":
        try:
            data = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as error:
            raise GeosearchError(f"{path}: cannot read the training config ({error})") from None
        known = {f.name for f in fields(cls)}
        if unknown := sorted(set(data) - known):
            raise GeosearchError(f"{path}: unknown setting(s) {', '.join(unknown)}")
        data |= {key: value for key, value in overrides.items() if value is not None}
        if missing := sorted({"dataset", "out"} - set(data)):
            raise GeosearchError(f"{path}: missing {', '.join(missing)}")
        return cls(**data)

    def digest(self) -> str:
        """What a saved state must match to be resumed (everything but where it runs)."""
        relevant = {k: v for k, v in asdict(self).items() if k not in ("device", "workers", "out")}
        return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


def load_dataset(config: TrainConfig) -> LabelledImages:
    """Class folders, or the tiles of the user's scenes labelled by polygons."""
    if config.scenes:
        return PolygonTiles(config.dataset, config.scenes, config.class_field,
                            TilingOptions(tile_size=config.tile_size, gsd=config.gsd))
    return ClassFolders(config.dataset)


def _initial_encoder(config: TrainConfig) -> tuple[Encoder, dict]:
    if config.init:
        checkpoint = load_checkpoint(config.init)
        return checkpoint.encoder(), {"name": f"checkpoint {checkpoint.model_id}", "from": config.init,
                                      **checkpoint.metadata.get("initial_weights", {})}
    overrides = {"pooling": config.pooling, "embedding_dim": config.embedding_dim}
    if config.input_size:
        overrides["input_size"] = config.input_size
    weights = None if config.weights in (None, "none") else config.weights  # TOML has no null
    return pretrained_encoder(config.backbone, weights, **overrides)


def _schedule(optimizer: torch.optim.Optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up, then cosine decay to zero."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _save_state(path: Path, state: dict) -> None:
    tmp = path.with_name(f".{path.name}.partial")
    torch.save(state, tmp)
    os.replace(tmp, path)


@dataclass
class TrainResult:
    checkpoint: Path
    retrieval: Retrieval
    report_json: Path
    report_md: Path
    losses: list[float]  # mean loss per epoch


def train(config: TrainConfig, on_step: Callable[[int, int, float], None] | None = None) -> TrainResult:
    """Train, resuming from the run folder's state when it holds the same config; then evaluate on the test split.
    `on_step(step, total, loss)` reports progress."""
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    dataset = load_dataset(config)
    train_idx, test_idx = stratified_split(dataset.labels, config.test_fraction, config.split_seed)
    if config.validation_fraction:  # tune without looking at the test split
        train_part, validation_part = stratified_split(dataset.labels[train_idx], config.validation_fraction,
                                                       config.split_seed)
        train_idx, test_idx = train_idx[train_part], train_idx[validation_part]
    save_split(out / "split.json", train_idx, test_idx, dataset.names)

    encoder, initial_weights = _initial_encoder(config)
    encoder = encoder.to(device).train()
    loss_fn = make_loss(config.loss, **config.loss_options)
    head = [p for name, p in encoder.named_parameters() if name.startswith(("pool.", "projection."))]
    trunk = [p for name, p in encoder.named_parameters() if not name.startswith(("pool.", "projection."))]
    optimizer = torch.optim.AdamW([{"params": trunk, "lr": config.lr_backbone},
                                   {"params": head, "lr": config.lr_head}], weight_decay=config.weight_decay)
    sampler = PKSampler(dataset.labels[train_idx], config.classes_per_batch, config.per_class, seed=config.seed)
    per_epoch = min(len(sampler), config.batches_per_epoch or len(sampler))
    total = per_epoch * config.epochs
    scheduler = _schedule(optimizer, round(config.warmup_epochs * per_epoch), total)

    state_path, start_epoch, losses = out / "state.pt", 0, []
    if state_path.exists():
        state = torch.load(state_path, map_location=device, weights_only=False)
        if state["digest"] == config.digest():
            encoder.load_state_dict(state["encoder"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            start_epoch, losses = state["epoch"], state["losses"]
            torch.set_rng_state(state["rng"])

    transform = train_transform(encoder.config.input_size)
    dataset.transform = transform
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    for epoch in range(start_epoch, config.epochs):
        sampler.set_epoch(epoch)
        batches = [b for b, _ in zip(sampler, range(per_epoch), strict=False)]
        loader = DataLoader(Subset(dataset, train_idx), batch_sampler=batches, num_workers=config.workers,
                            pin_memory=device.type == "cuda")
        encoder.train()
        epoch_losses = []
        for images, labels in loader:
            with autocast:
                embeddings = encoder(images.to(device, non_blocking=True))
            loss = loss_fn(embeddings.float(), labels.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            epoch_losses.append(loss.item())
            if on_step:
                on_step(epoch * per_epoch + len(epoch_losses), total, epoch_losses[-1])
        losses.append(float(np.mean(epoch_losses)))
        _save_state(state_path, {"digest": config.digest(), "encoder": encoder.state_dict(),
                                 "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                                 "epoch": epoch + 1, "losses": losses, "rng": torch.get_rng_state()})
    dataset.transform = None

    metadata = {"initial_weights": initial_weights,
                "training": {"loss": config.loss, "loss_options": config.loss_options, "epochs": config.epochs,
                             "batches_per_epoch": per_epoch, "batch": f"{config.classes_per_batch} x "
                             f"{config.per_class}", "lr_backbone": config.lr_backbone, "lr_head": config.lr_head,
                             "seed": config.seed, "dataset": Path(config.dataset).name,
                             "train_images": len(train_idx), "final_loss": losses[-1] if losses else None}}
    checkpoint = save_checkpoint(Checkpoint.of(encoder.cpu().eval(), metadata, half=config.half), out / "model.pt")
    vectors, labels = embed_dataset(load_checkpoint(checkpoint).encoder(), dataset, test_idx, device,
                                    workers=config.workers)
    retrieval = evaluate_retrieval(vectors, labels)
    details = {"model": str(checkpoint), "loss": config.loss, "backbone": config.backbone, "seed": config.seed,
               "epochs": config.epochs, "dataset": str(config.dataset),
               "evaluated on": f"{len(test_idx)} {config.evaluated_split} images"}
    json_path, md_path = report(retrieval, dataset.classes, f"{config.loss} on {Path(config.dataset).name}",
                                details, out / "report")
    return TrainResult(checkpoint, retrieval, json_path, md_path, losses)
