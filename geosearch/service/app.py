"""The HTTP API over the engine (FastAPI). One process holds the model and the store; clients such as the QGIS
plugin send boxes and get GeoJSON back, and never need torch themselves."""

import base64
import functools
import hmac
import io
import json
import os
import threading
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import anyio
import rasterio
import torch
from fastapi import FastAPI, Request
from fastapi import Query as Parameter
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from PIL import Image
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from geosearch import __version__
from geosearch.change import change, history
from geosearch.detect import METHODS, Cancelled, Detector, detect_with
from geosearch.embed import plan_scenes
from geosearch.encoder.checkpoint import Checkpoint
from geosearch.encoder.device import describe_device
from geosearch.encoder.runtime import load_encoder, runtime_of
from geosearch.errors import GeosearchError
from geosearch.export import scenes_frame
from geosearch.files import confined_to, is_remote
from geosearch.index import archive_grid, archive_stretches, index_scenes, rereadable
from geosearch.query import MAX_EXAMPLES, Box, ExampleNames, Query, build_query, tile_pixels
from geosearch.search import Filters, check_dimensions, hits_geojson, search
from geosearch.service.batcher import BatchedEncoder
from geosearch.store.archive import Archive, point_id
from geosearch.tiling import TilingOptions

MAX_BODY_BYTES = 64 * 1024
# Requests worked on at once. Most of a search is Python, which runs one thread at a time: at 64 clients on 2
# cores, FastAPI's default of 40 threads spent more CPU per search than 4 (BENCHMARKS.md).
THREADS = 2 * len(os.sched_getaffinity(0))
REQUEST_NAMES = ExampleNames(query="bbox, tile_id", positives="positives")  # build_query's errors, in its words
THUMBNAILS = 1024  # PNGs kept in memory (a few KB each): the plugin asks again for the rows it shows again


def _plain_text(text: str) -> str:
    """No path, id, CRS or date holds a NUL or a lone surrogate (JSON can escape one; UTF-8 cannot hold it), and
    the file system and PROJ refuse them with errors of their own."""
    if "\0" in text:
        raise ValueError("holds a NUL character")
    try:
        text.encode()
    except UnicodeEncodeError:
        raise ValueError("holds a lone surrogate, which is not text") from None
    return text


Text = Annotated[str, AfterValidator(_plain_text)]
FilePath = Annotated[str, Field(min_length=1), AfterValidator(_plain_text)]


class Body(BaseModel):
    """Every request body: numbers are finite (JSON as Python reads it takes NaN and Infinity)."""

    model_config = ConfigDict(allow_inf_nan=False)


class Example(Body):
    """A box with its CRS, or a tile id."""

    bbox: Annotated[list[float], Field(min_length=4, max_length=4)] | None = None
    crs: Text = "EPSG:4326"
    tile_id: Text | None = None

    def given(self) -> bool:
        """Whether it names a box or a tile (a request may name none and start from its positives)."""
        return self.bbox is not None or self.tile_id is not None

    def keywords(self, field: str | None = None) -> dict:
        """As build_query takes an example; `field` names it in the request unless it is the query."""
        if (self.bbox is None) == (self.tile_id is None):
            raise GeosearchError(f"{field}: give bbox (with crs) or tile_id" if field else
                                 "give one query: bbox (with crs) or tile_id")
        return {"bbox": tuple(self.bbox) if self.bbox is not None else None, "crs": self.crs, "tile": self.tile_id}


class ExamplesRequest(Example):
    """A query (a box with its CRS, or a tile id), more examples like the places wanted (positives; without a
    query, the first is the query) or unlike them (negatives), and the CLI's filters."""

    positives: list[Example] = []
    negatives: list[Example] = []
    within: Annotated[list[float], Field(min_length=4, max_length=4, description="lon/lat box")] | None = None
    scenes: list[Text] = []
    after: Text | None = None
    before: Text | None = None


