"""What the patch report is made of: one :class:`LayerRecord` per patched layer, counted per call."""
from __future__ import annotations

import dataclasses
import logging

from ..ops import linear_relu as linear_relu_op
from ..ops import size_policy

logger = logging.getLogger("tritonpatch")

#: Fallback reasons that are the library's own measured choices, logged at INFO rather than WARNING.
EXPECTED_REASONS = frozenset({size_policy.REASON, linear_relu_op.CUBLASLT_NOTE})

#: The kinds of patched layer, in report order.
KINDS = ("layer_norm", "softmax", "linear_relu")


@dataclasses.dataclass
class LayerRecord:
    """One patched layer and what its calls did.

    Attributes:
        name: qualified module name (``""`` for the root); a Linear+ReLU pair is ``"<linear>+<relu>"``.
        kind: ``"layer_norm"``, ``"softmax"`` or ``"linear_relu"``.
        triton_calls: calls that ran the Triton kernel.
        fallback_calls: calls that ran PyTorch instead.
        fallback_reasons: reason text -> number of fallback calls for that reason.
    """

    name: str
    kind: str
    triton_calls: int = 0
    fallback_calls: int = 0
    fallback_reasons: dict[str, int] = dataclasses.field(default_factory=dict)

    def count(self, reason: str | None) -> None:
        """Count one call: on Triton when ``reason`` is None, else a fallback for that reason.

        The first fallback of this layer for each reason is logged on the ``tritonpatch`` logger: as a
        warning, or at INFO for the library's own measured choices (:data:`EXPECTED_REASONS`).
        """
        if reason is None:
            self.triton_calls += 1
            return
        self.fallback_calls += 1
        seen = self.fallback_reasons.get(reason)
        self.fallback_reasons[reason] = (seen or 0) + 1
        if seen is None:
            # a measured choice (torch is faster, cuBLASLt's fused epilogue) is information; anything
            # else (dtype, device, layout, ...) is worth a warning
            level = logging.INFO if reason in EXPECTED_REASONS else logging.WARNING
            logger.log(level, "%s %r falls back to PyTorch: %s", self.kind, self.name, reason)

    def reset(self) -> None:
        """Set the counts back to zero (the record itself stays)."""
        self.triton_calls = 0
        self.fallback_calls = 0
        self.fallback_reasons.clear()


def render_table(header: list[str], rows: list[list[str]]) -> str:
    """Render rows as a plain-text table with left-aligned columns."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])
