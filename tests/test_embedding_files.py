"""Embeddings in and out: `export --embeddings` and `embed` write GeoParquet embedding files, `import` loads them (or
a file made elsewhere, Major TOM's way) into an archive, and search by tile id gives what the original archive gave."""

import hashlib
import json

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import run_geosearch
from geosearch.data import AERIAL_3857, LANDSAT8_224077, LANDSAT8_224078
from geosearch.embed import plan_scene
from geosearch.embedding_files import STAC_EXTENSION, read_embeddings
from geosearch.encoder.default import default_checkpoint
from geosearch.errors import GeosearchError
from geosearch.query import tile_query
from geosearch.search import search
from geosearch.store import open_backend
from geosearch.store.archive import Archive
from geosearch.tiling import TilingOptions
from hostile import hostile_embeddings

SCENES = (LANDSAT8_224077, LANDSAT8_224078, AERIAL_3857)
K = 10
DIM = default_checkpoint().config.dim  # what the shipped scenes are indexed at


def geosearch_ok(*args: str) -> str:
    result = run_geosearch(*args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def refused(*args: str) -> str:
    """The one error line of a command that must fail."""
    result = run_geosearch(*args)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """An archive of the shipped scenes, and its embeddings exported."""
    folder = tmp_path_factory.mktemp("embeddings")
    geosearch_ok("index", *map(str, SCENES), "--store", str(folder / "store"), "-q")
    out = folder / "archive.parquet"
    assert geosearch_ok("export", "--embeddings", str(out), "--store", str(folder / "store")).startswith("wrote ")
    return folder / "store", out


def matches(store, tile_id: str, collection: str = "tiles") -> list[tuple[str, float]]:
    with open_backend(str(store)) as backend:
        archive = Archive.open(backend, collection)
        return [(hit.payload.get("source_id", hit.tile_id), round(hit.score, 5))
                for hit in search(archive, tile_query(archive, tile_id), K)]


def ids(found: dict) -> list[str]:
    """The tile ids of `search --json`'s matches, in rank order."""
    return [feature["properties"]["tile_id"] for feature in found["features"]]


def test_the_file_follows_geoparquet_and_the_stac_embeddings_extension(exported):
    store, out = exported
    schema = pq.read_schema(out)
    assert schema.field("embedding").type == pa.list_(pa.float32(), DIM)  # a fixed-size list
    geo = json.loads(schema.metadata[b"geo"])
    assert geo["version"] == "1.1.0" and geo["columns"]["geometry"]["encoding"] == "WKB"
    emb = json.loads(schema.metadata[b"emb"])
    with open_backend(str(store)) as backend:
        archive = Archive.open(backend, "tiles")
        tiles, model_id = archive.tile_count(), archive.model_id
    assert emb["stac_extensions"] == [STAC_EXTENSION] and emb["emb:dimensions"] == DIM
    assert emb["emb:type"] == "chip" and emb["data_type"] == "float32"
    assert {"rel": "emb:model", "href": f"urn:geosearch:model:{model_id}"} in emb["links"]
    frame = gpd.read_parquet(out)  # any GeoParquet reader takes it
    assert len(frame) == tiles and frame.crs.to_epsg() == 4326 and frame["tile_id"].is_unique
    vectors = np.stack(frame["embedding"].to_numpy())
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)


def test_an_archive_exported_and_imported_searches_the_same(exported, tmp_path):
    store, out = exported
    fresh = tmp_path / "store"
    line = geosearch_ok("import", str(out), "--store", str(fresh))
    assert line.startswith("imported ") and "of 3 scene(s)" in line
    frame = gpd.read_parquet(out)
    for scene_id in frame["scene_id"].unique():  # a tile of each scene as the query
        tile_id = frame.loc[frame["scene_id"] == scene_id, "tile_id"].iloc[0]
        assert matches(fresh, tile_id) == matches(store, tile_id)
    # The scene records came with them: a box is read from the rasters as in the original archive.
    box = ("--bbox", "-54.8315", "-25.2208", "-54.7783", "-25.1723", "--json")
    original = json.loads(geosearch_ok("search", *box, "--store", str(store)))
    imported = json.loads(geosearch_ok("search", *box, "--store", str(fresh)))
    assert ids(imported) == ids(original) and len(ids(original)) == 20
    # Imported again: the same points, none doubled.
    geosearch_ok("import", str(out), "--store", str(fresh))
    with open_backend(str(fresh)) as backend:
        assert Archive.open(backend, "tiles").tile_count() == len(frame)


