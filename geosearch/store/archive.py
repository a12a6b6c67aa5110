"""The archive: one embedding space in a store, i.e. a tiles collection and the records of its scenes.

A collection records the model id of its vectors and refuses another model's. A scene is written in three
steps, so that no crash can leave a scene marked complete that is not:
1. its record is set to "indexing" and any tiles it already has are deleted;
2. its tiles are upserted (point ids are deterministic, so a repeated upsert never duplicates), with status
   "indexing" in their payload;
3. once every tile is stored and counted, its tiles are set to "complete" in one operation, then its record.
A run that dies anywhere before 3 leaves the scene "indexing", and the next run starts it again from 1. Searches
and lookups never serve an "indexing" tile: the store's own filter leaves them out (SERVED).
"""

import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from geosearch.errors import GeosearchError, ModelMismatch
from geosearch.store import check_collection
from geosearch.store.backend import UNIT_TOLERANCE, Backend, Hit, damaged
from geosearch.store.filters import Filter, HasId, Match, where

TILE_INDEXES = {"scene_id": "keyword", "place_id": "keyword", "model_id": "keyword", "centroid": "geo",
                "min_lon": "float", "min_lat": "float", "max_lon": "float", "max_lat": "float", "acquired": "datetime",
                "status": "keyword"}
RECORD_INDEXES = {"kind": "keyword", "scene_id": "keyword", "status": "keyword"}
_NAMESPACE = uuid.UUID("0c6f6b9e-1c55-4c4e-8a0e-6a1f2b8e4d17")
_IMPORTED = uuid.UUID("5b0e8a4e-7f0c-4d8e-9a57-2f4f5e9f3c21")  # names the point ids of tiles whose ids are not UUIDs
_RECORD_VECTOR = np.ones((1, 1), dtype=np.float32)  # scene records carry payload only
_PENDING = Match("status", "indexing")
SERVED = Filter(must_not=(_PENDING,))  # must_not: tiles stored before tiles had a status have none, and are served


def point_id(tile_id: str) -> str:
    """The store's id of a tile: its id when that is a UUID, as geosearch's are; else (a tile imported from an
    embedding file made elsewhere, Major TOM's hashes for one) the UUID that id names, the same at every import."""
    try:
        return str(uuid.UUID(tile_id))
    except ValueError:
        return str(uuid.uuid5(_IMPORTED, tile_id))


def _resolved(path: str) -> str:
    """A path with its links followed; as it is where they loop, since it then names no file."""
    try:
        return str(Path(path).resolve())
    except (OSError, RuntimeError):
        return path


def _record_id(key: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, key))


def _records_of(collection: str) -> str:
    return f"{collection}__scenes"


def _cosine(score: float) -> float:
    """Undo the squashing of a cosine c by Qdrant's best-score recommendation: s = (1 + c / (1 + |c|)) / 2."""
    squashed = 2 * score - 1
    return squashed / (1 - abs(squashed))


