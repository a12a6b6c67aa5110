"""A small filter language over tile payloads, which each backend translates into its own Qdrant models."""

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class Match:
    key: str
    value: str | int | bool


@dataclass(frozen=True)
class MatchAny:
    key: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class Range:
    key: str
    gte: float | None = None
    lte: float | None = None


@dataclass(frozen=True)
class DateRange:
    key: str
    gte: datetime | None = None
    lte: datetime | None = None


@dataclass(frozen=True)
class GeoBox:
    """Points of a geo field inside a lon/lat box."""

    key: str
    min_lon: float
    min_lat: float
    max_lon: float
    max_lat: float


@dataclass(frozen=True)
class HasId:
    ids: tuple[str, ...]


Condition = Match | MatchAny | Range | DateRange | GeoBox | HasId


@dataclass(frozen=True)
class Filter:
    must: tuple[Condition, ...] = field(default_factory=tuple)
    must_not: tuple[Condition, ...] = field(default_factory=tuple)

    def __and__(self, other: "Filter") -> "Filter":
        return Filter(self.must + other.must, self.must_not + other.must_not)


def where(*conditions: Condition) -> Filter:
    return Filter(must=tuple(conditions))
