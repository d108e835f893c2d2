"""compare(): run a model unpatched and patched on the same inputs and measure the difference per layer."""
from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from .patching.patch import Patch, active_patch
from .patching.records import LayerRecord, render_table


def tensors_in(obj: Any) -> list[torch.Tensor]:
    """The tensors in a (nested) model output: tensors, tuples, lists, dicts (incl. HF ModelOutput)."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        obj = list(obj.values())
    if isinstance(obj, (list, tuple)):
        return [t for item in obj for t in tensors_in(item)]
    return []


def errors(out: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    """(max |out - ref|, ||out - ref|| / ||ref||), in float64, over elements where both are not NaN.

    NaN in only one of the two counts as an infinite error.
    """
    a, b = out.detach().double(), ref.detach().double()
    nan_a, nan_b = torch.isnan(a), torch.isnan(b)
    if not torch.equal(nan_a, nan_b):
        return float("inf"), float("inf")
    keep = ~nan_a
    a, b = a[keep], b[keep]
    if a.numel() == 0:
        return 0.0, 0.0
    inf_a, inf_b = torch.isinf(a), torch.isinf(b)
    if not torch.equal(inf_a, inf_b) or not torch.equal(a[inf_a], b[inf_b]):
        return float("inf"), float("inf")
    a, b = a[~inf_a], b[~inf_b]
    if a.numel() == 0:
        return 0.0, 0.0
    diff = (a - b)
    ref_norm = b.norm().item()
    max_abs = diff.abs().max().item()
    rel = diff.norm().item() / ref_norm if ref_norm > 0 else diff.norm().item()
    return max_abs, rel


@dataclasses.dataclass
class LayerComparison:
    """One patched layer: its outputs in the patched run against the unpatched run.

    ``calls`` counts the layer's calls in the run; ``triton_calls`` how many of them ran on Triton.
    """

    name: str
    kind: str
    calls: int
    triton_calls: int
    max_abs_error: float
    rel_error: float


@dataclasses.dataclass
class Comparison:
    """The result of :func:`compare`.

    ``max_abs_error`` is max |patched - unpatched| over all model outputs; ``max_rel_error`` is the
    largest ||patched - unpatched|| / ||unpatched|| over the output tensors. With ``backward=True``,
    ``grad_max_abs_error`` is the largest |difference| over all parameter gradients, ``grad_rel_error``
    is ||all patched grads - all unpatched grads|| / ||all unpatched grads|| (one norm over every
    parameter: a gradient that is zero in exact arithmetic, such as attention's key bias, is all
    rounding noise and has no meaningful relative error of its own), and ``grads`` lists
    (parameter name, max abs, rel) per parameter.
    """

    max_abs_error: float
    max_rel_error: float
    layers: list[LayerComparison]
    grad_max_abs_error: float | None = None
    grad_rel_error: float | None = None
    grads: list[tuple[str, float, float]] = dataclasses.field(default_factory=list)

    def __str__(self) -> str:
        rows = [[r.name or "<root>", r.kind, f"{r.triton_calls}/{r.calls}", f"{r.max_abs_error:.3e}",
                 f"{r.rel_error:.3e}"] for r in self.layers]
        lines = [render_table(["layer", "kind", "triton/calls", "max abs err", "rel err"], rows),
                 f"model outputs: max abs err {self.max_abs_error:.3e}, max rel err {self.max_rel_error:.3e}"]
        if self.grad_max_abs_error is not None:
            lines.append(f"parameter grads: max abs err {self.grad_max_abs_error:.3e}, "
                         f"rel err {self.grad_rel_error:.3e} over {len(self.grads)} parameters")
        return "\n".join(lines)


class _Recorder:
    """Collects each patched layer's outputs, in call order, for one run."""

    def __init__(self) -> None:
        self.outputs: dict[int, tuple[LayerRecord, list[torch.Tensor]]] = {}

    def __call__(self, record: LayerRecord, out: Any) -> None:
        entry = self.outputs.setdefault(id(record), (record, []))
        entry[1].extend(t.detach().clone() for t in tensors_in(out))


def _rng_state() -> tuple[torch.Tensor, list[torch.Tensor] | None]:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    return torch.get_rng_state(), cuda


def _set_rng_state(state: tuple[torch.Tensor, list[torch.Tensor] | None]) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state_all(state[1])


