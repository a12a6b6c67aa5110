"""`geosearch train` and `geosearch evaluate`: the training package behind two commands."""

import json
from pathlib import Path

import click
from rich.progress import Progress

from geosearch.cli.main import PROGRESS_COLUMNS, cli, stderr
from geosearch.cli.options import model_options, tiling_from, tiling_options
from geosearch.encoder.default import open_model
from geosearch.encoder.device import DEVICES, resolve_device
from geosearch.errors import GeosearchError
from geosearch.files import read_text


@cli.command()
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="A TOML file of training settings (training/train.py: TrainConfig).")
@click.option("--out", help="The run's folder. [default: the config's]")
@click.option("--seed", type=int, help="Training seed. [default: the config's]")
@click.option("--device", type=click.Choice(DEVICES), help="[default: the config's, else auto]")
def train(config_path: str, out: str | None, seed: int | None, device: str | None) -> None:
    """Fine-tune an encoder with a ranking loss on class folders, on polygons over your scenes, or on places that
    several of your scenes see (kind = "places": no labels needed); write a checkpoint and a JSON and markdown
    report. A run killed at any point resumes from its last finished epoch when started again; a folder holding
    the state of a run with other settings is refused, not trained over."""
    from training.train import TrainConfig
    from training.train import train as run_training

    config = TrainConfig.from_toml(config_path, out=out, seed=seed, device=device)
    with Progress(*PROGRESS_COLUMNS, console=stderr, transient=True) as progress:
        task = progress.add_task(f"{config.loss} steps", total=None)
        result = run_training(config, lambda step, total, loss: progress.update(
            task, completed=step, total=total, description=f"{config.loss} loss {loss:.4f}"))
    r = result.retrieval
    if result.resumed_from:
        click.echo(f"resumed at epoch {result.resumed_from} of {config.epochs} from {Path(config.out) / 'state.pt'}")
    click.echo(f"{config.loss}: mAP {r.map:.4f}, P@5 {r.precision_at[5]:.4f}, P@10 {r.precision_at[10]:.4f} on "
               f"{r.queries} {config.evaluated_split} images; wrote {result.checkpoint}, {result.report_json}, "
               f"{result.report_md}")


@cli.command()
@click.argument("model_spec", metavar="CKPT")
@click.option("--dataset", required=True, type=click.Path(file_okay=False, exists=True),
              help="A folder of class folders.")
@click.option("--split", type=click.Path(dir_okay=False, exists=True),
              help="A run's split.json: evaluate its test images only. [default: every image]")
@click.option("--out", default="evaluation", show_default=True, help="Report path, without extension.")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
def evaluate(model_spec: str, dataset: str, split: str | None, out: str, device: str, batch_size: int) -> None:
    """Every image (or every test image of a split) queries the others: mAP, P@k, R@k, per-class mAP."""
    from training.datasets import ClassFolders
    from training.evaluate import embed_dataset, report
    from training.metrics import evaluate_retrieval

    if not Path(out).parent.is_dir():
        raise GeosearchError(f"--out {out}: folder {Path(out).parent} does not exist")
    checkpoint, torch_device = open_model(model_spec), resolve_device(device)
    data = ClassFolders(dataset)
    indices = None
    if split:
        names = {name: i for i, name in enumerate(data.names)}
        try:
            test = json.loads(read_text(Path(split)))["test"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise GeosearchError(f"{split}: not a split file (a run's split.json, with a 'test' list)") from None
        if missing := [name for name in test if name not in names]:
            raise GeosearchError(f"{split}: {len(missing)} test image(s) are not in {dataset}, e.g. {missing[0]}")
        indices = [names[name] for name in test]
    with Progress(*PROGRESS_COLUMNS, console=stderr, transient=True) as progress:
        task = progress.add_task("embedding", total=len(indices) if indices else len(data))
        vectors, labels = embed_dataset(checkpoint.encoder(), data, indices, torch_device, batch_size,
                                        on_batch=lambda n: progress.advance(task, n))
    result = evaluate_retrieval(vectors, labels)
    details = {"model": checkpoint.model_id, "dataset": dataset, "split": split or "all images"}
    json_path, md_path = report(result, data.classes, f"{checkpoint.model_id} on {Path(dataset).name}", details,
                                Path(out))
    click.echo(f"mAP {result.map:.4f}, P@10 {result.precision_at[10]:.4f} over {result.queries} queries; "
               f"wrote {json_path} and {md_path}")


@cli.command("same-place")
@click.argument("scene_a", type=click.Path(dir_okay=False))
@click.argument("scene_b", type=click.Path(dir_okay=False))
@tiling_options
@model_options
@click.option("--stride-b", type=click.IntRange(min=1),
              help="Cut SCENE_B at this stride (with --grid scene, half a tile finds a well-overlapping twin).")
@click.option("--json", "as_json", is_flag=True, help="Print the rates as JSON.")
def same_place(scene_a: str, scene_b: str, model_spec: str, device: str, batch_size: int, workers: int | None,
               compile_model: bool, stride_b: int | None, as_json: bool, **kwargs) -> None:
    """How well search works on your imagery: every tile of SCENE_A over SCENE_B (two overlapping scenes) queries
    SCENE_B's tiles; the rates at which the tile of the same ground comes first and in the top 10."""
    from training.places import same_place as measure

    options = tiling_from(kwargs)
    result = measure(scene_a, scene_b, open_model(model_spec), options, resolve_device(device), stride_b, batch_size,
                     workers, kwargs["stretch_from"])
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    click.echo(f"same place at rank 1: {result.rank1:.1%}, in the top 10: {result.rank10:.1%} "
               f"({result.queries} tiles of {scene_a} over {scene_b}, {result.gallery} tiles searched; "
               f"--grid {options.grid}, --stretch {options.stretch if isinstance(options.stretch, str) else 'fixed'})")
