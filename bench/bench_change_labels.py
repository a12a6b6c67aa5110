"""Change on real labels (issue 31): how well each change score ranks the places a change map marks changed.

    cd bench && python bench_change_labels.py [--models default pretrained] [--place-sizes 32 64]
                                              [--out change_labels.jsonl]

Protocol, written before any change method is tuned:
- Pairs: the OSCD cities with change maps (aguasclaras, bercy, nantes, paris: Sentinel-2 L1C, the 10 m bands B02,
  B03, B04, B08, two dates 1 to 3 years apart) and the Landsat pairs Taizhou (ETM+, 2000 and 2003) and Nanjing (TM,
  2000 and 2002; bands 3, 2, 1 and 4), from ../shared/data/multidate.
- Split: aguasclaras and bercy are the tuning pairs (a method may be chosen or fitted on them); nantes, paris,
  Taizhou and Nanjing are reported, and their mean decides. Every pair is printed with its split.
- Places: each pair's common pixel grid cut into whole S × S places (S = 32 and 64 by default).
- Labels: OSCD, the share of a place's pixels its change map marks changed (2; 1 is no change): changed at 5 % or
  more, unchanged at 0 %, the others left out. Landsat: change.bmp and unchanged.bmp mark sample regions, not every
  pixel (3 % and 11 % of Taizhou), so a place is changed where 5 % or more of it is marked changed and none
  unchanged, unchanged where 5 % or more is marked unchanged and none changed. A pair and place size left with one
  class only has no score.
- Scores, all in one run: `pixel`, the mean absolute difference of the two dates' RGB, each stretched to 8 bits by
  the pair's pooled 2-98 % percentiles (the one-line baseline of the issue); `cva`, change vector analysis, the mean
  over the place's pixels of the Euclidean norm of the difference of all its bands (OSCD in reflectance, DN / 10000;
  Landsat in DN); and each model's cosine distance between the two dates' embeddings of the place (its stretched
  RGB, as `pixel` sees it), which is what `geosearch change` computes for a place with one tile on each side.
- Metrics: ROC AUC and average precision (scikit-learn) per pair and place size; the mean over the reported pairs.
Then, to see what each score meets, per pair and band: both dates' means and the mean absolute difference over the
pixels marked changed and over those marked unchanged.
"""

import argparse
import json
import platform
from datetime import date
from pathlib import Path

import numpy as np
import rasterio
import torch
from PIL import Image
from sklearn.metrics import average_precision_score, roc_auc_score

from geosearch.encoder.default import open_model

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "multidate"
TUNING = ("aguasclaras", "bercy")
REPORTED = ("nantes", "paris", "Taizhou", "Nanjing")
OSCD_BANDS = ("B04", "B03", "B02", "B08")  # red, green, blue first
CHANGED, UNCHANGED = 0.05, 0.0


def _oscd_date(folder: Path) -> np.ndarray:
    return np.stack([rasterio.open(next(folder.glob(f"*_{band}.tif"))).read(1) for band in OSCD_BANDS])


