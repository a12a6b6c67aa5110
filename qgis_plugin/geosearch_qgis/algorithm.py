"""The search as a Processing algorithm, so it runs in the graphical modeler, in batch mode and from scripts:
an extent and k in, the matches as a polygon layer out. The server and filters come from the plugin's settings."""

from pathlib import Path

from qgis.core import (
    QgsFeatureSink,
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingLayerPostProcessorInterface,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterNumber,
    QgsProcessingProvider,
    QgsVectorLayer,
    QgsWkbTypes,
)
from qgis.PyQt.QtGui import QIcon

from .client import ServiceError
from .layers import WGS84, match_features, match_fields, style_matches
from .settings import Settings

ICON = str(Path(__file__).with_name("icons") / "geosearch.svg")


class _Styled(QgsProcessingLayerPostProcessorInterface):
    """Gives the output layer the dock's style once QGIS loads it."""

    def postProcessLayer(self, layer, context, feedback) -> None:
        if isinstance(layer, QgsVectorLayer):
            style_matches(layer)


STYLED = _Styled()  # QGIS keeps no reference to a post-processor: this one lives as long as the plugin


class FindSimilarPatches(QgsProcessingAlgorithm):
    EXTENT, K, OUTPUT = "EXTENT", "K", "OUTPUT"

    def name(self) -> str:
        return "findsimilarpatches"

    def displayName(self) -> str:
        return "Find similar patches"

    def shortHelpString(self) -> str:
        return ("Finds the places in the geosearch archive that look like the land inside the extent, through "
                "the server set in the plugin's settings. The output holds each match's footprint with its rank, "
                "score, scene and date.")

    def icon(self) -> QIcon:
        return QIcon(ICON)

    def createInstance(self) -> "FindSimilarPatches":
        return FindSimilarPatches()

    def initAlgorithm(self, config=None) -> None:
        self.addParameter(QgsProcessingParameterExtent(self.EXTENT, "Box to match"))
        self.addParameter(QgsProcessingParameterNumber(
            self.K, "Number of matches", QgsProcessingParameterNumber.Integer, defaultValue=Settings.load().k,
            minValue=1, maxValue=1000))
        self.addParameter(QgsProcessingParameterFeatureSink(self.OUTPUT, "Matches", QgsProcessing.TypeVectorPolygon))

    def prepareAlgorithm(self, parameters, context, feedback) -> bool:
        """The saved settings and their client, made on the interface thread (Processing runs processAlgorithm in
        one of its own), where QGIS may ask for the master password that unlocks the server's token."""
        self.settings = Settings.load()
        self.client = self.settings.client()
        return True

    def processAlgorithm(self, parameters, context, feedback) -> dict:
        crs = self.parameterAsExtentCrs(parameters, self.EXTENT, context)
        box = self.parameterAsExtent(parameters, self.EXTENT, context, crs)
        body = self.settings.search_body(box, crs, self.parameterAsInt(parameters, self.K, context))
        feedback.pushInfo(f"searching {self.settings.url} with {body}")
        try:
            matches = self.client.search(body, feedback)
        except ServiceError as error:
            raise QgsProcessingException(str(error)) from None
        sink, destination = self.parameterAsSink(parameters, self.OUTPUT, context, match_fields(),
                                                 QgsWkbTypes.Polygon, WGS84)
        if sink is None:
            raise QgsProcessingException(self.invalidSinkError(parameters, self.OUTPUT))
        for feature in match_features(matches):
            sink.addFeature(feature, QgsFeatureSink.FastInsert)
        feedback.pushInfo(f"{len(matches['features'])} match(es)")
        if context.willLoadLayerOnCompletion(destination):
            context.layerToLoadOnCompletionDetails(destination).setPostProcessor(STYLED)
        return {self.OUTPUT: destination}


class Provider(QgsProcessingProvider):
    def id(self) -> str:
        return "geosearch"

    def name(self) -> str:
        return "geosearch"

    def icon(self) -> QIcon:
        return QIcon(ICON)

    def loadAlgorithms(self) -> None:
        self.addAlgorithm(FindSimilarPatches())
