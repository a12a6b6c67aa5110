"""The server's query embeddings, one encoder call at a time: sixteen concurrent requests each calling the encoder
with its own threads oversubscribe the cores and lose throughput (BENCHMARKS.md). Here one worker thread takes
the first request waiting, gathers those that are waiting or arrive within a bounded wait, runs the encoder once
over all their tiles and hands each request its own rows."""

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

import torch
from torch import nn

from geosearch.encoder.runtime import Embedder


@dataclass
class _Request:
    images: torch.Tensor
    result: Future = field(default_factory=Future)


class BatchedEncoder(nn.Module):
    """An encoder that many threads may call at once. Tiles of one shape are embedded together, up to
    `max_tiles` per call; a request waits at most `max_wait_s` for others to join it."""

    def __init__(self, encoder: Embedder, max_tiles: int = 64, max_wait_s: float = 0.002):
        super().__init__()
        self.encoder, self.config = encoder, encoder.config
        self.max_tiles, self.max_wait_s = max_tiles, max_wait_s
        self._waiting: queue.Queue[_Request] = queue.Queue()
        threading.Thread(target=self._serve, name="geosearch-encoder", daemon=True).start()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        request = _Request(images)
        self._waiting.put(request)
        return request.result.result()

    def _gather(self) -> list[_Request]:
        batch = [self._waiting.get()]
        tiles, deadline = len(batch[0].images), time.monotonic() + self.max_wait_s
        while tiles < self.max_tiles:
            try:
                batch.append(self._waiting.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                break
            tiles += len(batch[-1].images)
        return batch

    def _serve(self) -> None:
        while True:
            by_shape: dict[tuple, list[_Request]] = {}
            for request in self._gather():
                by_shape.setdefault(tuple(request.images.shape[1:]), []).append(request)
            for group in by_shape.values():
                try:
                    with torch.inference_mode():
                        vectors = self.encoder(torch.cat([r.images for r in group]))
                except Exception as error:  # each request raises it in its own thread
                    for request in group:
                        request.result.set_exception(error)
                    continue
                for request, rows in zip(group, vectors.split([len(r.images) for r in group]), strict=True):
                    request.result.set_result(rows)
