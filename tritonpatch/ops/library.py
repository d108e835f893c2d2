"""The three ops as ``torch.library`` custom ops, so that ``torch.compile`` keeps them in its graph.

Eager patched layers call the autograd Functions of :mod:`tritonpatch.ops.layer_norm`,
:mod:`~tritonpatch.ops.softmax` and :mod:`~tritonpatch.ops.linear_relu`. Dynamo cannot trace into a
Triton launcher, so while compiling it needs an operator it treats as opaque. These are those operators:

* ``tritonpatch::layer_norm_fwd`` -> ``(y, mean, rstd)``: y of x's shape and dtype, fp32 mean and rstd of
  shape (M,) (or (0,) when asked not to store them); backward: ``layer_norm_bwd``.
* ``tritonpatch::layer_norm_bwd`` -> ``(dx, dweight, dbias)``, each (0,) when not asked for.
* ``tritonpatch::softmax_fwd`` -> y of x's shape in ``dtype``; backward: ``softmax_bwd`` (dx in x's dtype).
* ``tritonpatch::linear_relu_fwd`` -> ``relu(x @ W^T + b)`` of shape (..., N) in x's dtype; backward: torch
  ops (masked gradient, GEMMs, column sum), which the compiler sees and may fuse.

Each op's implementation calls the op module's launcher (Triton on CUDA; the interpreter on CPU under
``TRITON_INTERPRET=1``; Linear+ReLU follows :func:`~tritonpatch.ops.linear_relu.forward_provider`), has a
fake (meta) implementation with the exact output shapes, dtypes and (contiguous) strides, mutates none of
its inputs, and the forward ops have autograd registered, computing only the gradients asked for.

The traced entry points are :func:`layer_norm`, :func:`softmax` and :func:`linear_relu` (they also run
eagerly, through the dispatcher). While tracing, a caller asks :func:`traced_unsupported` first: the same
static checks as the ops' ``unsupported()``, read from metadata only (device, dtype, shape), so they hold
for the fake and functional tensors that tracing passes around.

Needs ``torch.library.custom_op`` (torch >= 2.4); on an older torch :data:`AVAILABLE` is False, the ops
are not registered, and :func:`traced_unsupported` gives a reason for every call.
"""
import logging
import math
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from tritonpatch.ops import common
from tritonpatch.ops import layer_norm as layer_norm_op
from tritonpatch.ops import linear_relu as linear_relu_op
from tritonpatch.ops import size_policy as size_policy_mod
from tritonpatch.ops import softmax as softmax_op

# No ``from __future__ import annotations`` here: torch.library reads the custom ops' schemas from
# their annotations, which must be real typing objects on every supported torch.

__all__ = ["AVAILABLE", "layer_norm", "softmax", "linear_relu", "traced_unsupported"]

logger = logging.getLogger("tritonpatch")

#: Whether this torch has ``torch.library.custom_op`` (2.4+), so the ops below are registered.
AVAILABLE: bool = hasattr(torch.library, "custom_op")

#: Tensor types whose metadata is trusted while tracing: plain tensors and parameters, and the fake and
#: functional tensors that stand for them in a trace. Any other subclass (DTensor, ...) falls back.
_TRACED_TYPES: Tuple[type, ...] = (Tensor, torch.nn.Parameter)
try:
    from torch._subclasses.fake_tensor import FakeTensor
    from torch._subclasses.functional_tensor import FunctionalTensor

    _TRACED_TYPES += (FakeTensor, FunctionalTensor)
except ImportError:  # pragma: no cover - every torch with custom_op has both
    pass


def _custom_op(name: str) -> Callable[[Callable[..., Any]], Any]:
    """``torch.library.custom_op(name, mutates_args=())``; the plain function where torch lacks it."""
    if AVAILABLE:
        return torch.library.custom_op(name, mutates_args=())
    return lambda fn: fn


if not AVAILABLE:
    logger.info("torch %s has no torch.library.custom_op: compiled models run PyTorch for patched layers",
                torch.__version__)


def _as_list(normalized_shape: Union[int, Sequence[int]]) -> List[int]:
    return [normalized_shape] if isinstance(normalized_shape, int) else list(normalized_shape)


def _empty_like_absent(x: Tensor) -> Tensor:
    """The (0,) stand-in a custom op returns for an output it was asked not to compute (no Optional returns)."""
    return x.new_empty((0,))


