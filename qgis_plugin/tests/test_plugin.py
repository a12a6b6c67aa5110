"""The plugin in real QGIS against a real server: it loads through classFactory, a drag on a project in a projected
CRS sends that box and CRS, the matches become layers and dock rows whose thumbnails come after, Processing gives the
same features, export writes GeoJSON, matches marked in the dock go with "Search again" as the server's examples, and a
server that is down gives a message, not a crash."""

import configparser
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import zipfile
from pathlib import Path

import pytest
from qgis.core import (
    QgsApplication,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsDataProvider,
    QgsFeature,
    QgsGeometry,
    QgsNetworkAccessManager,
    QgsPointXY,
    QgsProcessingException,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsSettings,
    QgsVectorLayer,
)
from qgis.gui import QgsMapCanvas, QgsMapMouseEvent
from qgis.PyQt.QtCore import QCoreApplication, QEvent, QPoint, Qt
from qgis.PyQt.QtGui import QColor, QImage
from qgis.PyQt.QtWidgets import QFileDialog
from qgis.testing.mocked import get_iface

import geosearch_qgis
from conftest import REPO, SCENES, free_port, process_events_until, wait_for
from geosearch_qgis.client import Client, ServiceError
from geosearch_qgis.dock import SettingsDialog
from geosearch_qgis.layers import MATCH_FIELDS, MATCHES, PLACES, QUERY, export_layer
from geosearch_qgis.layers import SCENES as SCENES_LAYER
from geosearch_qgis.settings import Settings
from geosearch_qgis.tasks import THUMBNAILS_AT_ONCE

UTM21S = QgsCoordinateReferenceSystem("EPSG:32621")  # the Landsat 8 crops' CRS
LANDSATS = QgsRectangle(703035, -2808465, 755745, -2776995)
DEMO_BOX = QgsRectangle(-54.8315, -25.2208, -54.7783, -25.1723)  # lon/lat, `geosearch demo`'s box
K = 8


def load_plugin(url: str):
    """The plugin loaded in a fresh project in UTM 21S, searching `url` for K matches."""
    iface = get_iface()
    QgsProject.instance().clear()
    QgsProject.instance().setCrs(UTM21S)
    canvas = iface.mapCanvas()
    canvas.resize(800, 640)
    canvas.setDestinationCrs(UTM21S)
    canvas.setExtent(LANDSATS)
    loaded = geosearch_qgis.classFactory(iface)
    loaded.initGui()
    loaded.settings = Settings(url=url, k=K)
    return loaded


@pytest.fixture
def plugin(server):
    loaded = load_plugin(server.url)
    yield loaded
    loaded.unload()
    QgsProject.instance().clear()


def drag(plugin, box: QgsRectangle, keys=Qt.NoModifier) -> tuple:
    """Press, move and release the left button over `box` (in the canvas CRS), as a user's drag, with `keys` held;
    returns the two corners in pixels."""
    canvas = plugin.canvas
    to_pixels = canvas.getCoordinateTransform()
    start = to_pixels.transform(QgsPointXY(box.xMinimum(), box.yMaximum()))
    end = to_pixels.transform(QgsPointXY(box.xMaximum(), box.yMinimum()))
    start, end = QPoint(round(start.x()), round(start.y())), QPoint(round(end.x()), round(end.y()))
    plugin.find_action.trigger()
    assert canvas.mapTool() is plugin.tool
    plugin.tool.canvasPressEvent(QgsMapMouseEvent(canvas, QEvent.MouseButtonPress, start, Qt.LeftButton,
                                                  Qt.LeftButton, keys))
    plugin.tool.canvasMoveEvent(QgsMapMouseEvent(canvas, QEvent.MouseMove, end, Qt.NoButton, Qt.LeftButton, keys))
    plugin.tool.canvasReleaseEvent(QgsMapMouseEvent(canvas, QEvent.MouseButtonRelease, end, Qt.LeftButton,
                                                    Qt.NoButton, keys))
    return start, end


def demo_box_utm() -> QgsRectangle:
    to_utm = QgsCoordinateTransform(QgsCoordinateReferenceSystem("EPSG:4326"), UTM21S, QgsProject.instance())
    return to_utm.transformBoundingBox(DEMO_BOX)


def search_by_drag(plugin) -> QgsVectorLayer:
    drag(plugin, demo_box_utm())
    wait_for(plugin)
    layers = QgsProject.instance().mapLayersByName(MATCHES)
    assert len(layers) == 1, plugin.dock.message.text()
    return layers[0]


def test_metadata_and_class_factory():
    metadata = configparser.ConfigParser()
    metadata.read(REPO / "qgis_plugin" / "geosearch_qgis" / "metadata.txt")
    general = metadata["general"]
    assert general["qgisMinimumVersion"] == "3.22" and general["hasProcessingProvider"] == "yes"
    assert (REPO / "qgis_plugin" / "geosearch_qgis" / general["icon"]).is_file()
    iface = get_iface()
    plugin = geosearch_qgis.classFactory(iface)
    plugin.initGui()
    iface.addToolBarIcon.assert_called_with(plugin.find_action)
    assert plugin.find_action.text() == "Find similar patches"
    from qgis.core import QgsApplication

    assert QgsApplication.processingRegistry().algorithmById("geosearch:findsimilarpatches") is not None
    plugin.unload()
    assert QgsApplication.processingRegistry().algorithmById("geosearch:findsimilarpatches") is None
    iface.removeToolBarIcon.assert_called_with(plugin.find_action)


