"""`geosearch tile`."""

import json
import time
from functools import partial
from pathlib import Path

import click
import geopandas as gpd
import pandas as pd
from rich.progress import Progress, TaskID

from geosearch.cli.main import PROGRESS_COLUMNS, cli, print_error, stderr
from geosearch.cli.options import scene_arguments, scene_paths, tiling_from, tiling_options
from geosearch.errors import SceneError
from geosearch.export import check_output_path, write_features
from geosearch.stac import Sources
from geosearch.tiling import Survey, TilingOptions, survey


def _advance(progress: Progress, task: TaskID, done: int, total: int) -> None:
    progress.update(task, completed=done, total=total)


def _survey_all(sources: Sources, options: TilingOptions, stretch_from: tuple[str, ...],
                quiet: bool) -> tuple[list[Survey], list[SceneError]]:
    """Survey each scene with a progress bar, one stretch per profile as the options say, with what STAC says of
    it; a bad scene is reported and the rest go on."""
    surveys, failures = [], []
    profiles = options.profile_stretches(stretch_from=stretch_from)
    with Progress(*PROGRESS_COLUMNS, console=stderr, disable=quiet, transient=True) as progress:
        scenes = progress.add_task("scenes", total=len(sources.paths))
        for path in sources.paths:
            tiles = progress.add_task(Path(path).name, total=None)
            try:
                surveys.append(survey(path, options, partial(_advance, progress, tiles), profiles))
                surveys[-1].scene.update(sources.described.get(path, {}))
            except SceneError as error:
                failures.append(error)
                print_error(error)
            progress.remove_task(tiles)
            progress.advance(scenes)
    return surveys, failures


def _report(surveys: list[Survey], failures: list[SceneError], seconds: float, out: Path | None, as_json: bool,
            quiet: bool) -> None:
    kept = sum(int(s.kept.sum()) for s in surveys)
    skipped = sum(int((~s.kept).sum()) for s in surveys)
    if as_json:
        click.echo(json.dumps({
            "scenes": [s.scene | {"tiles": len(s.grid), "kept": int(s.kept.sum())} for s in surveys],
            "failed": [{"path": f.path, "error": f.problem} for f in failures],
            "tiles_kept": kept, "tiles_skipped": skipped, "seconds": round(seconds, 3),
            "out": str(out) if out else None,
        }, indent=2))
        return
    if quiet:
        return
    for s in surveys:
        scene = s.scene
        click.echo(f"{Path(scene['path']).name}: {int(s.kept.sum())} tiles kept, {int((~s.kept).sum())} skipped "
                   f"({scene['crs']}, {s.grid.gsd_m:.3g} m, bands {scene['bands']}, "
                   f"stretch {scene['stretch']['source']})")
    rate = (kept + skipped) / seconds if seconds > 0 else 0.0
    failed = f", {len(failures)} failed" if failures else ""
    click.echo(f"{len(surveys)} scene(s){failed}: {kept} tiles kept, {skipped} skipped, "
               f"{seconds:.1f} s ({rate:.0f} tiles/s)")
    if out:
        click.echo(f"wrote {out}")


def _tile(sources: Sources, options: TilingOptions, stretch_from: tuple[str, ...], out: Path | None,
          include_skipped: bool, as_json: bool, quiet: bool) -> None:
    start = time.perf_counter()
    for error in sources.failures:
        print_error(error)
    surveys, failures = _survey_all(sources, options, stretch_from, quiet or as_json)
    failures = sources.failures + failures
    if out and surveys:
        frame = pd.concat([s.to_frame(include_skipped) for s in surveys], ignore_index=True)
        write_features(gpd.GeoDataFrame(frame, geometry="geometry", crs=4326), out)
    _report(surveys, failures, time.perf_counter() - start, out if surveys else None, as_json, quiet)
    if failures:
        raise click.exceptions.Exit(1)


@cli.command()
@scene_arguments
@tiling_options
@click.option("-o", "--out", type=click.Path(dir_okay=False), help="Write the tiles to .geojson, .gpkg or .parquet.")
@click.option("--include-skipped", is_flag=True, help="Also write skipped tiles, with kept=false.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars, no summary.")
def tile(scenes: tuple[str, ...], recursive: bool, assets: tuple[str, ...] | None, out: str | None,
         include_skipped: bool, as_json: bool, quiet: bool, **kwargs) -> None:
    """Cut SCENES (files, directories of rasters, STAC files) into tiles and report the grid with footprints."""
    out_path = check_output_path(out) if out else None
    sources = scene_paths(scenes, recursive, assets)
    _tile(sources, tiling_from(kwargs), kwargs["stretch_from"], out_path, include_skipped, as_json, quiet)
