"""Numerical checks shared by the tests: relative error against a float64 reference.

    rel_err(out, ref) = ||out - ref||_2 / ||ref||_2          (computed in float64)

Tolerances are named per dtype. fp32 kernels must land near 1e-6. For fp16/bf16 the bar is torch's own
error on the same inputs: ours may be at most 1.5x that (plus a floor of a quarter ulp, for the rare case
where torch happens to be exact).
"""
from __future__ import annotations

import torch

FP32_TOL = 1e-6
#: fp32 unit roundoff.
FP32_U = 2.0**-24
#: fp32 bar for a result whose formula cancels (LayerNorm's dx on narrow rows): err <= FP32_COND_FACTOR *
#: FP32_U * cond, cond = || |each term| summed || / || result || from the float64 reference (its
#: componentwise condition number; about 1 for wide rows, so the bar stays FP32_TOL there). Measured with
#: the CPU interpreter, LayerNorm dx at width 3, 300 draws (2026-12-01): ours up to 7.3 * FP32_U * cond,
#: torch's own fp32 up to 12.7 (and torch above 1e-6 in 4.7% of the draws, ours in 2.7%).
FP32_COND_FACTOR = 16
#: Floor for half-precision comparisons: a quarter of the dtype's machine epsilon.
HALF_FLOOR = {torch.float16: 2.0**-10 / 4, torch.bfloat16: 2.0**-7 / 4}
TORCH_FACTOR = 1.5


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref|| / ||ref|| in float64; NaN anywhere in ``out`` (where ref has none) gives inf."""
    out = out.detach().double().cpu()
    ref = ref.detach().double().cpu()
    if torch.isnan(out).any() and not torch.isnan(ref).any():
        return float("inf")
    mask = ~torch.isnan(ref)
    if not torch.equal(torch.isnan(out), ~mask):
        return float("inf")
    out, ref = out[mask], ref[mask]
    denom = ref.norm().item()
    num = (out - ref).norm().item()
    if denom == 0.0:
        return num
    return num / denom


def assert_matches(out: torch.Tensor, ref64: torch.Tensor, torch_out: torch.Tensor | None = None,
                   what: str = "out", conditioned: bool = False, cond: float | None = None) -> None:
    """Assert ``out`` is as close to the float64 reference as its dtype allows.

    fp32: rel_err <= FP32_TOL. fp16/bf16: rel_err <= 1.5 * rel_err(torch_out) (+ floor).
    ``conditioned`` (random-shape property tests): an fp32 bar of max(FP32_TOL, 1.5 * torch's own fp32
    error), for inputs whose condition number lifts every fp32 implementation above 1e-6 (a dw summed
    over rows whose terms cancel; LayerNorm rows of width 2 with a variance near eps).
    ``cond``: the result's componentwise condition number (see FP32_COND_FACTOR); the fp32 bar is then
    max(FP32_TOL, FP32_COND_FACTOR * FP32_U * cond).
    """
    assert out.shape == ref64.shape, f"{what}: shape {tuple(out.shape)} != {tuple(ref64.shape)}"
    err = rel_err(out, ref64)
    if out.dtype == torch.float32:
        bar = FP32_TOL
        if cond is not None:
            bar = max(bar, FP32_COND_FACTOR * FP32_U * cond)
        if conditioned:
            assert torch_out is not None, "conditioned needs torch's own output"
            bar = max(bar, TORCH_FACTOR * rel_err(torch_out, ref64))
        assert err <= bar, f"{what}: fp32 rel err {err:.3e} > {bar:.3e}"
    else:
        assert torch_out is not None, "half precision needs torch's own output to compare with"
        bar = TORCH_FACTOR * rel_err(torch_out, ref64) + HALF_FLOOR[out.dtype]
        assert err <= bar, f"{what}: {out.dtype} rel err {err:.3e} > bar {bar:.3e}"
