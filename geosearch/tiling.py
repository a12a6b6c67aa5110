"""Scene → tiles: a grid plan with footprints (no pixels read), then a stream of stretched, masked tiles."""

import logging
import math
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import geopandas as gpd
import numpy as np
from pyproj import CRS
from rasterio.windows import Window

from geosearch.errors import GeosearchError, SceneError
from geosearch.footprints import WGS84, Footprints, grid_footprints
from geosearch.grid import EdgeMode, GridMode, lattice_offsets, tile_offsets
from geosearch.scene import Scene, open_scene, shared_stretch
from geosearch.stretch import DEFAULT_PERCENTILES, ProfileStretches, Stretch, StretchMode

DEFAULT_TILE_SIZE = 256
MIN_TILE_SIZE = 8  # fewer pixels a side hold no texture for the encoder to match
MAX_TILES_PER_SCENE = 2_000_000  # planning holds every tile's footprint and ids: a bound on its memory and time
DEFAULT_MIN_VALID = 0.5  # a tile at least half real data still shows what the land looks like
FOOTPRINT_TOLERANCE = 0.1  # footprint edges in lon/lat stay within a tenth of a pixel of the true edge
log = logging.getLogger(__name__)
_TILE_NAMESPACE = uuid.UUID("6f1d6a52-63c3-4f0e-9d0b-7d1f3c0b9a41")
_PLACE_NAMESPACE = uuid.UUID("3b8f7c2e-5a14-4d6b-9e3f-1c2d4a6b8e90")
PHASE_DECIMALS = 3  # pixel phases equal to a thousandth of a pixel put two scenes on one lattice


@dataclass(frozen=True)
class TilingOptions:
    """How scenes are cut. Sizes are in pixels of the tiling grid (the native grid, or the `gsd` grid)."""

    tile_size: int = DEFAULT_TILE_SIZE
    stride: int | None = None  # default: tile_size, no overlap
    edge: EdgeMode = EdgeMode.SHIFT
    gsd: float | None = None  # metres; None keeps the native resolution
    bands: tuple[int, ...] | tuple[str, ...] | None = None  # 1-based, or common names; None: bands.default_bands
    nodata: float | None = None  # overrides the file's nodata value
    min_valid: float = DEFAULT_MIN_VALID
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES
    grid: GridMode = GridMode.ALIGNED
    stretch: StretchMode | Stretch = StretchMode.ARCHIVE  # or fixed limits (stretch.parse_stretch)

    @property
    def step(self) -> int:
        return self.stride or self.tile_size

    def profile_stretches(self, known: dict[str, Stretch] | None = None,
                          stretch_from: Sequence[str] = ()) -> ProfileStretches | None:
        """A run's stretches by profile: none with `scene` (each scene its own), one for all when fixed; with
        `archive`, the `known` ones (an archive's) and the one that the `stretch_from` scenes set together."""
        if stretch_from and self.stretch is not StretchMode.ARCHIVE:
            raise GeosearchError("--stretch-from sets a profile's stretch for --stretch archive; drop one of them")
        if isinstance(self.stretch, Stretch):
            return ProfileStretches(fixed=self.stretch)
        if self.stretch is StretchMode.SCENE:
            return None
        profiles = ProfileStretches(known=dict(known or {}))
        if stretch_from:
            profile, stretch = shared_stretch(list(stretch_from), self.bands, self.nodata, self.percentiles)
            if profile in profiles.known:
                raise GeosearchError(f"the archive's stretch for profile {profile} is set already, and its scenes "
                                     "were shown with it; --stretch-from cannot change it (use another --collection)")
            profiles.add(profile, stretch)
            profiles.chosen = profile
        return profiles

    def open(self, path: str, stretch: Stretch | None = None, profiles: ProfileStretches | None = None) -> Scene:
        """Open a scene to cut: with a recorded `stretch`, else its profile's in `profiles`, else its own."""
        return open_scene(path, bands=self.bands, gsd=self.gsd, nodata=self.nodata, stretch=stretch,
                          profiles=profiles, percentiles=self.percentiles, aligned=self.grid is GridMode.ALIGNED)


def tile_id(scene_id: str, row: int, col: int, tile_size: int, gsd_m: float) -> str:
    """Deterministic UUID of a tile, so that cutting a scene again names its tiles the same."""
    return str(uuid.uuid5(_TILE_NAMESPACE, f"{scene_id}/{row}/{col}/{tile_size}/{gsd_m:.6g}"))


