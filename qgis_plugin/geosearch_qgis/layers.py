"""The server's GeoJSON as QGIS layers: matches styled by score with rank labels, the query box, scene
footprints; and their export through OGR."""

import json

from qgis.core import (
    QgsClassificationEqualInterval,
    QgsCoordinateReferenceSystem,
    QgsFeature,
    QgsField,
    QgsFields,
    QgsFillSymbol,
    QgsGeometry,
    QgsGraduatedSymbolRenderer,
    QgsJsonUtils,
    QgsPalLayerSettings,
    QgsProject,
    QgsRectangle,
    QgsSimpleLineSymbolLayer,
    QgsStyle,
    QgsTextBufferSettings,
    QgsTextFormat,
    QgsVectorFileWriter,
    QgsVectorLayer,
    QgsVectorLayerSimpleLabeling,
)
from qgis.PyQt.QtCore import QVariant
from qgis.PyQt.QtGui import QColor

MATCHES = "geosearch matches"
QUERY = "geosearch query"
SCENES = "geosearch scenes"

# The match fields and their types, in the order the server writes them (geosearch.search.hits_geojson).
MATCH_FIELDS = (("rank", QVariant.Int), ("score", QVariant.Double), ("tile_id", QVariant.String),
                ("scene_id", QVariant.String), ("scene_path", QVariant.String), ("row", QVariant.Int),
                ("col", QVariant.Int), ("width", QVariant.Int), ("height", QVariant.Int),
                ("tile_size", QVariant.Int), ("gsd_m", QVariant.Double), ("crs", QVariant.String),
                ("acquired", QVariant.String), ("valid_fraction", QVariant.Double), ("model_id", QVariant.String),
                ("query", QVariant.String))


def match_fields() -> QgsFields:
    result = QgsFields()
    for name, kind in MATCH_FIELDS:
        result.append(QgsField(name, kind))
    return result


WGS84 = QgsCoordinateReferenceSystem("EPSG:4326")


def _memory_layer(geometry: str, crs: QgsCoordinateReferenceSystem, name: str, fields: QgsFields,
                  features: list[QgsFeature]) -> QgsVectorLayer:
    layer = QgsVectorLayer(geometry, name, "memory")
    # QGIS asks nothing about them on closing: the next search replaces them anyway; a user who wants them kept
    # makes them permanent (the layer's "Make Permanent…") or exports them.
    layer.setCustomProperty("skipMemoryLayersCheck", 1)
    layer.setCrs(crs)
    provider = layer.dataProvider()
    provider.addAttributes(fields.toList())
    layer.updateFields()
    provider.addFeatures(features)
    layer.updateExtents()
    return layer


def match_features(collection: dict) -> list[QgsFeature]:
    """The matches of a /search answer as features with MATCH_FIELDS, in rank order. Their text fields hold the
    server's text: OGR's GeoJSON reader rewrites a date ("2020-05-18T00:00:00+00:00") as "2020/05/18 00:00:00+00"."""
    features = QgsJsonUtils.stringToFeatureList(json.dumps(collection), match_fields())
    texts = [name for name, kind in MATCH_FIELDS if kind == QVariant.String]
    for feature, given in zip(features, collection["features"]):
        for name in texts:
            feature[name] = given["properties"].get(name)
    return features


def matches_layer(collection: dict) -> QgsVectorLayer:
    """The matches of a /search answer as a styled memory layer."""
    layer = _memory_layer("Polygon", WGS84, MATCHES, match_fields(), match_features(collection))
    style_matches(layer)
    return layer


def style_matches(layer: QgsVectorLayer) -> None:
    """Footprint outlines coloured from pale (weakest) to strong (best score), with no fill, so the imagery under
    a match stays as it is; each labelled with its rank, placed in the part of the footprint in view. The dock's
    layer and Processing's output alike."""
    symbol = QgsFillSymbol.createSimple({})
    symbol.changeSymbolLayer(0, QgsSimpleLineSymbolLayer(QColor("red"), 0.8))  # an outline, in the score's colour
    renderer = QgsGraduatedSymbolRenderer("score")
    renderer.setSourceSymbol(symbol)
    renderer.setSourceColorRamp(QgsStyle.defaultStyle().colorRamp("Reds"))
    renderer.setClassificationMethod(QgsClassificationEqualInterval())
    renderer.updateClasses(layer, min(5, max(1, layer.featureCount())))
    layer.setRenderer(renderer)

    labels = QgsPalLayerSettings()
    labels.fieldName = "rank"
    labels.placement = QgsPalLayerSettings.OverPoint
    labels.centroidWhole = False  # the centre of the part in view, so a footprint cut by the map's edge keeps its rank
    text = QgsTextFormat()
    text.setSize(10)
    buffer = QgsTextBufferSettings()
    buffer.setEnabled(True)
    buffer.setColor(QColor("white"))
    text.setBuffer(buffer)
    labels.setFormat(text)
    layer.setLabeling(QgsVectorLayerSimpleLabeling(labels))
    layer.setLabelsEnabled(True)


def query_layer(box: QgsRectangle, crs: QgsCoordinateReferenceSystem) -> QgsVectorLayer:
    """The box the user drew, in the CRS it was drawn in, as a dashed blue outline."""
    feature = QgsFeature()
    feature.setGeometry(QgsGeometry.fromRect(box))
    layer = _memory_layer("Polygon", crs, QUERY, QgsFields(), [feature])
    layer.renderer().setSymbol(QgsFillSymbol.createSimple(
        {"style": "no", "outline_color": "0,90,255", "outline_width": "0.8", "outline_style": "dash"}))
    return layer


def scenes_layer(collection: dict) -> QgsVectorLayer:
    """The archive's scene footprints, outlined, with the fields the server gives."""
    text = json.dumps(collection)
    fields = QgsJsonUtils.stringToFields(text)
    layer = _memory_layer("MultiPolygon", WGS84, SCENES, fields, QgsJsonUtils.stringToFeatureList(text, fields))
    layer.renderer().setSymbol(QgsFillSymbol.createSimple(
        {"style": "no", "outline_color": "255,160,0", "outline_width": "0.5"}))
    return layer


def replace_layer(layer: QgsVectorLayer, project: QgsProject) -> QgsVectorLayer:
    """Add `layer`, removing earlier results of the same name, so each search leaves one set of results. Only
    temporary ones: a result the user made permanent (saved to a file) is theirs, and stays."""
    for old in project.mapLayersByName(layer.name()):
        if old.providerType() == "memory":
            project.removeMapLayer(old.id())
    project.addMapLayer(layer)
    return layer


def export_layer(layer: QgsVectorLayer, path: str) -> tuple[bool, str]:
    """Write `layer` to `path` in the OGR format its extension names (GeoJSON, GeoPackage, Shapefile…)."""
    extension = path.rsplit(".", 1)[-1] if "." in path else ""
    driver = QgsVectorFileWriter.driverForExtension(extension)
    if not driver:
        return False, f"{path}: no vector format for the extension '.{extension}' (try .geojson or .gpkg)"
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = driver
    options.fileEncoding = "UTF-8"
    error, message, _, _ = QgsVectorFileWriter.writeAsVectorFormatV3(
        layer, path, QgsProject.instance().transformContext(), options)
    if error != QgsVectorFileWriter.NoError:
        return False, f"{path}: {message}"
    return True, path
