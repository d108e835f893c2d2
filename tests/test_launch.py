"""FastKernel: the direct launch path reuses a compiled kernel only for arguments Triton would specialize
the same way, and gives the same results as Triton's own launch."""
from __future__ import annotations

import pytest
import torch

from tests.conftest import DEVICE, INTERPRET
from tritonpatch.ops import launch
from tritonpatch.ops import layer_norm as ln_op


def test_key_separates_what_triton_specializes_on():
    key = launch._arg_key
    base = torch.randn(64)
    aligned, misaligned = base[:32], base[1:33]  # 4-byte offset: not 16-byte aligned
    assert key((aligned,)) != key((misaligned,))
    assert key((aligned,)) != key((aligned.half(),))
    assert key((1,)) != key((17,)) and key((16,)) != key((17,)) and key((32,)) == key((16,))
    assert key((2 ** 31 + 16,)) != key((16,))  # int64 vs int32
    assert key((None,)) != key((0,)) and key((True,)) != key((False,))
    assert key((1e-5,)) == key((1e-6,))  # floats are not specialized (always fp32)


def test_key_is_at_least_as_fine_as_tritons_own_specialization():
    """Two argument lists that Triton would compile differently never share a cache key (checked against
    Triton's own specializer, so a Triton upgrade that specializes on more shows up here)."""
    spec = pytest.importorskip("triton._C.libtriton").native_specialize_impl
    from triton.backends.compiler import BaseBackend

    base = torch.randn(64)
    pool = [0, 1, 2, 15, 16, 17, 32, -1, -16, 2 ** 31 - 1, 2 ** 31, 2 ** 31 + 16, 2 ** 63, 0.5, 1.0, True, False,
            None, base[:8], base[1:9], base[4:12], base[:8].half(), base[:8].bfloat16(), base[:8].double()]
    tritons = [spec(BaseBackend, a, False, True, True) for a in pool]
    for i, a in enumerate(pool):
        for j, b in enumerate(pool):
            if tritons[i] != tritons[j]:
                assert launch._arg_key((a,)) != launch._arg_key((b,)), (a, b, tritons[i], tritons[j])


@pytest.mark.skipif(INTERPRET, reason="the direct path is CUDA only (the interpreter always goes through Triton)")
def test_direct_launch_matches_triton_and_splits_on_alignment():
    assert launch.fast_launch_enabled()
    fk = ln_op.layer_norm_fwd_kernel
    torch.manual_seed(0)
    n = 256
    base = torch.randn(33 * n + 8, device=DEVICE, dtype=torch.bfloat16)
    w = torch.randn(n, device=DEVICE, dtype=torch.bfloat16)
    b = torch.randn(n, device=DEVICE, dtype=torch.bfloat16)
    for offset in (0, 0, 1, 1, 8):  # aligned, aligned again (direct), misaligned twice, aligned by 16 bytes
        x = base[offset:offset + 32 * n].view(32, n)
        got = ln_op.layer_norm(x, (n,), w, b, 1e-5)
        want = torch.nn.functional.layer_norm(x.float(), (n,), w.float(), b.float(), 1e-5)
        assert torch.isfinite(got).all()
        rel = ((got.float() - want).norm() / want.norm()).item()
        assert rel < 1e-2, (offset, rel)
    keys = [k for k in fk._cache if k[-1][0] is torch.bfloat16]
    aligned_flags = {k[-1][1] for k in keys}
    assert aligned_flags == {True, False}, keys


@pytest.mark.skipif(INTERPRET, reason="CUDA only")
def test_launch_hooks_take_tritons_own_path():
    from triton import knobs
    seen = []

    def hook(*args, **kwargs):
        seen.append(1)
    knobs.runtime.launch_enter_hook.add(hook)
    try:
        x = torch.randn(8, 64, device=DEVICE)
        ln_op.layer_norm(x, (64,), None, None, 1e-5)
        ln_op.layer_norm(x, (64,), None, None, 1e-5)
    finally:
        knobs.runtime.launch_enter_hook.remove(hook)
    assert len(seen) == 2


