"""The `geosearch` command line: thin click commands over the engine, one module per command group."""

from geosearch.cli import archive, change, demo, detect, embed, model, search, serve, tile, train  # noqa: F401  (registers the commands)
from geosearch.cli.main import cli, main

__all__ = ["cli", "main"]