# ----------------------------------------------------------------------------------------------------
# LayerNorm
# ----------------------------------------------------------------------------------------------------
@_custom_op("tritonpatch::layer_norm_fwd")
def _layer_norm_fwd(x: Tensor, normalized_shape: List[int], weight: Optional[Tensor], bias: Optional[Tensor],
                    eps: float, store_stats: bool) -> Tuple[Tensor, Tensor, Tensor]:
    """y = (x - mean) / sqrt(var + eps) * weight + bias over the trailing dims; fp32 mean, rstd (M,)."""
    n = math.prod(normalized_shape)
    w = weight.reshape(n).contiguous() if weight is not None else None
    b = bias.reshape(n).contiguous() if bias is not None else None
    try:
        y, mean, rstd = layer_norm_op.forward_rows(x, n, w, b, eps, store_stats)
    except common.KERNEL_ERRORS as e:  # the kernel cannot be built or loaded on this GPU: torch's op
        common.kernel_failed("layer_norm (compiled)", e)
        y, mean, rstd = torch.native_layer_norm(x, normalized_shape, weight, bias, eps)
        y, mean, rstd = y.contiguous(), mean.float().reshape(-1), rstd.float().reshape(-1)
    if not store_stats:
        mean, rstd = (x.new_empty((0,), dtype=torch.float32) for _ in range(2))  # outputs may not alias
    return y, mean, rstd


@_custom_op("tritonpatch::layer_norm_bwd")
def _layer_norm_bwd(dy: Tensor, x: Tensor, normalized_shape: List[int], weight: Optional[Tensor],
                    mean: Tensor, rstd: Tensor, need_dx: bool, need_dw: bool,
                    need_db: bool) -> Tuple[Tensor, Tensor, Tensor]:
    """(dx in x's shape, dweight and dbias in ``normalized_shape``), each (0,) when not needed."""
    n = math.prod(normalized_shape)
    w = weight.reshape(n).contiguous() if weight is not None else None
    dx, dw, db = layer_norm_op.backward_rows(x, dy, n, w, mean, rstd, need_dx, need_dw, need_db, x.dtype)
    return (dx if dx is not None else _empty_like_absent(x),
            dw.view(normalized_shape) if dw is not None else _empty_like_absent(x),
            db.view(normalized_shape) if db is not None else _empty_like_absent(x))


def _layer_norm_rows(x: Tensor, normalized_shape: List[int]) -> Any:
    """M, the number of rows, as the launcher counts them (0 when the rows are empty)."""
    n = math.prod(normalized_shape)
    return x.numel() // n if n else 0


def _layer_norm_setup(ctx: Any, inputs: Tuple[Any, ...], output: Tuple[Tensor, Tensor, Tensor]) -> None:
    x, normalized_shape, weight, _bias, eps, store_stats = inputs
    _y, mean, rstd = output
    ctx.mark_non_differentiable(mean, rstd)
    ctx.save_for_backward(x, weight, mean, rstd)
    ctx.normalized_shape = normalized_shape
    ctx.eps = eps
    ctx.store_stats = store_stats


def _layer_norm_backward(ctx: Any, dy: Tensor, _dmean: Any, _drstd: Any) -> Tuple[Optional[Tensor], ...]:
    need_dx, _, need_dw, need_db = ctx.needs_input_grad[:4]
    if not (need_dx or need_dw or need_db):
        return None, None, None, None, None, None
    x, weight, mean, rstd = ctx.saved_tensors
    if not ctx.store_stats:  # not from layer_norm() (it stores them whenever a gradient may be asked for)
        _, mean, rstd = torch.ops.tritonpatch.layer_norm_fwd(x, ctx.normalized_shape, weight, None, ctx.eps, True)
    dx, dw, db = torch.ops.tritonpatch.layer_norm_bwd(dy, x, ctx.normalized_shape, weight, mean, rstd,
                                                      need_dx, need_dw, need_db)
    return (dx if need_dx else None), None, (dw if need_dw else None), (db if need_db else None), None, None


# ----------------------------------------------------------------------------------------------------
# Softmax
# ----------------------------------------------------------------------------------------------------
@_custom_op("tritonpatch::softmax_fwd")
def _softmax_fwd(x: Tensor, dim: int, dtype: torch.dtype) -> Tensor:
    """y = softmax(x.to(dtype), dim), contiguous; ``dim`` >= 0 (0 for a 0-d x)."""
    try:
        return softmax_op._forward(x, dim, dtype)
    except common.KERNEL_ERRORS as e:  # the kernel cannot be built or loaded on this GPU: torch's op
        common.kernel_failed("softmax (compiled)", e)
        return torch.softmax(x, dim, dtype=dtype).contiguous()


