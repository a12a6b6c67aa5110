"""Search on the shipped scenes with the default model: ground truth on the overlapping Landsat 8 pair, box
extremes, self-exclusion, de-duplication, filters, every query kind, exports, the demo and every bad input."""

import dataclasses
import itertools
import json
from datetime import UTC, datetime

import geopandas as gpd
import numpy as np
import pytest
import shapely
import torch
from PIL import Image

from conftest import run_geosearch
from geosearch.data import AERIAL_3857, LANDSAT8_224077, LANDSAT8_224078, shipped_scenes
from geosearch.embed import plan_scene
from geosearch.encoder.default import default_checkpoint, open_model
from geosearch.errors import GeosearchError
from geosearch.footprints import WGS84
from geosearch.index import index_scenes
from geosearch.query import (
    Box,
    box_query,
    build_query,
    encoder_for,
    image_query,
    scene_query,
    tile_pixels,
    tile_query,
)
from geosearch.search import DEDUP_IOU, SELF_OVERLAP, Filters, hits_frame, hits_geojson, search
from geosearch.store import open_backend
from geosearch.store.archive import Archive
from geosearch.tiling import TilingOptions

CPU = torch.device("cpu")
# Tiles of the shipped scenes (path, row, col) by what they show, for the refined searches.
WATER = (LANDSAT8_224078, 618, 1024)  # the reservoir in the south-east of crop B
SNOW = (AERIAL_3857, 260, 247)  # a snow-covered field
FIELDS = (LANDSAT8_224077, 337, 118)  # crops in crop A


@pytest.fixture(scope="module")
def model():
    return default_checkpoint()


def _index(store, model, tiling: TilingOptions, scenes, url: str | None = None) -> None:
    with open_backend(store, url=url) as backend:
        archive = Archive.open(backend, "tiles", model.model_id, model.config.dim)
        report = index_scenes(archive, model, [plan_scene(str(p), tiling) for p in scenes], tiling, CPU, workers=0)
        assert report.failed == []


@pytest.fixture(scope="module")
def store(tmp_path_factory, model):
    """Every shipped scene, indexed with the default tiling (256 px)."""
    path = tmp_path_factory.mktemp("search") / "store"
    _index(path, model, TilingOptions(), shipped_scenes())
    return path


@pytest.fixture
def archive(store):
    with open_backend(store) as backend:
        yield Archive.open(backend, "tiles")


@pytest.fixture(scope="module")
def confused_archive(tmp_path_factory):
    """The shipped scenes indexed with `rsscn7`, which ranks snow-covered fields with water."""
    path = tmp_path_factory.mktemp("rsscn7") / "store"
    _index(path, open_model("rsscn7"), TilingOptions(), shipped_scenes())
    with open_backend(path) as backend:
        yield Archive.open(backend, "tiles")


def _iou(a: shapely.Geometry, b: shapely.Geometry) -> float:
    return shapely.intersection(a, b).area / shapely.union(a, b).area


