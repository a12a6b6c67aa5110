"""Find every place like these, on the two Landsat 8 crops indexed at 128 px: the scan agrees with Qdrant's own
best-score recommendation tile for tile, the threshold rule, the merged polygons and their areas, the filters, the
CLI, and every bad input (nothing stored changes)."""

import json

import geopandas as gpd
import numpy as np
import pytest
import shapely

from conftest import run_geosearch
from geosearch.data import LANDSAT8_224077, LANDSAT8_224078
from geosearch.detect import Detected, Detector, calibrate, detect, merge
from geosearch.errors import GeosearchError
from geosearch.query import build_query
from geosearch.search import Filters
from geosearch.store import open_backend
from geosearch.store.archive import Archive
from geosearch.tiling import TilingOptions
from support import index_store


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("detect") / "store"
    index_store(path, [LANDSAT8_224077, LANDSAT8_224078], TilingOptions(tile_size=128))
    return path


@pytest.fixture
def archive(store):
    with open_backend(store) as backend:
        yield Archive.open(backend, "tiles")


@pytest.fixture(scope="module")
def examples(store) -> dict:
    """A tile and two of its five nearest as positives; two of the tiles least like it as negatives."""
    with open_backend(store) as backend:
        archive = Archive.open(backend, "tiles")
        first = next(tile_id for tile_id, _ in archive.tiles(archive.scenes()[0]["scene_id"]))
        vector, _ = archive.tile(first)
        near = [h.id for h in archive.nearest(vector, 6)]
        far = [h.id for h in archive.nearest(-vector, 2)]
    return {"tile": near[0], "positives": [{"tile": near[2]}, {"tile": near[4]}],
            "negatives": [{"tile": t} for t in far]}


def test_the_scan_finds_what_qdrant_recommends_above_the_threshold(archive, examples):
    """Every tile Qdrant's best-score recommendation scores at or above the learned threshold is detected, with
    the same score, and no other; the threshold lets some tiles through and not all."""
    query = build_query(archive, **examples)
    _, detected, detector = detect(archive, query)
    recommended = archive.recommend([query.vector, *(q.vector for q in query.positives)],
                                    [q.vector for q in query.negatives], archive.tile_count())
    expected = {h.id: h.score for h in recommended if h.score >= detector.threshold}
    assert 0 < len(expected) < detected.scored == archive.tile_count()
    found = dict(zip(detected.tile_ids, detected.scores, strict=True))
    assert found.keys() == expected.keys()
    assert all(found[tile_id] == pytest.approx(score, abs=1e-5) for tile_id, score in expected.items())
    assert detector.describe() == {"method": "score", "threshold": round(detector.threshold, 6),
                                   "threshold_from": "examples"}


def test_places_are_merged_tiles_with_their_area_on_the_ground(archive, examples):
    """Each detected tile lies in exactly one place, places do not touch, a place's tiles and scores are its own,
    and its area is that of its ground in an equal-area projection."""
    frame, detected, _ = detect(archive, build_query(archive, **examples))
    footprints = gpd.GeoSeries([shapely.geometry.shape(p["footprint"]) for p in detected.payloads], crs=4326)
    assert 1 < len(frame) < len(detected.tile_ids)  # some tiles merged, not all into one
    assert frame["tiles"].sum() == len(detected.tile_ids)
    assert list(frame["detection"]) == list(range(1, len(frame) + 1))
    assert list(frame["score_max"]) == sorted(frame["score_max"], reverse=True)
    for i, place in frame.iterrows():
        inside = footprints.representative_point().within(place.geometry)
        assert inside.sum() == place["tiles"]
        scores = np.array(detected.scores)[inside.to_numpy()]
        assert place["score_max"] == pytest.approx(scores.max(), abs=1e-6)
        assert place["score_mean"] == pytest.approx(scores.mean(), abs=1e-6)
        assert detected.tile_ids[int(np.flatnonzero(inside)[np.argmax(scores)])] == place["best_tile_id"]
        others = frame.drop(index=i)
        assert not others.intersects(place.geometry).any()
    equal_area = frame.to_crs("+proj=laea +lat_0=-25.2 +lon_0=-54.8").area
    assert np.allclose(frame["area_m2"], equal_area, rtol=1e-3)
    assert frame.union_all().symmetric_difference(footprints.union_all()).area < 1e-12