def test_the_zip_installs_and_loads(tmp_path):
    """`make plugin`'s zip, unpacked as the plugin manager does, loads in a QGIS of its own (no repo on the path)."""
    built = subprocess.run(["make", "-s", "plugin"], cwd=REPO, capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    metadata = configparser.ConfigParser()
    metadata.read(REPO / "qgis_plugin" / "geosearch_qgis" / "metadata.txt")
    with zipfile.ZipFile(REPO / "dist" / f"geosearch_qgis-{metadata['general']['version']}.zip") as plugin_zip:
        names = plugin_zip.namelist()
        plugin_zip.extractall(tmp_path)
    assert "geosearch_qgis/metadata.txt" in names and not [n for n in names if "__pycache__" in n or "tests" in n]
    script = ("import sys; sys.path.insert(0, sys.argv[1]); from qgis.testing import start_app; start_app(); "
              "from qgis.testing.mocked import get_iface; import geosearch_qgis; "
              "plugin = geosearch_qgis.classFactory(get_iface()); plugin.initGui(); plugin.unload(); "
              "print(geosearch_qgis.__file__)")
    loaded = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True,
                            cwd=tmp_path, env=os.environ | {"QT_QPA_PLATFORM": "offscreen"})
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.strip().endswith(str(tmp_path / "geosearch_qgis" / "__init__.py"))


def test_plugin_imports_no_torch_or_geosearch():
    assert not {"torch", "geosearch"} & set(sys.modules)


def test_drag_sends_the_box_in_the_project_crs(plugin):
    sent = []
    search_body = plugin.settings.search_body
    plugin.settings.search_body = lambda box, crs, k=None, examples=(): (sent.append(search_body(box, crs, k, examples))
                                                                          or sent[-1])
    start, end = drag(plugin, demo_box_utm())
    wait_for(plugin)

    (body,) = sent
    to_map = plugin.canvas.getCoordinateTransform()
    corners = [to_map.toMapCoordinates(start), to_map.toMapCoordinates(end)]
    expected = [min(p.x() for p in corners), min(p.y() for p in corners),
                max(p.x() for p in corners), max(p.y() for p in corners)]
    assert body["crs"] == "EPSG:32621" and body["k"] == K and body["dedup"] is True
    assert body["bbox"] == pytest.approx(expected)
    assert body["bbox"] == pytest.approx(list(demo_box_utm().toRectF().getCoords()), abs=2 * to_map.mapUnitsPerPixel())
    matches = QgsProject.instance().mapLayersByName(MATCHES)[0]
    query = json.loads(next(matches.getFeatures())["query"])
    assert query["type"] == "bbox" and query["crs"] == "EPSG:32621"  # what the server understood
    assert query["bbox"] == pytest.approx(body["bbox"])


def test_matches_become_a_layer_and_dock_rows(plugin, server):
    layer = search_by_drag(plugin)
    assert layer.featureCount() == K and layer.crs().authid() == "EPSG:4326"
    assert [f.name() for f in layer.fields()] == [name for name, _ in MATCH_FIELDS]
    features = sorted(layer.getFeatures(), key=lambda f: f["rank"])
    assert [f["rank"] for f in features] == list(range(1, K + 1))
    assert all(a["score"] >= b["score"] for a, b in zip(features, features[1:]))
    assert all(f.geometry().isGeosValid() and f["tile_id"] for f in features)
    assert layer.renderer().type() == "graduatedSymbol" and layer.labelsEnabled()
    (query,) = QgsProject.instance().mapLayersByName(QUERY)
    assert query.crs() == UTM21S and query.extent().contains(demo_box_utm().center())
    # Closing QGIS does not ask about them (its check of temporary layers skips them).
    assert layer.customProperty("skipMemoryLayersCheck") == query.customProperty("skipMemoryLayersCheck") == 1

    # The server's own answer to the box the drag drew (the demo's box, to the canvas's pixels) is the same matches.
    drawn = json.loads(features[0]["query"])
    body = {"bbox": drawn["bbox"], "crs": drawn["crs"], "k": K}
    direct = server.post("/search", body)["features"]
    assert [f["properties"]["tile_id"] for f in direct] == [f["tile_id"] for f in features]

    table = plugin.dock.table
    assert table.rowCount() == K
    assert [table.item(row, 1).text() for row in range(K)] == [str(r) for r in range(1, K + 1)]
    assert sum(not table.item(row, 0).icon().isNull() for row in range(K)) == K  # every thumbnail came
    assert table.item(0, 3).text() == Path(features[0]["scene_path"]).name
    # The layer keeps the server's text; the dock shows the day.
    assert [f["acquired"] for f in features] == [f["properties"]["acquired"] for f in direct]
    assert features[0]["acquired"] == "2020-05-18T00:00:00+00:00" and table.item(0, 4).text() == "2020-05-18"

    # A second search replaces the first one's layers.
    search_by_drag(plugin)
    assert len(QgsProject.instance().mapLayersByName(MATCHES)) == 1
    assert len(QgsProject.instance().mapLayersByName(QUERY)) == 1


