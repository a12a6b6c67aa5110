"""Embedding files: GeoParquet with one row per tile (its footprint, an id, the vector as a fixed-size list), the
way Earth Index, Clay and Major TOM publish embeddings, with the STAC embeddings extension's fields in the file's
metadata ("emb", beside GeoParquet's "geo", as geoembeddings.org recommends) and geosearch's own ("geosearch": the
model, the scene records and stretches, so that an archive exported and imported again is the same archive).

`embed` and `export --embeddings` write them; `import` loads one, geosearch's or made elsewhere, into an archive."""

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import shapely

from geosearch.acquired import parse_date
from geosearch.errors import GeosearchError
from geosearch.export import atomic_output, check_output_path
from geosearch.files import check_readable
from geosearch.grid import GridMode
from geosearch.index import check_record, check_space, footprint_fields, on_the_globe
from geosearch.store.archive import Archive, point_id
from geosearch.store.backend import Backend
from geosearch.stretch import Stretch

STAC_EXTENSION = "https://stac-extensions.github.io/embeddings/v0.0.1/schema.json"
MODEL_URN = "urn:geosearch:model:"  # the href of the "emb:model" link: geosearch's models have no public page
ID_COLUMNS = ("tile_id", "id", "unique_id")  # geosearch's, Earth Index's, Major TOM's
VECTOR_COLUMNS = ("embedding", "embeddings")  # Earth Index and Major TOM's, Clay's
UNIT_TOLERANCE = 1e-3  # how far from 1 a vector's norm may be (float16 files fit)
PAGE = 1000  # tiles read, written or stored at a time

# The tile's columns, as TileGrid.to_frame and the store's payloads have them; missing ones are written empty.
TILE_COLUMNS = {
    "tile_id": pa.string(), "place_id": pa.string(), "scene_id": pa.string(), "scene_path": pa.string(),
    "crs": pa.string(), "acquired": pa.string(), "model_id": pa.string(), "row": pa.int64(), "col": pa.int64(),
    "width": pa.int64(), "height": pa.int64(), "stride": pa.int64(), "gsd_m": pa.float64(),
    "valid_fraction": pa.float64(), "centroid_lon": pa.float64(), "centroid_lat": pa.float64(),
}
_NOT_COPIED = ("tile_id", "centroid_lon", "centroid_lat")  # the point's id; the footprint gives the centroid
_WGS84_PROJJSON = json.loads(gpd.GeoSeries([], crs=4326).crs.to_json())


def write_embeddings(path: str | Path, pages: Iterable[tuple[gpd.GeoDataFrame, np.ndarray]], model_id: str,
                     scenes: list[dict], stretches: dict | None = None, grid: str | None = None) -> int:
    """Write tiles (a frame of TILE_COLUMNS and geometry in EPSG:4326, and their unit vectors) page by page, so that
    an archive of any size passes through a bounded memory; the number of tiles written."""
    path = check_output_path(path, (".parquet",))
    written = 0
    with atomic_output(path) as tmp:
        writer = None
        try:
            for frame, vectors in pages:
                table = _table(frame, vectors)
                if writer is None:
                    metadata = _metadata(model_id, vectors.shape[1], scenes, stretches, grid)
                    writer = pq.ParquetWriter(tmp, table.schema.with_metadata(metadata), compression="zstd")
                writer.write_table(table)
                written += len(frame)
        finally:
            if writer is not None:
                writer.close()
        if writer is None:
            raise GeosearchError(f"{path}: no tile to write")
    return written


def _table(frame: gpd.GeoDataFrame, vectors: np.ndarray) -> pa.Table:
    columns = {name: pa.array(frame[name] if name in frame else [None] * len(frame), type=kind, from_pandas=True)
               for name, kind in TILE_COLUMNS.items()}
    columns["geometry"] = pa.array(shapely.to_wkb(frame.geometry.to_crs(4326).values), type=pa.binary())
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).ravel())
    columns["embedding"] = pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1])
    return pa.table(columns)


