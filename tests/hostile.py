"""Hostile inputs of issue 30, made of real files: rasters no scene can be made of, per-band products with broken
metadata, a STAC catalog of bad items beside a good one, and embedding files whose metadata, ids or footprints are
wrong. `tests/test_hostile.py`, `tests/test_embedding_files.py` and `bench/bench_faults.py` (row 7) use them."""

import json
from collections.abc import Callable
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import rasterio
import shapely
from affine import Affine
from rasterio.windows import Window

from geosearch.data import LANDSAT8_224077, LANDSAT8_224078
from support import split_bands

LANDSAT_PREFIX = "LC08_L2SP_224077_20200519_20200820_02_T1"


# Training settings a TOML typo gives (wrong types, signs, non-finite numbers, loss options that do not fit), each
# with the start of the one line that refuses it.
HOSTILE_SETTINGS = {
    'epochs = "ten"': "epochs = 'ten': give int",
    "classes_per_batch = -3": "classes_per_batch = -3: give a number above 0",
    "workers = -2": "workers = -2: give 0 or more",
    "warmup_epochs = nan": "warmup_epochs = nan: give a finite number",
    "lr_backbone = nan": "lr_backbone = nan: give a finite number",
    "lr_head = inf": "lr_head = inf: give a finite number",
    "lr_head = -1.0": "lr_head = -1.0: give 0 or more",
    "half = 1": "half = 1: give bool",
    "loss_options = 5": "loss_options = 5: give dict",
    'loss_options = { alpha = "x" }': "loss_options {'alpha': 'x'} do not fit loss 'rll' (",
    "loss_options = { bogus = 1 }": "loss_options {'bogus': 1} do not fit loss 'rll' (",
    "loss_options = { alpha = nan }": "loss_options {'alpha': nan} make loss 'rll' nan on a small batch",
}


def _raster(path: Path, pixels: np.ndarray, transform: Affine, crs: str = "EPSG:32618", **options) -> Path:
    with rasterio.open(path, "w", driver="GTiff", width=pixels.shape[2], height=pixels.shape[1],
                       count=pixels.shape[0], dtype=pixels.dtype, crs=crs, transform=transform, **options) as out:
        out.write(pixels)
    return path


