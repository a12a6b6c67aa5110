"""The CLI's side of `geosearch serve`: while a server holds the embedded store (one process at a time, as Qdrant
Edge allows), `index`, `search`, `detect`, `history`, `change`, `scenes` and `stats` ask it through its API
instead of failing."""

import os
import time
from collections.abc import Callable
from typing import Any

import httpx

from geosearch.errors import GeosearchError

JOB_POLL_SECONDS = 0.5


class ServiceClient:
    """One server's API, its errors turned into GeosearchError lines. The token is GEOSEARCH_TOKEN, as for
    `geosearch serve` itself."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 600):
        self.url = url
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=url, headers=headers, timeout=timeout)

    @classmethod
    def from_env(cls, url: str) -> "ServiceClient":
        return cls(url, os.environ.get("GEOSEARCH_TOKEN"))

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as error:
            raise GeosearchError(f"{self.url}: the geosearch serve holding the store does not answer "
                                 f"({type(error).__name__}: {error})") from None
        if response.status_code == 401:
            raise GeosearchError(f"{self.url}: the geosearch serve holding the store wants its token: set "
                                 "GEOSEARCH_TOKEN")
        if response.is_error:
            try:
                message = response.json()["error"]
            except (ValueError, KeyError, TypeError):
                message = f"HTTP {response.status_code}"
            raise GeosearchError(f"{self.url}: {message}")
        return response.json()

    def health(self) -> dict:
        return self._call("GET", "/health")

    def stats(self) -> dict:
        return self._call("GET", "/stats")

    def scenes(self) -> dict:
        """The scenes as a GeoJSON FeatureCollection of footprints."""
        return self._call("GET", "/scenes")

    def search(self, request: dict) -> dict:
        """POST /search with `request` (SearchRequest's fields); the matches as a GeoJSON FeatureCollection."""
        return self._call("POST", "/search", json=request)

    def history(self, request: dict) -> dict:
        """POST /history (a bbox with its crs, or a tile_id): the place's tiles as a GeoJSON FeatureCollection."""
        return self._call("POST", "/history", json=request)

    def change(self, request: dict) -> dict:
        """POST /change (ChangeRequest's fields): the places as a GeoJSON FeatureCollection, with its `report`."""
        return self._call("POST", "/change", json=request)

    def index(self, paths: list[str], force: bool, on_progress: Callable[[int, int], None]) -> dict:
        """Run an index job and wait for its end, reporting (tiles done, tiles in all) as it goes; the job."""
        job_id = self._call("POST", "/index", json={"paths": paths, "force": force})["job_id"]
        return self._wait(job_id, on_progress)

    def detect(self, request: dict, on_progress: Callable[[int, int], None]) -> tuple[dict, dict]:
        """Run a detect job (DetectRequest's fields) and wait for its end; the job and its places (GeoJSON). A job
        that failed or was cancelled is an error."""
        job_id = self._call("POST", "/detect", json=request)["job_id"]
        job = self._wait(job_id, on_progress)
        if job["state"] != "done":
            reason = job["errors"][0]["error"] if job["errors"] else job["state"]
            raise GeosearchError(f"{self.url}: detect job {job_id} {job['state']}: {reason}")
        return job, self._call("GET", f"/jobs/{job_id}/result")

    def _wait(self, job_id: str, on_progress: Callable[[int, int], None]) -> dict:
        while True:
            job = self._call("GET", f"/jobs/{job_id}")
            on_progress(job["progress"]["tiles_done"], job["progress"]["tiles_total"])
            if job["state"] in ("done", "failed", "cancelled"):
                return job
            time.sleep(JOB_POLL_SECONDS)
