"""Files that geosearch opens because a user, a manifest, a catalog or a stored record named them. Each goes through
`check_readable` first: a regular file or folder only (GDAL or Python would wait forever on a FIFO, and read a
device such as /dev/zero without end), metadata text read up to a size limit, and, while a server runs
(`confined_to`), only under its roots, so that nothing a request or an imported record names is read from elsewhere.
"""

import os
import stat
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from geosearch.errors import SceneError

MAX_TEXT_BYTES = 16 * 2**20  # an MTL, MTD or STAC file is kilobytes; a larger one is not metadata
_roots: tuple[str, ...] | None = None  # None: reads anywhere (the CLI reads what its user names)


@contextmanager
def confined_to(roots: Sequence[str | Path]) -> Iterator[None]:
    """For as long as the block runs, read files only under `roots`: local folders, or remote URL prefixes."""
    global _roots
    before = _roots
    _roots = tuple(root if is_remote(str(root)) else str(Path(root).resolve()) for root in roots)
    try:
        yield
    finally:
        _roots = before


def is_remote(path: str) -> bool:
    """A URL or one of GDAL's virtual file systems (/vsicurl/, /vsis3/…), not a file on this machine."""
    return "://" in path or path.startswith("/vsi")


def _under(path: str, roots: tuple[str, ...]) -> bool:
    if is_remote(path):
        return any(path == root or path.startswith(root.rstrip("/") + "/") for root in roots if is_remote(root))
    return any(Path(path).is_relative_to(root) for root in roots if not is_remote(root))


def check_readable(path: str | Path, source: str | Path | None = None) -> None:
    """Refuse, as a SceneError naming `source` (what the user gave; default `path`), a path that is a FIFO, a
    device or a socket, or one outside the roots while reads are confined. A missing file passes: its opener says
    so in its own words."""
    text = str(path)
    source, which = _named(path, source)
    if is_remote(text):
        if _roots is not None and not _under(text, _roots):
            raise SceneError(source, f"{which}is outside this server's archive roots, so it is not read")
        return
    try:
        resolved = Path(text).resolve()
        mode = os.stat(resolved).st_mode
    except (OSError, RuntimeError):  # missing, unreadable, or a symlink loop
        return
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise SceneError(source, f"{which}is not a regular file (a FIFO, device or socket), so it is not read")
    if _roots is not None and not _under(str(resolved), _roots):
        raise SceneError(source, f"{which}is outside this server's archive roots, so it is not read")


def _named(path: str | Path, source: str | Path | None) -> tuple[str | Path, str]:
    """What an error names first (the source the user gave), and how it then names the file read, if another."""
    if source is None or str(source) == str(path):
        return path, ""
    return source, f"{path} "


def read_text(path: Path, source: str | Path | None = None) -> str:
    """A metadata file's text (bad bytes replaced), refused past MAX_TEXT_BYTES or as check_readable refuses."""
    check_readable(path, source)
    named, which = _named(path, source)
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_TEXT_BYTES + 1)
    except OSError as error:
        raise SceneError(named, f"{which}cannot be read ({error.strerror})") from None
    if len(data) > MAX_TEXT_BYTES:
        raise SceneError(named, f"{which}is over {MAX_TEXT_BYTES // 2**20} MiB, too large for a metadata file")
    return data.decode(errors="replace")


def file_state(paths: Sequence[str]) -> list[list]:
    """[path, size, mtime in ns] of each local file among `paths` that holds pixels (GDAL's .aux.xml side files,
    which viewers rewrite, left out): what tells a file rewritten since it was read."""
    state = []
    for path in paths:
        if is_remote(path) or path.endswith(".aux.xml"):
            continue
        try:
            info = os.stat(path)
        except OSError:
            state.append([path, None, None])
            continue
        state.append([path, info.st_size, info.st_mtime_ns])
    return state
