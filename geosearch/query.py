"""Query vectors: from a box drawn on the map, an indexed tile, or a plain picture.

A box is read from a raster at the archive's scale: matches are tiles of `tile_size` pixels, so the query is
made of tiles of that size too, never of the box stretched or squeezed to the encoder's input.
- A box no bigger than one tile: the one tile centred on it (the box plus its surroundings, as a tile shows it).
- A bigger box: the fewest tiles that cover it, spread evenly from edge to edge (at most MAX_QUERY_TILES per
  side; a box wider than that is sampled by that many tiles spread over it). Their unit vectors are averaged and
  the mean renormalised, so the query is the direction the box's tiles share.
Tiles with less than the archive's `min_valid` fraction of valid pixels are left out.

A query may be refined with more examples of any of these kinds: positives, like the places wanted, and
negatives, unlike them (search.py says how they are searched).
"""

import dataclasses
import functools
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import antimeridian
import numpy as np
import rasterio.transform
import shapely
import shapely.affinity
import torch
from PIL import Image, UnidentifiedImageError
from pyproj import CRS, Transformer
from pyproj.exceptions import CRSError
from rasterio.errors import RasterioError, WindowError
from rasterio.warp import transform_bounds
from rasterio.windows import Window, from_bounds

from geosearch.encoder.default import name_of, open_model
from geosearch.encoder.device import resolve_device
from geosearch.encoder.runtime import Embedder, load_encoder
from geosearch.errors import GeosearchError
from geosearch.files import check_readable
from geosearch.footprints import WGS84, wrap_longitude
from geosearch.index import archive_stretches, grid_mode, open_indexed, rereadable, tiling_of
from geosearch.scene import Scene, read_masked
from geosearch.store.archive import Archive, point_id
from geosearch.tiling import TilingOptions, grid_at, read_tile

MAX_QUERY_TILES = 8  # per side: a box of up to 8 × 8 tiles is covered whole
MAX_EXAMPLES = 32  # in one query, itself included: each box is embedded, and each example is scored on every tile
QUICKLOOK_SIDE = 256  # pixels of the query picture kept for the quicklook
MAX_PICTURE_PIXELS = 64 * 10**6  # an --image larger than this is refused before it is decoded
PICTURE_SIDE = 2048  # an --image is reduced to this side: the encoder sees a few hundred pixels of it


class NoDataUnderBox(GeosearchError):
    """The scene asked to show the box has no valid pixels under it (another scene may have)."""