class SearchRequest(ExamplesRequest):
    k: Annotated[int, Field(ge=1, le=1000)] = 20
    min_score: Annotated[float, Field(ge=-1, le=1)] | None = None
    include_self: bool = False
    dedup: bool = True


class DetectRequest(ExamplesRequest):
    method: Literal[METHODS] = METHODS[0]  # type: ignore[valid-type]
    threshold: float | None = None


class ChangeSide(Body):
    """One side of a change: scenes (ids or paths) and a date range."""

    scenes: list[Text] = []
    after: Text | None = None
    before: Text | None = None


class ChangeRequest(Body):
    model_config = ConfigDict(populate_by_name=True, allow_inf_nan=False)

    from_: ChangeSide = Field(alias="from")
    to: ChangeSide
    within: Annotated[list[float], Field(min_length=4, max_length=4, description="lon/lat box")] | None = None
    top: Annotated[int, Field(ge=1)] | None = None


class IndexRequest(Body):
    paths: Annotated[list[FilePath], Field(min_length=1, max_length=10_000)]
    force: bool = False


@dataclass
class Job:
    """A background job: "index" (of `paths`) or "detect". An index job ends "failed" when it could index none of
    its paths (its errors say why), else "done" (with the errors of the paths that failed, if any). A detect job
    ends "done" with its places in `result`, "failed", or "cancelled" once asked to stop."""

    id: str
    kind: str
    paths: list[str] = field(default_factory=list)
    state: str = "queued"  # queued, running, done, failed, cancelled
    tiles_done: int = 0
    tiles_total: int = 0
    summary: dict = field(default_factory=dict)
    errors: list[dict] = field(default_factory=list)
    result: dict | None = None
    cancel: threading.Event = field(default_factory=threading.Event)

    def to_dict(self) -> dict:
        return {"id": self.id, "kind": self.kind, "state": self.state, "paths": self.paths,
                "progress": {"tiles_done": self.tiles_done, "tiles_total": self.tiles_total},
                "summary": self.summary, "errors": self.errors}


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _token_in(authorization: str) -> bytes | None:
    """The token an Authorization header carries: `Bearer TOKEN`, or HTTP Basic with the token as the password and
    any user name (RFC 7617, as GitHub's and Stripe's APIs take it), which is what clients that keep credentials as
    a user and a password send, QGIS's authentication database among them. None for anything else, malformed base64
    included."""
    scheme, _, given = authorization.partition(" ")
    if scheme.lower() == "bearer":
        return given.strip().encode()
    if scheme.lower() != "basic":
        return None
    try:
        credentials = base64.b64decode(given.strip(), validate=True)
    except ValueError:  # binascii.Error
        return None
    _, colon, password = credentials.partition(b":")
    return password if colon else None


