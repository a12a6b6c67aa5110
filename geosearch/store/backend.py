"""What geosearch needs from a vector store, independent of which Qdrant runs it."""

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple, Protocol

import numpy as np

from geosearch.store.filters import Filter

# Payload index types, named as Qdrant names them.
INDEX_TYPES = ("keyword", "integer", "float", "geo", "datetime")


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

    def count(self, name: str, where: Filter | None = None) -> int: ...

    def scroll(self, name: str, where: Filter | None = None, page: int = 1000) -> Iterator[tuple[str, dict]]: ...

    def payloads(self, name: str, ids: list[str]) -> dict[str, dict]: ...

    def query(self, name: str, vector: np.ndarray, k: int, where: Filter | None = None,
              exact: bool = False) -> list[Hit]: ...

    def free_bytes(self) -> int | None:
        """Free space where the store writes, or None when it is not on this machine (a server)."""
        ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


def free_bytes_at(path: Path) -> int:
    """Free space on the file system that holds `path`, or would hold it once created."""
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free
