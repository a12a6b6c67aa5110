"""Per-band products as one scene: a Landsat Collection 2 product (a GeoTIFF per band and an MTL) and a Sentinel-2-like
set at 10 and 20 m (with and without its MTD_MSIL2A.xml), built here from the shipped Landsat 8 crops, read through a
VRT with no stacked copy; bad products (a band missing, a band on another grid) refused in one line each while the
rest of the run completes."""

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio

from conftest import run_geosearch
from geosearch.data import LANDSAT8_224077, LANDSAT8_224078
from geosearch.tiling import TilingOptions
from hostile import LANDSAT_PREFIX, landsat_product
from support import split_bands

MTL_BANDS = {2: "blue", 3: "green", 4: "red"}  # the crops' bands, in order
PREFIX = LANDSAT_PREFIX


@pytest.fixture
def landsat(tmp_path) -> Path:
    """The 224/077 crop as a Collection 2 Level-2 product: SR_B2, SR_B3, SR_B4 and the MTL, acquired 2020-05-19."""
    return landsat_product(tmp_path / PREFIX)


MTD = """\
<?xml version="1.0" encoding="UTF-8"?>
<n1:Level-2A_User_Product xmlns:n1="https://psd-14.sentinel2.eo.esa.int/PSD/User_Product_Level-2A.xsd">
  <n1:General_Info><Product_Info><PRODUCT_START_TIME>2020-05-18T13:42:21.024Z</PRODUCT_START_TIME>
    <Datatake><SPACECRAFT_NAME>Sentinel-2B</SPACECRAFT_NAME></Datatake></Product_Info>
  <Product_Image_Characteristics>
    <QUANTIFICATION_VALUES_LIST><BOA_QUANTIFICATION_VALUE unit="none">10000</BOA_QUANTIFICATION_VALUE>
    </QUANTIFICATION_VALUES_LIST>
    <BOA_ADD_OFFSET_VALUES_LIST>{offsets}</BOA_ADD_OFFSET_VALUES_LIST>
    <Spectral_Information_List>{spectral}</Spectral_Information_List>
  </Product_Image_Characteristics></n1:General_Info>
</n1:Level-2A_User_Product>
"""


@pytest.fixture
def sentinel2(tmp_path) -> Path:
    """The 224/078 crop as a Sentinel-2-like SAFE: B02, B03, B04 at "10 m" (the crop's pixel) in R10m as GeoTIFF, a
    B08 (the crop's blue band again), and a B11 twice as coarse in R20m (its blue band, averaged) as JPEG 2000, with an
    MTD that scales to reflectance."""
    safe = tmp_path / "S2B_MSIL2A_20200518T133239_N0214_R081_T21JXN_20200518T173018.SAFE"
    granule = safe / "GRANULE" / "L2A_T21JXN" / "IMG_DATA"
    split_bands(LANDSAT8_224078, granule / "R10m",
                [f"T21JXN_20200518T133239_{b}_10m.tif" for b in ("B02", "B03", "B04")])
    split_bands(LANDSAT8_224078, granule / "R10m", [f"T21JXN_20200518T133239_{b}_10m.tif" for b in ("B08",)])
    split_bands(LANDSAT8_224078, granule / "R20m", ["T21JXN_20200518T133239_B11_20m.jp2"], coarse={
        "T21JXN_20200518T133239_B11_20m.jp2": 2})
    ids = {"B1": 0, "B2": 1, "B3": 2, "B4": 3, "B8": 7, "B11": 11}
    (safe / "MTD_MSIL2A.xml").write_text(MTD.format(
        offsets="".join(f'<BOA_ADD_OFFSET band_id="{i}">-1000</BOA_ADD_OFFSET>' for i in ids.values()),
        spectral="".join(f'<Spectral_Information bandId="{i}" physicalBand="{b}"/>' for b, i in ids.items())))
    return safe


def test_a_landsat_product_is_one_scene_with_its_metadata(landsat):
    for given in (landsat, landsat / f"{PREFIX}_MTL.txt"):  # the folder or its MTL
        result = run_geosearch("tile", str(given), "--json")
        assert result.returncode == 0, result.stderr
        (scene,) = json.loads(result.stdout)["scenes"]
        assert scene["bands"] == [3, 2, 1] and scene["band_source"] == "descriptions"  # B4_red, B3_green, B2_blue
        assert scene["acquired"] == "2020-05-19T13:42:21.123456+00:00"
        assert "LANDSAT_8" in scene["profile"] and scene["profile"].endswith("/scaled")
    # The same ground, the same values and the same nodata as the single file it was split from.
    options = TilingOptions()
    with options.open(str(landsat)) as product, options.open(str(LANDSAT8_224077)) as original:
        assert product.dataset.transform == original.dataset.transform
        assert product.dataset.scales == (2.75e-05,) * 3 and product.dataset.offsets == (-0.2,) * 3
        for row, col in ((0, 0), (300, 500), (768, 1024)):
            (ours, our_valid), (theirs, their_valid) = product.read(row, col, 256), original.read(row, col, 256)
            assert np.array_equal(ours, theirs) and np.array_equal(our_valid, their_valid)


