"""Launching a compiled Triton kernel with little CPU per call.

``kernel[grid](*args, **constexprs)`` on a ``@triton.jit`` function goes through ``JITFunction.run``:
it binds and specializes every argument, builds a string cache key, looks the compiled kernel up, checks
globals and builds launch metadata, before the driver's launcher runs. On an H100 host that is 23.7 us
per launch against 9.1 us for the compiled kernel's own launcher (``benchmarks/probe_launch.py``, H100
80GB HBM3, triton 3.6, 2026-11-26). A patched LayerNorm is one launch, so that difference is most of
its CPU cost in a launch-bound model.

:class:`FastKernel` wraps a JIT function with the same ``[grid](...)`` call. The first call for each
*specialization key* goes through Triton (which compiles and returns the compiled kernel); later calls
with the same key call the compiled kernel's launcher directly. The key is at least as fine as
Triton's own specialization, so a cached kernel is only reused for arguments Triton would have compiled
the same kernel for:

* tensors: dtype, and whether the data pointer is 16-byte aligned (Triton's ``tt.divisibility``);
* ints: equal to 1, divisible by 16, and whether they fit in int32 or int64 (Triton's i32 / i64 / u64);
* floats, bools, None: type (and value, for bools and None);
* constexprs by name and value, ``num_warps``, ``num_stages``, ``cooperative``, and the current CUDA device.

Building that key is itself a few microseconds per call (a Python loop over every argument). So the ops
go one step further: each caches, per call shape, a :class:`BoundLaunch` (grid, scalar arguments and
constexprs fixed, the compiled kernel found once), whose call checks only the tensors' alignment. On the
H200 host that took a LayerNorm forward launch from 17.6 to 11.2 us and the backward's three launches from
43.0 to 27.7 us (``benchmarks/overhead_parts.py``, NVIDIA H200, triton 3.6, 2026-11-30).

The direct path is off under the interpreter, while any Triton launch hook is installed (profilers),
and with ``TRITONPATCH_FAST_LAUNCH=0``; then every call is Triton's own ``kernel[grid](...)``.
"""
from __future__ import annotations

import functools
import os
from typing import Any, Callable

import torch

from tritonpatch.ops.common import data_device, interpreting

try:  # triton >= 3.3: launch hooks live in triton.knobs
    from triton import knobs as _knobs
    from triton.knobs import HookChain as _HookChain
except ImportError:  # older triton: no direct path
    _knobs = None
    _HookChain = None

__all__ = ["BoundLaunch", "FastKernel", "fast_launch_enabled", "programs_per_sm"]

#: the current CUDA stream's raw handle for a device index (torch's own binding; 0.13 us on the H100 host)
_raw_stream = getattr(torch._C, "_cuda_getCurrentRawStream", None)

_INT32_MIN, _INT32_MAX = -(2 ** 31), 2 ** 31 - 1


@functools.lru_cache(maxsize=None)
def fast_launch_enabled() -> bool:
    """Whether the direct launch path may be used at all (read once: CUDA Triton, not disabled)."""
    if _knobs is None or _raw_stream is None or interpreting():
        return False
    return os.environ.get("TRITONPATCH_FAST_LAUNCH", "1") not in ("", "0")


def _hook_active(hook: Any) -> bool:
    if hook is None:
        return False
    if _HookChain is not None and isinstance(hook, _HookChain):
        return bool(hook.calls)
    return True


def _hooks_active() -> bool:
    rt = _knobs.runtime
    return _hook_active(rt.launch_enter_hook) or _hook_active(rt.launch_exit_hook)


def _arg_key(args: tuple) -> tuple:
    """The specialization-relevant facts of the runtime arguments (see the module docstring)."""
    key: list[Any] = []
    append = key.append
    for a in args:
        t = type(a)
        if t is int:
            append(1 if a == 1 else (2 if a % 16 == 0 else 3)
                   + (0 if _INT32_MIN <= a <= _INT32_MAX else (4 if a < 2 ** 63 else 8)))  # i32 / i64 / u64
        elif t is torch.Tensor or t is torch.nn.Parameter:
            append(a.dtype)
            append(a.data_ptr() % 16 == 0)
        elif t is float:
            append(0.5)
        else:  # bool, None, or anything else: by value (hashable) or by type
            try:
                hash(a)
                append((t, a))
            except TypeError:
                append(t)
    return tuple(key)


class _Compiled:
    """What a direct launch needs from one compiled kernel."""

    __slots__ = ("run", "function", "metadata", "names")

    def __init__(self, compiled: Any, names: tuple[str, ...]) -> None:
        self.run = compiled.run
        self.function = compiled.function
        self.metadata = compiled.packed_metadata
        self.names = names  # the constexpr names after the positional args, in signature order


