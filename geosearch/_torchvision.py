"""Import torchvision beside a CPU-only torch.

The torchvision wheel that matches the local CPU torch (0.28.0 for 2.13.0) is a CUDA build: its compiled op
library needs libtorch_cuda, fails to load, and `import torchvision` then dies registering fake kernels for
`torchvision::nms` and `torchvision::qnms`, ops that were never defined. Declaring those two schemas first lets
everything written in Python load (models, transforms.v2, box ops, roi_align); the native kernels (nms, roi_pool,
deform_conv2d) still raise when called. geosearch calls none of them. Where the extension loads (a matching
CUDA torch, or a CPU torchvision), nothing is declared and torchvision is untouched.
"""

import importlib.util
from pathlib import Path
from types import ModuleType

import torch

_MISSING_OP_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
# Kept alive for the whole process: dropping a torch.library.Library removes its definitions.
_declared: torch.library.Library | None = None


def _extension_loads() -> bool:
    """Whether torchvision's compiled ops load here, asked the way torchvision asks, without importing it."""
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return True  # not installed: the import will say so itself
    library = next(Path(spec.submodule_search_locations[0]).glob("_C.*"), None)
    if library is None:
        return False
    try:
        torch.ops.load_library(str(library))
    except OSError:
        return False
    return True


def import_torchvision() -> ModuleType:
    """Return the torchvision module, declaring the op schemas its import needs when its extension cannot load."""
    global _declared
    if _declared is None and not _extension_loads():
        _declared = torch.library.Library("torchvision", "DEF")
        for schema in _MISSING_OP_SCHEMAS.values():
            _declared.define(schema)
    import torchvision

    return torchvision
