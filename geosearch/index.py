"""Scenes → archive: skip the complete ones, embed the rest, store their tiles batch by batch, and mark each
scene complete only once all of its tiles are stored (store/archive.py says why that is crash-safe)."""

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

import numpy as np
import shapely
import torch

from geosearch.acquired import parse_date
from geosearch.embed import EmbeddedBatch, PlannedScene, SceneFailure, embed_scenes
from geosearch.encoder.checkpoint import Checkpoint
from geosearch.encoder.runtime import load_encoder
from geosearch.errors import GeosearchError, SceneError
from geosearch.files import file_state
from geosearch.grid import EdgeMode, GridMode
from geosearch.scene import Scene
from geosearch.store.archive import Archive
from geosearch.stretch import ProfileStretches, Stretch, finite_number
from geosearch.tiling import TilingOptions

# Qdrant Edge writes through memory-mapped files: on a full disk the kernel kills the process (SIGBUS) before any
# error can be raised, so space is checked before writing. Per tile: the vector in its segment and in the WAL,
# and the payload (footprint included) twice; plus room for new WAL files (32 MB each) and segment growth.
PAYLOAD_BYTES = 4096
HEADROOM_BYTES = 192 * 2**20
log = logging.getLogger(__name__)


def check_space(archive: Archive, tiles: int) -> None:
    free = archive.backend.free_bytes()
    needed = tiles * (archive.dim * 4 * 2 + PAYLOAD_BYTES) + HEADROOM_BYTES
    if free is not None and free < needed:
        raise GeosearchError(
            f"{archive.backend.location}: {free / 2**20:.0f} MiB free, but storing {tiles} tiles needs about "
            f"{needed / 2**20:.0f} MiB; free some space or use another --store (no tile was stored)"
        )


@dataclass
class IndexReport:
    indexed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)  # complete already, left as they were
    retiled: list[str] = field(default_factory=list)  # of those, the ones indexed with another tiling (notes)
    failed: list[SceneError] = field(default_factory=list)
    tiles_stored: int = 0
    tiles_skipped: int = 0  # below --min-valid
    off_lattice: list[str] = field(default_factory=list)  # lattice_notes
    rewritten: list[str] = field(default_factory=list)  # complete scenes whose files changed since (notes)
    replaced: list[str] = field(default_factory=list)  # scenes removed: their path now holds another raster (notes)


def _geojson(geometries: np.ndarray) -> list[dict]:
    return [json.loads(text) for text in shapely.to_geojson(geometries)]


def _union(footprints: np.ndarray) -> dict:
    return json.loads(shapely.to_geojson(shapely.union_all(footprints)))


def scene_record(planned: PlannedScene, tiling: TilingOptions, model_id: str, acquired: str | None) -> dict:
    """A scene's record; its footprint is the whole grid's until indexing narrows it to the tiles kept."""
    return planned.summary | {
        "model_id": model_id, "acquired": acquired,
        "footprint": _union(planned.grid.footprints.wgs84), "tile_count_planned": len(planned.grid),
        "tiling": {"tile_size": tiling.tile_size, "stride": tiling.step, "edge": str(tiling.edge), "gsd": tiling.gsd,
                   "min_valid": tiling.min_valid, "nodata": tiling.nodata, "grid": str(tiling.grid),
                   "lattice": planned.grid.lattice},
    }


def rereadable(record: dict) -> bool:
    """Whether the scene's pixels can be read again as they were indexed: not when it came from an embedding file
    made elsewhere, whose record has no tiling (embedding_files)."""
    return "tiling" in record


def tiling_of(record: dict) -> TilingOptions:
    """The tiling a scene was indexed with (scenes indexed before aligned grids were cut on their own grid)."""
    tiling = record["tiling"]
    return TilingOptions(tile_size=tiling["tile_size"], stride=tiling["stride"], edge=EdgeMode(tiling["edge"]),
                         gsd=tiling["gsd"], bands=tuple(record["bands"]), nodata=tiling["nodata"],
                         min_valid=tiling["min_valid"], grid=GridMode(tiling.get("grid", GridMode.SCENE)))


