"""Radiometric stretch to 8 bits, fixed once per scene so that its tiles stay comparable."""

from dataclasses import asdict, dataclass

import numpy as np

DEFAULT_PERCENTILES = (2.0, 98.0)


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

    @classmethod
    def identity(cls) -> "Stretch":
        return cls(low=(0.0, 0.0, 0.0), high=(255.0, 255.0, 255.0), source="identity")

    @classmethod
    def from_samples(cls, channels: list[np.ndarray], percentiles: tuple[float, float], source: str) -> "Stretch":
        """Percentile limits per channel from 1-D arrays of valid sample values."""
        limits = [np.percentile(values, percentiles) if values.size else (0.0, 1.0) for values in channels]
        return cls(
            low=tuple(float(lo) for lo, _ in limits),  # type: ignore[arg-type]
            high=tuple(float(hi) for _, hi in limits),  # type: ignore[arg-type]
            source=source,
            percentiles=percentiles,
        )

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        """(3, H, W) pixels of any dtype -> uint8."""
        if self.source == "identity" and pixels.dtype == np.uint8:
            return pixels
        low = np.asarray(self.low, dtype=np.float32)[:, None, None]
        span = np.maximum(np.asarray(self.high, dtype=np.float32)[:, None, None] - low, np.finfo(np.float32).tiny)
        scaled = (pixels.astype(np.float32) - low) * (255.0 / span)
        np.clip(scaled, 0.0, 255.0, out=scaled)
        if pixels.dtype.kind == "f":
            np.nan_to_num(scaled, copy=False, nan=0.0)  # NaN is nodata; its cast to uint8 would be undefined
        return scaled.round().astype(np.uint8)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Stretch":
        percentiles = data.get("percentiles")
        return cls(
            low=tuple(data["low"]),  # type: ignore[arg-type]
            high=tuple(data["high"]),  # type: ignore[arg-type]
            source=data.get("source", "given"),
            percentiles=tuple(percentiles) if percentiles else None,  # type: ignore[arg-type]
        )
