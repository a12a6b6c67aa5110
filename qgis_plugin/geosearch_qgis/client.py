"""The plugin's side of `geosearch serve`: JSON over HTTP through QGIS's own network stack (so the user's proxy,
SSL and network settings apply). Blocking calls, meant for QgsTask and Processing threads."""

import json
from typing import Any, Optional
from urllib.parse import quote

from qgis.core import QgsBlockingNetworkRequest, QgsFeedback
from qgis.PyQt.QtCore import QUrl
from qgis.PyQt.QtNetwork import QNetworkRequest


class ServiceError(Exception):
    """One line for the user: the server's own message, or why it could not be reached."""


class Client:
    def __init__(self, url: str, token: str = ""):
        self.url = url.rstrip("/")
        self.token = token

    def health(self, feedback: Optional[QgsFeedback] = None) -> dict:
        """Version, model id, device and the archive's size."""
        return json.loads(self._call("GET", "/health", feedback=feedback))

    def search(self, body: dict, feedback: Optional[QgsFeedback] = None) -> dict:
        """POST /search: the matches as a GeoJSON FeatureCollection in EPSG:4326."""
        return json.loads(self._call("POST", "/search", body, feedback))

    def scenes(self, feedback: Optional[QgsFeedback] = None) -> dict:
        """The archive's scene footprints as a GeoJSON FeatureCollection in EPSG:4326."""
        return json.loads(self._call("GET", "/scenes", feedback=feedback))

    def thumbnail(self, tile_id: str, size: int = 96, feedback: Optional[QgsFeedback] = None) -> bytes:
        return self._call("GET", f"/tiles/{quote(tile_id)}/thumbnail.png?size={size}", feedback=feedback)

    def _call(self, method: str, path: str, body: Any = None, feedback: Optional[QgsFeedback] = None) -> bytes:
        if feedback is not None and feedback.isCanceled():  # cancelled before it began: no request at all
            raise ServiceError("cancelled")
        request = QNetworkRequest(QUrl(self.url + path))
        request.setRawHeader(b"Accept", b"application/json")
        if self.token:
            request.setRawHeader(b"Authorization", f"Bearer {self.token}".encode())
        blocking = QgsBlockingNetworkRequest()
        if method == "POST":
            request.setHeader(QNetworkRequest.ContentTypeHeader, "application/json")
            code = blocking.post(request, json.dumps(body).encode(), True, feedback)
        else:
            code = blocking.get(request, True, feedback)
        reply = blocking.reply()
        if feedback is not None and feedback.isCanceled():
            raise ServiceError("cancelled")
        if code == QgsBlockingNetworkRequest.NoError:
            return bytes(reply.content())
        status = reply.attribute(QNetworkRequest.HttpStatusCodeAttribute)
        if status:  # the server answered: say what it said
            try:
                message = json.loads(bytes(reply.content()))["error"]
            except (ValueError, KeyError, TypeError):
                message = blocking.errorMessage()
            raise ServiceError(f"geosearch serve answered {status}: {message}")
        raise ServiceError(f"cannot reach geosearch serve at {self.url} ({blocking.errorMessage()}); "
                           "is it running? Start it with `geosearch serve`")