def test_embed_writes_a_file_that_imports(tmp_path):
    out = tmp_path / "landsat.parquet"
    geosearch_ok("embed", str(LANDSAT8_224078), "--out", str(out), "-q")
    geosearch_ok("import", str(out), "--store", str(tmp_path / "store"))
    frame = gpd.read_parquet(out)
    assert (frame["acquired"] == "2020-05-18T00:00:00+00:00").all()
    found = json.loads(geosearch_ok("search", "--bbox", "-54.8315", "-25.2208", "-54.7783", "-25.1723", "--json",
                                    "--store", str(tmp_path / "store")))
    assert ids(found) and set(ids(found)) <= set(frame["tile_id"])
    # The archive stretch the run set comes with the file, as `index` would record it, for later scenes to share.
    profiles = TilingOptions().profile_stretches()
    plan_scene(str(LANDSAT8_224078), TilingOptions(), profiles)
    with open_backend(tmp_path / "store") as backend:
        imported = Archive.open(backend, "tiles")
        set_here = json.loads(json.dumps({p: s.to_dict() for p, s in profiles.added.items()}))  # tuples as lists
        assert imported.stretches() == set_here != {}
        assert imported.grid == "aligned"


def major_tom_like(out, path, vectors=None, **columns) -> None:
    """The exported tiles as Major TOM publishes embeddings: sha256 ids, a variable-length `embedding` list, a
    timestamp and a product id, written by geopandas with no model recorded."""
    frame = gpd.read_parquet(out)
    foreign = gpd.GeoDataFrame({
        "unique_id": [hashlib.sha256(tile_id.encode()).hexdigest() for tile_id in frame["tile_id"]],
        "embedding": list(np.stack(frame["embedding"].to_numpy()) if vectors is None else vectors),
        "timestamp": "2020-05-18", "product_id": frame["scene_id"]} | columns, geometry=frame.geometry, crs=4326)
    foreign.to_parquet(path)


def test_a_file_made_elsewhere_imports_into_its_own_collection(exported, tmp_path):
    store, out = exported
    path = tmp_path / "major_tom.parquet"
    major_tom_like(out, path)
    fresh = tmp_path / "store"
    assert refused("import", str(path), "--store", str(fresh)) == (
        f"Error: {path}: no model recorded (emb metadata or a model_id column); name it with --model-id")
    frame = gpd.read_parquet(out)
    model_id = frame["model_id"].iloc[0]  # its vectors are the archive's: the same model, the same space
    geosearch_ok("import", str(path), "--store", str(fresh), "--model-id", model_id, "--collection", "major_tom")
    tile_id = frame["tile_id"].iloc[0]
    by_hash = {hashlib.sha256(t.encode()).hexdigest(): t for t in frame["tile_id"]}
    foreign = matches(fresh, hashlib.sha256(tile_id.encode()).hexdigest(), "major_tom")  # searched by its own id
    assert [(by_hash[source], score) for source, score in foreign] == matches(store, tile_id)
    box = refused("search", "--bbox", "-54.8315", "-25.2208", "-54.7783", "-25.1723", "--store", str(fresh),
                  "--collection", "major_tom")
    assert box.endswith("came from embedding files, without their rasters: a box cannot be read from them; query "
                        "by --tile")


def test_bad_files_are_refused_in_one_line_and_the_archive_keeps_what_it_had(exported, tmp_path):
    store, out = exported
    with open_backend(str(store)) as backend:
        before = Archive.open(backend, "tiles").tile_count()
    vectors = np.stack(gpd.read_parquet(out)["embedding"].to_numpy())
    small = np.random.default_rng(0).normal(size=(len(vectors), 16))
    path = tmp_path / "small.parquet"
    major_tom_like(out, path, small / np.linalg.norm(small, axis=1, keepdims=True), model_id="some-model")
    assert refused("import", str(path), "--store", str(store)).startswith(
        f"Error: {path}: 16-d embeddings, but collection 'tiles' in {store} holds {DIM}-d vectors of model ")
    text = tmp_path / "text.parquet"
    text.write_text("not parquet")
    assert refused("import", str(text), "--store", str(store)).startswith(f"Error: {text}: not a Parquet file (")
    with open_backend(str(store)) as backend:
        assert Archive.open(backend, "tiles").tile_count() == before

    cases = {
        "scaled": (vectors * 2, "77 of 77 embeddings are not unit-length (norms 2 to 2); geosearch searches unit "
                                "vectors by cosine: normalise them first"),
        "ragged": ([v[: DIM - 1 if i == 3 else DIM] for i, v in enumerate(vectors)],
                   f"embedding holds {DIM - 1} to {DIM} values per tile; every tile needs the same dimension"),
        "int8": (list((vectors * 127).astype(np.int8)),
                 "embedding holds int8 values; geosearch imports float vectors: dequantize them first"),
        "nan": (np.where(np.arange(DIM) == 7, np.nan, vectors), "77 embeddings hold NaN or infinite values"),
    }
    for name, (given, message) in cases.items():
        path = tmp_path / f"{name}.parquet"
        major_tom_like(out, path, given)
        with pytest.raises(GeosearchError) as error:
            read_embeddings(path, "some-model")
        assert str(error.value) == f"{path}: {message}"
    plain = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"id": ["a"], "embedding": [[1.0, 0.0]]}), plain)
    no_ids = tmp_path / "no_ids.parquet"
    gpd.read_parquet(out).drop(columns="tile_id").to_parquet(no_ids)
    twice = tmp_path / "twice.parquet"
    frame = gpd.read_parquet(out)
    pd.concat([frame, frame.iloc[:2]]).to_parquet(twice)
    for path, message in ((plain, "not GeoParquet (no 'geo' metadata), so its tiles have no footprints"),
                          (no_ids, "no id column (looked for tile_id, id, unique_id)"),
                          (twice, "2 tile_id values name a tile another one names already (ids that differ only "
                                  "in case or form, such as {uuid} and urn:uuid:…, are one UUID)"),
                          (out, f"its embeddings are of model {frame['model_id'].iloc[0]}, not some-model")):
        with pytest.raises(GeosearchError) as error:
            read_embeddings(path, "some-model")
        assert str(error.value) == f"{path}: {message}"


