"""Find every place like the examples: every tile of the archive (or of the filters' region, dates and scenes) is
scored against the query's positives and negatives, the tiles the examples call alike are kept, and touching or
overlapping ones are merged into polygons, each with its area on the ground.

Two ways to call a tile alike, both learned from the examples alone (METHODS):
- "score": the rule `search` ranks by (Qdrant's best-score recommendation): a tile's score is its cosine to the
  nearest positive, and a tile nearer a negative than every positive is no match.
- "classifier": logistic regression (scikit-learn) on the examples' vectors, positives against negatives; a tile's
  score is its probability of being like the positives.
Either way the threshold is calibrated on the examples themselves: each is scored by the method fitted to the
others (leave-one-out), and the threshold is the one that best tells those positives from those negatives
(balanced accuracy), midway between the two scores it falls between. bench/bench_detect.py compares the methods
(docs/results.md); "score" is the default because it measured better with few examples.

The archive is streamed a page of vectors at a time; only the detected tiles' footprints and scores are kept.
"""

import json
from collections.abc import Callable
from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import pyproj
import shapely
from scipy.sparse import coo_array
from scipy.sparse.csgraph import connected_components

from geosearch.errors import GeosearchError
from geosearch.query import Query
from geosearch.search import Filters, check_dimensions
from geosearch.store.archive import Archive

METHODS = ("score", "classifier")
PAGE = 2048  # tiles scored at once: 2048 × 1280 float32 is 10 MB
_GEOD = pyproj.Geod(ellps="WGS84")
DETECTION_FIELDS = ("detection", "score_max", "score_mean", "tiles", "scenes", "area_m2", "best_tile_id",
                    "first_acquired", "last_acquired")

Scorer = Callable[[np.ndarray], np.ndarray]


class Cancelled(GeosearchError):
    """A caller's progress callback stopped the run."""


def best_scores(vectors: np.ndarray, positives: np.ndarray, negatives: np.ndarray) -> np.ndarray:
    """Each vector's cosine to its nearest positive, or -inf where it is nearer a negative than every positive."""
    like = (vectors @ positives.T).max(axis=1)
    if len(negatives):
        like = np.where(like > (vectors @ negatives.T).max(axis=1), like, -np.inf)
    return like


def _fit(method: str, positives: np.ndarray, negatives: np.ndarray) -> Scorer | None:
    """The method's scorer fitted to these examples, or None when they are too few to fit it."""
    if method == "score":
        return (lambda vectors: best_scores(vectors, positives, negatives)) if len(positives) else None
    if not (len(positives) and len(negatives)):
        return None
    from sklearn.linear_model import LogisticRegression  # only for this method: it takes a second to import

    model = LogisticRegression(class_weight="balanced", max_iter=1000)
    model.fit(np.concatenate([positives, negatives]), np.r_[np.ones(len(positives)), np.zeros(len(negatives))])
    return lambda vectors: model.predict_proba(vectors)[:, 1]