@dataclass(frozen=True)
class Box:
    """A box drawn on a map, in its own CRS."""

    minx: float
    miny: float
    maxx: float
    maxy: float
    crs: CRS

    @classmethod
    def parse(cls, bounds: tuple[float, float, float, float], crs: str = "EPSG:4326") -> "Box":
        try:
            parsed = CRS.from_user_input(crs)
        except CRSError:
            raise GeosearchError(f"unknown CRS {crs!r}; give an EPSG code (EPSG:4326), WKT or PROJ string") from None
        minx, miny, maxx, maxy = bounds
        if not all(map(math.isfinite, (*bounds, maxx - minx, maxy - miny))):
            raise GeosearchError(f"box {list(bounds)} has a coordinate that is infinite or not a number, or is too "
                                 "large to measure")
        crosses = parsed.is_geographic and minx > maxx  # across the antimeridian, as RFC 7946 writes it
        if (minx >= maxx and not crosses) or miny >= maxy:
            problem = "zero width or height" if minx == maxx or miny == maxy else "min above max"
            raise GeosearchError(f"box {list(bounds)} is empty ({problem}); give MINX MINY MAXX MAXY")
        if parsed.is_geographic and (minx < -180 or maxx > 180 or miny < -90 or maxy > 90):
            raise GeosearchError(f"box {list(bounds)} leaves the globe: longitudes go from -180 to 180 and "
                                 f"latitudes from -90 to 90 in {parsed.to_string()}")
        return cls(minx, miny, maxx, maxy, parsed)

    @property
    def east(self) -> float:
        """The east edge; past 180 for a lon/lat box across the antimeridian, so that the box stays one piece."""
        return self.maxx + 360 if self.minx > self.maxx else self.maxx

    def polygon(self, crs: CRS) -> shapely.Polygon:
        """The box in another CRS, its edges densified so that they stay true where straight lines bend. In lon/lat
        it is one piece, whose longitudes may run past 180 (see lonlat)."""
        ring = shapely.segmentize(shapely.box(self.minx, self.miny, self.east, self.maxy),
                                  max(self.east - self.minx, self.maxy - self.miny) / 64)
        if crs == self.crs:
            return ring
        transformer = Transformer.from_crs(self.crs, crs, always_xy=True)
        moved = shapely.transform(ring, lambda xy: np.column_stack(transformer.transform(xy[:, 0], xy[:, 1])))
        if not np.isfinite(moved.bounds).all():
            raise GeosearchError(f"box {self.describe()['bbox']} ({self.crs.to_string()}) has no place in "
                                 f"{crs.to_string()}: is it in the CRS given?")
        return moved

    def lonlat(self) -> shapely.Geometry:
        """The box in lon/lat as stored footprints are: longitudes in [-180, 180], in two parts where it crosses the
        antimeridian."""
        outline = self.polygon(WGS84)
        if not (np.isfinite(outline.bounds).all() and outline.area > 0):
            raise GeosearchError(f"box {self.describe()['bbox']} ({self.crs.to_string()}) has no area on the globe "
                                 "(too small, or outside where its CRS is defined)")
        west, _, east, _ = outline.bounds
        if west >= -180 and east <= 180 and east - west <= 180:
            return outline
        wrapped = shapely.transform(outline, lambda xy: np.column_stack([wrap_longitude(xy[:, 0]), xy[:, 1]]))
        return antimeridian.fix_polygon(wrapped, fix_winding=False)

    def describe(self) -> dict:
        return {"bbox": [self.minx, self.miny, self.maxx, self.maxy], "crs": self.crs.to_string()}

    def clipped(self, bounds: tuple[float, float, float, float]) -> "Box":
        """The part of the box within `bounds` (in its CRS): a box of the whole globe over a UTM scene is the scene's
        part of it, not a shape beyond where the scene's CRS is defined. Itself where it crosses the antimeridian
        or lies apart."""
        minx, miny = max(self.minx, bounds[0]), max(self.miny, bounds[1])
        maxx, maxy = min(self.maxx, bounds[2]), min(self.maxy, bounds[3])
        if self.minx > self.maxx or minx >= maxx or miny >= maxy:
            return self
        return dataclasses.replace(self, minx=minx, miny=miny, maxx=maxx, maxy=maxy)


@dataclass(frozen=True)
class Query:
    """A unit vector to search with, what it covers on the ground (None for a picture) and what it shows. Refined
    with examples, it also carries more queries like the wanted places (positives; itself is the first) and
    queries unlike them (negatives)."""

    vector: np.ndarray
    footprint: shapely.Geometry | None  # EPSG:4326
    pixels: np.ndarray | None  # (3, H, W) uint8, for the quicklook
    scene_id: str | None
    description: dict  # goes into every exported match as `query`
    positives: tuple["Query", ...] = ()
    negatives: tuple["Query", ...] = ()

    def examples(self) -> tuple["Query", ...]:
        """Itself, then its other positives, then its negatives."""
        return (self, *self.positives, *self.negatives)


def _embed(encoder: Embedder, pixels: np.ndarray, device: torch.device) -> np.ndarray:
    """(n, 3, S, S) uint8 → the normalised mean of their unit vectors."""
    with torch.inference_mode():
        vectors = encoder.to(device).eval()(torch.from_numpy(pixels).to(device)).float().cpu().numpy()
    mean = vectors.mean(axis=0)
    return mean / np.linalg.norm(mean)


def _starts(start: float, stop: float, size: int) -> np.ndarray:
    """Offsets of the fewest `size`-long tiles covering [start, stop), first at the start and last at the stop;
    one tile centred on a shorter span; at most MAX_QUERY_TILES spread over a longer one."""
    count = min(max(1, math.ceil((stop - start) / size)), MAX_QUERY_TILES)
    if count == 1:
        return np.array([round((start + stop - size) / 2)])
    return np.round(np.linspace(start, stop - size, count)).astype(int)


def _covering_offsets(window: Window, size: int) -> np.ndarray:
    rows = _starts(window.row_off, window.row_off + window.height, size)
    cols = _starts(window.col_off, window.col_off + window.width, size)
    return np.array([(r, c) for r in rows for c in cols], dtype=np.int64)