@pytest.mark.parametrize("tile_size", [256, 128])
def test_every_overlap_tile_of_a_finds_its_twin_in_b_at_rank_1(tmp_path, model, tile_size):
    """The issue's ground truth: the crops' origins are 477 and 25 px apart, no multiple of a tile, and the aligned
    grid still cuts their overlap into the same tiles. Each tile of scene A with a twin in scene B (same place id,
    same footprint), read as a drawn box and searched within B, returns that twin at rank 1. The same by tile id."""
    tiling = TilingOptions(tile_size=tile_size)
    _index(tmp_path / "store", model, tiling, [LANDSAT8_224077, LANDSAT8_224078])
    with open_backend(tmp_path / "store") as backend:
        archive = Archive.open(backend, "tiles")
        a, b = (archive.find_scenes(str(p))[0] for p in (LANDSAT8_224077, LANDSAT8_224078))
        b_tiles = {p["place_id"]: (tile_id, shapely.geometry.shape(p["footprint"]))
                   for tile_id, p in archive.tiles(b["scene_id"]) if "place_id" in p}
        within_b = Filters(scenes=(b["scene_id"],))
        by_box, by_tile, queries = 0, 0, 0
        for tile_id, payload in archive.tiles(a["scene_id"]):
            if payload.get("place_id") not in b_tiles:
                continue
            twin, twin_footprint = b_tiles[payload["place_id"]]
            footprint = shapely.geometry.shape(payload["footprint"])
            assert twin_footprint.equals_exact(footprint, tolerance=1e-9)
            queries += 1
            x0, y0 = 703035 + payload["col"] * 30, -2777745 - payload["row"] * 30  # scene A's grid, EPSG:32621
            box = Box.parse((x0, y0 - tile_size * 30, x0 + tile_size * 30, y0), "EPSG:32621")
            query = scene_query(box, [a], model.encoder(), CPU)
            assert query.description["tiles"] == 1 and _iou(query.footprint, footprint) > 0.99
            by_box += search(archive, query, 1, within_b, include_self=True)[0].tile_id == twin
            stored = tile_query(archive, tile_id)
            by_tile += search(archive, stored, 1, within_b, include_self=True)[0].tile_id == twin
    assert queries >= {256: 6, 128: 30}[tile_size]  # lattice tiles inside both crops and valid in both
    print(f"\nrank-1 twin rate at {tile_size} px: box {by_box}/{queries}, tile id {by_tile}/{queries}")
    assert by_box / queries >= 0.95 and by_tile / queries >= 0.95


def test_box_smaller_than_a_tile_is_the_tile_centred_on_it(archive, model):
    x, y = 725000.0, -2790000.0
    box = Box.parse((x, y, x + 90, y + 90), "EPSG:32621")  # 3 × 3 pixels
    query = scene_query(box, [archive.find_scenes(str(LANDSAT8_224077))[0]], model.encoder(), CPU)
    assert query.description["tiles"] == 1
    tile = Box.parse((x + 45 - 128 * 30, y + 45 - 128 * 30, x + 45 + 128 * 30, y + 45 + 128 * 30), "EPSG:32621")
    assert _iou(query.footprint, tile.polygon(WGS84)) > 0.97  # the 256-px tile centred on the box, to a pixel


def test_box_larger_than_a_tile_is_covered_by_tiles_and_capped(model):
    """A box over all of scene A: 5 × 4 tiles at 256 px; at 64 px its 20 × 16 tiles are sampled by 8 × 8."""
    scene_box = Box.parse((703035, -2808465, 741435, -2777745), "EPSG:32621")
    for tile_size, expected, cover in ((256, 20, 0.99), (64, 64, 0.15)):
        tiling = TilingOptions(tile_size=tile_size)
        with tiling.open(str(LANDSAT8_224077)) as scene:
            query = box_query(scene_box, scene, tiling, model.encoder(), CPU)
        assert query.description["tiles"] == expected
        assert abs(np.linalg.norm(query.vector) - 1) < 1e-5
        assert query.pixels.shape == (3, 205, 256)  # the whole box, for the quicklook
        assert query.footprint.area / scene_box.polygon(WGS84).area > cover


def test_self_exclusion_and_deduplication(archive):
    """A tile of A that B also covers: by default neither it nor its twin in B comes back; with include_self it
    comes first, and its twin (IoU ≈ 1) is dropped as a duplicate, unless dedup is off."""
    a, b = (archive.find_scenes(str(p))[0] for p in (LANDSAT8_224077, LANDSAT8_224078))
    places_of_b = {p["place_id"] for _, p in archive.tiles(b["scene_id"]) if "place_id" in p}
    tile_id = next(t for t, p in archive.tiles(a["scene_id"]) if p.get("place_id") in places_of_b)
    query = tile_query(archive, tile_id)
    hits = search(archive, query, 10)
    assert len(hits) == 10
    for hit in hits:
        assert shapely.intersection(hit.footprint, query.footprint).area <= SELF_OVERLAP * hit.footprint.area
    with_self = search(archive, query, 10, include_self=True)
    assert with_self[0].tile_id == tile_id and with_self[0].score > 0.999
    assert all(h.payload["scene_id"] != b["scene_id"] or _iou(h.footprint, query.footprint) < 0.5 for h in with_self)
    for i, first in enumerate(with_self):
        for second in with_self[i + 1:]:
            assert _iou(first.footprint, second.footprint) <= DEDUP_IOU
    assert [h.rank for h in with_self] == list(range(1, 11))
    assert all(x.score >= y.score for x, y in itertools.pairwise(with_self))
    with_twin = search(archive, query, 10, include_self=True, dedup=False)
    assert with_twin[0].tile_id == tile_id
    assert any(h.payload["scene_id"] == b["scene_id"] and _iou(h.footprint, query.footprint) > 0.9
               for h in with_twin)


