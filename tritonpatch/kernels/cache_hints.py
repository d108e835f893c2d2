"""Loads and stores with an optional L2 eviction hint, for data that is read twice.

A looped (two-pass) kernel reads each row once for its statistics and again for its output. Marking the
first pass's loads ``evict_last`` and the second pass's ``evict_first`` (and, where measured to help, its
stores ``evict_first``) keeps more of the row in L2 for the second read. Likewise the LayerNorm
backward's per-row statistics kernel, whose rows the next kernel reads again. Each launcher decides per dtype
whether to ask (measurements: ``benchmarks/sweep_looped_l2.py``); the hint is a constexpr, so a kernel
compiled without it is the plain load/store.
"""
import triton
import triton.language as tl


@triton.jit
def load_hinted(ptrs, mask, other, HINT: tl.constexpr, POLICY: tl.constexpr):
    """``tl.load(ptrs, mask, other)``, with ``eviction_policy=POLICY`` when HINT."""
    if HINT:
        v = tl.load(ptrs, mask=mask, other=other, eviction_policy=POLICY)
    else:
        v = tl.load(ptrs, mask=mask, other=other)
    return v


@triton.jit
def store_streaming(ptrs, value, mask, HINT: tl.constexpr):
    """``tl.store(ptrs, value, mask)``, marked ``evict_first`` when HINT (the data is not read again)."""
    if HINT:
        tl.store(ptrs, value, mask=mask, eviction_policy="evict_first")
    else:
        tl.store(ptrs, value, mask=mask)
