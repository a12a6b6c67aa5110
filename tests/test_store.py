"""The archive on both backends (Qdrant Edge, qdrant-client), and `geosearch index/scenes/remove/stats`."""

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import torch

from conftest import cut_short, fill_disk, run_geosearch
from geosearch.data import LANDSAT8_224077, LANDSAT8_224078, shipped_scenes
from geosearch.embed import plan_scene
from geosearch.encoder.checkpoint import Checkpoint
from geosearch.encoder.pretrained import pretrained_encoder
from geosearch.errors import GeosearchError
from geosearch.index import index_scenes
from geosearch.query import Query
from geosearch.search import search
from geosearch.store import open_backend
from geosearch.store.archive import Archive
from geosearch.store.backend import HNSW_MIN_TILES
from geosearch.store.filters import DateRange, GeoBox, Match, where
from geosearch.tiling import TilingOptions, survey

TILING = TilingOptions()
CPU = torch.device("cpu")
BACKENDS = ["edge", "qdrant-client"] + (["server"] if os.environ.get("GEOSEARCH_QDRANT_URL") else [])


@pytest.fixture(scope="module")
def checkpoint() -> Checkpoint:
    encoder, initial = pretrained_encoder("resnet18", None, embedding_dim=32, input_size=64)
    return Checkpoint.of(encoder, {"initial_weights": initial})


@pytest.fixture(scope="module")
def expected_tiles() -> dict[str, int]:
    return {str(p): int(survey(str(p), TILING).kept.sum()) for p in shipped_scenes()}


@pytest.fixture(params=BACKENDS)
def backend(request, tmp_path):
    if request.param == "server":
        url, collection_prefix = os.environ["GEOSEARCH_QDRANT_URL"], f"t{time.time_ns()}"
        with open_backend(url=url, api_key=os.environ.get("GEOSEARCH_QDRANT_API_KEY")) as backend:
            backend.prefix = collection_prefix
            yield backend
        return
    url = f"file://{tmp_path / 'store'}" if request.param == "qdrant-client" else None
    with open_backend(tmp_path / "store", url=url) as backend:
        backend.prefix = "tiles"
        yield backend


def test_index_remove_and_filter(backend, checkpoint, expected_tiles):
    archive = Archive.open(backend, backend.prefix, checkpoint.model_id, checkpoint.config.dim)
    planned = [plan_scene(path, TILING) for path in expected_tiles]
    report = index_scenes(archive, checkpoint, planned, TILING, CPU, workers=0)
    assert sorted(report.indexed) == sorted(expected_tiles) and report.failed == []
    assert archive.tile_count() == report.tiles_stored == sum(expected_tiles.values())
    for p in planned:
        assert archive.tile_count(p.grid.scene_id) == expected_tiles[p.path]
        ids = [tile_id for tile_id, _ in archive.tiles(p.grid.scene_id)]
        assert len(set(ids)) == len(ids) and set(ids) <= set(p.grid.tile_ids)

    again = index_scenes(archive, checkpoint, planned, TILING, CPU, workers=0)
    assert again.indexed == [] and sorted(again.unchanged) == sorted(expected_tiles)
    forced = index_scenes(archive, checkpoint, planned[:1], TILING, CPU, force=True, workers=0)
    assert forced.indexed == [planned[0].path] and archive.tile_count() == sum(expected_tiles.values())

    landsat = next(p for p in planned if p.path == str(LANDSAT8_224078))
    record = archive.scene(landsat.grid.scene_id)
    assert record["status"] == "complete" and record["acquired"] == "2020-05-18T00:00:00+00:00"
    _, payload = next(archive.tiles(landsat.grid.scene_id))
    assert payload["model_id"] == checkpoint.model_id and payload["footprint"]["type"] == "Polygon"
    in_paraguay = where(GeoBox("centroid", -55.5, -26.0, -54.0, -24.5))
    assert backend.count(archive.collection, in_paraguay) == expected_tiles[str(LANDSAT8_224077)] + \
        expected_tiles[str(LANDSAT8_224078)]
    dated = where(DateRange("acquired", gte=datetime(2020, 5, 1, tzinfo=UTC), lte=datetime(2020, 6, 1, tzinfo=UTC)))
    assert backend.count(archive.collection, dated) == backend.count(archive.collection, in_paraguay)
    pages = list(archive.vector_pages(in_paraguay, page=7))  # the whole filter, a page of vectors at a time
    paged = {tile_id: vector for ids, vectors, _ in pages for tile_id, vector in zip(ids, vectors, strict=True)}
    assert len(paged) == backend.count(archive.collection, in_paraguay) and max(len(p[0]) for p in pages) == 7
    stored = backend.points(archive.collection, list(paged)[:3])
    assert len(stored) == 3 and all(np.allclose(vector, paged[tile_id]) for tile_id, (vector, _) in stored.items())
    query = np.ones(checkpoint.config.dim, dtype=np.float32)
    hits = backend.query(archive.collection, query, 5, where(Match("scene_id", landsat.grid.scene_id)), exact=True)
    assert len(hits) == 5 and all(h.payload["scene_id"] == landsat.grid.scene_id for h in hits)

    assert archive.remove_scene(landsat.grid.scene_id) == expected_tiles[landsat.path]
    assert archive.scene(landsat.grid.scene_id) is None
    assert archive.tile_count() == sum(expected_tiles.values()) - expected_tiles[landsat.path]
    assert archive.stats()["scenes_by_status"] == {"complete": len(expected_tiles) - 1}


