"""Per-band products as one scene: a Landsat Collection 2 product (a GeoTIFF per band and its MTL file), a
Sentinel-2 product (a folder of per-band GeoTIFF, COG or JP2 files, a SAFE folder among them), or the per-band
assets of a STAC item (`ITEM.json#red,green,blue`, as stac.py names it). They are read
through a GDAL VRT that stacks the bands on the finest band's grid: rasterio reads it window by window like any
raster, coarser bands resampled as they are read, and no stacked copy is written. The VRT carries what the
metadata say: each band's name and common name (`B4_red`, so that red, green and blue are found by name), its
scale and offset to reflectance, the sensor and the acquisition time."""

import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit
from xml.sax.saxutils import escape

import defusedxml.ElementTree as SafeXML
import pystac
import rasterio
from defusedxml import DefusedXmlException
from rasterio.errors import RasterioError

from geosearch.errors import SceneError
from geosearch.files import check_readable, read_text

# Band numbers to common names (the STAC eo extension's), by mission.
LANDSAT_OLI = {1: "coastal", 2: "blue", 3: "green", 4: "red", 5: "nir", 6: "swir16", 7: "swir22"}  # Landsat 8, 9
LANDSAT_TM = {1: "blue", 2: "green", 3: "red", 4: "nir", 5: "swir16", 7: "swir22"}  # Landsat 4, 5, 7
SENTINEL2 = {"B01": "coastal", "B02": "blue", "B03": "green", "B04": "red", "B05": "rededge", "B06": "rededge",
             "B07": "rededge", "B08": "nir", "B8A": "nir08", "B09": "nir09", "B10": "cirrus", "B11": "swir16",
             "B12": "swir22"}
_S2_FILE = re.compile(r"(?:^|_)(B(?:0[1-9]|1[0-2]|8A))(?:_\d+m)?\.(?:tif|tiff|jp2)$", re.IGNORECASE)
_MTL_LINE = re.compile(r'^\s*([A-Z0-9_]+)\s*=\s*"?([^"]*)"?\s*$')


@dataclass
class Band:
    name: str  # as the product names it: B4, B02
    common: str  # red, nir, swir16…
    path: Path
    scale: float | None = None  # to reflectance
    offset: float | None = None
    index: int = 1  # the band's number in its file (a STAC asset may hold several bands)


@dataclass
class Product:
    path: str  # what the user gave: the folder, or its MTL
    bands: list[Band]
    tags: dict[str, str] = field(default_factory=dict)


def is_product(path: str) -> bool:
    """Whether `path` is a per-band product (cheap: by names only, nothing opened)."""
    if _names_assets(path):
        return True
    candidate = Path(path)
    if candidate.is_file():
        return candidate.name.upper().endswith("_MTL.TXT")
    if not candidate.is_dir():
        return False
    return bool(_mtl_files(candidate)) or any(_S2_FILE.search(p.name) for p in _band_files(candidate))


def open_product(path: str) -> str:
    """The product's VRT (XML text, which rasterio opens as a raster); a SceneError naming what is wrong."""
    return vrt_of(read_product(path))


def _names_assets(path: str) -> bool:
    """`ITEM.json#KEY,…`: a STAC item's assets. Split at the last `#`, so that folders may hold one; a file whose
    own name holds `#` is that file."""
    return "#" in path and not Path(path).exists() and Path(path.rsplit("#", 1)[0]).is_file()


def read_product(path: str) -> Product:
    if _names_assets(path):
        return _stac_assets(path)
    candidate = Path(path)
    mtl = [candidate] if candidate.is_file() else _mtl_files(candidate)
    if len(mtl) > 1:
        raise SceneError(path, f"holds {len(mtl)} MTL files: give the one of the product to read")
    return _landsat(path, mtl[0]) if mtl else _sentinel2(path, candidate)


def _mtl_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.upper().endswith("_MTL.TXT"))


def _band_files(folder: Path) -> list[Path]:
    """The raster files of a folder, or of a SAFE's granule (GRANULE/*/IMG_DATA, by resolution or not)."""
    granules = sorted(p for p in folder.glob("GRANULE/*/IMG_DATA") if p.is_dir())
    roots = [p for g in granules for p in ([g, *sorted(r for r in g.glob("R*m") if r.is_dir())])] if granules \
        else [folder]
    return [p for root in roots for p in sorted(root.iterdir()) if p.is_file()]


