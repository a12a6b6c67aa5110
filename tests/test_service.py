"""`geosearch serve`, the real server on loopback, started by the test: answers equal the CLI's, the token,
archive roots, malformed requests, a schemathesis run, and an index job while searches go on."""

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import anyio
import geopandas as gpd
import httpx
import pystac
import pytest
import rasterio
import torch
from fastapi.testclient import TestClient
from rasterio.warp import transform_bounds

from conftest import cut_short, run_geosearch
from geosearch.change import change, history
from geosearch.data import AERIAL_3857, LANDSAT7_RGB, LANDSAT8_224077, LANDSAT8_224078
from geosearch.encoder.default import default_checkpoint
from geosearch.query import build_query
from geosearch.search import Filters
from geosearch.service.app import Service, create_app
from geosearch.store import open_backend
from geosearch.store.archive import Archive
from hostile import LANDSAT_PREFIX, landsat_product
from support import split_bands, write_mosaic_vrt

BOX = [-54.8315, -25.2208, -54.7783, -25.1723]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, store: Path, *args: str, token: str | None = None):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "geosearch", "serve", "--store", str(store), "--port", str(self.port), *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=os.environ | ({"GEOSEARCH_TOKEN": token} if token else {}))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/health", headers=self.headers, timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.3)
            if self.process.poll() is not None:
                raise RuntimeError(self.process.stderr.read())
        raise TimeoutError("the server did not start")

    def get(self, path: str, **kwargs) -> httpx.Response:
        return httpx.get(self.url + path, headers=self.headers | kwargs.pop("headers", {}), timeout=60, **kwargs)

    def post(self, path: str, **kwargs) -> httpx.Response:
        return httpx.post(self.url + path, headers=self.headers | kwargs.pop("headers", {}), timeout=60, **kwargs)

    def request(self, method: str, path: str) -> httpx.Response:
        return httpx.request(method, self.url + path, headers=self.headers, timeout=60)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def archive_root(tmp_path_factory) -> Path:
    """An archive root holding the two Landsat 8 crops (indexed) and the other two scenes (not yet)."""
    root = tmp_path_factory.mktemp("archive")
    for scene in (LANDSAT8_224077, LANDSAT8_224078, AERIAL_3857, LANDSAT7_RGB):
        shutil.copy(scene, root / scene.name)
    return root


@pytest.fixture(scope="module")
def store(tmp_path_factory, archive_root) -> Path:
    path = tmp_path_factory.mktemp("served") / "store"
    indexed = run_geosearch("index", str(archive_root / LANDSAT8_224077.name), str(archive_root / LANDSAT8_224078.name),
                            "--store", str(path), "-q")
    assert indexed.returncode == 0, indexed.stderr
    return path


@pytest.fixture(scope="module")
def server(store, archive_root) -> Iterator[Server]:
    running = Server(store, "--root", str(archive_root))
    yield running
    running.stop()


def test_health_and_scenes(server):
    health = server.get("/health").json()
    assert health["device"] == "cpu" and health["model_id"].startswith("efficientnet_lite0-")
    assert health["scenes"] == 2 and health["tiles"] == 52 and health["store"]["collection"] == "tiles"
    assert health["max_examples"] == 32
    scenes = server.get("/scenes").json()
    assert scenes["type"] == "FeatureCollection" and len(scenes["features"]) == 2


def test_search_answer_equals_the_cli(server, store):
    answer = server.post("/search", json={"bbox": BOX, "k": 5}).json()
    # The CLI needs the store too: the server holds its lock, so it reads a copy.
    copy = store.parent / "copy"
    shutil.copytree(store, copy, ignore=shutil.ignore_patterns(".geosearch.lock"), dirs_exist_ok=True)
    cli = run_geosearch("search", "--bbox", *map(str, BOX), "-k", "5", "--json", "--store", str(copy))
    assert cli.returncode == 0, cli.stderr
    assert answer == json.loads(cli.stdout)
    by_tile = server.post("/search", json={"tile_id": answer["features"][0]["properties"]["tile_id"], "k": 3})
    assert by_tile.status_code == 200 and len(by_tile.json()["features"]) == 3


