"""Background work. Server calls as QgsTasks: they run off the interface thread, show in QGIS's task bar with
progress, and cancel their request mid-flight. A search's thumbnails, a few at a time, without a thread."""

from collections import deque
from functools import partial
from typing import Any, Callable, Optional

from qgis.core import QgsFeedback, QgsTask
from qgis.PyQt.QtNetwork import QNetworkReply, QNetworkRequest

from .client import Client, ServiceError

THUMBNAIL_SIZE = 96
# Requests in flight: enough to overlap their round trips, few enough to leave the server room for the next search,
# and under Qt's 6 connections per host, so that none waits unsent while QGIS's network timeout runs.
THUMBNAILS_AT_ONCE = 4


class ServiceTask(QgsTask):
    """Runs `work(task)` in the background; `on_done(task)` then runs on the interface thread, with `task.value`
    set, or `task.error` (one line) when the work failed or was cancelled."""

    def __init__(self, description: str, work: Callable[["ServiceTask"], Any],
                 on_done: Callable[["ServiceTask"], None]):
        super().__init__(description, QgsTask.CanCancel)
        self.work, self.on_done = work, on_done
        self.feedback = QgsFeedback()
        self.value: Any = None
        self.error: Optional[str] = None

    def run(self) -> bool:
        try:
            self.value = self.work(self)
        except Exception as error:  # reported in the interface; a failed request must never take QGIS down
            self.error = str(error) or type(error).__name__
            return False
        return not self.isCanceled()

    def cancel(self) -> None:
        self.feedback.cancel()
        super().cancel()

    def finished(self, ok: bool) -> None:
        if not ok and self.error is None:
            self.error = "cancelled"
        self.on_done(self)


class Thumbnails:
    """A search's thumbnails, asked for on the interface thread through QGIS's network manager, THUMBNAILS_AT_ONCE
    at a time; `show(tile_id, png)` gets each as it comes, and one that fails is left out. No task: the requests
    wait on the network, not on a thread, and cancel() aborts them there and then, so none is shown after it."""

    def __init__(self, client: Client, tile_ids: list[str], show: Callable[[str, bytes], None]):
        self.client, self.show = client, show
        self.waiting = deque(tile_ids)
        self.fetching: dict[QNetworkReply, str] = {}
        self._fetch_more()

    def busy(self) -> bool:
        return bool(self.waiting or self.fetching)

    def cancel(self) -> None:
        self.waiting.clear()
        fetching, self.fetching = self.fetching, {}
        for reply in fetching:
            reply.abort()  # finishes it there and then; _arrived no longer finds it

    def _fetch_more(self) -> None:
        while self.waiting and len(self.fetching) < THUMBNAILS_AT_ONCE:
            tile_id = self.waiting.popleft()
            try:
                reply = self.client.thumbnail(tile_id, THUMBNAIL_SIZE)
            except ServiceError:  # the token's config is gone since the search: the rows stay without pictures
                self.waiting.clear()
                return
            self.fetching[reply] = tile_id
            reply.finished.connect(partial(self._arrived, reply))

    def _arrived(self, reply: QNetworkReply) -> None:
        reply.deleteLater()
        tile_id = self.fetching.pop(reply, None)
        if tile_id is None:  # cancelled
            return
        self._fetch_more()  # the next request goes out before this picture is decoded
        if reply.error() == QNetworkReply.NoError and reply.attribute(QNetworkRequest.HttpStatusCodeAttribute) == 200:
            self.show(tile_id, bytes(reply.readAll()))
