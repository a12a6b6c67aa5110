"""One store shared by the server's threads: searches and background jobs take turns call by call, so an index job
holds the store only for one batch at a time, a detect job for one page, and searches keep being answered."""

import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

from geosearch.store.backend import Backend


class LockedBackend:
    """Every method of the wrapped backend runs under one re-entrant lock."""

    def __init__(self, backend: Backend):
        self._backend, self._lock = backend, threading.RLock()
        self.location = backend.location

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._backend, name)

        def locked(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return method(*args, **kwargs)

        return locked

    def scroll(self, *args: Any, **kwargs: Any) -> Iterator[tuple[str, dict]]:
        """Read whole under the lock: a generator would otherwise run outside it."""
        with self._lock:
            return iter(list(self._backend.scroll(*args, **kwargs)))

    def scroll_vectors(self, *args: Any, **kwargs: Any) -> Iterator[tuple[list[str], np.ndarray, list[dict]]]:
        """Page by page, each read under the lock: a detect job scans the archive in bounded memory, and searches
        are answered between its pages (a scroll resumes from its last id, so nothing is lost between them)."""
        pages = self._backend.scroll_vectors(*args, **kwargs)
        while True:
            with self._lock:
                page = next(pages, None)
            if page is None:
                return
            yield page
