"""Test set-up: kernels run through Triton's CPU interpreter unless a CUDA GPU is present.

TRITON_INTERPRET must be set before triton is imported, so it is decided here, first. On a GPU machine
the suite runs the real kernels on CUDA (set TRITON_INTERPRET=1 yourself to force the interpreter).
Outputs are poisoned with NaN before kernels write them (TRITONPATCH_POISON), so unwritten elements fail.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("TRITONPATCH_POISON", "1")

import pytest  # noqa: E402

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
DEVICE = "cpu" if INTERPRET else "cuda"


@pytest.fixture
def device() -> str:
    """The device the kernels run on in this session: 'cuda', or 'cpu' under the interpreter."""
    return DEVICE


@pytest.fixture(autouse=True)
def _fresh_seed():
    """A different but reproducible seed per test; tests draw fresh random inputs, never zeros."""
    torch.manual_seed(int.from_bytes(os.urandom(4), "little"))
    yield
