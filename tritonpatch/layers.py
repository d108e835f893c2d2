"""The patched behaviour of each layer kind: per call, run the Triton op or PyTorch, and count which.

A patched module keeps its identity: :func:`patched_class` makes a subclass of the module's own class
whose only change is ``forward``; the patcher assigns it to ``module.__class__`` and puts the original
class back on exit. Parameters, buffers, hooks and ``state_dict`` are untouched, and
``isinstance(module, nn.LayerNorm)`` still holds.

Per call, the behaviour asks the op's ``unsupported(...)``; ``None`` means Triton runs, a reason means
the original PyTorch ``forward`` runs. Both are counted in the layer's :class:`LayerRecord`. A call
under the size policy's inference bar is decided by its size alone, before that check (most calls of
a small-batch model: a few attribute reads instead of the whole check).
"""
from __future__ import annotations

import copyreg
import dataclasses
import sys
import threading
import weakref
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules import module as _module_mod

from .ops import layer_norm as layer_norm_op
from .ops import library
from .ops import linear_relu as linear_relu_op
from .ops import softmax as softmax_op
from .ops import size_policy
from .ops.common import KERNEL_ERRORS, KERNEL_FAILED, any_autocast, interpreting, kernel_failed
from .patching.records import LayerRecord


@dataclasses.dataclass
class LayerState:
    """What a patched module needs at call time: its record and the patch it belongs to."""

    record: LayerRecord
    patch: Any  # tritonpatch.patching.patch.Patch (not imported: data flows down)
    sites: list[Any] = dataclasses.field(default_factory=list)  # Linear+ReLU: accepted call sites
    #: set when this layer's Triton kernel could not be built or loaded on this GPU: torch from then on
    kernel_failed: bool = False


#: module -> its state, for modules patched right now. Weak, so nothing keeps a dropped model alive,
#: and nothing is stored in the module's own ``__dict__``.
STATES: "weakref.WeakKeyDictionary[nn.Module, LayerState]" = weakref.WeakKeyDictionary()
#: The dict under :data:`STATES` ({weakref(module): state}). Patched forwards read it as
#: ``_STATE_DATA.get(_ref(self))``: what ``STATES.get(self)`` does, without its Python frame (0.24 us
#: against 0.31 us on the H200 host, 2026-12-01, ``benchmarks/probe_fallback_cost.py --only parts``; a
#: patched call's CPU cost is paid on every call of a host-bound model).
_STATE_DATA = STATES.data
_ref = weakref.ref
#: ``torch.compiler.is_compiling`` (the same function: Dynamo recognises it by identity), bound once.
_is_compiling = torch.compiler.is_compiling


def dispatch(state: LayerState, reason: str | None, on_triton: Callable[[], torch.Tensor],
             on_torch: Callable[[], torch.Tensor],
             captured: Callable[[torch.Tensor], torch.Tensor] | None = None,
             on_reference: Callable[[], torch.Tensor] | None = None) -> torch.Tensor:
    """Run one call of a patched layer on Triton (``reason is None``) or on PyTorch, and count it.

    In the patch's reference mode (used by :func:`tritonpatch.compare`) the original PyTorch code
    (``on_reference``, by default ``on_torch``) runs and nothing is counted. Whatever runs, the output
    (through ``captured`` if given) is offered to the patch's capture (also for ``compare``).
    """
    patch = state.patch
    if patch.reference:
        out = (on_reference or on_torch)()
    elif reason is None:
        out = triton_or_torch(state, on_triton, on_torch)
    else:
        state.record.count(reason)
        out = on_torch()
    if patch.capture is not None:
        patch.capture(state.record, out if captured is None else captured(out))
    return out