def test_filters(archive):
    query = tile_query(archive, next(archive.tiles(archive.find_scenes(str(AERIAL_3857))[0]["scene_id"]))[0])
    landsat_b = archive.find_scenes(str(LANDSAT8_224078))[0]["scene_id"]
    only_b = search(archive, query, 50, Filters(scenes=(landsat_b,)))
    assert {h.payload["scene_id"] for h in only_b} == {landsat_b}
    region = shapely.box(-54.9, -25.3, -54.7, -25.1)
    inside = search(archive, query, 50, Filters(within=region))
    assert inside and all(region.contains(shapely.Point(h.payload["centroid"]["lon"], h.payload["centroid"]["lat"]))
                          for h in inside)
    day = datetime(2020, 5, 18, tzinfo=UTC)
    dated = search(archive, query, 50, Filters(after=day, before=day.replace(hour=23)))
    assert len(dated) > 10 and all(h.payload["acquired"].startswith("2020-05-18") for h in dated)
    assert search(archive, query, 50, Filters(after=datetime(2020, 5, 19, tzinfo=UTC))) == []
    scores = [h.score for h in search(archive, query, 50)]
    threshold = scores[5]
    assert [h.score for h in search(archive, query, 50, Filters(min_score=threshold))] == scores[:6]


def test_image_query_finds_the_tile_it_shows(archive, model, tmp_path):
    tile_id, payload = next(archive.tiles(archive.find_scenes(str(AERIAL_3857))[0]["scene_id"]))
    picture = tmp_path / "tile.png"
    Image.fromarray(tile_pixels(archive, payload).transpose(1, 2, 0)).save(picture)
    query = image_query(str(picture), model.encoder(), CPU)
    assert query.footprint is None
    best = search(archive, query, 3)[0]
    assert best.tile_id == tile_id and best.score > 0.99


def test_both_backends_answer_alike(tmp_path, model, archive):
    """The same query through qdrant-client's local mode returns the same tiles, in the same order; so does a
    query refined with another positive and a negative under a filter (Qdrant's recommendation query in each)."""
    _index(tmp_path / "client", model, TilingOptions(), shipped_scenes(), url=f"file://{tmp_path / 'client'}")
    tiles = [t for t, _ in archive.tiles(archive.find_scenes(str(LANDSAT8_224077))[0]["scene_id"])]
    refined = {"tile": tiles[0], "positives": [{"tile": tiles[7]}], "negatives": [{"tile": tiles[12]}]}

    def answers(store: Archive) -> list[list]:
        return [search(store, tile_query(store, tiles[0]), 15),
                search(store, build_query(store, **refined), 15, Filters.of(store, after="2020-01-01"))]

    edge = answers(archive)
    with open_backend(url=f"file://{tmp_path / 'client'}") as backend:
        client = answers(Archive.open(backend, "tiles"))
    assert len(edge[0]) == 15 and len(edge[1]) >= 5
    for client_hits, edge_hits in zip(client, edge, strict=True):
        assert [h.tile_id for h in client_hits] == [h.tile_id for h in edge_hits]
        assert np.allclose([h.score for h in client_hits], [h.score for h in edge_hits], atol=1e-4)


def _served(archive: Archive) -> dict[str, tuple[np.ndarray, dict]]:
    """Every served tile's vector and payload, to check the store's answers against."""
    ids = [tile_id for scene in archive.complete_scenes() for tile_id, _ in archive.tiles(scene["scene_id"])]
    return archive.backend.points(archive.collection, ids)