def _overview(scene: Scene, window: Window) -> np.ndarray:
    """The box's pixels within the scene, at most QUICKLOOK_SIDE on a side, stretched as the tiles are."""
    rounded = window.round_offsets().round_lengths()
    inside = Window(min(rounded.col_off, scene.grid.width - 1), min(rounded.row_off, scene.grid.height - 1),
                    max(1, rounded.width), max(1, rounded.height)).intersection(  # a box thinner than a pixel
        Window(0, 0, scene.grid.width, scene.grid.height))                      # shows its pixel
    scale = QUICKLOOK_SIDE / max(inside.width, inside.height)
    shape = (max(1, round(inside.height * scale)), max(1, round(inside.width * scale)))
    raw, valid = read_masked(scene.grid, scene.bands, inside, out_shape=shape,
                             nodata=scene.value_nodata)
    pixels = scene.stretch.apply(raw)
    pixels[:, ~valid] = 0
    return pixels


def _in_scene_longitudes(outline: shapely.Geometry, extent: shapely.Geometry) -> shapely.Geometry:
    """A lon/lat outline moved by a whole turn where that meets a scene in degrees whose longitudes run past ±180."""
    for turn in (0, 360, -360):
        moved = shapely.affinity.translate(outline, xoff=turn)
        if moved.intersects(extent):
            return moved
    return outline


def box_query(box: Box, scene: Scene, tiling: TilingOptions, encoder: Embedder, device: torch.device) -> Query:
    """Embed what `scene` shows under `box`, as the module docstring describes."""
    extent = shapely.box(*rasterio.transform.array_bounds(scene.grid.height, scene.grid.width, scene.grid.transform))
    try:
        near = box.clipped(transform_bounds(scene.grid.crs, box.crs, *extent.bounds, densify_pts=21))
    except (RasterioError, ValueError):  # the scene has no place in the box's CRS: the box as it is
        near = box
    try:
        outline = near.polygon(scene.grid.crs)
    except GeosearchError:  # the box has no place in this scene's CRS
        outline = None
    if outline is not None and CRS.from_user_input(scene.grid.crs).is_geographic:
        outline = _in_scene_longitudes(outline, extent)
    if outline is None or not outline.intersects(extent):
        raise NoDataUnderBox(f"{scene.path}: the box {box.describe()['bbox']} ({box.crs.to_string()}) lies outside "
                             "this scene")
    try:  # the part of the box over the scene: a box of the whole globe reads the scene, not the globe
        window = from_bounds(*outline.bounds, transform=scene.grid.transform).intersection(
            Window(0, 0, scene.grid.width, scene.grid.height))
    except WindowError:
        raise NoDataUnderBox(f"{scene.path}: the box {box.describe()['bbox']} ({box.crs.to_string()}) only touches "
                             "this scene") from None
    grid = grid_at(scene, _covering_offsets(window, tiling.tile_size), tiling.tile_size, tiling.tile_size)
    tiles = [read_tile(scene, int(r), int(c), tiling.tile_size) for r, c in grid.offsets]
    kept = [i for i, (_, valid) in enumerate(tiles) if valid >= tiling.min_valid]
    if not kept:
        raise NoDataUnderBox(f"{scene.path}: the box covers no tile with {tiling.min_valid:.0%} valid pixels "
                             "(nodata or outside the scene); draw it over the scene's data")
    vector = _embed(encoder, np.stack([tiles[i][0] for i in kept]), device)
    return Query(vector=vector, footprint=shapely.union_all(grid.footprints.wgs84[kept]),
                 pixels=_overview(scene, window), scene_id=scene.scene_id,
                 description={"type": "bbox", **box.describe(), "scene_id": scene.scene_id, "scene_path": scene.path,
                              "tiles": len(kept), "tile_size": tiling.tile_size})


def covering_scenes(archive: Archive, box: Box) -> list[dict]:
    """Complete scenes whose data meets the box, the one covering most of it first; on a tie the finer one,
    then the first by path."""
    area = box.lonlat()
    scenes = [record for record in archive.complete_scenes() if rereadable(record)]
    if not scenes:
        raise GeosearchError("the archive's scenes came from embedding files, without their rasters: a box cannot "
                             "be read from them; query by --tile")
    footprints = [shapely.geometry.shape(r["footprint"]) for r in scenes]
    cover = [shapely.intersection(f, area).area / area.area for f in footprints]
    order = sorted(range(len(scenes)), key=lambda i: (-round(cover[i], 3), float(f"{scenes[i]['gsd_m']:.2g}"),
                                                      scenes[i]["path"]))
    covering = [scenes[i] for i in order if cover[i] > 0]
    if not covering:
        extent = ", ".join(f"{v:.4f}" for v in shapely.union_all(footprints).bounds)
        raise GeosearchError(f"the box {box.describe()['bbox']} ({box.crs.to_string()}) lies outside every indexed "
                             f"scene; the archive covers lon/lat {extent}")
    return covering


