"""Routing softmax calls made by a patched model to Triton, and leaving every other call alone.

Softmax is a function, not a module, so it is routed rather than swapped. While at least one patch with
softmax enabled is active, ``torch.nn.functional.softmax``, ``torch.softmax`` and ``torch.Tensor.softmax``
are replaced by thin wrappers (``nn.Softmax`` calls ``F.softmax``, so it is covered). A wrapper decides
per call:

* Whose call is it? It walks up the Python stack to the nearest frame whose ``self`` (or ``module``,
  the first argument of Hugging Face's ``eager_attention_forward``) is a module of a patched model. That
  module names the call in the report (e.g. ``encoder.layer.0.attention.self``). The stack is per
  thread, so two threads running two patched models never see each other's calls, and a call made
  outside any patched model (in the training loop, in another model) finds no such frame.
* No patched module on the stack: the original function runs, so the result is torch's, bitwise.

The last patch to leave puts the original function objects back (identity, not equivalent wrappers).
"""
from __future__ import annotations

import sys
import threading
from typing import Any, Callable

import torch
import torch.nn.functional as F

from .. import layers
from ..ops import library
from .function_swap import FunctionSwap


class _Busy(threading.local):
    """Per thread: True while a routed softmax call runs (a class default, so reading never raises)."""

    busy = False


_tls = _Busy()
#: ``torch.compiler.is_compiling`` (the same function: Dynamo recognises it by identity), bound once.
_is_compiling = torch.compiler.is_compiling

#: id(module) -> (module, factory of its softmax LayerState); every module of every patched model.
_OWNERS: dict[int, tuple[torch.nn.Module, Callable[[], layers.LayerState]]] = {}

#: first-argument names that identify the module a frame works for.
_SELF_NAMES = ("self", "module")
_code_self_name: dict[Any, str | None] = {}


def _self_name(code: Any) -> str | None:
    """The first argument's name of ``code`` if it is one of _SELF_NAMES, cached per code object."""
    try:
        return _code_self_name[code]
    except KeyError:
        name = code.co_varnames[0] if code.co_argcount else None
        found = name if name in _SELF_NAMES else None
        _code_self_name[code] = found
        return found


def _owner_state() -> layers.LayerState | None:
    """The LayerState of the nearest patched module on this thread's stack, or None."""
    frame = sys._getframe(3)  # skip _owner_state, _route, the wrapper
    owners = _OWNERS
    while frame is not None:
        name = _self_name(frame.f_code)
        if name is not None:
            obj = frame.f_locals.get(name)
            hit = owners.get(id(obj))
            if hit is not None and hit[0] is obj:
                return hit[1]()
        frame = frame.f_back
    return None


def _route(x: Any, dim: Any, dtype: Any, call_torch: Callable[[], torch.Tensor]) -> torch.Tensor:
    """Send one softmax call to the patched behaviour if a patched model made it, else to torch."""
    if _is_compiling():
        # Tracing: there is no Python stack of the model to find the calling module on, so every call
        # traced while a patch is active that the custom op can take goes to it (nothing is counted)
        if library.traced_unsupported("softmax", x, dim, dtype) is None:
            return library.softmax(x, dim, dtype)
        return call_torch()
    if _tls.busy or type(x) is not torch.Tensor:
        # our own fallback's inner call, or a tensor subclass: torch's softmax
        return call_torch()
    state = _owner_state()
    if state is None:
        return call_torch()

    def on_torch() -> torch.Tensor:
        _tls.busy = True  # F.softmax calls Tensor.softmax: that inner call is torch's, not routed
        try:
            return call_torch()
        finally:
            _tls.busy = False

    return layers.softmax_behaviour(state, x, dim, dtype, on_torch)


def _f_softmax(input: torch.Tensor, dim: int | None = None, _stacklevel: int = 3,  # noqa: A002
               dtype: torch.dtype | None = None) -> torch.Tensor:
    if dim is not None and type(input) is torch.Tensor:
        # F.softmax with a dim is Tensor.softmax: call that original directly, so a fallback does not go
        # through the Tensor.softmax wrapper a second time
        method = SWAP.original("Tensor.softmax")
        return _route(input, dim, dtype, lambda: method(input, dim, dtype=dtype))
    original = SWAP.original("torch.nn.functional.softmax")  # dim=None (legacy warning) or a subclass
    return _route(input, dim, dtype, lambda: original(input, dim, _stacklevel, dtype))


def _torch_softmax(input: torch.Tensor, dim: Any, dtype: torch.dtype | None = None,  # noqa: A002
                   **kwargs: Any) -> torch.Tensor:
    original = SWAP.original("torch.softmax")
    if kwargs:
        return original(input, dim, dtype=dtype, **kwargs)
    return _route(input, dim, dtype, lambda: original(input, dim, dtype=dtype))


def _tensor_softmax(self: torch.Tensor, dim: Any, dtype: torch.dtype | None = None) -> torch.Tensor:
    original = SWAP.original("Tensor.softmax")
    return _route(self, dim, dtype, lambda: original(self, dim, dtype=dtype))


_f_softmax.__doc__ = F.softmax.__doc__
_torch_softmax.__doc__ = torch.softmax.__doc__
_tensor_softmax.__doc__ = torch.Tensor.softmax.__doc__

SWAP = FunctionSwap([(F, "softmax", _f_softmax), (torch, "softmax", _torch_softmax),
                     (torch.Tensor, "softmax", _tensor_softmax)])


def add(modules: list[torch.nn.Module],
        state_for: Callable[[torch.nn.Module], Callable[[], layers.LayerState]]) -> None:
    """Route softmax calls made by ``modules`` (all modules of one patched model).

    ``state_for(module)`` gives a callable returning that module's softmax LayerState (made on first use).
    """
    for m in modules:
        _OWNERS[id(m)] = (m, state_for(m))
    SWAP.acquire()


def remove(modules: list[torch.nn.Module]) -> None:
    """Stop routing for ``modules``; the last patch to leave restores the original functions."""
    for m in modules:
        hit = _OWNERS.get(id(m))
        if hit is not None and hit[0] is m:
            del _OWNERS[id(m)]
    SWAP.release()


def routed(module: torch.nn.Module) -> bool:
    """True when softmax calls made by ``module`` are routed by an active patch."""
    hit = _OWNERS.get(id(module))
    return hit is not None and hit[0] is module