def test_examples_in_a_search_answer_as_the_cli(server, store, tmp_path):
    """positives and negatives in POST /search give what --positive and --negative give the CLI."""
    plain = [f["properties"]["tile_id"] for f in server.post("/search", json={"bbox": BOX, "k": 8}).json()["features"]]
    body = {"tile_id": plain[0], "positives": [{"bbox": BOX}], "negatives": [{"tile_id": plain[1]}], "k": 5}
    answer = server.post("/search", json=body).json()
    copy = tmp_path / "copy"
    shutil.copytree(store, copy, ignore=shutil.ignore_patterns(".geosearch.lock"))
    cli = run_geosearch("search", "--tile", plain[0], "--positive", ",".join(map(str, BOX)), "--negative", plain[1],
                        "-k", "5", "--json", "--store", str(copy))
    assert cli.returncode == 0, cli.stderr
    assert answer == json.loads(cli.stdout) and answer["features"]
    assert plain[1] not in [f["properties"]["tile_id"] for f in answer["features"]]


def test_thumbnail(server):
    tile_id = server.post("/search", json={"bbox": BOX, "k": 1}).json()["features"][0]["properties"]["tile_id"]
    picture = server.get(f"/tiles/{tile_id}/thumbnail.png", params={"size": 64})
    assert picture.status_code == 200 and picture.headers["content-type"] == "image/png"
    assert picture.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert server.get("/tiles/0c6f6b9e-1c55-4c4e-8a0e-6a1f2b8e4d17/thumbnail.png").status_code == 404


@pytest.mark.parametrize(("body", "status", "message"), [
    ({"bbox": [1, 2]}, 422, "body.bbox"),
    ({"bbox": BOX, "k": 0}, 422, "body.k"),
    ({"bbox": [2, 2, 1, 1]}, 400, "is empty (min above max)"),
    ({"bbox": BOX, "crs": "EPSG:999999"}, 400, "unknown CRS"),
    ({"bbox": [10, 10, 11, 11]}, 400, "lies outside every indexed scene"),
    ({"bbox": BOX, "within": [-1e171, -1e17, 5e16, 6e16]}, 400, "leaves the globe"),
    ({"bbox": [1e17, 1e17, 2e17, 2e17], "crs": "EPSG:32621"}, 400, "has no place in EPSG:4326"),
    ({"tile_id": "0c6f6b9e-1c55-4c4e-8a0e-6a1f2b8e4d17"}, 404, "no tile"),
    ({}, 400, "give one query: bbox (with crs) or tile_id"),
    ({"bbox": BOX, "tile_id": "0c6f6b9e-1c55-4c4e-8a0e-6a1f2b8e4d17"}, 400, "give one query"),
    ({"bbox": BOX, "after": "May"}, 400, "after 'May': give a date like 2020-05-18"),
    ({"bbox": BOX, "before": "June"}, 400, "before 'June': give a date like 2020-05-18"),
    ({"bbox": BOX, "scenes": ["a\x00b"]}, 422, "body.scenes.0: Value error, holds a NUL character"),
    ({"negatives": [{"tile_id": "0c6f6b9e-1c55-4c4e-8a0e-6a1f2b8e4d17"}]}, 400,
     "a negative needs at least one positive: give bbox, tile_id or positives"),
    ({"bbox": BOX, "positives": [{"tile_id": "0c6f6b9e-1c55-4c4e-8a0e-6a1f2b8e4d17"}] * 20,
      "negatives": [{"bbox": BOX}] * 12}, 400, "33 examples: give at most 32 in all"),
    ({"bbox": BOX, "negatives": [{"crs": "EPSG:32621"}]}, 400, "negatives.0: give bbox (with crs) or tile_id"),
    ({"positives": [{"bbox": BOX}, {"tile_id": "0c6f6b9e-1c55-4c4e-8a0e-6a1f2b8e4d17"}]}, 404, "no tile"),
    ({"positives": [{"bbox": [1, 2]}]}, 422, "body.positives.0.bbox"),
    ({"bbox": BOX, "positives": [{"bbox": [10, 10, 11, 11]}]}, 400, "lies outside every indexed scene"),
])
def test_bad_search_requests_are_4xx_with_a_message(server, body, status, message):
    response = server.post("/search", json=body)
    assert response.status_code == status and message in response.json()["error"]
    assert "--" not in response.json()["error"]  # the request's field names, not the CLI's options


def test_malformed_and_oversized_bodies(server):
    broken = server.post("/search", content=b"{not json", headers={"content-type": "application/json"})
    assert broken.status_code == 422 and "error" in broken.json()
    huge = server.post("/search", content=b"[" + b"1," * 100_000 + b"1]", headers={"content-type": "application/json"})
    assert huge.status_code == 413 and "request body over" in huge.json()["error"]
    chunked = server.post("/search", content=iter([b"[" + b"1," * 50_000, b"1]"]),
                          headers={"content-type": "application/json"})
    assert "content-length" not in chunked.request.headers
    assert chunked.status_code == 413 and "request body over" in chunked.json()["error"]