def check_record(record: object) -> dict:
    """A scene record that comes from outside this run (an embedding file's, say), checked for every field that the
    archive's readers use, so that a bad one is refused in one line before it is stored rather than breaking every
    later command on the archive."""
    if not isinstance(record, dict):
        raise GeosearchError(f"a scene record is a table, not {type(record).__name__}")
    for name in ("scene_id", "path"):
        if not isinstance(record.get(name), str) or not record[name] or "\0" in record[name]:
            raise GeosearchError(f"a scene record needs its {name} as text, not {record.get(name)!r}")
    where = f"scene {record['scene_id']!r}"
    if record.get("acquired") is not None:
        if not isinstance(record["acquired"], str):
            raise GeosearchError(f"{where}: acquired is {record['acquired']!r}, not a date")
        parse_date(record["acquired"], f"{where}: acquired")
    check_footprint(record.get("footprint"), where)
    if rereadable(record):
        try:
            tiling = tiling_of(record)
            Stretch.from_dict(record.get("stretch"))
        except (GeosearchError, KeyError, TypeError, ValueError) as error:
            raise GeosearchError(f"{where}: its tiling or stretch is not one geosearch records ({error})") from None
        if not (isinstance(tiling.tile_size, int) and isinstance(tiling.step, int) and tiling.tile_size > 0
                and tiling.step > 0 and all(isinstance(b, int) and b > 0 for b in tiling.bands or ())
                and finite_number(record.get("gsd_m")) and record["gsd_m"] > 0 and finite_number(tiling.min_valid)
                and (tiling.gsd is None or (finite_number(tiling.gsd) and tiling.gsd > 0))
                and (tiling.nodata is None or finite_number(tiling.nodata))):
            raise GeosearchError(f"{where}: its tiling {record['tiling']} is not one geosearch records")
    return record


def check_footprint(geometry: object, where: str) -> None:
    """A footprint as GeoJSON in EPSG:4326: a valid polygon on the globe."""
    try:
        shape = shapely.geometry.shape(geometry)
    except (AttributeError, KeyError, TypeError, ValueError, shapely.errors.ShapelyError):
        raise GeosearchError(f"{where}: its footprint is not a GeoJSON geometry") from None
    if shape.is_empty or not shape.is_valid or shape.geom_type not in ("Polygon", "MultiPolygon"):
        raise GeosearchError(f"{where}: its footprint is not a valid polygon")
    if not on_the_globe(np.asarray(shape.bounds)[None]).all():
        raise GeosearchError(f"{where}: its footprint {shape.bounds} lies off the globe in lon/lat")


def on_the_globe(bounds: np.ndarray) -> np.ndarray:
    """Which (min lon, min lat, max lon, max lat) rows are finite lon/lat bounds."""
    lon, lat = bounds[:, [0, 2]], bounds[:, [1, 3]]
    return (np.isfinite(bounds).all(axis=1) & (np.abs(lon) <= 180).all(axis=1) & (np.abs(lat) <= 90).all(axis=1))


def _tiling_key(tiling: TilingOptions, gsd_m: float) -> str:
    """How a scene is cut, as a user would say it."""
    return f"--tile-size {tiling.tile_size} --stride {tiling.step} at {gsd_m:.4g} m"


def grid_mode(archive: Archive) -> GridMode:
    """The grid the archive records; one line for a record that an earlier version let an import write wrong."""
    try:
        return GridMode(archive.grid)
    except ValueError:
        raise GeosearchError(f"the archive ({archive.collection}) records the grid {archive.grid!r}, which is none "
                             "geosearch makes; index its scenes again into a new --collection") from None


def archive_grid(archive: Archive, tiling: TilingOptions, asked: GridMode | None) -> TilingOptions:
    """The tiling with the archive's grid mode, which every scene of an archive shares; asking for another is an
    error (an archive indexed before aligned grids keeps its scene grids)."""
    mode = grid_mode(archive)
    if asked is not None and asked is not mode:
        raise GeosearchError(f"the archive ({archive.collection}) is cut with --grid {mode}; --grid {asked} would "
                             "mix grids in one archive: leave --grid out, or use another --collection")
    return replace(tiling, grid=mode)


def archive_stretches(archive: Archive, tiling: TilingOptions,
                      stretch_from: tuple[str, ...] = ()) -> ProfileStretches | None:
    """The stretches by profile for scenes indexed into the archive: those it records, and new ones to record."""
    known = {profile: Stretch.from_dict(stretch) for profile, stretch in archive.stretches().items()}
    return tiling.profile_stretches(known, stretch_from)


