"""The `geosearch` command group: errors, logging, config, shared output helpers."""

import logging

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

from geosearch import __version__
from geosearch.config import load_config
from geosearch.errors import GeosearchError

log = logging.getLogger("geosearch")
stderr = Console(stderr=True)


class _Group(click.Group):
    """Turns a GeosearchError anywhere below into click's one-line 'Error: …' and exit status 1."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except GeosearchError as error:
            raise click.ClickException(str(error)) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="geosearch")
@click.option("-v", "--verbose", is_flag=True, help="Also show GDAL's own warnings and debug messages.")
@click.pass_context
def cli(ctx: click.Context, verbose: bool) -> None:
    """Search satellite and aerial archives by what the land looks like."""
    logging.basicConfig(format="%(levelname)s: %(message)s", level=logging.DEBUG if verbose else logging.WARNING)
    logging.getLogger("rasterio").setLevel(logging.DEBUG if verbose else logging.CRITICAL)
    ctx.default_map = load_config()


PROGRESS_COLUMNS = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())


def print_error(error: Exception) -> None:
    stderr.print(f"[red]error:[/red] {error}", markup=True, highlight=False, soft_wrap=True)


def main() -> None:
    cli(prog_name="geosearch")
