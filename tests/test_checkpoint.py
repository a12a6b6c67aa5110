"""The checkpoint format: round trip, a stable content-hash model id, float16 storage, and every bad file."""

import pytest
import torch

from geosearch.encoder.checkpoint import FORMAT, Checkpoint, load_checkpoint, model_id_of, save_checkpoint
from geosearch.encoder.model import EncoderConfig
from geosearch.encoder.pretrained import pretrained_encoder
from geosearch.errors import GeosearchError

TILES = torch.randint(0, 256, (4, 3, 96, 96), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def checkpoint() -> Checkpoint:
    encoder, initial = pretrained_encoder("resnet18", None, embedding_dim=32, input_size=96)
    return Checkpoint.of(encoder, {"initial_weights": initial, "training": {"loss": "none"}})


def test_round_trip(tmp_path, checkpoint):
    path = save_checkpoint(checkpoint, tmp_path / "model.pt")
    loaded = load_checkpoint(path)
    assert loaded.model_id == checkpoint.model_id
    assert loaded.config == checkpoint.config
    assert loaded.metadata["training"] == {"loss": "none"}
    with torch.inference_mode():
        assert torch.equal(loaded.encoder()(TILES), checkpoint.encoder()(TILES))


def test_model_id_is_a_content_hash(checkpoint):
    rebuilt, _ = pretrained_encoder("resnet18", None, embedding_dim=32, input_size=96)
    assert Checkpoint.of(rebuilt, {"other": "metadata"}).model_id == checkpoint.model_id  # metadata is not hashed
    with torch.no_grad():
        rebuilt.projection.bias[0] += 1e-3
    assert Checkpoint.of(rebuilt, {}).model_id != checkpoint.model_id
    other_config = EncoderConfig("resnet18", embedding_dim=32, input_size=128)
    assert model_id_of(other_config, checkpoint.state_dict) != checkpoint.model_id
    assert checkpoint.model_id.startswith("resnet18-")


def test_half_storage(tmp_path, checkpoint):
    encoder = checkpoint.encoder()
    half = Checkpoint.of(encoder, checkpoint.metadata, half=True)
    full_path = save_checkpoint(checkpoint, tmp_path / "full.pt")
    half_path = save_checkpoint(half, tmp_path / "half.pt")
    assert half_path.stat().st_size < 0.6 * full_path.stat().st_size
    assert half.model_id != checkpoint.model_id
    loaded = load_checkpoint(half_path)
    assert loaded.info()["storage"] == ["float16"]
    with torch.inference_mode():
        agreement = (loaded.encoder()(TILES) * encoder(TILES)).sum(dim=1)
    assert agreement.min() > 0.999


def test_a_truncated_file(tmp_path, checkpoint):
    path = save_checkpoint(checkpoint, tmp_path / "model.pt")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(GeosearchError, match="not a readable checkpoint"):
        load_checkpoint(path)


def test_tampered_weights(tmp_path, checkpoint):
    payload = {"format": FORMAT, "model_id": checkpoint.model_id, "config": checkpoint.config.to_dict(),
               "metadata": {}, "state_dict": {k: v.clone() for k, v in checkpoint.state_dict.items()}}
    payload["state_dict"]["projection.bias"][0] += 1.0
    torch.save(payload, tmp_path / "tampered.pt")
    with pytest.raises(GeosearchError, match="corrupt checkpoint"):
        load_checkpoint(tmp_path / "tampered.pt")


def test_a_bare_state_dict_or_another_architecture(tmp_path, checkpoint):
    torch.save(checkpoint.state_dict, tmp_path / "bare.pt")
    with pytest.raises(GeosearchError, match="not a geosearch checkpoint"):
        load_checkpoint(tmp_path / "bare.pt")
    lite, _ = pretrained_encoder("efficientnet_lite0", None, embedding_dim=32)
    config = checkpoint.config  # claims resnet18, holds EfficientNet weights
    state = lite.state_dict()
    torch.save({"format": FORMAT, "model_id": model_id_of(config, state), "config": config.to_dict(),
                "metadata": {}, "state_dict": state}, tmp_path / "mixed.pt")
    with pytest.raises(GeosearchError, match=r"\(a resnet18 encoder\): the weights do not fit \(size mismatch"):
        load_checkpoint(tmp_path / "mixed.pt").encoder()


def test_settings_from_a_newer_version(tmp_path, checkpoint):
    config = checkpoint.config.to_dict() | {"attention_pool": True}
    torch.save({"format": FORMAT, "model_id": "x", "config": config, "metadata": {},
                "state_dict": checkpoint.state_dict}, tmp_path / "newer.pt")
    with pytest.raises(GeosearchError, match="unknown encoder settings"):
        load_checkpoint(tmp_path / "newer.pt")
    with pytest.raises(GeosearchError, match="no such checkpoint file"):
        load_checkpoint(tmp_path / "missing.pt")