@dataclass(frozen=True)
class Lattice:
    """The pixel lattice of a CRS that a scene's grid lies on: the CRS, the pixel size in CRS units and the pixel
    phase (where pixel edges fall between whole pixels of the CRS origin). Scenes with one key share their pixels'
    edges; `origin` is the grid's top-left pixel counted from the CRS origin (row, col)."""

    key: str
    origin: tuple[int, int]

    def place_id(self, tile_size: int, stride: int, row: int, col: int) -> str:
        """The same ground at the same tiling, in every scene and on every date: lattice, tile size, stride and
        the tile's lattice row and column."""
        return str(uuid.uuid5(_PLACE_NAMESPACE, f"{self.key}/{tile_size}/{stride}/{row}/{col}"))


def _crs_key(crs: CRS) -> str:
    authority = crs.to_authority()
    return ":".join(authority) if authority else "wkt:" + uuid.uuid5(_PLACE_NAMESPACE, crs.to_wkt()).hex[:12]


def _pixel_origin(offset: float, size: float) -> tuple[int, float]:
    """The whole pixel a grid's first edge falls in, counted from the CRS origin, and its phase in that pixel."""
    position = offset / size
    phase = round(position % 1.0, PHASE_DECIMALS) % 1.0
    return round(position - phase), phase


def lattice_of(scene: Scene) -> Lattice:
    """The lattice of the scene's tiling grid. Only a north-up grid (no rotation or shear) has one."""
    t = scene.grid.transform
    if t.b != 0 or t.d != 0:
        raise GeosearchError("has a rotated or sheared geotransform, which no aligned grid can hold; "
                             "use --grid scene, or warp it north-up first (gdalwarp)")
    col, col_phase = _pixel_origin(t.c, t.a)
    row, row_phase = _pixel_origin(t.f, t.e)
    key = f"{_crs_key(CRS.from_user_input(scene.grid.crs))}/{t.a:.10g}x{t.e:.10g}/{col_phase:g},{row_phase:g}"
    return Lattice(key=key, origin=(row, col))


@dataclass(frozen=True)
class TileGrid:
    """Where a scene's tiles lie: (row, col) offsets on the tiling grid and their footprints."""

    scene_id: str
    scene_path: str
    crs: CRS
    tile_size: int
    stride: int
    gsd_m: float
    offsets: np.ndarray  # (N, 2) row, col
    footprints: Footprints
    tile_ids: list[str] = field(repr=False)
    place_ids: list[str | None] = field(repr=False)  # None off a lattice: scene grids, query tiles, shifted edges
    lattice: str | None = None  # Lattice.key of an aligned grid

    def __len__(self) -> int:
        return len(self.offsets)

    def window(self, index: int) -> Window:
        row, col = self.offsets[index]
        return Window(int(col), int(row), self.tile_size, self.tile_size)

    def to_frame(self, valid_fraction: np.ndarray, kept: np.ndarray | None = None) -> gpd.GeoDataFrame:
        """The tiles as features in EPSG:4326: footprint geometry plus window, GSD and valid fraction."""
        select = slice(None) if kept is None else kept
        offsets = self.offsets[select]
        n = len(offsets)
        return gpd.GeoDataFrame(
            {
                "tile_id": np.asarray(self.tile_ids)[select],
                "place_id": np.asarray(self.place_ids, dtype=object)[select],
                "scene_id": [self.scene_id] * n,
                "scene_path": [self.scene_path] * n,
                "crs": [self.crs.to_string()] * n,
                "row": offsets[:, 0],
                "col": offsets[:, 1],
                "width": [self.tile_size] * n,
                "height": [self.tile_size] * n,
                "stride": [self.stride] * n,
                "gsd_m": [round(self.gsd_m, 4)] * n,
                "valid_fraction": np.round(valid_fraction[select], 4),
                "centroid_lon": self.footprints.centroid[select, 0],
                "centroid_lat": self.footprints.centroid[select, 1],
            },
            geometry=self.footprints.wgs84[select],
            crs=WGS84,
        )


