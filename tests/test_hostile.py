"""Hostile files in the surfaces a user reaches from the command line (issue 30): FIFOs and devices where a scene
or a metadata file should be, scenes rewritten under an index run, bad per-band products and STAC items beside good
ones. Each is one line and a non-zero exit; nothing hangs; the good inputs beside a bad one still go through."""

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.windows
import torch
from PIL import Image

from conftest import run_geosearch
from geosearch.data import AERIAL_3857, LANDSAT8_224077, LANDSAT8_224078
from geosearch.embed import plan_scene
from geosearch.encoder.default import open_model
from geosearch.index import index_scenes
from geosearch.store import open_backend
from geosearch.store.archive import Archive
from geosearch.tiling import TilingOptions
from hostile import (
    STORE_DAMAGE,
    damage_store,
    good_and_bad_folder,
    hostile_catalog,
    hostile_products,
    landsat_product,
    stac_item,
)
from support import split_bands

BOX = ("--bbox", "-54.8315", "-25.2208", "-54.7783", "-25.1723")
TILING = TilingOptions(tile_size=128)


def error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def small_model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("models") / "small.pt"
    result = run_geosearch("model", "init", "--backbone", "resnet18", "--weights", "none", "--dim", "16",
                           "--input-size", "64", "--out", str(path))
    assert result.returncode == 0, result.stderr
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory, small_model) -> Path:
    path = tmp_path_factory.mktemp("hostile") / "store"
    result = run_geosearch("index", str(LANDSAT8_224077), "--store", str(path), "--model", str(small_model),
                           "--tile-size", "128", "-q")
    assert result.returncode == 0, result.stderr
    return path


def test_a_fifo_is_refused_at_once_and_the_store_stays_usable(store, small_model, tmp_path):
    fifo = tmp_path / "scene.tif"
    os.mkfifo(fifo)
    started = time.monotonic()
    searched = run_geosearch("search", "--raster", str(fifo), *BOX, "--store", str(store), "--model",
                             str(small_model))
    indexed = run_geosearch("index", str(fifo), str(LANDSAT8_224078), "--store", str(tmp_path / "new"), "--model",
                            str(small_model), "--tile-size", "128", "-q")
    assert time.monotonic() - started < 120
    for result in (searched, indexed):
        assert result.returncode == 1 and error_lines(result)[-1].endswith(
            f"{fifo}: is not a regular file (a FIFO, device or socket), so it is not read"), result.stderr
    assert len(error_lines(searched)) == 1
    assert run_geosearch("stats", "--store", str(store)).returncode == 0  # the lock went with the process
    with open_backend(tmp_path / "new") as backend:  # the good scene beside the FIFO was indexed
        assert [r["status"] for r in Archive.open(backend, "tiles").scenes()] == ["complete"]


def _copy(scene: Path, path: Path) -> Path:
    """An uncompressed copy, which an in-place rewrite keeps the same size (so the same scene id)."""
    with rasterio.open(scene) as source:
        profile = source.profile | {"compress": "none", "tiled": False}
        profile.pop("blockxsize", None)
        profile.pop("blockysize", None)
        with rasterio.open(path, "w", **profile) as out:
            out.write(source.read())
    return path


def _invert(path: Path) -> None:
    with rasterio.open(path, "r+") as dataset:
        dataset.write(np.iinfo(dataset.dtypes[0]).max - dataset.read())


