"""When a scene was acquired: from its metadata tags, else from common file-name conventions."""

import re
from datetime import UTC, date, datetime
from pathlib import Path

from rasterio.io import DatasetReaderBase

from geosearch.errors import GeosearchError

# Tags GDAL exposes for acquisition time, most specific first; TIFFTAG_DATETIME is often the processing time,
# so it comes last.
_TAGS = ("ACQUISITIONDATETIME", "ACQUISITION_DATE", "DATE_ACQUIRED", "SENSING_TIME", "PRODUCT_START_TIME",
         "DATATAKE_1_DATATAKE_SENSING_START", "TIFFTAG_DATETIME")
# Landsat (LC08_L1TP_224078_20200518_...), Sentinel-2 (..._20200518T134221_...), and plain 8-digit or ISO dates.
_NAME_PATTERNS = (
    re.compile(r"(?<!\d)(?P<y>(?:19|20)\d{2})(?P<m>[01]\d)(?P<d>[0-3]\d)(?:T\d{6})?(?!\d)"),
    re.compile(r"(?<!\d)(?P<y>(?:19|20)\d{2})-(?P<m>[01]\d)-(?P<d>[0-3]\d)(?!\d)"),
)


def parse_date(text: str, option: str = "--acquired") -> datetime:
    """An ISO date or datetime given by the user (naive means UTC)."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise GeosearchError(f"{option} {text!r}: give a date like 2020-05-18 or a time like 2020-05-18T13:42") \
            from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _from_tags(dataset: DatasetReaderBase) -> datetime | None:
    tags = {key.upper(): value for key, value in dataset.tags().items()}
    for key in _TAGS:
        if value := tags.get(key):
            text = value.strip().replace("Z", "+00:00")
            if re.match(r"^\d{4}:\d{2}:\d{2} ", text):  # TIFF's own format: 2020:05:18 13:42:21
                text = text.replace(":", "-", 2)
            try:
                return parse_date(text)
            except GeosearchError:
                continue
    return None


def _from_name(path: str) -> datetime | None:
    for pattern in _NAME_PATTERNS:
        for match in pattern.finditer(Path(path).name):
            try:
                day = date(int(match["y"]), int(match["m"]), int(match["d"]))
            except ValueError:
                continue
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
    return None


def acquired_of(path: str, dataset: DatasetReaderBase) -> datetime | None:
    """The acquisition time from tags, else from the file name, else None (unknown)."""
    return _from_tags(dataset) or _from_name(path)
