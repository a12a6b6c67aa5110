"""`geosearch model list|info|init`."""

import json

import click

from geosearch.cli.main import cli
from geosearch.encoder.backbones import BACKBONES
from geosearch.encoder.checkpoint import Checkpoint, save_checkpoint
from geosearch.encoder.default import open_model
from geosearch.encoder.pooling import POOLINGS
from geosearch.encoder.pretrained import WEIGHT_SETS, pretrained_encoder


@cli.group()
def model() -> None:
    """Encoders: list what is available, inspect a checkpoint, make one from pretrained weights."""


@model.command("info")
@click.argument("checkpoint", default="default")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def model_info(checkpoint: str, as_json: bool) -> None:
    """Print a checkpoint's model id, architecture, input, normalisation, bands and provenance."""
    info = open_model(checkpoint).info()
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    for key, value in info.items():
        click.echo(f"{key:>16}: {json.dumps(value) if isinstance(value, dict | list) else value}")


@model.command("list")
def model_list() -> None:
    """Backbones and the pretrained weights available for them."""
    for name, spec in BACKBONES.items():
        weights = [ws.split(":")[1] for ws in WEIGHT_SETS if ws.startswith(name + ":")]
        available = ", ".join(weights) or "-"
        click.echo(f"{name:<20} {spec.channels:>5} channels  weights: {available}  ({spec.description})")


def _dim(_ctx: click.Context, _param: click.Parameter, value: str | None) -> int | str | None:
    if value is None:
        return "keep"
    if value == "none":
        return None
    if value.isdigit() and int(value) > 0:
        return int(value)
    raise click.BadParameter("give a positive number of dimensions, or 'none' for no projection")


@model.command("init")
@click.option("--backbone", type=click.Choice(list(BACKBONES)), required=True)
@click.option("--weights", help="imagenet, geoembed-v3, a state dict file (torchvision or timm layout), or none.")
@click.option("--pooling", type=click.Choice(POOLINGS), help="[default: that of the weights, else gem]")
@click.option("--dim", callback=_dim, help="Linear projection to this many dimensions, or 'none'. "
                                           "[default: that of the weights]")
@click.option("--input-size", type=click.IntRange(min=32),
              help="Side tiles are resized to. [default: that of the weights]")
@click.option("--half", is_flag=True, help="Store the weights as float16 (half the file size).")
@click.option("-o", "--out", type=click.Path(dir_okay=False), required=True)
def model_init(backbone: str, weights: str | None, pooling: str | None, dim: int | str | None, input_size: int | None,
               half: bool, out: str) -> None:
    """Write a checkpoint from pretrained weights (or random ones), ready for `embed` and for training."""
    overrides = {"pooling": pooling, "input_size": input_size}
    overrides = {key: value for key, value in overrides.items() if value is not None}
    if dim != "keep":
        overrides["embedding_dim"] = dim
    encoder, initial = pretrained_encoder(backbone, None if weights in (None, "none") else weights, **overrides)
    checkpoint = Checkpoint.of(encoder, {"initial_weights": initial, "training": None}, half=half)
    path = save_checkpoint(checkpoint, out)
    click.echo(f"wrote {path}: {checkpoint.model_id} ({checkpoint.config.dim}-d)")
