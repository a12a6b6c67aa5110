"""Test inputs made of real pixels: a shipped scene repeated edge to edge (as a VRT or a real GeoTIFF), split into
per-band files; and a store of real scenes indexed with the default model."""

from pathlib import Path
from xml.sax.saxutils import escape

import rasterio
import torch
from rasterio.dtypes import _gdal_typename
from rasterio.enums import Resampling
from rasterio.windows import Window

from geosearch.embed import plan_scene
from geosearch.encoder.default import default_checkpoint
from geosearch.index import index_scenes
from geosearch.store import open_backend
from geosearch.store.archive import Archive
from geosearch.tiling import TilingOptions


def write_mosaic_vrt(source: Path, path: Path, width: int, height: int) -> Path:
    """A width × height VRT tiling copies of `source` edge to edge, georeferenced as one scene on source's grid."""
    with rasterio.open(source) as src:
        sw, sh = src.width, src.height
        gt = src.transform.to_gdal()
        bands = []
        for band in range(1, src.count + 1):
            sources = []
            for y in range(0, height, sh):
                for x in range(0, width, sw):
                    w, h = min(sw, width - x), min(sh, height - y)
                    sources.append(
                        f'<SimpleSource><SourceFilename relativeToVRT="0">{escape(str(source))}</SourceFilename>'
                        f"<SourceBand>{band}</SourceBand>"
                        f'<SrcRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/>'
                        f'<DstRect xOff="{x}" yOff="{y}" xSize="{w}" ySize="{h}"/></SimpleSource>'
                    )
            nodata = f"<NoDataValue>{src.nodata}</NoDataValue>" if src.nodata is not None else ""
            description = f"<Description>{escape(src.descriptions[band - 1] or '')}</Description>"
            bands.append(
                f'<VRTRasterBand dataType="{_gdal_typename(src.dtypes[band - 1])}" band="{band}">'
                f"{description}{nodata}{''.join(sources)}</VRTRasterBand>"
            )
        path.write_text(
            f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">'
            f"<SRS>{escape(src.crs.to_wkt())}</SRS><GeoTransform>{', '.join(map(repr, gt))}</GeoTransform>"
            f"{''.join(bands)}</VRTDataset>"
        )
    return path


def write_repeated_geotiff(source: Path, path: Path, side: int, **creation_options) -> Path:
    """A side × side tiled GeoTIFF of `source`'s pixels repeated edge to edge, written window by window."""
    with rasterio.open(source) as src:
        pixels = src.read()
        profile = src.profile | {
            "driver": "GTiff", "width": side, "height": side, "tiled": True, "blockxsize": 256, "blockysize": 256,
            "BIGTIFF": "YES", "compress": None, "predictor": None, "photometric": None,
        } | creation_options
        descriptions = src.descriptions
    height, width = pixels.shape[1:]
    with rasterio.open(path, "w", **{k: v for k, v in profile.items() if v is not None}) as dst:
        for row in range(0, side, height):
            for col in range(0, side, width):
                h, w = min(height, side - row), min(width, side - col)
                dst.write(pixels[:, :h, :w], window=Window(col, row, w, h))
        dst.descriptions = descriptions
    return path


JP2 = {"driver": "JP2OpenJPEG", "QUALITY": "100", "REVERSIBLE": "YES"}  # lossless, as Sentinel-2's own JP2


def split_bands(scene: Path, folder: Path, names: list[str], coarse: dict[str, int] | None = None) -> None:
    """Each band of `scene` as its own file `folder/NAME` (GeoTIFF, or JPEG 2000 for .jp2); bands in `coarse`
    written `factor` times coarser."""
    folder.mkdir(parents=True, exist_ok=True)
    with rasterio.open(scene) as source:
        for band, name in enumerate(names, start=1):
            factor = (coarse or {}).get(name, 1)
            shape = (source.height // factor, source.width // factor)
            pixels = source.read(band, out_shape=shape, resampling=Resampling.average)
            profile = {"count": 1, "height": shape[0], "width": shape[1], "dtype": pixels.dtype, "crs": source.crs,
                       "nodata": source.nodata, "transform": source.transform @ source.transform.scale(factor)}
            profile |= JP2 if name.endswith(".jp2") else {"driver": "GTiff", "tiled": True}
            with rasterio.open(folder / name, "w", **profile) as out:
                out.write(pixels, 1)


def index_store(path: Path, scenes: list[Path], tiling: TilingOptions) -> None:
    """A store at `path` holding `scenes`, each indexed whole with the default model on the CPU."""
    model = default_checkpoint()
    with open_backend(path) as backend:
        archive = Archive.open(backend, "tiles", model.model_id, model.config.dim)
        planned = [plan_scene(str(p), tiling) for p in scenes]
        assert not index_scenes(archive, model, planned, tiling, torch.device("cpu"), workers=0).failed
