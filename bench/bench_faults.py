"""The reliability matrix of issues 20 and 30: bad inputs, kill -9, two processes on one store, hostile HTTP, many
clients while an index job runs, and hostile files in the surfaces issue 30 named. All of it for real: the CLI in
subprocesses and `geosearch serve` over HTTP, on the scenes shipped in geosearch/data/scenes.

    .venv/bin/python bench/bench_faults.py [--seconds 15] [--clients 8 64] [--kill-at 0.05 0.2 0.4 0.6]
                                           [--rows 1 2 3 4 5 6 7] [--out bench/faults.json]

Rows:
1. Bad inputs: about 45 CLI cases across the commands. Each must exit non-zero with one error line (click's
   "Try 'geosearch … -h' for help." hint aside), no traceback, no signal death.
2. kill -9 of `geosearch index` over the four scenes, after its store appears: at --kill-at fractions of the time
   a clean run writes its store (measured on the reference run), or --kill-after seconds. Between the kill and
   the rerun, `scenes --json`, `stats --json`, `search --bbox` and `search --tile` (a tile of a complete
   scene, and one of an unfinished scene) must serve no tile of a scene that is not complete. The rerun must
   leave exactly the tiles of a reference store indexed without interruption (tile ids per scene).
3. Two processes: CLI commands on a store while `index` writes it (at nice 19, so that they reach the store while
   it runs) must fail with one line ("store in use", exit 1), and the index run must complete intact. CLI
   commands on a store that `serve` holds, and a second `serve`, must either go through the server or be refused
   in one line ("store in use" is the expected refusal today).
4. Hostile HTTP against `geosearch serve --root DIR --token T`: missing and wrong tokens, NUL and `..` in paths,
   escapes out of the root, oversized and malformed bodies, wrong types, huge k, unknown ids. Every answer must be
   4xx (a few controls 2xx), never 5xx, with no traceback in the server's log.
5. --clients concurrent clients (POST /search, GET /scenes, GET /health) for --seconds while POST /index jobs run
   one after another (each a new 2 × 2 VRT mosaic of a Landsat crop): failed requests, 5xx, p50/p95, req/s. Every
   job must end "done", and no answer may hold a tile of a scene that a GET /scenes sent after that answer still
   shows unfinished.
7. Hostile files (issue 30), each alone from the command line: rasters no scene can be made of, per-band products
   with broken metadata, embedding files whose records, ids, grids, stretches, footprints or footers are wrong
   (imported into a copy of the reference store, which must not change), training settings of the wrong type or
   not finite, FIFOs, picture bombs, symlink loops, configs that are folders or binary, a checkpoint of NaN weights,
   stores with damaged segment files; and runs over good and bad inputs together (a STAC catalog, a folder), which
   must exit 1 with a line per bad input and no traceback. Row 4 gains the HTTP side: an MTL under the root naming
   bands outside it, a file named like an item's assets, NaN numbers, degenerate and whole-globe boxes.
6. The store's file system is full (a 600 MiB tmpfs; needs root, else the row says it did not run): too little
   space before the run, the disk filling while index writes, `stats` on the full disk, and the rerun once space
   is freed (the reference's tiles exactly).

The model is a random ResNet-18 (16-d, 32 px input, written by `geosearch model init`) and tiles are 128 px (256 px
for the server's jobs); rows 2 and 6 index in batches of 8 tiles so that a kill or a full disk
lands between store writes more often. Runs are short: what is measured is how faults are handled, not search
quality. Work files live in a temporary folder. The table is printed as Markdown; everything measured, with each
failed case's command and stderr, is saved as JSON (--out, default bench/faults.json).
"""

import argparse
import contextlib
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import httpx
import numpy as np
import rasterio
from bench_serve import _free_port, random_boxes
from PIL import Image

from bench_store import percentiles
from geosearch.data import AERIAL_3857, LANDSAT8_224077, LANDSAT8_224078, shipped_scenes
from geosearch.errors import GeosearchError
from geosearch.store import open_backend
from geosearch.store.archive import Archive
from geosearch.tiling import TilingOptions, survey

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from hostile import (
    HOSTILE_SETTINGS,
    LANDSAT_PREFIX,
    STORE_DAMAGE,
    damage_store,
    good_and_bad_folder,
    hostile_catalog,
    hostile_embeddings,
    hostile_products,
    hostile_rasters,
    landsat_product,
    stac_item,
)
from support import write_mosaic_vrt

REPO = Path(__file__).resolve().parents[1]
BOX = [-54.8315, -25.2208, -54.7783, -25.1723]  # farmland in the Landsat 8 crop 224/077 (the demo's box)
HINT = re.compile(r"^Try '.+ -h' for help\.$")
UNKNOWN_TILE = "0c6f6b9e-1c55-4c4e-8a0e-6a1f2b8e4d17"
TOKEN = "s3cret-token"
KILL_TILE_SIZE = 128
KILL_BATCH = 8  # small batches: more store writes per scene, so kills land between them more often


# --------------------------------------------------------------------------------------------------------------
# Processes


@dataclass
class Run:
    """One finished CLI process: what was typed, how it ended, what it said."""

    command: str
    rc: int | None  # None: still running at its timeout (then killed)
    stdout: str
    stderr: str
    seconds: float

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip() and not HINT.match(line.strip())]

    @property
    def signal_death(self) -> bool:
        return self.rc is not None and (self.rc < 0 or self.rc > 128)

    def problems(self, *, expect_failure: bool) -> list[str]:
        """What is wrong with how it ended: a traceback, a signal death, a hang; for a bad input, exit 0 or an
        error of more (or less) than one line; for a good one, a non-zero exit."""
        found = []
        if self.rc is None:
            found.append("timed out")
        elif self.signal_death:
            found.append(f"signal death (exit {self.rc})")
        if "Traceback" in self.stderr:
            found.append("traceback")
        if expect_failure:
            if self.rc == 0:
                found.append("exit 0")
            if len(self.error_lines) != 1:
                found.append(f"{len(self.error_lines)} error lines")
        elif self.rc not in (0, None) and not self.signal_death:
            found.append(f"exit {self.rc}")
        return found

    def to_dict(self) -> dict:
        return {"command": self.command, "rc": self.rc, "seconds": round(self.seconds, 2),
                "stderr": self.stderr[-4000:], "stdout": self.stdout[-1000:]}


class Shell:
    """Runs the real CLI in fresh processes, in the work folder, with no GEOSEARCH_* or XDG_* setting of the user's
    (the default store and config file are the work folder's)."""

    def __init__(self, work: Path):
        self.work = work
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("GEOSEARCH_", "XDG_"))}
        self.env |= {"XDG_DATA_HOME": str(work / "xdg-data"), "XDG_CONFIG_HOME": str(work / "xdg-config")}
        self.children: list[int] = []  # reader processes of killed runs, to check on and end at the end

    def argv(self, args) -> list[str]:
        return [sys.executable, "-m", "geosearch", *map(str, args)]

    def shown(self, args, env: dict | None = None) -> str:
        prefix = " ".join(f"{k}={shlex.quote(str(v))}" for k, v in (env or {}).items())
        text = f"{prefix} geosearch {shlex.join(map(str, args))}".strip()
        return text.replace(str(self.work), "$WORK")

    def run(self, *args, env: dict | None = None, timeout: float = 180) -> Run:
        start = time.perf_counter()
        try:
            done = subprocess.run(self.argv(args), capture_output=True, text=True, cwd=self.work,
                                  env=self.env | (env or {}), timeout=timeout)
            rc, out, err = done.returncode, done.stdout, done.stderr
        except subprocess.TimeoutExpired as expired:
            rc = None
            out = (expired.stdout or b"").decode(errors="replace") if isinstance(expired.stdout, bytes) else \
                expired.stdout or ""
            err = (expired.stderr or b"").decode(errors="replace") if isinstance(expired.stderr, bytes) else \
                expired.stderr or ""
        return Run(self.shown(args, env), rc, out, err, time.perf_counter() - start)

    def start(self, *args, log: Path, nice: int = 0) -> subprocess.Popen:
        """A process left running: stdout and stderr go to files (a pipe would be held open by its readers)."""
        with open(log.with_suffix(".out"), "w") as out, open(log.with_suffix(".err"), "w") as err:
            niced = ["nice", "-n", str(nice)] if nice else []  # nice execs the command: the same process id
            return subprocess.Popen(niced + self.argv(args), stdout=out, stderr=err, cwd=self.work, env=self.env)

    @staticmethod
    def finished(process: subprocess.Popen, command: str, log: Path, seconds: float) -> Run:
        return Run(command, process.returncode, log.with_suffix(".out").read_text(),
                   log.with_suffix(".err").read_text(), seconds)

    def parallel(self, jobs: list[Callable[[], object]], workers: int) -> list:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(lambda job: job(), jobs))


def children_of(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][0]
    except OSError:
        return False
    return state != "Z"