def test_paths_outside_the_roots_are_refused(server, archive_root, tmp_path):
    outside = tmp_path / "secret.tif"
    shutil.copy(AERIAL_3857, outside)
    (archive_root / "escape.tif").symlink_to(outside)
    for path in (str(outside), f"{archive_root}/../{tmp_path.name}/secret.tif", str(archive_root / "escape.tif")):
        response = server.post("/index", json={"paths": [path]})
        assert response.status_code == 403 and "outside the archive roots" in response.json()["error"], path
    assert server.post("/index", json={"paths": [str(archive_root / "missing.tif")]}).status_code == 404
    (archive_root / "escape.tif").unlink()
    nul = server.post("/index", json={"paths": [f"{archive_root}/a\x00b.tif"]})
    assert nul.status_code == 422 and nul.json()["error"] == "body.paths.0: Value error, holds a NUL character"
    empty = server.post("/index", json={"paths": [""]})
    assert empty.status_code == 422 and empty.json()["error"].startswith("body.paths.0: String should have at least")


def _escaped(server, path: str, body: dict) -> httpx.Response:
    """A body as JSON can carry it, escapes and all: a lone surrogate is valid JSON, but not UTF-8."""
    return server.post(path, content=json.dumps(body).encode(), headers={"content-type": "application/json"})


def test_lone_surrogates_are_422_not_500(server, archive_root):
    for path, body, field in [("/index", {"paths": [f"{archive_root}/\ud800.tif"]}, "body.paths.0"),
                              ("/search", {"bbox": BOX, "crs": "\ud800"}, "body.crs"),
                              ("/search", {"bbox": BOX, "scenes": ["\ud800"]}, "body.scenes.0")]:
        response = _escaped(server, path, body)
        assert response.status_code == 422, (body, response.text)
        assert response.json()["error"] in (f"{field}: Value error, holds a lone surrogate, which is not text",
                                            f"{field}: Input should be a valid string, unable to parse raw data as "
                                            "a unicode string")  # pydantic's own check, for a constrained string


def test_a_vrt_under_a_root_cannot_read_outside_it(server, archive_root, tmp_path):
    """The file named is under the root, the pixels it reads are not: refused before any job starts."""
    outside = tmp_path / "secret.tif"
    shutil.copy(AERIAL_3857, outside)
    vrt = archive_root / "window.vrt"
    write_mosaic_vrt(outside, vrt, 2048, 2048)
    try:
        response = server.post("/index", json={"paths": [str(vrt)]})
        assert response.status_code == 403, response.text
        assert response.json()["error"] == f"{vrt}: reads {outside}, outside the archive roots"
    finally:
        vrt.unlink()


def test_a_fifo_is_refused_and_does_not_hold_up_the_jobs(server, archive_root):
    fifo = archive_root / "pipe.tif"
    os.mkfifo(fifo)
    try:
        response = server.post("/index", json={"paths": [str(fifo)]})
        assert response.status_code == 400 and response.json()["error"] == f"{fifo}: not a regular file"
    finally:
        fifo.unlink()


def _job_ended(server: Server, job: httpx.Response, seconds: float = 180) -> dict:
    """The status of the job that `job` started, once it has ended (or `seconds` have passed)."""
    assert job.status_code == 202, job.text
    deadline, status = time.monotonic() + seconds, {"state": "queued"}
    while status["state"] in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.2)
        status = server.get(f"/jobs/{job.json()['job_id']}").json()
    return status


