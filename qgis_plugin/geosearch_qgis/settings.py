"""What the user sets once: where the server is and how to search. Kept in QgsSettings under `geosearch/`."""

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import NamedTuple, Optional

from qgis.core import QgsCoordinateReferenceSystem, QgsRectangle, QgsSettings

from .client import Client

PREFIX = "geosearch/"
MAX_EXAMPLES = 32  # the server's limit on one search's examples, the query among them


class Example(NamedTuple):
    """A match the user marked as like (`positive`) or unlike the places wanted; `label` says which, in the dock."""

    tile_id: str
    positive: bool
    label: str


def export_folder() -> str:
    """Where the last export went, for the next one to start there (the home folder at first, not QGIS's own
    working directory)."""
    return QgsSettings().value(PREFIX + "export_folder", str(Path.home()), type=str)


def remember_export_folder(path: str) -> None:
    QgsSettings().setValue(PREFIX + "export_folder", str(Path(path).parent))


@dataclass
class Settings:
    url: str = "http://127.0.0.1:8765"
    token: str = ""
    k: int = 20
    dedup: bool = True
    after: str = ""  # ISO dates; empty means no bound
    before: str = ""

    @classmethod
    def load(cls) -> "Settings":
        stored = QgsSettings()
        values = {}
        for field in fields(cls):
            default = getattr(cls, field.name)
            values[field.name] = stored.value(PREFIX + field.name, default, type=type(default))
        return cls(**values)

    def save(self) -> None:
        stored = QgsSettings()
        for name, value in asdict(self).items():
            stored.setValue(PREFIX + name, value)

    def client(self) -> Client:
        return Client(self.url, self.token)

    def search_body(self, box: QgsRectangle, crs: QgsCoordinateReferenceSystem, k: Optional[int] = None,
                    examples: Sequence[Example] = ()) -> dict:
        """The POST /search body for a box drawn in `crs`, sent as its authority id (WKT when it has none), with the
        marked matches as positives and negatives by tile id."""
        body = {"bbox": [box.xMinimum(), box.yMinimum(), box.xMaximum(), box.yMaximum()],
                "crs": crs.authid() or crs.toWkt(QgsCoordinateReferenceSystem.WKT_PREFERRED),
                "k": k or self.k, "dedup": self.dedup}
        for key, positive in (("positives", True), ("negatives", False)):
            chosen = [{"tile_id": example.tile_id} for example in examples if example.positive == positive]
            if chosen:
                body[key] = chosen
        if self.after:
            body["after"] = self.after
        if self.before:
            body["before"] = self.before
        return body
