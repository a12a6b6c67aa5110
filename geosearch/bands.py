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
# Composites by the common names of their bands (red, green, blue as shown), found in band descriptions such as
# `B8_nir` (per-band products name their bands so: products.py).
PRESETS = {"true-color": ("red", "green", "blue"), "false-color": ("nir", "red", "green"),
           "swir": ("swir22", "nir", "red")}


def _band_by_description(descriptions: Sequence[str | None], colour: str) -> int | None:
    """The band whose description names `colour` (a visible colour, or a common name such as nir or swir22)."""
    for index, description in enumerate(descriptions, start=1):
        words = set(re.split(r"[^a-z0-9]+", (description or "").lower()))
        if colour in words and not (words - {colour}) & _NOT_VISIBLE:
            return index
    return None


class BandChoice(NamedTuple):
    """The band indexes read as red, green, blue, and what the choice rests on."""

    indexes: tuple[int, int, int]
    source: str  # "colorinterp", "descriptions", "assumed" (bands 1-3, no hint), "grey", "given" or a preset


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


def parse_bands(text: str) -> tuple[int, ...] | tuple[str, ...]:
    """Parse '4,3,2' or '1' (1-based band indexes), or a preset's name, as given on the command line."""
    if text in PRESETS:
        return PRESETS[text]
    try:
        bands = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise GeosearchError(f"--bands {text!r}: give 1-based band indexes separated by commas, e.g. 4,3,2, or "
                             f"one of {', '.join(PRESETS)}") from None
    if len(bands) not in (1, 3):
        raise GeosearchError(f"--bands {text!r}: give one band (shown as grey) or three (red, green, blue)")
    return bands


def resolve_bands(dataset: DatasetReaderBase, requested: Sequence[int] | Sequence[str] | None) -> BandChoice:
    """The three band indexes to read: the requested ones (checked against the scene; common names, a preset's,
    found by the band descriptions) or the default choice."""
    if requested is None:
        return default_bands(dataset)
    if all(isinstance(band, str) for band in requested):
        return _by_common_names(dataset, tuple(requested))  # type: ignore[arg-type]
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


def _by_common_names(dataset: DatasetReaderBase, names: tuple[str, ...]) -> BandChoice:
    found = [_band_by_description(dataset.descriptions, name) for name in names]
    preset = next((key for key, value in PRESETS.items() if value == names), ",".join(names))
    missing = [name for name, band in zip(names, found, strict=True) if band is None]
    if missing:
        shown = ", ".join(d or "?" for d in dataset.descriptions)
        raise GeosearchError(f"--bands {preset} needs a {missing[0]} band, which the scene's band names ({shown}) do "
                             "not show; give band numbers")
    return BandChoice(tuple(found), preset)  # type: ignore[arg-type]