class FastKernel:
    """A ``@triton.jit`` function launched as ``fast[grid](*args, **constexprs)``, like the original.

    Call sites pass the runtime arguments positionally (in signature order) and every remaining
    parameter by keyword; ``num_warps`` / ``num_stages`` are launch options, and ``cooperative=True``
    launches the grid cooperatively (Triton's ``launch_cooperative_grid``: every program co-resident, or
    the launch fails). Results are identical to the JIT function's own launch (same compiled kernel);
    only the CPU path differs.
    """

    def __init__(self, fn: Any) -> None:
        self.fn = fn
        self.arg_names: tuple[str, ...] = tuple(fn.arg_names)
        self._cache: dict[tuple, _Compiled] = {}

    def __getitem__(self, grid: tuple[int, ...]) -> Callable[..., Any]:
        return functools.partial(self._launch, grid)

    def _launch(self, grid: tuple[int, ...], *args: Any, num_warps: int = 4, num_stages: int | None = None,
                cooperative: bool = False, **constexprs: Any) -> "_Compiled | None":
        """Launch; return the cached compiled kernel when it was launched directly, None when this call
        went through Triton (the first call of a key, hooks installed, interpreter, another device)."""
        # Triton launches on the current CUDA device; launch on the tensors' one (common.data_device)
        device = data_device(args)
        if device is not None and device != torch.cuda.current_device():
            with torch.cuda.device(device):
                self._launch(grid, *args, num_warps=num_warps, num_stages=num_stages, cooperative=cooperative,
                             **constexprs)
            return None
        if not fast_launch_enabled() or _hooks_active():
            self._slow(grid, args, num_warps, num_stages, cooperative, constexprs)
            return None
        if device is None:
            device = torch.cuda.current_device()
        key = self.key(device, args, num_warps, num_stages, cooperative, constexprs)
        entry = self._cache.get(key)
        if entry is None:
            compiled = self._slow(grid, args, num_warps, num_stages, cooperative, constexprs)
            if hasattr(compiled, "result"):  # asynchronous compilation mode
                compiled = compiled.result()
            names = self.arg_names[len(args):]
            if compiled is not None and set(names) == set(constexprs):
                self._cache[key] = _Compiled(compiled, names)
            return None  # this call was launched by Triton itself
        g1 = grid[1] if len(grid) > 1 else 1
        g2 = grid[2] if len(grid) > 2 else 1
        entry.run(grid[0], g1, g2, _raw_stream(device), entry.function, entry.metadata, None, None, None,
                  *args, *[constexprs[n] for n in entry.names])
        return entry

    @staticmethod
    def key(device: int, args: tuple, num_warps: int, num_stages: int | None, cooperative: bool,
            constexprs: dict[str, Any]) -> tuple:
        """The cache key of a launch (see the module docstring): a compiled kernel is reused only for an
        equal key."""
        return (device, num_warps, num_stages, cooperative, tuple(constexprs.items()), _arg_key(args))

    def _slow(self, grid: tuple[int, ...], args: tuple, num_warps: int, num_stages: int | None, cooperative: bool,
              constexprs: dict[str, Any]) -> Any:
        options: dict[str, Any] = {"num_warps": num_warps}
        if num_stages is not None:
            options["num_stages"] = num_stages
        if cooperative:
            options["launch_cooperative_grid"] = True
        return self.fn[grid](*args, **constexprs, **options)


@functools.lru_cache(maxsize=None)
def _checking() -> bool:
    """``TRITONPATCH_CHECK_LAUNCH=1`` (the test suite sets it): every direct :class:`BoundLaunch` call
    recomputes the full specialization key and compares it with the one its kernel was compiled for. Read
    once."""
    return os.environ.get("TRITONPATCH_CHECK_LAUNCH", "0") not in ("", "0")


