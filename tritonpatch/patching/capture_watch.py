"""Knowing, for about the price of reading a global, whether a CUDA graph may be capturing.

The size policy does not apply inside a CUDA graph capture (:mod:`tritonpatch.ops.size_policy`), but
asking CUDA whether the current stream captures costs 1.6-2.5 us per call on the H200 host
(``torch.cuda.is_current_stream_capturing``'s binding, two runs; ``benchmarks/probe_graph_capture.py
--parts query``, 2026-12-01), a third of what a falling-back patched call costs inside a model; with the
count at zero the policy's check costs 0.045 us. So while any patch is
active, ``torch.cuda.CUDAGraph.capture_begin`` / ``capture_end`` (what ``torch.cuda.graph``,
``torch.cuda.make_graphed_callables`` and torch.compile's CUDA graphs go through) are wrapped to count
the captures under way, and the policy asks CUDA only while that count is above zero. A capture begun
some other way (``torch._C._CUDAGraph`` directly, or before the patch) is not seen: its small calls
fall back as outside a capture, which is never wrong, only the host-time choice.

A kernel met for the first time inside a capture is compiled and loaded there. CUDA drivers before 12.3
do not allow loading a module during a capture (it would fail the user's capture; NVIDIA Warp's
``enable_graph_capture_module_load_by_default`` documents the same limit), so with such a driver captures
are not counted, and small calls fall back in them as outside. Loading in a capture worked on the H200
with driver 580.159.04 (CUDA 13.0; ``benchmarks/results_2026-12-01/session14/probe_graph_capture_2.txt``).
"""
from __future__ import annotations

import ctypes
import functools
import sys
import threading
import weakref
from typing import Any

import torch

from ..ops import size_policy
from .function_swap import FunctionSwap

_lock = threading.Lock()
#: graphs whose capture began through the wrapper and has not ended; ``size_policy.CAPTURES.underway`` is
#: its size, copied there on every change (the per-call check reads an int, not the set)
_begun: "weakref.WeakSet[Any]" = weakref.WeakSet()


#: The first CUDA driver version (``cuDriverGetVersion``: 1000 * major + 10 * minor) that loads modules
#: during a stream capture.
LOADS_IN_CAPTURE = 12030


@functools.lru_cache(maxsize=None)
def driver_version() -> int:
    """The CUDA driver's version (``cuDriverGetVersion``, e.g. 13000 for 13.0), or 0 where it cannot be
    read. Read once, outside any capture (it needs no CUDA context)."""
    names = ("nvcuda.dll",) if sys.platform == "win32" else ("libcuda.so.1", "libcuda.so")
    for name in names:
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        version = ctypes.c_int(0)
        try:
            if lib.cuDriverGetVersion(ctypes.byref(version)) == 0:
                return version.value
        except AttributeError:
            pass
        return 0
    return 0


def _capture_begin(self: Any, *args: Any, **kwargs: Any) -> None:
    counted = driver_version() >= LOADS_IN_CAPTURE  # before the capture begins
    SWAP.original("CUDAGraph.capture_begin")(self, *args, **kwargs)
    if not counted:
        return
    with _lock:
        _begun.add(self)
        size_policy.CAPTURES.underway = len(_begun)


def _capture_end(self: Any, *args: Any, **kwargs: Any) -> None:
    try:
        SWAP.original("CUDAGraph.capture_end")(self, *args, **kwargs)
    finally:  # the capture is over whether or not it ended well
        with _lock:
            _begun.discard(self)
            size_policy.CAPTURES.underway = len(_begun)


SWAP = FunctionSwap([(torch.cuda.CUDAGraph, "capture_begin", _capture_begin),
                     (torch.cuda.CUDAGraph, "capture_end", _capture_end)])


def watch() -> None:
    """One more active patch: the wrappers are installed while there is any."""
    SWAP.acquire()


def unwatch() -> None:
    """One active patch fewer. With the last one gone the count restarts from zero: a capture still under
    way ends unseen, and should it outlive the patch, a later patch does not pay CUDA's query for it."""
    with _lock:
        SWAP.release()
        if not SWAP.installed:
            _begun.clear()
            size_policy.CAPTURES.underway = len(_begun)
