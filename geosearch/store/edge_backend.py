"""The embedded backend: Qdrant Edge (qdrant-edge-py), the Qdrant engine in-process, one shard per collection
in a folder of its own. It has no optimizer running in the background: segments stay plain (exact search) until
`optimize()` builds HNSW over those past HNSW_MIN_TILES, which `geosearch index` calls at the end of a run."""

import contextlib
import errno
import functools
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import qdrant_edge as edge

from geosearch.errors import GeosearchError
from geosearch.store.backend import HNSW_EF, HNSW_MIN_TILES, Hit, PagedScroll, damaged, free_bytes_at, vector_of
from geosearch.store.filters import DateRange, Filter, GeoBox, HasId, Match, MatchAny, Range

_SCHEMAS = {"keyword": edge.PayloadSchemaType.Keyword, "integer": edge.PayloadSchemaType.Integer,
            "float": edge.PayloadSchemaType.Float, "geo": edge.PayloadSchemaType.Geo,
            "datetime": edge.PayloadSchemaType.Datetime}


log = logging.getLogger(__name__)


def _engine_error(location: str, error: Exception) -> GeosearchError:
    """Qdrant Edge reports engine failures (disk full, read-only, corrupt files) as a bare Exception."""
    message = str(error).removeprefix("Service runtime error: ").split("\n")[0]
    return GeosearchError(f"{location}: the store cannot go on: {message}")


