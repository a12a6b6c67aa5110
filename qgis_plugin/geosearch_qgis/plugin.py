"""The plugin: a toolbar button and menu entry arm a map tool; the box dragged on the map goes to `geosearch
serve` in a background task; the matches come back as layers and in the dock, whose pictures then fill in. Matches
marked in the dock (or from the matches layer's feature actions) as like or unlike the places wanted, and boxes
dragged with Shift held as more places like them, go with the same box when the user searches again, or asks
for every place like them ("Find all like these": a job on the server, its places a polygon layer). "Other dates"
shows a match's place in every scene as a time strip; "Change between dates…" opens the Processing algorithm."""

from pathlib import Path
from typing import Optional

from qgis.core import (
    Qgis,
    QgsApplication,
    QgsCoordinateReferenceSystem,
    QgsFeature,
    QgsMessageLog,
    QgsProject,
    QgsRectangle,
    QgsVectorLayer,
)
from qgis.gui import QgisInterface, QgsGui, QgsMapLayerAction, QgsMapMouseEvent, QgsMapToolExtent
from qgis.PyQt import sip
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QAction, QFileDialog

from .algorithm import ICON, Provider
from .client import Client
from .dock import MatchesDock, SettingsDialog, scene_name
from .examples import Example, box_example, match_example
from .examples import load as load_examples
from .examples import save as save_examples
from .layers import export_layer, matches_layer, places_layer, query_layer, replace_layer, scenes_layer
from .settings import Settings, export_folder, remember_export_folder
from .tasks import ServiceTask, Thumbnails

MENU = "&geosearch"


class ExtentTool(QgsMapToolExtent):
    """QGIS's box-dragging tool, remembering the keys held when the box was released (Shift adds a box as a
    positive example instead of searching it)."""

    def __init__(self, canvas):
        super().__init__(canvas)
        self.modifiers = Qt.NoModifier

    def canvasReleaseEvent(self, event: QgsMapMouseEvent) -> None:
        self.modifiers = event.modifiers()
        super().canvasReleaseEvent(event)