def _landsat(path: str, mtl: Path) -> Product:
    values = {}
    for line in read_text(mtl, path).splitlines():
        if match := _MTL_LINE.match(line):
            values[match[1]] = match[2].strip()
    spacecraft = values.get("SPACECRAFT_ID", "")
    names = LANDSAT_OLI if spacecraft in ("LANDSAT_8", "LANDSAT_9") else LANDSAT_TM
    bands = []
    for number, common in names.items():
        given = values.get(f"FILE_NAME_BAND_{number}")
        if given is None:
            continue
        file = mtl.parent / given
        if len(given) > 255 or not file.is_file():
            raise SceneError(path, f"its MTL names {given[:80]} for band {number}, which is not there")
        scale = _number(values.get(f"REFLECTANCE_MULT_BAND_{number}"), f"REFLECTANCE_MULT_BAND_{number}", path)
        offset = _number(values.get(f"REFLECTANCE_ADD_BAND_{number}"), f"REFLECTANCE_ADD_BAND_{number}", path)
        bands.append(Band(f"B{number}", common, file, scale, offset))
    if not bands:
        raise SceneError(path, f"its MTL ({mtl.name}) names no band file (FILE_NAME_BAND_N)")
    tags = {"SPACECRAFT_ID": spacecraft, "SENSOR_ID": values.get("SENSOR_ID", ""),
            "PROCESSING_LEVEL": values.get("PROCESSING_LEVEL", "")}
    if "DATE_ACQUIRED" in values:
        tags["ACQUISITIONDATETIME"] = f"{values['DATE_ACQUIRED']}T{values.get('SCENE_CENTER_TIME', '00:00:00Z')}"
    return Product(path, bands, {key: value for key, value in tags.items() if value})


def _number(text: object, key: str, path: str) -> float | None:
    """The finite number the metadata give for `key` (as text or a number), or None where they give none."""
    if text is None or text == "":
        return None
    try:
        number = float(text)
    except (ValueError, TypeError):
        number = math.nan
    if not math.isfinite(number):
        raise SceneError(path, f"its metadata give {key} = {str(text)[:40]!r}, not a finite number")
    return number


def _sentinel2(path: str, folder: Path) -> Product:
    found: dict[str, Path] = {}
    for file in _band_files(folder):
        if match := _S2_FILE.search(file.name):
            name = match[1].upper()
            found.setdefault(name, file)  # a SAFE lists the finest resolution first (R10m before R20m)
    metadata = next(iter(sorted(folder.glob("MTD_MSI*.xml"))), None)
    scale, offsets, tags = _s2_metadata(metadata, path) if metadata else (None, {}, {"SPACECRAFT_NAME": "Sentinel-2"})
    bands = [Band(name, SENTINEL2[name], file, scale, offsets.get(name)) for name, file in sorted(found.items())]
    if not bands:
        raise SceneError(path, "holds no MTL file and no Sentinel-2 band files (B01…B12, B8A)")
    return Product(path, bands, tags)


def _s2_metadata(path: Path, product: str) -> tuple[float | None, dict[str, float], dict[str, str]]:
    """The scale to reflectance (1 / BOA_QUANTIFICATION_VALUE), the offsets by band (BOA_ADD_OFFSET, from baseline
    04.00), the spacecraft and the start time, from MTD_MSIL2A.xml (parsed with no DTD or entities)."""
    try:
        root = SafeXML.fromstring(read_text(path, product))
    except (SafeXML.ParseError, DefusedXmlException) as error:
        raise SceneError(product, f"{path.name} is not Sentinel-2 metadata we can read ({error})") from None
    texts = {element.tag.split("}")[-1]: (element.text or "").strip() for element in root.iter()}
    quantification = _number(texts.get("BOA_QUANTIFICATION_VALUE"), "BOA_QUANTIFICATION_VALUE", product)
    if quantification is not None and quantification <= 0:
        raise SceneError(product, f"its metadata give BOA_QUANTIFICATION_VALUE = {quantification}, not above 0")
    names = {element.get("bandId"): element.get("physicalBand") for element in root.iter()
             if element.tag.endswith("Spectral_Information") and element.get("physicalBand")}
    offsets = {}
    for element in root.iter():
        if element.tag.endswith("BOA_ADD_OFFSET") and quantification and element.get("band_id") in names:
            physical = names[element.get("band_id")]  # B1…B12, B8A
            offset = _number((element.text or "").strip(), "BOA_ADD_OFFSET", product)
            offsets[physical if len(physical) == 3 else f"B0{physical[1:]}"] = (offset or 0.0) / quantification
    tags = {"SPACECRAFT_NAME": texts.get("SPACECRAFT_NAME", "Sentinel-2"),
            "PRODUCT_START_TIME": texts.get("PRODUCT_START_TIME", "")}
    return (1 / quantification if quantification else None), offsets, {k: v for k, v in tags.items() if v}