def _engine(method: Callable) -> Callable:
    @functools.wraps(method)
    def call(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except Exception as error:
            if type(error) is not Exception:  # TypeError, ValueError…: a bug of ours, not the store's
                raise
            raise _engine_error(self.location, error) from None

    return call


def _condition(condition):
    match condition:
        case Match(key, value):
            return edge.FieldCondition(key=key, match=edge.MatchValue(value))
        case MatchAny(key, values):
            return edge.FieldCondition(key=key, match=edge.MatchAny(list(values)))
        case Range(key, gte, lte):
            return edge.FieldCondition(key=key, range=edge.RangeFloat(gte=gte, lte=lte))
        case DateRange(key, gte, lte):
            return edge.FieldCondition(key=key, range=edge.RangeDateTime(
                gte=gte.isoformat() if gte else None, lte=lte.isoformat() if lte else None))
        case GeoBox(key, min_lon, min_lat, max_lon, max_lat):
            box = edge.GeoBoundingBox(top_left=edge.GeoPoint(lon=min_lon, lat=max_lat),
                                      bottom_right=edge.GeoPoint(lon=max_lon, lat=min_lat))
            return edge.FieldCondition(key=key, geo_bounding_box=box)
        case HasId(ids):
            return edge.HasIdCondition(point_ids=set(ids))
    raise TypeError(condition)


def _filter(where: Filter | None):
    if where is None:
        return None
    return edge.Filter(must=[_condition(c) for c in where.must] or None,
                       must_not=[_condition(c) for c in where.must_not] or None)


def shard_config(dim: int) -> edge.EdgeConfig:
    """Cosine vectors; HNSW (Qdrant's default m and ef_construct) for segments past HNSW_MIN_TILES. Thresholds are
    in KB of vectors. Keep full_scan_threshold at Qdrant's default: below it, a filtered query is answered exactly
    from the payload index, and forcing the graph walk there loses the true neighbours (BENCHMARKS.md)."""
    return edge.EdgeConfig(
        vectors=edge.EdgeVectorParams(size=dim, distance=edge.Distance.Cosine),
        hnsw_config=edge.HnswIndexConfig(m=16, ef_construct=100, full_scan_threshold=10_000),
        optimizers=edge.EdgeOptimizersConfig(indexing_threshold=HNSW_MIN_TILES * dim * 4 // 1024))


def search_params(exact: bool = False, hnsw_ef: int | None = HNSW_EF, acorn: bool = True) -> edge.SearchParams:
    """ACORN walks two hops through points a filter rejects; Qdrant uses it only for selective filters."""
    return edge.SearchParams(hnsw_ef=hnsw_ef, exact=exact, acorn=edge.AcornSearchParams(enable=acorn))


def _unallocated(root: Path) -> list[tuple[Path, int]]:
    """The sparse files that loading the store's shards maps and touches page by page: everything in their
    segments except the payload storage (the write-ahead log and payload pages are touched only when written)."""
    sparse = []
    for path in root.glob("*/segments/**/*"):
        if path.is_file() and "payload_storage" not in path.parts:
            info = path.stat()
            if info.st_blocks * 512 < info.st_size:
                sparse.append((path, info.st_size))
    return sparse


def reserve_mapped_files(root: Path, location: str) -> None:
    """Qdrant Edge maps a shard's segment files and touches all their pages when it loads them (125 MB for a
    fresh store of one archive): on a file system without room for their holes, the kernel kills the process
    (SIGBUS), even for a read-only command. Allocating the holes first makes that a clear error before anything
    is mapped; it changes no byte of the files, only reserves the blocks the engine would take anyway."""
    sparse = _unallocated(root)
    needed, free = sum(size - path.stat().st_blocks * 512 for path, size in sparse), free_bytes_at(root)
    try:
        if needed > free:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        for path, size in sparse:
            with open(path, "r+b") as handle:
                os.posix_fallocate(handle.fileno(), 0, size)
    except OSError as error:
        if error.errno != errno.ENOSPC:
            raise GeosearchError(f"{location}: cannot open the store ({error.strerror})") from None
        raise GeosearchError(
            f"{location}: opening the store needs {needed / 2**20:.0f} MiB more on its file system "
            f"({free / 2**20:.0f} MiB free): Qdrant maps its files into memory; free some space"
        ) from None


MANIFEST = "geosearch-manifest.json"  # beside the shards: the digests of their ID trackers as last closed


def _trackers(root: Path) -> list[Path]:
    """Each segment's ID tracker mappings: what Qdrant Edge maps external ids to points with, which it reads with
    no checksum; a flipped byte there made it allocate 100 GB and abort the process, which no Python can catch.
    (Their versions files are left out: the first load after a write rewrites them.)"""
    return sorted(path for path in root.glob("*/segments/*/*") if path.name in ("mutable_id_tracker.mappings",
                                                                                 "id_tracker.mappings"))


def _digests(root: Path) -> dict[str, str]:
    return {str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest() for path in _trackers(root)}


def verify_trackers(root: Path, location: str) -> None:
    """Refuse a store whose ID trackers differ from the digests recorded when a run that wrote it closed it. A run
    that writes removes the record first, so one killed while writing leaves none, and nothing is checked then."""
    try:
        recorded = json.loads((root / MANIFEST).read_text())
    except FileNotFoundError:
        return
    except (OSError, ValueError):
        recorded = None
    if not isinstance(recorded, dict):
        raise damaged(location, f"{MANIFEST} cannot be read")
    found = _digests(root)
    for name, digest in recorded.items():
        if found.get(name) != digest:
            raise damaged(location, f"{name} is not what was written")


class EdgeBackend(PagedScroll):
    def __init__(self, root: Path):
        self.root = root
        self.location = str(root.parent)
        self._shards: dict[str, edge.EdgeShard] = {}
        self._wrote = False
        verify_trackers(root, self.location)
        reserve_mapped_files(root, self.location)

    def _writing(self) -> None:
        """Before the first write of this run: the recorded digests no longer hold (close records new ones)."""
        if not self._wrote:
            (self.root / MANIFEST).unlink(missing_ok=True)
            self._wrote = True

    @_engine
    def _shard(self, name: str) -> edge.EdgeShard:
        if name not in self._shards:
            self._shards[name] = edge.EdgeShard.load(str(self.root / name))
        return self._shards[name]

    def has_collection(self, name: str) -> bool:
        path = self.root / name
        return path.is_dir() and any(path.iterdir())

    @_engine
    def create_collection(self, name: str, dim: int, indexes: dict[str, str]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self._writing()
        shard = self._shards[name] = edge.EdgeShard.create(str(self.root / name), shard_config(dim))
        for key, kind in indexes.items():
            shard.update(edge.UpdateOperation.create_field_index(key, _SCHEMAS[kind]))
        shard.flush()

    @_engine
    def upsert(self, name: str, ids: list[str], vectors: np.ndarray, payloads: list[dict]) -> None:
        rows = vectors.astype(np.float32).tolist()
        points = [edge.Point(i, v, p) for i, v, p in zip(ids, rows, payloads, strict=True)]
        self._writing()
        self._shard(name).update(edge.UpdateOperation.upsert_points(points))

    @_engine
    def delete(self, name: str, where: Filter) -> None:
        self._writing()
        self._shard(name).update(edge.UpdateOperation.delete_points_by_filter(_filter(where)))

    @_engine
    def set_payload(self, name: str, where: Filter, payload: dict) -> None:
        self._writing()
        self._shard(name).update(edge.UpdateOperation.set_payload_by_filter(_filter(where), payload))

    @_engine
    def count(self, name: str, where: Filter | None = None) -> int:
        return self._shard(name).count(edge.CountRequest(filter=_filter(where), exact=True))

    def _pages(self, name: str, where: Filter | None, page: int, vectors: bool) -> Iterator[list]:
        offset = None
        while True:
            records, offset = self._scroll_page(name, where, page, offset, vectors)
            if records:
                yield records
            if offset is None:
                return

    @_engine
    def _scroll_page(self, name: str, where: Filter | None, page: int, offset, vectors: bool):
        return self._shard(name).scroll(edge.ScrollRequest(
            limit=page, offset=offset, filter=_filter(where), with_payload=True, with_vector=vectors))

    @_engine
    def payloads(self, name: str, ids: list[str]) -> dict[str, dict]:
        return {str(r.id): r.payload or {} for r in self._shard(name).retrieve(ids, True, False)}

    @_engine
    def points(self, name: str, ids: list[str]) -> dict[str, tuple[np.ndarray, dict]]:
        return {str(r.id): (vector_of(self.location, r.vector), r.payload or {})
                for r in self._shard(name).retrieve(ids, True, True)}

    @_engine
    def query(self, name: str, vector: np.ndarray, k: int, where: Filter | None = None,
              exact: bool = False) -> list[Hit]:
        request = edge.QueryRequest(limit=k, query=edge.Query.Nearest(vector.astype(np.float32).tolist()),
                                    filter=_filter(where), with_payload=True,
                                    params=search_params(exact))
        return [Hit(str(p.id), p.score, p.payload or {}) for p in self._shard(name).query(request)]

    @_engine
    def recommend(self, name: str, positives: Sequence[np.ndarray], negatives: Sequence[np.ndarray], k: int,
                  where: Filter | None = None) -> list[Hit]:
        examples = edge.RecommendQuery([v.astype(np.float32).tolist() for v in positives],
                                       [v.astype(np.float32).tolist() for v in negatives])
        request = edge.QueryRequest(limit=k, query=edge.Query.RecommendBestScore(examples), filter=_filter(where),
                                    with_payload=True, params=search_params())
        return [Hit(str(p.id), p.score, p.payload or {}) for p in self._shard(name).query(request)]

    @_engine
    def optimize(self, name: str) -> bool:
        self._writing()
        return self._shard(name).optimize()

    @_engine
    def indexed_count(self, name: str) -> int:
        return self._shard(name).info().indexed_vectors_count

    def free_bytes(self) -> int | None:
        return free_bytes_at(self.root)

    @_engine
    def flush(self) -> None:
        for shard in self._shards.values():
            shard.flush()

    def close(self) -> None:
        """Flush and close every shard, then, after a run that wrote, record the ID trackers' digests. A flush that
        fails (a full disk) loses nothing acknowledged: Qdrant's write-ahead log already holds it, and the next
        load replays it; no digest is recorded then, since that replay changes the files."""
        flushed = True
        for name, shard in self._shards.items():
            try:
                shard.flush()
            except Exception as error:
                flushed = False
                log.warning("%s", _engine_error(f"{self.location} ({name})", error))
            shard.close()
        self._shards.clear()
        if self._wrote and flushed:
            with contextlib.suppress(OSError):  # no record (a full disk): nothing is checked next time
                partial = self.root / f".{MANIFEST}.partial"
                partial.write_text(json.dumps(_digests(self.root)))
                partial.replace(self.root / MANIFEST)
            self._wrote = False
