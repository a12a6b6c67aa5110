"""What the user sets once: where the server is and how to search. Kept in QgsSettings under `geosearch/`."""

from dataclasses import asdict, dataclass, fields
from typing import Optional

from qgis.core import QgsCoordinateReferenceSystem, QgsRectangle, QgsSettings

from .client import Client

PREFIX = "geosearch/"


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

    def search_body(self, box: QgsRectangle, crs: QgsCoordinateReferenceSystem, k: Optional[int] = None) -> dict:
        """The POST /search body for a box drawn in `crs`, sent as its authority id (WKT when it has none)."""
        body = {"bbox": [box.xMinimum(), box.yMinimum(), box.xMaximum(), box.yMaximum()],
                "crs": crs.authid() or crs.toWkt(QgsCoordinateReferenceSystem.WKT_PREFERRED),
                "k": k or self.k, "dedup": self.dedup}
        if self.after:
            body["after"] = self.after
        if self.before:
            body["before"] = self.before
        return body