def test_a_result_made_permanent_stays(plugin, tmp_path):
    """The layer's "Make Permanent…" (QGIS writes the memory layer to a file and points the layer at it) makes the
    matches the user's: later searches add theirs beside it."""
    layer = search_by_drag(plugin)
    kept = str(tmp_path / "kept.gpkg")
    assert export_layer(layer, kept)[0]
    layer.setDataSource(kept, layer.name(), "ogr", QgsDataProvider.ProviderOptions())
    for _ in range(2):
        drag(plugin, demo_box_utm())
        wait_for(plugin)
    found = QgsProject.instance().mapLayersByName(MATCHES)
    assert sorted(found_layer.providerType() for found_layer in found) == ["memory", "ogr"]
    assert layer in found and layer.featureCount() == K


def rows_with_pictures(plugin) -> int:
    table = plugin.dock.table
    return sum(not table.item(row, 0).icon().isNull() for row in range(table.rowCount()))


def search_held(plugin, gate) -> None:
    """Drag the demo's box through `gate`, and return once the search has reported and the first thumbnail
    requests wait at the gate."""
    plugin.settings.url = gate.url
    drag(plugin, demo_box_utm())
    assert process_events_until(lambda: not plugin.tasks, 60), "the search did not report while its pictures waited"
    assert process_events_until(lambda: gate.held == THUMBNAILS_AT_ONCE, 10), gate.held


def run_events(seconds: float) -> None:
    """Give any late answer the time to land."""
    process_events_until(lambda: False, seconds)


def test_rows_and_layers_come_before_the_thumbnails(plugin, gate):
    search_held(plugin, gate)
    (layer,) = QgsProject.instance().mapLayersByName(MATCHES)
    assert layer.featureCount() == K and len(QgsProject.instance().mapLayersByName(QUERY)) == 1
    assert plugin.dock.table.rowCount() == K and rows_with_pictures(plugin) == 0
    assert plugin.dock.message.text() == f"{K} match(es) from {gate.url}"  # no longer "searching…"
    run_events(0.3)
    assert gate.received == THUMBNAILS_AT_ONCE  # a few at once; the others wait their turn in the plugin

    # Each thumbnail let through fills its row, and the next request takes its place at once.
    for shown in range(1, K + 1):
        gate.let_through(1)
        assert process_events_until(lambda shown=shown: rows_with_pictures(plugin) == shown, 10), shown
        waiting = min(THUMBNAILS_AT_ONCE, K - shown)
        assert process_events_until(lambda waiting=waiting: gate.held == waiting, 10), (shown, gate.held)
    assert not plugin.thumbnails.busy() and gate.received == K and gate.most_held == THUMBNAILS_AT_ONCE


def test_a_new_search_drops_the_last_ones_thumbnails(plugin, gate):
    shown = []
    show = plugin.dock.show_thumbnail
    plugin.dock.show_thumbnail = lambda tile_id, png: shown.append(tile_id) or show(tile_id, png)
    search_held(plugin, gate)
    first_rows = [plugin.dock.table.item(row, 0) for row in range(K)]
    drag(plugin, demo_box_utm())  # the same box again: the same tiles, so a late picture of the first would fit
    assert process_events_until(lambda: not plugin.tasks, 60)
    assert plugin.dock.table.item(0, 0) not in first_rows  # the second search's rows
    process_events_until(lambda: gate.dropped == THUMBNAILS_AT_ONCE, 5)  # so that no aborted request takes a pass
    gate.let_through()
    wait_for(plugin)
    run_events(0.3)
    assert len(shown) == K and rows_with_pictures(plugin) == K  # the second search's pictures, and only those
    assert gate.dropped == THUMBNAILS_AT_ONCE and gate.received == THUMBNAILS_AT_ONCE + K


def assert_none_fetching(gate, thumbnails) -> None:
    """The thumbnail requests under way were aborted, and none is sent after, even once the gate opens."""
    assert not thumbnails.busy()
    assert process_events_until(lambda: gate.dropped == THUMBNAILS_AT_ONCE and gate.held == 0, 10), gate.dropped
    gate.let_through()
    run_events(0.5)
    assert gate.received == THUMBNAILS_AT_ONCE


def test_closing_the_dock_stops_its_thumbnails(plugin, gate):
    search_held(plugin, gate)
    plugin.dock.close()
    assert_none_fetching(gate, plugin.thumbnails)
    assert rows_with_pictures(plugin) == 0


def test_unloading_stops_the_thumbnails(gate):
    plugin = load_plugin(gate.url)
    search_held(plugin, gate)
    plugin.unload()
    assert_none_fetching(gate, plugin.thumbnails)
    QgsProject.instance().clear()


def test_a_thumbnail_that_fails_leaves_its_row_without_a_picture(plugin, gate):
    plugin.settings.url = gate.url
    gate.fail_next = 1
    gate.let_through()
    layer = search_by_drag(plugin)
    table = plugin.dock.table
    (bare,) = [row for row in range(K) if table.item(row, 0).icon().isNull()]
    (failed,) = gate.failed
    assert failed.startswith(f"/tiles/{layer.getFeature(table.item(bare, 0).data(Qt.UserRole))['tile_id']}/")
    assert plugin.dock.message.text() == f"{K} match(es) from {gate.url}"  # no error for a missing picture


