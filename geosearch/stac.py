"""STAC catalogs, collections and items as scenes (pystac): each item gives one scene, its chosen asset (or its
chosen per-band assets, stacked), and says what the files may not: the item's id and collection, and when it was
acquired. Local files only; an item whose asset is remote or missing is one error line, and the others go on."""

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pystac

from geosearch.bands import PRESETS
from geosearch.errors import SceneError
from geosearch.products import STAC_READ_ERRORS, asset_file, band_fields, item_time, local_href, read_stac
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


def _items(path: str, seen: set[str], failures: list[SceneError]) -> Iterator[pystac.Item]:
    """The items a STAC file holds, its catalogs and collections walked link by link: each file is read once (so
    links that loop end), and one that cannot be read is a failure of its own while the others go on."""
    if path in seen:
        return
    seen.add(path)
    try:
        read = read_stac(path)
        if isinstance(read, pystac.Item):
            yield read
            return
        links = [local_href(link.get_absolute_href()) for link in read.get_links() if link.rel in ("child", "item")]
    except STAC_READ_ERRORS as error:
        failures.append(SceneError(path, f"not a STAC catalog, collection or item we can read "
                                         f"({str(error).splitlines()[0]})"))
        return
    for href in links:
        yield from _items(href, seen, failures)


def _add_items(sources: Sources, path: str, assets: Sequence[str]) -> None:
    for item in _items(path, set(), sources.failures):
        try:
            keys = _chosen_assets(item, assets)
            files = [asset_file(item, key) for key in keys]
            # One asset is the scene's file, unless it names its bands in eo:bands; several assets are its bands.
            # Both of those are opened through products.py, which stacks the bands and names them.
            named = len(band_fields(item, keys[0])[0]) > 1
            when = item_time(item)
        except SceneError as error:
            sources.failures.append(error)
            continue
        item_file = local_href(item.get_self_href())
        raster = str(files[0]) if len(keys) == 1 and not named else f"{item_file}#{','.join(keys)}"
        if raster in sources.described:
            sources.failures.append(SceneError(item.get_self_href() or item.id, f"STAC item {item.id} names the "
                                               f"raster of item {sources.described[raster]['stac']['item']}, which "
                                               "is read once, for that item"))
            continue
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
    return next((key for key in item.assets
                 if any(band.get("common_name") == name for band in band_fields(item, key)[0])), None)
