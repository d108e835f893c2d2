"""Finding what to patch in a model: the targets of each kind, and the candidates left alone (with why)."""
from __future__ import annotations

import dataclasses

from torch import nn

from ..layers import overrides_forward


@dataclasses.dataclass
class Skipped:
    """A candidate the plan leaves alone, and why (shown in the report)."""

    name: str
    kind: str
    reason: str


def layer_norm_targets(model: nn.Module) -> tuple[list[tuple[str, nn.LayerNorm]], list[Skipped]]:
    """The LayerNorms to swap: type exactly ``nn.LayerNorm`` or a subclass that keeps its ``forward``.

    Subclasses with their own ``forward`` (e.g. channels-first variants) and instances with a
    ``forward`` attribute of their own are skipped, with the reason.
    """
    targets: list[tuple[str, nn.LayerNorm]] = []
    skipped: list[Skipped] = []
    for name, m in model.named_modules():
        if not isinstance(m, nn.LayerNorm):
            continue
        if overrides_forward(type(m), nn.LayerNorm):
            skipped.append(Skipped(name, "layer_norm", f"{type(m).__qualname__} overrides forward"))
        elif "forward" in m.__dict__:
            skipped.append(Skipped(name, "layer_norm", "the instance has its own forward"))
        else:
            targets.append((name, m))
    return targets, skipped


def attention_note(model: nn.Module) -> str | None:
    """A note for the report when a Hugging Face model's attention calls no softmax (SDPA, flash)."""
    config = getattr(model, "config", None)
    impl = getattr(config, "_attn_implementation", None)
    if isinstance(impl, str) and impl != "eager":
        return (f"attention runs through {impl!r}, which calls no softmax, so none is routed; "
                "build the model with attn_implementation=\"eager\" (or call "
                "model.set_attn_implementation(\"eager\")) to route it")
    return None
