"""Test set-up: kernels run through Triton's CPU interpreter unless a CUDA GPU is present.

TRITON_INTERPRET must be set before triton is imported, so it is decided here, first. On a GPU machine
the suite runs the real kernels on CUDA (set TRITON_INTERPRET=1 yourself to force the interpreter).
Outputs are poisoned with NaN before kernels write them (TRITONPATCH_POISON), so unwritten elements fail,
and the size policies are off (TRITONPATCH_SIZE_POLICY=0), so small test shapes still run the kernels.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("TRITONPATCH_POISON", "1")
# Run the kernels at every size: the "torch is faster at this size" policies have their own tests.
os.environ.setdefault("TRITONPATCH_SIZE_POLICY", "0")
# Every cached launch plan re-derives Triton's full specialization key and compares (ops/launch.py).
os.environ.setdefault("TRITONPATCH_CHECK_LAUNCH", "1")
# Linear+ReLU pairs run the Triton kernel (on CUDA the default is cuBLASLt's epilogue, which has its own
# tests in test_ops_linear_relu.py and test_linear_relu_pairs.py).
os.environ.setdefault("TRITONPATCH_LINEAR_RELU", "triton")

import pytest  # noqa: E402

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
DEVICE = "cpu" if INTERPRET else "cuda"


@pytest.fixture
def device() -> str:
    """The device the kernels run on in this session: 'cuda', or 'cpu' under the interpreter."""
    return DEVICE


@pytest.fixture
def kernel_cannot_run():
    """A stand-in for a Triton launch on a GPU that cannot run the kernel: it raises OutOfResources, as
    a kernel needing more shared memory than the GPU has does (monkeypatch it over a launch)."""
    def launch(*args, **kwargs):
        from triton.runtime.errors import OutOfResources
        raise OutOfResources(393344, 232448, "shared memory")
    return launch


@pytest.fixture(autouse=True)
def _fresh_seed():
    """A different but reproducible seed per test; tests draw fresh random inputs, never zeros."""
    torch.manual_seed(int.from_bytes(os.urandom(4), "little"))
    yield


@pytest.fixture(autouse=True)
def _interpreter_rounds_bf16_like_gpu(monkeypatch):
    """Make the interpreter's fp32 -> bf16 cast round to nearest even, as the GPU's does.

    Triton 3.9's interpreter truncates in that cast (``_convert_float`` without a rounding mode), which
    doubles the bf16 output error versus the hardware (cvt.rn.bf16.f32) and would make the "1.5x torch"
    bar a coin toss. Only the interpreter is touched; kernels are unchanged.
    """
    if not INTERPRET:
        yield
        return
    import numpy as np
    import triton.language as tl
    from triton.runtime import interpreter

    original = getattr(interpreter.InterpreterBuilder, "cast_impl", None)
    if original is None:  # another Triton version: nothing to correct here
        yield
        return

    def cast_impl(self, src, dst_type):
        if src.dtype.scalar == tl.float32 and dst_type.scalar == tl.bfloat16:
            rounded = torch.from_numpy(np.ascontiguousarray(src.data)).to(torch.bfloat16)
            return interpreter.TensorHandle(rounded.view(torch.int16).numpy().view(np.uint16), tl.bfloat16)
        return original(self, src, dst_type)

    monkeypatch.setattr(interpreter.InterpreterBuilder, "cast_impl", cast_impl)
    yield
