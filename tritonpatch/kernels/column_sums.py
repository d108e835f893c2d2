"""Deterministic column sums of fp32 partials: the last step of the LayerNorm backward (dweight, dbias)
and of the Linear+ReLU backward (dbias).

A backward kernel whose programs each own a fixed set of rows writes one fp32 partial row per program
(its column sums over those rows) into a (G, N) buffer; this kernel adds the G partial rows up in a
fixed order. No atomics, so repeated runs are bitwise identical.
"""
import triton
import triton.language as tl


@triton.jit
def column_sums_kernel(
    Part, Out0, Out1,
    G, N,
    BLOCK_G: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """Grid (column blocks, K). Out_k[c] = sum over g of Part[k, g, c] (Part is (K, G, N) fp32, K <= 2),
    summed in a fixed order (the same for every run), cast to the output dtype."""
    which = tl.program_id(1).to(tl.int64)
    cols = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = cols < N
    base = Part + which * G * N                     # Part[k, g, c] at Part + (k * G + g) * N + c
    acc = tl.zeros((BLOCK_G, BLOCK_N), dtype=tl.float32)
    for g0 in range(0, G, BLOCK_G):
        g = g0 + tl.arange(0, BLOCK_G)
        mask = (g < G)[:, None] & col_ok[None, :]
        acc += tl.load(base + g[:, None].to(tl.int64) * N + cols[None, :], mask=mask, other=0.0)
    total = tl.sum(acc, axis=0)
    if which == 0:
        tl.store(Out0 + cols, total.to(Out0.dtype.element_ty), mask=col_ok)
    else:
        tl.store(Out1 + cols, total.to(Out1.dtype.element_ty), mask=col_ok)
