"""The search, "find all like these" and the change between dates as Processing algorithms, so they run in the
graphical modeler, in batch mode and from scripts: an extent and k in, the matches as a polygon layer out; layers of
example polygons in, the places like them out; two sides (scenes, dates) in, the places graded by change out. The
server (and for the first two, the filters) come from the plugin's settings."""

from pathlib import Path

from qgis.core import (
    QgsFeatureSink,
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingLayerPostProcessorInterface,
    QgsProcessingParameterEnum,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
    QgsProcessingProvider,
    QgsVectorLayer,
    QgsWkbTypes,
)
from qgis.PyQt.QtGui import QIcon

from .client import ServiceError
from .examples import box_request
from .layers import (
    WGS84,
    change_features,
    change_fields,
    match_features,
    match_fields,
    place_features,
    place_fields,
    style_change,
    style_matches,
    style_places,
)
from .settings import Settings

ICON = str(Path(__file__).with_name("icons") / "geosearch.svg")


class _Styled(QgsProcessingLayerPostProcessorInterface):
    """Gives the output layer the dock's style once QGIS loads it."""

    def __init__(self, style):
        super().__init__()
        self.style = style

    def postProcessLayer(self, layer, context, feedback) -> None:
        if isinstance(layer, QgsVectorLayer):
            self.style(layer)


# QGIS keeps no reference to a post-processor: these live as long as the plugin.
STYLED, STYLED_PLACES, STYLED_CHANGE = _Styled(style_matches), _Styled(style_places), _Styled(style_change)


class _ServerAlgorithm(QgsProcessingAlgorithm):
    """What the algorithms share: the icon, the server's client, and writing the answer's features to OUTPUT."""

    OUTPUT = "OUTPUT"

    def icon(self) -> QIcon:
        return QIcon(ICON)

    def prepareAlgorithm(self, parameters, context, feedback) -> bool:
        """The saved settings and their client, made on the interface thread (Processing runs processAlgorithm in
        one of its own), where QGIS may ask for the master password that unlocks the server's token."""
        self.settings = Settings.load()
        self.client = self.settings.client()
        return True

    def write_output(self, parameters, context, fields, geometry_type, features, styled: _Styled) -> dict:
        sink, destination = self.parameterAsSink(parameters, self.OUTPUT, context, fields, geometry_type, WGS84)
        if sink is None:
            raise QgsProcessingException(self.invalidSinkError(parameters, self.OUTPUT))
        for feature in features:
            sink.addFeature(feature, QgsFeatureSink.FastInsert)
        if context.willLoadLayerOnCompletion(destination):
            context.layerToLoadOnCompletionDetails(destination).setPostProcessor(styled)
        return {self.OUTPUT: destination}


class FindSimilarPatches(_ServerAlgorithm):
    EXTENT, K = "EXTENT", "K"

    def name(self) -> str:
        return "findsimilarpatches"

    def displayName(self) -> str:
        return "Find similar patches"

    def shortHelpString(self) -> str:
        return ("Finds the places in the geosearch archive that look like the land inside the extent, through "
                "the server set in the plugin's settings. The output holds each match's footprint with its rank, "
                "score, scene and date.")

    def createInstance(self) -> "FindSimilarPatches":
        return FindSimilarPatches()

    def initAlgorithm(self, config=None) -> None:
        self.addParameter(QgsProcessingParameterExtent(self.EXTENT, "Box to match"))
        self.addParameter(QgsProcessingParameterNumber(
            self.K, "Number of matches", QgsProcessingParameterNumber.Integer, defaultValue=Settings.load().k,
            minValue=1, maxValue=1000))
        self.addParameter(QgsProcessingParameterFeatureSink(self.OUTPUT, "Matches", QgsProcessing.TypeVectorPolygon))

    def processAlgorithm(self, parameters, context, feedback) -> dict:
        crs = self.parameterAsExtentCrs(parameters, self.EXTENT, context)
        box = self.parameterAsExtent(parameters, self.EXTENT, context, crs)
        body = self.settings.search_body(box, crs, self.parameterAsInt(parameters, self.K, context))
        feedback.pushInfo(f"searching {self.settings.url} with {body}")
        try:
            matches = self.client.search(body, feedback)
        except ServiceError as error:
            raise QgsProcessingException(str(error)) from None
        feedback.pushInfo(f"{len(matches['features'])} match(es)")
        return self.write_output(parameters, context, match_fields(), QgsWkbTypes.Polygon, match_features(matches),
                                 STYLED)