def lattice_notes(archive: Archive, scenes: list[PlannedScene]) -> list[str]:
    """Scenes of this run that overlap scenes of the archive on another lattice (CRS, pixel size or pixel phase
    differ): their tiles cannot share place ids, so "the same place" does not join them."""
    others = [(shapely.geometry.shape(r["footprint"]), r["tiling"].get("lattice"), r["path"])
              for r in archive.scenes() if r["status"] == "complete" and rereadable(r)]
    notes = []
    for planned in scenes:
        footprint = shapely.union_all(planned.grid.footprints.wgs84)
        apart = [path for shape, lattice, path in others
                 if lattice != planned.grid.lattice and path != planned.path and shape.intersects(footprint)]
        if apart:
            notes.append(f"{planned.path} overlaps {len(apart)} scene(s) on another pixel lattice (e.g. {apart[0]}: "
                         "CRS, pixel size or pixel phase differ), so their tiles do not line up and have no place "
                         "ids in common; search by appearance still finds them")
    return notes


def open_indexed(record: dict) -> Scene:
    """Open an indexed scene as it was indexed (bands, GSD, nodata, stretch), so pixels read from it now match
    the pixels its tiles were embedded from."""
    return tiling_of(record).open(record["path"], stretch=Stretch.from_dict(record["stretch"]))


def tile_payloads(planned: PlannedScene, record: dict, batch: EmbeddedBatch) -> tuple[list[str], list[dict]]:
    grid, i = planned.grid, batch.indexes
    ids = [grid.tile_ids[j] for j in i]
    footprints, bbox, centroid = grid.footprints.wgs84[i], grid.footprints.bbox[i], grid.footprints.centroid[i]
    common = {"scene_id": grid.scene_id, "scene_path": grid.scene_path, "crs": grid.crs.to_string(),
              "width": grid.tile_size, "height": grid.tile_size, "tile_size": grid.tile_size, "stride": grid.stride,
              "gsd_m": round(grid.gsd_m, 4), "model_id": record["model_id"]}
    if record["acquired"]:
        common["acquired"] = record["acquired"]
    payloads = [
        common | ({"place_id": grid.place_ids[j]} if grid.place_ids[j] else {}) | where |
        {"row": int(grid.offsets[j, 0]), "col": int(grid.offsets[j, 1]), "valid_fraction": round(float(v), 4)}
        for j, where, v in zip(i, footprint_fields(footprints, bbox, centroid), batch.valid_fraction, strict=True)
    ]
    return ids, payloads


def footprint_fields(footprints: np.ndarray, bbox: np.ndarray, centroid: np.ndarray) -> list[dict]:
    """Where each tile lies, as its payload says it for the store's filters (EPSG:4326): the footprint as GeoJSON,
    its centroid (a geo index) and its bounds (float indexes)."""
    return [{"footprint": footprint, "centroid": {"lon": float(c[0]), "lat": float(c[1])}, "min_lon": float(b[0]),
             "min_lat": float(b[1]), "max_lon": float(b[2]), "max_lat": float(b[3])}
            for footprint, b, c in zip(_geojson(footprints), bbox, centroid, strict=True)]


def changed_since(record: dict) -> bool:
    """Whether a scene's files were rewritten since the record was made (records from before this was kept say
    nothing, and pass)."""
    recorded = record.get("files")
    return bool(recorded) and file_state([path for path, _, _ in recorded]) != recorded


def _replaced(archive: Archive, scenes: list[PlannedScene]) -> list[list[dict]]:
    """For each scene, the archive's other scenes recorded at its path: the file now holds other ground, so once
    the scene is indexed their tiles, which would be served as the file's, are removed."""
    by_path: dict[str, list[dict]] = {}
    for record in archive.scenes():
        if rereadable(record):
            by_path.setdefault(str(Path(record["path"]).resolve()), []).append(record)
    return [[other for other in by_path.get(str(Path(p.path).resolve()), []) if other["scene_id"] != p.grid.scene_id]
            for p in scenes]


def acquisition(planned: PlannedScene, given: datetime | None, auto: bool) -> str | None:
    """The acquisition time to record: the one given, else (with `auto`) the one the scene's summary found."""
    if given or not auto:
        return given.isoformat() if given else None
    return planned.summary["acquired"]


