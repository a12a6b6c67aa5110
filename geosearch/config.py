"""Defaults from a TOML file, one table per command: `[tile]` then `tile_size = 512`.

Precedence, as click applies it: command-line option > GEOSEARCH_* environment variable > this file > default.
"""

import os
import tomllib
from pathlib import Path

import click

from geosearch.errors import GeosearchError


def config_path() -> Path:
    """$GEOSEARCH_CONFIG, else config.toml in the user's config directory (~/.config/geosearch on Linux)."""
    return Path(os.environ.get("GEOSEARCH_CONFIG") or Path(click.get_app_dir("geosearch")) / "config.toml")


def load_config() -> dict:
    path = config_path()
    if not path.is_file():
        if "GEOSEARCH_CONFIG" in os.environ:
            raise GeosearchError(f"{path}: config file (GEOSEARCH_CONFIG) does not exist")
        return {}
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except (tomllib.TOMLDecodeError, OSError) as error:
        raise GeosearchError(f"{path}: cannot read config file: {error}") from None