def test_a_sentinel2_product_at_10_and_20_m(sentinel2):
    options = TilingOptions()
    with options.open(str(sentinel2)) as scene, rasterio.open(LANDSAT8_224078) as original:
        dataset = scene.dataset
        assert dataset.descriptions == ("B02_blue", "B03_green", "B04_red", "B08_nir", "B11_swir16")
        assert (dataset.width, dataset.height) == (original.width, original.height)  # the finest band's grid
        assert dataset.scales == (1e-4,) * 5 and dataset.offsets == (-0.1,) * 5
        # B11, read at 10 m from its 20 m file: in place, as 2 × 2 blocks of it average back to that file.
        swir = dataset.read(5).astype(float)
        blocks = swir[: swir.shape[0] // 2 * 2, : swir.shape[1] // 2 * 2].reshape(
            swir.shape[0] // 2, 2, swir.shape[1] // 2, 2).mean(axis=(1, 3))
        with rasterio.open(next(sentinel2.glob("GRANULE/*/IMG_DATA/R20m/*_B11_20m.jp2"))) as coarse:
            assert np.corrcoef(blocks.ravel(), coarse.read(1).astype(float).ravel())[0, 1] > 0.98
        assert scene.bands == (3, 2, 1)  # B04_red, B03_green, B02_blue, by name
        assert scene.summary()["acquired"] == "2020-05-18T13:42:21.024000+00:00"


def test_band_presets_by_name(sentinel2):
    false_color = run_geosearch("tile", str(sentinel2), "--bands", "false-color", "--json")
    assert false_color.returncode == 0, false_color.stderr
    (scene,) = json.loads(false_color.stdout)["scenes"]
    assert scene["bands"] == [4, 3, 2] and scene["band_source"] == "false-color"  # B08_nir, B04_red, B03_green
    swir = run_geosearch("tile", str(sentinel2), "--bands", "swir")
    assert swir.returncode == 1 and swir.stderr.strip() == (
        f"error: {sentinel2}: --bands swir needs a swir22 band, which the scene's band names (B02_blue, B03_green, "
        "B04_red, B08_nir, B11_swir16) do not show; give band numbers")


def test_bad_products_are_one_line_each_and_the_run_goes_on(landsat, tmp_path):
    (landsat / f"{PREFIX}_SR_B3.TIF").unlink()
    shifted = tmp_path / "shifted"
    split_bands(LANDSAT8_224078, shifted, ["B02.tif", "B03.tif", "B04.tif"])
    with rasterio.open(shifted / "B04.tif", "r+") as band:
        band.transform = band.transform @ band.transform.translation(10, 0)  # 10 pixels east
    store = tmp_path / "store"
    result = run_geosearch("index", str(landsat), str(shifted), str(LANDSAT8_224078), "--store", str(store))
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [
        f"error: {landsat}: its MTL names {PREFIX}_SR_B3.TIF for band 3, which is not there",
        f"error: {shifted}: band B04 (B04.tif) is on another grid than band B02: bands must share the CRS and "
        "the ground",
    ]
    assert "1 scene(s) indexed" in result.stdout


def test_products_are_searched_with_the_other_scenes(landsat, sentinel2, tmp_path):
    store = tmp_path / "store"
    indexed = run_geosearch("index", str(landsat), str(sentinel2), "--store", str(store))
    assert indexed.returncode == 0, indexed.stderr
    records = json.loads(run_geosearch("scenes", "--store", str(store), "--json").stdout)
    assert sorted(Path(r["path"]).name for r in records) == sorted([landsat.name, sentinel2.name])
    found = run_geosearch("search", "--bbox", "-54.8315", "-25.2208", "-54.7783", "-25.1723", "--store", str(store),
                          "--json", "-k", "40")
    assert found.returncode == 0, found.stderr
    scenes = {Path(f["properties"]["scene_path"]).name for f in json.loads(found.stdout)["features"]}
    assert scenes == {landsat.name, sentinel2.name}


def test_a_folder_of_rasters_is_not_a_product(tmp_path):
    """Folders of single-file scenes keep being expanded into their rasters."""
    folder = tmp_path / "scenes"
    folder.mkdir()
    for scene in (LANDSAT8_224077, LANDSAT8_224078):
        (folder / scene.name).symlink_to(scene)
    result = run_geosearch("tile", str(folder), "--json")
    assert result.returncode == 0 and len(json.loads(result.stdout)["scenes"]) == 2, result.stderr
