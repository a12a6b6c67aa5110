"""The RSSCN7 experiment (issue 6): a fixed 50/50 stratified split; first the pretrained initialisations without
fine-tuning, then the best one fine-tuned with each loss, same budget, several seeds. Each test image queries
the rest of the test set. Results land in OUT/results.jsonl (one line per run) and a markdown table.

    python -m training.experiment pretrained --dataset ../shared/data/rsscn7 --out runs/rsscn7
    python -m training.experiment finetune --dataset ../shared/data/rsscn7 --out runs/rsscn7 \\
        --backbone efficientnet_lite0 --losses srl rll dcl lrml contrastive triplet lifted multi_similarity \\
        --seeds 0 1 2 --epochs 3
    python -m training.experiment table --out runs/rsscn7
    python -m training.experiment ship --out runs/rsscn7 --loss srl
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from geosearch.encoder.pretrained import pretrained_encoder
from geosearch.errors import GeosearchError
from training.baselines import ALL_LOSSES
from training.datasets import ClassFolders, stratified_split
from training.evaluate import embed_dataset
from training.metrics import evaluate_retrieval
from training.results import COLUMNS, append_row, mean_std, read_rows
from training.ship import ship
from training.train import TrainConfig, train

PRETRAINED = (("efficientnet_lite0", "imagenet"), ("efficientnet_lite2", "imagenet"),
              ("resnet18_aerial", "geoembed-v3"))


def _record(out: Path, row: dict) -> None:
    append_row(out, row)
    print(json.dumps({k: row[k] for k in ("stage", "model", "loss", "seed", "map", "p@10", "seconds") if k in row}),
          flush=True)


def pretrained(dataset_root: str, out: Path, workers: int) -> None:
    data = ClassFolders(dataset_root)
    _, test = stratified_split(data.labels, 0.5, seed=0)
    for backbone, weights in PRETRAINED:
        start = time.perf_counter()
        encoder, _ = pretrained_encoder(backbone, weights)
        vectors, labels = embed_dataset(encoder, data, test, torch.device("cpu"), workers=workers)
        result = evaluate_retrieval(vectors, labels).to_dict()
        _record(out, {"stage": "pretrained", "model": f"{backbone}:{weights}", "loss": "none", "seed": None,
                      **result, "seconds": round(time.perf_counter() - start, 1)})


def _variant(loss: str, options: dict) -> str:
    """A loss with its non-default options, e.g. `srl[positive_weight=ratio]`."""
    return loss + ("[" + ",".join(f"{k}={v}" for k, v in sorted(options.items())) + "]" if options else "")


def finetune(dataset_root: str, out: Path, backbone: str, weights: str, losses: list[str], seeds: list[int],
             epochs: int, workers: int, device: str, loss_options: dict | None = None, **settings) -> None:
    """Seed by seed, every loss; runs already in the results are skipped, an interrupted one resumes.
    `loss_options` go to every loss given (meant for one loss at a time, e.g. SRL's positive weight)."""
    done = {(r["model"], r["loss"], r["seed"], r.get("epochs")) for r in read_rows(out)}
    model, options = f"{backbone}:{weights}", loss_options or {}
    for seed in seeds:
        for loss in losses:
            variant = _variant(loss, options)
            if (model, variant, seed, epochs) in done:
                continue
            start = time.perf_counter()
            config = TrainConfig(dataset=dataset_root, out=str(out / f"{backbone}-{variant}-e{epochs}-seed{seed}"),
                                 backbone=backbone, weights=weights, loss=loss, loss_options=options, seed=seed,
                                 epochs=epochs, workers=workers, device=device, **settings)
            result = train(config)
            _record(out, {"stage": "finetune", "model": model, "loss": variant, "seed": seed, "epochs": epochs,
                          **result.retrieval.to_dict(), "losses": result.losses,
                          "checkpoint": str(result.checkpoint), "seconds": round(time.perf_counter() - start, 1)})


def table(out: Path) -> str:
    """Mean ± std over seeds per (model, loss, epochs), in the SRL paper's columns (percent)."""
    groups: dict[tuple[str, str, int], list[dict]] = {}
    for row in read_rows(out):
        groups.setdefault((row["model"], row["loss"], row.get("epochs", 0)), []).append(row)
    lines = ["| model | loss | epochs | runs | " + " | ".join(c.replace("map", "mAP").replace("p@", "P@")
                                                         for c in COLUMNS) + " | time per run |",
             "|---|---|---|---|" + "---|" * len(COLUMNS) + "---|"]
    for (model, loss, epochs), runs in groups.items():
        cells = [mean_std(runs, column) for column in COLUMNS]
        seconds = np.mean([r["seconds"] for r in runs])
        lines.append(f"| {model} | {loss} | {epochs} | {len(runs)} | " + " | ".join(cells) +
                     f" | {seconds / 60:.1f} min |")
    text = "\n".join(lines) + "\n"
    (out / "table.md").write_text(text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=["pretrained", "finetune", "table", "ship"])
    parser.add_argument("--dataset", default="../shared/data/rsscn7")
    parser.add_argument("--out", default="runs/rsscn7")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--weights", default="imagenet")
    parser.add_argument("--loss", default="srl", help="ship: the loss whose best run becomes the default model")
    parser.add_argument("--losses", nargs="+", default=list(ALL_LOSSES), choices=ALL_LOSSES)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--loss-options", type=json.loads, help='JSON, e.g. \'{"positive_weight": "ratio"}\'')
    parser.add_argument("--validation", type=float, default=0.0,
                        help="Evaluate on this share of the training split instead of the test split (for tuning).")
    parser.add_argument("--input-size", type=int, help="[default: the weights' own]")
    parser.add_argument("--lr-backbone", type=float, default=1e-4)
    parser.add_argument("--lr-head", type=float, default=1e-3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    try:
        run_stage(args)
    except GeosearchError as error:
        sys.exit(f"error: {error}")


def run_stage(args: argparse.Namespace) -> None:
    """The stage that the command line names, with its options."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.stage == "pretrained":
        pretrained(args.dataset, out, args.workers)
    elif args.stage == "finetune":
        finetune(args.dataset, out, args.backbone, args.weights, args.losses, args.seeds, args.epochs, args.workers,
                 args.device, loss_options=args.loss_options, input_size=args.input_size,
                 lr_backbone=args.lr_backbone, lr_head=args.lr_head, validation_fraction=args.validation)
    elif args.stage == "ship":
        print(f"wrote {ship(read_rows(out), args.loss)}")
        return
    print(table(out))


if __name__ == "__main__":
    main()