def wait_for(predicate: Callable[[], bool], timeout: float, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


# --------------------------------------------------------------------------------------------------------------
# Stores, read in this process while no CLI process holds them


def stored_tiles(store: Path) -> tuple[dict[str, dict], dict[str, dict[str, str]]]:
    """The scene records by scene id, and every stored tile (served or pending) by scene id: {tile id: status}."""
    with open_backend(store, create=False) as backend:
        archive = Archive.open(backend, "tiles")
        records = {r["scene_id"]: r for r in archive.scenes()}
        tiles: dict[str, dict[str, str]] = {}
        for tile_id, payload in backend.scroll(archive.collection):
            tiles.setdefault(payload.get("scene_id", "?"), {})[tile_id] = payload.get("status", "")
    return records, tiles


def expected_tiles(tile_size: int) -> dict[str, set[str]]:
    """What an uninterrupted run stores: the kept tiles of each shipped scene, by scene id."""
    expected = {}
    for path in shipped_scenes():
        cut = survey(str(path), TilingOptions(tile_size=tile_size))
        expected[cut.grid.scene_id] = {cut.grid.tile_ids[i] for i in np.flatnonzero(cut.kept)}
    return expected


def compare_tiles(expected: dict[str, set[str]], tiles: dict[str, dict[str, str]]) -> dict:
    lost = sum(len(ids - set(tiles.get(scene, {}))) for scene, ids in expected.items())
    extra = sum(len(set(found) - expected.get(scene, set())) for scene, found in tiles.items())
    pending = sum(status == "indexing" for found in tiles.values() for status in found.values())
    stored = sum(len(found) for found in tiles.values())
    return {"expected": sum(len(ids) for ids in expected.values()), "stored": stored, "lost": lost,
            "extra": extra, "pending": pending}


def copy_store(store: Path, to: Path) -> Path:
    shutil.copytree(store, to, ignore=shutil.ignore_patterns(".geosearch.lock"))
    return to


# --------------------------------------------------------------------------------------------------------------
# Input files


def write_inputs(work: Path) -> dict[str, Path]:
    """Bad inputs made of real files: a text file named .tif, an empty one, a truncated COG, a raster without
    georeferencing, a scene smaller than one tile, a picture that is not one, a checkpoint that is not one,
    configs with unknown tables and keys, malformed TOML."""
    inputs = work / "inputs"
    inputs.mkdir()
    paths = {name: inputs / name for name in (
        "notraster.tif", "empty.tif", "truncated.tif", "nocrs.tif", "small16.tif", "notpicture.png", "garbage.pt",
        "afile", "emptydir", "emptystore", "matches.txt")}
    paths["notraster.tif"].write_text("not a raster\n")
    paths["empty.tif"].write_bytes(b"")
    paths["truncated.tif"].write_bytes(AERIAL_3857.read_bytes()[: AERIAL_3857.stat().st_size // 2])
    with rasterio.open(AERIAL_3857) as src:
        pixels = src.read(window=((0, 64), (0, 64)))
        small = {"driver": "GTiff", "width": 16, "height": 16, "count": 3, "dtype": "uint8", "crs": src.crs,
                 "transform": src.window_transform(((0, 16), (0, 16)))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.open(paths["nocrs.tif"], "w", driver="GTiff", width=64, height=64, count=3,
                           dtype="uint8") as dst:
            dst.write(pixels)
    with rasterio.open(paths["small16.tif"], "w", **small) as dst:
        dst.write(pixels[:, :16, :16])
    paths["notpicture.png"].write_text("not a picture\n")
    paths["garbage.pt"].write_bytes(np.random.default_rng(0).bytes(4096))
    paths["afile"].write_text("a file where a folder should be\n")
    paths["emptydir"].mkdir()
    paths["emptystore"].mkdir()
    paths["matches.txt"].write_text("not matches\n")
    configs = {
        "unknown_key.toml": "[tile]\ntile_sise = 512\n",
        "unknown_table.toml": "[tiles]\ntile_size = 512\n",
        "malformed.toml": "[tile\ntile_size = = 512\n",
        "bad_type.toml": '[tile]\ntile_size = "big"\n',
        "bad_collection.toml": '[stats]\ncollection = "../x"\n',
    }
    for name, text in configs.items():
        paths[name] = inputs / name
        paths[name].write_text(text)
    return paths


def write_mosaic(source: Path, path: Path, across: int, down: int) -> Path:
    """A VRT of `source` repeated across × down, georeferenced as one scene on source's grid."""
    with rasterio.open(source) as src:
        return write_mosaic_vrt(source, path, src.width * across, src.height * down)


def bad_input_cases(shell: Shell, inputs: dict[str, Path], model: Path, ref: Path) -> list[tuple[str, list, dict]]:
    w, scene, tiny = shell.work, str(AERIAL_3857), str(model)
    counter = iter(range(1000))

    def new_store() -> Path:
        return w / "stores" / f"new{next(counter)}"

    def ref_copy() -> Path:
        return copy_store(ref, w / "stores" / f"ref{next(counter)}")

    box = list(map(str, BOX))
    no_gpu = []
    try:
        import torch

        if not torch.cuda.is_available():
            no_gpu = [("index: --device cuda without a GPU",
                       ["index", scene, "--store", new_store(), "--model", tiny, "--device", "cuda"], {})]
    except ImportError:
        pass

    def search(*extra, store: Path | None = None) -> list:
        return ["search", *extra, "--store", store or ref_copy(), "--model", tiny]

    return [
        # tile
        ("tile: missing file", ["tile", w / "missing.tif"], {}),
        ("tile: not a raster", ["tile", inputs["notraster.tif"]], {}),
        ("tile: truncated COG", ["tile", inputs["truncated.tif"]], {}),
        ("tile: raster without CRS", ["tile", inputs["nocrs.tif"]], {}),
        ("tile: scene smaller than a tile", ["tile", inputs["small16.tif"]], {}),
        ("tile: --bands out of range", ["tile", scene, "--bands", "7"], {}),
        ("tile: --stretch inverted", ["tile", scene, "--stretch", "5,1"], {}),
        ("tile: -o /proc/x.geojson", ["tile", scene, "-o", "/proc/x.geojson"], {}),
        ("tile: -o in a missing folder", ["tile", scene, "-o", w / "nodir" / "x.geojson"], {}),
        ("tile: folder without rasters", ["tile", inputs["emptydir"]], {}),
        ("env: GEOSEARCH_TILE_SIZE=3", ["tile", scene], {"GEOSEARCH_TILE_SIZE": "3"}),
        ("config: file missing", ["tile", scene], {"GEOSEARCH_CONFIG": str(w / "missing.toml")}),
        ("config: unknown key", ["tile", scene], {"GEOSEARCH_CONFIG": str(inputs["unknown_key.toml"])}),
        ("config: malformed TOML", ["tile", scene], {"GEOSEARCH_CONFIG": str(inputs["malformed.toml"])}),
        # index
        ("index: not a raster", ["index", inputs["notraster.tif"], "--store", new_store(), "--model", tiny], {}),
        ("index: --acquired May", ["index", scene, "--store", new_store(), "--acquired", "May"], {}),
        ("index: --collection ../../x", ["index", scene, "--store", new_store(), "--collection", "../../x"], {}),
        ("index: --qdrant-url 'ftp://x y'", ["index", scene, "--qdrant-url", "ftp://x y"], {}),
        ("index: unreachable Qdrant", ["index", scene, "--qdrant-url", "http://127.0.0.1:9", "--model", tiny], {}),
        ("index: --store /proc/x", ["index", scene, "--store", "/proc/geosearch-store", "--model", tiny], {}),
        ("index: --store is a file", ["index", scene, "--store", inputs["afile"], "--model", tiny], {}),
        ("index: --model not a checkpoint", ["index", scene, "--store", new_store(), "--model",
                                             inputs["garbage.pt"]], {}),
        ("index: another model than the archive's", ["index", scene, "--store", ref_copy(), "--model",
                                                     "default"], {}),
        ("index: --grid scene into an aligned archive", ["index", scene, "--store", ref_copy(), "--model", tiny,
                                                         "--grid", "scene"], {}),
        ("env: GEOSEARCH_COLLECTION=a/../../x", ["stats", "--store", ref_copy()],
         {"GEOSEARCH_COLLECTION": "a/../../x"}),
        *no_gpu,
        # search
        ("search: box outside every scene", search("--bbox", "10", "10", "11", "11"), {}),
        ("search: inverted box", search("--bbox", "2", "2", "1", "1"), {}),
        ("search: --crs EPSG:999999", search("--bbox", *box, "--crs", "EPSG:999999"), {}),
        ("search: --tile unknown id", search("--tile", UNKNOWN_TILE), {}),
        ("search: --tile ../../etc/passwd", search("--tile", "../../etc/passwd"), {}),
        ("search: --image not a picture", search("--image", inputs["notpicture.png"]), {}),
        ("search: --after later than --before", search("--bbox", *box, "--after", "2021-01-02", "--before",
                                                       "2021-01-01"), {}),
        ("search: -k 0", search("--bbox", *box, "-k", "0"), {}),
        ("search: --within 1,2", search("--bbox", *box, "--within", "1,2"), {}),
        ("search: no query", search(), {}),
        ("search: empty store folder", search("--bbox", *box, store=inputs["emptystore"]), {}),
        # the archive
        ("stats: missing store", ["stats", "--store", w / "missing-store"], {}),
        ("scenes: --store is a file", ["scenes", "--store", inputs["afile"]], {}),
        ("stats: unknown collection", ["stats", "--store", ref_copy(), "--collection", "other"], {}),
        ("remove: unknown scene", ["remove", "no-such-scene", "--store", ref_copy()], {}),
        ("export: --scenes /proc/x.geojson", ["export", "--scenes", "/proc/x.geojson", "--store", ref_copy()], {}),
        # serve, model, embed
        ("serve: 0.0.0.0 without a token", ["serve", "--host", "0.0.0.0", "--store", ref_copy()],
         {"GEOSEARCH_TOKEN": ""}),
        ("model info: not a checkpoint", ["model", "info", inputs["garbage.pt"]], {}),
        ("embed: --out x.txt", ["embed", scene, "--out", w / "x.txt", "--model", tiny], {}),
    ]


def row_bad_inputs(shell: Shell, inputs: dict[str, Path], model: Path, ref: Path, workers: int) -> dict:
    cases = bad_input_cases(shell, inputs, model, ref)
    runs = shell.parallel([lambda c=c: shell.run(*c[1], env=c[2], timeout=90) for c in cases], workers)
    results = [{"case": name, **run.to_dict(), "problems": run.problems(expect_failure=True)}
               for (name, _, _), run in zip(cases, runs, strict=True)]
    return {"row": "1. bad inputs (CLI)", "cases": len(results),
            "failed": sum(bool(r["problems"]) for r in results),
            "tracebacks": sum("traceback" in r["problems"] for r in results),
            "signal_deaths": sum(run.signal_death for run in runs), "half_indexed_served": None,
            "lost_or_duplicated": None, "http_5xx": None,
            "notes": f"{sum(r['rc'] == 2 for r in results)} usage errors (exit 2), "
                     f"{sum(r['rc'] == 1 for r in results)} errors (exit 1)",
            "details": results}


# --------------------------------------------------------------------------------------------------------------
# Row 7: hostile files of issue 30, from the command line


def _nan_model(model: Path, path: Path) -> Path:
    from geosearch.encoder.checkpoint import Checkpoint, load_checkpoint, model_id_of, save_checkpoint

    checkpoint = load_checkpoint(model)
    weights = {name: tensor.clone() for name, tensor in checkpoint.state_dict.items()}
    name = next(name for name, tensor in weights.items() if tensor.is_floating_point())
    weights[name][...] = float("nan")
    return save_checkpoint(Checkpoint(checkpoint.config, weights, checkpoint.metadata,
                                      model_id_of(checkpoint.config, weights)), path)


def hostile_file_cases(shell: Shell, model: Path, ref: Path) -> list[tuple[str, list, dict, str]]:
    """(name, args, env, expected): "one line" (one error line, exit non-zero), "one line, store kept" (the same,
    and the store's tiles and records unchanged), or "runs" (exit 0) for controls."""
    w = shell.work / "hostile"
    counter = iter(range(1000))

    def ref_copy() -> Path:
        return copy_store(ref, w / "stores" / f"copy{next(counter)}")

    rasters, products = hostile_rasters(w / "rasters"), hostile_products(w / "products")
    catalog = hostile_catalog(w / "stac")
    exported = w / "archive.parquet"
    if shell.run("export", "--embeddings", exported, "--store", ref_copy()).rc != 0:
        sys.exit("cannot export the reference store's embeddings")
    embeddings = hostile_embeddings(exported, w / "embeddings")
    (w / "loop").symlink_to(w / "loop2")
    (w / "loop2").symlink_to(w / "loop")
    os.mkfifo(w / "fifo.tif")
    Image.new("L", (30000, 30000), 7).save(w / "bomb.png", optimize=True)
    (w / "config").mkdir()
    nan_model = _nan_model(model, w / "nan.pt")
    tiny = ["--model", model]
    box = ["--bbox", *map(str, BOX)]
    cases = [(f"tile: raster {name}", ["tile", path], {}, "runs" if name == "huge" else "one line")
             for name, path in rasters.items()]
    cases += [(f"tile: product {name}", ["tile", path], {}, "runs" if name == "granule_file" else "one line")
              for name, path in products.items()]
    cases += [(f"import: {name}", ["import", path, "--store", ref_copy()], {}, "one line, store kept")
              for name, path in embeddings.items()]
    cases += [(f"train: {line}", ["train", "--config", _training_config(w, line)], {}, "one line")
              for line in HOSTILE_SETTINGS]
    cases += [
        ("tile: a catalog of bad items beside a good one", ["tile", catalog], {}, "several lines"),
        ("index: a folder of bad rasters beside a good one", ["index", good_and_bad_folder(w / "mixed"), "--store",
                                                              w / "stores" / "mixed", *tiny], {}, "several lines"),
        ("search --raster a FIFO", ["search", "--raster", w / "fifo.tif", *box, "--store", ref_copy(), *tiny], {},
         "one line"),
        ("search --image a FIFO", ["search", "--image", w / "fifo.tif", "--store", ref_copy(), *tiny], {},
         "one line"),
        ("search --image a 30000² PNG", ["search", "--image", w / "bomb.png", "--store", ref_copy(), *tiny], {},
         "one line"),
        ("search: bbox ±1e308 in EPSG:3857", ["search", "--bbox", "-1e308", "-1e308", "1e308", "1e308", "--crs",
                                             "EPSG:3857", "--store", ref_copy(), *tiny], {}, "one line"),
        ("search: bbox 1e-300 wide", ["search", "--bbox", "0", "0", "1e-300", "1e-300", "--store", ref_copy(),
                                     *tiny], {}, "one line"),
        ("search --min-score nan", ["search", *box, "--min-score", "nan", "--store", ref_copy(), *tiny], {},
         "one line"),
        ("history of the whole globe (control)", ["history", "--bbox", "-180", "-90", "180", "90", "--store",
                                                  ref_copy(), *tiny], {}, "runs"),
        ("remove a symlink loop", ["remove", w / "loop", "--store", ref_copy()], {}, "one line, store kept"),
        ("search --scene a symlink loop", ["search", *box, "--scene", w / "loop", "--store", ref_copy(), *tiny], {},
         "one line"),
        ("GEOSEARCH_CONFIG a folder", ["stats", "--store", ref_copy()], {"GEOSEARCH_CONFIG": str(w / "config")},
         "one line"),
        ("GEOSEARCH_CONFIG a binary file", ["stats", "--store", ref_copy()], {"GEOSEARCH_CONFIG": str(model)},
         "one line"),
        ("index --model with NaN weights", ["index", AERIAL_3857, "--store", w / "stores" / "nan", "--model",
                                            nan_model], {}, "one line"),
    ]
    cases += [(f"stats --check: damaged {name}", ["stats", "--check", "--store", damage_store(ref_copy(), name)], {},
               "one line") for name in STORE_DAMAGE]
    return cases


def _training_config(work: Path, line: str) -> Path:
    path = work / "configs" / f"{abs(hash(line))}.toml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(f'dataset = "{work}"\nout = "{work / "runs" / path.stem}"\nloss = "rll"\n{line}\n')
    return path


def row_hostile_files(shell: Shell, model: Path, ref: Path, workers: int) -> dict:
    cases = hostile_file_cases(shell, model, ref)
    kept = {tuple(args): stored_tiles(args[args.index("--store") + 1]) for _, args, _, expect in cases
            if expect.endswith("store kept")}
    runs = shell.parallel([lambda c=c: shell.run(*c[1], env=c[2], timeout=240) for c in cases], workers)
    results = []
    for (name, args, _, expect), run in zip(cases, runs, strict=True):
        if expect == "several lines":  # a run over good and bad inputs: it fails, saying so, and the good goes on
            problems = [p for p in run.problems(expect_failure=False) if not p.startswith("exit")]
            problems += [] if run.rc == 1 and run.error_lines else [f"exit {run.rc}"]
        else:
            problems = run.problems(expect_failure=expect != "runs")
        if expect.endswith("store kept") and stored_tiles(args[args.index("--store") + 1]) != kept[tuple(args)]:
            problems.append("the store changed")
        results.append({"case": name, "expected": expect, **run.to_dict(), "problems": problems})
    return {"row": "7. hostile files (issue 30)", "cases": len(results),
            "failed": sum(bool(r["problems"]) for r in results),
            "tracebacks": sum("traceback" in r["problems"] for r in results),
            "signal_deaths": sum(run.signal_death for run in runs), "half_indexed_served": None,
            "lost_or_duplicated": sum("the store changed" in r["problems"] for r in results), "http_5xx": None,
            "notes": f"{sum(r['expected'].startswith('one line') for r in results)} refused in one line, "
                     f"{sum(r['expected'] == 'several lines' for r in results)} runs over good and bad inputs, "
                     f"{sum(r['expected'] == 'runs' for r in results)} controls; slowest "
                     f"{max(run.seconds for run in runs):.0f} s",
            "details": results}


# --------------------------------------------------------------------------------------------------------------
# Row 2: kill -9 during index, checks between the kill and the rerun, the rerun


def index_args(store: Path, model: Path, tile_size: int, batch_size: int | None = None) -> list:
    batches = ["--batch-size", batch_size] if batch_size else []
    return ["index", *map(str, shipped_scenes()), "--store", store, "--model", model, "--tile-size", tile_size,
            *batches]


def features(run: Run) -> list[dict]:
    try:
        return json.loads(run.stdout)["features"] if run.rc == 0 else []
    except (json.JSONDecodeError, KeyError, TypeError):
        return []


def kill_point(shell: Shell, model: Path, delay: float, reference: dict[str, set[str]]) -> dict:
    folder = Path(tempfile.mkdtemp(prefix=f"kill-{delay}-", dir=shell.work))
    store = folder / "store"
    args = index_args(store, model, KILL_TILE_SIZE, KILL_BATCH)
    log = folder / "index"
    started = time.perf_counter()
    child = shell.start(*args, "-q", log=log)
    appeared = wait_for(lambda: (store / "edge" / "tiles__scenes").exists() or child.poll() is not None, 120)
    result: dict = {"kill_after_s": delay, "command": shell.shown([*args, "-q"]), "problems": []}
    if not appeared or child.poll() is not None:
        child.wait()
        result["inconclusive"] = "the run ended (or never stored) before the kill"
    time.sleep(max(0.0, delay))
    workers = children_of(child.pid)
    killed_at = time.perf_counter() - started
    result["killed"] = child.poll() is None
    if result["killed"]:
        child.send_signal(signal.SIGKILL)
        child.wait()
        shell.children += workers
    else:
        result["inconclusive"] = f"finished (exit {child.returncode}) before the kill: not a kill test"
    first = Shell.finished(child, result["command"], log, time.perf_counter() - started)
    result["killed_at_s"] = round(killed_at, 2)
    result["first_rc"] = child.returncode
    if not result["killed"]:
        result["problems"] += first.problems(expect_failure=False)

    # What the kill left, read in this process: the store must open at once (its lock went with the process).
    archive_made = True
    try:
        records, tiles = stored_tiles(store)
    except GeosearchError as error:  # killed before the archive was made: the CLI must say so in one line
        archive_made, records, tiles = False, {}, {}
        if "has no collection" not in str(error) and "no store at" not in str(error):
            result["problems"].append(f"store after the kill: {error}")
    except Exception as error:  # reported, never hidden
        result["problems"].append(f"store after the kill: {type(error).__name__}: {error}")
        records, tiles = {}, {}
    complete = {s for s, r in records.items() if r["status"] == "complete"}
    result["at_kill"] = {"archive_made": archive_made,
                         "scenes": {r["path"].rsplit("/", 1)[-1]: r["status"] for r in records.values()},
                         "tiles_stored": sum(map(len, tiles.values())),
                         "tiles_pending": sum(v == "indexing" for t in tiles.values() for v in t.values())}
    pending_ids = [t for found in tiles.values() for t, status in found.items() if status == "indexing"]
    unfinished = [s for s in reference if s not in complete]
    pending_tile = pending_ids[0] if pending_ids else (next(iter(reference[unfinished[0]])) if unfinished else None)
    complete_tile = next(iter(reference[next(iter(complete))])) if complete else None

    # Between the kill and the rerun: the CLI, on the store (one process at a time) and on a copy of it.
    copy = copy_store(store, folder / "copy") if store.exists() else store
    wide = ["-k", "400", "--no-dedup", "--include-self", "--json", "--model", model]
    on_store = [("scenes", ["scenes", "--store", store, "--json"]), ("stats", ["stats", "--store", store, "--json"])]
    if pending_tile:
        on_store.append(("search --tile (unfinished scene)", ["search", "--tile", pending_tile, "--store", store,
                                                              *wide]))
    on_copy = [("search --bbox", ["search", "--bbox", *map(str, BOX), "--store", copy, *wide])]
    if complete_tile:
        on_copy.append(("search --tile (complete scene)", ["search", "--tile", complete_tile, "--store", copy,
                                                           *wide]))
    done = shell.parallel([lambda: [(n, shell.run(*a)) for n, a in on_store],
                           lambda: [(n, shell.run(*a)) for n, a in on_copy]], 2)
    checks = dict(done[0] + done[1])
    listed = json.loads(checks["scenes"].stdout) if checks["scenes"].rc == 0 else []
    listed_complete = {r["scene_id"] for r in listed if r["status"] == "complete"}
    if checks["scenes"].rc == 0 and listed_complete != complete:
        result["problems"].append(f"scenes --json lists {sorted(listed_complete)} complete, the store "
                                  f"{sorted(complete)}")
    served_bad, cli_runs = 0, []
    for name, run in checks.items():
        expect_failure = name == "search --tile (unfinished scene)" or (name in ("scenes", "stats") and
                                                                       not archive_made)
        run_problems = run.problems(expect_failure=expect_failure)
        if name == "search --bbox" and run.rc == 1 and len(run.error_lines) == 1 and "Traceback" not in run.stderr:
            run_problems = []  # a one-line refusal is right when no complete scene lies under the box
        if expect_failure and run.rc == 0:
            served_bad += 1  # the unfinished scene's tile was looked up
        for feature in features(run):
            if feature["properties"]["scene_id"] not in complete:
                served_bad += 1
                run_problems.append(f"served tile {feature['properties']['tile_id']} of unfinished scene "
                                    f"{feature['properties']['scene_id']}")
        if "store in use" in run.stderr:
            run_problems.append("store still locked after the kill")
        cli_runs.append({"check": name, **run.to_dict(), "problems": run_problems,
                         "results": len(features(run))})
        result["problems"] += [f"{name}: {p}" for p in run_problems]
    if checks["stats"].rc == 0:
        stats = json.loads(checks["stats"].stdout)
        served_count = sum(len([v for v in tiles.get(s, {}).values() if v != "indexing"]) for s in complete)
        if stats["tiles"] != served_count or stats["tiles"] != sum(r["tiles"] for r in listed
                                                                     if r["status"] == "complete"):
            result["problems"].append(f"stats counts {stats['tiles']} tiles, the complete scenes hold "
                                      f"{served_count}")
    result["between"] = cli_runs
    result["half_indexed_served"] = served_bad

    # The rerun finishes exactly: the reference's tiles, no more, no fewer, none pending.
    rerun = shell.run(*args, "--json")
    result["rerun"] = {**rerun.to_dict(), "problems": rerun.problems(expect_failure=False)}
    result["problems"] += [f"rerun: {p}" for p in result["rerun"]["problems"]]
    try:
        records, tiles = stored_tiles(store)
        result["final"] = compare_tiles(reference, tiles)
        if any(r["status"] != "complete" for r in records.values()) or set(records) != set(reference):
            result["problems"].append(f"after the rerun: scenes {[r['status'] for r in records.values()]}")
    except Exception as error:
        result["final"] = {"lost": None, "extra": None}
        result["problems"].append(f"store after the rerun: {type(error).__name__}: {error}")
    final = result["final"]
    if final.get("lost") or final.get("extra") or final.get("pending"):
        result["problems"].append(f"after the rerun: {final}")
    if rerun.rc == 0:
        in_store = json.loads(rerun.stdout).get("tiles_in_store")
        if in_store != final.get("expected"):
            result["problems"].append(f"rerun says {in_store} tiles in the store, the clean run "
                                      f"{final.get('expected')}")
    result["signal_deaths"] = sum(r.signal_death for r in (rerun, *checks.values())) + \
        (first.signal_death and not result["killed"])
    result["tracebacks"] = sum("Traceback" in r.stderr for r in (rerun, first, *checks.values()))
    result["workers_alive_after_checks"] = [pid for pid in workers if alive(pid)]
    return result


def row_kill(shell: Shell, model: Path, delays: list[float], reference: dict[str, set[str]]) -> dict:
    points = []
    for delay in delays:
        points.append(kill_point(shell, model, delay, reference))
        if "inconclusive" in points[-1]:  # the run ended before the kill: once more, killed sooner
            points.append(kill_point(shell, model, round(delay / 2, 2), reference) | {"retry_of": delay})
    lost = sum((p["final"].get("lost") or 0) + (p["final"].get("extra") or 0) for p in points)
    states = "; ".join(f"{p['kill_after_s']} s: " + (", ".join(f"{s}" for s in sorted(
        p["at_kill"]["scenes"].values())) or ("no scene record" if p["at_kill"]["archive_made"] else
                                              "archive not made yet")) +
                       f", {p['at_kill']['tiles_pending']} tiles pending" for p in points)
    return {"row": "2. kill -9 during index, then rerun", "cases": sum("inconclusive" not in p for p in points),
            "failed": sum(bool(p["problems"]) for p in points),
            "tracebacks": sum(p["tracebacks"] for p in points),
            "signal_deaths": sum(p["signal_deaths"] for p in points),
            "half_indexed_served": sum(p["half_indexed_served"] for p in points), "lost_or_duplicated": lost,
            "http_5xx": None, "notes": f"at the kill: {states}" + "".join(
                f"; {p['kill_after_s']} s inconclusive: {p['inconclusive']}" for p in points if "inconclusive" in p),
            "details": points}


# --------------------------------------------------------------------------------------------------------------
# Row 3: a second process on a store in use


def in_use_problems(run: Run, overlapped: bool) -> list[str]:
    """A command that ran wholly while another process held the store must be refused with one line, "store in
    use", exit 1. One that ended after the holder is inconclusive unless it was refused."""
    problems = run.problems(expect_failure=overlapped or run.rc != 0)
    if "store in use" in run.stderr:  # by the first run or by another of the commands: right either way
        return problems + ([f"exit {run.rc}, not 1"] if run.rc != 1 else [])
    if not overlapped:
        return [*problems, "inconclusive: ended after the first had ended"]
    return [*problems, "not refused as 'store in use'" if run.rc else "not refused: it ran while the store was held"]


def row_two_processes(shell: Shell, model: Path, expected: dict[str, set[str]]) -> dict:
    """`index` writes a store; four other commands start on it together once its store appears. The index run
    runs at nice 19, so that the others reach the store while it still runs, on a busy 2-core machine too."""
    folder = shell.work / "two"
    folder.mkdir()
    store = folder / "store"
    args = index_args(store, model, KILL_TILE_SIZE)
    log = folder / "index"
    started = time.perf_counter()
    first = shell.start(*args, "--json", log=log, nice=19)
    ended: list[float] = []
    waiter = threading.Thread(target=lambda: (first.wait(), ended.append(time.perf_counter())))
    waiter.start()
    wait_for(lambda: (store / "edge" / "tiles__scenes").exists() or first.poll() is not None, 120)
    seconds = [
        ("stats", ["stats", "--store", store]),
        ("search --bbox", ["search", "--bbox", *map(str, BOX), "--store", store, "--model", model]),
        ("index (another scene)", ["index", str(LANDSAT8_224078), "--store", store, "--model", model,
                                   "--tile-size", KILL_TILE_SIZE]),
        ("remove", ["remove", "x", "--store", store]),
    ]

    def second(name: str, second_args: list) -> dict:
        run = shell.run(*second_args)
        holder = re.search(r"store in use by another geosearch process \(pid (\d+)\)", run.stderr)
        # the first still ran when this one ended, or refused it
        overlapped = not ended or bool(holder and int(holder.group(1)) == first.pid)
        refused_by = None if holder is None else "the index run" if int(holder.group(1)) == first.pid else \
            "another of these commands"
        return {"case": f"while index runs: {name}", **run.to_dict(), "overlapped": overlapped,
                "refused_by": refused_by, "problems": in_use_problems(run, overlapped),
                "signal_death": run.signal_death}

    cases = shell.parallel([lambda n=n, a=a: second(n, a) for n, a in seconds], len(seconds))
    waiter.join(timeout=600)
    run = Shell.finished(first, "nice -n 19 " + shell.shown([*args, "--json"]), log,
                         (ended or [time.perf_counter()])[0] - started)
    final = compare_tiles(expected, stored_tiles(store)[1])
    first_problems = run.problems(expect_failure=False)
    if final["lost"] or final["extra"] or final["pending"]:
        first_problems.append(f"final store: {final}")
    cases.append({"case": "the first index run", **run.to_dict(), "final": final, "problems": first_problems,
                  "signal_death": run.signal_death, "overlapped": False})
    return {"row": "3. two processes on one store", "cases": cases, "lost_or_duplicated": final["lost"] +
            final["extra"]}


def serve_refusals(shell: Shell, store: Path, model: Path) -> list[dict]:
    """While `serve` holds the store, other processes on it: today's rule (being changed) refuses them with "store
    in use"; commands that go through the server instead must succeed, or be refused in one line."""
    tries = [("while serve holds the store: stats", ["stats", "--store", store], {}),
             ("while serve holds the store: stats with GEOSEARCH_TOKEN", ["stats", "--store", store],
              {"GEOSEARCH_TOKEN": TOKEN}),
             ("while serve holds the store: search with GEOSEARCH_TOKEN",
              ["search", "--bbox", *map(str, BOX), "--store", store, "--model", model, "-k", "3"],
              {"GEOSEARCH_TOKEN": TOKEN}),
             ("while serve holds the store: remove", ["remove", "x", "--store", store], {}),
             ("while serve holds the store: a second serve", ["serve", "--store", store, "--model", model,
                                                              "--port", str(_free_port())], {})]
    runs = shell.parallel([lambda a=a, e=e: shell.run(*a, env=e, timeout=90) for _, a, e in tries], 2)
    cases = []
    for (name, _, _), run in zip(tries, runs, strict=True):
        problems = run.problems(expect_failure=run.rc != 0)
        outcome = "went through the server" if run.rc == 0 else \
            ("expected refusal: store in use" if "store in use" in run.stderr else "refused")
        cases.append({"case": name, **run.to_dict(), "command": run.command.replace(TOKEN, "T"),
                      "overlapped": True, "outcome": outcome, "problems": problems, "signal_death": run.signal_death})
    return cases


def finish_row_two(row: dict, refusals: list[dict]) -> dict:
    cases = row["cases"] + refusals
    inconclusive = sum(any(p.startswith("inconclusive") for p in c["problems"]) for c in cases)
    return {"row": row["row"], "cases": len(cases),
            "failed": sum(any(not p.startswith("inconclusive") for p in c["problems"]) for c in cases),
            "tracebacks": sum("Traceback" in c["stderr"] for c in cases),
            "signal_deaths": sum(c["signal_death"] for c in cases), "half_indexed_served": None,
            "lost_or_duplicated": row["lost_or_duplicated"], "http_5xx": None,
            "notes": f"{sum(c.get('refused_by') == 'the index run' for c in cases)} refused by the index run, "
                     f"{sum(c.get('refused_by') == 'another of these commands' for c in cases)} by another "
                     f"command, {inconclusive} inconclusive (ran after the index run had ended); while serve held "
                     "the store: " +
                     ", ".join(f"{c['case'].split(': ', 1)[1]} {c['outcome']}" for c in cases if "outcome" in c),
            "details": cases}


# --------------------------------------------------------------------------------------------------------------
# Row 6: the store's file system is full, before the run and during it


def fill(path: Path, leave_mb: float = 0) -> None:
    """Write zeros to `path` until the file system has `leave_mb` MiB free (or none)."""
    block = b"\0" * 2**20
    with contextlib.suppress(OSError), open(path, "ab") as out:  # no space left: full already
        while shutil.disk_usage(path.parent).free > leave_mb * 2**20 + len(block):
            out.write(block)
            out.flush()
        while not leave_mb:
            out.write(block[:4096])
            out.flush()


def row_full_disk(shell: Shell, model: Path, reference: dict[str, set[str]]) -> dict:
    """On a 600 MiB tmpfs: index with too little space (refused in one line, nothing written); then, in another
    store, a disk that fills while index writes (one line, exit 1, no signal death); `stats` on the full disk; the
    rerun once space is freed must leave the reference's tiles exactly."""
    disk = shell.work / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600m", "tmpfs", str(disk)], capture_output=True,
                             text=True)
    row = {"row": "6. store on a full file system (tmpfs)", "half_indexed_served": None, "http_5xx": None}
    if mounted.returncode != 0:
        return row | {"cases": 0, "failed": 0, "tracebacks": 0, "signal_deaths": 0, "lost_or_duplicated": None,
                      "notes": f"not run: cannot mount a tmpfs ({mounted.stderr.strip()})", "details": []}
    cases, filler = [], disk / "filler"
    try:
        args = index_args(disk / "refused", model, KILL_TILE_SIZE, KILL_BATCH)
        fill(filler, leave_mb=100)
        run = shell.run(*args)
        problems = run.problems(expect_failure=True)
        if "MiB free" not in run.stderr:
            problems.append("not refused up front for want of space")
        left = sum(f.stat().st_blocks * 512 for f in (disk / "refused").rglob("*") if f.is_file())
        cases.append({"case": "index with 100 MiB free", **run.to_dict(), "problems": problems,
                      "left_on_disk_mib": round(left / 2**20, 1)})
        filler.unlink(missing_ok=True)

        store = disk / "store"
        args = index_args(store, model, KILL_TILE_SIZE, KILL_BATCH)
        log = shell.work / "disk-index"
        child = shell.start(*args, log=log)
        started = time.perf_counter()
        wait_for(lambda: any((store / "edge" / "tiles" / "segments").glob("*/vector_storage")) or
                 child.poll() is not None, 120)
        time.sleep(1.0)
        still_running = child.poll() is None
        fill(filler)
        child.wait(timeout=300)
        run = Shell.finished(child, shell.shown(args), log, time.perf_counter() - started)
        problems = run.problems(expect_failure=still_running)
        if not still_running:
            problems.append("inconclusive: the run ended before the disk was filled")
        cases.append({"case": "the disk fills while index writes", **run.to_dict(), "problems": problems})

        run = shell.run("stats", "--store", store, "--json")
        cases.append({"case": "stats on the full disk", **run.to_dict(),
                      "problems": run.problems(expect_failure=run.rc != 0)})
        filler.unlink(missing_ok=True)

        run = shell.run(*args, "--json")
        problems = run.problems(expect_failure=False)
        final = compare_tiles(reference, stored_tiles(store)[1]) if run.rc == 0 else {"lost": None, "extra": None}
        if final.get("lost") or final.get("extra") or final.get("pending"):
            problems.append(f"final store: {final}")
        cases.append({"case": "the rerun once space is freed", **run.to_dict(), "final": final,
                      "problems": problems})
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)
    final = cases[-1].get("final", {}) if cases else {}
    real = [c for c in cases if not any(p.startswith("inconclusive") for p in c["problems"])]
    return row | {"cases": len(cases), "failed": sum(bool(c["problems"]) for c in real),
                  "tracebacks": sum("Traceback" in c["stderr"] for c in cases),
                  "signal_deaths": sum(c["rc"] is not None and (c["rc"] < 0 or c["rc"] > 128) for c in cases),
                  "lost_or_duplicated": None if final.get("lost") is None else final["lost"] + final["extra"],
                  "notes": "; ".join(f"{c['case']}: exit {c['rc']}" for c in cases) +
                  (f" (the refused run left {cases[0]['left_on_disk_mib']} MiB of store files)" if cases else ""),
                  "details": cases}


# --------------------------------------------------------------------------------------------------------------
# Rows 4 and 5: the server


class Served:
    """`geosearch serve` in its own process, its log in a file."""

    def __init__(self, shell: Shell, store: Path, root: Path, model: Path):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.auth = {"Authorization": f"Bearer {TOKEN}"}
        self.log = shell.work / "serve.log"
        args = ["serve", "--store", store, "--port", self.port, "--root", root, "--token", TOKEN, "--model", model]
        self.command = shell.shown(args).replace(TOKEN, "T")
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(shell.argv(args), stdout=log, stderr=subprocess.STDOUT, cwd=shell.work,
                                            env=shell.env)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/health", headers=self.auth, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
            if self.process.poll() is not None:
                raise RuntimeError(f"serve ended: {self.log.read_text()[-2000:]}")
        self.http = httpx.Client(base_url=self.url, headers=self.auth, timeout=120)

    def tracebacks(self) -> int:
        return self.log.read_text(errors="replace").count("Traceback")

    def exceptions(self) -> list[str]:
        """The last line of each traceback in the log: the exception and its message."""
        lines, found, inside, frame = self.log.read_text(errors="replace").splitlines(), [], False, ""
        for i, line in enumerate(lines):
            if line.startswith("Traceback"):
                inside = True
            elif inside and line.startswith("  File "):
                frame = line.strip()
            elif inside and line and not line.startswith((" ", "\t")) and \
                    (i + 1 == len(lines) or not lines[i + 1].startswith(" ")):
                found.append(f"{line[:300]} (last frame: {frame})")
                inside = False
        return found

    def job(self, paths: list[str], timeout: float = 120) -> dict:
        """POST /index, then the job's end (or its state at the timeout)."""
        response = self.http.post("/index", json={"paths": paths})
        if response.status_code != 202:
            return {"status": response.status_code, "state": None, "body": response.text[:500]}
        job_id, deadline = response.json()["job_id"], time.monotonic() + timeout
        state = {"state": "queued"}
        while state.get("state") in ("queued", "running") and time.monotonic() < deadline:
            time.sleep(0.2)
            state = self.http.get(f"/jobs/{job_id}").json()
        return {"status": 202, **state}

    def raw(self, data: bytes, timeout: float = 30) -> tuple[int | None, bytes]:
        """Bytes no well-behaved client sends; the status of the answer, or None when none came."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
            s.sendall(data)
            answer = b""
            try:
                while chunk := s.recv(65536):
                    answer += chunk
            except (TimeoutError, ConnectionResetError):
                pass
        match = re.match(rb"HTTP/1\.[01] (\d{3})", answer)
        return (int(match.group(1)) if match else None), answer[:300]

    def stop(self) -> int | None:
        self.http.close()
        self.process.terminate()
        try:
            return self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return None


def hostile_cases(served: Served, root: Path, outside: Path, tile_id: str) -> list[tuple[str, str, Callable]]:
    """(name, expected: '4xx', '401', '2xx'…, request): each request returns (status, body). Each goes on a
    connection of its own, so that one that the server closes (after a 5xx) does not fail the next."""
    url = served.url

    def fresh(method: str, path: str, **kwargs) -> tuple[int, bytes]:
        headers = served.auth | kwargs.pop("headers", {})
        return _answer(httpx.request(method, url + path, headers=headers, timeout=60, **kwargs))

    def get(path: str, **kwargs) -> Callable:
        return lambda: fresh("GET", path, **kwargs)

    def post(path: str, **kwargs) -> Callable:
        return lambda: fresh("POST", path, **kwargs)

    def bare(method: str, path: str, **kwargs) -> Callable:
        return lambda: _answer(httpx.request(method, url + path, timeout=60, **kwargs))

    def raw_json(path: str, body: bytes) -> Callable:
        return post(path, content=body, headers={"content-type": "application/json"})

    def raw(data: bytes) -> Callable:
        return lambda: served.raw(data)

    host = f"Host: 127.0.0.1:{served.port}\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n".encode()
    scene = str(root / LANDSAT8_224077.name)
    box = {"bbox": BOX}
    deep = b"[" * 30000 + b"]" * 30000
    return [
        # who asks
        ("no token", "401", bare("GET", "/health")),
        ("wrong token", "401", bare("GET", "/health", headers={"Authorization": "Bearer nope"})),
        ("the token without 'Bearer'", "401", bare("GET", "/health", headers={"Authorization": TOKEN})),
        ("'Basic' and the token", "401", bare("GET", "/health", headers={"Authorization": f"Basic {TOKEN}"})),
        ("the token with a suffix", "401", bare("GET", "/health", headers={"Authorization": f"Bearer {TOKEN}x"})),
        ("the token in the query string", "401", bare("GET", f"/health?token={TOKEN}")),
        ("/openapi.json without a token", "401", bare("GET", "/openapi.json")),
        ("a 100 KB body without a token", "401", bare("POST", "/search", content=b"[" + b"1," * 50_000 + b"1]")),
        ("a 64 KiB Authorization header", "4xx", bare("GET", "/health", headers={"Authorization": "Bearer " +
                                                                                 "x" * 65536})),
        # paths in URLs
        ("NUL in a tile id (%00)", "4xx", get("/tiles/%00/thumbnail.png")),
        ("../ in a tile id (%2F)", "4xx", get("/tiles/..%2F..%2Fetc%2Fpasswd/thumbnail.png")),
        ("NUL in a job id", "4xx", get("/jobs/%00")),
        ("a raw NUL byte in the request line", "4xx", raw(b"GET /health\x00 HTTP/1.1\r\n" + host + b"\r\n")),
        ("a raw ../ path", "4xx", raw(b"GET /../../etc/passwd HTTP/1.1\r\n" + host + b"\r\n")),
        ("unknown tile thumbnail", "404", get(f"/tiles/{UNKNOWN_TILE}/thumbnail.png")),
        ("thumbnail size=100000", "422", get(f"/tiles/{tile_id}/thumbnail.png", params={"size": 100000})),
        ("thumbnail size=abc", "422", get(f"/tiles/{tile_id}/thumbnail.png", params={"size": "abc"})),
        ("thumbnail of a real tile (control)", "200", get(f"/tiles/{tile_id}/thumbnail.png")),
        ("unknown job", "404", get(f"/jobs/{UNKNOWN_TILE}")),
        ("unknown endpoint", "404", get("/admin")),
        ("GET /search", "405", get("/search")),
        ("DELETE /scenes", "405", lambda: fresh("DELETE", "/scenes")),
        # POST /index: what it may read
        ("index ROOT/../etc/passwd", "403", post("/index", json={"paths": [f"{root}/../../../../etc/passwd"]})),
        ("index /etc/passwd", "403", post("/index", json={"paths": ["/etc/passwd"]})),
        ("index a symlink out of the root", "403", post("/index", json={"paths": [str(root / "escape.tif")]})),
        ("index NUL in a path", "422", post("/index", json={"paths": [f"{root}/a\x00b.tif"]})),
        ("index a missing file", "404", post("/index", json={"paths": [str(root / "missing.tif")]})),
        ("index an empty path", "4xx", post("/index", json={"paths": [""]})),
        ("index a 5000-character name", "4xx", post("/index", json={"paths": [f"{root}/{'a' * 5000}.tif"]})),
        ("index a lone surrogate in a path", "4xx", raw_json("/index", b'{"paths": ["' + str(root).encode() +
                                                             b'/\\ud800.tif"]}')),
        ("index invalid UTF-8", "4xx", raw_json("/index", b'{"paths": ["' + str(root).encode() + b'/\xff.tif"]}')),
        ("index no paths", "422", post("/index", json={"paths": []})),
        ("index paths as a string", "422", post("/index", json={"paths": "x"})),
        ("index paths of numbers", "422", post("/index", json={"paths": [1]})),
        ("index force 'maybe'", "422", post("/index", json={"paths": [scene], "force": "maybe"})),
        ("index 10,001 paths", "4xx", post("/index", json={"paths": [scene] * 10_001})),
        # POST /search: bodies
        ("malformed JSON", "422", raw_json("/search", b"{not json")),
        ("a JSON list", "422", post("/search", json=[1, 2])),
        ("JSON nested 30,000 deep", "4xx", raw_json("/search", deep)),
        ("bbox nested 30,000 deep", "4xx", raw_json("/search", b'{"bbox": ' + deep[:-2] + b"}")),
        ("bbox a string", "422", post("/search", json={"bbox": "abc"})),
        ("bbox of NaN", "4xx", raw_json("/search", b'{"bbox": [NaN, NaN, NaN, NaN]}')),
        ("bbox of Infinity", "4xx", raw_json("/search", b'{"bbox": [-Infinity, -1, Infinity, 1]}')),
        ("bbox of 1e309", "4xx", raw_json("/search", b'{"bbox": [-1e309, -1, 1e309, 1]}')),
        ("bbox of 1e308", "4xx", post("/search", json={"bbox": [-1e308, -1e308, 1e308, 1e308]})),
        ("k = 10**9", "422", post("/search", json=box | {"k": 10**9})),
        ("k = 10**30", "422", post("/search", json=box | {"k": 10**30})),
        ("k = -1", "422", post("/search", json=box | {"k": -1})),
        ("k = 1.5", "422", post("/search", json=box | {"k": 1.5})),
        ("k = 1000, the most (control)", "200", post("/search", json=box | {"k": 1000})),
        ("bbox 1e-300 wide", "4xx", post("/search", json={"bbox": [0, 0, 1e-300, 1e-300]})),
        ("bbox thinner than a pixel over the data (control)", "200",
         post("/search", json={"bbox": [-54.8, -25.2, -54.79999999999999, -25.19999999999999]})),
        ("history of the whole globe (control)", "200", post("/history", json={"bbox": [-180, -90, 180, 90]})),
        ("min_score NaN", "4xx", raw_json("/search", b'{"bbox": [-54.83, -25.22, -54.78, -25.17], '
                                                     b'"min_score": NaN}')),
        ("detect with threshold NaN", "4xx", raw_json("/detect", b'{"tile_id": "' + tile_id.encode() + b'", '
                                                                 b'"threshold": NaN}')),
        ("tile_id unknown", "404", post("/search", json={"tile_id": UNKNOWN_TILE})),
        ("tile_id ../../etc/passwd", "4xx", post("/search", json={"tile_id": "../../etc/passwd"})),
        ("tile_id empty", "4xx", post("/search", json={"tile_id": ""})),
        ("tile_id of 50,000 characters", "4xx", post("/search", json={"tile_id": "x" * 50_000})),
        ("crs with a NUL", "422", post("/search", json=box | {"crs": "EPSG:4326\x00"})),
        ("crs a lone surrogate", "4xx", raw_json("/search", b'{"bbox": [-54.83, -25.22, -54.78, -25.17], '
                                                            b'"crs": "\\ud800"}')),
        ("crs EPSG:-1", "4xx", post("/search", json=box | {"crs": "EPSG:-1"})),
        ("crs of 60,000 characters", "4xx", post("/search", json=box | {"crs": "+proj=" + "x" * 60_000})),
        ("within of NaN", "4xx", raw_json("/search", b'{"bbox": [-54.83, -25.22, -54.78, -25.17], '
                                                     b'"within": [NaN, NaN, NaN, NaN]}')),
        ("scenes a lone surrogate", "4xx", raw_json("/search", b'{"bbox": [-54.83, -25.22, -54.78, -25.17], '
                                                               b'"scenes": ["\\ud800"]}')),
        ("after 9999-99-99", "4xx", post("/search", json=box | {"after": "9999-99-99"})),
        ("after a lone surrogate", "4xx", raw_json("/search", b'{"bbox": [-54.83, -25.22, -54.78, -25.17], '
                                                              b'"after": "\\ud800"}')),
        ("text/plain body", "4xx", post("/search", content=json.dumps(box).encode(),
                                        headers={"content-type": "text/plain"})),
        # sizes
        ("content-length 10**9, small body", "413", raw(b"POST /search HTTP/1.1\r\n" + host +
                                                        b"Content-Type: application/json\r\nContent-Length: "
                                                        b"1000000000\r\n\r\n{}")),
        ("content-length abc", "4xx", raw(b"POST /search HTTP/1.1\r\n" + host + b"Content-Length: abc\r\n\r\n{}")),
        ("content-length -5", "4xx", raw(b"POST /search HTTP/1.1\r\n" + host + b"Content-Length: -5\r\n\r\n{}")),
        ("a body of 64 KiB + 1", "413", raw_json("/search", b" " * (64 * 1024 + 1))),
        ("a chunked body over 64 KiB", "413", post("/search", content=iter([b"[" + b"1," * 40_000, b"1]"]),
                                                   headers={"content-type": "application/json"})),
    ]


def _answer(response: httpx.Response) -> tuple[int, bytes]:
    return response.status_code, response.content[:300]


def _expected(expect: str, status: int | None) -> bool:
    if status is None:
        return False
    if expect.endswith("xx"):
        return status // 100 == int(expect[0])
    return status == int(expect)


def row_hostile(served: Served, root: Path, outside: Path, tile_id: str) -> dict:
    before = served.tracebacks()
    (root / "escape.tif").symlink_to(outside / "secret.tif")
    results = []
    for name, expect, request in hostile_cases(served, root, outside, tile_id):
        try:
            status, body = request()
            error = None
        except (httpx.HTTPError, OSError) as exc:
            status, body, error = None, b"", f"{type(exc).__name__}: {exc}"
        problems = []
        if status is not None and status >= 500:
            problems.append(f"{status}")
        elif not _expected(expect, status):
            problems.append(f"expected {expect}, got {status if status is not None else 'no answer'}")
        if b"Traceback" in body:
            problems.append("traceback in the answer")
        results.append({"case": name, "expected": expect, "status": status, "error": error,
                        "body": body.decode(errors="replace")[:300], "problems": problems})

    # Index jobs that must end failed (or be refused), never index what lies outside the roots, never hang.
    (root / "notes.tif").write_text("not a raster")
    write_mosaic(AERIAL_3857, root / "outside.vrt", 1, 1)  # a VRT under the root, its pixels outside it
    product = landsat_product(root / "product", files=dict.fromkeys(  # its MTL names bands outside the root
        (2, 3, 4), os.path.relpath(outside / "secret.tif", root / "product")))
    (root / "item.json").write_text(json.dumps(stac_item("decoy", str(outside / "secret.tif"))))
    (root / "item.json#visual").write_text("a file of that name, not the item's asset")
    jobs = [("job: a non-raster under the root", [str(root / "notes.tif")], "failed"),
            ("job: an MTL under the root naming bands outside it", [str(product / f"{LANDSAT_PREFIX}_MTL.txt")],
             "failed"),
            ("job: a file named ITEM.json#ASSET beside an item whose asset is outside",
             [str(root / "item.json#visual")], "failed"),
            ("job: a folder under the root", [str(root)], "failed"),
            ("job: a VRT under the root reading a raster outside it", [str(root / "outside.vrt")], "refused")]
    for name, paths, expect in jobs:
        state = served.job(paths)
        problems = []
        if state.get("status", 0) >= 500:
            problems.append(f"{state['status']}")
        elif expect == "failed" and state.get("state") not in ("failed", None):
            problems.append(f"job {state.get('state')}")
        elif expect == "refused" and state.get("state") == "done" and state.get("summary", {}).get("indexed"):
            problems.append(f"indexed {AERIAL_3857.name} from outside the roots through a VRT under one")
        results.append({"case": name, "expected": expect, "status": state.get("status"),
                        "state": state.get("state"), "errors": state.get("errors"), "problems": problems})
    (root / "escape.tif").unlink()
    fives = sum(r["status"] is not None and r["status"] >= 500 for r in results)
    return {"row": "4. hostile HTTP (serve --root --token)", "cases": len(results),
            "failed": sum(bool(r["problems"]) for r in results), "tracebacks": served.tracebacks() - before,
            "signal_deaths": 0 if served.process.poll() is None else 1, "half_indexed_served": None,
            "lost_or_duplicated": None, "http_5xx": fives,
            "notes": f"{sum(r['status'] is not None and 400 <= r['status'] < 500 for r in results)} answered 4xx, "
                     f"{sum(r['status'] is None for r in results)} closed without an answer",
            "details": results}


def fifo_job(served: Served, root: Path) -> dict:
    """A FIFO under the root passes the path checks; the job that opens it must not hold the one-job queue
    forever. Measured after row 5, since it may block the queue; the bench opens the FIFO's other end after 10 s."""
    fifo = root / "pipe.tif"
    os.mkfifo(fifo)
    response = served.http.post("/index", json={"paths": [str(fifo)]})
    result = {"case": "job: a FIFO under the root", "status": response.status_code, "problems": []}
    if response.status_code != 202:
        result["problems"] += [str(response.status_code)] if response.status_code >= 500 else []
        return result
    job_id = response.json()["job_id"]
    ended = wait_for(lambda: served.http.get(f"/jobs/{job_id}").json()["state"] not in ("queued", "running"), 10,
                     step=0.5)
    if not ended:
        result["problems"].append("the job still runs after 10 s (blocked opening the FIFO; the index queue is "
                                  "held): released by the bench")

        def release() -> bool:  # the reader is blocked in open(): an end opened for writing and closed gives EOF
            with contextlib.suppress(OSError):
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            return served.http.get(f"/jobs/{job_id}").json()["state"] not in ("queued", "running")

        wait_for(release, 30, step=0.5)
    result["state"] = served.http.get(f"/jobs/{job_id}").json()["state"]
    return result


@dataclass
class Observed:
    """What the clients and the observer saw during one load level."""

    requests: list[tuple] = field(default_factory=list)  # (endpoint, sent, received, status, error, scene ids)
    polls: list[tuple] = field(default_factory=list)  # (sent, received, {scene_id: status}, {scene_id: path})
    lock: threading.Lock = field(default_factory=threading.Lock)


def load_level(served: Served, root: Path, clients: int, seconds: float, mosaic_source: Path) -> dict:
    seen = Observed()
    over, jobs_over = threading.Event(), threading.Event()
    jobs: list[dict] = []
    job_running = threading.Event()

    def poll_scenes(http: httpx.Client) -> tuple[int, list]:
        response = http.get("/scenes")
        return response.status_code, response.json()["features"] if response.status_code == 200 else []

    def note_scenes(sent: float, received: float, found: list) -> None:
        statuses = {f["properties"]["scene_id"]: f["properties"]["status"] for f in found}
        paths = {f["properties"]["scene_id"]: f["properties"]["path"] for f in found}
        with seen.lock:
            seen.polls.append((sent, received, statuses, paths))

    def run_jobs() -> None:
        with httpx.Client(base_url=served.url, headers=served.auth, timeout=120) as http:
            n = 0
            while not over.is_set():
                path = write_mosaic(mosaic_source, root / f"mosaic-{clients}c-{n}.vrt", 2, 2)
                job = {"path": str(path), "submitted": time.monotonic()}
                response = http.post("/index", json={"paths": [str(path)]})
                job["status"] = response.status_code
                if response.status_code != 202:
                    job["ended"], job["state"] = time.monotonic(), None
                    jobs.append(job)
                    job_running.set()
                    break
                job_id, state = response.json()["job_id"], {"state": "queued"}
                deadline = time.monotonic() + seconds + 300
                while state["state"] in ("queued", "running") and time.monotonic() < deadline:
                    time.sleep(0.25)
                    state = http.get(f"/jobs/{job_id}").json()
                    if state["state"] == "running":
                        job_running.set()
                job |= {"ended": time.monotonic(), "state": state["state"], "summary": state.get("summary"),
                        "errors": state.get("errors"), "progress": state.get("progress")}
                jobs.append(job)
                job_running.set()
                n += 1
        jobs_over.set()

    def observe() -> None:
        with httpx.Client(base_url=served.url, headers=served.auth, timeout=120) as http:
            while not jobs_over.is_set():
                sent = time.monotonic()
                try:
                    status, found = poll_scenes(http)
                except httpx.HTTPError:
                    continue
                if status == 200:
                    note_scenes(sent, time.monotonic(), found)
                time.sleep(0.2)
            sent = time.monotonic()
            note_scenes(sent, time.monotonic(), poll_scenes(http)[1])

    def client(seed: int) -> None:
        boxes = random_boxes(100, seed)
        with httpx.Client(base_url=served.url, headers=served.auth, timeout=120) as http:
            i = 0
            while not over.is_set():
                endpoint = ("GET /scenes", "GET /health")[i % 10] if i % 10 < 2 else "POST /search"
                sent, status, error, scenes = time.monotonic(), None, None, set()
                try:
                    if endpoint == "POST /search":
                        response = http.post("/search", json={"bbox": boxes[i % len(boxes)], "k": 50,
                                                              "include_self": True, "dedup": False})
                        if response.status_code == 200:
                            scenes = {f["properties"]["scene_id"] for f in response.json()["features"]}
                    elif endpoint == "GET /scenes":
                        status, found = poll_scenes(http)
                        response = None
                        note_scenes(sent, time.monotonic(), found)
                    else:
                        response = http.get("/health")
                    status = response.status_code if response is not None else status
                except (httpx.HTTPError, ValueError) as exc:
                    error = f"{type(exc).__name__}: {exc}"[:200]
                with seen.lock:
                    seen.requests.append((endpoint, sent, time.monotonic(), status, error, scenes))
                i += 1

    before = served.tracebacks()
    manager = threading.Thread(target=run_jobs)
    observer = threading.Thread(target=observe)
    manager.start()
    observer.start()
    job_running.wait(timeout=120)
    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(seed,)) for seed in range(clients)]
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    over.set()
    for thread in threads:
        thread.join()
    wall = time.monotonic() - started
    manager.join()
    observer.join()

    # A tile of a job's scene in an answer is half-indexed if a GET /scenes sent after the answer came still
    # shows that scene unfinished (a new scene only goes from absent to indexing to complete).
    job_paths = {str(Path(j["path"]).resolve()) for j in jobs}
    job_scenes = {s for *_, paths in seen.polls for s, p in paths.items() if p in job_paths}
    last_unfinished: dict[str, float] = {}
    for sent, _, statuses, _ in seen.polls:
        for scene in job_scenes:
            if statuses.get(scene) != "complete":
                last_unfinished[scene] = max(last_unfinished.get(scene, 0.0), sent)
    known = {s for _, _, statuses, _ in seen.polls for s in statuses}
    violations, with_job_tiles, unknown = [], 0, 0
    for endpoint, _, received, _, _, scenes in seen.requests:
        if endpoint != "POST /search":
            continue
        with_job_tiles += bool(scenes & job_scenes)
        unknown += len(scenes - known)
        violations += [(scene, round(received - started, 2)) for scene in scenes & job_scenes
                       if last_unfinished.get(scene, 0.0) > received]
    timed = [(r[2] - r[1]) for r in seen.requests if r[1] >= started]
    search_timed = [(r[2] - r[1]) for r in seen.requests if r[0] == "POST /search"]
    failed = [r for r in seen.requests if r[3] != 200]
    covered = sum(max(0.0, min(j["ended"], started + wall) - max(j["submitted"], started)) for j in jobs)
    level = {"clients": clients, "seconds": round(wall, 1), "requests": len(seen.requests),
             "failed": len(failed), "http_5xx": sum(r[3] is not None and r[3] >= 500 for r in failed),
             "errors": sorted({r[4] or str(r[3]) for r in failed})[:10],
             "req_per_s": round(len(seen.requests) / wall, 2), **percentiles(timed),
             "search": percentiles(search_timed), "polls": len(seen.polls),
             "jobs": len(jobs), "jobs_done": sum(j.get("state") == "done" for j in jobs),
             "job_states": [j.get("state") for j in jobs], "job_errors": [j.get("errors") for j in jobs if
                                                                          j.get("errors")],
             "job_cover": round(covered / wall, 2), "answers_with_job_tiles": with_job_tiles,
             "half_indexed_served": len(violations), "violations": violations[:20], "unknown_scenes": unknown,
             "tracebacks": served.tracebacks() - before, "server_alive": served.process.poll() is None}
    level["problems"] = ([f"{level['failed']} failed requests"] if level["failed"] else []) + \
        ([f"{level['jobs'] - level['jobs_done']} jobs not done"] if level["jobs_done"] < level["jobs"] else []) + \
        ([f"{len(violations)} half-indexed tiles served"] if violations else []) + \
        ([f"{unknown} tiles of unknown scenes"] if unknown else [])
    return level


