"""Checks shared by every op: where Triton can run, and the reason text when it cannot.

Each op's ``unsupported(...)`` composes these and returns either ``None`` (Triton can take the call) or a
short reason that names the cause, e.g. ``"dtype torch.float64 is not supported"``. The reason text is
what the patch report counts, so it must be stable (no shapes or addresses in it unless they are the
cause).
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import threading

from typing import Callable, Iterator, ParamSpec, TypeVar

import torch

P = ParamSpec("P")
R = TypeVar("R")

_ANY_AUTOCAST = getattr(torch._C, "_is_any_autocast_enabled", None)  # torch >= 2.3


def any_autocast() -> bool:
    """False when autocast is off on every device (one C call, checked before any per-device check).

    Eager use only (the patched layers' own dispatch): traced code keeps torch's per-device check, which
    torch.compile knows.
    """
    return _ANY_AUTOCAST is None or bool(_ANY_AUTOCAST())


def _kernel_errors() -> tuple[type[BaseException], ...]:
    """Triton's errors for a kernel that cannot be built or loaded on this GPU (the names differ between
    Triton versions: those present are taken). Not InterpreterError: under the interpreter an error is a
    bug in the kernel, and the tests must see it."""
    found: list[type[BaseException]] = []
    for module, name in (("triton.runtime.errors", "OutOfResources"), ("triton.runtime.errors", "PTXASError"),
                         ("triton.compiler.errors", "CompilationError")):
        try:
            found.append(getattr(__import__(module, fromlist=[name]), name))
        except (ImportError, AttributeError):
            continue
    return tuple(found)


#: What a kernel launch raises when the kernel cannot be compiled or loaded here (e.g. more shared memory
#: than this GPU has): the patched layers and the backward passes fall back to torch on these.
KERNEL_ERRORS: tuple[type[BaseException], ...] = _kernel_errors()
#: The fallback reason a patched layer records after one of :data:`KERNEL_ERRORS`.
KERNEL_FAILED = "the Triton kernel cannot run on this GPU (see the log)"


_FAILED_LOGGED: set[str] = set()


def kernel_failed(what: str, error: BaseException) -> None:
    """Log (once per ``what``, on the ``tritonpatch`` logger, as a warning) that a kernel of ``what``
    could not be built or loaded here, and that torch runs it instead."""
    if what not in _FAILED_LOGGED:
        _FAILED_LOGGED.add(what)
        logging.getLogger("tritonpatch").warning(
            "%s: the Triton kernel cannot run on this GPU, torch runs it instead: %s: %s",
            what, type(error).__name__, error)


#: dtypes every kernel takes; statistics and accumulators are always fp32.
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@functools.lru_cache(maxsize=None)
def interpreting() -> bool:
    """True when Triton runs kernels through its CPU interpreter (``TRITON_INTERPRET=1``).

    Read once: Triton itself reads the variable at import, so changing it later has no effect.
    """
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def device_reason(*tensors: torch.Tensor | None) -> str | None:
    """Reason why these tensors cannot go to a Triton kernel because of their device, or None.

    Kernels run on CUDA tensors, and on CPU tensors when the interpreter is on. All tensors given (None
    entries are skipped) must be on one device. (Per call on every patched call: device *indices* and
    ``is_cuda`` / ``is_cpu`` flags are compared, no ``torch.device`` objects are built.)
    """
    index = None  # the first tensor's CUDA device index, or -1 for CPU under the interpreter
    for t in tensors:
        if t is None:
            continue
        kind = type(t)
        if kind is not torch.Tensor and kind is not torch.nn.Parameter:  # FakeTensor, DTensor: no data pointer
            return f"tensor subclass {kind.__name__} is not supported"
        if index is None:
            if t.is_cuda:
                index = t.get_device()
                continue
            dev = t.device.type
            if dev == "cpu" and interpreting():
                index = -1
                continue
            if dev == "cpu":
                return "device cpu needs CUDA (or TRITON_INTERPRET=1)"
            return f"device {dev} is not supported"
        if (t.get_device() != index or not t.is_cuda) if index >= 0 else not t.is_cpu:
            return "tensors are on different devices"
    return None


def dtype_reason(x: torch.Tensor, allowed: tuple[torch.dtype, ...] = FLOAT_DTYPES) -> str | None:
    """Reason why ``x.dtype`` is not one the kernels take, or None."""
    if x.dtype not in allowed:
        return f"dtype {x.dtype} is not supported"
    return None


def same_dtype_reason(x: torch.Tensor, *others: torch.Tensor | None) -> str | None:
    """Reason why the parameters' dtype differs from the input's, or None (None entries are skipped)."""
    for t in others:
        if t is not None and t.dtype != x.dtype:
            return f"mixed dtypes ({x.dtype} input, {t.dtype} parameter)"
    return None


def records_grad(*tensors: torch.Tensor | None) -> bool:
    """True when autograd records a call on these tensors: grad mode is on and one of them (None entries
    skipped) requires grad. Decides both the autograd path of an op and the size policy's training bar."""
    if not torch.is_grad_enabled():
        return False
    for t in tensors:  # a loop, not any(<generator>): this runs on every patched call
        if t is not None and t.requires_grad:
            return True
    return False


