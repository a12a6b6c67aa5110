"""The embedding pipeline: its vectors equal the encoder applied tile by tile, in any number of reader processes."""

import numpy as np
import pytest
import torch

from geosearch.data import AERIAL_3857, LANDSAT7_RGB, LANDSAT8_224078
from geosearch.embed import EmbeddedBatch, SceneFailure, embed_scenes, gather, plan_scene
from geosearch.encoder.device import describe_device, resolve_device
from geosearch.encoder.model import EncoderConfig
from geosearch.encoder.pretrained import pretrained_encoder
from geosearch.errors import GeosearchError
from geosearch.tiling import TilingOptions, read_tiles

TILING = TilingOptions(tile_size=128)
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def encoder():
    encoder, _ = pretrained_encoder("resnet18", None, embedding_dim=32, input_size=64)
    return encoder


@pytest.fixture(scope="module")
def scenes():
    return [plan_scene(str(path), TILING) for path in (LANDSAT8_224078, LANDSAT7_RGB)]


def one_by_one(encoder, planned):
    with TILING.open(planned.path, stretch=planned.stretch) as scene, torch.inference_mode():
        tiles = [t for t in read_tiles(scene, planned.grid, TILING.min_valid) if t.kept]
        return np.array([t.index for t in tiles]), torch.cat([encoder(torch.from_numpy(t.pixels)[None]) for t in tiles])


@pytest.mark.parametrize("workers", [0, 2])
def test_pipeline_equals_the_encoder_tile_by_tile(encoder, scenes, workers):
    done, failures = gather(embed_scenes(encoder, scenes, TILING, CPU, batch_size=7, workers=workers), scenes)
    assert failures == [] and len(done) == 2
    for result in done:
        indexes, expected = one_by_one(encoder, result.planned)
        assert np.array_equal(result.indexes, indexes)
        assert np.allclose(result.vectors, expected.numpy(), atol=1e-5)
        assert (result.valid_fraction >= TILING.min_valid).all()


def test_skipped_tiles_are_counted_not_embedded(encoder, scenes):
    batches = [b for b in embed_scenes(encoder, scenes, TILING, CPU, batch_size=16, workers=0)]
    assert all(isinstance(b, EmbeddedBatch) for b in batches)
    read = sum(b.read for b in batches)
    embedded = sum(len(b.indexes) for b in batches)
    assert read == sum(len(s.grid) for s in scenes) and 0 < embedded < read


def test_a_scene_that_breaks_part_way_is_dropped_whole(encoder, tmp_path):
    truncated = tmp_path / "truncated.tif"  # opens (header first), then fails on reading pixels
    truncated.write_bytes(AERIAL_3857.read_bytes()[: AERIAL_3857.stat().st_size * 3 // 4])
    scenes = [plan_scene(str(LANDSAT8_224078), TILING), plan_scene(str(truncated), TILING)]
    results = list(embed_scenes(encoder, scenes, TILING, CPU, batch_size=4, workers=2))
    failures = [r for r in results if isinstance(r, SceneFailure)]
    assert failures and all(f.scene == 1 for f in failures)
    assert "truncated or corrupt" in failures[0].error.problem and failures[0].error.path == str(truncated)
    done, errors = gather(iter(results), scenes)
    assert [d.planned.path for d in done] == [str(LANDSAT8_224078)] and len(errors) == 1


def test_a_model_for_other_bands_is_refused(scenes):
    encoder, _ = pretrained_encoder("resnet18", None, input_size=64)
    encoder.config = EncoderConfig("resnet18", input_size=64, bands=("nir", "red", "green"))
    with pytest.raises(GeosearchError, match=r"expects bands \['nir', 'red', 'green'\]"):
        next(embed_scenes(encoder, scenes, TILING, CPU))


def test_devices():
    assert resolve_device("cpu") == CPU
    assert describe_device(CPU).startswith("cpu (")
    if torch.cuda.is_available():
        assert resolve_device("auto").type == "cuda"
    else:
        assert resolve_device("auto") == CPU
        with pytest.raises(GeosearchError, match="--device cuda: CUDA is not available"):
            resolve_device("cuda")