def plan_grid(scene: Scene, options: TilingOptions) -> TileGrid:
    """Every tile's place and footprint; nothing is read but the scene's header."""
    tiles = (math.ceil(scene.grid.width / options.step) + 1) * (math.ceil(scene.grid.height / options.step) + 1)
    if tiles > MAX_TILES_PER_SCENE:
        raise SceneError(scene.path, f"would be cut into about {tiles:,} tiles of {options.tile_size} px, more than "
                                     f"the {MAX_TILES_PER_SCENE:,} one scene may have; cut it coarser (a larger "
                                     "--tile-size or --stride, or --gsd), or split it")
    try:
        if options.grid is GridMode.SCENE:
            offsets = tile_offsets(scene.grid.width, scene.grid.height, options.tile_size, options.step,
                                   options.edge)
            return grid_at(scene, offsets, options.tile_size, options.step)
        lattice = lattice_of(scene)
        offsets, indexes, on_lattice = lattice_offsets(lattice.origin, scene.grid.width, scene.grid.height,
                                                       options.tile_size, options.step, options.edge)
    except GeosearchError as error:
        raise SceneError(scene.path, str(error)) from None
    places = [lattice.place_id(options.tile_size, options.step, int(r), int(c)) if on else None
              for (r, c), on in zip(indexes, on_lattice, strict=True)]
    return grid_at(scene, offsets, options.tile_size, options.step, places, lattice.key)


def grid_at(scene: Scene, offsets: np.ndarray, tile_size: int, stride: int,
            place_ids: list[str | None] | None = None, lattice: str | None = None) -> TileGrid:
    """Tiles of `tile_size` at given (row, col) offsets on the scene's tiling grid, which may reach past its edge."""
    return TileGrid(
        scene_id=scene.scene_id,
        scene_path=scene.path,
        crs=CRS.from_user_input(scene.grid.crs),
        tile_size=tile_size,
        stride=stride,
        gsd_m=scene.gsd_m,
        offsets=offsets,
        footprints=grid_footprints(
            scene.grid.transform, scene.grid.crs, offsets, tile_size, FOOTPRINT_TOLERANCE * scene.gsd_m
        ),
        tile_ids=[tile_id(scene.scene_id, int(r), int(c), tile_size, scene.gsd_m) for r, c in offsets],
        place_ids=place_ids or [None] * len(offsets),
        lattice=lattice,
    )


@dataclass(frozen=True)
class Tile:
    """One tile's pixels: (3, S, S) uint8 after the scene's stretch, nodata set to 0."""

    index: int  # into the TileGrid
    pixels: np.ndarray
    valid_fraction: float
    kept: bool  # valid_fraction reaches the threshold


def read_tile(scene: Scene, row: int, col: int, size: int) -> tuple[np.ndarray, float]:
    """One tile's (3, S, S) uint8 pixels after the scene's stretch, nodata set to 0, and its valid fraction."""
    raw, valid = scene.read(row, col, size)
    pixels = scene.stretch.apply(raw)
    pixels[:, ~valid] = 0
    return pixels, float(valid.mean())


def read_tiles(
    scene: Scene, grid: TileGrid, min_valid: float = DEFAULT_MIN_VALID, indexes: Iterable[int] | None = None
) -> Iterator[Tile]:
    """Read, mask and stretch tiles of the grid (all, or those at `indexes`) in order; one in memory at a time."""
    for index in range(len(grid)) if indexes is None else indexes:
        row, col = grid.offsets[index]
        pixels, valid_fraction = read_tile(scene, int(row), int(col), grid.tile_size)
        yield Tile(index=index, pixels=pixels, valid_fraction=valid_fraction, kept=valid_fraction >= min_valid)


@dataclass(frozen=True)
class Survey:
    """A scene's whole grid with each tile's valid fraction: what `geosearch tile` reports."""

    scene: dict  # Scene.summary()
    grid: TileGrid
    valid_fraction: np.ndarray
    kept: np.ndarray  # bool, valid_fraction >= min_valid

    def to_frame(self, include_skipped: bool = False) -> gpd.GeoDataFrame:
        frame = self.grid.to_frame(self.valid_fraction, None if include_skipped else self.kept)
        if include_skipped:
            frame["kept"] = self.kept
        return frame


def survey(path: str, options: TilingOptions, on_tile: Callable[[int, int], None] | None = None,
           profiles: ProfileStretches | None = None) -> Survey:
    """Cut one scene and measure every tile's valid fraction. `on_tile(done, total)` reports progress; `profiles`
    are the run's stretches by profile."""
    with options.open(path, profiles=profiles) as scene:
        grid = plan_grid(scene, options)
        valid_fraction = np.empty(len(grid))
        for tile in read_tiles(scene, grid, options.min_valid):
            valid_fraction[tile.index] = tile.valid_fraction
            if on_tile:
                on_tile(tile.index + 1, len(grid))
        summary = scene.summary()
    kept = valid_fraction >= options.min_valid
    if not kept.any():
        reason = "all nodata" if not valid_fraction.any() else f"no tile is at least {options.min_valid:.0%} valid"
        log.warning("%s: %s; it yields no tiles", path, reason)
    return Survey(scene=summary, grid=grid, valid_fraction=valid_fraction, kept=kept)
