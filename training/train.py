"""Fine-tune an encoder with a ranking loss, resumably, and write an engine checkpoint and a report. The data are
class folders, tiles of the user's scenes labelled by polygons, or places seen in several of the user's scenes
(no labels at all). One run = one config (a TOML file for `geosearch train --config`)."""

import hashlib
import json
import math
import os
import tomllib
import types
import typing
from collections.abc import Callable
from dataclasses import MISSING, Field, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from geosearch.encoder.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from geosearch.encoder.device import resolve_device
from geosearch.encoder.model import Encoder
from geosearch.encoder.pretrained import pretrained_encoder
from geosearch.errors import GeosearchError, SceneError
from geosearch.files import read_text
from geosearch.tiling import DEFAULT_TILE_SIZE, MIN_TILE_SIZE, TilingOptions
from training.augment import archive_views, train_transform
from training.baselines import make_loss
from training.datasets import (
    ClassFolders,
    LabelledImages,
    PlaceTiles,
    PolygonTiles,
    Transform,
    class_split,
    save_split,
    stratified_split,
)
from training.evaluate import embed_dataset, report
from training.keep import KeepNeighbours
from training.metrics import DEFAULT_KS, Retrieval, evaluate_retrieval
from training.samplers import PKSampler
from training.whitening import check_shrinkage, whiten

KINDS = ("classes", "polygons", "places")


def _resolved(path: str | None) -> str | None:
    return str(Path(path).resolve()) if path else path


def _default(setting: Field) -> object:
    """The value a config takes when it leaves `setting` out (MISSING for one it must give)."""
    if setting.default is not MISSING:
        return setting.default
    return setting.default_factory() if setting.default_factory is not MISSING else MISSING


def _is_tile_size(size: object) -> bool:
    return isinstance(size, int) and not isinstance(size, bool) and size >= MIN_TILE_SIZE


# Settings that must be at least 1, or at least 0, when given.
_POSITIVE = ("embedding_dim", "input_size", "classes_per_batch", "per_class", "whiten", "whiten_views")
_NON_NEGATIVE = ("epochs", "batches_per_epoch", "lr_backbone", "lr_head", "weight_decay", "warmup_epochs", "workers",
                 "shift", "band_swap", "keep", "keep_temperature")  # a rate of 0 freezes its part
_CHECKED_ON_THEIR_OWN = ("tile_size", "whiten_tile_sizes", "whiten_shrinkage")  # in __post_init__, in their words


def _check_types(config: "TrainConfig") -> None:
    """Each setting of the type its field declares (an int where a float is meant passes), numbers finite, counts
    and rates in range: a TOML typo is one line here, not a traceback or a NaN model after minutes of work."""
    hints = typing.get_type_hints(type(config))
    for setting in fields(config):
        if setting.name in _CHECKED_ON_THEIR_OWN:
            continue
        value = getattr(config, setting.name)
        hint = hints[setting.name]
        members = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)  # X | None
        kinds = tuple(typing.get_origin(kind) or kind for kind in members)  # list[str]: list
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if (bool not in kinds) if isinstance(value, bool) else not isinstance(value, kinds):
            names = " or ".join("nothing" if kind is type(None) else kind.__name__ for kind in kinds)
            raise GeosearchError(f"{setting.name} = {value!r}: give {names}")
        if isinstance(value, float) and not math.isfinite(value):
            raise GeosearchError(f"{setting.name} = {value!r}: give a finite number")
        if value is not None and setting.name in _POSITIVE and value <= 0:
            raise GeosearchError(f"{setting.name} = {value!r}: give a number above 0")
        if value is not None and setting.name in _NON_NEGATIVE and value < 0:
            raise GeosearchError(f"{setting.name} = {value!r}: give 0 or more")