def autocast_reason(x: torch.Tensor) -> str | None:
    """Reason to fall back when autocast is on for ``x``'s device type, or None.

    Under autocast torch decides the compute dtype per op; until an op implements that policy itself,
    it lets torch run the call so that the result is exactly torch's.
    """
    if any_autocast() and torch.is_autocast_enabled(x.device.type):
        return "autocast is enabled"
    return None


_Tensor, _Parameter = torch.Tensor, torch.nn.Parameter


def tensors_reason(x: torch.Tensor, *params: torch.Tensor | None) -> str | None:
    """The device, dtype and autocast reasons for an input ``x`` and its parameters (None entries skipped),
    in this order: :func:`device_reason`, :func:`dtype_reason` of x, :func:`same_dtype_reason`,
    :func:`autocast_reason`; None when there is none.

    The usual call (plain CUDA tensors on one device, one float dtype, autocast off everywhere) is
    recognised here without calling the four (every patched call pays this check; each helper call costs
    CPU, more so inside a large model than in a loop); anything else goes through them, for the reason.
    """
    if type(x) is _Tensor and x.is_cuda and x.dtype in FLOAT_DTYPES and not any_autocast():
        dtype, index = x.dtype, x.get_device()
        for p in params:
            if p is not None and not ((type(p) is _Parameter or type(p) is _Tensor) and p.is_cuda
                                      and p.dtype == dtype and p.get_device() == index):
                break
        else:
            return None
    return device_reason(x, *params) or dtype_and_autocast_reason(x, *params)


def dtype_and_autocast_reason(x: torch.Tensor, *params: torch.Tensor | None) -> str | None:
    """What :func:`tensors_reason` checks after the devices: :func:`dtype_reason` of x,
    :func:`same_dtype_reason`, :func:`autocast_reason` (also the traced twin's, after its own device
    check from metadata)."""
    return dtype_reason(x) or same_dtype_reason(x, *params) or autocast_reason(x)