def test_a_detect_job_answers_as_the_cli(server, store, tmp_path):
    """POST /detect runs in the background; its places at /jobs/{id}/result are what `geosearch detect` prints."""
    plain = [f["properties"]["tile_id"] for f in server.post("/search", json={"bbox": BOX, "k": 8}).json()["features"]]
    body = {"tile_id": plain[0], "positives": [{"tile_id": plain[1]}], "negatives": [{"tile_id": plain[7]}]}
    status = _job_ended(server, server.post("/detect", json=body))
    assert status["kind"] == "detect" and status["state"] == "done", status
    places = server.get(f"/jobs/{status['id']}/result").json()
    copy = tmp_path / "copy"
    shutil.copytree(store, copy, ignore=shutil.ignore_patterns(".geosearch.lock"))
    cli = run_geosearch("detect", "--tile", plain[0], "--positive", plain[1], "--negative", plain[7], "--json",
                        "--store", str(copy))
    assert cli.returncode == 0, cli.stderr
    assert places == json.loads(cli.stdout) and places["features"]
    assert status["summary"]["places"] == len(places["features"])
    assert status["summary"]["tiles_scored"] == server.get("/health").json()["tiles"]
    for bad, code, message in (({"tile_id": plain[0], "method": "classifier"}, 400, "the classifier needs negative"),
                               ({"tile_id": plain[0], "method": "svm"}, 422, "body.method"),
                               ({"tile_id": plain[0]}, 400, "1 positive(s) and 0 negative(s) are too few")):
        response = server.post("/detect", json=bad)
        assert response.status_code == code and message in response.json()["error"], response.text
    assert server.get("/jobs/no-such-job/result").status_code == 404
    assert server.request("DELETE", "/jobs/no-such-job").status_code == 404


def test_a_detect_job_is_cancelled_queued_or_running(store, tmp_path, monkeypatch):
    """DELETE /jobs/{id} stops a detect job waiting behind another job, or one part-way through the archive (it
    stops between pages); neither has a result."""
    copy = tmp_path / "store"
    shutil.copytree(store, copy, ignore=shutil.ignore_patterns(".geosearch.lock"))
    monkeypatch.setattr("geosearch.detect.PAGE", 10)
    with open_backend(str(copy)) as backend:
        checkpoint = default_checkpoint()
        service = Service(Archive.open(backend, "tiles", checkpoint.model_id), checkpoint, torch.device("cpu"), [])
        pages, resume = service.archive.vector_pages, threading.Event()

        def held_after_the_first_page(*args, **kwargs):
            for number, page in enumerate(pages(*args, **kwargs)):
                if number == 1:
                    resume.wait(60)
                yield page

        monkeypatch.setattr(service.archive, "vector_pages", held_after_the_first_page)
        tile_id = next(tile_id for tile_id, _ in service.archive.tiles(service.archive.scenes()[0]["scene_id"]))
        with TestClient(create_app(service)) as client:
            def job(body: dict) -> str:
                response = client.post("/detect", json=body)
                assert response.status_code == 202, response.text
                return response.json()["job_id"]

            running, queued = job({"tile_id": tile_id, "threshold": 0.5}), job({"tile_id": tile_id, "threshold": 0.5})
            deadline = time.monotonic() + 60
            while client.get(f"/jobs/{running}").json()["progress"]["tiles_done"] == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            for job_id in (queued, running):
                assert client.delete(f"/jobs/{job_id}").json()["state"] in ("queued", "running")
            resume.set()
            service.executor.shutdown(wait=True)
            for job_id in (running, queued):
                status = client.get(f"/jobs/{job_id}").json()
                assert status["state"] == "cancelled" and client.get(f"/jobs/{job_id}/result").status_code == 409
            # The page under way when it was cancelled ends; the other 32 tiles are not scored.
            assert client.get(f"/jobs/{running}").json()["progress"] == {"tiles_done": 20, "tiles_total": 52}


def test_history_and_change_answer_as_the_library_and_the_cli(server, store, archive_root, tmp_path):
    """POST /change and POST /history give what the library gives on a copy of the store; the CLI, which the
    server's lock sends through it, prints the same."""
    a, b = str(archive_root / LANDSAT8_224077.name), str(archive_root / LANDSAT8_224078.name)
    body = {"from": {"scenes": [a]}, "to": {"scenes": [b]}, "top": 3}
    answer = server.post("/change", json=body)
    assert answer.status_code == 200, answer.text
    changed = answer.json()
    copy = tmp_path / "copy"
    shutil.copytree(store, copy, ignore=shutil.ignore_patterns(".geosearch.lock"))
    with open_backend(str(copy)) as backend:
        archive = Archive.open(backend, "tiles")
        frame, report = change(archive, Filters.of(archive, scenes=[a]), Filters.of(archive, scenes=[b]))
        tile_id = frame["tile_id_to"][0]
        steps = history(archive, build_query(archive, tile=tile_id))
    assert changed == json.loads(frame.head(3).to_json(drop_id=True)) | {"report": report.to_dict()}
    assert server.post("/history", json={"tile_id": tile_id}).json() == json.loads(steps.to_json(drop_id=True))
    cli = run_geosearch("change", "--from", a, "--to", b, "-n", "3", "--json", "--store", str(store))
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout) == changed
    for path, bad, status, message in (
            ("/change", {"from": {"scenes": [a]}, "to": {"scenes": [a]}}, 400, "1 scene(s) are on both sides"),
            ("/change", {"from": {"scenes": ["gone.tif"]}, "to": {"scenes": [b]}}, 404, "no scene 'gone.tif'"),
            ("/change", {"from": {"after": "May"}, "to": {"scenes": [b]}}, 400, "from.after 'May': give a date"),
            ("/history", {"tile_id": "0c6f6b9e-1c55-4c4e-8a0e-6a1f2b8e4d17"}, 404, "no tile")):
        response = server.post(path, json=bad)
        assert response.status_code == status and message in response.json()["error"], response.text