def _tile_at(archive: Archive, at: tuple) -> str:
    """The tile of a scene (its path) at a row and column."""
    path, row, col = at
    scene = archive.find_scenes(str(path))[0]
    return next(t for t, p in archive.tiles(scene["scene_id"]) if (p["row"], p["col"]) == (row, col))


def _scanned(stored: dict, query, k: int) -> list[tuple[str, float]]:
    """What a refined search without de-duplication should answer, from a scan of every stored vector: the tiles
    nearer to a positive than to any negative and off the examples' ground, by their cosine to the nearest
    positive."""
    ground = shapely.union_all([q.footprint for q in query.examples()])
    positives = np.stack([query.vector, *(q.vector for q in query.positives)])
    negatives = np.stack([q.vector for q in query.negatives]) if query.negatives else np.empty((0, positives.shape[1]))
    found = []
    for tile_id, (vector, payload) in stored.items():
        footprint = shapely.geometry.shape(payload["footprint"])
        near, far = (positives @ vector).max(), (negatives @ vector).max(initial=-np.inf)
        if near > far and shapely.intersection(footprint, ground).area <= SELF_OVERLAP * footprint.area:
            found.append((tile_id, float(near)))
    return sorted(found, key=lambda found: -found[1])[:k]


def test_a_negative_moves_the_matches_away_from_it(confused_archive):
    """Water as the query, with a model that confuses it with snow (`rsscn7`; the default keeps all but one snowy
    tile out of the top 10 by itself): the plain search ranks snow-covered fields of the aerial scene (and white
    clouds) with it. A snowy field as a negative takes out all that is nearer to it than to the water, and the
    reservoir's other water moves up; each match scores its cosine to the water."""
    archive = confused_archive
    water, snow = _tile_at(archive, WATER), _tile_at(archive, SNOW)
    query = build_query(archive, tile=water, negatives=[{"tile": snow}])
    stored = _served(archive)

    def nearer_the_snow(tile_id: str) -> bool:
        return stored[tile_id][0] @ query.negatives[0].vector >= stored[tile_id][0] @ query.vector

    plain = [h.tile_id for h in search(archive, tile_query(archive, water), 20)]
    refined = search(archive, query, 10)
    snowy = [t for t in plain[:10] if t != snow and nearer_the_snow(t)]
    assert sum(stored[t][1]["scene_path"].endswith(AERIAL_3857.name) for t in snowy) >= 3
    assert len(refined) == 10 and not any(nearer_the_snow(h.tile_id) for h in refined)
    reservoir = _tile_at(archive, (LANDSAT8_224078, 362, 1024))
    assert [h.tile_id for h in refined].index(reservoir) <= plain.index(reservoir) - 3
    for hit in refined:
        assert hit.score == pytest.approx(float(stored[hit.tile_id][0] @ query.vector), abs=1e-4)


def test_refined_matches_are_those_a_scan_of_every_vector_gives(archive):
    """Another positive, a negative, or both: the store's recommendation query answers what a scan of the stored
    vectors gives (before de-duplication), tiles and scores; with several positives, each one's best match is in, scored
    at least as high as it is alone."""
    water, fields, snow = (_tile_at(archive, at) for at in (WATER, FIELDS, SNOW))
    stored = _served(archive)
    for positives, negatives in (([fields], []), ([], [snow]), ([fields], [snow])):
        query = build_query(archive, tile=water, positives=[{"tile": t} for t in positives],
                            negatives=[{"tile": t} for t in negatives])
        found = search(archive, query, 12, dedup=False)
        expected = _scanned(stored, query, 12)
        assert [h.tile_id for h in found] == [tile_id for tile_id, _ in expected]
        assert np.allclose([h.score for h in found], [score for _, score in expected], atol=1e-4)
    both = {h.tile_id: h.score for h in search(archive, build_query(archive, tile=water, positives=[{"tile": fields}]),
                                               len(stored))}
    for example in (water, fields):  # a match scores its best over the positives: never below its score alone
        alone = search(archive, tile_query(archive, example), 1)[0]
        assert both[alone.tile_id] >= alone.score - 1e-4


