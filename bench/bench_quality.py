"""Search quality on real scenes, for any list of models: one run, one markdown table (docs/results.md).

- same place across scenes: the full Landsat 8 pair (224077 → 224078, same sensor and day, at their native
  origins) at 64 and 128 px: rank-1 and rank-10 rates of the co-located tile (training/places.py), for today's
  engine before aligned grids (`--grid scene --stretch scene`, 224078 cut at half-tile stride so that a
  well-overlapping tile exists), for aligned grids alone, and for the defaults (`--grid aligned --stretch archive`);
- land-cover retrieval on a real scene: the North Carolina Landsat 7 scene cut into 32 px tiles, each labelled by
  the majority class of its labelled pixels (at least MIN_LABELLED of them), querying the other labelled tiles;
- RSSCN7: the fixed 50/50 test split, as `python -m training.experiment` evaluates it.

    python bench/bench_quality.py --models default rsscn7 pretrained [CKPT ...] [--defaults-only]

Each finished cell is written to --out (bench/quality.json) with the model id that made it, as it completes; a
rerun skips the cells whose model is still the one a name stands for (resumable), and measures again those of a
name that now stands for another model; `--again` measures every cell anew, so that one run shows all the models.
The table is printed from the file at the end. `--defaults-only` leaves out the rows before aligned grids and
archive stretch (history: a new model only needs the engine's defaults).
"""

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import numpy as np
import rasterio
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from geosearch.embed import embed_scenes, gather, plan_scene  # noqa: E402
from geosearch.encoder.default import open_model  # noqa: E402
from geosearch.grid import GridMode  # noqa: E402
from geosearch.stretch import StretchMode  # noqa: E402
from geosearch.tiling import TilingOptions  # noqa: E402
from training.datasets import ClassFolders, stratified_split  # noqa: E402
from training.evaluate import embed_dataset  # noqa: E402
from training.metrics import evaluate_retrieval  # noqa: E402
from training.places import same_place  # noqa: E402
from training.ship import ENGINE_DEFAULTS, cell_key  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
PAIR = (SHARED / "scenes" / "landsat8_224077_20200518_bgr_utm21n_30m.tif",
        SHARED / "scenes" / "landsat8_224078_20200518_bgr_utm21n_30m.tif")
NC_SCENE = SHARED / "scenes" / "landsat7_nc_5band_epsg32119_28m.tif"
NC_LABELS = SHARED / "scenes" / "labels" / "landsat7_nc_landcover_training_pixels_epsg3358.tif"
NC_TILE, MIN_LABELLED = 32, 10
CPU = torch.device("cpu")
# The Landsat Level-1 fill value is 0, which these files leave undeclared.
ENGINES = {
    "scene grid, scene stretch (before)": dict(grid=GridMode.SCENE, stretch=StretchMode.SCENE),
    "aligned grid, scene stretch": dict(grid=GridMode.ALIGNED, stretch=StretchMode.SCENE),
    ENGINE_DEFAULTS: dict(grid=GridMode.ALIGNED, stretch=StretchMode.ARCHIVE),
}


def same_place_cell(model: str, engine: str, tile_size: int) -> dict:
    tiling = TilingOptions(tile_size=tile_size, nodata=0, **ENGINES[engine])
    stride_b = tile_size // 2 if tiling.grid is GridMode.SCENE else None
    return same_place(str(PAIR[0]), str(PAIR[1]), open_model(model), tiling, CPU, stride_b, workers=0).to_dict()


def majority_label(labels: np.ma.MaskedArray, row: int, col: int, size: int) -> int:
    """The class of most of the tile's labelled pixels, or -1 when it has fewer than MIN_LABELLED."""
    window = labels[max(row, 0):row + size, max(col, 0):col + size].compressed().astype(int)
    return int(np.bincount(window).argmax()) if len(window) >= MIN_LABELLED else -1


def land_cover_cell(model: str) -> dict:
    """NC tiles labelled by the majority class of their labelled pixels (the label raster shares the scene's grid)."""
    tiling = TilingOptions(tile_size=NC_TILE, bands=(3, 2, 1))  # ETM+ bands 3, 2, 1: red, green, blue
    planned = plan_scene(str(NC_SCENE), tiling)
    with rasterio.open(NC_LABELS) as labels_file:
        labels = labels_file.read(1, masked=True)
    (done,), _ = gather(embed_scenes(open_model(model).encoder(), [planned], tiling, CPU, workers=0), [planned])
    classes = np.array([majority_label(labels, *planned.grid.offsets[index], NC_TILE) for index in done.indexes])
    counts = np.bincount(classes[classes >= 0])
    keep = (classes >= 0) & (counts[np.maximum(classes, 0)] >= 2)  # a class of one tile has nothing to find
    result = evaluate_retrieval(done.vectors[keep], classes[keep])  # each tile queries the other labelled ones
    return {"tiles": int(keep.sum()), "classes": int((counts >= 2).sum()), "map": result.map,
            "p@10": result.precision_at[10]}


