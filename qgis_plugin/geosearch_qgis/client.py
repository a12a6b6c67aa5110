"""The plugin's side of `geosearch serve`: JSON over HTTP through QGIS's own network stack (so the user's proxy,
SSL and network settings apply). Blocking calls, meant for QgsTask and Processing threads; and the thumbnails'
requests, which do not wait, for the interface thread."""

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any, Optional
from urllib.parse import quote

from qgis.core import QgsApplication, QgsBlockingNetworkRequest, QgsFeedback, QgsNetworkAccessManager
from qgis.PyQt.QtCore import QThread, QTimer, QUrl
from qgis.PyQt.QtNetwork import QNetworkReply, QNetworkRequest

CANCEL_POLL_MS = 50  # how soon a cancelled task's request is aborted
JOB_POLL_MS = 500  # how often a background job's progress is asked for


class ServiceError(Exception):
    """One line for the user: the server's own message, or why it could not be reached."""


class Client:
    def __init__(self, url: str, authcfg: str = ""):
        """`authcfg`: the QGIS authentication config that authorizes the requests (the server's token), if any."""
        self.url = url.rstrip("/")
        self.authcfg = authcfg

    def health(self, feedback: Optional[QgsFeedback] = None) -> dict:
        """Version, model id, device and the archive's size."""
        return json.loads(self._call("GET", "/health", feedback=feedback))

    def search(self, body: dict, feedback: Optional[QgsFeedback] = None) -> dict:
        """POST /search: the matches as a GeoJSON FeatureCollection in EPSG:4326."""
        return json.loads(self._call("POST", "/search", body, feedback))

    def detect(self, body: dict, feedback: Optional[QgsFeedback] = None,
               on_progress: Optional[Callable[[float], None]] = None) -> dict:
        """POST /detect, then its job until it ends, its progress (0–100) to `on_progress`; the places as a GeoJSON
        FeatureCollection in EPSG:4326. Cancelled through `feedback`, the job is cancelled on the server too."""
        job_id = json.loads(self._call("POST", "/detect", body, feedback))["job_id"]
        try:
            while True:
                job = json.loads(self._call("GET", f"/jobs/{quote(job_id)}", feedback=feedback))
                done, total = job["progress"]["tiles_done"], job["progress"]["tiles_total"]
                if on_progress is not None and total:
                    on_progress(100 * done / total)
                if job["state"] == "done":
                    return json.loads(self._call("GET", f"/jobs/{quote(job_id)}/result", feedback=feedback))
                if job["state"] in ("failed", "cancelled"):
                    reason = job["errors"][0]["error"] if job["errors"] else job["state"]
                    raise ServiceError(f"finding the places {job['state']}: {reason}")
                QThread.msleep(JOB_POLL_MS)
                if feedback is not None and feedback.isCanceled():
                    raise ServiceError("cancelled")
        except ServiceError:
            if feedback is not None and feedback.isCanceled():
                with suppress(ServiceError):  # the server stops scoring for no one, if it can still be reached
                    self._call("DELETE", f"/jobs/{quote(job_id)}")
            raise

    def history(self, body: dict, feedback: Optional[QgsFeedback] = None) -> dict:
        """POST /history: a place's tiles on every date, oldest first, as a GeoJSON FeatureCollection."""
        return json.loads(self._call("POST", "/history", body, feedback))

    def change(self, body: dict, feedback: Optional[QgsFeedback] = None) -> dict:
        """POST /change: the places covered on both sides, the most changed first (GeoJSON, with `report`)."""
        return json.loads(self._call("POST", "/change", body, feedback))

    def scenes(self, feedback: Optional[QgsFeedback] = None) -> dict:
        """The archive's scene footprints as a GeoJSON FeatureCollection in EPSG:4326."""
        return json.loads(self._call("GET", "/scenes", feedback=feedback))

    def thumbnail(self, tile_id: str, size: int) -> QNetworkReply:
        """GET a tile's PNG without waiting for it, so that many can be on their way at once: the reply emits
        `finished` when it has come or failed, and `abort()` stops it."""
        path = f"/tiles/{quote(tile_id)}/thumbnail.png?size={size}"
        return QgsNetworkAccessManager.instance().get(self._request(path))

    def _request(self, path: str) -> QNetworkRequest:
        request = QNetworkRequest(QUrl(self.url + path))
        request.setRawHeader(b"Accept", b"application/json")
        if self.authcfg:
            applied, request = QgsApplication.authManager().updateNetworkRequest(request, self.authcfg)
            if not applied:
                raise ServiceError(f"the token in QGIS's authentication database (config {self.authcfg}) could not "
                                   "be used: it is gone, or the master password was not given; set it again in "
                                   "geosearch's settings")
        return request

    def _call(self, method: str, path: str, body: Any = None, feedback: Optional[QgsFeedback] = None) -> bytes:
        if feedback is not None and feedback.isCanceled():  # cancelled before it began: no request at all
            raise ServiceError("cancelled")
        request = self._request(path)
        blocking = QgsBlockingNetworkRequest()
        with cancelled_from_within(feedback) as cancel:
            if method == "POST":
                request.setHeader(QNetworkRequest.ContentTypeHeader, "application/json")
                code = blocking.post(request, json.dumps(body).encode(), True, cancel)
            elif method == "DELETE":
                code = blocking.deleteResource(request, cancel)
            else:
                code = blocking.get(request, True, cancel)
        reply = blocking.reply()
        if feedback is not None and feedback.isCanceled():
            raise ServiceError("cancelled")
        status = reply.attribute(QNetworkRequest.HttpStatusCodeAttribute)
        if code == QgsBlockingNetworkRequest.NoError and status:
            return bytes(reply.content())
        if status:  # the server answered: say what it said
            try:
                message = json.loads(bytes(reply.content()))["error"]
            except (ValueError, KeyError, TypeError):
                message = blocking.errorMessage()
            raise ServiceError(f"geosearch serve answered {status}: {message}")
        if code in (QgsBlockingNetworkRequest.NoError, QgsBlockingNetworkRequest.TimeoutError):  # aborted, unanswered
            raise ServiceError(f"geosearch serve at {self.url} did not answer within "
                               f"{QgsNetworkAccessManager.timeout() / 1000:g} s (QGIS's network timeout: Settings > "
                               "Options > Network)")
        raise ServiceError(f"cannot reach geosearch serve at {self.url} ({blocking.errorMessage()}); "
                           "is it running? Start it with `geosearch serve`")


@contextmanager
def cancelled_from_within(feedback: Optional[QgsFeedback]) -> Iterator[Optional[QgsFeedback]]:
    """A feedback for QgsBlockingNetworkRequest, cancelled when `feedback` is, but only from inside the request's
    wait. In QGIS 3.22 a cancel that lands while the request is being sent deletes its reply unfinished: the call
    never returns, and QGIS cannot quit, as its task manager waits for every task. A timer of this thread fires only
    in that wait, when the request is ready to be aborted. On the interface thread (Processing run from the console)
    the request is sent from a thread of QGIS's own, where this cannot close the race: there the cancel is seen
    when the request returns."""
    if feedback is None or threading.current_thread() is threading.main_thread():
        yield None
        return
    own = QgsFeedback()
    relay = QTimer(interval=CANCEL_POLL_MS)
    relay.timeout.connect(lambda: feedback.isCanceled() and own.cancel())
    relay.start()
    try:
        yield own
    finally:
        relay.stop()