def _metadata(model_id: str, dim: int, scenes: list[dict], stretches: dict | None, grid: str | None) -> dict:
    """GeoParquet 1.1's "geo"; the STAC embeddings extension's fields as "emb" (its chip layout when every scene was
    cut alike); geosearch's own as "geosearch"."""
    geo = {"version": "1.1.0", "primary_column": "geometry",
           "columns": {"geometry": {"encoding": "WKB", "geometry_types": ["Polygon"], "crs": _WGS84_PROJJSON}}}
    emb = {"stac_extensions": [STAC_EXTENSION], "emb:type": "chip", "emb:dimensions": dim, "data_type": "float32",
           "processing:datetime": datetime.now(UTC).isoformat(),
           "links": [{"rel": "emb:model", "href": MODEL_URN + model_id}], "model": {"id": model_id}}
    layouts = {(r["tiling"]["tile_size"], r["tiling"]["stride"]) for r in scenes if "tiling" in r}
    if len(layouts) == 1:
        ((size, stride),) = layouts
        emb["emb:chip_layout"] = {"layout_type": "regular_grid", "chip_size": [size, size], "stride": [stride, stride]}
    own = {"model_id": model_id, "grid": grid, "scenes": scenes, "stretches": stretches or {}}
    return {"geo": json.dumps(geo), "emb": json.dumps(emb), "geosearch": json.dumps(own)}


def archive_pages(archive: Archive) -> Iterator[tuple[gpd.GeoDataFrame, np.ndarray]]:
    """The archive's served tiles, a page at a time, as write_embeddings takes them."""
    for ids, vectors, payloads in archive.vector_pages(page=PAGE):
        frame = gpd.GeoDataFrame(
            {"tile_id": ids} | {name: [p.get(name) for p in payloads] for name in TILE_COLUMNS if name != "tile_id"}
            | {"centroid_lon": [p["centroid"]["lon"] for p in payloads],
               "centroid_lat": [p["centroid"]["lat"] for p in payloads]},
            geometry=[shapely.geometry.shape(p["footprint"]) for p in payloads], crs=4326)
        yield frame, vectors


@dataclass
class EmbeddingFile:
    """What an embedding file holds, checked: ids as the file gives them, unit vectors, the other columns with
    the footprints in EPSG:4326, the model, and geosearch's own metadata ({} for a file made elsewhere)."""

    path: Path
    ids: list[str]
    point_ids: list[str]  # the store's ids of the tiles (store.archive.point_id)
    vectors: np.ndarray
    frame: gpd.GeoDataFrame
    model_id: str
    own: dict


def read_embeddings(path: str | Path, model_id: str | None = None) -> EmbeddingFile:
    """Read and check an embedding file; `model_id` names the model of a file that does not say it. Every problem
    is one line naming the file, found before anything is stored."""
    path = Path(path)
    check_readable(path)
    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowException) as error:
        raise GeosearchError(f"{path}: not a Parquet file ({str(error).splitlines()[0]})") from None
    metadata = schema.metadata or {}
    if b"geo" not in metadata:
        raise GeosearchError(f"{path}: not GeoParquet (no 'geo' metadata), so its tiles have no footprints")
    own, emb = (_footer(path, metadata, key) for key in (b"geosearch", b"emb"))
    _footer(path, metadata, b"geo")
    id_column = _one_of(path, schema.names, ID_COLUMNS, "id")
    vector_column = _one_of(path, schema.names, VECTOR_COLUMNS, "embedding")
    try:
        vectors = _vectors(path, pq.read_table(path, columns=[vector_column]).column(vector_column), vector_column)
        frame = gpd.read_parquet(path, columns=[name for name in schema.names if name != vector_column])
    except (OSError, ValueError, TypeError, KeyError, pa.ArrowException) as error:  # geopandas reads 'geo' as it is
        raise GeosearchError(f"{path}: cannot be read as GeoParquet ({str(error).splitlines()[0]})") from None
    frame = _on_the_globe(path, frame)
    if frame[id_column].isna().any():
        raise GeosearchError(f"{path}: {int(frame[id_column].isna().sum())} tile(s) have no {id_column}")
    ids = [str(tile_id) for tile_id in frame[id_column]]
    points = [point_id(tile_id) for tile_id in ids]
    if len(set(points)) != len(points):
        raise GeosearchError(f"{path}: {len(points) - len(set(points))} {id_column} values name a tile another one "
                             "names already (ids that differ only in case or form, such as {uuid} and urn:uuid:…, "
                             "are one UUID)")
    declared = emb.get("emb:dimensions")
    if declared is not None and declared != vectors.shape[1]:
        raise GeosearchError(f"{path}: its metadata says {declared}-d embeddings, its {vector_column} column holds "
                             f"{vectors.shape[1]}-d ones")
    return EmbeddingFile(path, ids, points, vectors, frame, _model_of(path, own, emb, frame, model_id),
                         _checked_own(path, own))