class BoundLaunch:
    """One launch of a :class:`FastKernel` with everything but the tensors fixed: grid, trailing scalar
    arguments, constexprs and options. Ops build one per *plan* (a cached function of shapes, strides,
    dtypes and device) and call it with the tensors: ``bound(x, y, ...)`` launches
    ``kernel[grid](x, y, ..., *scalars, **constexprs, num_warps=...)``.

    The direct path skips the per-argument key of :class:`FastKernel`: the plan that made this object
    already fixed every fact Triton specializes on (its key holds the tensors' dtypes and the scalars'
    values) except the data pointers' 16-byte alignment, which is checked per call. So a call whose
    tensors are all aligned, on the plan's device (the current one), with no launch hook installed,
    calls the compiled kernel's launcher directly; any other call takes the :class:`FastKernel` path.
    With ``TRITONPATCH_CHECK_LAUNCH=1`` each direct call also verifies the full key (a plan key that
    misses a specialization fact raises instead of launching the wrong kernel).
    """

    __slots__ = ("kernel", "grid", "scalars", "constexprs", "num_warps", "num_stages", "cooperative", "device",
                 "_entry", "_key", "_g", "_tail")

    def __init__(self, kernel: FastKernel, grid: tuple[int, ...], scalars: tuple, constexprs: dict[str, Any],
                 num_warps: int, num_stages: int | None = None, device: int | None = None,
                 cooperative: bool = False) -> None:
        self.kernel, self.grid, self.scalars = kernel, grid, scalars
        self.constexprs, self.num_warps, self.num_stages = constexprs, num_warps, num_stages
        self.cooperative = cooperative
        self.device = device  # CUDA device index of the plan (None: not CUDA, never direct)
        self._entry: _Compiled | None = None
        self._key: tuple | None = None  # the full FastKernel key the entry was compiled for
        self._tail: tuple = ()  # scalars, then the constexprs in the compiled kernel's order
        self._g = (grid[0], grid[1] if len(grid) > 1 else 1, grid[2] if len(grid) > 2 else 1)

    def __call__(self, *tensors: torch.Tensor) -> None:
        ptrs = 0
        for t in tensors:
            ptrs |= t.data_ptr()
        aligned = not ptrs & 15
        entry = self._entry
        if entry is not None and aligned and _current_device() == self.device and not _hooks_active():
            if _checking():
                self._check(tensors)
            g = self._g
            entry.run(g[0], g[1], g[2], _raw_stream(self.device), entry.function, entry.metadata,
                      None, None, None, *tensors, *self._tail)
            return
        args = (*tensors, *self.scalars)
        used = self.kernel._launch(self.grid, *args, num_warps=self.num_warps, num_stages=self.num_stages,
                                   cooperative=self.cooperative, **self.constexprs)
        if entry is None and aligned and self.device is not None:
            key = self._full_key(args)
            if used is None:  # Triton compiled or launched this call itself: look the kernel up
                used = self.kernel._cache.get(key)
            if used is not None:
                self._key = key
                self._tail = (*self.scalars, *[self.constexprs[n] for n in used.names])
                self._entry = used

    def _full_key(self, args: tuple) -> tuple:
        return FastKernel.key(self.device, args, self.num_warps, self.num_stages, self.cooperative, self.constexprs)

    def _check(self, tensors: tuple) -> None:
        key = self._full_key((*tensors, *self.scalars))
        if key != self._key:
            raise RuntimeError(f"tritonpatch: a launch plan of {self.kernel.fn.__name__} was reused for "
                               f"arguments Triton specializes differently: {key} vs {self._key}")


#: the current CUDA device index (torch's own binding, no lazy-init check); -1 without CUDA
_get_device = getattr(torch._C, "_cuda_getDevice", None)


def _current_device() -> int:
    return _get_device() if _get_device is not None else -1


def programs_per_sm(kernel: FastKernel, device: int, args: tuple, num_warps: int, constexprs: dict[str, Any]) -> int:
    """How many programs of ``kernel``, compiled for ``args`` (tensors given as their dtypes, scalars as in
    the launch) and these constexprs, can be resident on one SM of CUDA device ``device`` at once: the
    least of what its registers, its shared memory, the SM's threads and 32 blocks allow. 0 when the
    compiled kernel does not say (then a caller needing co-residency must not rely on it).

    Compiles (or finds in Triton's cache) the cooperative variant the caller will launch.
    """
    with torch.cuda.device(device):
        compiled = kernel.fn.warmup(*args, grid=(1,), num_warps=num_warps, launch_cooperative_grid=True,
                                    **constexprs)
        if hasattr(compiled, "result"):  # asynchronous compilation mode
            compiled = compiled.result()
        compiled.run  # noqa: B018 -- loads the binary: n_regs is known from here on
    regs = getattr(compiled, "n_regs", None)
    shared = getattr(getattr(compiled, "metadata", None), "shared", None)
    if not regs or shared is None:
        return 0
    props = torch.cuda.get_device_properties(device)
    threads = num_warps * 32
    regs_per_warp = -(-regs * 32 // 256) * 256  # registers are allocated per warp, 256 at a time
    by_regs = getattr(props, "regs_per_multiprocessor", 65536) // regs_per_warp // num_warps
    by_threads = getattr(props, "max_threads_per_multi_processor", 2048) // threads
    smem = getattr(props, "shared_memory_per_multiprocessor", 0)
    by_smem = smem // (shared + 1024) if shared and smem else 32  # 1 KiB per block is the driver's
    return max(0, min(32, by_regs, by_threads, by_smem))