def hostile_rasters(folder: Path) -> dict[str, Path]:
    """Complex values, a pixel size of 0, a NaN origin, pixels of 10,000 km, float64 fill near 1e300 and a sparse
    10⁶ × 10⁶ GeoTIFF (15 million tiles of 256 px; a few MB on disk), by name."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    pixels = rng.integers(1, 255, (3, 256, 256), dtype=np.uint8)
    utm = Affine(30, 0, 500000, 0, -30, 4500000)
    rasters = {
        "complex": _raster(folder / "complex.tif", (pixels + 1j * pixels).astype(np.complex64), utm),
        "pixel0": _raster(folder / "pixel0.tif", pixels, Affine(0, 0, 500000, 0, 0, 4500000)),
        "nanorigin": _raster(folder / "nanorigin.tif", pixels, Affine(30, 0, float("nan"), 0, -30, float("nan"))),
        "pixel1e7": _raster(folder / "pixel1e7.tif", pixels, Affine(1e7, 0, 500000, 0, -1e7, 4500000)),
        "huge": _raster(folder / "huge.tif", rng.random((3, 256, 256)) * 1e300, utm),
        "sparse": folder / "sparse.tif",
    }
    with rasterio.open(rasters["sparse"], "w", driver="GTiff", width=10**6, height=10**6, count=3, dtype="uint8",
                       crs="EPSG:32618", transform=Affine(1, 0, 500000, 0, -1, 4500000), tiled=True,
                       blockxsize=1024, blockysize=1024, BIGTIFF="YES", SPARSE_OK=True) as sparse:
        sparse.write(pixels, window=Window(0, 0, 256, 256))
    return rasters


def landsat_product(folder: Path, mult: str = "2.75E-05", files: dict[int, str] | None = None) -> Path:
    """The 224/077 crop as a Landsat Collection 2 Level-2 product acquired 2020-05-19: SR_B2, SR_B3, SR_B4 and an
    MTL giving `mult` as each band's scale, and naming `files` instead of some bands' own files."""
    split_bands(LANDSAT8_224077, folder, [f"{LANDSAT_PREFIX}_SR_B{n}.TIF" for n in (2, 3, 4)])
    names = {n: f"{LANDSAT_PREFIX}_SR_B{n}.TIF" for n in (2, 3, 4)} | (files or {})
    files_text = "\n".join(f'    FILE_NAME_BAND_{n} = "{file}"' for n, file in names.items())
    scaling = "\n".join(f"    REFLECTANCE_MULT_BAND_{n} = {mult}\n    REFLECTANCE_ADD_BAND_{n} = -0.2" for n in names)
    (folder / f"{LANDSAT_PREFIX}_MTL.txt").write_text(
        f"GROUP = LANDSAT_METADATA_FILE\n  GROUP = PRODUCT_CONTENTS\n{files_text}\n  END_GROUP = PRODUCT_CONTENTS\n"
        '  GROUP = IMAGE_ATTRIBUTES\n    SPACECRAFT_ID = "LANDSAT_8"\n    SENSOR_ID = "OLI_TIRS"\n'
        '    DATE_ACQUIRED = 2020-05-19\n    SCENE_CENTER_TIME = "13:42:21.1234560Z"\n'
        "  END_GROUP = IMAGE_ATTRIBUTES\n  GROUP = LEVEL2_SURFACE_REFLECTANCE_PARAMETERS\n"
        f"{scaling}\n  END_GROUP = LEVEL2_SURFACE_REFLECTANCE_PARAMETERS\nEND_GROUP = LANDSAT_METADATA_FILE\nEND\n")
    return folder


def _sentinel2(safe: Path, metadata: str | None) -> Path:
    split_bands(LANDSAT8_224078, safe, ["T21JXN_B02_10m.tif", "T21JXN_B03_10m.tif", "T21JXN_B04_10m.tif"])
    if metadata is not None:
        (safe / "MTD_MSIL2A.xml").write_text(metadata)
    return safe


ENTITY_BOMB = ('<?xml version="1.0"?>\n<!DOCTYPE lolz [<!ENTITY lol "lol">'
               + "".join(f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">'
                         for i in range(1, 10))
               + ']>\n<n1:Level-2A_User_Product xmlns:n1="x"><SPACECRAFT_NAME>&lol9;</SPACECRAFT_NAME>'
                 "</n1:Level-2A_User_Product>\n")


def _mtd(quantification: str, offset: str) -> str:
    """Sentinel-2 L2A metadata reduced to what geosearch reads: the quantification value and band 1's offset."""
    return ('<?xml version="1.0"?>\n<n1:Level-2A_User_Product xmlns:n1="x"><Product_Image_Characteristics>'
            f"<BOA_QUANTIFICATION_VALUE>{quantification}</BOA_QUANTIFICATION_VALUE>"
            '<Spectral_Information bandId="1" physicalBand="B2"/>'
            f'<BOA_ADD_OFFSET band_id="1">{offset}</BOA_ADD_OFFSET>'
            "</Product_Image_Characteristics></n1:Level-2A_User_Product>\n")


def hostile_products(folder: Path) -> dict[str, Path]:
    """Per-band products whose metadata are broken, by name: MTL scales that are text, NaN or 1e400, a 5,000-character
    band file name, an MTL that is /dev/zero, Sentinel-2 metadata that is not XML, empty, an entity bomb, or gives a
    quantification value or an offset that is no number; and one whose GRANULE/*/IMG_DATA is a file (read as a
    plain folder of bands, so it is a good one)."""
    products = {name: landsat_product(folder / name, mult=mult) for name, mult in
                (("abc", "abc"), ("nan", "NaN"), ("huge", "1e400"))}
    products["long"] = landsat_product(folder / "long", files={2: "A" * 5000 + ".TIF"})
    products["zero"] = landsat_product(folder / "zero")
    (products["zero"] / f"{LANDSAT_PREFIX}_MTL.txt").unlink()
    (products["zero"] / f"{LANDSAT_PREFIX}_MTL.txt").symlink_to("/dev/zero")
    products["notxml"] = _sentinel2(folder / "notxml.SAFE", "this is not xml {]")
    products["bomb"] = _sentinel2(folder / "bomb.SAFE", ENTITY_BOMB)
    products["emptyxml"] = _sentinel2(folder / "emptyxml.SAFE", "")
    products["quantification"] = _sentinel2(folder / "quantification.SAFE", _mtd("ten thousand", "-1000"))
    products["offset"] = _sentinel2(folder / "offset.SAFE", _mtd("10000", "minus 1000"))
    products["granule_file"] = _sentinel2(folder / "granule.SAFE", None)
    (products["granule_file"] / "GRANULE" / "L2A").mkdir(parents=True)
    (products["granule_file"] / "GRANULE" / "L2A" / "IMG_DATA").write_text("not a folder")
    return products


