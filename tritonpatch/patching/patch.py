"""The Patch handle: apply a plan to a live model, count what runs, restore the model exactly."""
from __future__ import annotations

import logging
import os
import threading
import weakref
from typing import Any, Callable

from torch import nn

from .. import layers
from . import capture_watch, pairs, plan, relu_routing, softmax_routing
from .records import KINDS, LayerRecord, render_table

logger = logging.getLogger("tritonpatch")

#: model -> its active Patch.
_ACTIVE: "weakref.WeakKeyDictionary[nn.Module, Patch]" = weakref.WeakKeyDictionary()
_active_lock = threading.Lock()


class AlreadyPatchedError(RuntimeError):
    """Raised when patching a model (or a module inside it) that an active patch already holds."""


def disabled_by_env() -> bool:
    """True when ``TRITONPATCH_DISABLE=1``: :func:`patch` then changes nothing (the kill switch)."""
    return os.environ.get("TRITONPATCH_DISABLE", "0") not in ("", "0")


class Patch:
    """A model patched in place, and the report of what ran where.

    Made by :func:`tritonpatch.patch`. Use it as a context manager or call :meth:`unpatch`.

    Attributes:
        model: the patched module.
        layers: one :class:`LayerRecord` per patched layer (softmax records appear at the first call).
        skipped: candidates left alone, with the reason.
        notes: remarks for the report (e.g. why no softmax can be routed).
        reference: while True, every patched layer runs its original PyTorch code and nothing is
            counted (used by :func:`tritonpatch.compare`).
        capture: while set, called as ``capture(record, output)`` after each patched call.
    """

    def __init__(self, model: nn.Module, *, layer_norm: bool = True, softmax: bool = True,
                 linear_relu: bool = True) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"tritonpatch.patch() takes a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.options = {"layer_norm": layer_norm, "softmax": softmax, "linear_relu": linear_relu}
        self.layers: list[LayerRecord] = []
        self.skipped: list[plan.Skipped] = []
        self.notes: list[str] = []
        self.reference = False
        self.capture: Callable[[LayerRecord, Any], None] | None = None
        self.disabled = disabled_by_env()
        self.active = False
        self._restore: list[Callable[[], None]] = []
        self._softmax_records: dict[str, LayerRecord] = {}
        if self.disabled:
            self.notes.append("tritonpatch is disabled by TRITONPATCH_DISABLE=1: nothing was patched")
            return
        with _active_lock:
            self._check_not_patched()
            _ACTIVE[model] = self
            self.active = True
        try:
            self._apply()
        except BaseException:
            self.unpatch()
            raise

    @property
    def plain(self) -> bool:
        """True when calls just run and count (no reference mode, no capture): the patched layers' fast path."""
        return not self.reference and self.capture is None

    # -- applying and restoring -------------------------------------------------------------------
    def _check_not_patched(self) -> None:
        holder = _ACTIVE.get(self.model)
        if holder is None:
            for m in self.model.modules():
                if layers.is_patched(m) or softmax_routing.routed(m):
                    state = layers.STATES.get(m)
                    holder = state.patch if state is not None else None
                    break
            else:
                return
        by = f" (by a patch of {type(holder.model).__name__})" if holder is not None else ""
        raise AlreadyPatchedError(
            f"{type(self.model).__name__} is already patched by tritonpatch{by}; unpatch it first")

    def _apply(self) -> None:
        model = self.model
        # count CUDA graph captures while patched: the size policy does not apply inside one
        capture_watch.watch()
        self._restore.append(capture_watch.unwatch)
        if self.options["layer_norm"]:
            targets, skipped = plan.layer_norm_targets(model)
            self.skipped += skipped
            for name, m in targets:
                self._swap(m, layers.LayerNormBehaviour, LayerRecord(name, "layer_norm"))
        if self.options["linear_relu"]:
            self._fuse_linear_relu()
        if self.options["softmax"]:
            self._route_softmax()
        logger.info("patched %s: %d layers", type(model).__name__, len(self.layers))

    def _swap(self, module: nn.Module, behaviour: type, record: LayerRecord | None,
              sites: list | None = None) -> None:
        """Give ``module`` the patched class of ``behaviour``; register how to undo it.

        ``record`` None: the module only changes behaviour (a pair's ReLU) and has no record.
        """
        original = type(module)
        if record is not None:
            layers.STATES[module] = layers.LayerState(record, self, sites or [])
            self.layers.append(record)
        module.__class__ = layers.patched_class(original, behaviour)

        def restore() -> None:
            module.__class__ = original
            layers.STATES.pop(module, None)
        self._restore.append(restore)

    def _fuse_linear_relu(self) -> None:
        found, rejected = pairs.find_pairs(self.model)
        self.skipped += [plan.Skipped(r.name, "linear_relu", r.reason) for r in rejected]
        relus: set[int] = set()
        functional = False
        for pair in found:
            self._swap(pair.linear, layers.LinearReluBehaviour, LayerRecord(pair.name, "linear_relu"),
                       pair.sites)
            if pair.relu_module is None:
                functional = True
            elif id(pair.relu_module) not in relus:
                relus.add(id(pair.relu_module))
                self._swap(pair.relu_module, layers.ReluBehaviour, None)
        if functional:
            relu_routing.SWAP.acquire()
            self._restore.append(relu_routing.SWAP.release)

    def _route_softmax(self) -> None:
        names = {id(m): name for name, m in self.model.named_modules()}
        modules = list(self.model.modules())

        def state_for(m: nn.Module) -> Callable[[], layers.LayerState]:
            name = names[id(m)]
            made: list[layers.LayerState] = []

            def state() -> layers.LayerState:
                # made on the module's first softmax call (its record joins the report then), then the same
                # one: a kernel that failed here stays failed for the module, as for a patched module
                if not made:
                    made.append(layers.LayerState(self._softmax_record(name), self))
                return made[0]
            return state
        softmax_routing.add(modules, state_for)
        self._restore.append(lambda: softmax_routing.remove(modules))
        note = plan.attention_note(self.model)
        if note:
            self.notes.append(note)

    def _softmax_record(self, name: str) -> LayerRecord:
        record = self._softmax_records.get(name)
        if record is None:
            record = self._softmax_records.setdefault(name, LayerRecord(name, "softmax"))
            if record not in self.layers:
                self.layers.append(record)
        return record

    def unpatch(self) -> None:
        """Restore the model exactly as it was before patching. Safe to call more than once."""
        while self._restore:
            self._restore.pop()()
        with _active_lock:
            if _ACTIVE.get(self.model) is self:
                del _ACTIVE[self.model]
        self.active = False

    def __enter__(self) -> "Patch":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.unpatch()

    # -- the report -------------------------------------------------------------------------------
    def __repr__(self) -> str:
        state = "disabled" if self.disabled else ("active" if self.active else "restored")
        return f"<tritonpatch.Patch of {type(self.model).__name__}, {len(self.layers)} layers, {state}>"

    def __str__(self) -> str:
        state = "disabled" if self.disabled else ("active" if self.active else "restored")
        triton = sum(r.triton_calls for r in self.layers)
        fallback = sum(r.fallback_calls for r in self.layers)
        lines = [f"tritonpatch: {type(self.model).__name__} ({state}): {len(self.layers)} layers, "
                 f"{triton} Triton calls, {fallback} fallbacks"]
        if self.layers:
            order = {k: i for i, k in enumerate(KINDS)}
            rows = []
            for r in sorted(self.layers, key=lambda r: order.get(r.kind, len(order))):
                why = "; ".join(f"{reason} (x{n})" for reason, n in r.fallback_reasons.items())
                rows.append([r.name or "<root>", r.kind, str(r.triton_calls), str(r.fallback_calls), why])
            lines.append(render_table(["layer", "kind", "triton", "fallback", "fallback reasons"], rows))
        if self.options["softmax"] and not self.disabled and not self._softmax_records:
            lines.append("softmax: no call routed yet")
        for s in self.skipped:
            lines.append(f"left alone: {s.name} ({s.kind}): {s.reason}")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def patch(model: nn.Module, *, layer_norm: bool = True, softmax: bool = True,
          linear_relu: bool = True) -> Patch:
    """Patch ``model`` in place: its LayerNorms, softmax calls and Linear+ReLU pairs run on Triton.

    Nothing is copied: every patched module keeps its identity, Parameters and buffers. Each call
    checks its input and runs PyTorch instead when Triton cannot take it, counting the reason.
    Returns a :class:`Patch`; use it as ``with tritonpatch.patch(model) as p:`` or call
    ``p.unpatch()``. Raises :class:`AlreadyPatchedError` if the model is already patched, and
    ``TypeError`` if ``model`` is not an ``nn.Module``.
    """
    return Patch(model, layer_norm=layer_norm, softmax=softmax, linear_relu=linear_relu)


def unpatch(model: nn.Module) -> bool:
    """Restore a model patched without keeping the handle. Returns False if it was not patched."""
    p = _ACTIVE.get(model)
    if p is None:
        return False
    p.unpatch()
    return True


def active_patch(model: nn.Module) -> Patch | None:
    """The active Patch of ``model``, or None."""
    return _ACTIVE.get(model)
