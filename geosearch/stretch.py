"""Radiometric stretch to 8 bits, fixed once per scene so that its tiles stay comparable."""

from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum

import numpy as np

from geosearch.errors import GeosearchError

DEFAULT_PERCENTILES = (2.0, 98.0)


class StretchMode(StrEnum):
    """Whose limits a scene is stretched by.

    archive (default): one stretch per radiometric profile (scene.radiometric_profile), set by the first scene of
        that profile (or --stretch-from) and reused for every later one, so the same ground renders the same.
    scene: each scene's own percentiles (before archive stretches, every archive was stretched so).
    """

    ARCHIVE = "archive"
    SCENE = "scene"


@dataclass(frozen=True)
class Stretch:
    """Linear map of each channel from [low, high] onto [0, 255], clipped.

    `source` records where the limits came from: "identity" (8-bit data, left as is), "overviews" (the whole
    scene, read at a reduced resolution), "sample" (a fixed sample of full-resolution windows) or "given".
    """

    low: tuple[float, float, float]
    high: tuple[float, float, float]
    source: str
    percentiles: tuple[float, float] | None = None

    @property
    def is_identity(self) -> bool:
        return self.source == "identity"

    @classmethod
    def identity(cls) -> "Stretch":
        return cls(low=(0.0, 0.0, 0.0), high=(255.0, 255.0, 255.0), source="identity")

    @classmethod
    def from_samples(cls, channels: list[np.ndarray], percentiles: tuple[float, float], source: str) -> "Stretch":
        """Percentile limits per channel from 1-D arrays of valid sample values."""
        limits = [_spread(np.percentile(values, percentiles)) if values.size else (0.0, 1.0) for values in channels]
        return cls(
            low=tuple(float(lo) for lo, _ in limits),  # type: ignore[arg-type]
            high=tuple(float(hi) for _, hi in limits),  # type: ignore[arg-type]
            source=source,
            percentiles=percentiles,
        )

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        """(3, H, W) pixels of any dtype -> uint8."""
        if self.is_identity and pixels.dtype == np.uint8:
            return pixels
        low = np.asarray(self.low, dtype=np.float32)[:, None, None]
        span = np.maximum(np.asarray(self.high, dtype=np.float32)[:, None, None] - low, np.finfo(np.float32).tiny)
        scaled = (pixels.astype(np.float32) - low) * (255.0 / span)
        np.clip(scaled, 0.0, 255.0, out=scaled)
        if pixels.dtype.kind == "f":
            np.nan_to_num(scaled, copy=False, nan=0.0)  # NaN is nodata; its cast to uint8 would be undefined
        return scaled.round().astype(np.uint8)

    def scaled(self, scales: tuple[float, ...], offsets: tuple[float, ...]) -> "Stretch":
        """The limits in physical units (value × scale + offset, as the file's metadata say), which scenes of one
        profile share even where their offsets differ."""
        return replace(self, low=_linear(self.low, scales, offsets), high=_linear(self.high, scales, offsets))

    def unscaled(self, scales: tuple[float, ...], offsets: tuple[float, ...], source: str) -> "Stretch":
        """Limits in physical units turned back into one file's raw values."""
        inverse = tuple(1 / scale for scale in scales)
        shifts = tuple(-offset / scale for offset, scale in zip(offsets, scales, strict=True))
        return replace(self, low=_linear(self.low, inverse, shifts), high=_linear(self.high, inverse, shifts),
                       source=source)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: object) -> "Stretch":
        """A recorded stretch, checked: a record that an import or a damaged store brings in is refused here in one
        line, rather than breaking every later read of its profile."""
        if not isinstance(data, dict):
            raise GeosearchError(f"a stretch is a table of low and high limits, not {type(data).__name__}")
        percentiles = data.get("percentiles")
        source = data.get("source", "given")
        if not isinstance(source, str) or not (percentiles is None or _numbers(percentiles, 2)):
            raise GeosearchError("a stretch's source is text and its percentiles two numbers")
        low, high = data.get("low"), data.get("high")
        if not (_numbers(low, 3) and _numbers(high, 3)):
            raise GeosearchError(f"a stretch needs three finite low and three high limits, not {low!r} and {high!r}")
        return cls(
            low=tuple(float(v) for v in low),  # type: ignore[arg-type, union-attr]
            high=tuple(float(v) for v in high),  # type: ignore[arg-type, union-attr]
            source=source,
            percentiles=tuple(float(v) for v in percentiles) if percentiles else None,  # type: ignore[arg-type]
        )


def finite_number(value: object) -> bool:
    """Whether a value read from JSON is a finite number (not text, not a boolean)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and bool(np.isfinite(value))


def _numbers(values: object, count: int) -> bool:
    """Whether `values` is a list of `count` finite numbers."""
    return isinstance(values, list | tuple) and len(values) == count and all(map(finite_number, values))


def _spread(limits: np.ndarray) -> tuple[float, float]:
    """Limits one unit apart around a constant channel, which then shows as mid-grey rather than as nothing."""
    low, high = float(limits[0]), float(limits[1])
    return (low, high) if high > low else (low - 0.5, low + 0.5)


def _linear(values: tuple[float, ...], scales: tuple[float, ...], offsets: tuple[float, ...]) -> tuple:
    return tuple(float(v * s + o) for v, s, o in zip(values, scales, offsets, strict=True))


def parse_stretch(text: str) -> StretchMode | Stretch:
    """`archive`, `scene`, or fixed limits: `LO,HI` for every band or `LO,HI,LO,HI,LO,HI` for red, green, blue."""
    if text in tuple(StretchMode):
        return StretchMode(text)
    problem = f"{text!r}: give archive, scene, LO,HI or LO,HI,LO,HI,LO,HI (red, green, blue)"
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise GeosearchError(problem) from None
    if len(values) == 2:
        values *= 3
    if len(values) != 6 or not np.isfinite(values).all():
        raise GeosearchError(problem)
    low, high = tuple(values[0::2]), tuple(values[1::2])
    if any(lo >= hi for lo, hi in zip(low, high, strict=True)):
        raise GeosearchError(f"{text!r}: each LO must be below its HI")
    return Stretch(low=low, high=high, source="given")  # type: ignore[arg-type]


@dataclass
class ProfileStretches:
    """One stretch per radiometric profile, in physical units: known ones (an archive's), those the scenes of this
    run set (`added`, for the caller to record; `chosen` is the profile --stretch-from set), or one `fixed`
    stretch for every profile."""

    known: dict[str, Stretch] = field(default_factory=dict)
    fixed: Stretch | None = None
    added: dict[str, Stretch] = field(default_factory=dict)
    chosen: str | None = None

    def get(self, profile: str) -> Stretch | None:
        return self.fixed or self.known.get(profile) or self.added.get(profile)

    def add(self, profile: str, stretch: Stretch) -> None:
        self.added[profile] = stretch
