"""The encoder network: shapes, unit norm, pooling, determinism, batch invariance, preprocessing."""

import pytest
import rasterio
import torch

from geosearch.data import AERIAL_3857
from geosearch.encoder.backbones import BACKBONES
from geosearch.encoder.model import Encoder, EncoderConfig
from geosearch.encoder.pooling import MAC, GeM, GridPool, SPoC
from geosearch.encoder.pretrained import pretrained_encoder
from geosearch.errors import GeosearchError


@pytest.fixture(scope="module")
def tiles() -> torch.Tensor:
    """Eight real 64 px tiles of the shipped aerial scene, uint8."""
    with rasterio.open(AERIAL_3857) as dataset:
        pixels = torch.from_numpy(dataset.read(window=((0, 128), (0, 256))))
    return torch.stack([pixels[:, r : r + 64, c : c + 64] for r in (0, 64) for c in (0, 64, 128, 192)])


@pytest.mark.parametrize("backbone", list(BACKBONES))
@pytest.mark.parametrize(("pooling", "embedding_dim"), [("gem", 128), ("spoc", None), ("grid", 64)])
def test_shapes_and_unit_norm(tiles, backbone, pooling, embedding_dim):
    config = EncoderConfig(backbone, pooling=pooling, embedding_dim=embedding_dim, input_size=64, grid=2)
    with torch.inference_mode():
        vectors = Encoder(config).eval()(tiles)
    assert vectors.shape == (8, config.dim) and vectors.dtype == torch.float32
    assert config.dim == (embedding_dim or BACKBONES[backbone].channels)
    assert torch.allclose(vectors.norm(dim=1), torch.ones(8), atol=1e-5)


def test_pooling_relations():
    features = torch.rand(2, 16, 5, 7) + 0.01
    assert torch.allclose(GeM(p=1.0)(features), SPoC()(features), atol=1e-6)
    assert torch.allclose(GeM(p=200.0)(features), MAC()(features), rtol=0.02)
    assert GridPool(2)(features).shape == (2, 16 * 4)
    assert GeM().p.requires_grad  # learnable, as in cirtorch


def test_deterministic_on_cpu(tiles):
    first, _ = pretrained_encoder("resnet18", None, embedding_dim=64, input_size=64)
    second, _ = pretrained_encoder("resnet18", None, embedding_dim=64, input_size=64)
    with torch.inference_mode():
        assert torch.equal(first(tiles), first(tiles))
        assert torch.equal(first(tiles), second(tiles))  # seeded initialisation: the same random weights


def test_a_tile_alone_equals_the_tile_in_a_batch(tiles):
    encoder, _ = pretrained_encoder("efficientnet_lite0", "imagenet")
    with torch.inference_mode():
        batch = encoder(tiles)
        alone = torch.cat([encoder(tile[None]) for tile in tiles])
    assert torch.allclose(batch, alone, atol=1e-5)


def test_preprocessing_takes_bytes_or_unit_floats_and_resizes(tiles):
    encoder, _ = pretrained_encoder("efficientnet_lite0", "imagenet")
    with torch.inference_mode():
        assert torch.allclose(encoder(tiles), encoder(tiles.float() / 255), atol=1e-6)
        resized = encoder.preprocess(tiles)
    assert resized.shape == (8, 3, 224, 224)
    assert resized.min() >= -1.0 - 1e-6 and resized.max() <= 1.0 + 1e-6  # mean = std = 0.5 for the Lite weights


def test_unknown_settings_are_refused():
    with pytest.raises(GeosearchError, match="unknown backbone 'resnet101'"):
        EncoderConfig("resnet101")
    with pytest.raises(GeosearchError, match="unknown pooling 'avg'"):
        EncoderConfig("resnet18", pooling="avg")
