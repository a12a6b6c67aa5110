"""The server's query embeddings: concurrent requests share encoder calls and each gets its own rows back."""

import threading

import numpy as np
import pytest
import torch

from geosearch.data import LANDSAT8_224077
from geosearch.embed import plan_scene
from geosearch.encoder.default import default_checkpoint
from geosearch.service.batcher import BatchedEncoder
from geosearch.tiling import TilingOptions, read_tiles


@pytest.fixture(scope="module")
def tiles() -> torch.Tensor:
    tiling = TilingOptions(tile_size=128)
    planned = plan_scene(str(LANDSAT8_224077), tiling)
    with tiling.open(str(LANDSAT8_224077), stretch=planned.stretch) as scene:
        return torch.from_numpy(np.stack([t.pixels for t in read_tiles(scene, planned.grid) if t.kept][:24]))


def test_concurrent_requests_share_calls_and_get_their_own_rows(tiles):
    encoder = default_checkpoint().encoder()
    calls = []
    encoder.register_forward_hook(lambda _module, inputs, _output: calls.append(len(inputs[0])))
    small = tiles[5:6, :, :64, :64]  # a request of another shape
    with torch.inference_mode():
        expected, expected_small = encoder(tiles), encoder(small)
    calls.clear()
    batched = BatchedEncoder(encoder, max_wait_s=0.05)
    requests = [tiles[i:i + 2] for i in range(0, len(tiles), 2)] + [small]
    answers: dict[int, torch.Tensor] = {}
    threads = [threading.Thread(target=lambda i=i: answers.__setitem__(i, batched(requests[i])))
               for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i in range(len(tiles) // 2):
        assert torch.allclose(answers[i], expected[2 * i:2 * i + 2], atol=1e-5)
    assert torch.allclose(answers[len(requests) - 1], expected_small, atol=1e-5)
    assert sum(calls) == len(tiles) + 1 and len(calls) < len(requests)  # 13 requests in fewer calls


def test_an_encoder_error_reaches_every_request_of_its_call(tiles):
    batched = BatchedEncoder(default_checkpoint().encoder())
    with pytest.raises(RuntimeError):
        batched(tiles[:, :2])  # two channels: the network refuses them
    assert batched(tiles[:1]).shape == (1, default_checkpoint().config.dim)  # and the worker goes on
