"""Run by the QGIS desktop (`qgis --code`) in test_desktop.py. It never acts for the user: every click, drag and key
comes as an X event from the test. It only reports, five times a second, what a user would see (where each widget is
on the screen, the layers, the dock's lines and rows, any dialog open and its buttons) as JSON in the file named by
GEOSEARCH_DESKTOP_STATE; and it takes a picture of the screen when the test asks, through the file named by
GEOSEARCH_DESKTOP_COMMAND. The main window is laid over the whole screen, as a user would maximize it (there is no
window manager to do that)."""

import json
import os
from pathlib import Path

from qgis.core import QgsApplication, QgsProject
from qgis.PyQt.QtCore import QRect, QTimer
from qgis.PyQt.QtWidgets import QAbstractButton, QApplication, QFileDialog, QMessageBox, QToolButton, QWidget
from qgis.utils import iface, plugins

STATE = Path(os.environ["GEOSEARCH_DESKTOP_STATE"])
COMMAND = Path(os.environ["GEOSEARCH_DESKTOP_COMMAND"])
POLL_MS = 200


def on_screen(widget: QWidget) -> list:
    """The widget's rectangle in screen pixels, where X events land; empty when it is not shown."""
    if widget is None or not widget.isVisible():
        return []
    rect = QRect(widget.mapToGlobal(widget.rect().topLeft()), widget.size())
    return [rect.x(), rect.y(), rect.width(), rect.height()]


def widget_of_class(name: str) -> QWidget:
    """The first visible widget of a QGIS class that Python does not wrap (the task bar's)."""
    return next((widget for widget in QApplication.allWidgets()
                 if widget.metaObject().className() == name and widget.isVisible()), None)


def buttons(widget: QWidget) -> dict:
    """The buttons a user can press in `widget`, by their text."""
    return {button.text(): on_screen(button) for button in widget.findChildren(QAbstractButton)
            if button.isVisible() and button.isEnabled() and button.text()}


def dialog_state() -> dict:
    """The dialog in front, if any: its kind, title, text, buttons, and where a file dialog opened."""
    dialog = QApplication.activeModalWidget()
    if dialog is None:
        return {}
    state = {"class": dialog.metaObject().className(), "title": dialog.windowTitle(), "rect": on_screen(dialog),
             "buttons": buttons(dialog)}
    if isinstance(dialog, QMessageBox):
        state["text"] = dialog.text()
    if isinstance(dialog, QFileDialog):
        state["directory"] = dialog.directory().path()
    return state


def dock_state(plugin) -> dict:
    dock = plugin.dock
    table = dock.table
    rows = [[table.item(row, column).text() if table.item(row, column) else ""
             for column in range(1, table.columnCount())] for row in range(table.rowCount())]
    return {"visible": dock.isVisible(), "rect": on_screen(dock), "server": dock.server.text(),
            "message": dock.message.text(), "rows": rows,
            "pictures": sum(not item.icon().isNull() for item in dock.pictures.values()),
            "columns_fit": table.horizontalHeader().length() <= table.viewport().width(),
            "buttons": buttons(dock)}


def state() -> dict:
    window = iface.mainWindow()
    plugin = plugins.get("geosearch_qgis")
    find = next((button for button in window.findChildren(QToolButton)
                 if button.defaultAction() is not None and button.defaultAction().text() == "Find similar patches"
                 and button.isVisible()), None)
    canvas = iface.mapCanvas()
    return {
        "window": on_screen(window),
        "plugin": plugin is not None,
        "find_button": on_screen(find),
        "canvas": on_screen(canvas),
        "extent": [canvas.extent().xMinimum(), canvas.extent().yMinimum(), canvas.extent().xMaximum(),
                   canvas.extent().yMaximum()],
        "crs": canvas.mapSettings().destinationCrs().authid(),
        "map_tool": type(canvas.mapTool()).__name__ if canvas.mapTool() else None,
        "layers": {layer.name(): layer.featureCount() if hasattr(layer, "featureCount") else -1
                   for layer in QgsProject.instance().mapLayers().values()},
        "tasks": [task.description() for task in QgsApplication.taskManager().activeTasks()],
        "task_bar": on_screen(widget_of_class("QgsTaskManagerStatusBarWidget")),
        "task_cancel": on_screen(widget_of_class("QgsTaskStatusWidget")),
        "message_bar": [item.text() for item in iface.messageBar().items()],
        "dialog": dialog_state(),
        "dock": dock_state(plugin) if plugin is not None else {},
        "done": done,
    }


def screenshot(path: str) -> None:
    """The whole screen as X shows it (the main window covers it), dialogs and all."""
    QApplication.primaryScreen().grabWindow(0).save(path, quality=85)


def tick() -> None:
    global done
    if COMMAND.exists():
        command = json.loads(COMMAND.read_text())
        COMMAND.unlink()
        screenshot(command["screenshot"])
        done = command["id"]
    written = STATE.with_suffix(".part")
    written.write_text(json.dumps(state()))
    written.replace(STATE)  # whole, never half-written, when the test reads it


done = 0  # the last command carried out
iface.mainWindow().setGeometry(QApplication.primaryScreen().availableGeometry())
timer = QTimer()
timer.timeout.connect(tick)
timer.start(POLL_MS)
