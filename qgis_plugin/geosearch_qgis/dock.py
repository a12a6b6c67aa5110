"""The dock: the server's status line, the matches with their thumbnails (a click zooms to one), the examples the
user marked among them for the next search, a time strip of the selected match's place on other dates, and the
buttons that export them or add the archive's scene footprints; plus the settings dialog."""

from collections.abc import Sequence
from typing import Callable, Optional

from qgis.core import QgsFeature, QgsVectorLayer
from qgis.gui import QgsDockWidget, QgsMapCanvas
from qgis.PyQt import sip
from qgis.PyQt.QtCore import QDate, QSize, Qt
from qgis.PyQt.QtGui import QIcon, QPixmap
from qgis.PyQt.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from .examples import Example
from .settings import AUTH_NAME, AuthDatabaseError, Settings, forget_token, has_token, store_token

COLUMNS = ("", "rank", "score", "scene", "date")
MINIMUM_WIDTH = 440  # pixels: the picture, rank, score and date take about 260


class MatchesDock(QgsDockWidget):
    def __init__(self, canvas: QgsMapCanvas, export: Callable[[], None], add_scenes: Callable[[], None],
                 edit_settings: Callable[[], None]):
        super().__init__("geosearch")
        self.setObjectName("GeosearchDock")
        self.canvas = canvas
        self.layer = None  # the matches layer the table shows
        self.pictures: dict[str, QTableWidgetItem] = {}  # each row's picture cell, by the match's tile id
        self.server = QLabel("server: not asked yet")  # the server's model and device, or why it cannot be reached
        self.message = QLabel()  # what the last action came to
        for label in (self.server, self.message):
            label.setWordWrap(True)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setIconSize(QSize(64, 64))
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.verticalHeader().setVisible(False)
        # The scene's name takes the width the others leave, shortened in the middle, so every column stays in view
        # without a horizontal scroll bar; the dock is made wide enough for a useful part of that name.
        self.table.setTextElideMode(Qt.ElideMiddle)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeToContents)
        header.setSectionResizeMode(COLUMNS.index("scene"), QHeaderView.Stretch)
        self.table.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.setMinimumWidth(MINIMUM_WIDTH)
        self.table.cellClicked.connect(lambda row, _: self.zoom_to(row))

        # The plugin connects these: the marks are its, kept for "Search again" and "Find all like these" until the
        # next drag.
        self.more_button, self.fewer_button = QPushButton("More like this"), QPushButton("Not like this")
        self.examples = QListWidget()  # one line per marked place, its Example.key kept with it
        self.examples.setMaximumHeight(90)
        self.remove_button, self.clear_button = QPushButton("Remove"), QPushButton("Clear")
        self.again_button = QPushButton("Search again")
        self.find_all_button = QPushButton("Find all like these")
        self.find_all_button.setToolTip("Every place in the archive like the box and the marks marked more like this, "
                                        "and unlike those marked not like this, as a layer of polygons")
        self.dates_button = QPushButton("Other dates")
        self.dates_button.setToolTip("The selected match's place in every scene, oldest first")
        # The place on every date, left to right: its picture, day and similarity to the match; its tile id kept.
        self.time_strip = QListWidget()
        self.time_strip.setViewMode(QListWidget.IconMode)
        self.time_strip.setFlow(QListWidget.LeftToRight)
        self.time_strip.setWrapping(False)
        self.time_strip.setIconSize(QSize(64, 64))
        self.time_strip.setMaximumHeight(118)
        self.time_strip.hide()
        self.steps: dict[str, QListWidgetItem] = {}

        self.export_button = QPushButton("Export…")
        self.export_button.setEnabled(False)
        self.export_button.clicked.connect(export)
        scenes_button = QPushButton("Scene footprints")
        scenes_button.clicked.connect(add_scenes)
        settings_button = QPushButton("Settings…")
        settings_button.clicked.connect(edit_settings)
        layout = QVBoxLayout()
        layout.addWidget(self.server)
        layout.addWidget(self.table)
        layout.addLayout(row_of(self.more_button, self.fewer_button))
        layout.addWidget(self.examples)
        layout.addLayout(row_of(self.remove_button, self.clear_button))
        layout.addLayout(row_of(self.again_button, self.find_all_button, self.dates_button))
        layout.addWidget(self.time_strip)
        layout.addWidget(self.message)
        layout.addLayout(row_of(self.export_button, scenes_button, settings_button))
        body = QWidget()
        body.setLayout(layout)
        self.setWidget(body)

    def show_matches(self, layer: QgsVectorLayer) -> None:
        """One row per match, in rank order (row i is the feature of rank i + 1), its picture left for
        show_thumbnail."""
        self.layer = layer
        features = sorted(layer.getFeatures(), key=lambda f: f["rank"])
        self.pictures = {}
        self.table.setRowCount(len(features))
        for row, feature in enumerate(features):
            picture = QTableWidgetItem()
            picture.setData(Qt.UserRole, feature.id())
            self.table.setItem(row, 0, picture)
            self.pictures[feature["tile_id"]] = picture
            for column, value in enumerate((str(feature["rank"]), f"{feature['score']:.3f}", scene_name(feature),
                                            acquired_day(feature)), start=1):
                self.table.setItem(row, column, QTableWidgetItem(value))
            self.table.setRowHeight(row, 68)
        self.export_button.setEnabled(bool(features))

    def show_thumbnail(self, tile_id: str, png: bytes) -> None:
        """The picture of the match `tile_id` in its row, as it comes."""
        if tile_id in self.pictures:
            show_picture(self.pictures[tile_id], png)

    def show_history(self, collection: dict) -> None:
        """The time strip: one item per date of the place, its picture left for show_step_thumbnail."""
        self.time_strip.clear()
        self.steps = {}
        for feature in collection["features"]:
            step = feature["properties"]
            day = (step["acquired"] or "undated")[:10]
            item = QListWidgetItem(f"{day}\n{step['score']:.3f}")
            item.setData(Qt.UserRole, step["tile_id"])
            item.setToolTip(str(step["scene_path"]))
            self.time_strip.addItem(item)
            self.steps[step["tile_id"]] = item
        self.time_strip.setVisible(bool(self.steps))

    def show_step_thumbnail(self, tile_id: str, png: bytes) -> None:
        """The picture of the time strip's tile `tile_id`, as it comes."""
        if tile_id in self.steps:
            show_picture(self.steps[tile_id], png)

    def selected_match(self) -> Optional[QgsFeature]:
        """The match of the table's selected row, to mark; None when no row is selected or its layer is gone."""
        rows = self.table.selectionModel().selectedRows()
        if not rows or self.layer is None or sip.isdeleted(self.layer):
            return None
        return self.layer.getFeature(self.table.item(rows[0].row(), 0).data(Qt.UserRole))

    def selected_example(self) -> Optional[str]:
        """The key of the example selected in the list (Example.key), to remove."""
        item = self.examples.currentItem()
        return item.data(Qt.UserRole) if item is not None else None

    def show_examples(self, examples: Sequence[Example]) -> None:
        self.examples.clear()
        for example in examples:
            item = QListWidgetItem(f"{'+' if example.positive else '-'} {example.label}")
            item.setData(Qt.UserRole, example.key)
            self.examples.addItem(item)

    def zoom_to(self, row: int) -> None:
        """Zoom the map to the match in `row` (in whatever CRS the project uses) and flash it."""
        if self.layer is None or sip.isdeleted(self.layer) or self.table.item(row, 0) is None:
            return
        feature_id = self.table.item(row, 0).data(Qt.UserRole)
        self.canvas.zoomToFeatureIds(self.layer, [feature_id])
        self.canvas.flashFeatureIds(self.layer, [feature_id])


