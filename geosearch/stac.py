"""STAC catalogs, collections and items as scenes (pystac): each item gives one raster, its chosen asset, and says
what the file may not: the item's id and collection, and when it was acquired. Local files only; an item whose asset
is remote or missing is one error line, and the others go on."""

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pystac

from geosearch.errors import SceneError
from geosearch.scene import find_scenes

# Asset roles that name the picture of an item, in the order they are taken when --assets is not given.
ROLES = ("visual", "data")
RASTER_TYPES = (pystac.MediaType.GEOTIFF, pystac.MediaType.COG, pystac.MediaType.TIFF, pystac.MediaType.JPEG2000)


@dataclass
class Sources:
    """What SCENES name: raster paths; what STAC says of some of them (merged into their scene records); and the
    STAC items that give no readable raster."""

    paths: list[str] = field(default_factory=list)
    described: dict[str, dict] = field(default_factory=dict)
    failures: list[SceneError] = field(default_factory=list)


def is_stac(path: str) -> bool:
    return path.lower().endswith(".json") and Path(path).is_file()


def find_sources(paths: Sequence[str], recursive: bool = False, assets: Sequence[str] = ()) -> Sources:
    """Rasters (directories expanded, scene.find_scenes) and STAC files (each item's chosen asset), in order."""
    sources = Sources()
    for path in paths:
        if is_stac(path):
            _add_items(sources, path, assets)
        else:
            sources.paths.extend(find_scenes([path], recursive))
    return sources


def _add_items(sources: Sources, path: str, assets: Sequence[str]) -> None:
    try:
        read = pystac.read_file(path)
        items = [read] if isinstance(read, pystac.Item) else list(read.get_items(recursive=True))
    # JSON errors are ValueErrors; a file of another kind, or a STAC object missing a field, the others.
    except (OSError, ValueError, KeyError, TypeError, pystac.STACError, pystac.STACTypeError) as error:
        sources.failures.append(SceneError(path, f"not a STAC catalog, collection or item we can read "
                                                 f"({str(error).splitlines()[0]})"))
        return
    for item in items:
        try:
            name, asset = _chosen_asset(item, assets)
            raster = _local_file(item, name, asset)
        except SceneError as error:
            sources.failures.append(error)
            continue
        when = item.datetime or item.common_metadata.start_datetime
        sources.paths.append(raster)
        sources.described[raster] = {
            "acquired": when.isoformat() if when else None,
            "stac": {"item": item.id, "collection": item.collection_id, "asset": name, "source": path},
        }


def _chosen_asset(item: pystac.Item, names: Sequence[str]) -> tuple[str, pystac.Asset]:
    """The first of `names` the item has; without names, its asset of role visual (else data) that is a raster, or
    its only raster."""
    where = item.get_self_href() or item.id
    if names:
        for name in names:
            if name in item.assets:
                return name, item.assets[name]
        raise SceneError(where, f"STAC item {item.id} has no asset {' or '.join(names)} (it has "
                                f"{', '.join(item.assets) or 'none'})")
    rasters = {name: asset for name, asset in item.assets.items()
               if asset.media_type in RASTER_TYPES or asset.href.lower().endswith((".tif", ".tiff", ".jp2"))}
    for role in ROLES:
        for name, asset in rasters.items():
            if role in (asset.roles or []):
                return name, asset
    if len(rasters) == 1:
        return next(iter(rasters.items()))
    raise SceneError(where, f"STAC item {item.id}: which asset is the scene? It has {', '.join(item.assets) or 'none'};"
                            " give --assets NAME")


def _local_file(item: pystac.Item, name: str, asset: pystac.Asset) -> str:
    """The asset's file, its href taken relative to the item's own file."""
    href = asset.get_absolute_href() or asset.href
    where = item.get_self_href() or item.id
    scheme = urlsplit(href).scheme
    if scheme not in ("", "file") and len(scheme) > 1:  # one letter: a Windows drive
        raise SceneError(where, f"STAC item {item.id}: asset {name} is remote ({href}); geosearch reads local files, "
                                "so it is not reachable")
    local = urlsplit(href).path if scheme == "file" else href
    if not Path(local).is_file():
        raise SceneError(where, f"STAC item {item.id}: asset {name} ({local}) does not exist")
    return local
