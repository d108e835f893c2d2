"""Linear followed by ReLU as one Triton GEMM, with autograd.

    y = relu(x @ W^T + b)        x: (..., K),  W: (N, K),  b: (N,) or None,  y: (..., N) in x.dtype

The forward is one fused kernel (fp32 accumulation, bias and ReLU in the epilogue), so the
pre-activation never goes to memory. Autograd saves x, W and the output y only (as PyTorch's Linear+ReLU
does); the ReLU mask is ``y > 0``. Backward, with g = dy * [y > 0] over the flattened leading dims::

    grad_x = g @ W        grad_W = g^T @ x        grad_b = sum over rows of g

computed only for the inputs that need a gradient. By default the GEMMs are cuBLAS's (``torch.mm``) and
the rest is one Triton pass over dy and y (:func:`relu_grad`) that writes g and, in the same pass, the
fp32 partial column sums of grad_b, so g is not read again for grad_b as in torch's backward. The
alternative (``BACKWARD_IMPL``) is a Triton GEMM that applies the mask while loading dy (no g in memory)
and sums grad_b in the grad_W pass; which one runs is :func:`use_triton_backward`'s choice, per shape.

fp32 follows ``torch.backends.cuda.matmul.allow_tf32``: True -> TF32 tensor cores, False -> exact fp32.

Layout: x and W are read through their strides (W as its transpose, no copy). x is flattened to
(M, K) with ``reshape``, which copies only when the leading dims cannot be merged into one stride.
"""
from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

from tritonpatch.kernels import linear_relu as _k
from tritonpatch.ops import common, size_policy
from tritonpatch.ops.column_sums import column_sums_launch
from tritonpatch.ops.launch import BoundLaunch, FastKernel

__all__ = ["unsupported", "linear_relu", "torch_is_faster", "use_triton_backward", "BACKWARD_IMPL",
           "FP32_IEEE_FALLS_BACK"]

#: Backward GEMMs: "torch" (cuBLAS, default), "triton" (masked Triton GEMM), or "auto" to ask
#: :func:`use_triton_backward`'s per-shape rule. Measured on an H100 80GB HBM3, 2026-11-26 (bf16
#: forward+backward ms, cuBLAS / Triton; benchmarks/bench_linear_relu.py): 8192x768->3072 0.377 / 0.657,
#: 16384x1024->4096 0.857 / 1.429, 8192x4096->16384 5.684 / 10.902, 128x4096->4096 0.521 / 0.723,
#: 512x1024->4096 0.545 / 0.906, fp16 8192x768->3072 0.311 / 0.659; Triton won only at 2048x768->3072
#: (0.551 / 0.427), a CPU-bound size. So cuBLAS.
BACKWARD_IMPL = "torch"

#: On CUDA, fp32 with TF32 off runs Triton's exact (FMA) dot, much slower than cuBLAS SGEMM, so such
#: calls fall back. PLACEHOLDER until measured; tests call :func:`linear_relu` directly either way.
FP32_IEEE_FALLS_BACK = True


#: What the report says for a pair fused in cuBLASLt instead of the Triton kernel.
CUBLASLT_NOTE = "fused in cuBLASLt (faster than the Triton kernel here)"
#: The Triton GEMMs pick their launch config by timing candidates on first use (Triton's autotuner), which
#: synchronizes the device: not allowed while a CUDA graph is being captured (the capture would fail).
CAPTURE_REASON = "the Triton GEMM cannot autotune inside a CUDA graph capture"


def forward_provider(x: Tensor) -> str:
    """Which fused GEMM+bias+ReLU runs the forward: ``"triton"`` or ``"cublaslt"``.

    Measured on an H100 80GB HBM3 (2026-11-26, torch 2.11, triton 3.6, bf16 forward, median ms;
    benchmarks/probe_linear_relu.py): cuBLASLt's bias+ReLU epilogue (``torch._addmm_activation``)
    runs at F.linear's own speed and beat this Triton kernel at every shape measured:
    8192x768->3072 0.0636 vs 0.0931, 16384x1024->4096 0.2065 vs 0.2906, 8192x4096->16384 1.602 vs
    2.219, 128x4096->4096 0.0229 vs 0.0570, 2048x768->3072 0.0219 vs 0.0302, 512x1024->4096 0.0136 vs
    0.0155 (F.linear + F.relu: 0.0982, 0.2867, 1.782, 0.0262, 0.0287, 0.0172). So on CUDA the pair is
    fused in cuBLASLt, and the Triton kernel runs under the interpreter. ``TRITONPATCH_LINEAR_RELU``
    = ``triton`` or ``cublaslt`` forces one (benchmarks, tests; read at import, see
    :class:`tritonpatch.ops.common.Settings`).
    """
    forced = common.SETTINGS.linear_relu
    if forced != "auto":
        return forced
    return "cublaslt" if x.is_cuda else "triton"