def test_a_cancelled_search_says_so_and_a_replaced_one_does_not(plugin):
    """Cancelled from QGIS's task manager, a search ends with "search cancelled", not "searching…" for good; a
    search cancelled because a newer one started leaves the message to the newer one. The box is on the map from
    the drag on, while the search runs."""
    search_by_drag(plugin)
    first = demo_box_utm()
    beside = QgsRectangle(first.xMaximum(), first.yMinimum(), first.xMaximum() + first.width(), first.yMaximum())
    drag(plugin, beside)
    assert plugin.searching is not None and plugin.dock.message.text() == "searching…"
    (query,) = QgsProject.instance().mapLayersByName(QUERY)
    assert query.extent().contains(beside.center()) and not query.extent().contains(first.center())
    plugin.searching.cancel()
    wait_for(plugin)
    assert plugin.searching is None and plugin.dock.message.text() == "search cancelled"
    drag(plugin, demo_box_utm())
    drag(plugin, demo_box_utm())  # cancels the first of the two
    wait_for(plugin)
    assert plugin.dock.message.text() == f"{K} match(es) from {plugin.settings.url}"


def test_every_column_fits_a_narrow_dock(plugin):
    """Made as narrow as it goes, every column is in view: the scene's name is shortened in the middle, with room
    for a useful part of it; the picture, rank, score and date are whole."""
    search_by_drag(plugin)
    dock, table = plugin.dock, plugin.dock.table
    dock.setFloating(True)
    dock.resize(300, 700)
    dock.show()
    process_events_until(lambda: False, 0.5)  # laid out
    header = table.horizontalHeader()
    assert dock.width() <= 450 and header.length() <= table.viewport().width()
    metrics = table.fontMetrics()
    for column in (2, 4):
        assert header.sectionSize(column) >= max(metrics.horizontalAdvance(table.item(row, column).text())
                                                 for row in range(table.rowCount()))
    assert header.sectionSize(0) >= table.iconSize().width() and header.sectionSize(3) >= 120


def test_clicking_a_match_zooms_to_it(plugin):
    layer = search_by_drag(plugin)
    plugin.dock.table.cellClicked.emit(K - 1, 2)
    feature = next(f for f in layer.getFeatures() if f["rank"] == K)
    to_canvas = QgsCoordinateTransform(layer.crs(), UTM21S, QgsProject.instance())
    footprint = to_canvas.transformBoundingBox(feature.geometry().boundingBox())
    extent = plugin.canvas.extent()
    assert extent.contains(footprint)  # and fits it closely in one direction, whatever the canvas's shape:
    assert min(extent.width() / footprint.width(), extent.height() / footprint.height()) < 1.5


def mark_rank(plugin, rank: int, positive: bool) -> str:
    """Select the row of the match of `rank` and mark it with the dock's button; its tile id, read from the layer."""
    plugin.dock.table.selectRow(rank - 1)
    (plugin.dock.more_button if positive else plugin.dock.fewer_button).click()
    return next(f["tile_id"] for f in plugin.matches.getFeatures() if f["rank"] == rank)


def example_lines(plugin) -> list:
    examples = plugin.dock.examples
    return [examples.item(row).text() for row in range(examples.count())]


def row_tile_ids(plugin) -> list:
    """The tile ids of the dock's rows, top to bottom."""
    table = plugin.dock.table
    return [plugin.matches.getFeature(table.item(row, 0).data(Qt.UserRole))["tile_id"]
            for row in range(table.rowCount())]


def test_search_again_sends_the_marked_matches(plugin, server):
    plugin.dock.show()  # its button is clicked in it
    plugin.dock.again_button.click()
    assert "drag a box on the map first" in plugin.dock.message.text() and plugin.searching is None
    layer = search_by_drag(plugin)
    drawn = json.loads(next(layer.getFeatures())["query"])
    first_rows = row_tile_ids(plugin)
    scenes = {f["rank"]: Path(f["scene_path"]).name for f in layer.getFeatures()}
    negative = mark_rank(plugin, 2, positive=False)
    positive = mark_rank(plugin, 5, positive=True)
    assert example_lines(plugin) == [f"- rank 2, {scenes[2]}", f"+ rank 5, {scenes[5]}"]

    plugin.dock.again_button.click()
    wait_for(plugin)
    body = {"bbox": drawn["bbox"], "crs": drawn["crs"], "k": K, "dedup": True,
            "positives": [{"tile_id": positive}], "negatives": [{"tile_id": negative}]}
    direct = [f["properties"]["tile_id"] for f in server.post("/search", body)["features"]]
    rows = row_tile_ids(plugin)
    assert rows == direct and rows != first_rows, plugin.dock.message.text()
    assert negative in first_rows and negative not in rows
    assert plugin.dock.message.text() == f"{len(rows)} match(es) from {server.url}"
    assert len(example_lines(plugin)) == 2  # kept for the next search again

    # Removing one, then a new drag (a new query) drops the marks.
    plugin.dock.examples.setCurrentRow(0)
    plugin.dock.remove_button.click()
    assert example_lines(plugin) == [f"+ rank 5, {scenes[5]}"] and [e.key for e in plugin.examples] == [positive]
    search_by_drag(plugin)
    assert example_lines(plugin) == [] and plugin.examples == []