def row_load(level: dict) -> dict:
    return {"row": f"5. {level['clients']} clients while index jobs run", "cases": level["requests"],
            "failed": level["failed"], "tracebacks": level["tracebacks"],
            "signal_deaths": 0 if level["server_alive"] else 1,
            "half_indexed_served": level["half_indexed_served"], "lost_or_duplicated": None,
            "http_5xx": level["http_5xx"],
            "notes": f"{level['req_per_s']} req/s, p50 / p95 {level['p50_ms']} / {level['p95_ms']} ms (search "
                     f"{level['search']['p50_ms']} / {level['search']['p95_ms']} ms); {level['jobs_done']} of "
                     f"{level['jobs']} jobs done, a job ran {level['job_cover']:.0%} of the time; "
                     f"{level['answers_with_job_tiles']} answers held tiles of the jobs' scenes",
            "details": level}


# --------------------------------------------------------------------------------------------------------------
# Report


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    try:
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    except ImportError:
        gpu = "no GPU"
    return f"{os.cpu_count()} cores ({cpu}), {ram:.0f} GiB RAM, {gpu}; Python {platform.python_version()}"


def cell(value) -> str:
    return "–" if value is None else str(value)


def in_order(rows: list[dict]) -> list[dict]:
    return sorted(rows, key=lambda r: int(r["row"].split(".")[0]))