def test_tiles_of_unfinished_scenes_are_never_served(backend, checkpoint, expected_tiles):
    """Tiles stored for a scene that is not complete are filtered out by the store itself (so k never starves):
    not searched, not looked up by id, not counted as the archive's; completing the scene serves them."""
    archive = Archive.open(backend, backend.prefix, checkpoint.model_id, checkpoint.config.dim)
    planned = [plan_scene(str(p), TILING) for p in (LANDSAT8_224077, LANDSAT8_224078)]
    index_scenes(archive, checkpoint, planned, TILING, CPU, workers=0)
    pending = cut_short(archive, str(LANDSAT8_224078), 5)
    complete = expected_tiles[str(LANDSAT8_224077)]
    stored = backend.points(archive.collection, pending[:1])[pending[0]]
    query = Query(stored[0], None, None, None, {})
    hits = search(archive, query, k=complete + 5, dedup=False)
    assert len(hits) == complete and not {h.tile_id for h in hits} & set(pending)
    unlike = Query(-stored[0], None, None, None, {})  # a negative: Qdrant's recommendation query
    refined = search(archive, Query(stored[0], None, None, None, {}, negatives=(unlike,)), k=complete + 5)
    assert refined and not {h.tile_id for h in refined} & set(pending)
    with pytest.raises(GeosearchError, match=rf"tile {pending[0]} is of {LANDSAT8_224078}, which is not completely "
                                             r"indexed \(indexing\); index it again"):
        archive.tile(pending[0])
    stats = archive.stats()
    assert stats["tiles"] == complete == sum(r["tiles"] for r in archive.scenes() if r["status"] == "complete")
    assert stats["tiles_pending"] == 5 and stats["scenes_by_status"] == {"complete": 1, "indexing": 1}

    archive.complete_scene(archive.find_scenes(str(LANDSAT8_224078))[0], 5)
    assert search(archive, query, k=1, include_self=True)[0].tile_id == pending[0]
    assert archive.tile_count() == complete + 5 and archive.stats()["tiles_pending"] == 0


def test_the_cli_serves_no_tile_of_an_unfinished_scene(tmp_path, small_model, expected_tiles):
    """`search --tile` on a tile of an unfinished scene says so in one line; `scenes` and `stats` agree."""
    store = tmp_path / "store"
    indexed = run_geosearch("index", str(LANDSAT8_224077), str(LANDSAT8_224078), "--store", str(store), "--model",
                            str(small_model), "-q")
    assert indexed.returncode == 0, indexed.stderr
    with open_backend(store) as backend:
        pending = cut_short(Archive.open(backend, "tiles"), str(LANDSAT8_224078), 5)
    refused = run_geosearch("search", "--tile", pending[0], "--store", str(store))
    assert refused.returncode == 1 and [line for line in refused.stderr.splitlines() if line] == [
        f"Error: tile {pending[0]} is of {LANDSAT8_224078}, which is not completely indexed (indexing); index it again"]
    records = json.loads(run_geosearch("scenes", "--store", str(store), "--json").stdout)
    stats = json.loads(run_geosearch("stats", "--store", str(store), "--json").stdout)
    complete = sum(r["tiles"] for r in records if r["status"] == "complete")
    assert stats["tiles"] == complete == expected_tiles[str(LANDSAT8_224077)] and stats["tiles_pending"] == 5