def test_shift_drag_adds_a_box_and_the_layer_actions_mark_matches(plugin, server):
    """A box dragged with Shift after a query is one more positive, not a new search; the matches layer's feature
    actions (its attribute table's and the identify tool's menus) mark as the dock's buttons do."""
    layer = search_by_drag(plugin)
    drawn = json.loads(next(layer.getFeatures())["query"])
    more = demo_box_utm()
    more.grow(-more.width() / 4)
    drag(plugin, more, Qt.ShiftModifier)
    assert plugin.searching is None and len(plugin.examples) == 1 and plugin.examples[0].positive
    sent = plugin.examples[0].request
    assert sent["crs"] == "EPSG:32621" and QgsRectangle(*sent["bbox"]).contains(more.center())
    assert example_lines(plugin) == ["+ box in EPSG:32621"]

    actions = {action.text(): action for action in plugin.layer_actions}
    assert set(actions) == {"geosearch: more like this", "geosearch: not like this"}
    third = next(f for f in layer.getFeatures() if f["rank"] == 3)
    actions["geosearch: not like this"].triggerForFeature(layer, third)
    assert [(e.key, e.positive) for e in plugin.examples][1:] == [(third["tile_id"], False)]

    plugin.dock.again_button.click()
    wait_for(plugin)
    body = {"bbox": drawn["bbox"], "crs": drawn["crs"], "k": K, "dedup": True, "positives": [sent],
            "negatives": [{"tile_id": third["tile_id"]}]}
    assert row_tile_ids(plugin) == [f["properties"]["tile_id"] for f in server.post("/search", body)["features"]]
    drag(plugin, more)  # without Shift: a new query, and the marks go
    wait_for(plugin)
    assert plugin.examples == []


def test_the_query_and_marks_are_saved_with_the_project(plugin, tmp_path):
    drawn = json.loads(next(search_by_drag(plugin).getFeatures())["query"])
    positive = mark_rank(plugin, 2, positive=True)
    negative = mark_rank(plugin, 4, positive=False)
    kept = list(plugin.examples)
    project = QgsProject.instance()
    assert project.write(str(tmp_path / "kept.qgz"))
    project.clear()
    assert plugin.query is None and plugin.examples == [] and example_lines(plugin) == []
    assert project.read(str(tmp_path / "kept.qgz"))
    assert plugin.examples == kept and [e.key for e in kept] == [positive, negative]
    assert example_lines(plugin)[0].startswith("+ rank 2, ")
    box, crs = plugin.query
    assert crs.authid() == drawn["crs"] and [box.xMinimum(), box.yMinimum(), box.xMaximum(), box.yMaximum()] == \
        pytest.approx(drawn["bbox"])


def test_a_32nd_mark_is_refused(plugin, server):
    """The query counts as one of the server's 32 examples: 31 marks are searched, a 32nd is refused."""
    plugin.settings.k, plugin.settings.dedup = 40, False
    search_by_drag(plugin)
    marked = [mark_rank(plugin, rank, positive=rank % 2 == 1) for rank in range(1, 32)]
    assert len(example_lines(plugin)) == 31
    mark_rank(plugin, 32, positive=True)
    assert "at most 31 marks" in plugin.dock.message.text()
    assert [e.key for e in plugin.examples] == marked
    mark_rank(plugin, 2, positive=True)  # marking one again only changes its sign
    assert len(plugin.examples) == 31 and plugin.examples[-1].positive and plugin.examples[-1].key == marked[1]
    plugin.dock.clear_button.click()
    assert example_lines(plugin) == [] and plugin.examples == []

    for rank in range(1, 32):
        mark_rank(plugin, rank, positive=True)
    plugin.dock.again_button.click()  # the server takes the query and 31 marks
    wait_for(plugin)
    assert plugin.dock.message.text().endswith(f"match(es) from {server.url}"), plugin.dock.message.text()


def place_keys(features) -> list:
    return [(f["detection"], f["best_tile_id"], f["tiles"], round(f["area_m2"])) for f in features]


def test_find_all_like_these_adds_the_places_the_server_finds(plugin, server):
    """The last box and the marks go to POST /detect as a background job; its places become a polygon layer."""
    plugin.dock.show()
    plugin.dock.find_all_button.click()
    assert "drag a box on the map first" in plugin.dock.message.text() and plugin.finding is None
    layer = search_by_drag(plugin)
    drawn = json.loads(next(layer.getFeatures())["query"])
    positive, negative = mark_rank(plugin, 2, positive=True), mark_rank(plugin, K, positive=False)
    plugin.dock.find_all_button.click()
    wait_for(plugin)
    (places,) = QgsProject.instance().mapLayersByName(PLACES)
    direct = server.detect({"bbox": drawn["bbox"], "crs": drawn["crs"], "positives": [{"tile_id": positive}],
                            "negatives": [{"tile_id": negative}]})
    assert direct["features"] and place_keys(places.getFeatures()) == place_keys(
        f["properties"] for f in direct["features"])
    tiles = sum(f["properties"]["tiles"] for f in direct["features"])
    assert plugin.dock.message.text() == f"{len(direct['features'])} place(s) of {tiles} tile(s) from {server.url}"
    assert places.crs().authid() == "EPSG:4326" and places.renderer().type() == "graduatedSymbol"

    # Cancelled at once: said so, and the last places stay.
    plugin.dock.find_all_button.click()
    plugin.finding.cancel()
    wait_for(plugin)
    assert plugin.dock.message.text() == "finding places cancelled"
    assert QgsProject.instance().mapLayersByName(PLACES) == [places]