def table(rows: list[dict]) -> str:
    lines = ["| row | cases | failed | tracebacks | signal deaths | half-indexed tiles served | lost / duplicated "
             "tiles | 5xx | notes |", "|---|---|---|---|---|---|---|---|---|"]
    for r in in_order(rows):
        lines.append(f"| {r['row']} | {r['cases']} | {r['failed']} | {r['tracebacks']} | {r['signal_deaths']} | "
                     f"{cell(r['half_indexed_served'])} | {cell(r['lost_or_duplicated'])} | {cell(r['http_5xx'])} "
                     f"| {r['notes']} |")
    return "\n".join(lines)


def failures(rows: list[dict]) -> list[dict]:
    found = []
    for row in in_order(rows):
        details = row["details"]
        if isinstance(details, dict):  # a load level
            if details["problems"]:
                found.append({"row": row["row"], "case": f"{details['clients']} clients",
                              "problems": details["problems"], "errors": details["errors"],
                              "violations": details["violations"], "job_errors": details["job_errors"]})
            continue
        for case in details:
            problems = [p for p in case.get("problems", []) if not p.startswith("inconclusive")]
            if problems:
                entry = {"row": row["row"], "case": case.get("case") or f"kill after {case.get('kill_after_s')} s",
                         "problems": problems}
                for key in ("command", "rc", "stderr", "status", "body", "state", "errors", "expected"):
                    if case.get(key) not in (None, ""):
                        entry[key] = case[key]
                if "between" in case:
                    entry["runs"] = [{k: run[k] for k in ("check", "command", "rc", "stderr", "problems")}
                                     for run in case["between"] if run["problems"]]
                    if case["rerun"]["problems"]:
                        entry["runs"].append({k: case["rerun"][k] for k in ("command", "rc", "stderr", "problems")})
                found.append(entry)
    return found