def test_self_exclusion_covers_every_example(archive):
    """Three tiles of A that B covers too, as the query, a positive and a negative: no match lies on the ground of
    any of them (their twins in B included). With include_self, both positives come back first, themselves; the
    negative does not."""
    a, b = (archive.find_scenes(str(p))[0] for p in (LANDSAT8_224077, LANDSAT8_224078))
    places_of_b = {p["place_id"] for _, p in archive.tiles(b["scene_id"]) if "place_id" in p}
    shared = [t for t, p in archive.tiles(a["scene_id"]) if p.get("place_id") in places_of_b]
    first, second, negative = shared[0], shared[2], shared[4]
    query = build_query(archive, tile=first, positives=[{"tile": second}], negatives=[{"tile": negative}])
    hits = search(archive, query, 20, dedup=False)
    assert len(hits) >= 10
    for hit in hits:
        for example in query.examples():
            assert shapely.intersection(hit.footprint, example.footprint).area <= SELF_OVERLAP * hit.footprint.area
    with_self = search(archive, query, 20, include_self=True)
    assert {h.tile_id for h in with_self[:2]} == {first, second} and with_self[1].score > 0.999
    assert negative not in {h.tile_id for h in with_self}


def test_examples_without_a_query_and_bad_examples(archive):
    """Without a query, the first positive is the query. A negative alone, too many examples, or an example
    embedded by another model (here a 32-d vector) is one error."""
    water, snow = _tile_at(archive, WATER), _tile_at(archive, SNOW)
    given = build_query(archive, tile=water, negatives=[{"tile": snow}])
    folded = build_query(archive, positives=[{"tile": water}], negatives=[{"tile": snow}])
    assert folded.description == given.description and np.array_equal(folded.vector, given.vector)
    with pytest.raises(GeosearchError, match=r"^a negative needs at least one positive: give a query"):
        build_query(archive, negatives=[{"tile": snow}])
    with pytest.raises(GeosearchError, match=r"^33 examples: give at most 32 in all \(the query, positives and"):
        build_query(archive, tile=water, positives=[{"tile": water}] * 16, negatives=[{"tile": snow}] * 16)
    alien = dataclasses.replace(given, vector=np.full(32, 32 ** -0.5, dtype=np.float32))
    with pytest.raises(GeosearchError, match=rf"^negative example 1 has 32 dimensions, the archive {archive.dim}: "
                                             rf"embed it with the archive's model {archive.model_id}$"):
        search(archive, dataclasses.replace(given, negatives=(alien,)), 5)


def test_cli_refines_with_examples_of_every_kind(store, tmp_path):
    """--positive and --negative take a tile id, a box in --crs and a picture, and answer what the library
    answers."""
    x0, y0 = 703035 + 512 * 30, -2777745 - 256 * 30  # a tile of scene A, EPSG:32621
    box = (x0, y0 - 256 * 30, x0 + 256 * 30, y0)
    with open_backend(store) as backend:
        archive = Archive.open(backend, "tiles")
        water, fields, snow = (_tile_at(archive, at) for at in (WATER, FIELDS, SNOW))
        picture = tmp_path / "fields.png"
        Image.fromarray(tile_pixels(archive, archive.tile(fields)[1]).transpose(1, 2, 0)).save(picture)
        query = build_query(archive, tile=water, negatives=[{"tile": snow}],
                            positives=[{"image": str(picture)}, {"bbox": box, "crs": "EPSG:32621"}])
        expected = search(archive, query, 6)
    given = run_geosearch("search", "--tile", water, "--positive", str(picture), "--positive", ",".join(map(str, box)),
                          "--crs", "EPSG:32621", "--negative", snow, "-k", "6", "--json", "--store", str(store))
    assert given.returncode == 0, given.stderr
    features = json.loads(given.stdout)["features"]
    assert [f["properties"]["tile_id"] for f in features] == [h.tile_id for h in expected]
    assert np.allclose([f["properties"]["score"] for f in features], [h.score for h in expected], atol=1e-4)
    described = json.loads(features[0]["properties"]["query"])
    assert described["tile_id"] == water and [p["type"] for p in described["positives"]] == ["image", "bbox"]
    assert [n["tile_id"] for n in described["negatives"]] == [snow]


