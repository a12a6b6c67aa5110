"""Time: the same place on other dates, and what changed between two dates or sets of scenes; siblings of search.

Place ids (tiling.Lattice.place_id) name the same ground at the same tiling in every scene cut on the archive's
aligned grid, so a place's tiles on other dates are found by that id in the store's payload index, not by how they
look.
- history: the tiles of one place (a tile's, or the one most under a box) in every scene, oldest first, each with
  its cosine similarity to the query.
- change: for every place covered on both sides (each side a Filters: scenes, dates, a region), the cosine distance
  between its vectors (a side's tiles of it averaged, when it has several), as polygons, the most changed first.
  Only places with a valid tile on each side count (a tile is stored only when valid: index's min_valid); places
  covered on one side only, and tiles with no place id (scene grids, shifted edge tiles), are counted as left out.
"""

from dataclasses import asdict, dataclass, field

import geopandas as gpd
import numpy as np
import shapely

from geosearch.errors import GeosearchError
from geosearch.query import Query
from geosearch.search import Filters, check_dimensions
from geosearch.store.archive import Archive, point_id
from geosearch.store.filters import Match, Range, where

HISTORY_FIELDS = ("step", "score", "tile_id", "place_id", "scene_id", "scene_path", "acquired", "valid_fraction")
CHANGE_FIELDS = ("rank", "change", "place_id", "tiles_from", "tiles_to", "acquired_from", "acquired_to",
                 "tile_id_from", "tile_id_to")


def place_under(archive: Archive, footprint: shapely.Geometry) -> str | None:
    """The place whose tile covers the most of `footprint` (EPSG:4326), or None when no tile with a place id
    touches it."""
    minx, miny, maxx, maxy = footprint.bounds
    touching = where(Range("min_lon", lte=maxx), Range("max_lon", gte=minx), Range("min_lat", lte=maxy),
                     Range("max_lat", gte=miny))
    best, most = None, 0.0
    for _, payload in archive.find_tiles(touching):
        if "place_id" not in payload:
            continue
        shared = shapely.geometry.shape(payload["footprint"]).intersection(footprint).area
        if shared > most:
            best, most = payload["place_id"], shared
    return best


def history(archive: Archive, query: Query) -> gpd.GeoDataFrame:
    """The query's place in every scene, oldest first (undated last), with each tile's similarity to the query."""
    check_dimensions(archive, query)
    place = None
    if query.description.get("type") == "tile":
        stored = archive.tile(point_id(query.description["tile_id"]))
        place = stored[1].get("place_id") if stored else None
    elif query.footprint is not None:
        place = place_under(archive, query.footprint)
    if place is None:
        raise GeosearchError("the query lies on no place of the archive's aligned grid (a picture, an edge tile "
                             "shifted off the lattice, a tile of a scene cut on its own grid, or ground no indexed "
                             "tile covers): it has no other dates")
    rows, shapes = [], []
    for ids, vectors, payloads in archive.vector_pages(where(Match("place_id", place))):
        for tile_id, vector, payload in zip(ids, vectors, payloads, strict=True):
            rows.append({"score": round(float(vector @ query.vector), 6), "tile_id": tile_id,
                         **{key: payload.get(key) for key in HISTORY_FIELDS[3:]}})
            shapes.append(shapely.geometry.shape(payload["footprint"]))
    frame = gpd.GeoDataFrame(rows, geometry=shapes, crs=4326).sort_values(
        ["acquired", "scene_id"], na_position="last", kind="stable", ignore_index=True)
    frame.insert(0, "step", np.arange(1, len(frame) + 1))
    return frame


@dataclass
class Side:
    """One side of a change, place by place: the sum of its tiles' vectors, how many, its latest tile and date."""

    sums: dict[str, np.ndarray] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    latest: dict[str, tuple[str, str, dict]] = field(default_factory=dict)  # place: (acquired, tile id, payload)
    scenes: set[str] = field(default_factory=set)
    off_lattice: int = 0  # tiles with no place id

    @classmethod
    def read(cls, archive: Archive, filters: Filters) -> "Side":
        side = cls()
        for ids, vectors, payloads in archive.vector_pages(filters.store_filter()):
            for tile_id, vector, payload, kept in zip(ids, vectors, payloads, filters.admits(payloads), strict=True):
                if not kept:
                    continue
                side.scenes.add(payload["scene_id"])
                place = payload.get("place_id")
                if place is None:
                    side.off_lattice += 1
                    continue
                side.sums[place] = side.sums.get(place, 0) + vector.astype(np.float64)
                side.counts[place] = side.counts.get(place, 0) + 1
                seen = (payload.get("acquired") or "", tile_id, payload)
                if place not in side.latest or seen[:2] > side.latest[place][:2]:
                    side.latest[place] = seen
        return side

    def unit(self, place: str) -> np.ndarray:
        return self.sums[place] / np.linalg.norm(self.sums[place])


@dataclass
class ChangeReport:
    """What a change compared, and what it left out and why."""

    places: int
    only_from: int  # places with a valid tile on the `from` side only
    only_to: int
    off_lattice_from: int
    off_lattice_to: int

    def to_dict(self) -> dict:
        return asdict(self)


def change(archive: Archive, from_side: Filters, to_side: Filters) -> tuple[gpd.GeoDataFrame, ChangeReport]:
    """Every place covered on both sides, the most changed first: `change` is the cosine distance (1 − cosine)
    between its vectors on the two sides, from 0 (the same) to 2."""
    sides = Side.read(archive, from_side), Side.read(archive, to_side)
    for name, side in zip(("from", "to"), sides, strict=True):
        if not side.scenes:
            raise GeosearchError(f"the {name} side holds no tile: no indexed scene matches its scenes, dates or region")
    if shared := sides[0].scenes & sides[1].scenes:
        raise GeosearchError(f"{len(shared)} scene(s) are on both sides (e.g. {sorted(shared)[0]}): a change needs "
                             "two different sets of scenes; give other scenes or dates that do not overlap")
    common = sorted(sides[0].sums.keys() & sides[1].sums.keys())
    report = ChangeReport(len(common), len(sides[0].sums.keys() - sides[1].sums.keys()),
                          len(sides[1].sums.keys() - sides[0].sums.keys()), sides[0].off_lattice,
                          sides[1].off_lattice)
    if not common:
        raise GeosearchError(f"the two sides share no place ({len(sides[0].sums)} and {len(sides[1].sums)} places): "
                             "their scenes do not overlap, or were cut on different lattices (another CRS, pixel "
                             "size or tile size), so no tile of one is the same ground as a tile of the other")
    distance = np.array([1 - float(sides[0].unit(p) @ sides[1].unit(p)) for p in common])
    order = np.argsort(-distance, kind="stable")
    rows, shapes = [], []
    for rank, i in enumerate(order, start=1):
        place = common[i]
        (when_from, tile_from, payload), (when_to, tile_to, _) = sides[0].latest[place], sides[1].latest[place]
        rows.append({"rank": rank, "change": round(float(distance[i]), 6), "place_id": place,
                     "tiles_from": sides[0].counts[place], "tiles_to": sides[1].counts[place],
                     "acquired_from": when_from or None, "acquired_to": when_to or None,
                     "tile_id_from": tile_from, "tile_id_to": tile_to})
        shapes.append(shapely.geometry.shape(payload["footprint"]))
    return gpd.GeoDataFrame(rows, geometry=shapes, crs=4326), report