def _check_loss(name: str, options: dict) -> None:
    """The loss made with its options and tried on a small batch: an option of the wrong name, type or value is one
    line before any work, not a failure at the first batch (after state.pt records it)."""
    try:
        loss = make_loss(name, **options)
        value = loss(torch.nn.functional.normalize(torch.randn(8, 4, generator=torch.Generator().manual_seed(0))),
                     torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]))
    except (TypeError, ValueError, RuntimeError) as error:
        raise GeosearchError(f"loss_options {options!r} do not fit loss {name!r} ({error})") from None
    if not torch.isfinite(value):
        raise GeosearchError(f"loss_options {options!r} make loss {name!r} {value.item()} on a small batch")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a run. Learning rates and schedule follow spec §6 by default."""

    out: str  # the run's folder: split, resumable state, checkpoint, report
    dataset: str = ""  # classes: a folder of class folders; polygons: a polygon file (GeoPackage, GeoJSON)
    kind: str = ""  # classes, polygons or places; empty: polygons when `scenes` are given, else classes
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
    scenes: list[str] = field(default_factory=list)  # polygons and places: the scenes whose tiles to learn from
    class_field: str = "class"  # the polygons' label field
    tile_size: int = DEFAULT_TILE_SIZE  # the tiling to learn from: the one the archive is indexed with
    gsd: float | None = None
    nodata: float | None = None  # as `--nodata`: a fill value the scenes do not declare
    shift: float = 0.125  # places: views shifted by up to this share of a tile
    band_swap: float = 0.0  # places: the probability of a view with its bands in another order
    keep: float = 0.0  # weight of the term that keeps the start's ranking of neighbours (training/keep.py)
    keep_temperature: float = 0.1
    whiten: int | None = None  # start from learned whitening to this many dimensions (training/whitening.py)
    whiten_views: int = 2  # augmented views of each training item that the whitening learns from
    whiten_shrinkage: float | None = None  # of the within-place covariance, 0 to 1; None: Ledoit-Wolf chooses
    whiten_tile_sizes: list[int] = field(default_factory=list)  # places: cut at these sizes too for the whitening

    def __post_init__(self) -> None:
        _check_types(self)
        if Path(self.out).exists() and not Path(self.out).is_dir():
            raise GeosearchError(f"out {self.out!r} is a file; give a folder for the run")
        _check_loss(self.loss, self.loss_options)
        if not 0 < self.test_fraction < 1 or not 0 <= self.validation_fraction < 1:
            raise GeosearchError(f"test_fraction must be in (0, 1) and validation_fraction in [0, 1), not "
                                 f"{self.test_fraction} and {self.validation_fraction}")
        if self.kind not in ("", *KINDS):
            raise GeosearchError(f"unknown dataset kind {self.kind!r}; choose one of {', '.join(KINDS)}")
        if self.data_kind != "places" and not self.dataset:
            raise GeosearchError(f"a {self.data_kind} run needs `dataset`")
        if self.data_kind != "classes" and not self.scenes:
            raise GeosearchError(f"a {self.data_kind} run needs `scenes`")
        if not _is_tile_size(self.tile_size):
            raise GeosearchError(f"tile_size {self.tile_size!r}: whole pixels, {MIN_TILE_SIZE} or more")
        # the whitening's settings are checked here, before minutes of embedding, not after
        if self.whiten is None and (self.whiten_tile_sizes or self.whiten_shrinkage is not None):
            raise GeosearchError("whiten_tile_sizes and whiten_shrinkage shape the learned whitening; set `whiten` "
                                 "(its output size) too")
        if self.whiten_tile_sizes and self.data_kind != "places":
            raise GeosearchError("whiten_tile_sizes cuts places at other tile sizes; it needs kind = \"places\"")
        sizes = self.whiten_tile_sizes
        if not isinstance(sizes, list) or not all(map(_is_tile_size, sizes)):
            raise GeosearchError(f"whiten_tile_sizes {sizes!r}: a list of tile sizes, whole pixels, {MIN_TILE_SIZE} "
                                 "or more")
        check_shrinkage(self.whiten_shrinkage)

    @property
    def data_kind(self) -> str:
        return self.kind or ("polygons" if self.scenes else "classes")

    @property
    def evaluated_split(self) -> str:
        """Which images the run is measured on."""
        return "validation" if self.validation_fraction else "test"

    @classmethod
    def from_toml(cls, path: str | Path, **overrides) -> "TrainConfig":
        try:
            data = tomllib.loads(read_text(Path(path)))
        except SceneError as error:  # missing, unreadable, not a regular file, too large
            raise GeosearchError(f"{path}: cannot read the training config: it {error.problem}") from None
        except tomllib.TOMLDecodeError as error:
            raise GeosearchError(f"{path}: cannot read the training config ({error})") from None
        known = {f.name for f in fields(cls)}
        if unknown := sorted(set(data) - known):
            raise GeosearchError(f"{path}: unknown setting(s) {', '.join(unknown)}")
        data |= {key: value for key, value in overrides.items() if value is not None}
        if "out" not in data:
            raise GeosearchError(f"{path}: missing out")
        try:
            return cls(**data)
        except GeosearchError as error:
            raise GeosearchError(f"{path}: {error}") from None

    def settings(self) -> dict:
        """What a run's results depend on: every setting but where it runs, its paths resolved (one file, however
        its path is spelt)."""
        settings = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("device", "workers", "out")}
        return settings | {"dataset": _resolved(self.dataset), "scenes": [_resolved(s) for s in self.scenes],
                           "init": _resolved(self.init)}

    def digest(self) -> str:
        """A short hash of `settings()`, which a cached whitening must match."""
        return hashlib.sha256(json.dumps(self.settings(), sort_keys=True).encode()).hexdigest()[:16]

    def changes_from(self, saved: dict) -> list[str]:
        """How this config differs from another run's `settings()`. A setting added since they were saved differs
        only when set away from its default, so that adding one does not orphan the states saved before it."""
        defaults = {f.name: _default(f) for f in fields(self)}
        return [f"{name} {saved.get(name, defaults[name])!r} → {value!r}" for name, value in self.settings().items()
                if saved.get(name, defaults[name]) != value]


def load_dataset(config: TrainConfig) -> LabelledImages:
    """Class folders, the tiles of the user's scenes labelled by polygons, or places seen in several scenes."""
    tiling = TilingOptions(tile_size=config.tile_size, gsd=config.gsd, nodata=config.nodata)
    if config.data_kind == "places":
        return PlaceTiles(config.scenes, tiling, config.shift)
    if config.data_kind == "polygons":
        return PolygonTiles(config.dataset, config.scenes, config.class_field, tiling)
    return ClassFolders(config.dataset)


