"""Real QGIS (headless) and a real `geosearch serve` over the shipped scenes, started once for the session.

The server runs from the project's own environment (GEOSEARCH_EXE, default .venv/bin/geosearch); these tests run in
Debian's python3, where QGIS lives, and import nothing of geosearch but the plugin."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
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
    def __init__(self, executable: str, store: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen([executable, "serve", "--store", str(store), "--port", str(self.port)],
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
        with urllib.request.urlopen(self.url + path, timeout=5) as answer:
            return json.loads(answer.read())

    def post(self, path: str, body: dict) -> dict:
        request = urllib.request.Request(self.url + path, json.dumps(body).encode(),
                                         {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as answer:
            return json.loads(answer.read())

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


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    executable = os.environ.get("GEOSEARCH_EXE", str(REPO / ".venv" / "bin" / "geosearch"))
    if not Path(executable).exists():
        pytest.fail(f"{executable}: no geosearch to serve with; run `make test`, or set GEOSEARCH_EXE")
    store = tmp_path_factory.mktemp("plugin") / "store"
    indexed = subprocess.run([executable, "index", *map(str, SCENES), "--store", str(store), "-q"],
                             capture_output=True, text=True)
    assert indexed.returncode == 0, indexed.stderr
    running = Server(executable, store)
    yield running
    running.stop()


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
    """Let the plugin's tasks run and report on this (the interface) thread."""
    assert process_events_until(lambda: not plugin.tasks, timeout), "the plugin's tasks did not finish"