class GeosearchPlugin:
    def __init__(self, iface: QgisInterface):
        self.iface = iface
        self.canvas = iface.mapCanvas()
        self.settings = Settings.load()
        self.tasks: list = []  # running tasks, kept alive until they report
        self.searching: Optional[ServiceTask] = None
        self.finding: Optional[ServiceTask] = None  # the running "Find all like these"
        self.thumbnails: Optional[Thumbnails] = None  # the latest matches' pictures, coming into the dock
        self.step_thumbnails: Optional[Thumbnails] = None  # the time strip's
        self.matches = None  # the latest matches layer
        self.provider: Optional[Provider] = None
        self.query: Optional[tuple[QgsRectangle, QgsCoordinateReferenceSystem]] = None  # the last box dragged
        self.examples: list[Example] = []  # the places marked since, in the order marked; saved with the project
        self.layer_actions: list[QgsMapLayerAction] = []  # "more like" and "not like" on the matches layer
        self.max_examples: Optional[int] = None  # examples the server takes in one search, the query among them

    # QGIS calls these.
    def initProcessing(self) -> None:
        self.provider = Provider()
        QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:
        self.initProcessing()
        window = self.iface.mainWindow()
        self.find_action = QAction(QIcon(ICON), "Find similar patches", window)
        self.find_action.setCheckable(True)
        self.find_action.setStatusTip("Drag a box on the map to find the places in the archive that look like it")
        self.find_action.triggered.connect(self.activate)
        self.settings_action = QAction("geosearch settings…", window)
        self.settings_action.triggered.connect(self.edit_settings)
        self.change_action = QAction("Change between dates…", window)
        self.change_action.triggered.connect(self.change_dialog)
        self.iface.addToolBarIcon(self.find_action)
        for action in (self.find_action, self.change_action, self.settings_action):
            self.iface.addPluginToMenu(MENU, action)

        self.tool = ExtentTool(self.canvas)
        self.tool.setAction(self.find_action)
        self.tool.extentChanged.connect(self.search_box)
        self.dock = MatchesDock(self.canvas, self.export_dialog, self.add_scenes, self.edit_settings)
        self.dock.closed.connect(self.stop_thumbnails)
        self.dock.more_button.clicked.connect(lambda: self.mark(True))
        self.dock.fewer_button.clicked.connect(lambda: self.mark(False))
        self.dock.remove_button.clicked.connect(self.unmark)
        self.dock.clear_button.clicked.connect(lambda: self.set_examples([]))
        self.dock.again_button.clicked.connect(self.search_again)
        self.dock.find_all_button.clicked.connect(self.find_all)
        self.dock.dates_button.clicked.connect(self.other_dates)
        self.iface.addDockWidget(Qt.RightDockWidgetArea, self.dock)
        self.dock.hide()
        for changed in (QgsProject.instance().readProject, QgsProject.instance().cleared):
            changed.connect(self.load_from_project)
        self.load_from_project()

    def unload(self) -> None:
        for task in self.tasks:
            task.cancel()
        self.stop_thumbnails()
        for changed in (QgsProject.instance().readProject, QgsProject.instance().cleared):
            changed.disconnect(self.load_from_project)
        self.set_layer_actions(None)
        if self.canvas.mapTool() is self.tool:
            self.canvas.unsetMapTool(self.tool)
        for action in (self.find_action, self.change_action, self.settings_action):
            self.iface.removePluginMenu(MENU, action)
        self.iface.removeToolBarIcon(self.find_action)
        self.iface.removeDockWidget(self.dock)
        self.dock.deleteLater()
        QgsApplication.processingRegistry().removeProvider(self.provider)

    # What the user does.
    def activate(self) -> None:
        self.canvas.setMapTool(self.tool)
        self.dock.show()
        self.check_server()

    def search_box(self, box: QgsRectangle) -> None:
        """Search with the box just dragged, in the project's CRS: a new query, so the last one's marks go. Dragged
        with Shift held after a query, it is one more place like the ones wanted instead (searched with "Search
        again" or "Find all like these")."""
        self.tool.clearRubberBand()
        if box.isEmpty():
            self.report("drag a box on the map, not a click: the search needs an area", Qgis.Warning)
            return
        crs = self.canvas.mapSettings().destinationCrs()
        if self.tool.modifiers & Qt.ShiftModifier and self.query is not None:
            self.add_example(box_example(box, crs))
            return
        self.query = box, crs
        self.set_examples([])
        self._search()

    def search_again(self) -> None:
        """The last box again, with the matches marked since as positives and negatives."""
        if self.query is None:
            self.report("drag a box on the map first: searching again needs a query", Qgis.Warning)
            return
        self._search()

    def find_all(self) -> None:
        """Every place in the archive like the last box and the matches marked like it, and unlike those marked
        unlike it: a job on the server whose places become a polygon layer. One at a time: a running one is
        cancelled first, on the server too."""
        if self.query is None:
            self.report("drag a box on the map first: finding places like it needs a query", Qgis.Warning)
            return
        if self.finding is not None:
            self.finding.cancel()
        box, crs = self.query
        client, body = self.settings.client(), self.settings.examples_body(box, crs, self.examples)
        self.dock.message.setText("finding every place like these…")
        self.finding = ServiceTask("geosearch: find all like these",
                                   lambda task: client.detect(body, task.feedback, task.setProgress),
                                   lambda task: self._show_places(task, client))
        self._start(self.finding)

    def change_dialog(self) -> None:
        """Processing's own dialog for the change algorithm: its parameters, its progress and its log."""
        import processing  # QGIS's Processing plugin, loaded by then

        processing.execAlgorithmDialog("geosearch:changebetweendates")

    def other_dates(self) -> None:
        """The selected match's place in every scene, oldest first, in the dock's time strip with its pictures."""
        match = self.dock.selected_match()
        if match is None:
            self.dock.message.setText("select a match in the table first")
            return
        client, body = self.settings.client(), {"tile_id": match["tile_id"]}
        self._start(ServiceTask("geosearch: other dates", lambda task: client.history(body, task.feedback),
                                lambda task: self._show_history(task, client)))

    def mark(self, positive: bool) -> None:
        """Keep the match selected in the dock as an example for the next search."""
        match = self.dock.selected_match()
        if match is None:
            self.dock.message.setText("select a match in the table first")
            return
        self.mark_match(match, positive)

    def mark_match(self, match: QgsFeature, positive: bool) -> None:
        self.add_example(match_example(match["tile_id"], positive, f"rank {match['rank']}, {scene_name(match)}"))

    def add_example(self, example: Example) -> None:
        """Keep `example` for the next search (a match marked again changes sign), as many as the server takes with
        the query (its /health says how many; a server that does not say refuses itself)."""
        others = [kept for kept in self.examples if kept.key != example.key]
        limit = self.max_examples
        if limit is not None and len(others) >= limit - 1:
            self.dock.message.setText(f"at most {limit - 1} marks: the server takes {limit} examples, "
                                      "the query among them; remove one first")
            return
        self.set_examples([*others, example])

    def unmark(self) -> None:
        key = self.dock.selected_example()
        self.set_examples([example for example in self.examples if example.key != key])

    def set_examples(self, examples: list[Example]) -> None:
        """The examples, in the dock and in the project."""
        self.examples = examples
        self.dock.show_examples(examples)
        save_examples(QgsProject.instance(), self.query, examples)

    def load_from_project(self, *_) -> None:
        """The query and examples the project keeps, once it is read (or cleared: none)."""
        self.query, examples = load_examples(QgsProject.instance())
        self.examples = examples
        self.dock.show_examples(examples)

    def set_layer_actions(self, layer: Optional[QgsVectorLayer]) -> None:
        """"More like this" and "Not like this" as feature actions of the matches layer `layer` (its attribute
        table's and the identify tool's menus), replacing those of the last one."""
        registry = QgsGui.mapLayerActionRegistry()
        for action in self.layer_actions:
            registry.removeMapLayerAction(action)
        self.layer_actions = []
        if layer is None:
            return
        for text, positive in (("More like this", True), ("Not like this", False)):
            # Owned here, not by the main window: deleted by the window's destructor, an action still connected
            # deadlocked QGIS 3.22 in Qt's connection clean-up (seen once, unloading the plugin).
            action = QgsMapLayerAction(f"geosearch: {text.lower()}", None, layer, QgsMapLayerAction.SingleFeature)
            action.triggeredForFeature.connect(lambda _, feature, positive=positive: self.mark_match(feature,
                                                                                                     positive))
            registry.addMapLayerAction(action)
            self.layer_actions.append(action)

    def _search(self) -> None:
        """Search the last box with the marks; a running search is cancelled first."""
        box, crs = self.query
        if self.searching is not None:
            self.searching.cancel()
        self.stop_thumbnails()
        self.dock.show()
        self.dock.message.setText("searching…")
        replace_layer(query_layer(box, crs), QgsProject.instance())  # the box stays on the map while it searches
        client, body = self.settings.client(), self.settings.search_body(box, crs, examples=self.examples)
        self.searching = ServiceTask("geosearch: find similar patches", lambda task: client.search(body, task.feedback),
                                     lambda task: self._show_matches(task, client))
        self._start(self.searching)

    def stop_thumbnails(self) -> None:
        """The pictures still to come are for rows that are about to go (a new search) or that no one sees."""
        for thumbnails in (self.thumbnails, self.step_thumbnails):
            if thumbnails is not None:
                thumbnails.cancel()

    def check_server(self) -> None:
        """Say in the dock which model and device the server runs, or that it cannot be reached."""
        client = self.settings.client()
        self._start(ServiceTask("geosearch: server status", lambda task: client.health(task.feedback),
                                self._show_health))

    def add_scenes(self) -> None:
        client = self.settings.client()
        self._start(ServiceTask("geosearch: scene footprints", lambda task: client.scenes(task.feedback),
                                self._show_scenes))

    def export_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self.dock, "Export the matches",
                                              str(Path(export_folder()) / "matches.geojson"),
                                              "GeoJSON (*.geojson);;GeoPackage (*.gpkg);;Shapefile (*.shp);;"
                                              "Any OGR format (*.*)")
        if path:
            self.export_matches(path)

    def export_matches(self, path: str) -> bool:
        if self.matches is None or sip.isdeleted(self.matches):  # the user may have removed the layer
            self.report("no matches layer to export: search first", Qgis.Warning)
            return False
        ok, message = export_layer(self.matches, path)
        if ok:
            remember_export_folder(path)
        self.report(f"wrote {message}" if ok else message, Qgis.Success if ok else Qgis.Critical)
        return ok

    def edit_settings(self) -> None:
        dialog = SettingsDialog(self.settings, self.iface.mainWindow())
        if dialog.exec_():
            self.settings = dialog.settings()
            self.settings.save()
            self.check_server()

    # Answers, on the interface thread.
    def _start(self, task: ServiceTask) -> None:
        self.tasks.append(task)
        QgsApplication.taskManager().addTask(task)

    def _finish(self, task: ServiceTask, report: bool = True) -> bool:
        """Whether the task succeeded; its error, unless cancelled, is reported (`report`) or left to the caller."""
        self.tasks.remove(task)
        if task.error and task.error != "cancelled" and report:
            self.report(task.error, Qgis.Critical)
        return task.error is None

    def _show_matches(self, task: ServiceTask, client: Client) -> None:
        """The layers and the dock's rows at once; their pictures come after, from the same server. A search the
        user cancelled says so (one that a newer search replaced leaves the message to it)."""
        latest = task is self.searching
        if latest:
            self.searching = None
        if not self._finish(task):
            if latest and task.error == "cancelled":
                self.dock.message.setText("search cancelled")
            return
        self.matches = replace_layer(matches_layer(task.value), QgsProject.instance())
        self.set_layer_actions(self.matches)
        self.dock.show_matches(self.matches)
        self.dock.message.setText(f"{self.matches.featureCount()} match(es) from {client.url}")
        tile_ids = [feature["properties"]["tile_id"] for feature in task.value["features"]]
        self.stop_thumbnails()  # an earlier search's, if it answered before its cancel landed
        self.thumbnails = Thumbnails(client, tile_ids, self.dock.show_thumbnail)

    def _show_places(self, task: ServiceTask, client: Client) -> None:
        latest = task is self.finding
        if latest:
            self.finding = None
        if not self._finish(task):
            if latest and task.error == "cancelled":
                self.dock.message.setText("finding places cancelled")
            return
        places = replace_layer(places_layer(task.value), QgsProject.instance())
        tiles = sum(feature["tiles"] for feature in places.getFeatures())
        self.dock.message.setText(f"{places.featureCount()} place(s) of {tiles} tile(s) from {client.url}")

    def _show_history(self, task: ServiceTask, client: Client) -> None:
        if not self._finish(task):
            return
        self.dock.show_history(task.value)
        if self.step_thumbnails is not None:
            self.step_thumbnails.cancel()
        tile_ids = [feature["properties"]["tile_id"] for feature in task.value["features"]]
        self.step_thumbnails = Thumbnails(client, tile_ids, self.dock.show_step_thumbnail)
        self.dock.message.setText(f"{len(tile_ids)} date(s) of this place")

    def _show_health(self, task: ServiceTask) -> None:
        """The server's line of the dock: its model and device, or why it cannot be reached (there only)."""
        if self._finish(task, report=False):
            health = task.value
            self.max_examples = health.get("max_examples")
            self.dock.server.setText(f"{self.settings.url}: model {health['model_id']} on {health['device_name']}; "
                                     f"{health['scenes']} scene(s), {health['tiles']} tiles")
        elif task.error != "cancelled":
            self.dock.server.setText(task.error)
            QgsMessageLog.logMessage(task.error, "geosearch", Qgis.Warning)

    def _show_scenes(self, task: ServiceTask) -> None:
        if self._finish(task):
            replace_layer(scenes_layer(task.value), QgsProject.instance())

    def report(self, text: str, level: Qgis.MessageLevel = Qgis.Info) -> None:
        """In one place the user sees: the dock's message line, or QGIS's message bar while the dock is closed;
        and in QGIS's log (the geosearch tab), which keeps every message whole."""
        QgsMessageLog.logMessage(text, "geosearch", level)
        if self.dock.isVisible():
            self.dock.message.setText(text)
        else:
            self.iface.messageBar().pushMessage("geosearch", text, level=level, duration=8)