def scene_query(box: Box, records: list[dict], encoder: Embedder, device: torch.device) -> Query:
    """The box read from the first of these indexed scenes that has data under it, exactly as it was indexed."""
    failure: GeosearchError = GeosearchError("no scene to read the box from")
    for record in records:
        with open_indexed(record) as scene:
            try:
                return box_query(box, scene, tiling_of(record), encoder, device)
            except NoDataUnderBox as error:
                failure = error
    raise failure


def raster_query(archive: Archive, path: str, box: Box, encoder: Embedder, device: torch.device) -> Query:
    """The box read from any raster, indexed or not, cut as the archive's scenes mostly are and stretched as the
    archive stretches its profile (its own stretch when the archive has none for it)."""
    tiling = archive_tiling(archive)
    with tiling.open(path, profiles=archive_stretches(archive, tiling)) as scene:
        return box_query(box, scene, tiling, encoder, device)


def tile_query(archive: Archive, tile_id: str) -> Query:
    """An indexed tile: its stored vector and footprint, and its pixels when its scene can still be read. Its id is
    geosearch's, or the one an imported embedding file gave it."""
    stored = archive.tile(point_id(tile_id))
    if stored is None:
        raise GeosearchError(f"no tile {tile_id} in the archive ({archive.backend.location}, {archive.collection})")
    vector, payload = stored
    return Query(vector=vector, footprint=shapely.geometry.shape(payload["footprint"]),
                 pixels=tile_pixels(archive, payload), scene_id=payload["scene_id"],
                 description={"type": "tile", "tile_id": tile_id, "scene_id": payload["scene_id"],
                              "scene_path": payload["scene_path"]})


def tile_pixels(archive: Archive, payload: dict) -> np.ndarray | None:
    """A stored tile's pixels, read again from its scene; None when the scene file is gone or unreadable."""
    record = archive.scene(payload["scene_id"])
    if record is None or not rereadable(record) or not Path(record["path"]).exists():
        return None
    try:
        with open_indexed(record) as scene:
            return read_tile(scene, payload["row"], payload["col"], payload["tile_size"])[0]
    except GeosearchError:
        return None