def split(config: TrainConfig, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Train and evaluation items. Places are held out whole (a model is measured on ground it never saw); classes
    share their images between the sides. A validation split comes out of the training side."""
    splitter = class_split if config.data_kind == "places" else stratified_split
    train_idx, test_idx = splitter(labels, config.test_fraction, config.split_seed)
    if config.validation_fraction:  # tune without looking at the test split
        train_part, validation_part = splitter(labels[train_idx], config.validation_fraction, config.split_seed)
        train_idx, test_idx = train_idx[train_part], train_idx[validation_part]
    return train_idx, test_idx


def _sampler(config: TrainConfig, labels: np.ndarray, held_out: int) -> PKSampler:
    if config.data_kind == "places" and len(np.unique(labels)) < config.classes_per_batch:
        raise GeosearchError(f"{len(np.unique(labels))} places seen by two or more scenes are left to train on "
                             f"({held_out} held out to evaluate), fewer than a P × K batch's {config.classes_per_batch}"
                             ": lower classes_per_batch or add overlapping scenes")
    return PKSampler(labels, config.classes_per_batch, config.per_class, seed=config.seed)


def _data_name(config: TrainConfig) -> str:
    if config.data_kind == "places":
        return f"places of {len(config.scenes)} scenes ({', '.join(Path(s).name for s in config.scenes[:3])}" + (
            ", …)" if len(config.scenes) > 3 else ")")
    return Path(config.dataset).name


def _initial_encoder(config: TrainConfig) -> tuple[Encoder, dict]:
    if config.init:
        checkpoint = load_checkpoint(config.init)
        return checkpoint.encoder(), {"name": f"checkpoint {checkpoint.model_id}", "from": config.init,
                                      **checkpoint.metadata.get("initial_weights", {})}
    overrides = {"pooling": config.pooling, "embedding_dim": None if config.whiten else config.embedding_dim}
    if config.input_size:
        overrides["input_size"] = config.input_size
    weights = None if config.weights in (None, "none") else config.weights  # TOML has no null
    return pretrained_encoder(config.backbone, weights, **overrides)


def _whitening_sources(config: TrainConfig, dataset: LabelledImages,
                       items: np.ndarray) -> list[tuple[LabelledImages, np.ndarray]]:
    """The training items, and the places cut at each of `whiten_tile_sizes` that share no ground with the
    held-out ones: an archive is indexed at several tile sizes."""
    sources = [(dataset, items)]
    if config.whiten_tile_sizes:
        held_out = np.setdiff1d(np.arange(len(dataset)), items)
        for size in sorted(set(config.whiten_tile_sizes) - {config.tile_size}):
            places = load_dataset(replace(config, tile_size=size))
            if not len(apart := places.apart_from(dataset, held_out)):
                raise GeosearchError(f"every place cut at {size} px touches the held-out ground; leave {size} out "
                                     "of whiten_tile_sizes")
            sources.append((places, apart))
    return sources


def _whitened(config: TrainConfig, start: Encoder, initial_weights: dict, dataset: LabelledImages,
              items: np.ndarray, transform: Transform, device: torch.device, out: Path) -> tuple[Encoder, dict]:
    """The start with learned whitening as its head, learned once per run (kept in the run's folder)."""
    path, digest = out / "whitened.pt", config.digest()
    if not (path.exists() and (checkpoint := load_checkpoint(path)).metadata["whitening"].get("digest") == digest):
        checkpoint = whiten(Checkpoint.of(start, {"initial_weights": initial_weights}),
                            _whitening_sources(config, dataset, items), config.whiten_views, transform,
                            config.whiten, config.whiten_shrinkage, device, config.workers)
        checkpoint.metadata["whitening"] |= {"digest": digest, "tile_sizes": sorted({config.tile_size,
                                                                                      *config.whiten_tile_sizes})}
        save_checkpoint(checkpoint, path)
    learned = {key: value for key, value in checkpoint.metadata["whitening"].items() if key != "digest"}
    return checkpoint.encoder(), {**checkpoint.metadata["initial_weights"], "whitening": learned}


def _schedule(optimizer: torch.optim.Optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up, then cosine decay to zero."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _saved_state(path: Path, config: TrainConfig) -> dict | None:
    """The run folder's saved state, if any; one saved with other settings is refused, before its split is written
    over and minutes of whitening."""
    if not path.exists():
        return None
    state = torch.load(path, map_location="cpu", weights_only=False)
    if "settings" in state:
        changes = config.changes_from(state["settings"])
    else:  # saved before states recorded their settings: only the digest of them all tells
        changes = [] if state["digest"] == config.digest() else ["which ones, the state does not record"]
    if changes:
        raise GeosearchError(f"{path} was saved by a run with other settings ({'; '.join(changes)}); give this run "
                             "another `out`, or remove that file to train from the start")
    return state


def _save_state(path: Path, config: TrainConfig, encoder: Encoder, optimizer: torch.optim.Optimizer,
                scheduler: torch.optim.lr_scheduler.LRScheduler, epoch: int, losses: list[float]) -> None:
    state = {"settings": config.settings(), "encoder": encoder.state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "epoch": epoch, "losses": losses, "rng": torch.get_rng_state()}
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
    resumed_from: int  # the epoch the run's saved state had reached (0: trained from the start)


def train(config: TrainConfig, on_step: Callable[[int, int, float], None] | None = None) -> TrainResult:
    """Train, resuming from the run folder's saved state (refused if saved with other settings); then evaluate on
    the test split. `on_step(step, total, loss)` reports progress."""
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(config.device)
    loss_fn = make_loss(config.loss, **config.loss_options)
    torch.manual_seed(config.seed)
    dataset = load_dataset(config)
    train_idx, test_idx = split(config, dataset.labels)
    sampler = _sampler(config, dataset.labels[train_idx], len(np.unique(dataset.labels[test_idx])))
    state_path = out / "state.pt"
    state = _saved_state(state_path, config)
    save_split(out / "split.json", train_idx, test_idx, dataset.names)

    encoder, initial_weights = _initial_encoder(config)
    transform = (archive_views(config.band_swap) if config.data_kind == "places"
                 else train_transform(encoder.config.input_size))
    if config.whiten:
        encoder, initial_weights = _whitened(config, encoder, initial_weights, dataset, train_idx, transform, device,
                                             out)
    encoder = encoder.to(device).train()
    keep = KeepNeighbours(encoder, config.keep_temperature) if config.keep else None
    head = [p for name, p in encoder.named_parameters() if name.startswith(("pool.", "projection."))]
    trunk = [p for name, p in encoder.named_parameters() if not name.startswith(("pool.", "projection."))]
    optimizer = torch.optim.AdamW([{"params": trunk, "lr": config.lr_backbone},
                                   {"params": head, "lr": config.lr_head}], weight_decay=config.weight_decay)
    per_epoch = min(len(sampler), config.batches_per_epoch or len(sampler))
    total = per_epoch * config.epochs
    scheduler = _schedule(optimizer, round(config.warmup_epochs * per_epoch), total)

    start_epoch, losses = 0, []
    if state is not None:
        encoder.load_state_dict(state["encoder"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, losses = state["epoch"], state["losses"]
        torch.set_rng_state(state["rng"])
    else:  # saved before the first epoch, so that a run with other settings is refused here even when epochs is 0
        _save_state(state_path, config, encoder, optimizer, scheduler, 0, losses)

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
            images = images.to(device, non_blocking=True)
            with autocast:
                embeddings = encoder(images)
            loss = loss_fn(embeddings.float(), labels.to(device))
            if keep:
                with autocast:
                    loss = loss + config.keep * keep(images, embeddings.float())
            if not torch.isfinite(loss):
                raise GeosearchError(f"the loss became {loss.item()} at epoch {epoch + 1}, batch "
                                     f"{len(epoch_losses) + 1}: training diverged; lower lr_backbone and lr_head "
                                     "(the last finished epoch is kept in state.pt)")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            epoch_losses.append(loss.item())
            if on_step:
                on_step(epoch * per_epoch + len(epoch_losses), total, epoch_losses[-1])
        losses.append(float(np.mean(epoch_losses)))
        _save_state(state_path, config, encoder, optimizer, scheduler, epoch + 1, losses)
    dataset.transform = None

    metadata = {"initial_weights": initial_weights,
                "training": {"loss": config.loss, "loss_options": config.loss_options, "epochs": config.epochs,
                             "batches_per_epoch": per_epoch, "batch": f"{config.classes_per_batch} x "
                             f"{config.per_class}", "lr_backbone": config.lr_backbone, "lr_head": config.lr_head,
                             "seed": config.seed, "dataset": _data_name(config), "keep": config.keep,
                             "train_images": len(train_idx), "final_loss": losses[-1] if losses else None}}
    checkpoint = save_checkpoint(Checkpoint.of(encoder.cpu().eval(), metadata, half=config.half), out / "model.pt")
    vectors, labels = embed_dataset(load_checkpoint(checkpoint).encoder(), dataset, test_idx, device,
                                    workers=config.workers)
    retrieval = evaluate_retrieval(vectors, labels, ks=(1, *DEFAULT_KS))
    details = {"model": str(checkpoint), "loss": config.loss, "backbone": config.backbone, "seed": config.seed,
               "epochs": config.epochs, "dataset": _data_name(config),
               "evaluated on": f"{len(test_idx)} {config.evaluated_split} images"}
    json_path, md_path = report(retrieval, dataset.classes, f"{config.loss} on {_data_name(config)}",
                                details, out / "report")
    return TrainResult(checkpoint, retrieval, json_path, md_path, losses, start_epoch)
