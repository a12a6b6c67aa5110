"""Each pretrained set loads with no missing or unexpected keys, and behaves as trained."""

import numpy as np
import pytest
import rasterio
import torch
import torch.nn.functional as F
from PIL import Image

from geosearch._torchvision import import_torchvision
from geosearch.data import AERIAL_3857
from geosearch.encoder.backbones import BACKBONES
from geosearch.encoder.pretrained import (
    _geoembed_state_dict,
    classifier_from_file,
    efficientnet_lite_classifier,
    pretrained_encoder,
    torchvision_classifier,
)
from geosearch.errors import GeosearchError

skimage_data = pytest.importorskip("skimage.data")
# Shipped in torchvision's code.
CATEGORIES = import_torchvision().models.ResNet50_Weights.IMAGENET1K_V2.meta["categories"]


def classify(model: torch.nn.Module, picture: np.ndarray, size: int) -> str:
    """Top ImageNet class: shorter side to size/0.875, centre crop, inputs in [-1, 1] as the Lite weights expect."""
    x = torch.from_numpy(picture[..., :3].copy()).permute(2, 0, 1).float()[None] / 255
    scale = size / 0.875 / min(x.shape[-2:])
    x = F.interpolate(x, scale_factor=scale, mode="bicubic", antialias=True, align_corners=False)
    top, left = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
    x = (x[..., top : top + size, left : left + size] - 0.5) / 0.5
    with torch.inference_mode():
        return CATEGORIES[int(model(x).argmax())]


@pytest.mark.parametrize(("variant", "size"), [("0", 224), ("2", 260)])
def test_efficientnet_lite_classifies_photos(variant, size):
    model, report = efficientnet_lite_classifier(variant)
    assert report.missing == [] and report.unexpected == []
    assert classify(model, skimage_data.chelsea(), size) in {"tabby", "tiger cat", "Egyptian cat"}
    assert classify(model, skimage_data.coffee(), size) in {"espresso", "cup", "coffee mug"}
    assert classify(model, skimage_data.rocket(), size) in {"missile", "projectile", "space shuttle",
                                                             "drilling platform"}


def test_geoembed_covers_the_whole_encoder():
    encoder, initial = pretrained_encoder("resnet18_aerial", "geoembed-v3")
    assert initial["licence"] == "MIT"
    report = encoder.load_state_dict(_geoembed_state_dict(encoder.config), strict=True)  # raises on any mismatch
    assert not report.missing_keys and not report.unexpected_keys


def test_geoembed_is_stable_under_small_shifts():
    encoder, _ = pretrained_encoder("resnet18_aerial", "geoembed-v3")
    with rasterio.open(AERIAL_3857) as dataset:
        pixels = torch.from_numpy(dataset.read())
    tile = pixels[:, 100:356, 100:356][None]
    with torch.inference_mode():
        base = encoder(tile)
        shifted = encoder(pixels[:, 104:360, 100:356][None])
        elsewhere = encoder(pixels[:, 164:420, 100:356][None])
    assert float(base @ shifted.T) > 0.98
    assert float(base @ elsewhere.T) < float(base @ shifted.T) - 0.1


def rsscn7(shared_scenes, name: str, count: int = 20) -> torch.Tensor:
    paths = sorted((shared_scenes.parent / "rsscn7" / name).glob("*.jpg"))[:count]
    return torch.from_numpy(np.stack([np.asarray(Image.open(p).convert("RGB")).transpose(2, 0, 1) for p in paths]))


def test_geoembed_tells_water_from_forest(shared_scenes):
    encoder, _ = pretrained_encoder("resnet18_aerial", "geoembed-v3")
    with torch.inference_mode():
        water, forest = encoder(rsscn7(shared_scenes, "dRiverLake")), encoder(rsscn7(shared_scenes, "eForest"))
    off_diagonal = ~torch.eye(20, dtype=torch.bool)
    within = min(float((water @ water.T)[off_diagonal].mean()), float((forest @ forest.T)[off_diagonal].mean()))
    assert float((water @ forest.T).mean()) < within - 0.1
    vectors, labels = torch.cat([water, forest]), torch.tensor([0] * 20 + [1] * 20)
    similarity = (vectors @ vectors.T).fill_diagonal_(-2)
    assert float((labels[similarity.argmax(dim=1)] == labels).float().mean()) >= 0.9


def test_torchvision_weights_from_a_file(tmp_path):
    """The ordinary torchvision layout: a state dict saved from torchvision's own ResNet-50."""
    path = tmp_path / "resnet50.pth"
    torch.save(BACKBONES["resnet50"].build().state_dict(), path)
    _, report = classifier_from_file("resnet50", path)
    assert report.missing == [] and report.unexpected == []
    encoder, initial = pretrained_encoder("resnet50", path)
    assert initial["name"] == "resnet50:resnet50.pth" and encoder.config.dim == 2048


def test_weights_of_another_architecture_are_refused(tmp_path):
    path = tmp_path / "vgg16.pth"
    torch.save(BACKBONES["vgg16"].build().state_dict(), path)
    with pytest.raises(GeosearchError, match=r"vgg16.pth for resnet50: the weights do not fit \(\d+ missing"):
        pretrained_encoder("resnet50", path)
    (tmp_path / "broken.pth").write_bytes(b"not a torch file")
    smaller = tmp_path / "resnet18.pth"  # the same key names, other shapes
    torch.save(BACKBONES["resnet18"].build().state_dict(), smaller)
    with pytest.raises(GeosearchError, match=r"resnet18.pth for resnet50: the weights do not fit \(size mismatch"):
        pretrained_encoder("resnet50", smaller)
    with pytest.raises(GeosearchError, match="cannot read as a torch state dict"):
        pretrained_encoder("resnet50", tmp_path / "broken.pth")
    with pytest.raises(GeosearchError, match="no weights 'geoembed-v3' for resnet50"):
        pretrained_encoder("resnet50", "geoembed-v3")


def test_torchvision_download_path(tmp_path, monkeypatch):
    """With an empty cache, torchvision downloads; without internet that is one clear error naming --weights."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    try:
        model, report = torchvision_classifier("resnet18")
    except GeosearchError as error:
        assert "cannot download torchvision's resnet18 weights" in str(error) and "--weights PATH" in str(error)
    else:  # a machine with internet
        assert report.missing == [] and model.fc.out_features == 1000