def test_a_scene_rewritten_while_it_is_indexed_keeps_no_tile(small_model, tmp_path):
    """The file rewritten after the first batch: the scene ends failed with no tile served, not complete with half
    its tiles from each version; the next run indexes the new pixels whole."""
    scene = _copy(LANDSAT8_224078, tmp_path / "scene.tif")
    checkpoint = open_model(str(small_model))
    planned = [plan_scene(str(scene), TILING, TILING.profile_stretches())]
    rewrites = []

    def rewrite_once(_: int) -> None:
        if not rewrites:
            time.sleep(0.01)  # a later mtime than the plan's, on any file system's clock
            _invert(scene)
            rewrites.append(True)

    with open_backend(tmp_path / "store") as backend:
        archive = Archive.open(backend, "tiles", checkpoint.model_id, checkpoint.config.dim)
        report = index_scenes(archive, checkpoint, planned, TILING, torch.device("cpu"), batch_size=4, workers=0,
                              on_tiles=rewrite_once)
        assert [error.problem for error in report.failed] == [
            "was rewritten while it was being indexed, so its tiles would mix old and new pixels; none is kept: "
            "index it again"]
        assert archive.tile_count() == archive.tile_count(pending=True) == 0
        assert [record["status"] for record in archive.scenes()] == ["failed"]
    again = run_geosearch("index", str(scene), "--store", str(tmp_path / "store"), "--model", str(small_model),
                          "--tile-size", "128", "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["indexed"] == 1, again.stderr


def test_a_rewritten_or_replaced_file_is_indexed_again(small_model, tmp_path):
    """A complete scene whose file was rewritten in place (same size, same scene id) is not "unchanged"; a path that
    now holds another raster loses the old scene's tiles, which would be served as that file's."""
    scene = _copy(LANDSAT8_224078, tmp_path / "scene.tif")
    args = ("--store", str(tmp_path / "store"), "--model", str(small_model), "--tile-size", "128", "--json")

    def index() -> dict:
        result = run_geosearch("index", str(scene), *args)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    first = index()
    assert first["indexed"] == 1 and index()["unchanged"] == 1
    time.sleep(0.01)
    _invert(scene)
    rewritten = index()
    assert rewritten["indexed"] == 1 and rewritten["rewritten"] == [
        f"{scene} was rewritten since it was indexed; it is indexed again"]
    shutil.copy(AERIAL_3857, scene)  # another raster at the same path
    replaced = index()
    assert replaced["indexed"] == 1 and len(replaced["replaced"]) == 1, replaced
    with open_backend(tmp_path / "store") as backend:
        archive = Archive.open(backend, "tiles")
        (record,) = archive.scenes()
        assert record["crs"] == "EPSG:3857" and archive.tile_count() == record["tiles"]



def test_unusable_rasters_are_one_line_each_and_the_good_scene_beside_them_is_indexed(small_model, tmp_path):
    """Complex values, a pixel size of 0, a NaN origin, pixels of 10,000 km, a sparse 10⁶ × 10⁶ GeoTIFF (millions of
    tiles, refused before planning them), float64 fill near 1e300 (no valid tile), in one folder with a real scene."""
    folder = good_and_bad_folder(tmp_path / "mixed")
    started = time.monotonic()
    result = run_geosearch("index", str(folder), "--store", str(tmp_path / "store"), "--model", str(small_model),
                           "--json")
    assert time.monotonic() - started < 120
    summary = json.loads(result.stdout)
    problems = {Path(error["path"]).name: error["error"] for error in summary["errors"]}
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert problems == {
        "complex.tif": "holds complex64 values, which show no image; write their amplitude to a raster first",
        "pixel0.tif": "has a geotransform with a pixel size of 0 or values that are not numbers ((0.0, 0.0, 500000.0, "
                      "0.0, 0.0, 4500000.0)); fix it (gdal_edit.py -a_ullr)",
        "nanorigin.tif": "has a geotransform with a pixel size of 0 or values that are not numbers ((30.0, 0.0, nan, "
                         "0.0, -30.0, nan)); fix it (gdal_edit.py -a_ullr)",
        "pixel1e7.tif": "reaches past where EPSG:32618 is defined (its corners have no place on the globe): its "
                        "geotransform or its CRS is wrong",
        "sparse.tif": "would be cut into about 15,272,464 tiles of 256 px, more than the 2,000,000 one scene may "
                      "have; cut it coarser (a larger --tile-size or --stride, or --gsd), or split it"}
    assert summary["indexed"] == 2  # the real scene, and the float64 fill with no valid tile (indexed with none)
    with open_backend(tmp_path / "store") as backend:
        tiles = {Path(r["path"]).name: r["tiles"] for r in Archive.open(backend, "tiles").scenes()}
    assert tiles["huge.tif"] == 0 and tiles["a_good.tif"] > 0

def test_degenerate_queries_are_one_line(store, small_model, tmp_path):
    """Boxes of ±1e308 or 1e-300 wide, a box thinner than a pixel over the data, the whole globe, pictures that are
    bombs or FIFOs, a symlink loop as a scene, a config that is a folder or binary."""
    common = ("--store", str(store), "--model", str(small_model))
    loop = tmp_path / "loop"
    (tmp_path / "other").symlink_to(loop)
    loop.symlink_to(tmp_path / "other")
    bomb = tmp_path / "bomb.png"
    Image.new("L", (30000, 30000), 7).save(bomb, optimize=True)
    fifo = tmp_path / "picture.png"
    os.mkfifo(fifo)
    cases = {
        ("search", "--bbox", "-1e308", "-1e308", "1e308", "1e308", "--crs", "EPSG:3857"):
            "is infinite or not a number, or is too large to measure",
        ("search", "--bbox", "0", "0", "1e-300", "1e-300"): "has no area on the globe",
        ("search", "--image", str(bomb)): f"{bomb}: over 64 megapixels; --image takes a smaller picture",
        ("search", "--image", str(fifo)): "is not a regular file (a FIFO, device or socket), so it is not read",
        ("search", *BOX, "--within", str(fifo)): "is not a regular file (a FIFO, device or socket)",
        ("import", str(fifo)): "is not a regular file (a FIFO, device or socket)",
        ("train", "--config", str(fifo)): "cannot read the training config: it is not a regular file",
        ("search", *BOX, "--min-score", "nan"): "--min-score nan is not a cosine from -1 to 1",
        ("detect", *BOX, "--threshold", "nan"): "threshold nan is not a finite number",
        ("remove", str(loop)): f"no scene {str(loop)!r} in the archive",
        ("search", "--tile", "x", "--scene", str(loop)): f"no scene {str(loop)!r} in the archive",
    }
    for args, problem in cases.items():
        result = run_geosearch(*args, *{"remove": common[:2], "import": common[:2], "train": ()}.get(args[0], common))
        lines = error_lines(result)
        assert result.returncode == 1 and len(lines) == 1 and problem in lines[0], (args, result.stderr)
    thin = run_geosearch("search", "--bbox", "-54.8", "-25.2", "-54.79999999999999", "-25.19999999999999", *common)
    world = run_geosearch("history", "--bbox", "-180", "-90", "180", "90", *common)
    assert thin.returncode == 0 and world.returncode == 0, thin.stderr + world.stderr
    for config in (tmp_path, small_model):
        result = run_geosearch("stats", "--store", str(store), env={"GEOSEARCH_CONFIG": str(config)})
        assert result.returncode == 1 and len(error_lines(result)) == 1 and "Traceback" not in result.stderr


def test_bad_stac_items_are_one_line_each_and_the_good_item_goes_on(tmp_path):
    """Catalog loops, items that are a JSON list or string, dates that are not, band fields of the wrong shape, a
    NaN scale, one raster named by two items: one line each, beside a good item that is read."""
    catalog = hostile_catalog(tmp_path)
    result = run_geosearch("tile", str(catalog), "--json")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    scenes = json.loads(result.stdout)["scenes"]
    assert [scene["stac"]["item"] for scene in scenes] == ["good"]
    errors = {line.split(": ", 2)[1].split("/")[-1]: line for line in error_lines(result)}
    assert len(error_lines(result)) == 9, result.stderr
    for name, problem in (("list.json", "not a STAC catalog, collection or item we can read"),
                          ("string.json", "not a STAC catalog, collection or item we can read"),
                          ("garbage_start.json", "start_datetime 'not a date' is not a date"),
                          ("number_start.json", "start_datetime 1589895720 is not a date"),
                          ("eo_number.json", "asset visual's eo:bands is 3, not a list of objects"),
                          ("eo_strings.json", "asset visual's eo:bands is ['B2', 'B3', 'B4'], not a list of objects"),
                          ("raster_numbers.json", "asset visual's raster:bands is [1, 2, 3], not a list of objects"),
                          ("twice.json", "STAC item twice names the raster of item good, which is read once")):
        assert problem in errors[name], (name, result.stderr)
    assert "nan_scale.json#visual: its metadata give scale = 'nan', not a finite number" in result.stderr


def test_bad_products_are_one_line_and_the_good_one_beside_goes_on(tmp_path):
    """An MTL that is /dev/zero, MTL numbers that are not, a 5,000-character band name, Sentinel-2 metadata that is
    not XML or an entity bomb, IMG_DATA that is a file: one line each, and the good product beside them is read."""
    products = hostile_products(tmp_path)
    cases = {
        products["abc"]: "its metadata give REFLECTANCE_MULT_BAND_2 = 'abc', not a finite number",
        products["nan"]: "its metadata give REFLECTANCE_MULT_BAND_2 = 'NaN', not a finite number",
        products["huge"]: "its metadata give REFLECTANCE_MULT_BAND_2 = '1e400', not a finite number",
        products["long"]: "its MTL names AAAA",
        products["zero"]: "is not a regular file (a FIFO, device or socket), so it is not read",
        products["notxml"]: "MTD_MSIL2A.xml is not Sentinel-2 metadata we can read",
        products["bomb"]: "MTD_MSIL2A.xml is not Sentinel-2 metadata we can read",
        products["emptyxml"]: "MTD_MSIL2A.xml is not Sentinel-2 metadata we can read",
        products["quantification"]: "its metadata give BOA_QUANTIFICATION_VALUE = 'ten thousand', not a finite number",
        products["offset"]: "its metadata give BOA_ADD_OFFSET = 'minus 1000', not a finite number",
    }
    granule_file, good = products["granule_file"], landsat_product(tmp_path / "good")
    result = run_geosearch("tile", *map(str, cases), str(granule_file), str(good), "--json")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert [scene["path"] for scene in json.loads(result.stdout)["scenes"]] == [str(granule_file), str(good)]
    lines = error_lines(result)
    assert len(lines) == len(cases), result.stderr
    for (folder, problem), line in zip(cases.items(), lines, strict=True):
        assert line.startswith(f"error: {folder}: ") and problem in line, (problem, line)


def test_a_damaged_store_says_so_in_one_line(store, small_model, tmp_path):
    """Issue 30: flipped bytes in the vectors file (cosines of thousands), every deleted flag set (0 matches), the
    vector count zeroed (a traceback), a flipped byte in the ID tracker (an abort): `stats` (with --check where only
    reading every vector shows it) and searches say the store is damaged, in one line."""
    tile_id = json.loads(run_geosearch("search", *BOX, "--store", str(store), "--model", str(small_model),
                                       "--json").stdout)["features"][0]["properties"]["tile_id"]
    for name in STORE_DAMAGE:
        copy = tmp_path / name
        shutil.copytree(store, copy, ignore=shutil.ignore_patterns(".geosearch.lock"))
        damage_store(copy, name)
        for args in (("stats", "--check"), ("search", *BOX, "--model", str(small_model)),
                     ("search", "--tile", tile_id, "--model", str(small_model))):
            result = run_geosearch(*args, "--store", str(copy))
            lines = error_lines(result)
            if name == "vectors" and args[0] == "search" and result.returncode == 0:
                continue  # a query that meets no damaged vector answers as before
            assert result.returncode == 1 and len(lines) == 1 and "the store is damaged" in lines[0], (name, args,
                                                                                                  result.stderr)


def test_a_stac_item_in_a_folder_whose_name_holds_a_hash_is_read(tmp_path):
    """pystac cuts hrefs at `#`: an item (a single asset, and per-band assets) in such a folder is still read."""
    folder = tmp_path / "archive#2020"
    split_bands(LANDSAT8_224077, folder, ["B2.tif", "B3.tif", "B4.tif"])
    shutil.copy(LANDSAT8_224077, folder / "scene.tif")
    bands = {key: {"href": f"./{key}.tif", "type": "image/tiff; application=geotiff", "roles": ["data"]}
             for key in ("B2", "B3", "B4")}
    item = stac_item("hash", "./scene.tif")
    item["assets"] |= bands
    (folder / "item.json").write_text(json.dumps(item))
    for assets, path in (("visual", folder / "scene.tif"), ("B4,B3,B2", f"{folder / 'item.json'}#B4,B3,B2")):
        result = run_geosearch("tile", str(folder / "item.json"), "--assets", assets, "--json")
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["scenes"][0]["path"] == str(path)
