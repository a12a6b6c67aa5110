"""Silent surprises (issue 20, item 8), each as a user meets it: one clear line where there was silence, a
misleading message, or a side effect."""

from pathlib import Path

import pytest

from conftest import fill_disk, run_geosearch
from geosearch.data import AERIAL_3857
from geosearch.errors import GeosearchError
from geosearch.search import Filters
from geosearch.store import open_backend
from geosearch.store.archive import Archive


def error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("reliability") / "store"
    assert run_geosearch("index", str(AERIAL_3857), "--store", str(path)).returncode == 0
    return path


def test_an_empty_date_range_is_an_error(store):
    result = run_geosearch("search", "--store", str(store), "--tile", "x", "--after", "2021-01-02",
                           "--before", "2021-01-01")
    assert result.returncode == 1
    assert error_lines(result) == ["Error: --after 2021-01-02 is later than --before 2021-01-01: no date is in between"]
    with open_backend(store, create=False) as backend:
        archive = Archive.open(backend, "tiles")
        with pytest.raises(GeosearchError, match=r"^after 2021-01-02 is later than before 2021-01-01"):
            Filters.of(archive, after="2021-01-02", before="2021-01-01", prefix="")
        one_day = Filters.of(archive, after="2021-01-01", before="2021-01-01")  # `before` takes in the whole day
        assert one_day.after < one_day.before


@pytest.mark.parametrize(("text", "problem"), [
    ("[tiles]\ntile_size = 512\n", "unknown table [tiles]; the tables are the commands: change, demo, detect, embed, "),
    ("tile_size = 512\n", "unknown table [tile_size]; the tables are the commands: "),
    ("[tile]\ntile_sise = 512\n", "[tile] has no key 'tile_sise'; the keys of [tile] are as_json, assets, bands, "),
    ("[model.info]\njson = true\n", "[model.info] has no key 'json'; the keys of [model.info] are as_json"),
    ("[model.nothing]\nx = 1\n", "unknown table [model.nothing]; the tables are the commands: info, init, list"),
])
def test_unknown_config_tables_and_keys_are_errors(tmp_path, text, problem):
    config = tmp_path / "config.toml"
    config.write_text(text)
    result = run_geosearch("tile", str(AERIAL_3857), env={"GEOSEARCH_CONFIG": str(config)})
    assert result.returncode == 1
    (line,) = error_lines(result)
    assert line.startswith(f"Error: {config}: {problem}"), line


def test_a_known_config_is_taken(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text('[tile]\ntile_size = 512\nedge = "drop"\n[model.info]\nas_json = true\n')
    result = run_geosearch("tile", str(AERIAL_3857), env={"GEOSEARCH_CONFIG": str(config)})
    assert result.returncode == 0, result.stderr
    assert "1 scene(s): 1 tiles kept" in result.stdout  # 25 tiles of 256 px, 1 of 512 px with the edges dropped


@pytest.mark.parametrize(("args", "source", "error"), [
    (["--tile-size", "0"], {}, "Error: Invalid value for '--tile-size': 0 is not in the range x>=8."),
    ([], {"GEOSEARCH_TILE_SIZE": "3"}, "Error: Invalid value for '--tile-size' (from the environment variable "
                                       "GEOSEARCH_TILE_SIZE): 3 is not in the range x>=8."),
    ([], {"GEOSEARCH_EDGE": "wrap"}, "Error: Invalid value for '--edge' (from the environment variable "
                                     "GEOSEARCH_EDGE): 'wrap' is not one of 'shift', 'pad', 'drop'."),
    ([], "[tile]\nmin_valid = 2\n", "Error: Invalid value for '--min-valid' (from {config} [tile] min_valid): 2.0 is "
                                    "not in the range 0<=x<=1."),
])
def test_a_usage_error_comes_first_and_names_its_source(tmp_path, args, source, error):
    if isinstance(source, str):
        config = tmp_path / "config.toml"
        config.write_text(source)
        source, error = {"GEOSEARCH_CONFIG": str(config)}, error.format(config=config)
    result = run_geosearch("tile", str(AERIAL_3857), *args, env=source)
    assert result.returncode == 2
    assert error_lines(result) == [error, "Try 'geosearch tile -h' for help."]


def test_usage_errors_of_the_group_come_first():
    unknown = run_geosearch("tiles")
    assert unknown.returncode == 2
    assert error_lines(unknown) == ["Error: No such command 'tiles'. Did you mean 'tile'?",
                                   "Try 'geosearch -h' for help."]
    option = run_geosearch("model", "info", "--jsn")
    assert option.returncode == 2
    assert error_lines(option)[1] == "Try 'geosearch model info -h' for help."


def test_a_failed_read_says_what_gdal_said(tmp_path):
    truncated = tmp_path / "truncated.tif"  # a COG: header first, so it opens and fails on reading pixels
    truncated.write_bytes(AERIAL_3857.read_bytes()[: AERIAL_3857.stat().st_size // 2])
    for command in (["tile"], ["index", "--store", str(tmp_path / "store")]):
        result = run_geosearch(*command, str(truncated))
        (line,) = [line for line in error_lines(result) if line.startswith("error:")]
        assert "See previous exception" not in line and "TIFFReadEncodedTile() failed" in line, line


@pytest.mark.parametrize("command", [["stats"], ["scenes"], ["remove", "x"], ["export", "--scenes", "out.geojson"],
                                     ["search", "--tile", "x"]])
@pytest.mark.parametrize("local", ["--store", "--qdrant-url"])
def test_read_only_commands_do_not_create_a_store(tmp_path, command, local):
    missing = tmp_path / "missing" / "store"
    place = str(missing) if local == "--store" else f"file://{missing}"
    result = run_geosearch(*command, local, place, cwd=tmp_path)
    assert result.returncode == 1
    assert error_lines(result) == [f"Error: no store at {missing}; index some scenes first"]
    assert list(tmp_path.iterdir()) == []


def test_an_export_to_a_full_disk_is_one_line_and_keeps_the_old_file(store, mount_tmpfs):
    """pyogrio's own error named a feature it could not add, with a traceback; the file already there stays."""
    with open_backend(store, create=False) as backend:
        archive = Archive.open(backend, "tiles")
        tile_id, _ = next(archive.tiles(archive.scenes()[0]["scene_id"]))
    disk = mount_tmpfs("1m")
    for name in ("out.geojson", "out.gpkg", "out.parquet"):
        (disk / name).write_text("the previous answer")
    fill_disk(disk, leave=0)
    for name in ("out.geojson", "out.gpkg", "out.parquet"):
        result = run_geosearch("search", "--store", str(store), "--tile", tile_id, "-o", str(disk / name))
        assert result.returncode == 1
        assert error_lines(result) == [f"Error: {disk / name}: cannot be written (no space left on its file system); "
                                       "nothing there was changed"]
        assert (disk / name).read_text() == "the previous answer"