def _stac_assets(path: str) -> Product:
    """The assets `ITEM.json#KEY,KEY,KEY` names, as bands: their common names from eo:bands (else the key), their
    scale and offset from raster:bands. An asset that lists several eo:bands gives all of them, in its order."""
    item_file, keys = path.rsplit("#", 1)
    try:
        item = read_stac(item_file, path)
        if not isinstance(item, pystac.Item):
            raise TypeError(f"a STAC {type(item).__name__}, not an item")
    except STAC_READ_ERRORS as error:
        raise SceneError(path, f"not a STAC item we can read ({str(error).splitlines()[0]})") from None
    bands = []
    for key in keys.split(","):
        if key not in item.assets:
            raise SceneError(path, f"STAC item {item.id} has no asset {key}")
        file = asset_file(item, key)
        described, scalings = band_fields(item, key)
        for index, band in enumerate(described or [{}], start=1):
            name = key if len(described) <= 1 else band.get("name") or f"{key}{index}"
            scaling = scalings[index - 1] if index <= len(scalings) else {}
            bands.append(Band(name, band.get("common_name") or name, file, _number(scaling.get("scale"), "scale", path),
                              _number(scaling.get("offset"), "offset", path), index))
    when = item_time(item)
    tags = {"PLATFORM": str(item.common_metadata.platform or ""),
            "ACQUISITIONDATETIME": when.isoformat() if when else ""}
    return Product(path, bands, {key: value for key, value in tags.items() if value})


# What reading a STAC file can raise: JSON errors are ValueErrors; a file of another kind, a JSON list or string, or
# a STAC object missing a field, the others; links that loop, RecursionError.
STAC_READ_ERRORS = (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError, pystac.STACError,
                    pystac.STACTypeError)


def read_stac(path: str, source: str | None = None) -> pystac.STACObject:
    """A local STAC file, read as metadata is (a regular file, bounded: files.read_text). Its href keeps a `#` of
    its path as %23, since pystac cuts hrefs at `#` (local_href turns hrefs made from it back into paths)."""
    text = read_text(Path(path), source or path)
    return pystac.read_dict(json.loads(text), href=path.replace("#", "%23"))


def local_href(href: str) -> str:
    """A local path from an href made relative to a STAC file read by read_stac."""
    return href.replace("%23", "#")


def item_time(item: pystac.Item) -> datetime | None:
    """When an item was acquired: its datetime, else its start_datetime; a SceneError when they are not dates."""
    try:
        return item.datetime or item.common_metadata.start_datetime
    except (ValueError, TypeError, OverflowError):
        raise SceneError(item.get_self_href() or item.id, f"STAC item {item.id}: start_datetime "
                         f"{item.properties.get('start_datetime')!r} is not a date") from None


def band_fields(item: pystac.Item, key: str) -> tuple[list[dict], list[dict]]:
    """An asset's eo:bands and raster:bands, each a list of objects (empty when absent); a SceneError otherwise."""
    fields = []
    for name in ("eo:bands", "raster:bands"):
        value = item.assets[key].extra_fields.get(name) or []
        if not (isinstance(value, list) and all(isinstance(band, dict) for band in value)):
            raise SceneError(item.get_self_href() or item.id, f"STAC item {item.id}: asset {key}'s {name} is "
                             f"{value!r:.60}, not a list of objects")
        fields.append(value)
    return fields[0], fields[1]