def test_merge_joins_overlapping_and_corner_touching_tiles_only():
    def square(x: float, y: float) -> dict:
        return {"footprint": shapely.geometry.mapping(shapely.box(x, y, x + 1, y + 1)), "scene_id": "s"}

    corners = [(0, 0), (0.5, 0), (1.5, 1), (5, 5)]  # two overlapping, one at their corner, one apart
    detected = Detected([0.9, 0.8, 0.7, 0.95], ["a", "b", "c", "d"], [square(*xy) for xy in corners], 4)
    frame = merge(detected)
    assert list(frame["tiles"]) == [1, 3] and list(frame["best_tile_id"]) == ["d", "a"]
    assert frame.geometry[1].equals(shapely.union_all([shapely.box(0, 0, 1.5, 1), shapely.box(1.5, 1, 2.5, 2)]))
    assert merge(Detected([], [], [], 10)).empty


def test_the_threshold_is_the_best_balanced_cut_between_the_examples():
    assert calibrate(np.array([0.8, 0.9]), np.array([0.2, 0.4])) == pytest.approx(0.6)  # midway
    assert calibrate(np.array([0.8, 0.9, 0.3]), np.array([0.5, 0.4])) == pytest.approx(0.65)  # one outlier lost
    assert calibrate(np.array([0.6, 0.9]), np.array([0.5, 0.7])) == pytest.approx(0.55)  # ties: the lowest cut
    assert calibrate(np.array([0.7, 0.9]), np.array([0.95, -np.inf])) == 0.7  # -inf is ruled out at any cut
    assert calibrate(np.array([0.7, 0.9]), np.array([])) == 0.7  # no negative: every positive is kept


def test_filters_bound_the_scan(archive, examples):
    query = build_query(archive, **examples)
    scene = archive.find_scenes(str(LANDSAT8_224078))[0]["scene_id"]
    _, detected, _ = detect(archive, query, filters=Filters(scenes=(scene,)))
    assert detected.scored == archive.tile_count(scene) and {p["scene_id"] for p in detected.payloads} <= {scene}
    region = shapely.box(-54.85, -25.25, -54.75, -25.15)
    _, inside, _ = detect(archive, query, filters=Filters(within=region), threshold=-1)
    centres = [shapely.Point(p["centroid"]["lon"], p["centroid"]["lat"]) for p in inside.payloads]
    assert inside.tile_ids and all(region.contains(c) for c in centres)


def test_the_classifier_learns_from_positives_and_negatives(archive, examples):
    frame, detected, detector = detect(archive, build_query(archive, **examples), method="classifier")
    assert detector.method == "classifier" and 0 < detector.threshold < 1
    assert 0 < len(detected.tile_ids) < detected.scored and all(s >= detector.threshold for s in detected.scores)
    assert json.loads(frame["query"][0])["detect"]["method"] == "classifier"


def test_bad_examples_are_one_line_and_change_nothing(archive, examples):
    count = archive.tile_count()
    alone = build_query(archive, tile=examples["tile"])
    positives_only = build_query(archive, tile=examples["tile"], positives=examples["positives"])
    with pytest.raises(GeosearchError, match=r"^1 positive\(s\) and 0 negative\(s\) are too few to learn a thr"):
        detect(archive, alone)
    with pytest.raises(GeosearchError, match=r"^the classifier needs negative examples as well as positives"):
        detect(archive, positives_only, method="classifier")
    with pytest.raises(GeosearchError, match=r"^unknown method 'svm'; use one of score, classifier"):
        Detector.learn(alone, "svm")
    _, detected, detector = detect(archive, alone, threshold=0.9)  # a given threshold needs no more examples
    assert detector.describe()["threshold_from"] == "given" and all(s >= 0.9 for s in detected.scores)
    assert archive.tile_count() == count


def test_the_cli_writes_the_places(store, examples, tmp_path):
    out = tmp_path / "places.gpkg"
    negatives = [arg for example in examples["negatives"] for arg in ("--negative", example["tile"])]
    result = run_geosearch("detect", "--tile", examples["tile"], "--positive", examples["positives"][0]["tile"],
                           "--positive", examples["positives"][1]["tile"], *negatives, "-o", str(out), "--store",
                           str(store))
    assert result.returncode == 0, result.stderr
    written = gpd.read_file(out)
    with open_backend(store) as backend:
        archive = Archive.open(backend, "tiles")
        frame, detected, _ = detect(archive, build_query(archive, **examples))
    assert list(written["best_tile_id"]) == list(frame["best_tile_id"]) and len(written) > 0
    assert result.stdout.splitlines()[-2].startswith(
        f"{len(frame)} place(s) of {len(detected.tile_ids)} tile(s), from {detected.scored} tile(s) scored in ")
    refused = run_geosearch("detect", "--tile", examples["tile"], "--method", "classifier", "--store", str(store))
    assert refused.returncode == 1 and refused.stderr.strip() == (
        "Error: the classifier needs negative examples as well as positives; give some unlike places, or use the "
        "method score")