def test_a_job_whose_every_path_fails_ends_failed(server, archive_root):
    (archive_root / "notes.tif").write_text("not a raster")
    status = _job_ended(server, server.post("/index", json={"paths": [str(archive_root / "notes.tif")]}))
    assert status["state"] == "failed" and "cannot be opened as a raster" in status["errors"][0]["error"]
    (archive_root / "notes.tif").unlink()


def test_an_index_job_runs_while_searches_succeed(server, archive_root):
    job = server.post("/index", json={"paths": [str(archive_root / AERIAL_3857.name),
                                                str(archive_root / LANDSAT7_RGB.name)]})
    assert job.status_code == 202
    job_id, searches, state = job.json()["job_id"], 0, "queued"
    deadline = time.monotonic() + 180
    while state in ("queued", "running") and time.monotonic() < deadline:
        assert server.post("/search", json={"bbox": BOX, "k": 3}).status_code == 200
        searches += 1
        state = server.get(f"/jobs/{job_id}").json()["state"]
    status = server.get(f"/jobs/{job_id}").json()
    assert status["state"] == "done" and status["summary"]["indexed"] == 2 and searches >= 2
    assert status["progress"]["tiles_done"] == status["progress"]["tiles_total"] > 0
    assert server.get("/health").json()["tiles"] == 52 + 35
    assert server.get("/jobs/no-such-job").status_code == 404


def test_schemathesis_finds_no_server_error(server):
    result = subprocess.run(
        [str(Path(sys.executable).parent / "schemathesis"), "run", f"{server.url}/openapi.json",
         "--checks", "not_a_server_error", "--max-examples", "40", "--phases", "examples,fuzzing", "--seed", "0"],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:]


def test_no_tile_of_an_unfinished_scene_is_served(store, tmp_path):
    copy = tmp_path / "store"
    shutil.copytree(store, copy, ignore=shutil.ignore_patterns(".geosearch.lock"))
    with open_backend(copy) as backend:
        archive = Archive.open(backend, "tiles")
        path = archive.scenes()[1]["path"]
        pending = cut_short(archive, path, 5)
        complete = archive.tile_count()
    served = Server(copy)
    try:
        assert served.get("/health").json()["tiles"] == complete
        hits = served.post("/search", json={"bbox": BOX, "k": 100, "include_self": True, "dedup": False}).json()
        assert len(hits["features"]) == complete and not {f["properties"]["tile_id"] for f in hits["features"]} & \
            set(pending)
        for response in (served.post("/search", json={"tile_id": pending[0]}),
                         served.get(f"/tiles/{pending[0]}/thumbnail.png")):
            assert response.status_code == 400 and response.json()["error"] == (
                f"tile {pending[0]} is of {path}, which is not completely indexed (indexing); index it again")
    finally:
        served.stop()


def test_a_scene_indexed_again_shows_its_new_pixels(tmp_path):
    """Thumbnails are cached by tile id, and a scene rewritten in place (same grid, same file size, so the same
    scene and tile ids) keeps its ids: indexing it again with force drops the cached pictures."""
    root, scene = tmp_path / "archive", tmp_path / "archive" / "aerial.tif"
    root.mkdir()
    with rasterio.open(AERIAL_3857) as source:
        pixels, profile = source.read(), source.profile | {"compress": "none", "photometric": "rgb"}
    with rasterio.open(scene, "w", **profile) as copy:
        copy.write(pixels)
    served = Server(tmp_path / "store", "--root", str(root))
    try:
        assert _job_ended(served, served.post("/index", json={"paths": [str(scene)]}))["state"] == "done"
        with rasterio.open(scene) as dataset:
            box = list(transform_bounds(dataset.crs, "EPSG:4326", *dataset.bounds))
        found = served.post("/search", json={"bbox": box, "k": 1, "include_self": True}).json()
        tile_id = found["features"][0]["properties"]["tile_id"]
        before = served.get(f"/tiles/{tile_id}/thumbnail.png")
        with rasterio.open(scene, "r+") as dataset:
            dataset.write(255 - pixels)
        reindexed = _job_ended(served, served.post("/index", json={"paths": [str(scene)], "force": True}))
        assert reindexed["summary"]["indexed"] == 1
        after = served.get(f"/tiles/{tile_id}/thumbnail.png")
        assert before.status_code == after.status_code == 200 and before.content != after.content
    finally:
        served.stop()