def index_scenes(
    archive: Archive,
    checkpoint: Checkpoint,
    scenes: list[PlannedScene],
    tiling: TilingOptions,
    device: torch.device,
    *,
    acquired: datetime | None = None,
    auto_acquired: bool = True,
    force: bool = False,
    profiles: ProfileStretches | None = None,
    batch_size: int = 64,
    workers: int | None = None,
    compile: bool = False,
    runtime: str = "auto",
    encoder: torch.nn.Module | None = None,
    on_tiles: Callable[[int], None] | None = None,
) -> IndexReport:
    """Index scenes that are not complete in the archive yet (all of them with `force`). The stretches that
    planning them added to `profiles` are recorded in the archive for the later scenes of their profile.
    `encoder`, one already loaded (the server's), is used instead of loading the checkpoint's again."""
    report = IndexReport()
    pending = []
    for planned in scenes:
        record = archive.scene(planned.grid.scene_id)
        if record and record["status"] == "complete" and not force and changed_since(record):
            report.rewritten.append(f"{planned.path} was rewritten since it was indexed; it is indexed again")
            pending.append(planned)
        elif record and record["status"] == "complete" and not force:
            report.unchanged.append(planned.path)
            asked, had = _tiling_key(tiling, planned.grid.gsd_m), _tiling_key(tiling_of(record), record["gsd_m"])
            if asked != had:
                report.retiled.append(f"{planned.path} is indexed already with {had}, not {asked}; it is left as it "
                                      "is (--force indexes it again as asked)")
        else:
            pending.append(planned)
    check_space(archive, sum(len(p.grid) for p in pending))
    report.off_lattice = lattice_notes(archive, pending)
    if profiles is not None:
        for profile, stretch in profiles.added.items():
            users = [p.path for p in pending if p.summary["profile"] == profile]
            if users:
                archive.add_stretch(profile, stretch.to_dict(),
                                    "--stretch-from" if profile == profiles.chosen else users[0])
    records = [scene_record(p, tiling, checkpoint.model_id, acquisition(p, acquired, auto_acquired)) for p in pending]
    replaced = _replaced(archive, pending)
    for record in records:
        archive.begin_scene(record)
    read = [0] * len(pending)
    kept: list[list[np.ndarray]] = [[] for _ in pending]
    failed: set[int] = set()
    if encoder is None:
        encoder = load_encoder(checkpoint, device, runtime, compile)
    results = embed_scenes(encoder, pending, tiling, device, batch_size, workers, compile)
    for result in results:
        s = result.scene
        if isinstance(result, SceneFailure):
            if s not in failed:
                failed.add(s)
                report.failed.append(result.error)
                archive.fail_scene(records[s], result.error.problem)
            continue
        if s in failed:
            continue
        if len(result.indexes):
            ids, payloads = tile_payloads(pending[s], records[s], result)
            archive.add_tiles(ids, result.vectors, payloads)
        read[s] += result.read
        kept[s].append(result.indexes)
        if on_tiles:
            on_tiles(result.read)
        if read[s] == len(pending[s].grid):
            if changed_since(records[s]):
                error = SceneError(pending[s].path, "was rewritten while it was being indexed, so its tiles would "
                                                    "mix old and new pixels; none is kept: index it again")
                failed.add(s)
                report.failed.append(error)
                archive.fail_scene(records[s], error.problem)
                continue
            stored = np.concatenate(kept[s])
            if len(stored):  # where the scene has data, rather than its whole grid
                records[s]["footprint"] = _union(pending[s].grid.footprints.wgs84[stored])
            archive.complete_scene(records[s], len(stored))
            for other in replaced[s]:
                archive.remove_scene(other["scene_id"])
                report.replaced.append(f"{pending[s].path} now holds another raster than scene {other['scene_id']} "
                                       f"did; that scene's {other['tiles']} tiles were removed")
            if not len(stored):
                log.warning("%s: no tile is at least %.0f%% valid (all nodata?); it is indexed with no tiles",
                            pending[s].path, 100 * tiling.min_valid)
            report.indexed.append(pending[s].path)
            report.tiles_stored += len(stored)
            report.tiles_skipped += read[s] - len(stored)
    return report