def test_another_model_is_refused(backend, checkpoint):
    Archive.open(backend, backend.prefix, checkpoint.model_id, checkpoint.config.dim)
    with pytest.raises(GeosearchError, match=rf"holds vectors of model {checkpoint.model_id}; this run uses other-1"):
        Archive.open(backend, backend.prefix, "other-1", 32)


def test_an_archive_whose_creation_was_cut_short_is_finished(backend, checkpoint):
    """A run killed between creating the tiles collection and writing the archive's meta record leaves an empty
    collection; the next run finishes creating the archive instead of calling it foreign."""
    backend.create_collection(backend.prefix, checkpoint.config.dim, {})
    archive = Archive.open(backend, backend.prefix, checkpoint.model_id, checkpoint.config.dim)
    assert Archive.open(backend, backend.prefix).model_id == archive.model_id == checkpoint.model_id
    backend.create_collection(f"{backend.prefix}-foreign", 4, {})
    backend.upsert(f"{backend.prefix}-foreign", [str(uuid.UUID(int=1))], np.ones((1, 4), np.float32), [{}])
    with pytest.raises(GeosearchError, match=r"-foreign' in .* was not made by geosearch"):
        Archive.open(backend, f"{backend.prefix}-foreign", checkpoint.model_id, checkpoint.config.dim)


def test_hnsw_is_built_past_the_threshold_and_agrees_with_exact_search(tmp_path):
    """Qdrant Edge builds HNSW only for segments past HNSW_MIN_TILES; what it finds then agrees with exact search,
    with and without a geo filter; tiles added later stay in a plain segment and are still found."""
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((HNSW_MIN_TILES + 5000, 8)).astype(np.float32)
    lon = rng.uniform(-50, 50, len(vectors))
    with open_backend(tmp_path / "store") as backend:
        backend.create_collection("tiles", 8, {"centroid": "geo"})

        def add(start: int, stop: int) -> None:
            for i in range(start, stop, 5000):
                ids = [str(uuid.UUID(int=j + 1)) for j in range(i, min(i + 5000, stop))]
                backend.upsert("tiles", ids, vectors[i:i + len(ids)],
                               [{"centroid": {"lon": float(x), "lat": 0.0}} for x in lon[i:i + len(ids)]])

        add(0, HNSW_MIN_TILES - 5000)
        assert backend.optimize("tiles") is False and backend.indexed_count("tiles") == 0
        add(HNSW_MIN_TILES - 5000, HNSW_MIN_TILES + 4000)
        assert backend.optimize("tiles") is True and backend.indexed_count("tiles") == HNSW_MIN_TILES + 4000
        add(HNSW_MIN_TILES + 4000, len(vectors))
        box = where(GeoBox("centroid", -50, -1, -40, 1))  # about 10 %
        for query in vectors[-20:]:  # among the plain segment's points
            for flt in (None, box):
                exact = {h.id for h in backend.query("tiles", query, 10, flt, exact=True)}
                assert {h.id for h in backend.query("tiles", query, 10, flt)} == exact
        assert backend.indexed_count("tiles") == HNSW_MIN_TILES + 4000


@pytest.fixture(scope="module")
def small_model(tmp_path_factory, checkpoint):
    from geosearch.encoder.checkpoint import save_checkpoint

    return save_checkpoint(checkpoint, tmp_path_factory.mktemp("model") / "small.pt")


def test_cli_flow(tmp_path, small_model, expected_tiles):
    store = tmp_path / "store"
    args = ("--store", str(store), "--model", str(small_model))
    first = run_geosearch("index", *map(str, shipped_scenes()), *args, "--json")
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)
    assert summary["indexed"] == 4 and summary["tiles_in_store"] == sum(expected_tiles.values())
    second = json.loads(run_geosearch("index", *map(str, shipped_scenes()), *args, "--json").stdout)
    assert second["indexed"] == 0 and second["unchanged"] == 4 and second["tiles_in_store"] == summary["tiles_in_store"]

    listing = run_geosearch("scenes", "--store", str(store), "--geojson", str(tmp_path / "scenes.geojson"))
    assert listing.returncode == 0 and "4 scene(s)" in listing.stdout
    footprints = gpd.read_file(tmp_path / "scenes.geojson")
    assert len(footprints) == 4 and (footprints["status"] == "complete").all()
    stats = json.loads(run_geosearch("stats", "--store", str(store), "--json").stdout)
    assert stats["tiles"] == summary["tiles_in_store"] and stats["scenes"] == 4

    removed = run_geosearch("remove", str(LANDSAT8_224077), "--store", str(store))
    assert removed.returncode == 0 and f"{expected_tiles[str(LANDSAT8_224077)]} tiles" in removed.stdout
    missing = run_geosearch("remove", "no-such-scene", "--store", str(store))
    assert missing.returncode == 1 and "no scene 'no-such-scene' in the archive" in missing.stderr