def triton_or_torch(state: LayerState, on_triton: Callable[[], torch.Tensor],
                    on_torch: Callable[[], torch.Tensor]) -> torch.Tensor:
    """Run a call the checks gave to Triton, counted as such; if its kernel cannot be built or loaded on
    this GPU (:data:`~tritonpatch.ops.common.KERNEL_ERRORS`, e.g. more shared memory than it has), torch
    runs it instead, and every later call of this layer, counted with ``KERNEL_FAILED`` (logged once)."""
    if not state.kernel_failed:
        try:
            out = on_triton()
        except KERNEL_ERRORS as e:
            state.kernel_failed = True
            kernel_failed(f"{state.record.kind} {state.record.name!r}", e)
        else:
            state.record.count(None)
            return out
    state.record.count(KERNEL_FAILED)
    return on_torch()


#: (op, device type, input dtype, autocast dtype) -> the dtype torch's op computes in under autocast.
_AUTOCAST_DTYPES: dict[tuple, torch.dtype] = {}


def autocast_dtype(op: str, x: torch.Tensor) -> torch.dtype | None:
    """Under autocast on ``x``'s device: the dtype torch's own ``op`` would compute in for ``x``.

    ``op`` is ``"layer_norm"``, ``"softmax"`` or ``"linear"``. Returns None when autocast is off there.
    Torch's policy differs per device (CUDA runs layer_norm and softmax in fp32, CPU does not), so it is
    not written down here but learned, once per (op, device type, input dtype, autocast dtype), by
    running torch's op through the dispatcher (no Python wrapper in between) on a 1x2 probe.
    """
    if not any_autocast():  # one C call when autocast is off everywhere
        return None
    device_type = x.device.type
    if not torch.is_autocast_enabled(device_type):
        return None
    key = (op, device_type, x.dtype, torch.get_autocast_dtype(device_type))
    dtype = _AUTOCAST_DTYPES.get(key)
    if dtype is None:
        probe = torch.ones(1, 2, dtype=x.dtype, device=x.device)
        with torch.no_grad():
            if op == "layer_norm":
                out = torch.ops.aten.layer_norm(probe, [2], probe[0], probe[0])
            elif op == "softmax":
                out = torch.ops.aten.softmax.int(probe, -1)
            else:
                out = torch.ops.aten.linear(probe, torch.ones(2, 2, dtype=x.dtype, device=x.device))
        dtype = _AUTOCAST_DTYPES[key] = out.dtype
    return dtype


def without_autocast(device_type: str, fn: Callable[[], Any]) -> Any:
    """Run ``fn`` with autocast off on ``device_type`` (its inputs are already in the autocast dtype)."""
    if not torch.is_autocast_enabled(device_type):
        return fn()
    with torch.autocast(device_type, enabled=False):
        return fn()


def weight_and_bias(module: nn.Module) -> tuple[Any, Any]:
    """``(module.weight, module.bias)`` (each a Parameter or None), read from ``module._parameters``
    directly where registered there: ``nn.Module.__getattr__`` costs 0.33 us per access, on every patched
    call (both here: 0.26 us; H200 host, 2026-12-01, ``benchmarks/probe_fallback_cost.py --only parts``).
    A name that is not a registered parameter (a parametrization's property, a plain attribute) goes
    through ``getattr``."""
    params = module._parameters
    weight = params["weight"] if "weight" in params else module.weight
    bias = params["bias"] if "bias" in params else module.bias
    return weight, bias


#: F.layer_norm as imported (a later replacement of it is honoured: see torch_layer_norm).
_F_LAYER_NORM = F.layer_norm
_has_torch_function = torch._C._has_torch_function_variadic
#: the getter behind ``torch.backends.cudnn.enabled`` (that property: 0.42 us per read, this call 0.09 us,
#: on the H200 host, 2026-12-01, ``benchmarks/probe_fallback_cost.py --only parts``)
_cudnn_enabled = torch._C._get_cudnn_enabled


