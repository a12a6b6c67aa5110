"""torchvision must import and work beside the CPU torch, through geosearch's one small compat module."""

import subprocess
import sys

CHECK = """
import torch
from geosearch._torchvision import import_torchvision
torchvision = import_torchvision()
from torchvision import models
from torchvision.transforms import v2
from PIL import Image
import numpy as np
import rasterio
from geosearch.data import AERIAL_3857

with rasterio.open(AERIAL_3857) as scene:
    picture = Image.fromarray(scene.read(window=((0, 256), (0, 256))).transpose(1, 2, 0))
transform = v2.Compose([v2.PILToTensor(), v2.RandomHorizontalFlip(p=1.0), v2.ToDtype(torch.float32, scale=True),
                        v2.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])])
batch = transform(picture).unsqueeze(0)
assert batch.shape == (1, 3, 256, 256), batch.shape
model = models.resnet18(num_classes=10).eval()
with torch.no_grad():
    out = model(batch)
assert out.shape == (1, 10) and torch.isfinite(out).all()
iou = torchvision.ops.box_iou(torch.tensor([[0., 0, 2, 2]]), torch.tensor([[1., 1, 3, 3]])).item()
assert abs(iou - 1 / 7) < 1e-6, iou
import_torchvision()  # a second call is harmless
print("ok", torchvision.__version__)
"""


def test_torchvision_models_and_transforms_work_in_a_fresh_process():
    result = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok ")