def cdiv(a: int, b: int) -> int:
    """ceil(a / b) for ints (``triton.cdiv`` is a constexpr function: ~10x the CPU per call)."""
    return -(-a // b)


def clamp(v: int, lo: int, hi: int) -> int:
    """``v`` limited to [lo, hi]."""
    return max(lo, min(hi, v))


@functools.lru_cache(maxsize=None)
def num_sms(device: int) -> int:
    """Streaming multiprocessors of the CUDA device with this index; -1 (not CUDA: the interpreter) gives 4,
    which keeps its grids small."""
    return torch.cuda.get_device_properties(device).multi_processor_count if device >= 0 else 4


def next_power_of_2(n: int) -> int:
    """Smallest power of two >= n (n >= 1)."""
    return 1 << (max(n, 1) - 1).bit_length()


@functools.lru_cache(maxsize=None)
def poisoning() -> bool:
    """True when ``TRITONPATCH_POISON=1``: outputs are filled with NaN before kernels write them.

    Tests turn this on (before importing tritonpatch) so that an element a kernel forgets to write shows
    up as NaN instead of as whatever the allocator happened to hand back. Read once.
    """
    return os.environ.get("TRITONPATCH_POISON", "0") not in ("", "0")


def new_output(shape: tuple[int, ...] | torch.Size, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Allocate a kernel output: ``torch.empty``, or NaN-filled when :func:`poisoning` is on. (The sizes
    go in unpacked: torch parses them about 1 us faster than a tuple, per call.)"""
    out = torch.empty(*shape, dtype=dtype, device=device) if shape else torch.empty((), dtype=dtype, device=device)
    if poisoning() and out.is_floating_point():
        out.fill_(float("nan"))
    return out


def new_output_like(t: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A contiguous kernel output of ``t``'s shape and device, in ``dtype`` (default ``t``'s), filled as
    by :func:`new_output`. ``empty_like`` parses fewer arguments than ``empty``: half its CPU per call."""
    out = torch.empty_like(t, dtype=dtype, memory_format=torch.contiguous_format)
    if poisoning() and out.is_floating_point():
        out.fill_(float("nan"))
    return out


def data_device(args: tuple) -> int | None:
    """The CUDA device index of the first tensor among ``args`` (a kernel's data), None if it is not CUDA.

    Triton launches on the *current* device; a model spread over GPUs (``device_map="auto"``) has its
    tensors elsewhere, so launchers compare this with the current device and switch when they differ.
    """
    for a in args:
        if isinstance(a, torch.Tensor):
            return a.device.index if a.is_cuda else None
    return None


def on_data_device(t: torch.Tensor) -> contextlib.AbstractContextManager:
    """Make ``t``'s CUDA device current for a Triton launch (see :func:`data_device`); a no-op context when
    it already is, or off CUDA."""
    device = data_device((t,))
    if device is not None and device != torch.cuda.current_device():
        return torch.cuda.device(device)
    return contextlib.nullcontext()


_INTERPRETER_LOCK = threading.RLock()


def launcher(fn: Callable[P, R]) -> Callable[P, R]:
    """Decorate a function that launches kernels: under Triton's interpreter, which is not thread-safe
    (it swaps ``triton.language`` functions globally while a kernel runs), calls are serialised by a
    lock. On a GPU the function is returned unchanged (no per-call cost)."""
    if not interpreting():
        return fn

    @functools.wraps(fn)
    def serialised(*args: P.args, **kwargs: P.kwargs) -> R:
        with _INTERPRETER_LOCK:
            return fn(*args, **kwargs)
    return serialised


@dataclasses.dataclass
class Settings:
    """The library's switches, read from the environment by :func:`read_settings` (at import).

    Read per call from here, not from ``os.environ`` (whose ``get`` costs 0.6-1.7 us of CPU per call on the
    hosts measured). Code that changes the variables at run time calls :func:`read_settings` after,
    or sets the attributes directly (tests: ``monkeypatch.setattr(common.SETTINGS, ...)``).

    Attributes:
        size_policy: the "torch is faster" size policies apply (``TRITONPATCH_SIZE_POLICY``, default 1;
            always off under the interpreter, where the point is to run the kernels).
        linear_relu: the Linear+ReLU forward provider, ``"auto"``, ``"triton"`` or ``"cublaslt"``
            (``TRITONPATCH_LINEAR_RELU``; anything else reads as ``"auto"``).
    """

    size_policy: bool = True
    linear_relu: str = "auto"


SETTINGS = Settings()


def read_settings() -> Settings:
    """(Re)read :data:`SETTINGS` from the environment; returns it."""
    SETTINGS.size_policy = not interpreting() and os.environ.get("TRITONPATCH_SIZE_POLICY", "1") not in ("", "0")
    provider = os.environ.get("TRITONPATCH_LINEAR_RELU", "auto")
    SETTINGS.linear_relu = provider if provider in ("triton", "cublaslt") else "auto"
    return SETTINGS


read_settings()


@contextlib.contextmanager
def environment(**variables: str | None) -> Iterator[Settings]:
    """Set (a str) or unset (None) the given environment variables for the block, with :data:`SETTINGS`
    read from them; both are put back after. E.g. ``environment(TRITONPATCH_SIZE_POLICY="0")``."""
    saved = {k: os.environ.get(k) for k in variables}

    def put(values: dict[str, str | None]) -> None:
        for k, v in values.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    put(variables)
    try:
        yield read_settings()
    finally:
        put(saved)
        read_settings()


def size_policy_on() -> bool:
    """Whether the "torch is faster" policies apply (each op falls back where PyTorch wins):
    ``SETTINGS.size_policy`` (see :class:`Settings`)."""
    return SETTINGS.size_policy