def _flip(path: Path, start: int, length: int) -> None:
    data = bytearray(path.read_bytes())
    data[start:start + length] = bytes(b ^ 0xFF for b in data[start:start + length])
    path.write_bytes(bytes(data))


STORE_DAMAGE = ("vectors", "deleted", "count", "tracker")


def damage_store(store: Path, name: str) -> Path:
    """An embedded store (of one segment) with one kind of damage to its tiles' segment files (STORE_DAMAGE):
    flipped bytes in the first 80 vectors of 16 floats, the first 128 deleted flags set, the vector count zeroed,
    or the high byte of the first point's internal id in the ID tracker (records of a type byte, a UUID and a
    little-endian u32), which Qdrant Edge allocated 100 GB for and aborted on."""
    (segment,) = (store / "edge" / "tiles" / "segments").iterdir()
    vectors = segment / "vector_storage"
    if name == "vectors":
        _flip(vectors / "vectors" / "chunk_0.mmap", 0, 16 * 4 * 80)
    elif name == "deleted":
        _flip(vectors / "deleted" / "flags_a.dat", 0, 16)
    elif name == "count":
        (vectors / "vectors" / "status.dat").write_bytes(b"\0" * 8)
    else:
        _flip(segment / "mutable_id_tracker.mappings", 20, 1)
    return store


def stac_item(item_id: str, href: str, properties: dict | None = None, **asset_fields) -> dict:
    """An item's JSON with one visual asset."""
    return {"type": "Feature", "stac_version": "1.0.0", "id": item_id, "geometry": None, "links": [],
            "properties": {"datetime": "2020-05-19T13:42:00Z"} if properties is None else properties,
            "assets": {"visual": {"href": href, "type": "image/tiff; application=geotiff", "roles": ["visual"],
                                  **asset_fields}}}


def hostile_catalog(folder: Path) -> Path:
    """A catalog that links to itself and to a second catalog linking back, holding one good item and items that
    are a JSON list or string, with a start_datetime that is no date or a number, eo:bands a number or a list of
    strings, raster:bands numbers or a NaN scale, and a second item naming the good item's raster; its path."""
    good = str(LANDSAT8_224077)
    eo = [{"name": n, "common_name": c} for n, c in (("B2", "blue"), ("B3", "green"), ("B4", "red"))]
    items = {
        "good": stac_item("good", good),
        "list": [stac_item("x", good)],
        "string": "hello",
        "garbage_start": stac_item("garbage_start", good, {"datetime": None, "start_datetime": "not a date",
                                                           "end_datetime": "2020-05-20T00:00:00Z"}),
        "number_start": stac_item("number_start", str(LANDSAT8_224078), {"datetime": None, "start_datetime": 1589895720,
                                                                         "end_datetime": "2020-05-20T00:00:00Z"}),
        "eo_number": stac_item("eo_number", str(LANDSAT8_224078), **{"eo:bands": 3}),
        "eo_strings": stac_item("eo_strings", str(LANDSAT8_224078), **{"eo:bands": ["B2", "B3", "B4"]}),
        "raster_numbers": stac_item("raster_numbers", str(LANDSAT8_224078),
                                    **{"eo:bands": eo, "raster:bands": [1, 2, 3]}),
        "nan_scale": stac_item("nan_scale", str(LANDSAT8_224078),
                               **{"eo:bands": eo, "raster:bands": [{"scale": float("nan"), "offset": 0}] * 3}),
        "twice": stac_item("twice", good),
    }
    links = [{"rel": "root", "href": "./catalog.json"}, {"rel": "child", "href": "./catalog.json"},
             {"rel": "child", "href": "./other.json"}]
    for name, body in items.items():
        (folder / name).mkdir(parents=True)
        (folder / name / f"{name}.json").write_text(json.dumps(body))
        links.append({"rel": "item", "href": f"./{name}/{name}.json"})
    catalog = {"type": "Catalog", "id": "c", "stac_version": "1.0.0", "description": "d", "links": links}
    (folder / "catalog.json").write_text(json.dumps(catalog))
    (folder / "other.json").write_text(json.dumps(catalog | {"id": "other"}))
    return folder / "catalog.json"