class BodyLimit:
    """Refuse request bodies over `limit` bytes (413), announced or sent in chunks: the body is read here, up to the
    limit, before the application sees any of it (an error raised while the application reads would be its own)."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_large = _error(413, f"request body over {self.limit} bytes")
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            return await too_large(scope, receive, send)
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return None
            body += message.get("body", b"")
            if len(body) > self.limit:
                return await too_large(scope, receive, send)
            more = message.get("more_body", False)
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)


@dataclass
class Service:
    """What the endpoints share: the archive (over a locked store), the model loaded once, the index jobs."""

    archive: Archive
    checkpoint: Checkpoint
    device: torch.device
    roots: list[Path]
    token: str | None = None
    runtime: str = "auto"
    jobs: dict[str, Job] = field(default_factory=dict)
    executor: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(max_workers=1))

    def __post_init__(self) -> None:
        # Every file the server reads lies under these: its --root folders, else the folders of the scenes that
        # `geosearch index` stored (never what an imported record names).
        self.read_roots = [str(root) for root in self.roots] or _indexed_folders(self.archive)
        encoder = load_encoder(self.checkpoint, self.device, self.runtime)
        self.runtime_name = runtime_of(encoder)
        self.encoder = BatchedEncoder(encoder).to(self.device).eval()
        self.thumbnail = functools.lru_cache(maxsize=THUMBNAILS)(self._thumbnail)

    def _thumbnail(self, tile_id: str, size: int) -> bytes:
        """A tile's PNG, read again from its scene; LookupError says why there is none (and is not cached)."""
        stored = self.archive.tile(point_id(tile_id))
        if stored is None:
            raise LookupError(f"no tile {tile_id} in the archive")
        pixels = tile_pixels(self.archive, stored[1])
        if pixels is None:
            raise LookupError(f"the scene of tile {tile_id} cannot be read any more")
        image = Image.fromarray(pixels.transpose(1, 2, 0))
        image.thumbnail((size, size))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue()

    def _under_roots(self, path: Path) -> bool:
        return any(path.is_relative_to(root) for root in self.roots)

    def allowed_path(self, text: str) -> str:
        """A regular file under one of the archive roots, after resolving `..` and symlinks, whose raster reads
        no file outside them (a VRT may name any file); anything else is refused. Not a FIFO or a device: GDAL
        would wait on it forever, and hold up every later job."""
        if not self.roots:
            raise PermissionError("this server has no archive roots; start it with --root DIR to allow indexing")
        try:
            path = Path(text).resolve(strict=True)
        except (OSError, RuntimeError):
            raise FileNotFoundError(f"{text}: no such file under the archive roots") from None
        if not self._under_roots(path):
            raise PermissionError(f"{text}: outside the archive roots")
        if not path.is_file():
            raise GeosearchError(f"{text}: not a regular file")
        try:
            with rasterio.open(path) as dataset:
                outside = [name for name in dataset.files if not self._under_roots(Path(name).resolve())]
        except rasterio.errors.RasterioIOError:
            return str(path)  # not a raster: the job says so, as for a file that breaks part-way
        if outside:
            raise PermissionError(f"{text}: reads {outside[0]}, outside the archive roots")
        return str(path)

    def run_index(self, job: Job, force: bool) -> None:
        job.state = "running"
        try:
            tiling = archive_grid(self.archive, TilingOptions(), None)
            profiles = archive_stretches(self.archive, tiling)
            planned, failures = plan_scenes(job.paths, tiling, profiles)
            job.errors += [{"path": e.path, "error": e.problem} for e in failures]
            job.tiles_total = sum(len(p.grid) for p in planned)

            def advance(tiles: int) -> None:
                job.tiles_done += tiles

            report = index_scenes(self.archive, self.checkpoint, planned, tiling, self.device, force=force,
                                  profiles=profiles, workers=0, encoder=self.encoder, on_tiles=advance)
            self.thumbnail.cache_clear()  # a scene indexed again with --force may show other pixels
            self.archive.optimize()
            job.errors += [{"path": e.path, "error": e.problem} for e in report.failed]
            job.summary = {"indexed": len(report.indexed), "unchanged": len(report.unchanged),
                           "failed": len(job.errors), "tiles_stored": report.tiles_stored,
                           "tiles_skipped": report.tiles_skipped, "retiled": report.retiled,
                           "off_lattice": report.off_lattice, "rewritten": report.rewritten,
                           "replaced": report.replaced}
            job.state = "done" if report.indexed or report.unchanged else "failed"
        except Exception as error:  # a job reports its failure; the server goes on
            job.errors.append({"path": None, "error": str(error).split("\n")[0]})
            job.state = "failed"

    def run_detect(self, job: Job, query: Query, detector: Detector, filters: Filters) -> None:
        if job.cancel.is_set():  # cancelled while queued
            job.state = "cancelled"
            return
        job.state = "running"

        def advance(done: int, total: int) -> None:
            job.tiles_done, job.tiles_total = done, total
            if job.cancel.is_set():
                raise Cancelled("cancelled")

        try:
            frame, detected = detect_with(self.archive, query, detector, filters, advance)
            job.result = json.loads(frame.to_json(drop_id=True))
            job.summary = {"tiles_scored": detected.scored, "tiles_detected": len(detected.tile_ids),
                           "places": len(frame)} | detector.describe()
            job.state = "done"
        except Cancelled:
            job.state = "cancelled"
        except Exception as error:  # a job reports its failure; the server goes on
            job.errors.append({"path": None, "error": str(error).split("\n")[0]})
            job.state = "failed"


