"""Defaults from a TOML file, one table per command: `[tile]` then `tile_size = 512`.

Precedence, as click applies it: command-line option > GEOSEARCH_* environment variable > this file > default.
click's default_map ignores what it does not know, so the file is checked against the commands: a misspelt table
or key is an error, not a setting that silently does nothing.
"""

import os
import tomllib
from pathlib import Path

import click

from geosearch.errors import GeosearchError
from geosearch.store import check_collection


def config_path() -> Path:
    """$GEOSEARCH_CONFIG, else config.toml in the user's config directory (~/.config/geosearch on Linux)."""
    return Path(os.environ.get("GEOSEARCH_CONFIG") or Path(click.get_app_dir("geosearch")) / "config.toml")


def _check_tables(config: dict, command: click.Command, path: Path, table: str = "") -> None:
    """A group's tables are its commands; a command's keys are its options, by their parameter names."""
    if isinstance(command, click.Group):
        for key, value in config.items():
            name = f"{table}.{key}" if table else key
            if key not in command.commands or not isinstance(value, dict):
                raise GeosearchError(f"{path}: unknown table [{name}]; the tables are the commands: "
                                     f"{', '.join(sorted(command.commands))}")
            _check_tables(value, command.commands[key], path, name)
        return
    options = sorted(p.name for p in command.params if isinstance(p, click.Option) and p.name)
    for key in config:
        if key not in options:
            raise GeosearchError(f"{path}: [{table}] has no key {key!r}; the keys of [{table}] are "
                                 f"{', '.join(options)}")


def load_config(cli: click.Command) -> dict:
    """The config file, checked against `cli`'s commands."""
    path = config_path()
    if not path.is_file():
        if "GEOSEARCH_CONFIG" in os.environ:
            problem = "is not a file" if path.exists() else "does not exist"
            raise GeosearchError(f"{path}: config file (GEOSEARCH_CONFIG) {problem}")
        return {}
    try:
        with path.open("rb") as file:
            config = tomllib.load(file)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as error:
        raise GeosearchError(f"{path}: cannot read config file: {error}") from None
    for command, table in config.items():  # checked here too, so that the error names the file
        if isinstance(table, dict) and "collection" in table:
            try:
                check_collection(str(table["collection"]))
            except GeosearchError as error:
                raise GeosearchError(f"{path}: [{command}] {error}") from None
    _check_tables(config, cli, path)
    return config