@_custom_op("tritonpatch::softmax_bwd")
def _softmax_bwd(y: Tensor, dy: Tensor, dim: int, dx_dtype: torch.dtype) -> Tensor:
    """dx = y * (dy - sum(dy * y, dim)) in ``dx_dtype``, from the forward's output y."""
    return softmax_op._backward(y.contiguous(), dy, dim, dx_dtype)


def _softmax_setup(ctx: Any, inputs: Tuple[Any, ...], output: Tensor) -> None:
    x, dim, _dtype = inputs
    ctx.save_for_backward(output)
    ctx.dim = dim
    ctx.x_dtype = x.dtype


def _softmax_backward(ctx: Any, dy: Tensor) -> Tuple[Optional[Tensor], None, None]:
    if not ctx.needs_input_grad[0]:
        return None, None, None
    (y,) = ctx.saved_tensors
    return torch.ops.tritonpatch.softmax_bwd(y, dy, ctx.dim, ctx.x_dtype), None, None


# ----------------------------------------------------------------------------------------------------
# Linear + ReLU
# ----------------------------------------------------------------------------------------------------
@_custom_op("tritonpatch::linear_relu_fwd")
def _linear_relu_fwd(x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
    """relu(x @ weight^T + bias): x (..., K), weight (N, K), bias (N,) or None -> (..., N) in x's dtype."""
    try:
        return linear_relu_op._fused(x, weight, bias, linear_relu_op.forward_provider(x))
    except common.KERNEL_ERRORS as e:  # the kernel cannot be built or loaded on this GPU: torch's ops
        common.kernel_failed("linear_relu (compiled)", e)
        return torch.relu(torch.nn.functional.linear(x, weight, bias)).contiguous()


def _linear_relu_setup(ctx: Any, inputs: Tuple[Any, ...], output: Tensor) -> None:
    x, weight, bias = inputs
    ctx.save_for_backward(x, weight, output)
    ctx.has_bias = bias is not None


def _linear_relu_backward(ctx: Any, dy: Tensor) -> Tuple[Optional[Tensor], ...]:
    """g = dy * [y > 0]; dx = g @ W, dW = g^T @ x, db = sum_rows g (torch ops, so the compiler sees them)."""
    need_x, need_w, need_b = ctx.needs_input_grad[:3]
    need_b = need_b and ctx.has_bias
    if not (need_x or need_w or need_b):
        return None, None, None
    x, weight, y = ctx.saved_tensors
    flat = linear_relu_op._flat
    grad_x, grad_w, grad_b = linear_relu_op._backward_torch(flat(dy), flat(y), flat(x), weight,
                                                            need_x, need_w, need_b)
    return (grad_x.view(x.shape) if grad_x is not None else None), grad_w, grad_b


if AVAILABLE:
    @_layer_norm_fwd.register_fake
    def _(x, normalized_shape, weight, bias, eps, store_stats):
        m = _layer_norm_rows(x, normalized_shape) if store_stats else 0
        stats = x.new_empty((m,), dtype=torch.float32)
        return x.new_empty(x.shape), stats, stats.new_empty((m,))

    @_layer_norm_bwd.register_fake
    def _(dy, x, normalized_shape, weight, mean, rstd, need_dx, need_dw, need_db):
        return (x.new_empty(x.shape) if need_dx else _empty_like_absent(x),
                x.new_empty(normalized_shape) if need_dw else _empty_like_absent(x),
                x.new_empty(normalized_shape) if need_db else _empty_like_absent(x))

    @_softmax_fwd.register_fake
    def _(x, dim, dtype):
        return x.new_empty(x.shape, dtype=dtype)

    @_softmax_bwd.register_fake
    def _(y, dy, dim, dx_dtype):
        return y.new_empty(y.shape, dtype=dx_dtype)

    @_linear_relu_fwd.register_fake
    def _(x, weight, bias):
        return x.new_empty((*x.shape[:-1], weight.shape[0]))

    _layer_norm_fwd.register_autograd(_layer_norm_backward, setup_context=_layer_norm_setup)
    _softmax_fwd.register_autograd(_softmax_backward, setup_context=_softmax_setup)
    _linear_relu_fwd.register_autograd(_linear_relu_backward, setup_context=_linear_relu_setup)


# ----------------------------------------------------------------------------------------------------
# Traced entry points
# ----------------------------------------------------------------------------------------------------
def layer_norm(x: Tensor, normalized_shape: Union[int, Sequence[int]], weight: Optional[Tensor] = None,
               bias: Optional[Tensor] = None, eps: float = 1e-5) -> Tensor:
    """``F.layer_norm(x, normalized_shape, weight, bias, eps)`` as the custom op ``tritonpatch::layer_norm_fwd``.

    Shapes: ``x`` is ``(*, *normalized_shape)``; ``weight`` and ``bias`` are ``normalized_shape`` or
    None. Returns ``y`` of ``x.shape`` and dtype, contiguous, with, over the N = prod(normalized_shape)
    trailing elements of each of the M rows::

        y = (x - E[x]) / sqrt(Var[x] + eps) * weight + bias       (biased variance, fp32 statistics)

    Differentiable w.r.t. x, weight and bias (``tritonpatch::layer_norm_bwd``, only the gradients
    needed). The fp32 per-row mean and rstd are stored only when a gradient may be asked for.
    Callers check ``traced_unsupported("layer_norm", ...)`` first; this assumes the call is supported.
    """
    store_stats = common.records_grad(x, weight, bias)
    y, _, _ = torch.ops.tritonpatch.layer_norm_fwd(x, _as_list(normalized_shape), weight, bias, eps,
                                                   store_stats)
    return y


def softmax(x: Tensor, dim: int, dtype: Optional[torch.dtype] = None) -> Tensor:
    """``torch.softmax(x, dim, dtype=dtype)`` as the custom op ``tritonpatch::softmax_fwd``.

    ``x`` any shape and strides (fp32/fp16/bf16), ``dim`` may be negative; with ``dtype`` x is cast to it
    first (fused). Returns a contiguous tensor of ``x.shape`` in ``dtype or x.dtype``::

        y_i = exp(x_i - max_j x_j) / sum_k exp(x_k - max_j x_j)       along ``dim``, in fp32

    Differentiable once: ``dx = y * (dy - sum(dy * y, dim))`` in x's dtype (``tritonpatch::softmax_bwd``,
    from the saved y). Callers check ``traced_unsupported("softmax", ...)`` first.
    """
    d = dim + max(x.dim(), 1) if dim < 0 else dim
    return torch.ops.tritonpatch.softmax_fwd(x, d, x.dtype if dtype is None else dtype)


def linear_relu(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    """``relu(F.linear(x, weight, bias))`` as the custom op ``tritonpatch::linear_relu_fwd``.

    ``x`` (..., K), ``weight`` (N, K), ``bias`` (N,) or None; returns (..., N) in x's dtype, contiguous::

        y = max(x @ weight^T + bias, 0)         (fp32 accumulation, one fused GEMM)

    Backward, with g = dy * [y > 0] over the flattened leading dims: ``dx = g @ W``, ``dW = g^T @ x``,
    ``db = sum_rows(g)``, as torch ops the compiler sees. Callers check ``traced_unsupported("linear_relu",
    ...)`` first.
    """
    return torch.ops.tritonpatch.linear_relu_fwd(x, weight, bias)


# ----------------------------------------------------------------------------------------------------
# The support check, from metadata only
# ----------------------------------------------------------------------------------------------------
#: Read once, here: Triton reads TRITON_INTERPRET at import too (and a cached call is not traced cleanly).
_INTERPRETING = common.interpreting()


def _device_reason(*tensors: Optional[Tensor]) -> Optional[str]:
    """:func:`tritonpatch.ops.common.device_reason` (same reasons) from each tensor's type and device only."""
    first = None
    for t in tensors:
        if t is None:
            continue
        if type(t) not in _TRACED_TYPES:
            return f"tensor subclass {type(t).__name__} is not supported"
        if t.layout != torch.strided:
            return f"layout {t.layout} is not supported"
        if first is None:
            first = t.device
            if first.type == "cuda" or (first.type == "cpu" and _INTERPRETING):
                continue
            if first.type == "cpu":
                return "device cpu needs CUDA (or TRITON_INTERPRET=1)"
            return f"device {first.type} is not supported"
        if t.device != first:
            return "tensors are on different devices"
    return None


def _tensor_reason(x: Any, *params: Optional[Tensor]) -> Optional[str]:
    """Device, layout, dtype, mixed dtypes and autocast, as the ops check them, for input x and params."""
    if not isinstance(x, Tensor):
        return "input is not a tensor"
    return _device_reason(x, *params) or common.dtype_and_autocast_reason(x, *params)


def _layer_norm_reason(x: Any, normalized_shape: Union[int, Sequence[int]], weight: Optional[Tensor],
                       bias: Optional[Tensor], eps: float) -> Optional[str]:
    reason = _tensor_reason(x, weight, bias)
    if reason is not None:
        return reason
    shape = tuple(_as_list(normalized_shape))
    k = len(shape)
    if k == 0 or x.dim() < k or tuple(x.shape[x.dim() - k:]) != shape:
        return "normalized_shape does not match the input"
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and tuple(t.shape) != shape:
            return f"{name} shape does not match normalized_shape"
    return None


def _softmax_reason(x: Any, dim: Optional[int], dtype: Optional[torch.dtype] = None) -> Optional[str]:
    if dim is None:
        return "dim is None"
    reason = _tensor_reason(x)
    if reason is not None:
        return reason
    if dtype is not None and dtype not in common.FLOAT_DTYPES:
        return f"dtype {dtype} is not supported"
    nd = max(x.dim(), 1)
    if not isinstance(dim, int) or not -nd <= dim < nd:
        return "dim out of range"
    return None


@torch.compiler.assume_constant_result
def _linear_relu_policy(device_type: str) -> Tuple[bool, bool]:
    """(size policy on, fp32 without TF32 falls back) for a Linear+ReLU on ``device_type``.

    Configuration (environment, TF32 flag), so read once per trace and not traced itself.
    """
    size_policy = common.size_policy_on()
    provider = linear_relu_op.forward_provider(torch.empty(0, device=device_type))
    fp32_falls_back = (linear_relu_op.FP32_IEEE_FALLS_BACK and size_policy and provider == "triton"
                       and not linear_relu_op._tf32_allowed())
    return size_policy, fp32_falls_back


def _linear_relu_reason(x: Any, weight: Tensor, bias: Optional[Tensor]) -> Optional[str]:
    reason = _tensor_reason(x, weight, bias)
    if reason is not None:
        return reason
    if x.dim() < 1 or weight.dim() != 2 or x.shape[-1] != weight.shape[1]:
        return "shapes do not match a linear layer"
    if bias is not None and (bias.dim() != 1 or bias.shape[0] != weight.shape[0]):
        return "shapes do not match a linear layer"
    size_policy, fp32_falls_back = _linear_relu_policy(x.device.type)
    if x.dtype == torch.float32 and fp32_falls_back:
        return "fp32 without TF32 is faster in torch"
    # the eager rule at its inference bar (compiled code has no Python autograd node per call); not
    # torch_is_faster itself, which reads the configuration again
    if size_policy and linear_relu_op.slower_than_torch(math.prod(x.shape[:-1]), weight.shape[0], x.shape[-1]):
        return size_policy_mod.REASON
    return None


_REASONS: dict = {"layer_norm": _layer_norm_reason, "softmax": _softmax_reason, "linear_relu": _linear_relu_reason}


def traced_unsupported(kind: str, *args: Any) -> Optional[str]:
    """Why the custom op of ``kind`` cannot take this call while tracing, or None when it can.

    ``kind`` and ``args`` mirror the ops' own checks:

    * ``"layer_norm"``: ``(x, normalized_shape, weight, bias, eps)``, x ``(*, *normalized_shape)``
    * ``"softmax"``: ``(x, dim, dtype)``, x any shape
    * ``"linear_relu"``: ``(x, weight, bias)``, x ``(..., K)``, weight ``(N, K)``, bias ``(N,)`` or None

    The checks and reason texts are those of each op's ``unsupported()`` (device: CUDA, or CPU under
    ``TRITON_INTERPRET=1``; dtype fp32/fp16/bf16; one dtype for input and parameters; autocast off; shapes
    that fit; Linear+ReLU's size policies), read from the tensors' type, device, layout, dtype and shape
    only, so fake and functional tensors (what tracing passes) are accepted like the plain tensors they
    stand for. Other tensor subclasses, and torch without custom ops, are reasons.
    """
    if not AVAILABLE:
        return "torch.library.custom_op needs torch >= 2.4"
    return _REASONS[kind](*args)