def _indexed_folders(archive: Archive) -> list[str]:
    """The folders of the scenes that `geosearch index` stored (a remote scene's own URL): a server started without
    --root reads their pixels and nothing else."""
    paths = [record["path"] for record in archive.scenes() if rereadable(record) and "imported_from" not in record]
    return sorted({path if is_remote(path) else str(Path(path).resolve().parent) for path in paths})


def create_app(service: Service, threads: int = THREADS) -> ASGIApp:
    """The API: the token is checked first, then the request-body limit. Up to `threads` requests are worked on
    at once; the others wait their turn in the event loop. While it runs, files are read only under the service's
    read roots."""
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        anyio.to_thread.current_default_thread_limiter().total_tokens = threads
        with confined_to(service.read_roots):
            yield

    app = FastAPI(title="geosearch", version=__version__, lifespan=lifespan,
                  description="Search an archive of satellite and aerial scenes by what the land looks like.")
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)  # inside the token check, which is added after it

    @app.middleware("http")
    async def check_token(request: Request, call_next):
        if service.token:
            given = _token_in(request.headers.get("authorization", ""))
            if given is None or not hmac.compare_digest(given, service.token.encode()):
                return _error(401, "missing or wrong token (send 'Authorization: Bearer TOKEN', or HTTP Basic "
                                   "auth with the token as the password)")
        return await call_next(request)

    @app.exception_handler(GeosearchError)
    async def user_error(_: Request, error: GeosearchError) -> JSONResponse:
        message = str(error)
        return _error(404 if message.startswith(("no tile", "no scene")) else 400, message)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0] if error.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()))
        return _error(422, f"{where}: {first.get('msg', 'invalid request')}")

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, error: HTTPException) -> JSONResponse:
        return _error(error.status_code, str(error.detail))

    @app.exception_handler(Exception)
    async def internal(_: Request, error: Exception) -> JSONResponse:
        return _error(500, f"internal error ({type(error).__name__}); the server log has the details")

    @app.get("/health")
    def health() -> dict:
        archive = service.archive
        return {"version": __version__, "model_id": service.checkpoint.model_id,
                "device": service.device.type, "device_name": describe_device(service.device),
                "runtime": service.runtime_name,
                "store": {"location": archive.backend.location, "collection": archive.collection},
                "scenes": len(archive.scenes()), "tiles": archive.tile_count(), "max_examples": MAX_EXAMPLES}

    def query_and_filters(request: ExamplesRequest, min_score: float | None = None) -> tuple[Query, Filters]:
        archive = service.archive
        # The query, unless the examples stand in for it (then build_query says what a negative needs).
        first = request.keywords() if request.given() or not (request.positives or request.negatives) else {}
        positives = [e.keywords(f"positives.{i}") for i, e in enumerate(request.positives)]
        negatives = [e.keywords(f"negatives.{i}") for i, e in enumerate(request.negatives)]
        within = Box.parse(tuple(request.within)) if request.within else None
        filters = Filters.of(archive, within=within.lonlat() if within else None,
                             scenes=request.scenes, after=request.after, before=request.before,
                             min_score=min_score, prefix="")
        query = build_query(archive, **first, positives=positives, negatives=negatives,
                            encoder=lambda: (service.encoder, service.device), names=REQUEST_NAMES)
        return query, filters

    @app.post("/search")
    def search_endpoint(request: SearchRequest) -> JSONResponse:
        query, filters = query_and_filters(request, request.min_score)
        hits = search(service.archive, query, request.k, filters, request.include_self, request.dedup)
        return JSONResponse(hits_geojson(hits, query, filters))

    @app.post("/detect", status_code=202)
    def detect_endpoint(request: DetectRequest) -> JSONResponse:
        """Every place like the examples, as a background job: its progress at /jobs/{id}, its places (GeoJSON)
        at /jobs/{id}/result once done; DELETE /jobs/{id} cancels it. The examples are checked before it starts."""
        query, filters = query_and_filters(request)
        check_dimensions(service.archive, query)
        detector = Detector.learn(query, request.method, request.threshold)  # too few examples or inseparable: 400
        job = Job(id=str(uuid.uuid4()), kind="detect")
        service.jobs[job.id] = job
        service.executor.submit(service.run_detect, job, query, detector, filters)
        return JSONResponse({"job_id": job.id}, status_code=202)

    @app.post("/history")
    def history_endpoint(request: Example) -> JSONResponse:
        """The place of a tile or under a box on every date, as `geosearch history --json` prints it."""
        query = build_query(service.archive, **request.keywords(), encoder=lambda: (service.encoder, service.device),
                            names=REQUEST_NAMES)
        return JSONResponse(json.loads(history(service.archive, query).to_json(drop_id=True)))

    @app.post("/change")
    def change_endpoint(request: ChangeRequest) -> JSONResponse:
        """The places covered on both sides, the most changed first, as `geosearch change --json` prints them, with
        what was compared and left out under `report` (a GeoJSON foreign member)."""
        archive = service.archive
        within = Box.parse(tuple(request.within)).lonlat() if request.within else None
        sides = [Filters.of(archive, within=within, scenes=side.scenes, after=side.after, before=side.before,
                            prefix=f"{name}.") for name, side in (("from", request.from_), ("to", request.to))]
        frame, report = change(archive, *sides)
        frame = frame.head(request.top) if request.top else frame
        return JSONResponse(json.loads(frame.to_json(drop_id=True)) | {"report": report.to_dict()})

    @app.get("/stats")
    def stats() -> dict:
        return service.archive.stats()

    @app.get("/scenes")
    def scenes() -> JSONResponse:
        return JSONResponse(json.loads(scenes_frame(service.archive.scenes()).to_json(drop_id=True)))

    @app.get("/tiles/{tile_id}/thumbnail.png", responses={200: {"content": {"image/png": {}}}})
    def thumbnail(tile_id: str, size: Annotated[int, Parameter(ge=16, le=512)] = 128) -> Response:
        try:
            return Response(service.thumbnail(tile_id, size), media_type="image/png")
        except LookupError as error:
            return _error(404, str(error))

    @app.post("/index", status_code=202)
    def index(request: IndexRequest) -> JSONResponse:
        try:
            paths = [service.allowed_path(p) for p in request.paths]
        except PermissionError as error:
            return _error(403, str(error))
        except FileNotFoundError as error:
            return _error(404, str(error))
        job = Job(id=str(uuid.uuid4()), kind="index", paths=paths)
        service.jobs[job.id] = job
        service.executor.submit(service.run_index, job, request.force)
        return JSONResponse({"job_id": job.id}, status_code=202)

    @app.get("/jobs/{job_id}")
    def job_status(job_id: str) -> JSONResponse:
        job = service.jobs.get(job_id)
        if job is None:
            return _error(404, f"no job {job_id}")
        return JSONResponse(job.to_dict())

    @app.get("/jobs/{job_id}/result")
    def job_result(job_id: str) -> JSONResponse:
        job = service.jobs.get(job_id)
        if job is None:
            return _error(404, f"no job {job_id}")
        if job.result is None:
            return _error(409, f"job {job_id} has no result ({job.kind} job, {job.state})")
        return JSONResponse(job.result)

    @app.delete("/jobs/{job_id}")
    def cancel_job(job_id: str) -> JSONResponse:
        """Stop a detect job (between pages of tiles); an index job runs to its end, which keeps every scene whole."""
        job = service.jobs.get(job_id)
        if job is None:
            return _error(404, f"no job {job_id}")
        if job.kind != "detect":
            return _error(409, f"job {job_id} is an index job, which cannot be cancelled")
        if job.state in ("queued", "running"):
            job.cancel.set()
        return JSONResponse(job.to_dict())

    return app
