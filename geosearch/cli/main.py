"""The `geosearch` command group: errors, logging, config, shared output helpers."""

import logging
from typing import IO

import click
from click.core import ParameterSource
from click.exceptions import NoArgsIsHelpError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

from geosearch import __version__
from geosearch.config import config_path, load_config
from geosearch.errors import GeosearchError
from geosearch.store import report_bus_errors

log = logging.getLogger("geosearch")
stderr = Console(stderr=True)


class _UsageError(click.UsageError):
    """click's usage error with the error first, then where to find help: click puts the usage line first and
    the error on the third line."""

    def show(self, file: IO | None = None) -> None:
        click.echo(f"Error: {self.format_message()}", file=file, err=True)
        if self.ctx is not None:
            click.echo(f"Try '{self.ctx.command_path} {self.ctx.help_option_names[0]}' for help.", file=file, err=True)


def _source_hint(error: click.BadParameter) -> str | None:
    """A bad value names where it came from: click names the option even when the value was set by an
    environment variable or the config file, where the user would look for it in vain."""
    ctx, param = error.ctx, error.param
    if ctx is None or param is None or param.name is None or not isinstance(param, click.Option):
        return None
    option = f"'{max(param.opts, key=len)}'"
    match ctx.get_parameter_source(param.name):
        case ParameterSource.ENVIRONMENT:
            return f"{option} (from the environment variable {param.envvar})"
        case ParameterSource.DEFAULT_MAP:
            table = ".".join(ctx.command_path.split()[1:])
            return f"{option} (from {config_path()} [{table}] {param.name})"
    return None


def _usage_error(error: click.UsageError) -> click.UsageError:
    if isinstance(error, NoArgsIsHelpError):  # shows the help, as it should
        return error
    if isinstance(error, click.BadParameter) and (hint := _source_hint(error)):
        error.param_hint = hint
    return _UsageError(error.format_message(), error.ctx)


class _Group(click.Group):
    """Turns a GeosearchError anywhere below into click's one-line 'Error: …' and exit status 1, and puts a usage
    error's message first (exit status 2)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as error:
            raise _usage_error(error) from None

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except GeosearchError as error:
            raise click.ClickException(str(error)) from None
        except click.UsageError as error:
            raise _usage_error(error) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="geosearch")
@click.option("-v", "--verbose", is_flag=True, help="Also show GDAL's own warnings and debug messages.")
@click.pass_context
def cli(ctx: click.Context, verbose: bool) -> None:
    """Search satellite and aerial archives by what the land looks like."""
    logging.basicConfig(format="%(levelname)s: %(message)s", level=logging.DEBUG if verbose else logging.WARNING)
    logging.getLogger("rasterio").setLevel(logging.DEBUG if verbose else logging.CRITICAL)
    ctx.default_map = load_config(ctx.command)
    report_bus_errors()


PROGRESS_COLUMNS = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())


def print_error(error: Exception) -> None:
    stderr.print(f"[red]error:[/red] {error}", markup=True, highlight=False, soft_wrap=True)


def main() -> None:
    cli(prog_name="geosearch")