def test_kill_9_mid_run_then_resume(tmp_path, small_model, expected_tiles):
    """A run killed at any point leaves no scene marked complete that is not; the next run finishes exactly."""
    store = tmp_path / "store"
    scenes = [str(p) for p in shipped_scenes()]
    command = [sys.executable, "-m", "geosearch", "index", *scenes, "--store", str(store), "--model", str(small_model),
               "--tile-size", "32", "--workers", "0", "--quiet"]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lock = store / ".geosearch.lock"
    deadline = time.time() + 60
    while time.time() < deadline and not (store / "edge" / "tiles__scenes").exists():  # until it is storing
        time.sleep(0.2)
    time.sleep(2.0)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL and lock.exists()

    with open_backend(store) as backend:  # the kernel dropped the lock with the process
        archive = Archive.open(backend, "tiles")
        records = archive.scenes()
        assert any(r["status"] != "complete" for r in records) or len(records) < len(scenes), "killed too late"
        complete = {r["scene_id"]: r["tiles"] for r in records if r["status"] == "complete"}
        for scene_id, tiles in complete.items():
            assert archive.tile_count(scene_id) == tiles
        served = archive.nearest(np.ones(32, dtype=np.float32), 10_000)
        assert {h.payload["scene_id"] for h in served} <= set(complete)
        assert len(served) == archive.tile_count() == sum(complete.values())
    resumed = run_geosearch(*command[3:-1], "--json")
    assert resumed.returncode == 0, resumed.stderr
    expected = {p: int(survey(p, TilingOptions(tile_size=32)).kept.sum()) for p in scenes}
    with open_backend(store) as backend:
        archive = Archive.open(backend, "tiles")
        assert [r["status"] for r in archive.scenes()] == ["complete"] * len(scenes)
        assert archive.tile_count() == sum(expected.values())
        ids = [i for r in archive.scenes() for i, _ in archive.tiles(r["scene_id"])]
        assert len(ids) == len(set(ids)) == sum(expected.values())


def test_a_killed_runs_workers_do_not_hold_the_store(tmp_path, small_model):
    """Reader processes are forked from the run and share its open files; once the run is killed, its store can be
    opened at once, while those workers are still alive (they take seconds to notice)."""
    store = tmp_path / "store"
    child = subprocess.Popen([sys.executable, "-m", "geosearch", "index", *map(str, shipped_scenes()), "--store",
                              str(store), "--model", str(small_model), "--tile-size", "16", "--workers", "1", "-q"])
    children, workers, deadline = Path(f"/proc/{child.pid}/task/{child.pid}/children"), [], time.time() + 60
    while not workers and child.poll() is None and time.time() < deadline:  # until it reads tiles
        time.sleep(0.1)
        workers = children.read_text().split()
    time.sleep(0.5)
    assert child.poll() is None and workers, "killed too late"
    child.kill()
    child.wait()
    with open_backend(store) as backend:
        assert Archive.open(backend, "tiles").scenes()
        assert any(Path(f"/proc/{pid}").exists() for pid in workers), "the workers were gone already"