def test_requests_worked_on_at_once_are_capped(store, tmp_path):
    """The app caps the threads that work on requests (FastAPI's default is 40) and still answers searches."""
    copy = tmp_path / "store"
    shutil.copytree(store, copy, ignore=shutil.ignore_patterns(".geosearch.lock"))
    with open_backend(str(copy)) as backend:
        checkpoint = default_checkpoint()
        service = Service(Archive.open(backend, "tiles", checkpoint.model_id), checkpoint, torch.device("cpu"), [])
        for app, threads in ((create_app(service, 3), 3), (create_app(service), 2 * len(os.sched_getaffinity(0)))):
            with TestClient(app) as client:
                limiter = client.portal.call(anyio.to_thread.current_default_thread_limiter)
                assert limiter.total_tokens == threads
                assert len(client.post("/search", json={"bbox": BOX, "k": 2}).json()["features"]) == 2


def test_the_token_is_enforced(store, tmp_path):
    copy = tmp_path / "store"
    shutil.copytree(store, copy, ignore=shutil.ignore_patterns(".geosearch.lock"))
    guarded = Server(copy, token="s3cret")
    try:
        assert guarded.get("/health").status_code == 200
        assert httpx.get(f"{guarded.url}/health").status_code == 401
        wrong = httpx.get(f"{guarded.url}/health", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and "token" in wrong.json()["error"]
        assert httpx.get(f"{guarded.url}/health", headers={"Authorization": "s3cret"}).status_code == 401
        assert httpx.get(f"{guarded.url}/health", headers={"Authorization": "bearer  s3cret"}).status_code == 200
        huge = httpx.post(f"{guarded.url}/search", content=b"[" + b"1," * 100_000 + b"1]")
        assert huge.status_code == 401  # who asks comes first, then what they send
        assert httpx.get(f"{guarded.url}/openapi.json").status_code == 401
    finally:
        guarded.stop()
    exposed = run_geosearch("serve", "--host", "0.0.0.0", "--store", str(copy), env={"GEOSEARCH_TOKEN": ""})
    assert exposed.returncode == 1 and "give --token" in exposed.stderr


def test_the_token_may_come_as_the_basic_auth_password(store, tmp_path):
    """As QGIS's authentication database sends it: HTTP Basic, any user name, the token as the password."""
    copy = tmp_path / "store"
    shutil.copytree(store, copy, ignore=shutil.ignore_patterns(".geosearch.lock"))
    with open_backend(str(copy)) as backend:
        checkpoint = default_checkpoint()
        service = Service(Archive.open(backend, "tiles", checkpoint.model_id), checkpoint, torch.device("cpu"), [],
                          token="s3cret")
        with TestClient(create_app(service)) as client:
            assert client.get("/health", auth=("geosearch", "s3cret")).status_code == 200
            assert client.get("/health", auth=("", "s3cret")).status_code == 200
            for auth in (("geosearch", "nope"), ("s3cret", ""), ("geosearch", "s3cret ")):
                assert client.get("/health", auth=auth).status_code == 401
            for header in ("Basic !!not base64!!", "Basic czNjcmV0", "Basic", "Basic /w==", "Basic czNjcmV0=="):
                wrong = client.get("/health", headers={"Authorization": header})  # bad base64, or no colon
                assert wrong.status_code == 401, header
                assert wrong.json()["error"] == ("missing or wrong token (send 'Authorization: Bearer TOKEN', or "
                                                 "HTTP Basic auth with the token as the password)")


def test_the_cli_goes_through_the_server_that_holds_the_store(archive_root, tmp_path):
    """While `geosearch serve` holds the embedded store (Qdrant Edge opens a store in one process only), index,
    search, scenes and stats go through it, found by the address it records beside the lock; the other commands,
    and options its API has no field for, are one clear line each."""
    copy = tmp_path / "store"  # its own: the module's store gains scenes from the other tests' index jobs
    assert run_geosearch("index", str(archive_root / LANDSAT8_224077.name), str(archive_root / LANDSAT8_224078.name),
                         "--store", str(copy), "-q").returncode == 0
    served = Server(copy, "--root", str(archive_root), token="s3cret")
    token = {"GEOSEARCH_TOKEN": "s3cret"}
    outside = tmp_path / "outside.tif"
    shutil.copy(AERIAL_3857, outside)
    try:
        stats = run_geosearch("stats", "--store", str(copy), "--json", env=token)
        assert stats.returncode == 0, stats.stderr
        assert json.loads(stats.stdout) == served.get("/stats").json()
        answer = served.post("/search", json={"bbox": BOX, "k": 5}).json()
        searched = run_geosearch("search", "--bbox", *map(str, BOX), "-k", "5", "--json", "--store", str(copy),
                                 env=token)
        assert searched.returncode == 0 and json.loads(searched.stdout) == answer
        tiles = [feature["properties"]["tile_id"] for feature in answer["features"]]
        refined = run_geosearch("search", "--positive", tiles[0], "--negative", tiles[1], "-k", "3", "--json",
                                "--store", str(copy), env=token)
        assert refined.returncode == 0, refined.stderr
        assert json.loads(refined.stdout) == served.post("/search", json={
            "positives": [{"tile_id": tiles[0]}], "negatives": [{"tile_id": tiles[1]}], "k": 3}).json()
        saved = run_geosearch("search", "--bbox", *map(str, BOX), "-k", "5", "-o", str(tmp_path / "m.gpkg"),
                              "--store", str(copy), env=token)
        assert saved.returncode == 0 and saved.stdout.count("\n") == 5 + 2  # five matches, the count, the file
        assert list(gpd.read_file(tmp_path / "m.gpkg")["tile_id"]) == [
            feature["properties"]["tile_id"] for feature in answer["features"]]
        listed = run_geosearch("scenes", "--store", str(copy), env=token)
        assert listed.returncode == 0 and listed.stdout.count("complete ") == 2 and "2 scene(s)" in listed.stdout
        indexed = run_geosearch("index", str(archive_root / AERIAL_3857.name), "--store", str(copy), "--json",
                                env=token)
        assert indexed.returncode == 0, indexed.stderr
        summary = json.loads(indexed.stdout)
        assert summary["indexed"] == 1 and summary["server"] == served.url and summary["errors"] == []
        assert served.get("/health").json()["scenes"] == 3
        held = (f"{copy}: store held by geosearch serve (pid {served.process.pid}) at {served.url}; only index, "
                "search, detect, history, change, scenes and stats go through it: stop it for the others")
        server = f"{served.url}: the geosearch serve holding the store"
        refusals = {
            ("stats",): f"{server} wants its token: set GEOSEARCH_TOKEN",
            ("remove", "x"): held,
            ("search", "--image", str(tmp_path / "a.png"), "--quicklook", str(tmp_path / "q.png")):
                f"{server} takes no --image, --quicklook: leave them out, or stop the server",
            ("search", "--bbox", *map(str, BOX), "--negative", str(outside)):
                f"{server} takes no picture as an example (--negative {outside}): leave it out, or stop the server",
            ("index", str(outside)): f"{served.url}: {outside}: outside the archive roots",
            ("index", str(archive_root / LANDSAT7_RGB.name), "--tile-size", "128"):
                f"{server} takes no --tile-size: leave it out, or stop the server",
            ("scenes", "--collection", "other"): f"{server} serves collection 'tiles', not 'other'",
        }
        for args, line in refusals.items():
            result = run_geosearch(*args, "--store", str(copy), env=token if args != ("stats",) else None)
            assert result.returncode == 1 and [e for e in result.stderr.splitlines() if e] == [f"Error: {line}"]
        assert served.get("/health").json()["scenes"] == 3
    finally:
        served.stop()
    assert not (copy / ".geosearch.server").exists()
    assert json.loads(run_geosearch("stats", "--store", str(copy), "--json").stdout)["scenes"] == 3


def test_the_server_reads_nothing_outside_its_roots(tmp_path):
    """Issue 30: a Landsat MTL under the root whose bands lie outside it, a file named like an item's assets beside
    an item whose assets lie outside, scene records imported from a file that name rasters outside, and an indexed
    scene replaced by a FIFO. Nothing outside the root is read, and nothing hangs."""
    root, secret, elsewhere = tmp_path / "root", tmp_path / "secret", tmp_path / "elsewhere"
    root.mkdir()
    split_bands(LANDSAT8_224077, secret, ["B2.TIF", "B3.TIF", "B4.TIF"])
    mtl = landsat_product(root / "product", files={n: f"../../secret/B{n}.TIF" for n in (2, 3, 4)}) \
        / f"{LANDSAT_PREFIX}_MTL.txt"
    item = pystac.Item("decoy", geometry=None, bbox=None, datetime=datetime(2020, 5, 18, tzinfo=UTC), properties={})
    for band in ("B2", "B3", "B4"):
        item.add_asset(band, pystac.Asset(str(secret / f"{band}.TIF"), media_type=pystac.MediaType.GEOTIFF))
    item.set_self_href(str(root / "item.json"))
    item.save_object(include_self_link=False)
    shutil.copy(AERIAL_3857, root / "item.json#B4,B3,B2")  # a real file of that name, not the item's assets
    scene = root / LANDSAT8_224078.name
    shutil.copy(LANDSAT8_224078, scene)
    elsewhere.mkdir()
    shutil.copy(LANDSAT8_224077, elsewhere / LANDSAT8_224077.name)
    store, exported = tmp_path / "store", tmp_path / "elsewhere.parquet"
    for args in (("index", str(elsewhere / LANDSAT8_224077.name), "--store", str(tmp_path / "other"), "-q"),
                 ("export", "--embeddings", str(exported), "--store", str(tmp_path / "other")),
                 ("index", str(scene), "--store", str(store), "-q"), ("import", str(exported), "--store", str(store))):
        assert run_geosearch(*args).returncode == 0
    imported_tile = gpd.read_parquet(exported)["tile_id"].iloc[0]
    served = Server(store, "--root", str(root))
    try:
        mtl, decoy = (_job_ended(served, served.post("/index", json={"paths": [str(path)]}))
                      for path in (mtl, root / "item.json#B4,B3,B2"))
        assert mtl["state"] == "failed" and "../../secret/B2.TIF is outside this server's archive roots, so it is " \
            "not read" in mtl["errors"][0]["error"], mtl
        assert decoy["state"] == "done", decoy  # the file itself, the aerial scene, not the item's assets
        records = {f["properties"]["path"]: f["properties"] for f in served.get("/scenes").json()["features"]}
        assert records[str(root / "item.json#B4,B3,B2")]["crs"] == "EPSG:3857"
        assert len(records) == 3  # the decoy, the scene indexed before, the imported one
        thumbnail = served.get(f"/tiles/{imported_tile}/thumbnail.png")
        assert thumbnail.status_code == 404 and "cannot be read any more" in thumbnail.json()["error"]
        box = served.post("/search", json={"bbox": BOX, "k": 3})  # over the imported scene only
        assert box.status_code == 400 and "is outside this server's archive roots" in box.json()["error"], box.text
        # The indexed scene replaced by a FIFO: its thumbnail is refused at once, and the server still answers.
        nearest = served.post("/search", json={"tile_id": imported_tile, "scenes": [str(scene)], "k": 1}).json()
        local_tile = nearest["features"][0]["properties"]["tile_id"]
        assert served.get(f"/tiles/{local_tile}/thumbnail.png?size=64").status_code == 200
        scene.unlink()
        os.mkfifo(scene)
        started = time.monotonic()
        fifo = served.get(f"/tiles/{local_tile}/thumbnail.png?size=96")  # not the cached picture
        assert fifo.status_code == 404 and time.monotonic() - started < 10
        assert served.get("/health").status_code == 200
        # NaN where a number is meant is refused before any job starts; a box of the whole globe reads the scene.
        nan_threshold = served.post("/detect", content=f'{{"tile_id": "{local_tile}", "threshold": NaN}}',
                                    headers={"content-type": "application/json"})
        nan_score = served.post("/search", content=f'{{"tile_id": "{local_tile}", "min_score": NaN}}',
                                headers={"content-type": "application/json"})
        assert nan_threshold.status_code == nan_score.status_code == 422, (nan_threshold.text, nan_score.text)
        assert served.post("/history", json={"bbox": [-180, -90, 180, 90]}).status_code == 200
        through = run_geosearch("detect", "--tile", local_tile, "--threshold", "nan", "--store", str(store))
        lines = [line for line in through.stderr.splitlines() if line.strip()]
        assert through.returncode == 1 and len(lines) == 1 and "threshold" in lines[0], through.stderr
    finally:
        served.stop()
