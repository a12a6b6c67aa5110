"""What a QGIS user waits for, against a running `geosearch serve`: from the end of a drag to the matches and query
layers and the dock's rows (the search, the layers), and apart from that to the last of the k thumbnails in the
rows; and, in the same run, the bare POST /search.

Runs in the Python that has QGIS, e.g. after `make demo`:

    .venv/bin/geosearch serve --store geosearch-demo/store &
    .venv-qgis/bin/python bench/bench_plugin.py --url http://127.0.0.1:8765 --searches 20
"""

import argparse
import json
import os
import random
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "qgis_plugin"))

from qgis.core import QgsCoordinateReferenceSystem, QgsRectangle
from qgis.PyQt.QtCore import QCoreApplication
from qgis.testing import start_app
from qgis.testing.mocked import get_iface

import geosearch_qgis
from geosearch_qgis.settings import Settings

UTM21S = QgsCoordinateReferenceSystem("EPSG:32621")
DATA = (703035, -2808465, 741435, -2777745)  # the shipped Landsat 8 crop with no nodata (224077), in UTM 21S
SIDE = 6000  # metres: a box of about 200 × 200 Landsat pixels


def ms_until(done: Callable[[], bool], start: float) -> float:
    """Run the interface thread's events until `done()`; the milliseconds since `start`."""
    while not done():
        QCoreApplication.processEvents()
        time.sleep(0.001)
    return 1000 * (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8765")
    parser.add_argument("--searches", type=int, default=20)
    parser.add_argument("-k", type=int, default=20)
    args = parser.parse_args()

    start_app()
    iface = get_iface()
    iface.mapCanvas().setDestinationCrs(UTM21S)
    plugin = geosearch_qgis.classFactory(iface)
    plugin.initGui()
    plugin.settings = Settings(url=args.url, k=args.k)
    rng = random.Random(0)
    boxes = []
    for _ in range(args.searches):
        x, y = rng.uniform(DATA[0], DATA[2] - SIDE), rng.uniform(DATA[1], DATA[3] - SIDE)
        boxes.append(QgsRectangle(x, y, x + SIDE, y + SIDE))

    rows_ms, thumbnails_ms, search_ms = [], [], []
    missing = 0  # thumbnails that did not come
    for box in boxes:
        start = time.perf_counter()
        plugin.search_box(box)
        rows_ms.append(ms_until(lambda: plugin.searching is None, start))
        assert plugin.matches is not None and plugin.matches.featureCount() == args.k, plugin.dock.message.text()
        assert plugin.dock.table.rowCount() == args.k
        thumbnails_ms.append(ms_until(lambda: not plugin.thumbnails.busy(), start))
        missing += sum(plugin.dock.table.item(row, 0).icon().isNull() for row in range(args.k))

        body = json.dumps(plugin.settings.search_body(box, UTM21S)).encode()
        start = time.perf_counter()
        request = urllib.request.Request(args.url + "/search", body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as answer:
            answer.read()
        search_ms.append(1000 * (time.perf_counter() - start))
    plugin.unload()

    for name, values in (("drag → layers and rows (plugin)", rows_ms),
                         ("drag → all thumbnails in the rows (plugin)", thumbnails_ms),
                         ("POST /search alone", search_ms)):
        print(f"{name}: p50 {np.percentile(values, 50):.0f} ms, p95 {np.percentile(values, 95):.0f} ms, "
              f"max {max(values):.0f} ms over {len(values)} searches, k={args.k}")
    print(f"thumbnails that did not come: {missing} of {args.k * len(boxes)}")


if __name__ == "__main__":
    main()