def test_a_second_process_gets_store_in_use(tmp_path):
    store = tmp_path / "store"
    holder = subprocess.Popen([sys.executable, "-c", f"""
import time
from geosearch.store import open_backend
with open_backend({str(store)!r}):
    print("open", flush=True)
    time.sleep(30)
"""], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        result = run_geosearch("stats", "--store", str(store))
        assert result.returncode == 1
        assert f"{store}: store in use by another geosearch process (pid {holder.pid})" in result.stderr
    finally:
        holder.kill()
        holder.wait()


def test_a_collection_is_a_plain_name(backend):
    for name in ("../../x", "a/b", "/abs", ".hidden", "", "x" * 65, "tiles\n", "sp ace"):
        with pytest.raises(GeosearchError, match="give a name of 1 to 64 letters"):
            Archive.open(backend, name, "m", 4)
    assert Archive.open(backend, "Tiles_2.v-1", "m", 4).collection == "Tiles_2.v-1"


def test_a_collection_name_that_is_a_path_writes_nothing(tmp_path, small_model):
    """From the option, the environment or the config file: one line that names where the name came from, a
    non-zero exit, nothing written anywhere."""
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    config = tmp_path / "config.toml"
    config.write_text('[stats]\ncollection = "../x"\n')
    problem = "collection '{}': give a name of 1 to 64 letters, digits, '_', '-' or '.' (not first)"
    runs = [
        (run_geosearch("index", str(LANDSAT8_224078), "--store", "store", "--model", str(small_model),
                       "--collection", "../../x", cwd=work),
         "Invalid value for '--collection': " + problem.format("../../x")),
        (run_geosearch("stats", "--store", "store", cwd=work, env={"GEOSEARCH_COLLECTION": "a/../../x"}),
         "Invalid value for '--collection' (from the environment variable GEOSEARCH_COLLECTION): "
         + problem.format("a/../../x")),
        (run_geosearch("stats", "--store", "store", cwd=work, env={"GEOSEARCH_CONFIG": str(config)}),
         f"{config}: [stats] " + problem.format("../x")),
    ]
    for result, line in runs:
        assert result.returncode != 0 and next(e for e in result.stderr.splitlines() if e) == f"Error: {line}"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a", "b", "config.toml"]


@pytest.mark.parametrize("url", ["ftp://x y", "http://[::1", "http://localhost:99999", "http://h:port", "http://",
                                 "localhost:6333", "file://", "http://a b:6333"])
def test_a_malformed_qdrant_url_is_one_clear_error(url):
    with pytest.raises(GeosearchError, match=rf"^Qdrant URL '{re.escape(url)}' is malformed: give http\[s\]://HOST"), \
            open_backend(url=url):
        pass


def test_a_malformed_qdrant_url_fails_before_any_work():
    result = run_geosearch("stats", "--qdrant-url", "ftp://x y")
    assert result.returncode == 1 and [line for line in result.stderr.splitlines() if line] == [
        "Error: Qdrant URL 'ftp://x y' is malformed: give http[s]://HOST[:PORT] for a server, or file:///DIR for "
        "qdrant-client's local mode"]


def test_unreachable_server_fails_fast():
    """Within the client's 5 s timeout (measured on the connection alone: a loaded machine starts the CLI slowly),
    not after qdrant-client's retries."""
    start = time.perf_counter()
    with pytest.raises(GeosearchError, match=r"^cannot reach Qdrant at http://127\.0\.0\.1:9: "), \
            open_backend(url="http://127.0.0.1:9"):
        pass
    assert time.perf_counter() - start < 15
    result = run_geosearch("stats", "--qdrant-url", "http://127.0.0.1:9")
    assert result.returncode == 1 and [line for line in result.stderr.splitlines() if line] == [
        "Error: cannot reach Qdrant at http://127.0.0.1:9: [Errno 111] Connection refused"]


def test_index_reports_bad_scenes_and_goes_on(tmp_path, small_model):
    bad = tmp_path / "bad.tif"
    bad.write_text("not a raster")
    result = run_geosearch("index", str(LANDSAT8_224078), str(bad), "--store", str(tmp_path / "store"),
                           "--model", str(small_model), "--acquired", "2021-03-04", "--json")
    assert result.returncode == 1 and "error: " + str(bad) in result.stderr
    assert json.loads(result.stdout)["indexed"] == 1
    with open_backend(tmp_path / "store") as backend:
        (record,) = Archive.open(backend, "tiles").scenes()
        assert record["acquired"] == "2021-03-04T00:00:00+00:00"
    wrong_date = run_geosearch("index", str(LANDSAT8_224078), "--store", str(tmp_path / "s2"), "--acquired", "May")
    assert wrong_date.returncode == 1 and "--acquired 'May': give a date like 2020-05-18" in wrong_date.stderr


@pytest.fixture
def small_disk(mount_tmpfs):
    return mount_tmpfs("400m")


def test_full_disk_is_refused_before_writing(small_disk, small_model):
    store = small_disk / "store"
    args = ("--store", str(store), "--model", str(small_model), "-q")
    assert run_geosearch("index", str(LANDSAT8_224078), *args).returncode == 0
    assert run_geosearch("stats", "--store", str(store)).returncode == 0  # a first open reserves what it maps
    filler = fill_disk(small_disk, leave=60 * 2**20)
    full = run_geosearch("index", str(LANDSAT8_224077), *args)
    assert full.returncode == 1
    lines = [line for line in full.stderr.splitlines() if line]
    planned = len(survey(str(LANDSAT8_224077), TilingOptions()).grid)
    assert len(lines) == 1 and f"MiB free, but storing {planned} tiles needs about" in lines[0]
    filler.unlink()
    stats = json.loads(run_geosearch("stats", "--store", str(store), "--json").stdout)
    assert stats["scenes_by_status"] == {"complete": 1} and stats["tiles"] == 22  # intact: 224078 on the aligned grid
    assert run_geosearch("index", str(LANDSAT8_224077), *args).returncode == 0


def _contents(store: Path) -> dict[str, bytes]:
    """Every stored byte (the lock file holds only the pid of the last process that opened the store)."""
    return {str(path.relative_to(store)): path.read_bytes() for path in sorted(store.rglob("*"))
            if path.is_file() and path.name != ".geosearch.lock"}


def test_a_store_without_room_for_what_it_maps_is_one_clear_error(small_disk, small_model):
    """Opening the store maps its segment files and touches every page: on a file system without room for them,
    even a read-only command died of SIGBUS (exit 135, no message). Now it is one line, and no byte changes."""
    store = small_disk / "store"
    assert run_geosearch("index", str(LANDSAT8_224078), "--store", str(store), "--model", str(small_model),
                         "-q").returncode == 0
    stored = _contents(store)
    filler = fill_disk(small_disk, leave=20 * 2**20)
    for command in (["stats"], ["scenes"], ["search", "--tile", str(uuid.uuid4())],
                    ["index", str(LANDSAT8_224077), "--model", str(small_model)]):
        result = run_geosearch(*command, "--store", str(store))
        assert result.returncode == 1, result.stderr
        (line,) = [line for line in result.stderr.splitlines() if line]
        assert re.fullmatch(rf"Error: {store}: opening the store needs \d+ MiB more on its file system \(20 MiB "
                            r"free\): Qdrant maps its files into memory; free some space", line), line
    assert _contents(store) == stored
    filler.unlink()
    stats = json.loads(run_geosearch("stats", "--store", str(store), "--json").stdout)
    assert stats["scenes_by_status"] == {"complete": 1} and stats["tiles"] == 22


def test_a_bus_error_where_space_runs_out_later_is_one_line(mount_tmpfs):
    """Space taken by another process after the checks: a write through a memory map then meets SIGBUS. The
    CLI's handler turns it into one line and exit status 1 (a real fault on a real full file system)."""
    disk = mount_tmpfs("1m")
    fill_disk(disk, leave=0)
    script = ("import mmap, sys\nfrom geosearch.store import report_bus_errors\nreport_bus_errors()\n"
              "handle = open(sys.argv[1], 'w+b')\nhandle.truncate(2**20)\nview = mmap.mmap(handle.fileno(), 2**20)\n"
              "view[:] = bytes(2**20)\n")
    result = subprocess.run([sys.executable, "-c", script, str(disk / "mapped")], capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.startswith("Error: the store's file system ran out of space while Qdrant wrote its "
                                    "memory-mapped files (SIGBUS)") and result.stderr.count("\n") == 1


def test_read_only_disk_is_one_clear_error(small_disk, small_model):
    store = small_disk / "store"
    assert run_geosearch("index", str(LANDSAT8_224078), "--store", str(store), "--model", str(small_model),
                         "-q").returncode == 0
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    try:
        result = run_geosearch("index", str(LANDSAT8_224077), "--store", str(store), "--model", str(small_model))
        assert result.returncode == 1
        assert [line for line in result.stderr.splitlines() if line] == [
            f"Error: {store}: cannot open the store here (Read-only file system)"]
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)
    stats = json.loads(run_geosearch("stats", "--store", str(store), "--json").stdout)
    assert stats["scenes_by_status"] == {"complete": 1} and stats["tiles"] == 22  # 224078 on the aligned grid
