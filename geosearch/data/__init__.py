"""Small real scenes shipped with geosearch for the demo and the tests (see PROVENANCE.md)."""

from importlib.resources import files
from pathlib import Path

SCENES_DIR = Path(str(files(__name__) / "scenes"))
LANDSAT8_224077 = SCENES_DIR / "landsat8_224077_20200518_crop.tif"
LANDSAT8_224078 = SCENES_DIR / "landsat8_224078_20200518_crop.tif"
LANDSAT7_RGB = SCENES_DIR / "landsat7_rgb_utm18n_300m.tif"
AERIAL_3857 = SCENES_DIR / "aerial_rgb_epsg3857_0p6m.tif"


def shipped_scenes() -> list[Path]:
    return sorted(SCENES_DIR.glob("*.tif"))