def oscd(city: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Both dates as (bands, H, W) reflectance on one grid, and the changed and unchanged masks."""
    root = DATA / "oscd" / city
    first, second = _oscd_date(root / "imgs_1"), _oscd_date(root / "imgs_2")
    labels = rasterio.open(root / "cm" / f"{city}-cm.tif").read(1)
    height = min(first.shape[1], second.shape[1], labels.shape[0])
    width = min(first.shape[2], second.shape[2], labels.shape[1])
    crop = (slice(None), slice(0, height), slice(0, width))
    first, second, labels = first[crop] / 10000, second[crop] / 10000, labels[:height, :width]
    return first, second, labels == 2, labels == 1


def landsat(city: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Both dates (bands 3, 2, 1, 4 first, then 5 and 7) in DN, and the change and no-change masks."""
    root = DATA / "landsat_cd" / city
    first, second = (rasterio.open(path).read((3, 2, 1, 4, 5, 6)).astype(np.float64)
                     for path in sorted(p for p in root.iterdir() if not p.suffix))  # ENVI: the header beside
    changed, unchanged = (np.asarray(Image.open(root / name).convert("L")) > 127
                          for name in ("change.bmp", "unchanged.bmp"))
    return first, second, changed, unchanged


def stretched(first: np.ndarray, second: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both dates' RGB to 8 bits by the pair's pooled 2-98 % percentiles per channel."""
    low, high = np.percentile(np.concatenate([first[:3], second[:3]], axis=2), (2, 98), axis=(1, 2))
    span = np.maximum(high - low, 1e-9)[:, None, None]
    return tuple(np.clip((date[:3] - low[:, None, None]) / span * 255, 0, 255).round().astype(np.uint8)
                 for date in (first, second))


def places(shape: tuple[int, int], size: int) -> list[tuple[slice, slice]]:
    return [(slice(r, r + size), slice(c, c + size)) for r in range(0, shape[0] - size + 1, size)
            for c in range(0, shape[1] - size + 1, size)]


def embed(model, tiles: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return np.concatenate([model(torch.from_numpy(tiles[i:i + 64])).float().numpy()
                               for i in range(0, len(tiles), 64)])


def measure(name: str, pair: tuple, size: int, models: dict) -> dict:
    first, second, changed, unchanged = pair
    rgb1, rgb2 = stretched(first, second)
    cells = places(changed.shape, size)
    share = np.array([changed[cell].mean() for cell in cells])
    clear = np.array([unchanged[cell].mean() for cell in cells])
    dense = clear.mean() > 0.5  # OSCD's map covers every pixel; the Landsat masks mark samples
    label = np.where((share >= CHANGED) & (dense | (clear == 0)), 1,
                     np.where((share <= UNCHANGED) & (dense | (clear >= CHANGED)), 0, -1))
    keep = np.flatnonzero(label >= 0)
    kept = [cells[i] for i in keep]
    row = {"pair": name, "split": "tuning" if name in TUNING else "reported", "place_px": size,
           "places": len(keep), "changed": int(label[keep].sum()), "auc": None, "ap": None}
    if len(set(label[keep])) < 2:
        return row
    scores = {
        "pixel": [np.abs(rgb1[(slice(None), *c)].astype(float) - rgb2[(slice(None), *c)]).mean() for c in kept],
        "cva": [np.linalg.norm(first[(slice(None), *c)] - second[(slice(None), *c)], axis=0).mean() for c in kept],
    }
    tiles1 = np.stack([rgb1[(slice(None), *c)] for c in kept])
    tiles2 = np.stack([rgb2[(slice(None), *c)] for c in kept])
    for model_name, model in models.items():
        cosine = (embed(model, tiles1) * embed(model, tiles2)).sum(axis=1)
        scores[model_name] = list(1 - cosine)
    truth = label[keep]
    return row | {"auc": {method: round(float(roc_auc_score(truth, s)), 4) for method, s in scores.items()},
                  "ap": {method: round(float(average_precision_score(truth, s)), 4) for method, s in scores.items()}}


def band_differences(name: str, pair: tuple) -> str:
    first, second, changed, unchanged = pair
    difference = np.abs(first - second)
    columns = [first.mean(axis=(1, 2)), second.mean(axis=(1, 2)), difference[:, changed].mean(axis=1),
               difference[:, unchanged].mean(axis=1)]
    return f"| {name} | " + " | ".join(" ".join(f"{v:.3g}" for v in column) for column in columns) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["default", "pretrained"])
    parser.add_argument("--place-sizes", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "change_labels.jsonl")
    args = parser.parse_args()
    torch.set_num_threads(2)
    models = {name: open_model(name).encoder().eval() for name in args.models}
    pairs = {city: oscd(city) for city in ("aguasclaras", "bercy", "nantes", "paris")}
    pairs |= {city: landsat(city) for city in ("Taizhou", "Nanjing")}
    rows = [measure(name, pair, size, models) for size in args.place_sizes for name, pair in pairs.items()]
    methods = ["pixel", "cva", *args.models]
    print(f"Change on real labels, {date.today()}, {platform.node()}: ROC AUC / average precision\n")
    print("| pair | split | place px | places (changed) | " + " | ".join(methods) + " |")
    print("|---|---|---|---|" + "---|" * len(methods))
    for row in rows:
        cells = " | ".join(f"{row['auc'][m]:.3f} / {row['ap'][m]:.3f}" if row["auc"] else "–" for m in methods)
        print(f"| {row['pair']} | {row['split']} | {row['place_px']} | {row['places']} ({row['changed']}) | {cells} |")
    for size in args.place_sizes:
        reported = [r for r in rows if r["split"] == "reported" and r["place_px"] == size and r["auc"]]
        means = " | ".join(f"{np.mean([r['auc'][m] for r in reported]):.3f} / "
                           f"{np.mean([r['ap'][m] for r in reported]):.3f}" for m in methods)
        print(f"| **mean of the {len(reported)} reported pairs** | | {size} | | {means} |")
    print("\nPer band (OSCD: B04 B03 B02 B08, reflectance; Landsat: bands 3 2 1 4 5 7, DN)\n")
    print("| pair | mean, first date | mean, second date | mean abs. difference, changed | unchanged |")
    print("|---|---|---|---|---|")
    for name, pair in pairs.items():
        print(band_differences(name, pair))
    with args.out.open("a") as out:
        for row in rows:
            out.write(json.dumps(row | {"date": date.today().isoformat()}) + "\n")


if __name__ == "__main__":
    main()