def test_processing_finds_all_places_like_the_example_layers(plugin, server):
    import processing

    matches = search_by_drag(plugin)
    footprints = {f["rank"]: f.geometry() for f in matches.getFeatures()}

    def polygons(*ranks: int) -> QgsVectorLayer:
        layer = QgsVectorLayer("Polygon?crs=EPSG:4326", "examples", "memory")
        for rank in ranks:
            feature = QgsFeature()
            feature.setGeometry(footprints[rank])
            layer.dataProvider().addFeature(feature)
        return layer

    def box(rank: int) -> dict:
        bounds = footprints[rank].boundingBox()
        return {"bbox": [bounds.xMinimum(), bounds.yMinimum(), bounds.xMaximum(), bounds.yMaximum()],
                "crs": "EPSG:4326"}

    Settings(url=plugin.settings.url).save()  # the algorithm reads the saved settings
    result = processing.run("geosearch:findalllikethese", {
        "POSITIVES": polygons(1, 3), "NEGATIVES": polygons(K), "METHOD": 0, "OUTPUT": "memory:"})
    direct = server.detect({"positives": [box(1), box(3)], "negatives": [box(K)], "method": "score"})
    assert direct["features"] and place_keys(result["OUTPUT"].getFeatures()) == place_keys(
        f["properties"] for f in direct["features"])
    with pytest.raises(QgsProcessingException, match="too few to learn a threshold"):
        processing.run("geosearch:findalllikethese", {"POSITIVES": polygons(1), "METHOD": 0, "OUTPUT": "memory:"})


def history_or_none(server, tile_id: str):
    try:
        return server.post("/history", {"tile_id": tile_id})["features"]
    except urllib.error.HTTPError:  # a tile off the archive's lattice (a shifted edge tile) has no place
        return None


def test_other_dates_fill_the_time_strip(plugin, server):
    """A match's place in every scene, oldest first, each with its day, similarity and picture; a match with no
    place (an edge tile off the lattice) says so in the dock."""
    plugin.dock.show()
    search_by_drag(plugin)
    plugin.dock.table.clearSelection()
    plugin.dock.dates_button.click()
    assert plugin.dock.message.text() == "select a match in the table first"
    histories = [history_or_none(server, tile_id) for tile_id in row_tile_ids(plugin)]
    placeless = next((row for row, steps in enumerate(histories) if steps is None), None)
    if placeless is not None:
        plugin.dock.table.selectRow(placeless)
        plugin.dock.dates_button.click()
        wait_for(plugin)
        assert "the query lies on no place of the archive's aligned grid" in plugin.dock.message.text()
    row, steps = next((row, steps) for row, steps in enumerate(histories) if steps is not None)
    plugin.dock.table.selectRow(row)
    plugin.dock.dates_button.click()
    wait_for(plugin)
    strip = plugin.dock.time_strip
    assert strip.isVisible() and strip.count() == len(steps) >= 1, plugin.dock.message.text()
    for row, step in enumerate(steps):
        item = strip.item(row)
        assert item.data(Qt.UserRole) == step["properties"]["tile_id"] and not item.icon().isNull()
        assert item.text() == f"{step['properties']['acquired'][:10]}\n{step['properties']['score']:.3f}"
    assert plugin.dock.message.text() == f"{len(steps)} date(s) of this place"


def test_processing_grades_the_change_between_two_scenes(plugin, server):
    import processing

    a, b = (str(path) for path in SCENES if "224077" in path.name or "224078" in path.name)
    Settings(url=plugin.settings.url).save()  # the algorithm reads the saved settings
    result = processing.run("geosearch:changebetweendates", {"FROM_SCENES": a, "TO_SCENES": b, "TOP": 5,
                                                             "OUTPUT": "memory:"})
    direct = server.post("/change", {"from": {"scenes": [a]}, "to": {"scenes": [b]}, "top": 5})["features"]
    output = result["OUTPUT"]
    assert output.featureCount() == len(direct) == 5 and output.crs().authid() == "EPSG:4326"
    assert [(f["rank"], f["place_id"], round(f["change"], 5)) for f in output.getFeatures()] == [
        (f["properties"]["rank"], f["properties"]["place_id"], round(f["properties"]["change"], 5)) for f in direct]
    with pytest.raises(QgsProcessingException, match="on both sides"):
        processing.run("geosearch:changebetweendates", {"FROM_SCENES": a, "TO_SCENES": f"{b}; {a}",
                                                        "OUTPUT": "memory:"})


