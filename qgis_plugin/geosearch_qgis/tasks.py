"""Server calls as QgsTasks: they run off the interface thread, show in QGIS's task bar with progress, and
cancel their request mid-flight."""

from contextlib import suppress
from typing import Any, Callable, Optional

from qgis.core import QgsFeedback, QgsTask

from .client import Client, ServiceError

THUMBNAIL_SIZE = 96


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


def search_with_thumbnails(client: Client, body: dict) -> Callable[[ServiceTask], dict[str, Any]]:
    """The search, then each match's thumbnail; a thumbnail that cannot be had is left out, the match stays."""
    def work(task: ServiceTask) -> dict[str, Any]:
        task.setProgress(5)
        collection = client.search(body, task.feedback)
        features = collection.get("features", [])
        thumbnails: dict[str, bytes] = {}
        for done, feature in enumerate(features, start=1):
            if task.isCanceled():
                break
            tile_id = feature["properties"]["tile_id"]
            with suppress(ServiceError):  # the match is worth showing without its picture
                thumbnails[tile_id] = client.thumbnail(tile_id, THUMBNAIL_SIZE, task.feedback)
            task.setProgress(20 + 80 * done / len(features))
        return {"matches": collection, "thumbnails": thumbnails}
    return work
