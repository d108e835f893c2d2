"""torch.compile of a patched model: it compiles (fullgraph where the model allows it) and matches.

While tracing, patched layers run their original PyTorch code (Inductor fuses LayerNorm, softmax and
bias+ReLU itself); the kernels are not yet custom ops that Inductor could keep.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tritonpatch


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.act, self.norm, self.fc2 = nn.Linear(16, 32), nn.ReLU(), nn.LayerNorm(32), nn.Linear(32, 8)

    def forward(self, x):
        h = self.fc1(x)
        h = self.act(h)
        return F.softmax(self.fc2(self.norm(h)), dim=-1) + torch.relu(self.fc1(x)).mean()


@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
def test_compiled_patched_model_matches(device, backend):
    torch._dynamo.reset()
    model = Net().to(device)
    x = torch.randn(4, 16, device=device, requires_grad=True)
    ref = model(x)
    ref_grad, = torch.autograd.grad(ref.sum(), x)
    with tritonpatch.patch(model):
        compiled = torch.compile(model, backend=backend, fullgraph=True)
        out = compiled(x)
        grad, = torch.autograd.grad(out.sum(), x)
        eager_out = model(x)  # outside the compiled function the kernels still run
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(eager_out, ref, rtol=1e-5, atol=1e-6)