def archive_state(store) -> tuple[list, dict]:
    """Everything a failed import must leave as it was: the scene records and every tile's scene."""
    with open_backend(str(store)) as backend:
        archive = Archive.open(backend, "tiles")
        records = sorted((r["scene_id"], r["status"], r["tiles"], r["path"]) for r in archive.scenes())
        tiles = {tile_id: payload["scene_id"] for tile_id, payload in backend.scroll(archive.collection)}
        return records, tiles | {"stretches": json.dumps(archive.stretches(), sort_keys=True)}


def test_hostile_embedding_files_are_refused_before_anything_is_stored(exported, tmp_path):
    """Issue 30: records without a path, tile ids of other scenes, garbage grids and stretches: each one line, and
    the archive exactly as it was, still usable."""
    _, out = exported
    copy = tmp_path / "store"
    geosearch_ok("import", str(out), "--store", str(copy))
    before = archive_state(copy)
    files = hostile_embeddings(out, tmp_path / "files")
    other = gpd.read_parquet(out)["scene_id"].unique()[1]
    expected = {
        "no_path": "a scene record needs its path as text, not None",
        "number_path": "a scene record needs its path as text, not 7",
        "bogus_grid": "'bogus' is not a valid GridMode",
        "garbage_stretch": "a stretch needs three finite low and three high limits, not 'x' and None",
        "record_stretch": "its tiling or stretch is not one geosearch records (a stretch needs three finite low and "
                          "three high limits, not [1, 2, 3] and None)",
        "record_tiling": "its tiling or stretch is not one geosearch",
        "thief": f"is stored already, as a tile of scene {other}; its ids name tiles of other scenes, so nothing "
                 "was imported",
        "same": "1 tile_id values name a tile another one names already",
    }
    for name, message in expected.items():
        line = refused("import", str(files[name]), "--store", str(copy))
        assert line.startswith(f"Error: {files[name]}: ") and message in line, line
    assert archive_state(copy) == before
    for command in (("stats",), ("scenes",), ("export", "--scenes", str(tmp_path / "scenes.geojson"))):
        geosearch_ok(*command, "--store", str(copy))


def test_broken_footprints_and_footers_are_one_line(exported, tmp_path):
    _, out = exported
    files = hostile_embeddings(out, tmp_path / "files")
    tiles = len(gpd.read_parquet(out))
    expected = {
        "metres": f"{tiles} footprint(s) lie off the globe in lon/lat (row 0: bounds ",
        "off": f"{tiles} footprint(s) lie off the globe in lon/lat",
        "bowtie": "1 footprint(s) are not valid geometries (row 0: Self-intersection",
        "empty": "1 tile(s) have no footprint (a null or empty geometry)",
        "null": "1 tile(s) have no footprint (a null or empty geometry)",
        "nogeometry": "cannot be read as GeoParquet (",
        "badgeo": "its 'geo' metadata is not JSON",
        "listemb": "its 'emb' metadata is a JSON list, not an object",
        "stringown": "its 'geosearch' metadata is a JSON str, not an object",
    }
    for name, message in expected.items():
        with pytest.raises(GeosearchError) as error:
            read_embeddings(files[name], "some-model")
        assert str(error.value).startswith(f"{files[name]}: {message}"), error.value
    assert "cannot be in the CRS the file declares, EPSG:4326" in refused("import", str(files["metres"]), "--store",
                                                                          str(tmp_path / "store"))
