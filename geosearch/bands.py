"""Which bands of a scene become the three channels the encoder sees."""

import re
from collections.abc import Sequence
from typing import NamedTuple

from rasterio.enums import ColorInterp
from rasterio.io import DatasetReaderBase

from geosearch.errors import GeosearchError

RGB_INTERP = (ColorInterp.red, ColorInterp.green, ColorInterp.blue)
RGB_NAMES = ("red", "green", "blue")
# Words that make a description like "red edge 1" or "NIR" something other than the visible colour.
_NOT_VISIBLE = {"edge", "rededge", "nir", "swir"}


def _band_by_description(descriptions: Sequence[str | None], colour: str) -> int | None:
    for index, description in enumerate(descriptions, start=1):
        words = set(re.split(r"[^a-z0-9]+", (description or "").lower()))
        if colour in words and not words & _NOT_VISIBLE:
            return index
    return None


class BandChoice(NamedTuple):
    """The band indexes read as red, green, blue, and what the choice rests on."""

    indexes: tuple[int, int, int]
    source: str  # "colorinterp", "descriptions", "assumed" (bands 1-3, no hint), "grey", or "given"


def default_bands(dataset: DatasetReaderBase) -> BandChoice:
    """Red, green, blue from the colour interpretation, else from band descriptions, else the first three bands.

    A scene with fewer than three bands (and no RGB) is shown as grey from its first band.
    """
    interp = list(dataset.colorinterp)
    if all(colour in interp for colour in RGB_INTERP):
        return BandChoice(tuple(interp.index(colour) + 1 for colour in RGB_INTERP), "colorinterp")  # type: ignore[arg-type]
    by_name = [_band_by_description(dataset.descriptions, colour) for colour in RGB_NAMES]
    if None not in by_name:
        return BandChoice(tuple(by_name), "descriptions")  # type: ignore[arg-type]
    if dataset.count >= 3:
        return BandChoice((1, 2, 3), "assumed")
    return BandChoice((1, 1, 1), "grey")


def parse_bands(text: str) -> tuple[int, ...]:
    """Parse '4,3,2' or '1' (1-based band indexes) as given on the command line."""
    try:
        bands = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise GeosearchError(f"--bands {text!r}: give 1-based band indexes separated by commas, e.g. 4,3,2") from None
    if len(bands) not in (1, 3):
        raise GeosearchError(f"--bands {text!r}: give one band (shown as grey) or three (red, green, blue)")
    return bands


def resolve_bands(dataset: DatasetReaderBase, requested: Sequence[int] | None) -> BandChoice:
    """The three band indexes to read: the requested ones (checked against the scene) or the default choice."""
    if requested is None:
        return default_bands(dataset)
    for band in requested:
        if not 1 <= band <= dataset.count:
            raise GeosearchError(
                f"band {band} is out of range: the scene has {dataset.count} band(s), 1 to {dataset.count}"
            )
    if len(requested) == 1:
        return BandChoice((requested[0],) * 3, "given")  # type: ignore[arg-type]
    if len(requested) != 3:
        raise GeosearchError(f"{len(requested)} bands requested: give one band (grey) or three (red, green, blue)")
    return BandChoice(tuple(requested), "given")  # type: ignore[arg-type]