def test_cli_search_writes_every_format_and_the_quicklook(store, tmp_path):
    bbox = ["-54.8315", "-25.2208", "-54.7783", "-25.1723"]
    args = ("search", "--bbox", *bbox, "-k", "7", "--store", str(store))
    for suffix in (".geojson", ".gpkg", ".parquet"):
        out = tmp_path / f"matches{suffix}"
        result = run_geosearch(*args, "--out", str(out), *(("--quicklook", str(tmp_path / "m.png"))
                                                           if suffix == ".geojson" else ()))
        assert result.returncode == 0, result.stderr
        frame = gpd.read_parquet(out) if suffix == ".parquet" else gpd.read_file(out)
        assert list(frame["rank"]) == list(range(1, 8)) and frame.crs.to_epsg() == 4326
        for column in ("score", "tile_id", "scene_id", "scene_path", "row", "col", "width", "height", "acquired",
                       "model_id", "query"):
            assert column in frame.columns
        query = frame["query"][0]  # JSON text; GDAL hands a GeoJSON file's back already parsed
        assert (json.loads(query) if isinstance(query, str) else query)["bbox"] == [float(v) for v in bbox]
    with Image.open(tmp_path / "m.png") as picture:
        assert picture.format == "PNG" and picture.size == (5 * 200 + 8, 2 * 240 + 8)
    collection = json.loads((tmp_path / "matches.geojson").read_text())
    assert collection["type"] == "FeatureCollection" and "bbox" in collection
    printed = json.loads(run_geosearch(*args, "--json").stdout)
    assert [f["properties"]["tile_id"] for f in printed["features"]] == list(frame["tile_id"])

    rewritten = run_geosearch("export", str(tmp_path / "matches.geojson"), str(tmp_path / "again.gpkg"))
    assert rewritten.returncode == 0 and len(gpd.read_file(tmp_path / "again.gpkg")) == 7
    footprints = run_geosearch("export", "--scenes", str(tmp_path / "scenes.geojson"), "--store", str(store))
    assert footprints.returncode == 0 and len(gpd.read_file(tmp_path / "scenes.geojson")) == 4


@pytest.mark.parametrize(("args", "message"), [
    (["--bbox", "10", "10", "11", "11"], "lies outside every indexed scene; the archive covers lon/lat -78."),
    (["--bbox", "10", "11", "11", "10"], "is empty (min above max)"),
    (["--bbox", "11", "10", "10", "11", "--crs", "EPSG:32621"], "is empty (min above max)"),
    (["--bbox", "10", "10", "10", "11"], "is empty (zero width or height)"),
    (["--bbox", "0", "0", "1", "1", "--crs", "EPSG:999999"], "unknown CRS 'EPSG:999999'"),
    (["--tile", "0c6f6b9e-1c55-4c4e-8a0e-6a1f2b8e4d17"], "no tile 0c6f6b9e-1c55-4c4e-8a0e-6a1f2b8e4d17 in the archive"),
    (["--tile", "not-a-tile"], "no tile not-a-tile in the archive"),
    (["--bbox", "0", "0", "1", "1", "-k", "0"], "Invalid value for '-k'"),
    (["--tile", "x", "--out", "/no/such/dir/m.geojson"], "directory /no/such/dir does not exist"),
    (["--tile", "x", "-o", "/proc/x.geojson"], "Error: /proc/x.geojson: cannot be written (No such file or directory)"),
    (["--tile", "x", "--quicklook", "/proc/q.png"], "Error: /proc/q.png: cannot be written (No such file or"),
    (["--tile", "x", "-o", "x" * 250 + ".parquet"], "cannot be written (File name too long)"),
    ([], "give one query: --bbox MINX MINY MAXX MAXY, --tile ID or --image PATH"),
    (["--image", "README.md"], "README.md: not a picture Pillow can read"),
    (["--tile", "x", "--within", "1,2,3"], "--within '1,2,3': give MINLON,MINLAT,MAXLON,MAXLAT or a polygon file"),
    (["--tile", "x", "--after", "May"], "--after 'May': give a date like 2020-05-18"),
    (["--tile", "x", "--scene", "nowhere.tif"], "no scene 'nowhere.tif' in the archive"),
    (["--negative", "0c6f6b9e-1c55-4c4e-8a0e-6a1f2b8e4d17"], "a negative needs at least one positive: give a query"),
    (["--tile", "x", "--positive", "1,2,3"], "--positive '1,2,3': give a tile id, a box MINX,MINY,MAXX,MAXY (in"),
])
def test_bad_search_input_is_one_clear_error(store, args, message):
    result = run_geosearch("search", *args, "--store", str(store))
    assert result.returncode != 0 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_empty_store_is_one_clear_error(tmp_path):
    missing = run_geosearch("search", "--bbox", "0", "0", "1", "1", "--store", str(tmp_path / "missing"))
    assert missing.returncode == 1 and f"no store at {tmp_path / 'missing'}; index some scenes first" in missing.stderr
    assert not (tmp_path / "missing").exists()
    (tmp_path / "empty").mkdir()
    empty = run_geosearch("search", "--bbox", "0", "0", "1", "1", "--store", str(tmp_path / "empty"))
    assert empty.returncode == 1 and "has no collection 'tiles'; index some scenes first" in empty.stderr