def test_processing_gives_the_same_features(plugin):
    import processing

    layer = search_by_drag(plugin)
    west, south, east, north = json.loads(next(layer.getFeatures())["query"])["bbox"]  # the box the drag drew
    extent = f"{west},{east},{south},{north} [EPSG:32621]"
    Settings(url=plugin.settings.url, k=3).save()  # the algorithm reads the saved settings
    result = processing.run("geosearch:findsimilarpatches", {"EXTENT": extent, "K": K, "OUTPUT": "memory:"})
    output = result["OUTPUT"]
    assert output.featureCount() == K and output.crs().authid() == "EPSG:4326"
    key = [(f["rank"], f["tile_id"], round(f["score"], 5)) for f in layer.getFeatures()]
    assert sorted(key) == sorted((f["rank"], f["tile_id"], round(f["score"], 5)) for f in output.getFeatures())

    # Loaded into the project as the Processing dialog loads it, the output has the dock's style.
    loaded = processing.runAndLoadResults("geosearch:findsimilarpatches",
                                          {"EXTENT": extent, "K": K, "OUTPUT": "TEMPORARY_OUTPUT"})
    styled = QgsProject.instance().mapLayer(loaded["OUTPUT"])
    assert styled.featureCount() == K and styled.renderer().type() == "graduatedSymbol" and styled.labelsEnabled()


def test_export_starts_where_the_last_one_went(plugin, tmp_path, monkeypatch):
    """The export dialog opens in the home folder at first (not QGIS's working directory), then where the last
    export went."""
    QgsSettings().remove("geosearch/export_folder")
    offered = []
    monkeypatch.setattr(QFileDialog, "getSaveFileName", staticmethod(lambda *args: offered.append(args[2]) or ("", "")))
    plugin.export_dialog()
    search_by_drag(plugin)
    (tmp_path / "exports").mkdir()
    assert plugin.export_matches(str(tmp_path / "exports" / "first.geojson"))
    plugin.export_dialog()
    assert offered == [str(Path.home() / "matches.geojson"), str(tmp_path / "exports" / "matches.geojson")]


def test_export_writes_geojson(plugin, tmp_path):
    layer = search_by_drag(plugin)
    path = tmp_path / "matches.geojson"
    assert plugin.export_matches(str(path))
    collection = json.loads(path.read_text())
    assert collection["type"] == "FeatureCollection" and len(collection["features"]) == K
    first = min(collection["features"], key=lambda f: f["properties"]["rank"])
    assert first["geometry"]["type"] == "Polygon"
    lon, lat = first["geometry"]["coordinates"][0][0]
    assert -56 < lon < -54 and -26 < lat < -24
    assert {f["properties"]["tile_id"] for f in collection["features"]} == {f["tile_id"] for f in layer.getFeatures()}
    reread = QgsVectorLayer(str(path), "reread", "ogr")
    assert reread.isValid() and reread.featureCount() == K
    assert plugin.export_matches(str(tmp_path / "matches.gpkg"))
    assert not plugin.export_matches(str(tmp_path / "matches.nothing"))
    assert "no vector format" in plugin.dock.message.text()
    QgsProject.instance().removeMapLayer(layer.id())  # the user removes the layer: export and zoom say so, no crash
    assert not plugin.export_matches(str(tmp_path / "again.geojson"))
    assert "no matches layer" in plugin.dock.message.text()
    plugin.dock.zoom_to(0)


def test_scene_footprints_and_server_status(plugin, server):
    plugin.add_scenes()
    plugin.check_server()
    wait_for(plugin)
    (scenes,) = QgsProject.instance().mapLayersByName(SCENES_LAYER)
    assert scenes.featureCount() == len(SCENES)
    status = plugin.dock.server.text()
    assert server.health["model_id"] in status and server.health["device_name"] in status


def test_server_down_gives_a_message_in_one_place(plugin):
    """A server that cannot be reached is said once: in the dock's server line, not again in its message line or
    the message bar; QGIS's log keeps it whole. A search's error goes to the message line of the open dock, and to
    the message bar only while the dock is closed."""
    logged = []
    QgsApplication.messageLog().messageReceived.connect(lambda text, tag, _level: logged.append((tag, text)))
    bar = plugin.iface.messageBar().pushMessage
    bar.reset_mock()
    plugin.settings = Settings(url=f"http://127.0.0.1:{free_port()}", k=K)
    plugin.dock.show()
    plugin.check_server()
    wait_for(plugin)
    assert "cannot reach geosearch serve" in plugin.dock.server.text()
    assert "cannot reach" not in plugin.dock.message.text()
    assert any(tag == "geosearch" and "cannot reach geosearch serve" in text for tag, text in logged)
    drag(plugin, demo_box_utm())
    wait_for(plugin)
    assert "cannot reach geosearch serve" in plugin.dock.message.text()
    assert not QgsProject.instance().mapLayersByName(MATCHES)
    bar.assert_not_called()
    plugin.dock.hide()
    plugin.export_matches("anywhere.geojson")
    bar.assert_called_once()
    assert "no matches layer to export" in bar.call_args.args[1]


def test_server_errors_and_clicks_are_reported(plugin):
    plugin.settings.after = "someday"
    drag(plugin, demo_box_utm())
    wait_for(plugin)
    assert "answered 400" in plugin.dock.message.text()
    assert "model efficientnet_lite0" in plugin.dock.server.text()  # the server status stays apart
    plugin.settings.after = ""
    point = demo_box_utm().center()
    drag(plugin, QgsRectangle(point, point))
    assert "not a click" in plugin.dock.message.text()
    assert [task.description() for task in plugin.tasks] == ["geosearch: server status"]  # no search started