def _footer(path: Path, metadata: dict, key: bytes) -> dict:
    """One of the file's JSON metadata entries, which must be a JSON object ({} when absent)."""
    try:
        value = json.loads(metadata.get(key, b"{}"))
    except ValueError:
        raise GeosearchError(f"{path}: its {key.decode()!r} metadata is not JSON") from None
    if not isinstance(value, dict):
        raise GeosearchError(f"{path}: its {key.decode()!r} metadata is a JSON {type(value).__name__}, not an "
                             "object")
    return value


def _on_the_globe(path: Path, frame: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """The footprints in EPSG:4326, refused when any is missing, empty or invalid, or falls off the globe (values
    that cannot be in the CRS the file declares, such as metres declared as lon/lat)."""
    geometry = frame.geometry.values
    empty = shapely.is_missing(geometry) | shapely.is_empty(geometry)
    if empty.any():
        raise GeosearchError(f"{path}: {int(empty.sum())} tile(s) have no footprint (a null or empty geometry)")
    invalid = np.flatnonzero(~shapely.is_valid(geometry))
    if len(invalid):
        reason = shapely.is_valid_reason(geometry[invalid[0]])
        raise GeosearchError(f"{path}: {len(invalid)} footprint(s) are not valid geometries (row {invalid[0]}: "
                             f"{reason})")
    declared = frame.crs.to_string() if frame.crs is not None else "EPSG:4326 (no CRS recorded)"
    frame = frame.to_crs(4326) if frame.crs is not None else frame.set_crs(4326)
    bounds = shapely.bounds(frame.geometry.values)
    off = np.flatnonzero(~on_the_globe(bounds))
    if len(off):
        raise GeosearchError(f"{path}: {len(off)} footprint(s) lie off the globe in lon/lat (row {off[0]}: bounds "
                             f"{', '.join(f'{v:.6g}' for v in bounds[off[0]])}); their coordinates cannot be in the "
                             f"CRS the file declares, {declared}")
    return frame


def _checked_own(path: Path, own: dict) -> dict:
    """geosearch's own metadata, checked as the archive will use it: the grid mode, each stretch, each scene
    record."""
    try:
        if own.get("grid") is not None:
            GridMode(own["grid"])
        stretches = own.get("stretches") or {}
        if not isinstance(stretches, dict):
            raise GeosearchError("its stretches are not a table by profile")
        for stretch in stretches.values():
            Stretch.from_dict(stretch)
        scenes = own.get("scenes") or []
        if not isinstance(scenes, list):
            raise GeosearchError("its scenes are not a list of records")
        for record in scenes:
            check_record(record)
    except (GeosearchError, ValueError) as error:  # ValueError: GridMode's
        raise GeosearchError(f"{path}: its geosearch metadata cannot be used: {error}") from None
    return own


def _one_of(path: Path, names: list[str], choices: tuple[str, ...], what: str) -> str:
    found = [name for name in choices if name in names]
    if not found:
        raise GeosearchError(f"{path}: no {what} column (looked for {', '.join(choices)})")
    return found[0]


def _vectors(path: Path, column: pa.ChunkedArray, name: str) -> np.ndarray:
    """The column's vectors as float32 rows, refused unless every row holds the same number of finite floats and
    has unit length, as geosearch's cosine search needs."""
    column = column.combine_chunks()
    if not (pa.types.is_list(column.type) or pa.types.is_large_list(column.type)
            or pa.types.is_fixed_size_list(column.type)):
        raise GeosearchError(f"{path}: {name} is {column.type}, not a list of numbers per tile")
    if not pa.types.is_floating(column.type.value_type):
        raise GeosearchError(f"{path}: {name} holds {column.type.value_type} values; geosearch imports float "
                             "vectors: dequantize them first")
    if column.null_count:
        raise GeosearchError(f"{path}: {column.null_count} tile(s) have no {name}")
    lengths = pc.list_value_length(column).to_numpy()
    if len(lengths) == 0:
        raise GeosearchError(f"{path}: no tile in it")
    if lengths.min() != lengths.max():
        raise GeosearchError(f"{path}: {name} holds {lengths.min()} to {lengths.max()} values per tile; every tile "
                             "needs the same dimension")
    vectors = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(len(column), -1)
    if not np.isfinite(vectors).all():
        raise GeosearchError(f"{path}: {int((~np.isfinite(vectors).all(axis=1)).sum())} embeddings hold NaN or "
                             "infinite values")
    norms = np.linalg.norm(vectors, axis=1)
    off = np.abs(norms - 1) > UNIT_TOLERANCE
    if off.any():
        raise GeosearchError(f"{path}: {off.sum()} of {len(vectors)} embeddings are not unit-length (norms "
                             f"{norms.min():.4g} to {norms.max():.4g}); geosearch searches unit vectors by cosine: "
                             "normalise them first")
    return vectors


def _model_of(path: Path, own: dict, emb: dict, frame: gpd.GeoDataFrame, given: str | None) -> str:
    """The file's model: geosearch's metadata, then the STAC extension's model link, Earth Index's model id, a
    model_id column with one value; else the one the user names."""
    links = [link["href"] for link in emb.get("links", []) if link.get("rel") == "emb:model"]
    column = frame["model_id"].dropna().unique() if "model_id" in frame else []
    recorded = (own.get("model_id") or (links[0].removeprefix(MODEL_URN) if links else None)
                or emb.get("model", {}).get("id") or (str(column[0]) if len(column) == 1 else None))
    if given and recorded and given != recorded:
        raise GeosearchError(f"{path}: its embeddings are of model {recorded}, not {given}")
    if not (given or recorded):
        raise GeosearchError(f"{path}: no model recorded (emb metadata or a model_id column); name it with --model-id")
    return given or recorded


@dataclass
class ImportReport:
    collection: str
    model_id: str
    scenes: int
    tiles: int


def import_into(backend: Backend, embeddings: EmbeddingFile, collection: str) -> ImportReport:
    """Store the file's tiles in `collection` (created for its model if missing), scene by scene through the
    archive's three steps, so that an import cut short is redone by the next. Tile ids that are not UUIDs name one
    (store.archive.point_id) and stay in the payload as `source_id`. Every record is marked as imported: a server
    reads the rasters it names only under its roots."""
    dim = embeddings.vectors.shape[1]
    if backend.has_collection(collection):
        existing = Archive.open(backend, collection)
        if existing.dim != dim:
            raise GeosearchError(f"{embeddings.path}: {dim}-d embeddings, but collection {collection!r} in "
                                 f"{backend.location} holds {existing.dim}-d vectors of model {existing.model_id}; "
                                 "import into another --collection")
    scene_ids = _scene_ids(embeddings)
    records = _records(embeddings, scene_ids)
    archive = Archive.open(backend, collection, embeddings.model_id, dim, embeddings.own.get("grid") or "aligned")
    check_space(archive, len(embeddings.ids))
    _check_no_stolen_tiles(archive, embeddings, scene_ids)
    known = archive.stretches()
    for profile, stretch in (embeddings.own.get("stretches") or {}).items():
        if profile not in known:
            archive.add_stretch(profile, stretch, f"imported from {embeddings.path}")
    for rows, record in records:
        archive.begin_scene(record)
        for start in range(0, len(rows), PAGE):
            page = rows[start:start + PAGE]
            ids, payloads = _points(embeddings, page, record)
            archive.add_tiles(ids, embeddings.vectors[page], payloads)
        archive.complete_scene(record, len(rows))
    archive.optimize()
    return ImportReport(collection, embeddings.model_id, len(set(scene_ids)), len(embeddings.ids))


def _check_no_stolen_tiles(archive: Archive, embeddings: EmbeddingFile, scene_ids: np.ndarray) -> None:
    """Refuse a file whose tile ids are those of tiles the archive holds for other scenes: storing them would move
    those tiles into the imported scene, and removing it later would delete them."""
    for start in range(0, len(scene_ids), PAGE):
        page = embeddings.point_ids[start:start + PAGE]
        stored = archive.backend.payloads(archive.collection, page)
        for offset, point in enumerate(page):
            owner = stored.get(point, {}).get("scene_id")
            if owner is not None and owner != scene_ids[start + offset]:
                raise GeosearchError(f"{embeddings.path}: tile {embeddings.ids[start + offset]} is stored already, "
                                     f"as a tile of scene {owner}; its ids name tiles of other scenes, so nothing "
                                     "was imported")


def _scene_ids(embeddings: EmbeddingFile) -> np.ndarray:
    """Each tile's scene: its scene_id (or Major TOM's product_id), else one scene for the whole file."""
    frame = embeddings.frame
    for column in ("scene_id", "product_id"):
        if column in frame and frame[column].notna().all():
            return frame[column].astype(str).to_numpy()
    return np.full(len(frame), f"{embeddings.path.stem}-{point_id(str(embeddings.path.resolve()))[:10]}")


def _records(embeddings: EmbeddingFile, scene_ids: np.ndarray) -> list[tuple[np.ndarray, dict]]:
    """Each scene's rows and record (the file's own, else one made from its tiles), checked before anything is
    stored."""
    own = {record["scene_id"]: record for record in (embeddings.own.get("scenes") or [])}
    records = []
    for scene_id in dict.fromkeys(scene_ids):
        rows = np.flatnonzero(scene_ids == scene_id)
        record = own.get(scene_id) or _imported_record(embeddings, scene_id, rows)
        try:
            check_record(record)
        except GeosearchError as error:
            raise GeosearchError(f"{embeddings.path}: {error}") from None
        records.append((rows, record | {"imported_from": str(embeddings.path.resolve())}))
    return records


def _imported_record(embeddings: EmbeddingFile, scene_id: str, rows: np.ndarray) -> dict:
    """The record of a scene known only from its tiles' embeddings: where they came from, their union and date.
    It has no tiling, so its pixels cannot be read again (queries take its tiles by id)."""
    frame = embeddings.frame.iloc[rows]
    paths = frame["scene_path"].dropna().unique() if "scene_path" in frame else []
    return {"scene_id": scene_id, "path": str(paths[0]) if len(paths) == 1 else str(embeddings.path),
            "imported_from": str(embeddings.path), "model_id": embeddings.model_id, "crs": "EPSG:4326",
            "acquired": _acquired(embeddings.path, frame),
            "footprint": json.loads(shapely.to_geojson(shapely.union_all(frame.geometry.values)))}


def _acquired(path: Path, frame: gpd.GeoDataFrame) -> str | None:
    """A scene's acquisition date from its first tile's `acquired` (geosearch), `timestamp` (Major TOM) or `date`
    (Clay)."""
    for column in ("acquired", "timestamp", "date"):
        if column in frame and frame[column].notna().any():
            return parse_date(str(frame[column].dropna().iloc[0]), f"{path}: {column}").isoformat()
    return None


def _points(embeddings: EmbeddingFile, rows: np.ndarray, record: dict) -> tuple[list[str], list[dict]]:
    """Point ids and payloads of these rows of the file, with the fields the store's filters and searches read."""
    frame = embeddings.frame.iloc[rows]
    footprints = frame.geometry.values
    centroids = shapely.get_coordinates(shapely.centroid(footprints))
    where = footprint_fields(footprints, shapely.bounds(footprints), centroids)
    copied = [name for name in TILE_COLUMNS if name in frame and name not in _NOT_COPIED]
    values = frame[copied].astype(object).where(frame[copied].notna(), None).to_dict("records")
    ids, payloads = [], []
    for row, fields, footprint in zip(rows, values, where, strict=True):
        given, tile_id = embeddings.ids[row], embeddings.point_ids[row]
        payload = {name: value for name, value in fields.items() if value is not None} | footprint | {
            "scene_id": record["scene_id"], "scene_path": fields.get("scene_path") or record["path"],
            "model_id": embeddings.model_id}
        if "width" in payload:
            payload.setdefault("tile_size", payload["width"])
        if "acquired" not in payload and record.get("acquired"):
            payload["acquired"] = record["acquired"]
        ids.append(tile_id)
        payloads.append(payload | ({"source_id": given} if tile_id != given else {}))
    return ids, payloads


