"""`geosearch serve` under load: search latency and throughput with 1, 4, 16 and 64 concurrent clients on loopback.

    cd bench && python bench_serve.py [--tiles 100000] [--seconds 30] [--clients 1 4 16 64] [--runtime auto]

The store is bench_search.py's (the shipped scenes indexed for real, plus synthetic tiles up to --tiles, HNSW
built as `index` builds it). The server runs as `geosearch serve` in its own process. Each client loops for
--seconds, sending POST /search with a tile-sized box at a random place in the Landsat 8 crop 224/077 (k = 20),
and waits for each answer before sending the next.
"""

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date

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


def load(url: str, clients: int, seconds: float) -> dict:
    latencies: list[float] = []
    failures = [0]
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client(seed: int) -> None:
        boxes = random_boxes(200, seed)
        with httpx.Client(timeout=60) as http:
            i = 0
            while time.monotonic() < stop:
                start = time.perf_counter()
                response = http.post(f"{url}/search", json={"bbox": boxes[i % len(boxes)], "k": 20})
                elapsed = time.perf_counter() - start
                with lock:
                    latencies.append(elapsed)
                    failures[0] += response.status_code != 200
                i += 1

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(seed,)) for seed in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    return {"clients": clients, "requests": len(latencies), "failed": failures[0],
            "throughput_per_s": round(len(latencies) / wall, 2), **percentiles(latencies)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiles", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--runtime", default="auto", help="the server's --runtime")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=CACHE) as folder:
        build_store(folder, args.tiles)
        port = _free_port()
        server = subprocess.Popen([sys.executable, "-m", "geosearch", "serve", "--store", folder, "--port", str(port),
                                   "--runtime", args.runtime])
        url = f"http://127.0.0.1:{port}"
        try:
            while True:
                try:
                    if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.5)
            httpx.post(f"{url}/search", json={"bbox": random_boxes(1)[0], "k": 20}, timeout=60)  # warm-up
            for clients in args.clients:
                row = {"date": date.today().isoformat(), "tiles": args.tiles, **load(url, clients, args.seconds)}
                print(json.dumps(row), flush=True)
        finally:
            server.terminate()
            server.wait()


if __name__ == "__main__":
    main()