def compare(model: nn.Module, *args: Any, backward: bool = False, **kwargs: Any) -> Comparison:
    """Run ``model(*args, **kwargs)`` unpatched, then patched, and compare outputs layer by layer.

    Both runs start from the same RNG state (so dropout draws the same masks) and the model's
    train/eval mode is left as it is. The unpatched run is the patch's reference mode: every patched
    layer runs its original PyTorch code, so it computes exactly what the unpatched model computes,
    while every patched layer's output (and each routed softmax call's) is captured in both runs.
    If the model is not patched, it is patched for the comparison and restored afterwards; if it is,
    its patch's counts are left as they were.

    With ``backward=True``, a fixed random cotangent is drawn for each floating output and the
    parameter gradients of sum(output * cotangent) are compared too (``.grad`` is not touched).
    """
    patch = active_patch(model)
    own = patch is None
    if own:
        patch = Patch(model)
    saved_counts = [(r, r.triton_calls, r.fallback_calls, dict(r.fallback_reasons)) for r in patch.layers]
    start = _rng_state()
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad] if backward else []
    cotangents: list[torch.Tensor] | None = None

    def run(reference: bool) -> tuple[list[torch.Tensor], _Recorder, list[torch.Tensor | None]]:
        nonlocal cotangents
        recorder = _Recorder()
        patch.reference, patch.capture = reference, recorder
        _set_rng_state(start)
        try:
            with torch.set_grad_enabled(backward or torch.is_grad_enabled()):
                outs = tensors_in(model(*args, **kwargs))
        finally:
            patch.reference, patch.capture = False, None
        grads: list[torch.Tensor | None] = []
        if backward:
            diff = [o for o in outs if o.is_floating_point() and o.requires_grad]
            if cotangents is None:
                gen = torch.Generator().manual_seed(0)
                cotangents = [torch.randn(o.shape, generator=gen, dtype=torch.float32).to(o.device)
                              for o in diff]
            loss = sum((o.float() * c).sum() for o, c in zip(diff, cotangents))
            if params and diff:
                grads = list(torch.autograd.grad(loss, [p for _, p in params], allow_unused=True))
        return [o.detach() for o in outs], recorder, grads

    try:
        ref_outs, ref_rec, ref_grads = run(reference=True)
        counts_before = {id(r): r.triton_calls + r.fallback_calls for r in patch.layers}
        triton_before = {id(r): r.triton_calls for r in patch.layers}
        outs, rec, grads = run(reference=False)
    finally:
        _set_rng_state(start)
        if own:
            patch.unpatch()

    out_errs = [errors(o, r) for o, r in zip(outs, ref_outs) if o.is_floating_point()]
    rows = []
    for key, (record, got) in rec.outputs.items():
        want = ref_rec.outputs.get(key, (record, []))[1]
        pairs = [errors(a, b) for a, b in zip(got, want)]
        if len(got) != len(want):
            pairs.append((float("inf"), float("inf")))
        rows.append(LayerComparison(
            record.name, record.kind,
            calls=record.triton_calls + record.fallback_calls - counts_before.get(id(record), 0),
            triton_calls=record.triton_calls - triton_before.get(id(record), 0),
            max_abs_error=max((e[0] for e in pairs), default=0.0),
            rel_error=max((e[1] for e in pairs), default=0.0)))
    result = Comparison(max((e[0] for e in out_errs), default=0.0),
                        max((e[1] for e in out_errs), default=0.0), rows)
    if backward:
        grad_rows, both = [], []
        for (name, _), g, r in zip(params, grads, ref_grads):
            if g is None or r is None:
                continue
            grad_rows.append((name, *errors(g, r)))
            both.append((g.flatten(), r.flatten()))
        result.grads = grad_rows
        result.grad_max_abs_error = max((g[1] for g in grad_rows), default=0.0)
        result.grad_rel_error = (errors(torch.cat([g for g, _ in both]), torch.cat([r for _, r in both]))[1]
                                 if both else 0.0)
    if not own:
        saved = {id(s[0]) for s in saved_counts}
        for record in patch.layers:
            if id(record) not in saved:
                record.reset()
        for record, t, f, reasons in saved_counts:
            record.triton_calls, record.fallback_calls = t, f
            record.fallback_reasons.clear()
            record.fallback_reasons.update(reasons)
    return result