def image_query(path: str, encoder: Embedder, device: torch.device) -> Query:
    """A plain picture (PNG, JPEG…): its central square, which the encoder resizes to its input. It has no place
    on the ground, so nothing is excluded as the query itself; it should show land at about the archive's scale."""
    check_readable(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # refused below, in one line
            image = Image.open(path)
        with image:
            if image.width * image.height > MAX_PICTURE_PIXELS:
                raise Image.DecompressionBombError
            image.draft("RGB", (PICTURE_SIDE, PICTURE_SIDE))  # JPEG decodes at a reduced scale
            image.thumbnail((PICTURE_SIDE, PICTURE_SIDE))
            rgb = np.asarray(image.convert("RGB"))
    except Image.DecompressionBombError:  # Pillow's own limit is larger
        raise GeosearchError(f"{path}: over {MAX_PICTURE_PIXELS // 10**6} megapixels; --image takes a smaller picture "
                             "(crop it to the place)") from None
    except (OSError, UnidentifiedImageError) as error:
        reason = "no such file" if isinstance(error, FileNotFoundError) else "not a picture Pillow can read"
        raise GeosearchError(f"{path}: {reason}; --image takes PNG, JPEG and the like (use --raster for GeoTIFFs)") \
            from None
    side = min(rgb.shape[:2])
    top, left = (rgb.shape[0] - side) // 2, (rgb.shape[1] - side) // 2
    pixels = np.ascontiguousarray(rgb[top:top + side, left:left + side].transpose(2, 0, 1))
    return Query(vector=_embed(encoder, pixels[None], device), footprint=None, pixels=pixels, scene_id=None,
                 description={"type": "image", "image": str(Path(path).resolve())})


def encoder_for(archive: Archive, model_spec: str, device: str,
                runtime: str = "auto") -> tuple[Embedder, torch.device]:
    """The encoder that made the archive's vectors: a query embedded by another model would mean nothing."""
    checkpoint = open_model(model_spec)
    if checkpoint.model_id != archive.model_id:
        name = name_of(archive.model_id)
        remedy = f"pass --model {name}" if name else "pass the checkpoint it was indexed with"
        raise GeosearchError(f"the archive ({archive.collection}) holds vectors of model {archive.model_id}; "
                             f"--model {model_spec} is {checkpoint.model_id}: {remedy}")
    torch_device = resolve_device(device)
    return load_encoder(checkpoint, torch_device, runtime), torch_device


def _example(archive: Archive, encoder: Callable[[], tuple[Embedder, torch.device]], *, bbox: tuple | None = None,
             crs: str = "EPSG:4326", tile: str | None = None, image: str | None = None, query_scene: str | None = None,
             raster: str | None = None) -> Query:
    """One query of build_query's kinds."""
    if sum(x is not None for x in (bbox, tile, image)) != 1:
        raise GeosearchError("give one query: --bbox MINX MINY MAXX MAXY, --tile ID or --image PATH")
    if tile is not None:
        return tile_query(archive, tile)
    model, torch_device = encoder()
    if image is not None:
        return image_query(image, model, torch_device)
    box = Box.parse(bbox, crs)
    if raster:
        return raster_query(archive, raster, box, model, torch_device)
    records = archive.find_scenes(query_scene)[:1] if query_scene else covering_scenes(archive, box)
    return scene_query(box, records, model, torch_device)


@dataclass(frozen=True)
class ExampleNames:
    """How the user names a query and the positives, for build_query's errors: the command line's options (the
    default) or a request's fields."""

    query: str = "a query (--bbox, --tile or --image)"
    positives: str = "a --positive"


def build_query(archive: Archive, *, bbox: tuple | None = None, crs: str = "EPSG:4326", tile: str | None = None,
                image: str | None = None, query_scene: str | None = None, raster: str | None = None,
                positives: Sequence[dict] = (), negatives: Sequence[dict] = (),
                encoder: Callable[[], tuple[Embedder, torch.device]] | None = None,
                names: ExampleNames = ExampleNames()) -> Query:
    """The query a user describes: exactly one of a box (read from `query_scene`, from `raster`, or from the
    indexed scene covering most of it), a stored tile, or a picture; refined by `positives` and `negatives`, more
    examples each given as this function's keywords (`bbox` with `crs`, `tile` or `image`). Without a query, the
    first positive is the query. `encoder` gives the archive's encoder when a query needs embedding (default: the
    default model, checked against the archive, on the best device); it is asked once. Errors call the query and
    the positives by `names`."""
    if (query_scene or raster) and bbox is None:
        raise GeosearchError("--query-scene and --raster say where a --bbox is read from; they need --bbox")
    if query_scene and raster:
        raise GeosearchError("--query-scene and --raster both say where to read the box: give one")
    given = any(x is not None for x in (bbox, tile, image))
    if negatives and not (given or positives):
        raise GeosearchError(f"a negative needs at least one positive: give {names.query} or {names.positives}")
    count = given + len(positives) + len(negatives)
    if count > MAX_EXAMPLES:
        raise GeosearchError(f"{count} examples: give at most {MAX_EXAMPLES} in all (the query, positives and "
                             "negatives)")
    embedder = functools.cache(encoder or (lambda: encoder_for(archive, "default", "auto")))
    first, *more = ([{"bbox": bbox, "crs": crs, "tile": tile, "image": image, "query_scene": query_scene,
                      "raster": raster}] if given or not positives else []) + list(positives)
    query = _example(archive, embedder, **first)
    if not (more or negatives):
        return query
    like = tuple(_example(archive, embedder, **example) for example in more)
    unlike = tuple(_example(archive, embedder, **example) for example in negatives)
    return dataclasses.replace(query, positives=like, negatives=unlike, description=query.description | {
        "positives": [q.description for q in like], "negatives": [q.description for q in unlike]})


def archive_tiling(archive: Archive) -> TilingOptions:
    """For a raster that is not indexed: the tile size and GSD most of the archive's scenes were cut with, on the
    archive's grid."""
    tilings = [(r["tiling"]["tile_size"], r["tiling"]["gsd"], r["tiling"]["min_valid"])
               for r in archive.complete_scenes() if rereadable(r)]
    if not tilings:
        raise GeosearchError("the archive's scenes came from embedding files, with no tiling to cut another raster "
                             "alike; query by --tile")
    size, gsd, min_valid = max(set(tilings), key=tilings.count)
    return TilingOptions(tile_size=size, gsd=gsd, min_valid=min_valid, grid=grid_mode(archive))
