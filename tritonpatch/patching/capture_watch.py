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
"""
from __future__ import annotations

import threading
import weakref
from typing import Any

import torch

from ..ops import size_policy
from .function_swap import FunctionSwap

_lock = threading.Lock()
#: graphs whose capture began through the wrapper and has not ended
_begun: "weakref.WeakSet[Any]" = weakref.WeakSet()


def _capture_begin(self: Any, *args: Any, **kwargs: Any) -> None:
    SWAP.original("CUDAGraph.capture_begin")(self, *args, **kwargs)
    with _lock:
        if self not in _begun:
            _begun.add(self)
            size_policy.CAPTURES.underway += 1


def _capture_end(self: Any, *args: Any, **kwargs: Any) -> None:
    try:
        SWAP.original("CUDAGraph.capture_end")(self, *args, **kwargs)
    finally:  # the capture is over whether or not it ended well
        with _lock:
            if self in _begun:
                _begun.discard(self)
                size_policy.CAPTURES.underway -= 1


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
            size_policy.CAPTURES.underway = 0
