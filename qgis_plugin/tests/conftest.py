"""Real QGIS (headless) and a real `geosearch serve` over the shipped scenes, started once for the session; and a
gate in front of it that holds chosen requests (thumbnails, by default) until a test lets them through.

The server runs from the project's own environment (GEOSEARCH_EXE, default .venv/bin/geosearch); these tests run in
Debian's python3, where QGIS lives, and import nothing of geosearch but the plugin."""

import json
import os
import select
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCENES = sorted((REPO / "geosearch" / "data" / "scenes").glob("*.tif"))
sys.path.insert(0, str(REPO / "qgis_plugin"))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from qgis.core import QgsApplication  # noqa: E402
from qgis.PyQt.QtCore import QCoreApplication  # noqa: E402
from qgis.testing import start_app  # noqa: E402

APP = start_app()
sys.path.append(str(Path(QgsApplication.pkgDataPath()) / "python" / "plugins"))  # QGIS's own processing plugin
from processing.core.Processing import Processing  # noqa: E402

Processing.initialize()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`geosearch serve` on a free port; with `token`, every request must carry it (this class's own do)."""

    def __init__(self, executable: str, store: Path, token: str = ""):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.process = subprocess.Popen([executable, "serve", "--store", str(store), "--port", str(self.port),
                                         *(["--token", token] if token else [])],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                self.health = self.get("/health")
                return
            except OSError:
                time.sleep(0.3)
            if self.process.poll() is not None:
                raise RuntimeError(self.process.stderr.read())
        raise TimeoutError("geosearch serve did not start")

    def get(self, path: str) -> dict:
        with urllib.request.urlopen(urllib.request.Request(self.url + path, headers=self.headers), timeout=5) as answer:
            return json.loads(answer.read())

    def post(self, path: str, body: dict) -> dict:
        request = urllib.request.Request(self.url + path, json.dumps(body).encode(),
                                         {"Content-Type": "application/json", **self.headers})
        with urllib.request.urlopen(request, timeout=60) as answer:
            return json.loads(answer.read())

    def detect(self, body: dict) -> dict:
        """POST /detect and its job's places, once it is done."""
        job_id = self.post("/detect", body)["job_id"]
        deadline = time.monotonic() + 60
        while self.get(f"/jobs/{job_id}")["state"] in ("queued", "running") and time.monotonic() < deadline:
            time.sleep(0.1)
        return self.get(f"/jobs/{job_id}/result")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


@pytest.fixture(scope="session", autouse=True)
def no_task_left_running():
    """QGIS cannot quit while a task runs: its task manager waits for every one, and so would these tests' exit."""
    yield
    manager = QgsApplication.taskManager()
    process_events_until(lambda: not manager.countActiveTasks(), timeout=60)
    running = [task.description() for task in manager.activeTasks()]
    assert not running, f"tasks still running a minute after the last test: {running}"


def pytest_unconfigure(config):
    """After a stuck task has been reported, leave at once: QGIS's exit would wait for it forever."""
    if QgsApplication.taskManager().countActiveTasks():
        sys.stderr.write("a QGIS task is stuck (reported above); exiting without waiting for it\n")
        sys.stderr.flush()
        os._exit(1)


def serve(scenes: list[Path], store: Path, token: str = "") -> Server:
    """`geosearch serve` over a store of `scenes`, indexed first."""
    executable = os.environ.get("GEOSEARCH_EXE", str(REPO / ".venv" / "bin" / "geosearch"))
    if not Path(executable).exists():
        pytest.fail(f"{executable}: no geosearch to serve with; run `make test`, or set GEOSEARCH_EXE")
    indexed = subprocess.run([executable, "index", *map(str, scenes), "--store", str(store), "-q"],
                             capture_output=True, text=True)
    assert indexed.returncode == 0, indexed.stderr
    return Server(executable, store, token)


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    running = serve(SCENES, tmp_path_factory.mktemp("plugin") / "store")
    yield running
    running.stop()


class RequestGate:
    """An HTTP proxy in front of the real server that holds each request whose path holds one of `hold` until the
    test lets it through, and counts them: received, held now (and the most at once), dropped by the client while
    held. Each let through goes to the server, or is answered 502 while `fail_next` > 0; every other request passes
    at once."""

    def __init__(self, upstream: str, hold: tuple[str, ...] = ("/thumbnail.png",)):
        self.upstream = upstream
        self.hold = hold
        self.passes = threading.Semaphore(0)
        self.closing = threading.Event()
        self.lock = threading.Lock()
        self.received = self.held = self.most_held = self.dropped = self.fail_next = 0
        self.failed: list[str] = []  # the paths answered 502
        gate = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as QGIS's network manager expects

            def do_GET(self) -> None:
                gate.forward(self)

            do_POST = do_GET

            def log_message(self, *args) -> None:
                pass

        self.proxy = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.proxy.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.proxy.server_address[1]}"
        threading.Thread(target=self.proxy.serve_forever, daemon=True).start()

    def let_through(self, count: int = 1 << 20) -> None:
        self.passes.release(count)

    def close(self) -> None:
        """Stop; the requests still held are dropped, not sent to a server that may be gone."""
        self.closing.set()
        self.proxy.shutdown()
        self.proxy.server_close()

    def forward(self, handler: BaseHTTPRequestHandler) -> None:
        body = handler.rfile.read(int(handler.headers.get("Content-Length", 0)))
        held = any(part in handler.path for part in self.hold)
        if held and not self._wait_for_pass(handler.connection):
            handler.close_connection = True
            return
        with self.lock:
            fail = held and self.fail_next > 0
            if fail:
                self.fail_next -= 1
                self.failed.append(handler.path)
        if fail:
            status, kind, content = 502, "application/json", b'{"error": "the gate failed it"}'
        else:
            status, kind, content = self._ask_upstream(handler, body)
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", kind)
            handler.send_header("Content-Length", str(len(content)))
            handler.end_headers()
            handler.wfile.write(content)
        except OSError:  # the client is gone
            handler.close_connection = True

    def _ask_upstream(self, handler: BaseHTTPRequestHandler, body: bytes) -> tuple[int, str, bytes]:
        headers = {name: handler.headers[name] for name in ("Content-Type", "Authorization") if handler.headers[name]}
        request = urllib.request.Request(self.upstream + handler.path, body or None, headers, method=handler.command)
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:
                return answer.status, answer.headers["Content-Type"], answer.read()
        except urllib.error.HTTPError as error:
            return error.code, error.headers["Content-Type"], error.read()

    def _wait_for_pass(self, connection: socket.socket) -> bool:
        """Whether the request was let through; False when its client closed the connection first."""
        with self.lock:
            self.received += 1
            self.held += 1
            self.most_held = max(self.most_held, self.held)
        try:
            while not self.passes.acquire(timeout=0.02):
                if self.closing.is_set() or closed(connection):
                    with self.lock:
                        self.dropped += 1
                    return False
            return True
        finally:
            with self.lock:
                self.held -= 1


def closed(connection: socket.socket) -> bool:
    """Whether the other end has closed `connection` (it is readable, with nothing to read)."""
    try:
        return bool(select.select([connection], [], [], 0)[0]) and not connection.recv(1, socket.MSG_PEEK)
    except OSError:
        return True


@pytest.fixture
def gate(server):
    thumbnails = RequestGate(server.url)
    yield thumbnails
    thumbnails.close()


def process_events_until(done: Callable[[], bool], timeout: float) -> bool:
    """Run this (the interface) thread's events until `done()`, for at most `timeout` seconds; whether it came."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            return False
        QCoreApplication.processEvents()
        time.sleep(0.01)
    QCoreApplication.processEvents()
    return True


def wait_for(plugin, timeout: float = 120) -> None:
    """Let the plugin's tasks run and report on this (the interface) thread, and the thumbnails it asks for come."""
    def done() -> bool:
        return not plugin.tasks and not any(pictures and pictures.busy()
                                            for pictures in (plugin.thumbnails, plugin.step_thumbnails))

    assert process_events_until(done, timeout), "the plugin's tasks or thumbnails did not finish"