def test_data_device_is_the_first_tensors():
    x = torch.randn(2)
    assert launch.data_device((x, 3)) is None                 # CPU data: nothing to switch to
    assert launch.data_device((3, 1.0, None)) is None


@pytest.mark.skipif(INTERPRET or torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_kernels_run_on_the_tensors_device_not_the_current_one():
    """A model spread over GPUs: tensors on cuda:1 while cuda:0 is current (device_map="auto")."""
    from tritonpatch.ops import softmax as sm_op
    torch.cuda.set_device(0)
    x = torch.randn(64, 256, device="cuda:1")
    w = torch.randn(256, device="cuda:1")
    for _ in range(2):  # Triton's own path, then the direct one
        y = ln_op.layer_norm(x, (256,), w, w, 1e-5)
        s = sm_op.softmax(x, -1)
        torch.cuda.synchronize(1)
        assert y.device == x.device and s.device == x.device
        torch.testing.assert_close(y, torch.nn.functional.layer_norm(x, (256,), w, w, 1e-5), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(s, torch.softmax(x, -1), rtol=1e-5, atol=1e-6)


def test_launch_plans_are_cached_per_call_shape_and_split_on_dtypes():
    """One BoundLaunch per call shape; every dtype the kernel specializes on is part of the plan's key."""
    from tritonpatch.ops import softmax as sm_op
    dev = torch.device(DEVICE)
    consts = sm_op._bwd_heuristics()
    plan = sm_op._bwd_plan((4, 8), (8, 1), 1, torch.float32, torch.float32, torch.bfloat16, dev, consts)
    assert plan is sm_op._bwd_plan((4, 8), (8, 1), 1, torch.float32, torch.float32, torch.bfloat16, dev, consts)
    for other in ((torch.float32, torch.float32, torch.float32), (torch.bfloat16, torch.bfloat16, torch.bfloat16)):
        assert sm_op._bwd_plan((4, 8), (8, 1), 1, *other, dev, consts) is not plan
    index = 0 if DEVICE == "cuda" else -1
    f32 = ln_op._fwd_plan(16, 64, 64, 1e-5, torch.float32, torch.float32, None, False, index, True)
    assert f32 is ln_op._fwd_plan(16, 64, 64, 1e-5, torch.float32, torch.float32, None, False, index, True)
    assert f32 is not ln_op._fwd_plan(16, 64, 64, 1e-5, torch.bfloat16, torch.bfloat16, None, False, index, True)
    assert f32 is not ln_op._fwd_plan(16, 64, 64, 1e-5, torch.float32, None, None, False, index, True)


@pytest.mark.skipif(INTERPRET, reason="the direct path is CUDA only")
def test_check_mode_catches_a_plan_reused_for_other_dtypes():
    """TRITONPATCH_CHECK_LAUNCH=1 (set by conftest): a BoundLaunch bound to fp32 tensors refuses bf16 ones
    instead of launching the fp32 kernel on them."""
    assert launch._checking()
    n = 64
    plan = launch.BoundLaunch(ln_op.layer_norm_fwd_kernel, (1,), (n, n, 1, n, 1e-5),
                              dict(HAS_W=False, HAS_B=False, STORE_STATS=False, BLOCK_N=n, ROWS=1, EVEN=True), 4,
                              device=torch.cuda.current_device())
    x = torch.randn(1, n, device=DEVICE)
    y = torch.empty_like(x)
    plan(x, y, x, x, x, x)  # binds (Triton compiles or finds the kernel)
    plan(x, y, x, x, x, x)  # direct
    torch.testing.assert_close(y, torch.nn.functional.layer_norm(x, (n,)), rtol=1e-5, atol=1e-5)
    xb = x.bfloat16()
    with pytest.raises(RuntimeError, match="specializes differently"):
        plan(xb, torch.empty_like(xb), xb, xb, xb, xb)
