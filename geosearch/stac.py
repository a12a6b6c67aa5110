"""STAC catalogs, collections and items as scenes (pystac): each item gives one scene, its chosen asset (or its
chosen per-band assets, stacked), and says what the files may not: the item's id and collection, and when it was
acquired. Local files only; an item whose asset is remote or missing is one error line, and the others go on."""

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pystac

from geosearch.bands import PRESETS
from geosearch.errors import SceneError
from geosearch.products import asset_file
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
            keys = _chosen_assets(item, assets)
            files = [asset_file(item, key) for key in keys]
        except SceneError as error:
            sources.failures.append(error)
            continue
        # One asset is the scene's file, unless it names its bands in eo:bands; several assets are its bands. Both
        # of those are opened through products.py, which stacks the bands and names them.
        named = len(item.assets[keys[0]].extra_fields.get("eo:bands") or []) > 1
        raster = str(files[0]) if len(keys) == 1 and not named else f"{item.get_self_href()}#{','.join(keys)}"
        when = item.datetime or item.common_metadata.start_datetime
        sources.paths.append(raster)
        sources.described[raster] = {
            "acquired": when.isoformat() if when else None,
            "stac": {"item": item.id, "collection": item.collection_id, "asset": ",".join(keys), "source": path},
        }


def _chosen_assets(item: pystac.Item, names: Sequence[str]) -> list[str]:
    """The asset keys to read: one name, that asset; several, or a preset of --bands (true-color…), those bands,
    each found by its key or its eo:bands common name; no name, the item's raster of role visual (else data), or
    its only raster."""
    where = item.get_self_href() or item.id
    wanted = PRESETS.get(names[0], names) if len(names) == 1 else names
    if wanted:
        keys = [_asset_named(item, name) for name in wanted]
        missing = [name for name, key in zip(wanted, keys, strict=True) if key is None]
        if missing:
            raise SceneError(where, f"STAC item {item.id} has no asset {missing[0]} (it has "
                                    f"{', '.join(item.assets) or 'none'})")
        return keys  # type: ignore[return-value]
    rasters = {name: asset for name, asset in item.assets.items()
               if asset.media_type in RASTER_TYPES or asset.href.lower().endswith((".tif", ".tiff", ".jp2"))}
    for role in ROLES:
        for name, asset in rasters.items():
            if role in (asset.roles or []):
                return [name]
    if len(rasters) == 1:
        return list(rasters)
    raise SceneError(where, f"STAC item {item.id}: which asset is the scene? It has {', '.join(item.assets) or 'none'};"
                            " give --assets NAME")


def _asset_named(item: pystac.Item, name: str) -> str | None:
    if name in item.assets:
        return name
    return next((key for key, asset in item.assets.items()
                 if any(band.get("common_name") == name for band in asset.extra_fields.get("eo:bands") or [])), None)
