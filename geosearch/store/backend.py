"""What geosearch needs from a vector store, independent of which Qdrant runs it."""

import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple, Protocol

import numpy as np

from geosearch.errors import GeosearchError
from geosearch.store.filters import Filter

# Payload index types, named as Qdrant names them.
INDEX_TYPES = ("keyword", "integer", "float", "geo", "datetime")

# When to build HNSW and how to search it, from measurements on real 1280-d embeddings (BENCHMARKS.md): below
# 50k tiles exact search takes under 10 ms; above it a graph with Qdrant's default m and ef_construct, searched
# with ef = 256 and ACORN (which a filter keeping 10 % of the points needs: without it recall@10 fell to 0.88),
# kept recall@10 against exact search at 0.99 or more up to 1M tiles, with and without filters.
HNSW_MIN_TILES = 50_000
HNSW_EF = 256


UNIT_TOLERANCE = 1e-3  # how far from 1 a stored vector's norm, or past ±1 a cosine, may be before the store is damaged


def damaged(location: str, what: str) -> GeosearchError:
    """The one error for a store whose files no longer hold what was written: what was seen, and what to do."""
    return GeosearchError(f"{location}: the store is damaged ({what}); restore it from a backup, or index the "
                          "scenes again into a new store")


def vector_of(location: str, value: object) -> np.ndarray:
    """A stored vector as the store returned it, which must be a list of numbers."""
    try:
        return np.asarray(value, dtype=np.float32).reshape(-1)
    except (TypeError, ValueError):
        raise damaged(location, f"a stored vector came back as {type(value).__name__}") from None


class Hit(NamedTuple):
    id: str
    score: float
    payload: dict


class Backend(Protocol):
    """One Qdrant: collections of unnamed cosine vectors with JSON payloads."""

    location: str  # for messages and `geosearch stats`

    def has_collection(self, name: str) -> bool: ...

    def create_collection(self, name: str, dim: int, indexes: dict[str, str]) -> None: ...

    def upsert(self, name: str, ids: list[str], vectors: np.ndarray, payloads: list[dict]) -> None: ...

    def delete(self, name: str, where: Filter) -> None: ...

    def set_payload(self, name: str, where: Filter, payload: dict) -> None:
        """Set these payload keys on every point matching `where`, in one operation of the write-ahead log."""
        ...

    def count(self, name: str, where: Filter | None = None) -> int: ...

    def scroll(self, name: str, where: Filter | None = None, page: int = 1000) -> Iterator[tuple[str, dict]]: ...

    def scroll_vectors(self, name: str, where: Filter | None = None,
                       page: int = 1000) -> Iterator[tuple[list[str], np.ndarray, list[dict]]]:
        """The points that pass `where` a page at a time: their ids, vectors (page × dim) and payloads."""
        ...

    def payloads(self, name: str, ids: list[str]) -> dict[str, dict]: ...

    def points(self, name: str, ids: list[str]) -> dict[str, tuple[np.ndarray, dict]]:
        """Vector and payload of each id that exists."""
        ...

    def query(self, name: str, vector: np.ndarray, k: int, where: Filter | None = None,
              exact: bool = False) -> list[Hit]: ...

    def recommend(self, name: str, positives: Sequence[np.ndarray], negatives: Sequence[np.ndarray], k: int,
                  where: Filter | None = None) -> list[Hit]:
        """Qdrant's best-score recommendation from example vectors (not point ids: an example may be a box or a
        picture that no point holds), with Qdrant's own scores (Archive.recommend says what they mean)."""
        ...

    def optimize(self, name: str) -> bool:
        """Build the HNSW graph over every segment past HNSW_MIN_TILES; True if anything was built."""
        ...

    def indexed_count(self, name: str) -> int:
        """How many vectors an HNSW graph holds (the rest are searched exactly)."""
        ...

    def free_bytes(self) -> int | None:
        """Free space where the store writes, or None when it is not on this machine (a server)."""
        ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


class PagedScroll:
    """`scroll` and `scroll_vectors` for a backend that reads the points passing a filter a page of records at a
    time (`_pages`; records as qdrant-client and Qdrant Edge both give them: id, payload, vector)."""

    location: str

    def _pages(self, name: str, where: Filter | None, page: int, vectors: bool) -> Iterator[list]:
        raise NotImplementedError

    def scroll(self, name: str, where: Filter | None = None, page: int = 1000) -> Iterator[tuple[str, dict]]:
        for records in self._pages(name, where, page, vectors=False):
            yield from ((str(r.id), r.payload or {}) for r in records)

    def scroll_vectors(self, name: str, where: Filter | None = None,
                       page: int = 1000) -> Iterator[tuple[list[str], np.ndarray, list[dict]]]:
        for records in self._pages(name, where, page, vectors=True):
            vectors = [vector_of(self.location, r.vector) for r in records]
            if len({len(vector) for vector in vectors}) > 1:
                raise damaged(self.location, "stored vectors of different lengths")
            yield [str(r.id) for r in records], np.stack(vectors), [r.payload or {} for r in records]


def free_bytes_at(path: Path) -> int:
    """Free space on the file system that holds `path`, or would hold it once created."""
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free
