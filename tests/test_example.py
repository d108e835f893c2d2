"""The main example runs end to end (tiny model; kernels through the interpreter on a CPU)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")
ROOT = Path(__file__).resolve().parents[1]


def test_example_runs_and_reports():
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "patch_hf_model.py"), "--tiny"],
                          capture_output=True, text=True, env=env, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    for kind in ("layer_norm", "softmax", "linear_relu"):
        assert kind in out
    assert "model.decoder.layers.0.fc1+model.decoder.layers.0.activation_fn" in out
    assert "compare(): unpatched vs patched" in out and "model outputs: max abs err" in out
    assert "unpatched" in out and "patched" in out and " ms" in out
    # Every layer ran on Triton (the interpreter on a CPU, CUDA on a GPU): no fallbacks reported.
    assert "fallback reasons" in out and "0 fallbacks" in out, out