def rsscn7_split() -> tuple[ClassFolders, np.ndarray, np.ndarray]:
    """RSSCN7 and its fixed 50/50 split (train, test), as `python -m training.experiment` evaluates it; the
    benchmarks that use RSSCN7 share it."""
    data = ClassFolders(str(SHARED / "rsscn7"))
    train, test = stratified_split(data.labels, 0.5, seed=0)
    return data, train, test


def rsscn7_cell(model: str) -> dict:
    data, _, test = rsscn7_split()
    vectors, labels = embed_dataset(open_model(model).encoder(), data, test, CPU, workers=1)
    result = evaluate_retrieval(vectors, labels)
    return {"queries": result.queries, "map": result.map, "p@10": result.precision_at[10]}


def cells(models: list[str], defaults_only: bool) -> list[tuple[str, tuple, Callable[..., dict]]]:
    planned = []
    for model in models:
        for tile_size in (64, 128):
            for engine in [ENGINE_DEFAULTS] if defaults_only else ENGINES:
                planned.append((cell_key("same-place", model, engine, tile_size), (model, engine, tile_size),
                                same_place_cell))
        planned.append((cell_key("land-cover", model), (model,), land_cover_cell))
        planned.append((cell_key("rsscn7", model), (model,), rsscn7_cell))
    return planned


def table(results: dict, models: list[str]) -> str:
    pct = lambda v: f"{100 * v:.1f}"  # noqa: E731
    lines = ["| model | grid and stretch | 64 px rank-1 | rank-10 | 128 px rank-1 | rank-10 | queries (64 / 128) |",
             "|---|---|---|---|---|---|---|"]
    for model in models:
        for engine in ENGINES:
            small, large = (results.get(cell_key("same-place", model, engine, size)) for size in (64, 128))
            if small and large:
                lines.append(f"| {model} | {engine} | {pct(small['rank1'])} | {pct(small['rank10'])} | "
                             f"{pct(large['rank1'])} | {pct(large['rank10'])} | {small['queries']} / "
                             f"{large['queries']} |")
    lines += ["", "| model | NC land cover mAP | P@10 | labelled tiles (classes) | RSSCN7 mAP | P@10 |",
              "|---|---|---|---|---|---|"]
    for model in models:
        nc, rs = results.get(cell_key("land-cover", model)), results.get(cell_key("rsscn7", model))
        if nc and rs:
            lines.append(f"| {model} | {pct(nc['map'])} | {pct(nc['p@10'])} | {nc['tiles']} ({nc['classes']}) | "
                         f"{pct(rs['map'])} | {pct(rs['p@10'])} |")
    made = sorted({(model, cell["model_id"], cell["date"]) for key, cell in results.items() if "model_id" in cell
                   for model in models if key.split("|")[1] == model})
    lines += ["", "Models: " + "; ".join(f"{model} = `{model_id}` (measured {day})" for model, model_id, day in made)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["default", "pretrained"])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "quality.json")
    parser.add_argument("--defaults-only", action="store_true", help="Only the engine's defaults' rows.")
    parser.add_argument("--again", action="store_true",
                        help="Measure every cell in this run, even those its model made before.")
    args = parser.parse_args()
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    model_ids = {model: open_model(model).model_id for model in args.models}
    for key, arguments, measure in cells(args.models, args.defaults_only):
        if not args.again and results.get(key, {}).get("model_id") == model_ids[arguments[0]]:
            continue
        start = time.perf_counter()
        results[key] = measure(*arguments) | {"model_id": model_ids[arguments[0]], "date": str(date.today()),
                                              "seconds": round(time.perf_counter() - start, 1)}
        print(key, json.dumps(results[key]), flush=True)
        args.out.write_text(json.dumps(results, indent=1))
    print(f"\n{platform.node()}, {torch.get_num_threads()} threads, {date.today()}: "
          f"python bench/bench_quality.py --models {' '.join(args.models)}\n")
    print(table(results, args.models))


if __name__ == "__main__":
    main()