def asset_file(item: pystac.Item, key: str) -> Path:
    """The local file of an item's asset, its href taken relative to the item's own file; a SceneError when it is
    remote or missing."""
    href = item.assets[key].get_absolute_href() or item.assets[key].href
    where = item.get_self_href() or item.id
    scheme = urlsplit(href).scheme
    if scheme not in ("", "file") and len(scheme) > 1:  # one letter: a Windows drive
        raise SceneError(where, f"STAC item {item.id}: asset {key} is remote ({href}); geosearch reads local files, "
                                "so it is not reachable")
    local = Path(local_href(urlsplit(href).path if scheme == "file" else href))
    if not local.is_file():
        raise SceneError(where, f"STAC item {item.id}: asset {key} ({local}) does not exist")
    return local


def vrt_of(product: Product) -> str:
    """A VRT over the bands on the finest band's grid. Bands must share the CRS and cover the same ground (to a
    pixel of the coarsest band): a SceneError says which one does not."""
    grids = []
    for band in product.bands:
        check_readable(band.path, product.path)
        try:
            with rasterio.open(band.path) as dataset:
                if band.index > dataset.count:
                    raise SceneError(product.path, f"band {band.name} is band {band.index} of {band.path.name}, "
                                                   f"which has {dataset.count}")
                grids.append((dataset.crs, dataset.transform, dataset.width, dataset.height,
                              dataset.dtypes[band.index - 1], dataset.nodata))
        except RasterioError as error:
            raise SceneError(product.path, f"band {band.name} ({band.path.name}) cannot be opened: {error}") from None
    finest = min(range(len(grids)), key=lambda i: abs(grids[i][1].a))
    crs, transform, width, height = grids[finest][:4]
    right, bottom = transform @ (width, height)
    for band, (band_crs, band_transform, band_width, band_height, _, _) in zip(product.bands, grids, strict=True):
        band_right, band_bottom = band_transform @ (band_width, band_height)
        tolerance = abs(band_transform.a)
        if band_crs != crs or max(abs(band_transform.c - transform.c), abs(band_transform.f - transform.f),
                                  abs(band_right - right), abs(band_bottom - bottom)) > tolerance:
            raise SceneError(product.path, f"band {band.name} ({band.path.name}) is on another grid than band "
                                           f"{product.bands[finest].name}: bands must share the CRS and the ground")
    parts = [f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">',
             f"<SRS>{escape(crs.to_wkt())}</SRS>",
             f"<GeoTransform>{', '.join(repr(v) for v in transform.to_gdal())}</GeoTransform>",
             "<Metadata>" + "".join(f'<MDI key="{escape(k)}">{escape(v)}</MDI>' for k, v in product.tags.items())
             + "</Metadata>"]
    for number, (band, grid) in enumerate(zip(product.bands, grids, strict=True), start=1):
        _, _, band_width, band_height, dtype, nodata = grid
        parts.append(f'<VRTRasterBand dataType="{_GDAL_TYPES[dtype]}" band="{number}">')
        parts.append(f"<Description>{band.name if band.name == band.common else f'{band.name}_{band.common}'}"
                     "</Description>")
        if nodata is not None:
            parts.append(f"<NoDataValue>{nodata!r}</NoDataValue>")
        if band.scale is not None:
            parts.append(f"<Scale>{band.scale!r}</Scale><Offset>{band.offset or 0.0!r}</Offset>")
        parts.append(f'<ComplexSource resampling="bilinear"><SourceFilename relativeToVRT="0">'
                     f"{escape(str(band.path.resolve()))}</SourceFilename><SourceBand>{band.index}</SourceBand>"
                     f'<SrcRect xOff="0" yOff="0" xSize="{band_width}" ySize="{band_height}"/>'
                     f'<DstRect xOff="0" yOff="0" xSize="{width}" ySize="{height}"/>'
                     + (f"<NODATA>{nodata!r}</NODATA>" if nodata is not None else "") + "</ComplexSource>")
        parts.append("</VRTRasterBand>")
    parts.append("</VRTDataset>")
    return "".join(parts)


_GDAL_TYPES = {"uint8": "Byte", "int8": "Int8", "uint16": "UInt16", "int16": "Int16", "uint32": "UInt32",
               "int32": "Int32", "float32": "Float32", "float64": "Float64"}
