"""The user's question as the project keeps it: the last box dragged (the query) and the places marked since as
like or unlike the places wanted (matches, or more boxes dragged with Shift held). Both are saved in the project
file, so reopening the project brings back what "Search again" and "Find all like these" send."""

import json
from typing import NamedTuple, Optional

from qgis.core import QgsCoordinateReferenceSystem, QgsProject, QgsRectangle

SCOPE = "geosearch"  # the project entries' scope


class Example(NamedTuple):
    """A place marked as like (`positive`) or unlike the places wanted; `label` says which, in the dock."""

    key: str  # the match's tile id, or the box as text: marking the same one again changes its sign
    positive: bool
    label: str
    request: dict  # as the server takes an example: {"tile_id": …} or {"bbox": […], "crs": …}


def box_request(box: QgsRectangle, crs: QgsCoordinateReferenceSystem) -> dict:
    """A box drawn in `crs` as the server takes it: the CRS by its authority id, or WKT when it has none."""
    return {"bbox": [box.xMinimum(), box.yMinimum(), box.xMaximum(), box.yMaximum()],
            "crs": crs.authid() or crs.toWkt(QgsCoordinateReferenceSystem.WKT_PREFERRED)}


def match_example(tile_id: str, positive: bool, label: str) -> Example:
    return Example(tile_id, positive, label, {"tile_id": tile_id})


def box_example(box: QgsRectangle, crs: QgsCoordinateReferenceSystem) -> Example:
    """A box dragged with Shift: a positive example."""
    request = box_request(box, crs)
    return Example(json.dumps(request), True, f"box in {request['crs'][:24]}", request)


Query = tuple[QgsRectangle, QgsCoordinateReferenceSystem]


def save(project: QgsProject, query: Optional[Query], examples: list[Example]) -> None:
    """Keep the query and the examples in the project (it then has unsaved changes, as after any edit)."""
    project.writeEntry(SCOPE, "query", json.dumps(box_request(*query) if query else None))
    project.writeEntry(SCOPE, "examples", json.dumps([example._asdict() for example in examples]))


def load(project: QgsProject) -> tuple[Optional[Query], list[Example]]:
    """The query and examples the project keeps; none for a project that keeps none, or none readable."""
    try:
        query = json.loads(project.readEntry(SCOPE, "query", "null")[0])
        examples = [Example(**example) for example in json.loads(project.readEntry(SCOPE, "examples", "[]")[0])]
    except (ValueError, TypeError):
        return None, []
    if not query:
        return None, examples
    crs = QgsCoordinateReferenceSystem(query["crs"])
    return (QgsRectangle(*query["bbox"]), crs), examples
