"""Vector storage in Qdrant: the embedded Qdrant Edge by default, a Qdrant server (or cluster) by URL."""

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from geosearch.errors import GeosearchError
from geosearch.store.backend import Backend


def default_store_path() -> Path:
    """$XDG_DATA_HOME/geosearch/store, i.e. ~/.local/share/geosearch/store by default."""
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "geosearch" / "store"


@contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """Hold the store's lock file for as long as it is open. The kernel drops the lock when the process dies,
    kill -9 included, so a crashed run never leaves the store locked."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        handle = open(path / ".geosearch.lock", "a+")  # noqa: SIM115  (held open for the whole context)
    except OSError as error:
        raise GeosearchError(f"{path}: cannot open the store here ({error.strerror})") from None
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            raise GeosearchError(f"{path}: store in use by another geosearch process (pid {holder}); "
                                 "wait for it to finish, or use a Qdrant server for shared access") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield
    finally:
        handle.close()


@contextmanager
def open_backend(
    store: str | Path | None = None, url: str | None = None, api_key: str | None = None
) -> Iterator[Backend]:
    """The store to use: a Qdrant server at `url` (http/https), qdrant-client's local mode at a `file://` URL,
    or else the embedded Qdrant Edge store at `store` (default: default_store_path())."""
    if url and not url.startswith("file://"):
        from geosearch.store.client_backend import ClientBackend

        backend = ClientBackend.connect(url, api_key)
        try:
            yield backend
        finally:
            backend.close()
        return
    path = Path(url.removeprefix("file://")) if url else Path(store or default_store_path())
    with _exclusive(path):
        if url:
            from geosearch.store.client_backend import ClientBackend

            backend = ClientBackend.local(str(path / "qdrant-client"))
        else:
            from geosearch.store.edge_backend import EdgeBackend

            backend = EdgeBackend(path / "edge")
        try:
            yield backend
        finally:
            backend.close()