def test_a_server_that_never_answers_times_out():
    """QGIS's own network timeout applies: a server that accepts and never answers is reported, not waited on."""
    timeout = QgsNetworkAccessManager.timeout()
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        QgsNetworkAccessManager.setTimeout(500)
        try:
            with pytest.raises(ServiceError, match=r"did not answer within 0\.5 s"):
                Client(f"http://127.0.0.1:{silent.getsockname()[1]}").health()
        finally:
            QgsNetworkAccessManager.setTimeout(timeout)


def test_a_cancelled_request_always_ends(plugin):
    """Cancelled at any moment of its request, a task still reports. QGIS 3.22's own blocking request never returns
    when the cancel lands while it sends, and then QGIS cannot quit: the task manager waits for it forever."""
    for delay in range(40):
        plugin.check_server()
        task = plugin.tasks[-1]
        while task.status() == task.Queued:
            QCoreApplication.processEvents()
        time.sleep(delay / 4000)
        task.cancel()
        wait_for(plugin, timeout=30)
    plugin.check_server()
    wait_for(plugin)
    assert "model efficientnet_lite0" in plugin.dock.server.text()  # the server still answers after the aborts


def test_settings_dialog_refuses_a_bad_date():
    dialog = SettingsDialog(Settings())
    dialog.after.setText("2020-13-40")
    dialog.accept()
    assert dialog.result() == 0 and "not a date" in dialog.message.text()
    dialog.after.setText("2020-05-01")
    dialog.k.setValue(7)
    dialog.accept()
    assert dialog.result() == 1 and dialog.settings().after == "2020-05-01" and dialog.settings().k == 7


def test_opening_the_shipped_scenes_in_qgis_leaves_the_checkout_clean():
    """QGIS writes its statistics beside a raster it opens (SCENE.tif.aux.xml); git ignores them."""
    written = []
    try:
        for scene in SCENES:
            layer = QgsRasterLayer(str(scene), scene.stem)
            assert layer.isValid() and layer.dataProvider().bandStatistics(1).maximumValue > 0
            del layer
            written += [aux for aux in scene.parent.glob(scene.name + "*.aux.xml")]
        assert written, "QGIS wrote no statistics file: this test no longer checks anything"
        status = subprocess.run(["git", "status", "--porcelain", "--", str(SCENES[0].parent)], cwd=REPO,
                                capture_output=True, text=True, check=True)
        assert status.stdout == ""
    finally:
        for aux in written:
            aux.unlink(missing_ok=True)


def test_canvas_screenshot(plugin, tmp_path):
    """The matches over the scenes, rendered by a map canvas: outlined, the imagery inside them left as it is. (The
    README's picture of the whole window is test_desktop's.)"""
    project = QgsProject.instance()
    copies = [shutil.copy(scene, tmp_path) for scene in SCENES if "landsat8" in scene.name]  # QGIS writes .aux.xml
    scenes = [QgsRasterLayer(copy, Path(copy).stem) for copy in copies]
    for scene in scenes:
        project.addMapLayer(scene)
    layer = search_by_drag(plugin)
    canvas = QgsMapCanvas()  # a shown, sized canvas of its own: the mocked interface's canvas is never laid out
    canvas.resize(1000, 640)
    canvas.show()
    canvas.setDestinationCrs(UTM21S)
    canvas.setLayers([layer, *project.mapLayersByName(QUERY), *scenes])
    canvas.setExtent(LANDSATS)
    canvas.refresh()
    canvas.waitWhileRendering()
    path = tmp_path / "plugin.png"
    canvas.saveAsImage(str(path))
    image = QImage(str(path))
    assert image.size() == canvas.mapSettings().outputSize() and image.width() > 900
    colours = {image.pixel(x, y) for x in range(0, image.width(), 16) for y in range(0, image.height(), 16)}
    assert len(colours) > 100  # the scenes are drawn, not a blank canvas
    # The best match is outlined in red, and the scene inside it is drawn as it is, with no wash over it.
    best = QgsGeometry(next(f for f in layer.getFeatures() if f["rank"] == 1).geometry())
    best.transform(QgsCoordinateTransform(layer.crs(), UTM21S, project))
    corner, next_corner = best.asPolygon()[0][:2]
    edge = QgsPointXY((corner.x() + next_corner.x()) / 2, (corner.y() + next_corner.y()) / 2)
    box = best.boundingBox()
    inside = QgsPointXY(box.xMinimum() + box.width() / 3, box.yMinimum() + box.height() / 3)  # clear of the label

    def colour_at(layers: list, point: QgsPointXY) -> tuple:
        canvas.setLayers(layers)
        canvas.refresh()
        canvas.waitWhileRendering()
        pixel = canvas.getCoordinateTransform().transform(point)
        return QColor(canvas.grab().toImage().pixel(round(pixel.x()), round(pixel.y()))).getRgb()[:3]

    red, green, blue = colour_at([layer, *scenes], edge)
    assert red > green + 40 and red > blue + 40
    assert colour_at([layer, *scenes], inside) == colour_at(scenes, inside)
