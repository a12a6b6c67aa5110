"""The server's GeoJSON as QGIS layers: matches styled by score with rank labels, the places like the examples,
the query box, scene footprints; and their export through OGR."""

import json

from qgis.core import (
    QgsClassificationEqualInterval,
    QgsClassificationQuantile,
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
PLACES = "geosearch places"
CHANGE = "geosearch change"

# The match fields and their types, in the order the server writes them (geosearch.search.hits_geojson).
MATCH_FIELDS = (("rank", QVariant.Int), ("score", QVariant.Double), ("tile_id", QVariant.String),
                ("scene_id", QVariant.String), ("scene_path", QVariant.String), ("row", QVariant.Int),
                ("col", QVariant.Int), ("width", QVariant.Int), ("height", QVariant.Int),
                ("tile_size", QVariant.Int), ("gsd_m", QVariant.Double), ("crs", QVariant.String),
                ("acquired", QVariant.String), ("valid_fraction", QVariant.Double), ("model_id", QVariant.String),
                ("query", QVariant.String))


# The fields of a place that POST /detect found (geosearch.detect.merge).
PLACE_FIELDS = (("detection", QVariant.Int), ("score_max", QVariant.Double), ("score_mean", QVariant.Double),
                ("tiles", QVariant.Int), ("scenes", QVariant.Int), ("area_m2", QVariant.Double),
                ("best_tile_id", QVariant.String), ("first_acquired", QVariant.String),
                ("last_acquired", QVariant.String), ("query", QVariant.String))


# The fields of a place that POST /change compared (geosearch.change.change).
CHANGE_FIELDS = (("rank", QVariant.Int), ("change", QVariant.Double), ("place_id", QVariant.String),
                 ("tiles_from", QVariant.Int), ("tiles_to", QVariant.Int), ("acquired_from", QVariant.String),
                 ("acquired_to", QVariant.String), ("tile_id_from", QVariant.String), ("tile_id_to", QVariant.String))


def _fields(described: tuple) -> QgsFields:
    result = QgsFields()
    for name, kind in described:
        result.append(QgsField(name, kind))
    return result


def match_fields() -> QgsFields:
    return _fields(MATCH_FIELDS)


def place_fields() -> QgsFields:
    return _fields(PLACE_FIELDS)


def change_fields() -> QgsFields:
    return _fields(CHANGE_FIELDS)


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


def _features(collection: dict, described: tuple) -> list[QgsFeature]:
    """The features of a GeoJSON answer with the `described` fields, in its order. Their text fields hold the
    server's text: OGR's GeoJSON reader rewrites a date ("2020-05-18T00:00:00+00:00") as "2020/05/18 00:00:00+00"."""
    features = QgsJsonUtils.stringToFeatureList(json.dumps(collection), _fields(described))
    texts = [name for name, kind in described if kind == QVariant.String]
    for feature, given in zip(features, collection["features"]):
        for name in texts:
            feature[name] = given["properties"].get(name)
    return features


def match_features(collection: dict) -> list[QgsFeature]:
    """The matches of a /search answer as features with MATCH_FIELDS, in rank order."""
    return _features(collection, MATCH_FIELDS)


def place_features(collection: dict) -> list[QgsFeature]:
    """The places of a detect job's result as multipolygon features with PLACE_FIELDS, the best first (a place
    whose tiles meet only at a corner is two polygons)."""
    features = _features(collection, PLACE_FIELDS)
    for feature in features:
        geometry = feature.geometry()
        geometry.convertToMultiType()
        feature.setGeometry(geometry)
    return features


def places_layer(collection: dict) -> QgsVectorLayer:
    """The places of a detect job's result as a styled memory layer."""
    layer = _memory_layer("MultiPolygon", WGS84, PLACES, place_fields(), place_features(collection))
    style_places(layer)
    return layer


def change_features(collection: dict) -> list[QgsFeature]:
    """The places of a /change answer as features with CHANGE_FIELDS, the most changed first."""
    return _features(collection, CHANGE_FIELDS)


def style_change(layer: QgsVectorLayer) -> None:
    """Places filled from pale yellow (unchanged) to dark red (most changed), in quantiles, so that the few that
    changed stand out from the many that did not."""
    _graduate(layer, "change", QgsFillSymbol.createSimple({"outline_style": "no"}), "YlOrRd",
              QgsClassificationQuantile())
    layer.setOpacity(0.7)


def style_places(layer: QgsVectorLayer) -> None:
    """Places filled, half transparent, from pale (weakest) to strong (best score), so a region of many shows
    where the best ones are and the land under them stays visible. The dock's layer and Processing's output."""
    _graduate(layer, "score_max", QgsFillSymbol.createSimple({"outline_color": "80,0,120", "outline_width": "0.3"}),
              "Purples", QgsClassificationEqualInterval())
    layer.setOpacity(0.6)


def matches_layer(collection: dict) -> QgsVectorLayer:
    """The matches of a /search answer as a styled memory layer."""
    layer = _memory_layer("Polygon", WGS84, MATCHES, match_fields(), match_features(collection))
    style_matches(layer)
    return layer


def _graduate(layer: QgsVectorLayer, field: str, symbol: QgsFillSymbol, ramp: str, classification) -> None:
    """Colour the layer's features by `field` along QGIS's colour ramp `ramp`, in up to five classes."""
    renderer = QgsGraduatedSymbolRenderer(field)
    renderer.setSourceSymbol(symbol)
    renderer.setSourceColorRamp(QgsStyle.defaultStyle().colorRamp(ramp))
    renderer.setClassificationMethod(classification)
    renderer.updateClasses(layer, min(5, max(1, layer.featureCount())))
    layer.setRenderer(renderer)


def style_matches(layer: QgsVectorLayer) -> None:
    """Footprint outlines coloured from pale (weakest) to strong (best score), with no fill, so the imagery under
    a match stays as it is; each labelled with its rank, placed in the part of the footprint in view. The dock's
    layer and Processing's output alike."""
    symbol = QgsFillSymbol.createSimple({})
    symbol.changeSymbolLayer(0, QgsSimpleLineSymbolLayer(QColor("red"), 0.8))  # an outline, in the score's colour
    _graduate(layer, "score", symbol, "Reds", QgsClassificationEqualInterval())

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