def show_picture(item: QTableWidgetItem | QListWidgetItem, png: bytes) -> None:
    """A thumbnail from the server as the item's icon; one that does not decode leaves none."""
    pixmap = QPixmap()
    if pixmap.loadFromData(png):
        item.setIcon(QIcon(pixmap))


def scene_name(feature: QgsFeature) -> str:
    """The file name of the match's scene, whichever separator its path was written with."""
    return str(feature["scene_path"]).replace("\\", "/").rsplit("/", 1)[-1]


def acquired_day(feature: QgsFeature) -> str:
    """The match's acquisition date as a day, YYYY-MM-DD (the server sends an ISO date and time in UTC)."""
    return str(feature["acquired"])[:10] if feature["acquired"] else ""


def row_of(*buttons: QPushButton) -> QHBoxLayout:
    row = QHBoxLayout()
    for button in buttons:
        row.addWidget(button)
    return row


class SettingsDialog(QDialog):
    """Server URL and token; k, de-duplication and the date filter sent with each search. The token goes into QGIS's
    authentication database on OK and is never shown again: the field only replaces it."""

    def __init__(self, settings: Settings, parent: QWidget = None):
        super().__init__(parent)
        self.setWindowTitle("geosearch settings")
        self.url = QLineEdit(settings.url)
        self.authcfg = settings.authcfg
        stored = has_token(self.authcfg)
        self.token = QLineEdit()
        self.token.setEchoMode(QLineEdit.Password)
        self.token.setPlaceholderText("stored in QGIS's authentication database; type to replace" if stored
                                      else "none; the server's --token, if it has one")
        self.token.setToolTip(f"Kept encrypted in QGIS's authentication database, as '{AUTH_NAME}'")
        self.forget = QCheckBox("Forget the stored token")
        self.forget.setEnabled(stored)
        self.forget.toggled.connect(self.token.setDisabled)
        self.k = QSpinBox()
        self.k.setRange(1, 1000)
        self.k.setValue(settings.k)
        self.dedup = QCheckBox("Keep only the best of overlapping matches")
        self.dedup.setChecked(settings.dedup)
        self.after, self.before = QLineEdit(settings.after), QLineEdit(settings.before)
        for date in (self.after, self.before):
            date.setPlaceholderText("YYYY-MM-DD, empty for no bound")
        form = QFormLayout()
        for label, widget in (("Server URL", self.url), ("Token", self.token), ("", self.forget),
                              ("Matches (k)", self.k), ("De-duplication", self.dedup),
                              ("Acquired on or after", self.after), ("Acquired on or before", self.before)):
            form.addRow(label, widget)
        buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        self.message = QLabel()
        layout = QVBoxLayout()
        layout.addLayout(form)
        layout.addWidget(self.message)
        layout.addWidget(buttons)
        self.setLayout(layout)

    def accept(self) -> None:
        for date in (self.after, self.before):
            text = date.text().strip()
            if text and not QDate.fromString(text, Qt.ISODate).isValid():
                self.message.setText(f"'{text}' is not a date: write it as YYYY-MM-DD")
                return
        try:
            if self.forget.isChecked():
                forget_token(self.authcfg)
                self.authcfg = ""
            elif self.token.text().strip():
                self.authcfg = store_token(self.token.text().strip(), self.authcfg)
        except AuthDatabaseError as error:
            self.message.setText(str(error))
            return
        super().accept()

    def settings(self) -> Settings:
        return Settings(url=self.url.text().strip(), authcfg=self.authcfg, k=self.k.value(),
                        dedup=self.dedup.isChecked(), after=self.after.text().strip(),
                        before=self.before.text().strip())
