"""geosearch: search satellite and aerial archives by what the land looks like."""

__version__ = "0.1.0"
