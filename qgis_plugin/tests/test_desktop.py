"""The plugin as a user meets it: the real QGIS desktop application under Xvfb, the plugin installed from the zip that
`make plugin` builds into a fresh profile, a project in UTM, and every action an X event (xdotool): the toolbar
button, a drag on the map, a cancel from QGIS's task bar, the export dialog typed into, the settings dialog, Quit.
desktop_driver.py, run inside QGIS, only reports what is on the screen.

The tests run in order, one desktop for all. The picture of the whole window that the README shows is taken here:
GEOSEARCH_SCREENSHOT=docs/img/qgis_desktop.jpg make test-plugin (a path from the repository's root)."""

import json
import os
import re
import shutil
import subprocess
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from qgis.core import QgsCoordinateReferenceSystem, QgsProject, QgsRasterLayer, QgsRectangle, QgsVectorLayer
from qgis.PyQt.QtGui import QImage

from conftest import REPO, SCENES, RequestGate, serve

SCREEN = (1440, 900)
K = 8
UTM21S = "EPSG:32621"
LANDSAT8 = [scene for scene in SCENES if scene.name.startswith("landsat8_")]  # UTM 21S
TOOLS = {"qgis": "qgis", "Xvfb": "xvfb", "xdotool": "xdotool"}  # program: its Debian package


def missing_tools() -> list[str]:
    return [package for program, package in TOOLS.items() if shutil.which(program) is None]


if missing_tools():
    reason = f"the QGIS desktop test needs: apt-get install {' '.join(missing_tools())}"
    if os.environ.get("REQUIRE_QGIS"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason, allow_module_level=True)