class FindAllLikeThese(_ServerAlgorithm):
    POSITIVES, NEGATIVES, METHOD, THRESHOLD = "POSITIVES", "NEGATIVES", "METHOD", "THRESHOLD"
    METHODS = ("score", "classifier")

    def name(self) -> str:
        return "findalllikethese"

    def displayName(self) -> str:
        return "Find all places like these"

    def shortHelpString(self) -> str:
        return ("Finds every place in the geosearch archive like the example polygons and unlike the optional "
                "negative ones (each polygon's bounding box is one example, in its layer's CRS), through the server "
                "set in the plugin's settings. Each tile of the archive is scored; those at or above the threshold "
                "(learned from the examples unless given) are merged, where they touch, into places with their area, "
                "tile count and scores. score: cosine to the nearest positive, nearer no negative; classifier: "
                "logistic regression on the examples.")

    def createInstance(self) -> "FindAllLikeThese":
        return FindAllLikeThese()

    def initAlgorithm(self, config=None) -> None:
        self.addParameter(QgsProcessingParameterFeatureSource(
            self.POSITIVES, "Places like the ones wanted", [QgsProcessing.TypeVectorPolygon]))
        self.addParameter(QgsProcessingParameterFeatureSource(
            self.NEGATIVES, "Places unlike them", [QgsProcessing.TypeVectorPolygon], optional=True))
        self.addParameter(QgsProcessingParameterEnum(self.METHOD, "Method", self.METHODS, defaultValue=0))
        self.addParameter(QgsProcessingParameterNumber(
            self.THRESHOLD, "Threshold (empty: learned from the examples)", QgsProcessingParameterNumber.Double,
            optional=True))
        self.addParameter(QgsProcessingParameterFeatureSink(self.OUTPUT, "Places", QgsProcessing.TypeVectorPolygon))

    def _boxes(self, parameters, name: str, context) -> list:
        source = self.parameterAsSource(parameters, name, context)
        if source is None:
            return []
        boxes = (feature.geometry().boundingBox() for feature in source.getFeatures())
        return [box_request(box, source.sourceCrs()) for box in boxes if not box.isEmpty()]

    def processAlgorithm(self, parameters, context, feedback) -> dict:
        positives = self._boxes(parameters, self.POSITIVES, context)
        if not positives:
            raise QgsProcessingException("the layer of places like the ones wanted has no polygon")
        body = {"positives": positives, "negatives": self._boxes(parameters, self.NEGATIVES, context),
                "method": self.METHODS[self.parameterAsEnum(parameters, self.METHOD, context)]}
        if parameters.get(self.THRESHOLD) is not None:
            body["threshold"] = self.parameterAsDouble(parameters, self.THRESHOLD, context)
        body.update(self.settings.dates())
        feedback.pushInfo(f"finding places on {self.settings.url}: {len(body['positives'])} positive and "
                          f"{len(body['negatives'])} negative example(s), method {body['method']}")
        try:
            places = self.client.detect(body, feedback, feedback.setProgress)
        except ServiceError as error:
            raise QgsProcessingException(str(error)) from None
        feedback.pushInfo(f"{len(places['features'])} place(s)")
        return self.write_output(parameters, context, place_fields(), QgsWkbTypes.MultiPolygon,
                                 place_features(places), STYLED_PLACES)


class ChangeBetweenDates(_ServerAlgorithm):
    SIDES = ("FROM", "TO")
    TOP = "TOP"

    def name(self) -> str:
        return "changebetweendates"

    def displayName(self) -> str:
        return "Change between dates"

    def shortHelpString(self) -> str:
        return ("Compares two sides of the geosearch archive, each some scenes (ids or paths, separated by ';') and/or "
                "a date range (YYYY-MM-DD, either end may be left empty): for every place (the same ground on the "
                "archive's aligned grid) covered by both, the cosine distance between its vectors, from 0 (the "
                "same) up to 2, the most changed first. Places covered on one side only are left out, and counted "
                "in the log.")

    def createInstance(self) -> "ChangeBetweenDates":
        return ChangeBetweenDates()

    def initAlgorithm(self, config=None) -> None:
        for side, name in zip(self.SIDES, ("Earlier", "Later")):
            self.addParameter(QgsProcessingParameterString(f"{side}_SCENES", f"{name} scenes", optional=True))
            self.addParameter(QgsProcessingParameterString(f"{side}_AFTER", f"{name}: acquired on or after",
                                                           optional=True))
            self.addParameter(QgsProcessingParameterString(f"{side}_BEFORE", f"{name}: acquired on or before",
                                                           optional=True))
        self.addParameter(QgsProcessingParameterNumber(self.TOP, "Only the most changed places (empty: all)",
                                                       QgsProcessingParameterNumber.Integer, optional=True, minValue=1))
        self.addParameter(QgsProcessingParameterFeatureSink(self.OUTPUT, "Change", QgsProcessing.TypeVectorPolygon))

    def processAlgorithm(self, parameters, context, feedback) -> dict:
        body = {}
        for side, key in zip(self.SIDES, ("from", "to")):
            scenes = self.parameterAsString(parameters, f"{side}_SCENES", context)
            body[key] = {"scenes": [scene.strip() for scene in scenes.split(";") if scene.strip()]}
            for bound in ("after", "before"):
                value = self.parameterAsString(parameters, f"{side}_{bound.upper()}", context).strip()
                if value:
                    body[key][bound] = value
        if parameters.get(self.TOP) is not None:
            body["top"] = self.parameterAsInt(parameters, self.TOP, context)
        feedback.pushInfo(f"comparing on {self.settings.url}: {body}")
        try:
            changed = self.client.change(body, feedback)
        except ServiceError as error:
            raise QgsProcessingException(str(error)) from None
        report = changed["report"]
        feedback.pushInfo(f"{report['places']} place(s) compared; left out: {report['only_from']} covered only "
                          f"earlier and {report['only_to']} only later, {report['off_lattice_from']} + "
                          f"{report['off_lattice_to']} tile(s) off the archive's lattice")
        return self.write_output(parameters, context, change_fields(), QgsWkbTypes.Polygon,
                                 change_features(changed), STYLED_CHANGE)


class Provider(QgsProcessingProvider):
    def id(self) -> str:
        return "geosearch"

    def name(self) -> str:
        return "geosearch"

    def icon(self) -> QIcon:
        return QIcon(ICON)

    def loadAlgorithms(self) -> None:
        self.addAlgorithm(FindSimilarPatches())
        self.addAlgorithm(FindAllLikeThese())
        self.addAlgorithm(ChangeBetweenDates())