def rewritten(out: Path, path: Path, metadata: dict | None = None, table: pa.Table | None = None) -> Path:
    """An embedding file written again with some of its metadata replaced (a value of None drops the key)."""
    table = table if table is not None else pq.read_table(out)
    meta = {key: value for key, value in (table.schema.metadata | (metadata or {})).items() if value is not None}
    pq.write_table(table.replace_schema_metadata(meta), path)
    return path


def _with_own(out: Path, path: Path, change: Callable[[dict], object]) -> Path:
    own = json.loads(pq.read_schema(out).metadata[b"geosearch"])
    change(own)
    return rewritten(out, path, {b"geosearch": json.dumps(own).encode()})


def hostile_embeddings(out: Path, folder: Path) -> dict[str, Path]:
    """An exported archive's embedding file (`out`, of two scenes or more) written again wrong, by name: a scene
    record without its path or with a number as one, a grid or stretches that are garbage, a record's stretch or
    tiling garbage, one scene's tiles under the ids of another scene's tiles (`thief`), two ids of one UUID,
    footprints in metres declared as lon/lat, off the globe, self-intersecting, empty or null, no geometry column,
    footers that are not JSON or of the wrong JSON type."""
    folder.mkdir(parents=True, exist_ok=True)
    table, frame = pq.read_table(out), gpd.read_parquet(out)
    profile = next(iter(json.loads(table.schema.metadata[b"geosearch"])["stretches"]))

    def record(**fields) -> Callable[[dict], object]:
        return lambda own: own["scenes"][0].update(fields)

    own_changes = {
        "no_path": lambda own: own["scenes"][0].pop("path"),
        "number_path": record(path=7),
        "bogus_grid": lambda own: own.update(grid="bogus"),
        "garbage_stretch": lambda own: own["stretches"].update({profile: {"low": "x"}}),
        "record_stretch": record(stretch={"low": [1, 2, 3]}),
        "record_tiling": record(tiling={"tile_size": "big"}),
    }
    files = {name: _with_own(out, folder / f"{name}.parquet", change) for name, change in own_changes.items()}
    first, other = frame["scene_id"].unique()[:2]
    ids = table.column("tile_id").to_pylist()
    own_rows = table.filter(pc.equal(table.column("scene_id"), first))
    others = [i for i, s in zip(ids, table.column("scene_id").to_pylist(), strict=True) if s == other]
    stolen = (others + own_rows.column("tile_id").to_pylist())[:len(own_rows)]
    id_column = table.schema.get_field_index("tile_id")
    files["thief"] = rewritten(out, folder / "thief.parquet",
                               table=own_rows.set_column(id_column, "tile_id", pa.array(stolen)))
    forms = [ids[0], "urn:uuid:" + ids[0].upper(), *ids[2:]]
    files["same"] = rewritten(out, folder / "same.parquet", table=table.set_column(id_column, "tile_id",
                                                                                    pa.array(forms)))
    variants = {"metres": frame.to_crs(32621).set_crs(4326, allow_override=True), "off": frame.copy(),
                "bowtie": frame.copy(), "empty": frame.copy()}
    variants["off"].geometry = [shapely.affinity.translate(g, 500, 0) for g in frame.geometry]
    variants["bowtie"].geometry = [shapely.Polygon([(0, 0), (1, 1), (1, 0), (0, 1)]), *frame.geometry[1:]]
    variants["empty"].geometry = [shapely.Polygon(), *frame.geometry[1:]]
    for name, variant in variants.items():
        variant.to_parquet(folder / f"{name}.parquet")
        files[name] = folder / f"{name}.parquet"
    geometry = table.schema.get_field_index("geometry")
    files["null"] = rewritten(out, folder / "null.parquet", table=table.set_column(
        geometry, "geometry", pa.array([None, *table.column("geometry").to_pylist()[1:]], pa.binary())))
    files["nogeometry"] = rewritten(out, folder / "nogeometry.parquet", table=table.drop_columns(["geometry"]))
    files["badgeo"] = rewritten(out, folder / "badgeo.parquet", {b"geo": b"{not json"})
    files["listemb"] = rewritten(out, folder / "listemb.parquet", {b"emb": b"[1, 2]"})
    files["stringown"] = rewritten(out, folder / "stringown.parquet", {b"geosearch": b'"text"'})
    return files


def good_and_bad_folder(folder: Path) -> Path:
    """A folder holding a real scene (`a_good.tif`) beside the hostile rasters."""
    hostile_rasters(folder)
    (folder / "a_good.tif").write_bytes(LANDSAT8_224078.read_bytes())
    return folder

