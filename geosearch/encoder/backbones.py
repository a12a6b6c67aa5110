"""CNN backbones by name. Each is built as its full classifier (so pretrained weights load as published) and
then cut to a trunk that returns feature maps (B, C, h, w) before any global pooling."""

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from geosearch._torchvision import import_torchvision


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    channels: int  # C of the trunk's feature maps
    build: Callable[[], nn.Module]  # the full classifier, randomly initialised
    trunk: Callable[[nn.Module], nn.Module]  # the classifier cut before its global pooling
    description: str


def _resnet_trunk(model: nn.Module) -> nn.Module:
    names = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
    return nn.Sequential(OrderedDict((name, getattr(model, name)) for name in names))


def _torchvision(name: str) -> Callable[[], nn.Module]:
    """A torchvision classifier's builder; torchvision is imported when one is built, not with geosearch (its
    models take a second and a half to import, which every command would pay)."""
    def build() -> nn.Module:
        return getattr(import_torchvision().models, name)()

    return build


def _aerial_resnet18() -> nn.Module:
    """ResNet-18 for sub-metre aerial tiles (geoembed): a 3×3 stride-1 stem and no max-pool, output stride 8."""
    model = _torchvision("resnet18")()
    model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


def _vgg_trunk(model: nn.Module) -> nn.Module:
    return model.features[:-1]  # the conv layers without the last max-pool, as in cirtorch


def _timm(name: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import_torchvision()  # timm imports torchvision, which needs this beside a CPU-only torch
        import timm

        return timm.create_model(name, pretrained=False)

    return build


def _timm_trunk(model: nn.Module) -> nn.Module:
    model.reset_classifier(0, "")  # no pooling, no classifier: forward() returns the feature maps
    return model


BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        BackboneSpec("resnet18", 512, _torchvision("resnet18"), _resnet_trunk, "torchvision ResNet-18"),
        BackboneSpec("resnet50", 2048, _torchvision("resnet50"), _resnet_trunk, "torchvision ResNet-50"),
        BackboneSpec("vgg16", 512, _torchvision("vgg16"), _vgg_trunk, "torchvision VGG-16 (conv layers)"),
        BackboneSpec("resnet18_aerial", 512, _aerial_resnet18, _resnet_trunk,
                     "ResNet-18 with a 3×3 stride-1 stem and no max-pool (geoembed's aerial layout)"),
        # TensorFlow's EfficientNet-Lite layout ("same" padding, BatchNorm eps 1e-3): the published Lite weights
        # were trained in it, and their BatchNorm statistics fit it better than timm's efficientnet_lite* layout.
        BackboneSpec("efficientnet_lite0", 1280, _timm("tf_efficientnet_lite0"), _timm_trunk,
                     "EfficientNet-Lite0 (timm tf_efficientnet_lite0)"),
        BackboneSpec("efficientnet_lite2", 1280, _timm("tf_efficientnet_lite2"), _timm_trunk,
                     "EfficientNet-Lite2 (timm tf_efficientnet_lite2)"),
    )
}
