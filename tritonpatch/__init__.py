"""tritonpatch: patch live PyTorch / Hugging Face models with Triton kernels, and restore them exactly.

    with tritonpatch.patch(model) as p:
        out = model(x)
    print(p)
    tritonpatch.compare(model, x)
"""
from .numerics import Comparison, LayerComparison, compare
from .patching.patch import AlreadyPatchedError, Patch, patch, unpatch
from .patching.records import LayerRecord

__all__ = ["AlreadyPatchedError", "Comparison", "LayerComparison", "LayerRecord", "Patch", "compare",
           "patch", "unpatch"]
__version__ = "0.1.0"
