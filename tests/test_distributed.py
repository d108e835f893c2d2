"""examples/distributed_train.py, tiny, on CPU with gloo: DDP and FSDP2 train identically patched."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch.distributed as dist

from tests.conftest import INTERPRET

pytest.importorskip("transformers")
ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo")
def test_ddp_and_fsdp2_tiny_on_gloo():
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               TRITON_INTERPRET="1" if INTERPRET else "0")
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           str(ROOT / "examples" / "distributed_train.py"), "--backend", "gloo", "--tiny"],
                          capture_output=True, text=True, env=env, timeout=600, check=False)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    out = done.stdout
    assert "| ddp |" in out and "| fsdp2 |" in out and "losses match" in out, out
    if INTERPRET:  # the kernels really ran (through the interpreter) in both engines
        assert out.count(" 0 fallbacks") == 2, out