def _left_out(method: str, positives: np.ndarray, negatives: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each example's score by the method fitted to the other examples (those that cannot be left out, skipped)."""
    scores: tuple[list[float], list[float]] = ([], [])
    for kind, examples in enumerate((positives, negatives)):
        for i in range(len(examples)):
            others = np.delete(examples, i, axis=0)
            scorer = _fit(method, others, negatives) if kind == 0 else _fit(method, positives, others)
            if scorer is not None:
                scores[kind].append(float(scorer(examples[i:i + 1])[0]))
    return np.array(scores[0]), np.array(scores[1])


def calibrate(like: np.ndarray, unlike: np.ndarray) -> float:
    """The threshold (a score at or above it is a detection) that best tells `like` from `unlike` by balanced
    accuracy, midway between the two scores it falls between; the lowest of equally good ones, since a user reads
    a missed place as a worse failure than one more to dismiss. With no `unlike`, the lowest of `like`."""
    finite = np.unique(np.concatenate([like, unlike])[np.isfinite(np.concatenate([like, unlike]))])
    if not len(unlike) or len(finite) < 2:
        return float(finite.min())
    cuts = np.concatenate([finite[:1], (finite[:-1] + finite[1:]) / 2, [np.nextafter(finite[-1], np.inf)]])
    accuracy = [(np.mean(like >= cut) + np.mean(unlike < cut)) / 2 for cut in cuts]
    return float(cuts[int(np.argmax(accuracy))])


def check_threshold(threshold: float | None) -> None:
    """A threshold given must be a number a score can be compared with."""
    if threshold is not None and not np.isfinite(threshold):
        raise GeosearchError(f"threshold {threshold} is not a finite number")


@dataclass(frozen=True)
class Detector:
    """A scorer of vectors and its threshold, learned from a query's examples."""

    method: str
    threshold: float
    score: Scorer
    threshold_given: bool = False

    @classmethod
    def learn(cls, query: Query, method: str = "score", threshold: float | None = None) -> "Detector":
        if method not in METHODS:
            raise GeosearchError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
        check_threshold(threshold)
        positives = np.stack([q.vector for q in (query, *query.positives)])
        negatives = np.array([q.vector for q in query.negatives], dtype=np.float32).reshape(-1, len(query.vector))
        scorer = _fit(method, positives, negatives)
        if scorer is None:
            raise GeosearchError(f"the classifier needs negative examples as well as positives; give some "
                                 f"unlike places, or use the method {METHODS[0]}")
        if threshold is not None:
            return cls(method, threshold, scorer, threshold_given=True)
        like, unlike = _left_out(method, positives, negatives)
        if not len(like):
            raise GeosearchError(f"{len(positives)} positive(s) and {len(negatives)} negative(s) are too few to "
                                 "learn a threshold from: give more examples, or a threshold")
        if not np.isfinite(like).any():
            raise GeosearchError("the examples do not tell the places apart: each positive, left out, is nearer a "
                                 "negative than the other positives; give more positives, or a threshold")
        return cls(method, calibrate(like, unlike), scorer)

    def describe(self) -> dict:
        return {"method": self.method, "threshold": round(self.threshold, 6),
                "threshold_from": "given" if self.threshold_given else "examples"}


@dataclass
class Detected:
    """The tiles a detector kept, in the order they were scored."""

    scores: list[float]
    tile_ids: list[str]
    payloads: list[dict]
    scored: int  # tiles looked at


def scan(archive: Archive, detector: Detector, filters: Filters = Filters(),
         progress: Callable[[int, int], None] | None = None) -> Detected:
    """Score every served tile that passes the filters, a page at a time; keep those at or above the threshold.
    `progress(done, total)` is called after each page; it may raise Cancelled to stop."""
    where = filters.store_filter()
    total = archive.backend.count(archive.collection, where) if progress else 0
    detected = Detected([], [], [], 0)
    for ids, vectors, payloads in archive.vector_pages(where, PAGE):
        scores = detector.score(vectors)
        for i in np.flatnonzero((scores >= detector.threshold) & filters.admits(payloads)):
            detected.scores.append(float(scores[i]))
            detected.tile_ids.append(ids[i])
            detected.payloads.append(payloads[i])
        detected.scored += len(ids)
        if progress:
            progress(detected.scored, max(total, detected.scored))
    return detected


def merge(detected: Detected, described: str = "") -> gpd.GeoDataFrame:
    """Touching or overlapping detected tiles as one polygon each (its parts may meet at a corner), with its area
    on the WGS84 ellipsoid, its tile and scene counts, its best and mean score and its best tile, and what found
    it (`described`); the best first."""
    columns = [*DETECTION_FIELDS, "query", "geometry"]
    if not detected.tile_ids:
        return gpd.GeoDataFrame(columns=columns, geometry="geometry", crs=4326)
    footprints = np.array([shapely.geometry.shape(p["footprint"]) for p in detected.payloads])
    tree = shapely.STRtree(footprints)
    pairs = tree.query(footprints, predicate="intersects")
    graph = coo_array((np.ones(pairs.shape[1]), (pairs[0], pairs[1])), shape=(len(footprints),) * 2)
    count, group = connected_components(graph, directed=False)
    scores = np.array(detected.scores)
    rows, shapes = [], []
    for members in np.split(np.argsort(group, kind="stable"), np.cumsum(np.bincount(group, minlength=count))[:-1]):
        shape = shapely.union_all(footprints[members])
        best = members[np.argmax(scores[members])]
        dates = sorted(d for d in (detected.payloads[i].get("acquired") for i in members) if d)
        rows.append({"score_max": round(float(scores[members].max()), 6),
                     "score_mean": round(float(scores[members].mean()), 6), "tiles": len(members),
                     "scenes": len({detected.payloads[i]["scene_id"] for i in members}),
                     "area_m2": round(abs(_GEOD.geometry_area_perimeter(shape)[0]), 1),
                     "best_tile_id": detected.tile_ids[best],
                     "first_acquired": dates[0] if dates else None, "last_acquired": dates[-1] if dates else None,
                     "query": described})
        shapes.append(shape)
    frame = gpd.GeoDataFrame(rows, geometry=shapes, crs=4326).sort_values("score_max", ascending=False,
                                                                         kind="stable", ignore_index=True)
    frame.insert(0, "detection", np.arange(1, len(frame) + 1))
    return frame


def detect(archive: Archive, query: Query, method: str = "score", threshold: float | None = None,
           filters: Filters = Filters(),
           progress: Callable[[int, int], None] | None = None) -> tuple[gpd.GeoDataFrame, Detected, Detector]:
    """The places like the query's examples, as merged polygons; also the detected tiles and the detector."""
    check_dimensions(archive, query)
    detector = Detector.learn(query, method, threshold)
    return *detect_with(archive, query, detector, filters, progress), detector


def detect_with(archive: Archive, query: Query, detector: Detector, filters: Filters = Filters(),
                progress: Callable[[int, int], None] | None = None) -> tuple[gpd.GeoDataFrame, Detected]:
    """The places a detector already learned from the query's examples finds, as merged polygons, and its tiles."""
    detected = scan(archive, detector, filters, progress)
    described = filters.describe()
    text = json.dumps(query.description | {"detect": detector.describe()}
                      | ({"filters": described} if described else {}))
    return merge(detected, text), detected