class Archive:
    """Tiles of one model in `collection`, scene records in `collection`__scenes. `grid` is how the archive's
    scenes are cut (grid.GridMode): archives made before aligned grids record none and are "scene"."""

    def __init__(self, backend: Backend, collection: str, model_id: str, dim: int, grid: str = "scene"):
        self.backend, self.collection, self.model_id, self.dim, self.grid = backend, collection, model_id, dim, grid
        self.records = _records_of(collection)

    @classmethod
    def open(cls, backend: Backend, collection: str, model_id: str | None = None, dim: int | None = None,
             grid: str = "aligned") -> "Archive":
        """Open a collection; with a model id and dim, create it if missing (cut by `grid`) and refuse it if it
        holds another model."""
        meta_id, records = _record_id(f"collection:{check_collection(collection)}"), _records_of(collection)
        has_tiles, has_records = backend.has_collection(collection), backend.has_collection(records)
        meta = backend.payloads(records, [meta_id]).get(meta_id) if has_records else None
        if meta is not None:
            if model_id is not None and meta["model_id"] != model_id:
                raise ModelMismatch(
                    f"collection {collection!r} in {backend.location} holds vectors of model {meta['model_id']}; "
                    f"this run uses {model_id}: use that model, or another --collection", meta["model_id"]
                )
            return cls(backend, collection, meta["model_id"], meta["dim"], meta.get("grid", "scene"))
        if has_tiles and backend.count(collection) > 0:
            raise GeosearchError(f"collection {collection!r} in {backend.location} was not made by geosearch")
        if model_id is None or dim is None:
            raise GeosearchError(f"{backend.location} has no collection {collection!r}; index some scenes first")
        # Nothing yet, or what a run killed while creating the archive left: create what is missing.
        if not has_tiles:
            backend.create_collection(collection, dim, TILE_INDEXES)
        if not has_records:
            backend.create_collection(records, 1, RECORD_INDEXES)
        meta = {"kind": "collection", "collection": collection, "model_id": model_id, "dim": dim, "grid": grid,
                "created": datetime.now(UTC).isoformat()}
        backend.upsert(records, [meta_id], _RECORD_VECTOR, [meta])
        backend.flush()
        return cls(backend, collection, model_id, dim, grid)

    def scene(self, scene_id: str) -> dict | None:
        record_id = _record_id(f"scene:{scene_id}")
        return self.backend.payloads(self.records, [record_id]).get(record_id)

    def scenes(self) -> list[dict]:
        return sorted((p for _, p in self.backend.scroll(self.records, where(Match("kind", "scene")))),
                      key=lambda record: str(record.get("path")))  # a damaged record still lists

    def complete_scenes(self) -> list[dict]:
        """The scenes whose tiles are all stored; an error when there is none, since nothing can be searched."""
        complete = [r for r in self.scenes() if r["status"] == "complete"]
        if not complete:
            raise GeosearchError(f"the archive in {self.backend.location} has no complete scene; index some first")
        return complete

    def stretches(self) -> dict[str, dict]:
        """The stretch of each radiometric profile, in physical units (stretch.Stretch.to_dict), by profile."""
        found = self.backend.scroll(self.records, where(Match("kind", "stretch")))
        return {record["profile"]: record["stretch"] for _, record in found}

    def add_stretch(self, profile: str, stretch: dict, set_by: str) -> None:
        """Record the stretch every later scene of `profile` is shown with; `set_by` says which scene(s) set it."""
        record = {"kind": "stretch", "profile": profile, "stretch": stretch, "set_by": set_by,
                  "created": datetime.now(UTC).isoformat()}
        self.backend.upsert(self.records, [_record_id(f"stretch:{profile}")], _RECORD_VECTOR, [record])
        self.backend.flush()

    def find_scenes(self, key: str) -> list[dict]:
        """The scenes a user means by `key`: a scene id, or a path (as given, or resolved)."""
        resolved = _resolved(key)
        found = [r for r in self.scenes() if key in (r["scene_id"], r["path"]) or _resolved(r["path"]) == resolved]
        if not found:
            raise GeosearchError(f"no scene {key!r} in the archive; `geosearch scenes` lists them")
        return found

    def _put_record(self, record: dict) -> None:
        self.backend.upsert(self.records, [_record_id(f"scene:{record['scene_id']}")], _RECORD_VECTOR, [record])
        self.backend.flush()

    def begin_scene(self, record: dict) -> None:
        """Step 1: mark the scene as being indexed and clear whatever tiles it has."""
        self._put_record(record | {"kind": "scene", "status": "indexing", "tiles": 0})
        self.backend.delete(self.collection, where(Match("scene_id", record["scene_id"])))
        self.backend.flush()

    def add_tiles(self, ids: list[str], vectors: np.ndarray, payloads: list[dict]) -> None:
        """Step 2."""
        if vectors.shape[1] != self.dim:
            raise GeosearchError(f"{vectors.shape[1]}-d vectors for a {self.dim}-d collection {self.collection!r}")
        self.backend.upsert(self.collection, ids, vectors, [payload | {"status": "indexing"} for payload in payloads])

    def complete_scene(self, record: dict, expected: int) -> None:
        """Step 3: mark the scene complete once exactly its `expected` tiles are stored."""
        self.backend.flush()
        stored = self.tile_count(record["scene_id"], pending=True)
        if stored != expected:
            raise GeosearchError(f"{record['path']}: {stored} tiles stored, {expected} expected; index it again")
        self.backend.set_payload(self.collection, where(Match("scene_id", record["scene_id"])), {"status": "complete"})
        self._put_record(record | {"kind": "scene", "status": "complete", "tiles": stored,
                                   "indexed_at": datetime.now(UTC).isoformat()})

    def fail_scene(self, record: dict, error: str) -> None:
        """A scene that could not be read to the end keeps no tiles, and says why."""
        self.backend.delete(self.collection, where(Match("scene_id", record["scene_id"])))
        self._put_record(record | {"kind": "scene", "status": "failed", "tiles": 0, "error": error})

    def remove_scene(self, scene_id: str) -> int:
        """Delete a scene's tiles and its record; returns how many tiles went."""
        tiles = self.tile_count(scene_id) + self.tile_count(scene_id, pending=True)
        self.backend.delete(self.collection, where(Match("scene_id", scene_id)))
        self.backend.delete(self.records, where(HasId((_record_id(f"scene:{scene_id}"),))))
        self.backend.flush()
        return tiles

    def tile_count(self, scene_id: str | None = None, pending: bool = False) -> int:
        """Tiles that searches serve (of complete scenes), or with `pending` those stored for unfinished ones."""
        state = where(_PENDING) if pending else SERVED
        return self.backend.count(self.collection, state & where(Match("scene_id", scene_id)) if scene_id else state)

    def tile(self, tile_id: str) -> tuple[np.ndarray, dict] | None:
        """A served tile's vector and payload, or None; an error for a tile of a scene that is not complete, or
        one whose vector is not the unit vector that was stored."""
        stored = self.backend.points(self.collection, [tile_id]).get(tile_id)
        if stored:
            self._unit([tile_id], stored[0][None])
        if stored and stored[1].get("status") == "indexing":
            status = (self.scene(stored[1]["scene_id"]) or {}).get("status", "no record")
            raise GeosearchError(f"tile {tile_id} is of {stored[1]['scene_path']}, which is not completely indexed "
                                 f"({status}); index it again")
        return stored

    def nearest(self, vector: np.ndarray, k: int, where: Filter | None = None) -> list[Hit]:
        """The k served tiles nearest to `vector` that pass `where`."""
        served = SERVED & where if where else SERVED
        hits = self._cosines(self.backend.query(self.collection, vector, k, served))
        if not hits and (counted := self.backend.count(self.collection, served)):
            raise damaged(self.backend.location, f"{counted} tiles pass the query's filters, but a search finds none")
        return hits

    def _unit(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        """Stored vectors are unit vectors (Qdrant normalises cosine vectors): one that is not (NaN included) comes
        from damaged files."""
        norms = np.linalg.norm(vectors, axis=1)
        bad = np.flatnonzero(~(np.abs(norms - 1) <= UNIT_TOLERANCE))
        if len(bad):
            raise damaged(self.backend.location, f"tile {ids[bad[0]]}'s vector has length {norms[bad[0]]:.6g}, not 1")

    def _cosines(self, hits: list[Hit]) -> list[Hit]:
        """Hits whose scores are what unit vectors give: finite, within ±1. Anything else comes from damaged files
        (flipped bytes in a vector scored 7,503), and is not an answer."""
        wrong = [hit for hit in hits if not abs(hit.score) <= 1 + UNIT_TOLERANCE]
        if wrong:
            raise damaged(self.backend.location, f"tile {wrong[0].id} scores {wrong[0].score:.6g}, which no cosine "
                                                 "is")
        return hits

    def recommend(self, positives: Sequence[np.ndarray], negatives: Sequence[np.ndarray], k: int,
                  where: Filter | None = None) -> list[Hit]:
        """The k served tiles that pass `where` most like the positives and least like the negatives, by Qdrant's
        best-score recommendation, with each tile's cosine to its nearest positive as its score. Qdrant ranks every
        tile nearer a positive than any negative by that cosine (squashed into (0.25, 0.75)), then all the others
        below zero; those others are what the negatives rule out, and are left out here, so fewer than k come back
        once the rest are all nearer a negative."""
        hits = self.backend.recommend(self.collection, positives, negatives, k, SERVED & where if where else SERVED)
        return [Hit(h.id, _cosine(h.score), h.payload) for h in self._cosines(hits) if h.score > 0]

    def tiles(self, scene_id: str) -> Iterator[tuple[str, dict]]:
        return self.backend.scroll(self.collection, where(Match("scene_id", scene_id)))

    def find_tiles(self, where: Filter) -> Iterator[tuple[str, dict]]:
        """The served tiles that pass `where`: their ids and payloads."""
        return self.backend.scroll(self.collection, SERVED & where)

    def vector_pages(self, where: Filter | None = None,
                     page: int = 1000) -> Iterator[tuple[list[str], np.ndarray, list[dict]]]:
        """The served tiles that pass `where`, a page at a time (ids, vectors, payloads): the whole archive in
        bounded memory."""
        return self.backend.scroll_vectors(self.collection, SERVED & where if where else SERVED, page)

    def optimize(self) -> bool:
        """Build HNSW where the store's rule calls for it (store/backend.py); True if anything was built."""
        return self.backend.optimize(self.collection)

    def check(self, thorough: bool = False) -> None:
        """Raise a one-line error when the store does not hold what its records say: served tiles that the
        complete scenes' records do not count, or a stored tile that a nearest query does not find as itself.
        `thorough`: also read every served vector (bounded memory, about a minute a million tiles) and check that
        each is a unit vector and that as many come back as are counted."""
        location, served = self.backend.location, self.tile_count()
        recorded = sum(r["tiles"] for r in self.scenes() if r.get("status") == "complete")
        if served != recorded:
            raise damaged(location, f"{served} tiles are served, but the complete scenes' records count {recorded}")
        probe = next(self.vector_pages(page=1), None)
        if probe is not None:
            ids, vectors, _ = probe
            self._unit(ids, vectors)
            found = self.backend.query(self.collection, vectors[0], 1, SERVED, exact=True)
            if not (found and abs(found[0].score - 1) <= UNIT_TOLERANCE):  # itself, or a twin of the same vector
                raise damaged(location, f"tile {ids[0]} is not found by its own vector")
        if not thorough:
            return
        read = 0
        for ids, vectors, _ in self.vector_pages():
            self._unit(ids, vectors)
            read += len(ids)
        if read != served:
            raise damaged(location, f"{served} tiles are counted, but {read} can be read")

    def stats(self, thorough: bool = False) -> dict:
        """The archive at a glance, once `check` finds it sound."""
        self.check(thorough)
        scenes = self.scenes()
        by_status: dict[str, int] = {}
        for record in scenes:
            by_status[record["status"]] = by_status.get(record["status"], 0) + 1
        return {"store": self.backend.location, "collection": self.collection, "model_id": self.model_id,
                "dim": self.dim, "scenes": len(scenes), "scenes_by_status": by_status, "tiles": self.tile_count(),
                "tiles_pending": self.tile_count(pending=True),
                "tiles_in_hnsw": self.backend.indexed_count(self.collection)}