def test_demo_indexes_searches_and_writes_both_files(tmp_path):
    result = run_geosearch("demo", "--out-dir", str(tmp_path / "demo"))
    assert result.returncode == 0, result.stderr
    matches = gpd.read_file(tmp_path / "demo" / "matches.geojson")
    assert len(matches) == 10 and (matches["score"].diff().dropna() <= 0).all()
    assert "87 tiles from 4 scenes" in result.stdout and "matches.png" in result.stdout
    with Image.open(tmp_path / "demo" / "matches.png") as picture:
        assert picture.format == "PNG"
    again = run_geosearch("demo", "--out-dir", str(tmp_path / "demo"))
    assert again.returncode == 0 and gpd.read_file(tmp_path / "demo" / "matches.geojson").equals(matches)


def test_a_store_of_the_earlier_default_model_is_named_and_kept(tmp_path):
    """Before the trained model shipped, the default was what `pretrained` is now: the demo and index say so, and
    neither touches what the store holds."""
    from geosearch.encoder.default import pretrained_checkpoint

    earlier = pretrained_checkpoint()
    with open_backend(str(tmp_path / "demo" / "store")) as backend:
        Archive.open(backend, "tiles", earlier.model_id, earlier.config.dim)
    demo = run_geosearch("demo", "--out-dir", str(tmp_path / "demo"))
    assert demo.returncode == 1 and demo.stderr.count("\n") == 1
    assert f"holds vectors of model {earlier.model_id}, not of the default" in demo.stderr
    assert f"remove {tmp_path / 'demo'} or pass another --out-dir" in demo.stderr
    index = run_geosearch("index", str(AERIAL_3857), "--store", str(tmp_path / "demo" / "store"))
    assert index.returncode == 1 and "use that model, or another --collection (--model pretrained)" in index.stderr
    with open_backend(str(tmp_path / "demo" / "store")) as backend:
        kept = Archive.open(backend, "tiles")
        assert kept.model_id == earlier.model_id and kept.tile_count() == 0


def test_hits_frame_keeps_its_schema_when_empty(archive):
    query = tile_query(archive, next(archive.tiles(archive.find_scenes(str(AERIAL_3857))[0]["scene_id"]))[0])
    frame = hits_frame([], query)
    assert len(frame) == 0 and {"rank", "score", "tile_id", "query"} <= set(frame.columns)


