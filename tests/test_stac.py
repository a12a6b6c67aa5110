"""STAC as a user keeps an archive: a catalog of a collection of items over the shipped scenes, written with pystac,
indexed by `geosearch index catalog.json`; the items' dates and ids recorded; the items that give no readable raster
(remote, missing, ambiguous) said in one line each while the others are indexed."""

import json
import shutil
from datetime import UTC, datetime

import numpy as np
import pystac
import pytest
import rasterio

from conftest import run_geosearch
from geosearch.data import LANDSAT8_224077, LANDSAT8_224078
from geosearch.tiling import TilingOptions
from support import split_bands

WHEN = datetime(2020, 5, 19, 13, 42, tzinfo=UTC)  # not the files' own date (2020-05-18, from their names)
EXTENT = pystac.Extent(pystac.SpatialExtent([[-180, -90, 180, 90]]), pystac.TemporalExtent([[WHEN, None]]))


def item(item_id: str, **assets: pystac.Asset) -> pystac.Item:
    made = pystac.Item(item_id, geometry=None, bbox=None, datetime=WHEN, properties={})
    for name, asset in assets.items():
        made.add_asset(name, asset)
    return made


@pytest.fixture
def catalog(tmp_path):
    """catalog.json → collection landsat → items: one whose asset is a relative href to a file beside the item,
    one an absolute href to the shipped file, one remote, one that is missing, one with only a thumbnail."""
    root = tmp_path / "stac"
    catalog = pystac.Catalog("archive", "the shipped Landsat 8 crops")
    collection = pystac.Collection("landsat", "Landsat 8 crops", EXTENT)
    catalog.add_child(collection)
    beside = item("lc08-224077", visual=pystac.Asset(f"./{LANDSAT8_224077.name}", media_type=pystac.MediaType.COG,
                                                     roles=["visual"]))
    absolute = item("lc08-224078", thumbnail=pystac.Asset(str(tmp_path / "t.png"), media_type=pystac.MediaType.PNG,
                                                          roles=["thumbnail"]),
                    data=pystac.Asset(str(LANDSAT8_224078), media_type=pystac.MediaType.GEOTIFF, roles=["data"]))
    remote = item("remote", visual=pystac.Asset("https://example.com/scene.tif", media_type=pystac.MediaType.COG,
                                                roles=["visual"]))
    missing = item("missing", visual=pystac.Asset("./gone.tif", media_type=pystac.MediaType.COG, roles=["visual"]))
    pictures = item("pictures", thumbnail=pystac.Asset("./t.png", media_type=pystac.MediaType.PNG))
    for made in (beside, absolute, remote, missing, pictures):
        collection.add_item(made)
    catalog.normalize_hrefs(str(root))
    catalog.save(pystac.CatalogType.SELF_CONTAINED)
    shutil.copy(LANDSAT8_224077, root / "landsat" / "lc08-224077" / LANDSAT8_224077.name)
    return root


def test_a_catalog_is_indexed_item_by_item(catalog, tmp_path):
    store = tmp_path / "store"
    result = run_geosearch("index", str(catalog / "catalog.json"), "--store", str(store))
    assert result.returncode == 1  # some items failed
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    items = catalog / "landsat"
    assert sorted(errors) == sorted([
        f"error: {items / 'missing' / 'missing.json'}: STAC item missing: asset visual "
        f"({items / 'missing' / 'gone.tif'}) does not exist",
        f"error: {items / 'pictures' / 'pictures.json'}: STAC item pictures: which asset is the scene? It has "
        "thumbnail; give --assets NAME",
        f"error: {items / 'remote' / 'remote.json'}: STAC item remote: asset visual is remote "
        "(https://example.com/scene.tif); geosearch reads local files, so it is not reachable",
    ])
    assert "2 scene(s) indexed, 0 unchanged, 3 failed" in result.stdout
    records = json.loads(run_geosearch("scenes", "--store", str(store), "--json").stdout)
    assert sorted(r["stac"]["item"] for r in records) == ["lc08-224077", "lc08-224078"]
    assert {r["acquired"] for r in records} == {WHEN.isoformat()}  # the item's date, not the file's
    assert {r["stac"]["collection"] for r in records} == {"landsat"}
    assert {r["stac"]["asset"] for r in records} == {"visual", "data"}
    by_item = {r["stac"]["item"]: r["path"] for r in records}
    assert by_item == {"lc08-224077": str(items / "lc08-224077" / LANDSAT8_224077.name),
                       "lc08-224078": str(LANDSAT8_224078)}
    found = run_geosearch("search", "--bbox", "-54.8315", "-25.2208", "-54.7783", "-25.1723", "--store", str(store),
                          "--after", "2020-05-19", "--json")
    assert found.returncode == 0 and json.loads(found.stdout)["features"], found.stderr


