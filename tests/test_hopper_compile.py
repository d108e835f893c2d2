"""Every kernel compiles for an sm_90 GPU, checked on a machine without one (see tests/hopper_compile.py).

The CPU suite runs the kernels through Triton's interpreter, which executes their Python bodies and so
misses what only the compiler checks; this test compiles each kernel the ops launch, with the argument
types and constexprs their plans choose, to a Hopper cubin. On a CUDA machine the suite compiles and runs
every kernel for real, so it is skipped there.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
#: The most shared memory one block may use on compute capability 9.0 (227 KiB; CUDA C++ Programming
#: Guide, "Technical Specifications per Compute Capability"). A kernel over it compiles, then fails to
#: launch (OutOfResources).
SM90_MAX_SHARED = 227 * 1024


def _nvidia_backend() -> bool:
    try:
        from triton.backends import backends
    except ImportError:
        return False
    return "nvidia" in backends


@pytest.mark.skipif(torch.cuda.is_available(), reason="on CUDA every kernel is compiled and run by the suite")
@pytest.mark.skipif(not _nvidia_backend(), reason="this Triton has no NVIDIA backend")
def test_every_kernel_compiles_for_hopper():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    script = str(ROOT / "tests" / "hopper_compile.py")
    # two processes (the CI runner has two cores), about 70 s each with a cold Triton cache: the GEMMs
    # (17 variants, about 5 s a GEMM), and the softmax and LayerNorm kernels (109 variants)
    procs = [subprocess.Popen([sys.executable, script, parts], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
             for parts in ("linear_relu", "softmax,layer_norm")]
    records = []
    for p in procs:
        out, err = p.communicate(timeout=900)
        assert p.returncode == 0, err[-3000:]
        records += [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    failed = [r for r in records if not r["ok"]]
    assert not failed, "\n\n".join(json.dumps(r, indent=1) for r in failed)
    too_big = [r for r in records if r["shared"] > SM90_MAX_SHARED]
    assert not too_big, "\n".join(json.dumps(r) for r in too_big)
    # every @triton.jit kernel of the library was reached (a kernel no plan launches would be dead code)
    defined = set()
    for f in (ROOT / "tritonpatch" / "kernels").glob("*.py"):
        defined |= set(re.findall(r"^def (\w+_kernel)\(", f.read_text(), flags=re.M))
    compiled = {r["kernel"] for r in records}
    assert compiled == defined, (defined - compiled, compiled - defined)
    assert len(records) >= 100