def test_the_service_geojson_is_the_file_formats_features(archive):
    """hits_geojson, which the service answers with, holds what hits_frame writes to files, feature by feature."""
    scene = archive.find_scenes(str(LANDSAT8_224077))[0]
    query = tile_query(archive, next(archive.tiles(scene["scene_id"]))[0])
    filters = Filters.of(archive, after="2020-01-01")
    hits = search(archive, query, 8, filters)
    assert len(hits) == 8
    for found, given in ((hits, filters), ([], Filters())):
        sent = json.loads(json.dumps(hits_geojson(found, query, given)))
        assert sent == json.loads(hits_frame(found, query, given).to_json(drop_id=True))


def test_box_from_a_raster_that_is_not_indexed_or_from_a_chosen_scene(archive, derive):
    """--raster reads the box from any raster (here a crop of scene A written anew); --query-scene from the named
    scene. Both find the same ground in the archive when the query's own ground is kept."""
    from rasterio.windows import Window

    a, b = (archive.find_scenes(str(p))[0] for p in (LANDSAT8_224077, LANDSAT8_224078))
    places_of_b = {p["place_id"] for _, p in archive.tiles(b["scene_id"]) if "place_id" in p}
    a_tile, tile = next((t, p) for t, p in archive.tiles(a["scene_id"]) if p.get("place_id") in places_of_b)
    row, col = tile["row"], tile["col"]
    x0, y0 = 703035 + col * 30, -2777745 - row * 30  # scene A's grid, EPSG:32621
    box = (x0, y0 - 256 * 30, x0 + 256 * 30, y0)  # that tile of A, which B covers too
    top, left = max(row - 64, 0), max(col - 64, 0)
    crop = derive(LANDSAT8_224077, "crop.tif",
                  window=Window(left, top, min(col + 320, 1280) - left, min(row + 320, 1024) - top))
    from_raster = build_query(archive, bbox=box, crs="EPSG:32621", raster=str(crop))
    assert from_raster.description["scene_path"] == str(crop) and from_raster.description["tiles"] == 1
    assert search(archive, from_raster, 1, include_self=True)[0].tile_id == a_tile
    from_b = build_query(archive, bbox=box, crs="EPSG:32621", query_scene=str(LANDSAT8_224078))
    assert from_b.description["scene_path"] == str(LANDSAT8_224078)
    best = search(archive, from_b, 1, include_self=True)[0]
    assert _iou(best.footprint, from_b.footprint) > 0.9  # B's own tile there, its twin in A de-duplicated


def test_a_query_from_another_model_is_refused(archive, tmp_path):
    from geosearch.encoder.checkpoint import Checkpoint, save_checkpoint
    from geosearch.encoder.pretrained import pretrained_encoder

    encoder, initial = pretrained_encoder("resnet18", None, embedding_dim=32, input_size=64)
    other = save_checkpoint(Checkpoint.of(encoder, {"initial_weights": initial}), tmp_path / "other.pt")
    with pytest.raises(GeosearchError, match=f"holds vectors of model {archive.model_id}; --model .* is resnet18-"
                                             r"\w+: pass --model default$"):
        build_query(archive, bbox=(-54.83, -25.22, -54.78, -25.17),
                    encoder=lambda: encoder_for(archive, str(other), "cpu"))


def test_cli_within_a_polygon_file(store, tmp_path):
    """--within takes a polygon file in any CRS: here a UTM polygon over the east half of scene A."""
    region = shapely.box(722235, -2808465, 741435, -2777745)
    polygons = tmp_path / "area.gpkg"
    gpd.GeoDataFrame({"name": ["east of A"]}, geometry=[region], crs=32621).to_file(polygons)
    result = run_geosearch("search", "--bbox", "-54.8315", "-25.2208", "-54.7783", "-25.1723", "--within",
                           str(polygons), "-k", "50", "--json", "--store", str(store))
    assert result.returncode == 0, result.stderr
    features = json.loads(result.stdout)["features"]
    inside = gpd.GeoSeries([region], crs=32621).to_crs(4326).iloc[0]
    assert features and all(inside.contains(shapely.centroid(shapely.geometry.shape(f["geometry"])))
                            for f in features)
