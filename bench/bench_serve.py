"""`geosearch serve` under load: search latency and throughput with 1, 4, 16 and 64 concurrent clients on loopback,
and the CPU time per answered search of the server and of the clients (which share the machine).

    cd bench && python bench_serve.py [--tiles 100000] [--seconds 30] [--clients 1 4 16 64] [--store DIR]
                                      [--servers "" "--runtime torch" "--threads 40"]

The store is bench_search.py's (the shipped scenes indexed for real, plus synthetic tiles up to --tiles, HNSW
built as `index` builds it), built in a temporary folder, or in --store DIR if that does not exist yet and reused
from there if it does. Each of --servers (options added to `geosearch serve`; "" for none) runs in turn in its own
process, on the same store. Each client loops for --seconds, sending POST /search with a tile-sized box at a random
place in the Landsat 8 crop 224/077 (k = 20), and waits for each answer before sending the next.
"""

import argparse
import asyncio
import itertools
import json
import os
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import httpx
import numpy as np
from bench_search import build_store
from pyproj import Transformer

from bench_store import CACHE, percentiles


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def random_boxes(n: int, seed: int = 0) -> list[list[float]]:
    """Tile-sized lon/lat boxes inside scene A (EPSG:32621), as a map client would send them."""
    rng = np.random.default_rng(seed)
    to_lonlat = Transformer.from_crs(32621, 4326, always_xy=True)
    boxes = []
    for x, y in zip(703035 + rng.uniform(0, 1024 * 30, n), -2808465 + rng.uniform(0, 768 * 30, n), strict=True):
        west, south = to_lonlat.transform(x, y)
        east, north = to_lonlat.transform(x + 256 * 30, y + 256 * 30)
        boxes.append([west, south, east, north])
    return boxes


def cpu_seconds(pid: int) -> float:
    """User and system time of a process so far (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load(url: str, clients: int, seconds: float, server_pid: int) -> dict:
    """Each client an asyncio task on one event loop, so that the load generator spends little of the CPU the
    server shares with it (64 client threads spent 30 ms of CPU per request)."""
    latencies: list[float] = []
    failures = 0
    stop = time.monotonic() + seconds

    async def client(http: httpx.AsyncClient, seed: int) -> None:
        nonlocal failures
        for box in itertools.cycle(random_boxes(200, seed)):
            if time.monotonic() >= stop:
                return
            start = time.perf_counter()
            response = await http.post(f"{url}/search", json={"bbox": box, "k": 20})
            latencies.append(time.perf_counter() - start)
            failures += response.status_code != 200

    async def run() -> None:
        limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
        async with httpx.AsyncClient(timeout=120, limits=limits) as http:
            await asyncio.gather(*(client(http, seed) for seed in range(clients)))

    started, cpu, own = time.perf_counter(), cpu_seconds(server_pid), time.process_time()
    asyncio.run(run())
    wall, cpu, own = time.perf_counter() - started, cpu_seconds(server_pid) - cpu, time.process_time() - own
    return {"clients": clients, "requests": len(latencies), "failed": failures,
            "throughput_per_s": round(len(latencies) / wall, 2), **percentiles(latencies),
            "server_cpu_ms_per_request": round(1000 * cpu / max(len(latencies), 1), 1),
            "clients_cpu_ms_per_request": round(1000 * own / max(len(latencies), 1), 1)}


@contextmanager
def bench_store(folder: str | None, tiles: int):
    """--store DIR (built there the first time), or a temporary store."""
    if folder and Path(folder).exists():
        yield folder
        return
    with tempfile.TemporaryDirectory(dir=CACHE) as scratch:
        build_store(folder or scratch, tiles)
        yield folder or scratch


@contextmanager
def served(store: str, options: list[str]):
    """`geosearch serve` with `options` on a free port, warmed up by one search; its URL and pid."""
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "geosearch", "serve", "--store", store, "--port", str(port),
                               *options])
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        httpx.post(f"{url}/search", json={"bbox": random_boxes(1)[0], "k": 20}, timeout=60)
        yield url, server.pid
    finally:
        server.terminate()
        server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiles", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--servers", nargs="+", default=[""], help="each server's options, e.g. '--threads 40'")
    parser.add_argument("--store", help="build the store here, or reuse it if it exists")
    args = parser.parse_args()
    with bench_store(args.store, args.tiles) as store:
        for options in args.servers:
            with served(store, shlex.split(options)) as (url, pid):
                for clients in args.clients:
                    row = {"date": date.today().isoformat(), "tiles": args.tiles, "server": options,
                           **load(url, clients, args.seconds, pid)}
                    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