def torch_layer_norm(input: torch.Tensor, shape: Any, weight: torch.Tensor | None,  # noqa: A002
                     bias: torch.Tensor | None, eps: float) -> torch.Tensor:
    """What ``nn.LayerNorm.forward`` runs, ``F.layer_norm(input, shape, weight, bias, eps)``: x (*, *shape)
    -> the same shape. Inlined as F.layer_norm itself does it (``torch.layer_norm`` with the cuDNN flag)
    when neither a ``__torch_function__`` override (a tensor subclass, a mode) nor a replaced
    ``F.layer_norm`` is in play; else through ``F.layer_norm``. Saves its Python frame and the cuDNN
    property read: 11.1 us against 12.0 us per call (CUDA, 64x256 bf16; H200 host, 2026-12-01,
    ``benchmarks/probe_fallback_cost.py --only parts``)."""
    if F.layer_norm is _F_LAYER_NORM and not _has_torch_function(input, weight, bias):
        return torch.layer_norm(input, shape, weight, bias, eps, _cudnn_enabled())
    return F.layer_norm(input, shape, weight, bias, eps)


def cast(t: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """``t.to(dtype)`` (differentiable), None stays None."""
    return None if t is None else t.to(dtype)


def new_unpatched(cls: type) -> Any:
    """``cls.__new__(cls)``: how a patched module is rebuilt by pickle and deepcopy, as its original class."""
    return cls.__new__(cls)


class _PatchedModule:
    """Base of the patched subclasses: pickles and deep-copies as the original, unpatched class."""

    _tp_original_class: type

    def __reduce_ex__(self, protocol: Any) -> Any:
        rv = super().__reduce_ex__(protocol)
        if isinstance(rv, tuple) and rv and rv[0] is copyreg.__newobj__ and rv[1][0] is type(self):
            rv = (new_unpatched, (self._tp_original_class,), *rv[2:])
        return rv


def _below_size_bar(x: torch.Tensor, op: str, size: int) -> bool:
    """A call of ``op`` on a CUDA tensor (or any, under the interpreter) whose ``size`` (bytes of x, or
    forward FLOPs) is under the size policy's lower (inference) bar: torch runs it, whatever else is true
    of the call, so the patched layer decides it without the full check (a patched call's CPU cost is
    paid on every call of a host-bound model, and most of it is the check)."""
    return (x.is_cuda or interpreting()) and size_policy.torch_is_faster(op, size, False)


class LayerNormBehaviour(_PatchedModule):
    """``nn.LayerNorm.forward`` on Triton: y = (x - mean) / sqrt(var + eps) * weight + bias.

    x is (*, *normalized_shape); statistics over the trailing ``normalized_shape`` dims, in fp32.
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002 (torch's own name)
        original = self._tp_original_class.forward
        if _is_compiling():  # first: while tracing, the custom op or torch (nothing counted)
            shape = tuple(self.normalized_shape)
            if library.traced_unsupported("layer_norm", input, shape, self.weight, self.bias, self.eps) is None:
                return library.layer_norm(input, shape, self.weight, self.bias, self.eps)
            return original(self, input)
        state = _STATE_DATA.get(_ref(self))
        if state is None:
            return original(self, input)
        shape = self.normalized_shape
        if state.patch.plain and _below_size_bar(input, "layer_norm", input.nbytes):
            state.record.count(size_policy.REASON)
            return torch_layer_norm(input, shape, *weight_and_bias(self), self.eps)
        target = autocast_dtype("layer_norm", input)
        if target is None:
            (weight, bias), eps = weight_and_bias(self), self.eps
            reason = layer_norm_op.unsupported(input, shape, weight, bias, eps)
            if state.patch.plain:  # the common case, without dispatch's closures (CPU per call matters)
                if reason is None:
                    return triton_or_torch(state, lambda: layer_norm_op.layer_norm(input, shape, weight, bias, eps),
                                           lambda: torch_layer_norm(input, shape, weight, bias, eps))
                state.record.count(reason)
                # what nn.LayerNorm.forward runs (the plan takes no class that overrides it), with the
                # parameters already read (see weight_and_bias)
                return torch_layer_norm(input, shape, weight, bias, eps)
            return dispatch(
                state, reason,
                lambda: layer_norm_op.layer_norm(input, shape, weight, bias, eps),
                lambda: original(self, input),
            )
        # Under autocast: what torch does (cast x, weight, bias to its compute dtype), then the kernel.
        dev = input.device.type
        w, b = weight_and_bias(self)
        x, w, b = cast(input, target), cast(w, target), cast(b, target)
        reason = without_autocast(dev, lambda: layer_norm_op.unsupported(x, shape, w, b, self.eps))
        return dispatch(
            state, reason,
            lambda: without_autocast(dev, lambda: layer_norm_op.layer_norm(x, shape, w, b, self.eps)),
            lambda: original(self, input),
        )


_CLASS_CACHE: dict[tuple[type, type], type] = {}


def patched_class(cls: type, behaviour: type) -> type:
    """The subclass of ``cls`` with ``behaviour``'s forward (made once per class and cached).

    It keeps ``cls.__name__`` so that ``repr(model)`` reads the same while patched.
    """
    key = (cls, behaviour)
    made = _CLASS_CACHE.get(key)
    if made is None:
        made = type(cls.__name__, (behaviour, cls), {
            "__module__": __name__,
            "__qualname__": f"{behaviour.__name__}[{cls.__qualname__}]",
            "_tp_original_class": cls,
        })
        _CLASS_CACHE[key] = made
    return made


def is_patched(module: nn.Module) -> bool:
    """True when ``module`` currently has one of the patched classes."""
    return isinstance(module, _PatchedModule)


def overrides_forward(cls: type, base: type) -> bool:
    """True when ``cls`` (a subclass of ``base``) defines its own ``forward``."""
    return cls.forward is not base.forward


def softmax_behaviour(state: LayerState, x: torch.Tensor, dim: Any, dtype: torch.dtype | None,
                      on_torch: Callable[[], torch.Tensor]) -> torch.Tensor:
    """One softmax call made by a patched model: y = exp(x - max) / sum(exp(x - max)) along ``dim``.

    ``x`` is any shape; ``dtype`` (torch's ``dtype=``) is the output dtype, with torch's meaning (x is
    cast to it first). ``on_torch`` runs the original torch function for this call.
    """
    if state.patch.plain and isinstance(x, torch.Tensor) and _below_size_bar(x, "softmax", x.nbytes):
        state.record.count(size_policy.REASON)
        return on_torch()
    target = autocast_dtype("softmax", x) if isinstance(x, torch.Tensor) else None
    if target is None:
        reason = softmax_op.unsupported(x, dim, dtype)
        if state.patch.plain:
            if reason is None:
                return triton_or_torch(state, lambda: softmax_op.softmax(x, dim, dtype), on_torch)
            state.record.count(reason)
            return on_torch()
        return dispatch(state, reason, lambda: softmax_op.softmax(x, dim, dtype), on_torch)
    # Under autocast torch picks the output dtype when none is given (fp32 on CUDA); an explicit one stays.
    out_dtype = dtype if dtype is not None else (target if target != x.dtype else None)
    dev = x.device.type
    reason = without_autocast(dev, lambda: softmax_op.unsupported(x, dim, out_dtype))
    return dispatch(state, reason,
                    lambda: without_autocast(dev, lambda: softmax_op.softmax(x, dim, out_dtype)), on_torch)


# -- Linear + ReLU --------------------------------------------------------------------------------
class _FusedMark(threading.local):
    """Per thread: a weak reference to the fused Linear+ReLU output just produced, or None.

    The class attribute is every thread's default, so reading it never raises (a ``getattr`` with a
    default on a plain ``threading.local`` raises and catches AttributeError inside on every call
    until the thread first sets it, as in a model whose pairs all fall back: 0.74 us against 0.10 us
    per read on the H200 host, 2026-12-01, ``benchmarks/probe_fallback_cost.py --only parts``)."""

    fused: "weakref.ref[torch.Tensor] | None" = None


_tls = _FusedMark()
#: torch.relu itself, taken before any patch wraps it (compare() captures a pair's output through it,
#: and must not consume the "already ReLU'd" mark that the pair's own ReLU relies on).
_TORCH_RELU = torch.relu
#: F.relu itself, likewise (what a pair's ReLU module runs when not handed the fused output).
_F_RELU = F.relu
#: Frames of nn.Module's call machinery, between a caller and the module's forward.
_CALL_CODES = frozenset({
    nn.Module._call_impl.__code__, nn.Module._wrapped_call_impl.__code__,
    # the closure _call_impl runs forward through when hooks are registered
    *(c for c in nn.Module._call_impl.__code__.co_consts if hasattr(c, "co_code")),
})


def _caller_frame(frame: Any) -> Any:
    """The first frame from ``frame`` up that is not nn.Module's call machinery: the module's caller."""
    while frame is not None and frame.f_code in _CALL_CODES:
        frame = frame.f_back
    return frame


def _on_site(site: Any, frame: Any) -> bool:
    """``frame`` is running ``site``'s code at ``site``'s line (a site without a line: anywhere in it).

    The line is read as ``f_lineno`` once per instruction offset (``f_lasti``) and kept in
    ``site.on_line``: ``f_lineno`` decodes the code's line table from its start on every read, so its
    cost grows with the caller's length (a long HF ``forward``), while an offset's line never changes.
    """
    if frame.f_code is not site.code:
        return False
    if site.lineno is None:
        return True
    lasti = frame.f_lasti
    hit = site.on_line.get(lasti)
    if hit is None:
        hit = site.on_line[lasti] = frame.f_lineno == site.lineno
    return hit


def _at_accepted_site(sites: list[Any], check_parent: bool = True) -> bool:
    """True when the Linear is being called from one of the call sites its pair was proved at: that code
    and line, and (``check_parent``) that parent module as the caller's ``self``.

    Frames: 0 this, 1 the patched forward, 2 onwards nn.Module's call machinery, then the caller.
    Without ``check_parent`` (a call that falls back anyway: the answer decides only what the report
    counts, never what runs) the frame where the caller sits when the Linear has no hooks (2
    ``_call_impl``, 3 ``_wrapped_call_impl``, 4 the caller) is tried first: one frame object made instead
    of three, and no read of the caller's locals (a dict built from its frame). On a miss, or with
    ``check_parent``, the frames are walked.
    """
    if not check_parent:
        try:
            probe = sys._getframe(4)
        except ValueError:  # a stack shallower than that
            probe = None
        if probe is not None:
            for site in sites:
                if _on_site(site, probe):
                    return True
    frame = _caller_frame(sys._getframe(2))
    if frame is None:
        return False
    for site in sites:
        if _on_site(site, frame) and (not check_parent or frame.f_locals.get("self") is site.parent):
            return True
    return False


def _hooked(module: nn.Module) -> bool:
    """True when a forward hook (the module's own or a global one) would see the Linear's output.

    Pre-hooks see only the input (FSDP2 unshards parameters in one), so they do not block fusion.
    """
    return bool(module._forward_hooks or _module_mod._global_forward_hooks)


def mark_fused(out: torch.Tensor) -> torch.Tensor:
    """Remember ``out`` (this thread) as a fused Linear+ReLU output, so the ReLU that follows skips."""
    _tls.fused = weakref.ref(out)
    return out


def take_fused(x: Any) -> bool:
    """True (once) if ``x`` is the fused output just produced: its ReLU is already applied.

    Skipping is always correct: relu(relu(z)) == relu(z).
    """
    if _is_compiling():
        return False
    ref = _tls.fused
    if ref is not None and ref() is x:
        _tls.fused = None
        return True
    return False


class LinearReluBehaviour(_PatchedModule):
    """The Linear of a proved Linear->ReLU pair: y = relu(x @ weight^T + bias) in one Triton GEMM.

    x is (*, in_features), y is (*, out_features). Only at the pair's proved call sites; from any other
    call site (or with forward hooks on it) it is a plain ``nn.Linear``.
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002
        original = self._tp_original_class.forward
        if _is_compiling():
            # The pair's proof checks the caller's frame, which tracing has no access to; a fused output
            # handed to a caller that wants the pre-activation would be wrong, so compiled code gets
            # torch's Linear (Inductor fuses the bias and ReLU into its own kernels).
            return original(self, input)
        state = _STATE_DATA.get(_ref(self))
        if state is None:
            return original(self, input)
        if state.patch.plain and _below_size_bar(input, "linear_relu", 2 * input.numel() * self.out_features):
            # torch's Linear (F.linear raises torch's own error for a shape that does not fit)
            if _at_accepted_site(state.sites, check_parent=False):
                state.record.count(size_policy.REASON)
            return F.linear(input, *weight_and_bias(self))
        target = autocast_dtype("linear", input)
        if target is None and state.patch.plain:  # the common case, without closures
            w, b = weight_and_bias(self)
            reason = "the Linear has forward hooks" if _hooked(self) else linear_relu_op.unsupported(input, w, b)
            if reason is not None:  # torch's Linear, from any call site; counted from the pair's own
                if _at_accepted_site(state.sites, check_parent=False):
                    state.record.count(reason)
                return F.linear(input, w, b)  # nn.Linear.forward (never overridden here), parameters read once
            if not _at_accepted_site(state.sites):
                return F.linear(input, w, b)
            provider = linear_relu_op.forward_provider(input)
            if provider == "cublaslt":  # torch's own fused GEMM: no Triton kernel to fail
                state.record.count(linear_relu_op.CUBLASLT_NOTE)
                return mark_fused(linear_relu_op.linear_relu(input, w, b, provider))
            # a failed kernel leaves the pre-activation to torch's Linear; the ReLU module then applies relu
            return triton_or_torch(state, lambda: mark_fused(linear_relu_op.linear_relu(input, w, b, provider)),
                                   lambda: F.linear(input, w, b))
        if not _at_accepted_site(state.sites):
            return original(self, input)
        dev = input.device.type
        x, (w, b) = input, weight_and_bias(self)
        if target is not None:  # under autocast: what torch's linear does (cast to its dtype), then the fused GEMM
            x, w, b = cast(input, target), cast(w, target), cast(b, target)
        if _hooked(self):  # a hook must see the real pre-activation
            reason = "the Linear has forward hooks"
        else:
            reason = without_autocast(dev, lambda: linear_relu_op.unsupported(x, w, b))
        provider = linear_relu_op.forward_provider(x) if reason is None else None

        def fused() -> torch.Tensor:
            return mark_fused(without_autocast(dev, lambda: linear_relu_op.linear_relu(x, w, b, provider)))

        def unfused() -> torch.Tensor:
            return original(self, input)
        if provider == "cublaslt":  # still one fused GEMM, but not Triton: the report says so
            return dispatch(state, linear_relu_op.CUBLASLT_NOTE, fused, fused, captured=_TORCH_RELU,
                            on_reference=unfused)
        return dispatch(state, reason, fused, unfused, captured=_TORCH_RELU)


class ReluBehaviour(_PatchedModule):
    """The ReLU of a pair: skips the work when handed the fused output (already ReLU'd), else nn.ReLU."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002
        if take_fused(input):
            return input
        # nn.ReLU.forward (the plan takes no class that overrides it) with torch's F.relu: F.relu may be
        # the pair routing's wrapper now, which would ask take_fused again
        return _F_RELU(input, self.inplace)