class Desktop:
    """QGIS on its own X display, seen through the driver's reports and worked through X events."""

    def __init__(self, root: Path, project: Path, extent: list[float], url: str):
        self.root = root
        self.state_file, self.command_file = root / "state.json", root / "command.json"
        self.commands = 0
        read, write = os.pipe()
        self.xvfb = subprocess.Popen(["Xvfb", "-displayfd", str(write), "-screen", "0", f"{SCREEN[0]}x{SCREEN[1]}x24",
                                      "-nolisten", "tcp"], pass_fds=(write,), stderr=subprocess.DEVNULL)
        os.close(write)
        with os.fdopen(read) as display:
            self.display = f":{display.readline().strip()}"
        self.env = {**os.environ, "DISPLAY": self.display, "QT_QPA_PLATFORM": "xcb", "HOME": str(root / "home"),
                    "GEOSEARCH_DESKTOP_STATE": str(self.state_file),
                    "GEOSEARCH_DESKTOP_COMMAND": str(self.command_file)}
        (root / "home").mkdir()
        with open(root / "qgis.log", "w") as log:
            self.qgis = subprocess.Popen(
                ["qgis", "--profiles-path", str(root / "profiles"), "--nologo", "--noversioncheck",
                 "--code", str(Path(__file__).with_name("desktop_driver.py")),
                 "--extent", ",".join(map(str, extent)), "--project", str(project)],
                env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.url = url

    def state(self) -> dict:
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}

    def wait(self, what: str, done: Callable[[dict], object], timeout: float = 60) -> dict:
        """The driver's report once `done` holds for it; fails saying `what` was awaited, and what was seen."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen = self.state()
            if seen and done(seen):
                return seen
            if self.qgis.poll() is not None:
                break
            time.sleep(0.1)
        pytest.fail(f"waited for {what}; QGIS showed: {json.dumps(self.state())[:4000]}\n"
                    f"its log ends: {(self.root / 'qgis.log').read_text()[-2000:]}")

    def xdotool(self, *args: object) -> None:
        subprocess.run(["xdotool", *map(str, args)], env=self.env, check=True)

    def click(self, rect: list) -> None:
        x, y, width, height = rect
        self.xdotool("mousemove", x + width // 2, y + height // 2, "sleep", 0.2, "click", 1)

    def drag(self, start: tuple[int, int], end: tuple[int, int]) -> None:
        """Press, move in steps and release, as a hand does."""
        steps = [(start[0] + (end[0] - start[0]) * i // 5, start[1] + (end[1] - start[1]) * i // 5) for i in (1, 3, 5)]
        moves = [part for x, y in steps for part in ("mousemove", x, y, "sleep", 0.1)]
        self.xdotool("mousemove", *start, "sleep", 0.2, "mousedown", 1, "sleep", 0.1, *moves, "mouseup", 1)

    def drag_on_map(self) -> None:
        """A box over a third of the map, around its centre."""
        x, y, width, height = self.state()["canvas"]
        self.drag((x + width // 3, y + height // 3), (x + 2 * width // 3, y + 2 * height // 3))

    def type_into(self, rect: list, text: str) -> None:
        """Replace the text of the field at `rect` with `text` (keys go where the pointer is: no window manager)."""
        self.click(rect)
        self.xdotool("key", "ctrl+a", "type", "--delay", 10, text)

    def screenshot(self, path: Path) -> QImage:
        self.commands += 1
        self.command_file.write_text(json.dumps({"id": self.commands, "screenshot": str(path)}))
        self.wait("the screenshot", lambda seen: seen["done"] == self.commands, 20)
        return QImage(str(path))

    def close(self) -> None:
        if self.qgis.poll() is None:
            self.qgis.kill()
            self.qgis.wait()
        self.xvfb.terminate()
        self.xvfb.wait()


def install_plugin(profile: Path, url: str) -> None:
    """The zip `make plugin` builds, unzipped where QGIS's plugin manager puts it, and enabled; the server's URL set
    as the settings dialog would."""
    built = subprocess.run(["make", "-s", "plugin"], cwd=REPO, capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    archive = REPO / re.search(r"wrote (\S+\.zip)", built.stdout).group(1)
    plugins = profile / "python" / "plugins"
    plugins.mkdir(parents=True)
    with zipfile.ZipFile(archive) as zipped:
        zipped.extractall(plugins)
    (profile / "QGIS").mkdir()
    (profile / "QGIS" / "QGIS3.ini").write_text(
        f"[PythonPlugins]\ngeosearch_qgis=true\n\n[geosearch]\nurl={url}\nk={K}\n\n[qgis]\ncheckVersion=false\n")


def utm_project(folder: Path) -> tuple[Path, list[float]]:
    """A project in UTM 21S over the shipped Landsat 8 crops, and their extent. (Not over copies in a temporary
    folder: QGIS would ask on closing about layers there, as it does about memory layers.)"""
    project = QgsProject()
    project.setCrs(QgsCoordinateReferenceSystem(UTM21S))
    extent = QgsRectangle()
    for scene in LANDSAT8:
        layer = QgsRasterLayer(str(scene), scene.stem)
        assert layer.isValid(), scene
        layer.renderer().setRedBand(3)  # the crops' bands are blue, green, red: shown in true colour
        layer.renderer().setBlueBand(1)
        layer.setDefaultContrastEnhancement()
        project.addMapLayer(layer)
        extent.combineExtentWith(layer.extent())
    path = folder / "utm.qgs"
    assert project.write(str(path))
    project.clear()
    return path, [extent.xMinimum(), extent.yMinimum(), extent.xMaximum(), extent.yMaximum()]


@pytest.fixture(scope="module")
def desktop(tmp_path_factory):
    root = tmp_path_factory.mktemp("desktop")
    server = serve(LANDSAT8, root / "store")
    gate = RequestGate(server.url, hold=())
    install_plugin(root / "profiles" / "profiles" / "default", gate.url)
    project, extent = utm_project(root)
    running = Desktop(root, project, extent, gate.url)
    running.server, running.gate = server, gate
    running.wait("QGIS with the plugin and the project",
                 lambda seen: seen["plugin"] and seen["find_button"] and seen["crs"] == UTM21S
                 and len(seen["layers"]) == len(LANDSAT8) and seen["window"][2:] == list(SCREEN), 180)
    yield running
    running.close()
    gate.close()
    if server.process.poll() is None:
        server.stop()


def matches_shown(seen: dict) -> bool:
    dock = seen["dock"]
    return len(dock["rows"]) == K and dock["pictures"] == K and seen["layers"].get("geosearch matches") == K


def test_drag_cancel_search_and_export(desktop, tmp_path):
    desktop.click(desktop.state()["find_button"])
    desktop.wait("the map tool armed, the dock open and the server's model in it",
                 lambda seen: seen["map_tool"] == "ExtentTool" and seen["dock"]["visible"]
                 and "model" in seen["dock"]["server"])

    # A search held at the gate: the box stays on the map while it runs, and a cancel from QGIS's task bar ends it.
    desktop.gate.hold = ("/search",)
    desktop.drag_on_map()
    desktop.wait("the search under way, with its box on the map",
                 lambda seen: desktop.gate.held == 1 and "geosearch query" in seen["layers"]
                 and seen["dock"]["message"] == "searching…" and seen["tasks"])
    desktop.click(desktop.state()["task_bar"])
    desktop.click(desktop.wait("the task's cancel button", lambda seen: seen["task_cancel"])["task_cancel"])
    seen = desktop.wait("the cancel said in the dock",
                        lambda seen: seen["dock"]["message"] == "search cancelled" and not seen["tasks"])
    assert "geosearch matches" not in seen["layers"]
    assert desktop.gate.dropped == 1  # the request was aborted, not left to finish
    if seen["task_cancel"]:  # the task bar's list stays open: close it as a user would
        desktop.click(seen["task_bar"])

    desktop.gate.hold = ()
    desktop.drag_on_map()
    seen = desktop.wait("the matches as a layer and as rows with their pictures", matches_shown)
    dock = seen["dock"]
    assert dock["message"].startswith(f"{K} match(es) from ") and not seen["message_bar"]
    assert dock["columns_fit"]  # every column in view, no horizontal scroll bar
    assert all(re.fullmatch(r"\d{4}-\d{2}-\d{2}", row[3]) for row in dock["rows"]), dock["rows"]  # a day, not a time

    picture = desktop.screenshot(tmp_path / "desktop.jpg")
    assert (picture.width(), picture.height()) == SCREEN
    if os.environ.get("GEOSEARCH_SCREENSHOT"):
        shutil.copy(tmp_path / "desktop.jpg", REPO / os.environ["GEOSEARCH_SCREENSHOT"])

    # Export through the file dialog, typed into; the next export opens where the last one went.
    desktop.click(dock["buttons"]["Export…"])
    dialog = desktop.wait("the export dialog", lambda seen: seen["dialog"].get("class") == "QFileDialog")["dialog"]
    assert dialog["directory"] == str(desktop.root / "home")  # the home folder at first, not QGIS's working folder
    exported = desktop.root / "exports" / "kept.geojson"
    exported.parent.mkdir()
    x, y, width, height = dialog["rect"]
    desktop.xdotool("mousemove", x + width // 2, y + height // 2, "key", "ctrl+a", "type", "--delay", 10,
                    str(exported))
    desktop.xdotool("key", "Return")
    desktop.wait("the export written", lambda seen: not seen["dialog"] and seen["dock"]["message"].startswith("wrote"))
    assert QgsVectorLayer(str(exported), "exported", "ogr").featureCount() == K
    desktop.click(dock["buttons"]["Export…"])
    dialog = desktop.wait("the export dialog again",
                          lambda seen: seen["dialog"].get("class") == "QFileDialog")["dialog"]
    assert dialog["directory"] == str(exported.parent)
    desktop.xdotool("key", "Escape")
    desktop.wait("the dialog closed", lambda seen: not seen["dialog"])


def test_a_server_stopped_while_qgis_runs(desktop):
    """The settings dialog pointed straight at the server; the server stopped; a drag says so in the dock only."""
    desktop.click(desktop.state()["dock"]["buttons"]["Settings…"])
    dialog = desktop.wait("the settings dialog", lambda seen: seen["dialog"].get("title") == "geosearch settings")
    desktop.xdotool("key", "ctrl+a", "type", "--delay", 10, desktop.server.url)  # the URL field has the focus
    desktop.click(dialog["dialog"]["buttons"]["OK"])
    desktop.wait("the server's model, asked directly",
                 lambda seen: not seen["dialog"] and seen["dock"]["server"].startswith(desktop.server.url))

    desktop.server.stop()
    desktop.drag_on_map()
    seen = desktop.wait("the server's absence said", lambda seen: "cannot reach" in seen["dock"]["message"])
    assert desktop.server.url in seen["dock"]["message"] and "geosearch serve" in seen["dock"]["message"]
    assert not seen["message_bar"]  # one place for an error: the dock is open
    assert seen["layers"].get("geosearch matches") == K  # the last matches stay


def test_quitting_asks_only_about_the_project(desktop):
    """QGIS asks whether to save the project it was given (the results changed it), and nothing about the plugin's
    temporary layers."""
    x, y, width, height = desktop.state()["canvas"]
    desktop.xdotool("mousemove", x + width // 2, y + height // 2, "key", "ctrl+q")
    asked = desktop.wait("QGIS asking to save the project",
                         lambda seen: seen["dialog"].get("class") == "QMessageBox")["dialog"]
    assert asked["title"] == "Save Project", f"QGIS asked first: {asked['text']}"
    desktop.click(asked["buttons"]["Discard"])
    dialogs = []  # any other question until QGIS is gone (the one answered may still be in the last report)
    deadline = time.monotonic() + 60
    while desktop.qgis.poll() is None and time.monotonic() < deadline:
        dialog = desktop.state().get("dialog")
        if dialog and dialog != asked and dialog not in dialogs:
            dialogs.append(dialog)
        time.sleep(0.1)
    assert desktop.qgis.poll() == 0, f"QGIS did not quit; it showed {dialogs}"
    assert not dialogs, f"QGIS asked more on quitting: {dialogs}"
    changed = subprocess.run(["git", "status", "--porcelain", "--", *map(str, LANDSAT8)], cwd=REPO,
                             capture_output=True, text=True).stdout
    assert not changed, changed  # the .aux.xml QGIS wrote beside the scenes it opened leaves the checkout clean