_ZEROS: dict[tuple[int, torch.dtype, torch.device], Tensor] = {}


def _zero_bias(n: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """A cached zero bias for the cuBLASLt epilogue of a bias-free Linear."""
    key = (n, dtype, device)
    z = _ZEROS.get(key)
    if z is None:
        z = _ZEROS[key] = torch.zeros(n, dtype=dtype, device=device)
    return z


def _forward_cublaslt(x2: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """relu(x2 @ weight^T + bias) in one cuBLASLt GEMM with a bias+ReLU epilogue."""
    if bias is None:
        bias = _zero_bias(weight.shape[0], x2.dtype, x2.device)
    return torch._addmm_activation(bias, x2, weight.t())


def _m_bucket(m: int) -> int:
    """Autotune key for M: next power of two (min 16), so varying batch x sequence does not retune."""
    return max(16, common.next_power_of_2(m))


def _tf32_allowed() -> bool:
    return bool(torch.backends.cuda.matmul.allow_tf32)


def _input_precision(dtype: torch.dtype) -> str:
    """``tl.dot`` input precision: fp32 follows allow_tf32; halves ignore it (pass Triton's default)."""
    if dtype == torch.float32 and not _tf32_allowed():
        return "ieee"
    return "tf32"


#: Large-K GEMMs where the fused epilogue loses to torch's plain GEMM + ReLU: the ReLU pass is a small part
#: of the work there, and cuBLASLt's epilogue kernel is slower than cuBLAS's plain GEMM. Measured on an
#: H100 80GB HBM3, 2026-11-26 (benchmark suite, bf16 forward, x = vs F.linear + F.relu):
#: 8192x4096->16384 0.92x, 4096x16384->4096 0.86x (fp16 0.96x, 0.91x); at K <= 1024 the fused call wins
#: (8192x768->3072 1.52x, 16384x1024->4096 1.44x), and at M <= 128 too (128x4096->4096 1.13x).
LARGE_K = 4096
LARGE_K_MIN_M = 4096


def _large_k(M: int, K: int) -> bool:
    """The large-K rule (:data:`LARGE_K`): about GPU time, so it holds inside a CUDA graph capture too."""
    return K >= LARGE_K and M >= LARGE_K_MIN_M


def slower_than_torch(M: int, N: int, K: int, training: bool = False) -> bool:
    """The measured rule alone (no configuration read): PyTorch's ``relu(linear)`` beats the fused call for
    an (M, K) x (K, N) problem under the FLOP thresholds of :mod:`tritonpatch.ops.size_policy` (higher
    when autograd records the call), and for a large-K GEMM (:data:`LARGE_K`)."""
    return size_policy.below_threshold("linear_relu", 2 * M * N * K, training) or _large_k(M, K)


def torch_is_faster(M: int, N: int, K: int, training: bool = False) -> bool:
    """Size policy: :func:`slower_than_torch`, while the policy is on (never under the interpreter);
    while the current CUDA stream captures a graph, only its large-K rule (the FLOP thresholds are about
    host time: see :mod:`tritonpatch.ops.size_policy`). For calls on CUDA tensors."""
    if not common.SETTINGS.size_policy:
        return False
    return _large_k(M, K) or (size_policy.below_threshold("linear_relu", 2 * M * N * K, training)
                              and not size_policy.capturing())


def use_triton_backward(M: int, N: int, K: int, dtype: torch.dtype) -> bool:
    """Whether the backward GEMMs run in Triton (mask fused, grad_b fused) instead of cuBLAS.

    Follows :data:`BACKWARD_IMPL`; ``"auto"`` is the measured per-shape rule, which on the H100 came
    out as cuBLAS at every shape where timing was not CPU-bound (see :data:`BACKWARD_IMPL`).
    """
    return BACKWARD_IMPL == "triton" and not size_policy.capturing()  # CAPTURE_REASON: cuBLAS then


def unsupported(x: Tensor, weight: Tensor, bias: Tensor | None) -> str | None:
    """None if the Triton kernels can take ``relu(F.linear(x, weight, bias))``, else a short stable reason.

    x: (..., K); weight: (N, K); bias: (N,) or None; all one device, one dtype in fp32/fp16/bf16.
    Any strides are taken. Reasons: device, dtype (float64 falls back), mixed dtypes, autocast,
    shapes that do not fit (torch raises its own error), fp32 without TF32 on CUDA, the Triton provider
    while a CUDA graph is captured (:data:`CAPTURE_REASON`), and the size policy.
    """
    reason = common.tensors_reason(x, weight, bias)
    if reason:
        return reason
    if x.dim() < 1 or weight.dim() != 2 or x.shape[-1] != weight.shape[1]:
        return "shapes do not match a linear layer"
    if bias is not None and (bias.dim() != 1 or bias.shape[0] != weight.shape[0]):
        return "shapes do not match a linear layer"
    if (x.dtype == torch.float32 and not _tf32_allowed() and FP32_IEEE_FALLS_BACK
            and common.size_policy_on() and forward_provider(x) == "triton"):
        return "fp32 without TF32 is faster in torch"
    if size_policy.capturing() and forward_provider(x) == "triton":  # capturing(): one attribute read if none
        return CAPTURE_REASON
    K = x.shape[-1]
    N = weight.shape[0]
    M = math.prod(x.shape[:-1])
    if torch_is_faster(M, N, K, common.records_grad(x, weight, bias)):
        return size_policy.REASON
    return None


@common.launcher
def _forward(x2: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """Launch the fused kernel: x2 (M, K), weight (N, K) -> relu(x2 @ weight^T + bias) (M, N)."""
    M, K = x2.shape
    N = weight.shape[0]
    y = common.new_output((M, N), x2.dtype, x2.device)
    if M == 0 or N == 0:
        return y
    grid = lambda meta: (common.cdiv(M, meta["BLOCK_M"]) * common.cdiv(N, meta["BLOCK_N"]),)  # noqa: E731
    with common.on_data_device(x2):
        _k.linear_relu_fwd_kernel[grid](
            x2, weight, bias if bias is not None else x2, y,
            M, N, K,
            x2.stride(0), x2.stride(1),
            weight.stride(0), weight.stride(1),
            bias.stride(0) if bias is not None else 0,
            y.stride(0), y.stride(1),
            _m_bucket(M),
            HAS_BIAS=bias is not None,
            UPCAST=common.interpreting() and x2.dtype != torch.float32,
            INPUT_PRECISION=_input_precision(x2.dtype),
        )
    return y


@common.launcher
def _masked_matmul(a: Tensor, ymask: Tensor, b: Tensor, want_sum: bool) -> tuple[Tensor, Tensor | None]:
    """(a * [ymask > 0]) @ b in Triton, and optionally its row sums; a, ymask (P, R), b (R, Q), any strides."""
    P, R = a.shape
    Q = b.shape[1]
    c = common.new_output((P, Q), b.dtype, b.device)
    s = common.new_output((P,), b.dtype, b.device) if want_sum else None
    grid = lambda meta: (common.cdiv(P, meta["BLOCK_M"]) * common.cdiv(Q, meta["BLOCK_N"]),)  # noqa: E731
    with common.on_data_device(b):
        _k.masked_matmul_kernel[grid](
            a, ymask, b, c, s if s is not None else c,
            P, Q, R,
            a.stride(0), a.stride(1),
            ymask.stride(0), ymask.stride(1),
            b.stride(0), b.stride(1),
            c.stride(0), c.stride(1),
            _m_bucket(P), _m_bucket(R),
            HAS_SUM=want_sum,
            UPCAST=common.interpreting() and b.dtype != torch.float32,
            INPUT_PRECISION=_input_precision(b.dtype),
        )
    return c, s


relu_grad_kernel = FastKernel(_k.relu_grad_kernel)

#: ``relu_grad_kernel``'s tile (BLOCK_M rows x BLOCK_N columns), warps, and programs per SM. Swept on the
#: H200 (``benchmarks/sweep_relu_grad.py``, NVIDIA H200, 2026-12-01, bf16, 24 configs at 6 shapes from
#: 128x4096 to 8192x16384, `results_2026-12-01/session8/sweep_relu_grad.txt`): (32, 128, 4 warps) was
#: the best or within 1% of it at 5 of 6 shapes; g and grad_b took 44.0 us at 8192x3072 against 67.6 us
#: for torch's threshold_backward + sum(0) (1.25-1.54x over the shapes and dtypes).
RELU_GRAD_TILE = (32, 128, 4, 4)


@functools.lru_cache(maxsize=1024)
def _relu_grad_plan(m: int, n: int, stride_dy: int, stride_y: int, dtype: torch.dtype,
                    device: int) -> tuple[BoundLaunch, int, BoundLaunch]:
    """(the g pass, rows G of its partial buffer, the partial sum) for an (m, n) call, cached."""
    block_m, block_n, warps, per_sm = RELU_GRAD_TILE
    dev = device if device >= 0 else None
    col_blocks = common.cdiv(n, block_n)
    tiles = common.cdiv(m, block_m)
    g = common.clamp(common.num_sms(device) * per_sm // col_blocks, 1, tiles)
    rows_per_prog = common.cdiv(tiles, g) * block_m
    g = common.cdiv(m, rows_per_prog)
    even = m % rows_per_prog == 0 and n % block_n == 0
    main = BoundLaunch(relu_grad_kernel, (g, col_blocks), (m, n, stride_dy, stride_y, rows_per_prog),
                       dict(EVEN=even, BLOCK_M=block_m, BLOCK_N=block_n), warps, device=dev)
    return main, g, column_sums_launch(g, n, 1, dev)


@common.launcher
def relu_grad(dy: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """``g = dy * [y > 0]`` (M, N) contiguous, as torch's ``threshold_backward(dy, y, 0)`` bit for bit, and
    its column sums ``grad_b = g.sum(0)`` (N,) in dy's dtype, accumulated in fp32 in a fixed order
    (deterministic), in the same pass. dy, y: (M, N), M, N > 0, unit column stride.

    Without a bias gradient there is nothing to fuse: torch's ``threshold_backward`` alone runs at 91-102%
    of copy (``results_2026-12-01/session8/sweep_relu_grad.txt``, H200), so callers use it then."""
    m, n = dy.shape
    g = common.new_output((m, n), dy.dtype, dy.device)
    main, rows, reduce = _relu_grad_plan(m, n, dy.stride(0) if m > 1 else n, y.stride(0) if m > 1 else n,
                                         dy.dtype, dy.get_device())
    part = common.new_output((rows, n), torch.float32, dy.device)
    grad_b = common.new_output((n,), dy.dtype, dy.device)
    main(dy, y, g, part)
    reduce(part, grad_b, grad_b)
    return g, grad_b


def _backward_cublas(dy: Tensor, y: Tensor, x2: Tensor, weight: Tensor, need_x: bool, need_w: bool,
                     need_b: bool) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """cuBLAS GEMMs on g from :func:`relu_grad` (grad_b summed in the same pass). dy, y: unit column stride."""
    if need_b:
        g, grad_b = relu_grad(dy, y)
    else:  # no sum to fuse: torch's own pass
        g, grad_b = torch.ops.aten.threshold_backward(dy, y, 0), None
    grad_x = torch.mm(g, weight) if need_x else None
    grad_w = torch.mm(g.t(), x2) if need_w else None
    return grad_x, grad_w, grad_b


def _backward_torch(dy: Tensor, y: Tensor, x2: Tensor, weight: Tensor, need_x: bool, need_w: bool,
                    need_b: bool) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """cuBLAS backward: g = dy * [y > 0] in one elementwise pass, then mm, mm, and one column sum."""
    g = torch.ops.aten.threshold_backward(dy, y, 0)
    grad_x = torch.mm(g, weight) if need_x else None
    grad_w = torch.mm(g.t(), x2) if need_w else None
    grad_b = g.sum(0) if need_b else None
    return grad_x, grad_w, grad_b


def _backward_triton(dy: Tensor, y: Tensor, x2: Tensor, weight: Tensor, need_x: bool, need_w: bool,
                     need_b: bool) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """Triton backward: the mask is applied while loading dy; grad_b is summed in the grad_W pass."""
    grad_x = grad_w = grad_b = None
    if need_x:
        grad_x, _ = _masked_matmul(dy, y, weight, False)                 # (M, N) @ (N, K)
    if need_w:
        grad_w, grad_b = _masked_matmul(dy.t(), y.t(), x2, need_b)       # (N, M) @ (M, K)
    elif need_b:  # dy and y have unit column stride here (see _LinearReLU.backward)
        grad_b = relu_grad(dy, y)[1]
    return grad_x, grad_w, grad_b


def _flat(t: Tensor) -> Tensor:
    """(..., C) -> (prod(...), C); a view when the leading dims merge into one stride, else a copy."""
    return t.reshape(math.prod(t.shape[:-1]), t.shape[-1])


def _fused(x: Tensor, weight: Tensor, bias: Tensor | None, provider: str) -> Tensor:
    """relu(x @ weight^T + bias) for x (..., K) -> (..., N), by ``provider`` (no autograd)."""
    x2 = _flat(x)
    y2 = _forward_cublaslt(x2, weight, bias) if provider == "cublaslt" else _forward(x2, weight, bias)
    return y2.view(*x.shape[:-1], weight.shape[0])


class _LinearReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, provider: str) -> Tensor:
        y = _fused(x, weight, bias, provider)
        ctx.save_for_backward(x, weight, y)
        ctx.has_bias = bias is not None
        return y

    @staticmethod
    def backward(ctx, dy: Tensor):
        x, weight, y = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        need_b = need_b and ctx.has_bias
        if not (need_x or need_w or need_b):
            return None, None, None, None
        N = weight.shape[0]
        x2, dy2, y2 = _flat(x), _flat(dy), _flat(y)
        M, K = x2.shape
        # create_graph=True: torch's ops, whose graph a double backward differentiates (the Triton
        # kernels record nothing). A dy without unit column stride (e.g. expanded from a sum) too.
        if M == 0 or N == 0 or torch.is_grad_enabled() or dy2.stride(1) != 1 or y2.stride(1) != 1:
            grad_x, grad_w, grad_b = _backward_torch(dy2, y2, x2, weight, need_x, need_w, need_b)
        else:
            try:
                if use_triton_backward(M, N, K, x.dtype):
                    grad_x, grad_w, grad_b = _backward_triton(dy2, y2, x2, weight, need_x, need_w, need_b)
                else:
                    grad_x, grad_w, grad_b = _backward_cublas(dy2, y2, x2, weight, need_x, need_w, need_b)
            except common.KERNEL_ERRORS as e:  # a kernel cannot be built or loaded on this GPU: torch's ops
                common.kernel_failed("linear_relu backward", e)
                grad_x, grad_w, grad_b = _backward_torch(dy2, y2, x2, weight, need_x, need_w, need_b)
        if grad_x is not None:
            grad_x = grad_x.view(x.shape)
        return grad_x, grad_w, grad_b, None


def linear_relu(x: Tensor, weight: Tensor, bias: Tensor | None = None, provider: str | None = None) -> Tensor:
    """``relu(F.linear(x, weight, bias))`` in one fused GEMM, differentiable in x, weight and bias.

    x: (..., K); weight: (N, K); bias: (N,) or None. Returns (..., N) in x.dtype:
    ``y = max(x @ weight^T + bias, 0)`` accumulated in fp32. Leading dims may hold 0 elements.
    ``provider`` is ``"triton"`` (the Triton kernel) or ``"cublaslt"`` (cuBLASLt's bias+ReLU
    epilogue); None picks :func:`forward_provider`. The backward is the same for both.
    Assumes :func:`unsupported` returned None for these arguments.
    """
    provider = provider or forward_provider(x)
    if common.records_grad(x, weight, bias):
        return _LinearReLU.apply(x, weight, bias, provider)
    return _fused(x, weight, bias, provider)  # inference: no autograd node