def test_an_item_alone_and_a_named_asset(catalog, tmp_path):
    item_file = catalog / "landsat" / "lc08-224078" / "lc08-224078.json"
    result = run_geosearch("tile", str(item_file), "--assets", "data", "--json")
    assert result.returncode == 0, result.stderr
    (scene,) = json.loads(result.stdout)["scenes"]
    assert scene["path"] == str(LANDSAT8_224078) and scene["stac"]["item"] == "lc08-224078"
    named = run_geosearch("tile", str(item_file), "--assets", "visual")
    assert named.returncode == 1 and named.stderr.strip() == (
        f"error: {item_file}: STAC item lc08-224078 has no asset visual (it has thumbnail, data)")
    not_stac = tmp_path / "other.json"
    not_stac.write_text('{"type": "FeatureCollection", "features": []}')
    result = run_geosearch("tile", str(not_stac))
    assert result.returncode == 1 and result.stderr.startswith(f"error: {not_stac}: not a STAC catalog, collection or")


def test_an_item_of_per_band_assets_is_stacked(tmp_path):
    """An item as Earth Search publishes Landsat and Sentinel-2: a file per band, keyed by common name or named in
    eo:bands; --assets names them in order, or a preset of --bands does."""
    folder = tmp_path / "item"
    split_bands(LANDSAT8_224077, folder, ["B2.tif", "B3.tif", "B4.tif"])
    made = item("lc08-224077-bands",
                blue=pystac.Asset("./B2.tif", media_type=pystac.MediaType.COG, roles=["data"]),
                green=pystac.Asset("./B3.tif", media_type=pystac.MediaType.COG, roles=["data"]),
                B4=pystac.Asset("./B4.tif", media_type=pystac.MediaType.COG, roles=["data"],
                                extra_fields={"eo:bands": [{"name": "B4", "common_name": "red"}],
                                              "raster:bands": [{"scale": 2.75e-05, "offset": -0.2}]}))
    made.set_self_href(str(folder / "item.json"))
    made.save_object(include_self_link=False)
    for assets, keys in (("true-color", "B4,green,blue"), ("B4,green,blue", "B4,green,blue")):
        result = run_geosearch("tile", str(folder / "item.json"), "--assets", assets, "--json")
        assert result.returncode == 0, result.stderr
        (scene,) = json.loads(result.stdout)["scenes"]
        assert scene["path"] == f"{folder / 'item.json'}#{keys}" and scene["stac"]["asset"] == keys
        assert scene["bands"] == [1, 2, 3] and scene["band_source"] == "descriptions"  # B4_red, green, blue
        assert scene["acquired"] == WHEN.isoformat()
    with TilingOptions().open(f"{folder / 'item.json'}#B4,green,blue") as stacked, \
            rasterio.open(LANDSAT8_224077) as original:
        assert stacked.dataset.descriptions == ("B4_red", "green", "blue")
        assert stacked.dataset.scales == (2.75e-05, 1.0, 1.0)
        assert np.array_equal(stacked.dataset.read(), original.read((3, 2, 1)))
    result = run_geosearch("tile", str(folder / "item.json"), "--assets", "false-color")
    assert result.returncode == 1 and result.stderr.strip() == (
        f"error: {folder / 'item.json'}: STAC item lc08-224077-bands has no asset nir (it has blue, green, B4)")


def test_one_asset_of_several_bands_is_read_by_its_eo_bands(tmp_path):
    """A single multi-band asset whose file says nothing of its bands (blue, green, red, as Landsat numbers them):
    the item's eo:bands name them, so red, green and blue are read as such and not assumed to be bands 1, 2, 3."""
    folder = tmp_path / "item"
    folder.mkdir()
    with rasterio.open(LANDSAT8_224077) as source:
        profile, pixels = source.profile, source.read()
    with rasterio.open(folder / "scene.tif", "w", **profile) as unnamed:
        unnamed.write(pixels)
    eo_bands = [{"name": name, "common_name": common} for name, common in (("B2", "blue"), ("B3", "green"),
                                                                          ("B4", "red"))]
    made = item("lc08-unnamed", visual=pystac.Asset(
        "./scene.tif", media_type=pystac.MediaType.COG, roles=["visual"],
        extra_fields={"eo:bands": eo_bands, "raster:bands": [{"scale": 2.75e-05, "offset": -0.2}] * 3}))
    made.set_self_href(str(folder / "item.json"))
    made.save_object(include_self_link=False)
    result = run_geosearch("tile", str(folder / "item.json"), "--json")
    assert result.returncode == 0, result.stderr
    (scene,) = json.loads(result.stdout)["scenes"]
    assert scene["path"] == f"{folder / 'item.json'}#visual" and scene["stac"]["asset"] == "visual"
    assert scene["bands"] == [3, 2, 1] and scene["band_source"] == "descriptions"
    with TilingOptions().open(scene["path"]) as stacked:
        assert stacked.dataset.descriptions == ("B2_blue", "B3_green", "B4_red")
        assert stacked.dataset.scales == (2.75e-05,) * 3
        assert np.array_equal(stacked.dataset.read(), pixels)