def show_failures(found: list[dict]) -> str:
    if not found:
        return "No case failed."
    out = [f"{len(found)} failed case(s):"]
    for f in found:
        out.append(f"- [{f['row'].split('.')[0]}] {f['case']}: {'; '.join(map(str, f['problems']))}")
        if f.get("command"):
            out.append(f"    $ {f['command']}   (exit {f.get('rc')})")
        if f.get("status") is not None or f.get("state"):
            out.append(f"    HTTP {f.get('status')} {f.get('state') or ''} {f.get('body') or f.get('errors') or ''}"
                       .rstrip()[:400])
        stderr = (f.get("stderr") or "").strip().splitlines()
        out += [f"    | {line}" for line in stderr[-12:]]
        for run in f.get("runs", []):
            out.append(f"    $ {run['command']}   (exit {run['rc']}): {'; '.join(run['problems'])}")
            out += [f"    | {line}" for line in run["stderr"].strip().splitlines()[-8:]]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=15, help="load per client level (row 5)")
    parser.add_argument("--clients", type=int, nargs="+", default=[8, 64])
    parser.add_argument("--kill-at", type=float, nargs="+", default=[0.05, 0.2, 0.4, 0.6],
                        help="when to kill (row 2): fractions of the reference run's time from its store appearing "
                             "to its end, after the store appears")
    parser.add_argument("--kill-after", type=float, nargs="+", help="or: seconds after the store appears")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="CLI cases run at once (row 1)")
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6, 7])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "faults.json")
    args = parser.parse_args()
    command = "python bench/bench_faults.py " + " ".join(
        [f"--seconds {args.seconds:g}", "--clients " + " ".join(map(str, args.clients)),
         ("--kill-after " + " ".join(f"{d:g}" for d in args.kill_after)) if args.kill_after else
         ("--kill-at " + " ".join(f"{d:g}" for d in args.kill_at))] +
        ([f"--rows {' '.join(map(str, args.rows))}"] if args.rows != [1, 2, 3, 4, 5, 6, 7] else []))
    started = time.perf_counter()
    rows: list[dict] = []
    server_exceptions: list[str] = []
    setup: dict = {}
    load = os.getloadavg()[0]

    def report(complete: bool) -> dict:
        """Saved after every row, so that a run cut short keeps what it measured."""
        found = failures(rows)
        saved = {"date": date.today().isoformat(), "command": command,
                 "machine": machine() + f"; load average {load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end",
                 "seconds": round(time.perf_counter() - started, 1), "complete": complete, "setup": setup,
                 "rows": in_order(rows), "failures": found, "server_exceptions": server_exceptions}
        args.out.write_text(json.dumps(saved, indent=1, default=str))
        return saved

    def add(row: dict) -> None:
        rows.append(row)
        report(complete=False)
    with tempfile.TemporaryDirectory(prefix="geosearch-faults-") as folder:
        shell = Shell(Path(folder))
        (shell.work / "stores").mkdir()
        inputs = write_inputs(shell.work)
        model = shell.work / "tiny.pt"
        made = shell.run("model", "init", "--backbone", "resnet18", "--weights", "none", "--dim", "16",
                         "--input-size", "32", "--out", model)
        if made.rc != 0:
            sys.exit(f"cannot write the small model: {made.stderr}")
        ref = shell.work / "reference" / "store"
        ref.parent.mkdir()
        ref_args = [*index_args(ref, model, KILL_TILE_SIZE, KILL_BATCH), "--json"]
        ref_started = time.perf_counter()
        child = shell.start(*ref_args, log=ref.parent / "index")
        wait_for(lambda: (ref / "edge" / "tiles__scenes").exists() or child.poll() is not None, 120)
        appeared = time.perf_counter() - ref_started
        child.wait()
        clean = Shell.finished(child, shell.shown(ref_args), ref.parent / "index", time.perf_counter() - ref_started)
        if clean.rc != 0:
            sys.exit(f"the reference run failed: {clean.stderr}")
        store_phase = clean.seconds - appeared
        delays = args.kill_after or [round(f * store_phase, 2) for f in args.kill_at]
        setup |= {"store_appeared_s": round(appeared, 2), "store_phase_s": round(store_phase, 2),
                  "kill_after_s": delays}
        _, ref_tiles = stored_tiles(ref)
        reference = {scene: set(found) for scene, found in ref_tiles.items()}
        surveyed = expected_tiles(KILL_TILE_SIZE)
        setup |= {"reference_tiles": sum(map(len, reference.values())), "reference_seconds": round(clean.seconds, 1),
                  "reference_equals_survey": reference == surveyed}
        print(f"setup: reference store {setup}", file=sys.stderr, flush=True)

        def timed(name: str, fn: Callable):
            start = time.perf_counter()
            out = fn()
            print(f"{name}: {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
            return out

        if 1 in args.rows:
            add(timed("row 1", lambda: row_bad_inputs(shell, inputs, model, ref, args.workers)))
        if 7 in args.rows:
            add(timed("row 7", lambda: row_hostile_files(shell, model, ref, args.workers)))
        if 2 in args.rows:
            add(timed("row 2", lambda: row_kill(shell, model, delays, reference)))
        if 6 in args.rows:
            add(timed("row 6", lambda: row_full_disk(shell, model, reference)))
        two = timed("row 3", lambda: row_two_processes(shell, model, reference)) \
            if 3 in args.rows else None
        if {3, 4, 5} & set(args.rows):
            root, outside = shell.work / "root", shell.work / "outside"
            root.mkdir()
            outside.mkdir()
            shutil.copy(AERIAL_3857, outside / "secret.tif")
            for scene in (LANDSAT8_224077, LANDSAT8_224078):
                shutil.copy(scene, root / scene.name)
            served_store = shell.work / "served" / "store"
            indexed = shell.run("index", root / LANDSAT8_224077.name, root / LANDSAT8_224078.name, "--store",
                                served_store, "--model", model, "-q")
            if indexed.rc != 0:
                sys.exit(f"indexing the server's store failed: {indexed.stderr}")
            served = Served(shell, served_store, root, model)
            try:
                if two is not None:
                    add(finish_row_two(two, serve_refusals(shell, served_store, model)))
                tile_id = served.http.post("/search", json={"bbox": BOX, "k": 1}).json()["features"][0][
                    "properties"]["tile_id"]
                if 4 in args.rows:
                    add(timed("row 4", lambda: row_hostile(served, root, outside, tile_id)))
                if 5 in args.rows:
                    for clients in args.clients:
                        level = timed(f"row 5, {clients} clients", lambda c=clients: load_level(
                            served, root, c, args.seconds, root / LANDSAT8_224077.name))
                        add(row_load(level))
                if 4 in args.rows:
                    hostile = next(r for r in rows if r["row"].startswith("4."))
                    fifo = fifo_job(served, root)
                    hostile["details"].append(fifo)
                    hostile["cases"] += 1
                    hostile["failed"] += bool(fifo["problems"])
                    hostile["http_5xx"] += fifo["status"] >= 500
            finally:
                rc = served.stop()
                server_exceptions = served.exceptions()
            for row in rows:
                if row["row"].startswith(("4.", "5.")) and rc not in (0, -signal.SIGTERM, 128 + signal.SIGTERM):
                    row["notes"] += f"; serve ended with {rc} on SIGTERM"
        for pid in shell.children:  # reader processes of killed runs that outlived the checks
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    saved = report(complete=True)
    seconds, found = saved["seconds"], saved["failures"]
    print(f"## Faults: the reliability matrix of issues 20 and 30\n\n- **Command:** `{command}`\n"
          f"- **Machine:** {saved['machine']}\n- **Date:** {saved['date']}; the run took {seconds:.0f} s\n"
          f"- **Setup:** a random ResNet-18 (16-d, 32 px input); reference store of the 4 shipped scenes at "
          f"{KILL_TILE_SIZE} px: {setup['reference_tiles']} tiles in {setup['reference_seconds']} s, its store "
          f"written from {setup['store_appeared_s']} s (the same tile ids as the survey's kept tiles: "
          f"{setup['reference_equals_survey']}); kills at {', '.join(map(str, setup['kill_after_s']))} s after "
          "the store appears\n")
    print(table(rows))
    print()
    print(show_failures(found))
    if server_exceptions:
        print(f"\nTracebacks in the server's log ({len(server_exceptions)}), by their last line:")
        for line in server_exceptions:
            print(f"- {line}")
    print(f"\nsaved {args.out}")


if __name__ == "__main__":
    main()
