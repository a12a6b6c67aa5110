"""Which way of training the encoder keeps what its ImageNet start knows: the recipes of issue 15 compared on a
validation split, never on the quality benchmark's test cells.

Each recipe is a `geosearch train` config on places (training/configs/*.toml), trained first (a finished run is
not trained again, a killed one goes on). Every model, and the named models given with --models, is then
measured on the first config's held-out places (a fifth of the Landsat 8 pair's places, never trained on):

- places: each held-out tile looks for the same ground in the other scene (rank-1, mAP);
- archive views: each held-out tile looks for a view of its place made as another archive would show it
  (training/augment.py: archive_views, seeded), among the views of every held-out tile (rank-1, mAP);
- RSSCN7 validation: a fifth of RSSCN7's training half (never the test half), each image querying the rest (mAP);
  `rsscn7` was trained on these images, so its cell is not a fair one.

    python bench/bench_recipes.py training/configs/*.toml --models pretrained rsscn7

Rows go to bench/recipes.jsonl, one per model, with the machine and the date.
"""

import argparse
import json
import platform
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_quality import rsscn7_split  # noqa: E402

from geosearch.encoder.default import open_model  # noqa: E402
from training.augment import archive_views  # noqa: E402
from training.datasets import stratified_split  # noqa: E402
from training.evaluate import embed_dataset  # noqa: E402
from training.metrics import evaluate_retrieval  # noqa: E402
from training.train import TrainConfig, load_dataset, split  # noqa: E402

CPU = torch.device("cpu")
VIEW_SEED = 123


def validate(model: str, config: TrainConfig) -> dict:
    encoder = open_model(model).encoder()
    places = load_dataset(config)
    _, held_out = split(config, places.labels)
    vectors, labels = embed_dataset(encoder, places, held_out, CPU, workers=0)
    clean = evaluate_retrieval(vectors, labels, ks=(1, 10))
    places.transform = archive_views(config.band_swap)
    torch.manual_seed(VIEW_SEED)
    views, _ = embed_dataset(encoder, places, held_out, CPU, workers=0)
    across = evaluate_retrieval(vectors, labels, views, labels, ks=(1, 10))
    data, train, _ = rsscn7_split()
    _, validation = stratified_split(data.labels[train], 0.2, seed=0)
    images, classes = embed_dataset(encoder, data, train[validation], CPU, workers=1)
    rsscn7 = evaluate_retrieval(images, classes)
    return {"places rank1": clean.recall_at_hit[1], "places map": clean.map, "views rank1": across.recall_at_hit[1],
            "views map": across.map, "rsscn7 validation map": rsscn7.map, "held-out tiles": len(held_out),
            "rsscn7 validation images": len(validation)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", nargs="+", type=Path)
    parser.add_argument("--models", nargs="*", default=["pretrained"], help="Named models or checkpoints to add.")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "recipes.jsonl")
    args = parser.parse_args()
    configs = [TrainConfig.from_toml(path) for path in args.configs]
    for path in args.configs:  # a finished run only writes its checkpoint again; a killed one goes on
        subprocess.run([sys.executable, "-m", "geosearch", "train", "--config", str(path)], check=True)
    runs = [(f"{path.stem} ({Path(config.out) / 'model.pt'})", str(Path(config.out) / "model.pt"))
            for path, config in zip(args.configs, configs, strict=True)]
    for name, model in [*[(m, m) for m in args.models], *runs]:
        start = time.perf_counter()
        row = {"model": name, "model_id": open_model(model).model_id, **validate(model, configs[0]),
               "seconds": round(time.perf_counter() - start, 1), "machine": platform.node(), "date": str(date.today())}
        print(json.dumps(row), flush=True)
        with args.out.open("a") as out:
            out.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
