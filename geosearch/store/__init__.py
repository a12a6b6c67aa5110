"""Vector storage in Qdrant: the embedded Qdrant Edge by default, a Qdrant server (or cluster) by URL."""

import ctypes
import fcntl
import json
import os
import re
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO
from urllib.parse import urlsplit

from geosearch.errors import GeosearchError, StoreServed
from geosearch.store.backend import Backend


def default_store_path() -> Path:
    """$XDG_DATA_HOME/geosearch/store, i.e. ~/.local/share/geosearch/store by default."""
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "geosearch" / "store"


_COLLECTION = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}")


def check_collection(name: str) -> str:
    """A collection is a folder of the embedded store and part of a server's URLs: a plain name, never a path."""
    if not _COLLECTION.fullmatch(name):
        raise GeosearchError(f"collection {name!r}: give a name of 1 to 64 letters, digits, '_', '-' or '.' "
                             "(not first)")
    return name


def check_url(url: str) -> str:
    """A Qdrant URL as geosearch takes it: http[s]://HOST[:PORT][/PREFIX], or file:///DIR for qdrant-client's
    local mode. Checked here, since the client's own parser fails with a traceback."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (reading it checks the port: out of range or not a number raises ValueError)
        server = parts.scheme in ("http", "https") and parts.hostname is not None
    except ValueError:  # that, or an unclosed [IPv6 address]
        server = False
    local = url.startswith("file:///") and len(url) > len("file:///")
    if not (server or local) or " " in url or not url.isprintable():
        raise GeosearchError(f"Qdrant URL {url!r} is malformed: give http[s]://HOST[:PORT] for a server, or "
                             "file:///DIR for qdrant-client's local mode")
    return url


_held: dict[Path, TextIO] = {}  # the stores this process holds (resolved folders) and their lock files


def _close_stores_in_child() -> None:
    """A forked child (a DataLoader worker) shares the store's open files, and with them its locks: ours and those
    on Qdrant's write-ahead logs. It closes them, so that the locks go with the process that took them, and the
    workers of a killed run cannot hold the store for the seconds they take to notice."""
    roots = list(_held)
    for handle in _held.values():
        handle.close()
    _held.clear()
    fds = Path("/proc/self/fd")
    if not roots or not fds.is_dir():  # elsewhere than Linux, the workers keep their copies until they exit
        return
    for entry in list(fds.iterdir()):
        try:
            target = Path(os.readlink(entry))
        except OSError:  # the listing's own descriptor, closed by now
            continue
        if any(target.is_relative_to(root) for root in roots):
            os.close(int(entry.name))


os.register_at_fork(after_in_child=_close_stores_in_child)


_BUS_ERROR = b"Error: the store's file system ran out of space while Qdrant wrote its memory-mapped files " \
             b"(SIGBUS); free some space and run again: nothing acknowledged is lost, and an index run resumes\n"
_on_bus_error = ctypes.CFUNCTYPE(None, ctypes.c_int)(lambda _signum: (os.write(2, _BUS_ERROR), os._exit(1)))


def report_bus_errors() -> None:
    """Say in one line why the process ends when space runs out under the store after the checks (another
    process filled the disk while this one wrote), instead of dying silently of SIGBUS. The handler is a C one
    through ctypes: Python's own handlers run between bytecodes, and the faulting access would repeat forever."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.signal.argtypes, libc.signal.restype = [ctypes.c_int, type(_on_bus_error)], ctypes.c_void_p
    libc.signal(signal.SIGBUS, _on_bus_error)


@contextmanager
def _exclusive(path: Path, create: bool) -> Iterator[None]:
    """Hold the store's lock file for as long as it is open. The kernel drops the lock when the process dies,
    kill -9 included, so a crashed run never leaves the store locked. Without `create`, a missing store is an
    error: a mistyped --store must not leave an empty store behind."""
    if not create and not path.is_dir():
        raise GeosearchError(f"no store at {path}; index some scenes first")
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
            if url := _server_url(path, holder):
                raise StoreServed(f"{path}: store held by geosearch serve (pid {holder}) at {url}; only index, "
                                  "search, detect, history, change, scenes and stats go through it: stop it for the "
                                  "others", url) from None
            raise GeosearchError(f"{path}: store in use by another geosearch process (pid {holder}); "
                                 "wait for it to finish, or use a Qdrant server for shared access") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        _held[path.resolve()] = handle
        yield
    finally:
        _held.pop(path.resolve(), None)
        handle.close()


_SERVER_FILE = ".geosearch.server"  # beside the lock: where the `geosearch serve` holding the store answers


def _server_url(path: Path, holder: str) -> str | None:
    """The URL of the server that holds the store, if the lock's holder is one (a record left by a server that
    died names another pid, and is ignored)."""
    try:
        record = json.loads((path / _SERVER_FILE).read_text())
    except (OSError, ValueError):
        return None
    return record.get("url") if str(record.get("pid")) == holder else None


@contextmanager
def served_at(store: str | Path | None, url: str) -> Iterator[None]:
    """Record, for as long as the context lasts, that this process serves the embedded store at `url`."""
    record = Path(store or default_store_path()) / _SERVER_FILE
    record.write_text(json.dumps({"pid": os.getpid(), "url": url}))
    try:
        yield
    finally:
        record.unlink(missing_ok=True)


@contextmanager
def open_backend(
    store: str | Path | None = None, url: str | None = None, api_key: str | None = None, create: bool = True
) -> Iterator[Backend]:
    """The store to use: a Qdrant server at `url` (http/https), qdrant-client's local mode at a `file://` URL,
    or else the embedded Qdrant Edge store at `store` (default: default_store_path()). A local store's folder is
    made only with `create`."""
    if url and not check_url(url).startswith("file://"):
        from geosearch.store.client_backend import ClientBackend

        backend = ClientBackend.connect(url, api_key)
        try:
            yield backend
        finally:
            backend.close()
        return
    path = Path(url.removeprefix("file://")) if url else Path(store or default_store_path())
    with _exclusive(path, create):
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
