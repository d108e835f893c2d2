"""A patched model trains under DDP (gloo, 2 CPU processes) exactly like the unpatched one."""
from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from tests.conftest import INTERPRET

STEPS = 3


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.act, self.norm, self.fc2 = nn.Linear(16, 32), nn.ReLU(), nn.LayerNorm(32), nn.Linear(32, 4)

    def forward(self, x):
        h = self.fc1(x)
        h = self.act(h)
        return torch.softmax(self.fc2(self.norm(h)), dim=-1)


def _train(rank: int, world: int, port: int, patched: bool, interpret: bool, out: dict) -> None:
    # gloo trains on CPU tensors: the kernels run through the interpreter where the test session uses
    # it (a fresh spawned process: triton is not imported yet, so setting it here takes effect). On a
    # GPU machine the CPU tensors fall back to torch, and only the equality of training is checked.
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), TRITON_INTERPRET="1" if interpret else "0")
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        import tritonpatch
        torch.manual_seed(0)
        model = Net()
        ddp = nn.parallel.DistributedDataParallel(model)
        opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
        handle = tritonpatch.patch(ddp) if patched else None
        losses = []
        gen = torch.Generator().manual_seed(100 + rank)
        for _ in range(STEPS):
            x = torch.randn(8, 16, generator=gen)
            loss = ddp(x).square().sum()
            loss.backward()
            opt.step()
            opt.zero_grad()
            losses.append(loss.item())
        if handle is not None:
            if interpret:
                assert all(r.fallback_calls == 0 for r in handle.layers), str(handle)
                assert {r.kind for r in handle.layers if r.triton_calls} == {"layer_norm", "softmax", "linear_relu"}
            else:
                assert {r.kind for r in handle.layers} == {"layer_norm", "softmax", "linear_relu"}
            handle.unpatch()
        if rank == 0:
            out["losses"] = losses
            out["params"] = [p.detach().clone() for p in model.parameters()]
        dist.barrier()  # no rank tears gloo down while another still talks to it
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(patched: bool) -> dict:
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_train, args=(2, _free_port(), patched, INTERPRET, out), nprocs=2, join=True)
        return dict(out)


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo")
def test_ddp_gloo_training_matches_unpatched():
    base, patched = _run(False), _run(True)
    assert len(patched["losses"]) == STEPS
    torch.testing.assert_close(torch.tensor(patched["losses"]), torch.tensor(base["losses"]), rtol=1e-5, atol=1e-6)
    for p, q in zip(patched["params"], base["params"]):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
