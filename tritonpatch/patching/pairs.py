"""Finding Linear -> ReLU pairs in a model's own code, without running it and without editing it.

A pair is an ``nn.Linear`` whose output feeds a ReLU and nothing else. Fusing it changes what the
Linear returns (relu(x W^T + b) instead of x W^T + b), which is only correct where nothing else reads
the pre-activation. So pairs are proved from the source of each parent module's ``forward`` (its AST),
and accepted in three shapes only, where no other read of the pre-activation is possible:

* nested:      ``relu(self.fc(x))``, ``self.act(self.fc(x))``, ``self.fc(x).relu()``;
* consecutive: ``h = self.fc(x)`` and, as the very next statement, ``h = relu(h)`` (the name is rebound),
  ``return relu(h)``, or an in-place ReLU of ``h`` (``h.relu_()``, ``self.act(h)`` with
  ``inplace=True``), after which the pre-activation no longer exists anyway;
* ``nn.Sequential``: a Linear child directly followed by a ReLU child.

Here ``relu`` is any of ``F.relu``, ``torch.relu``, ``F.relu_``, ``torch.relu_``, ``Tensor.relu``,
``Tensor.relu_`` and ``nn.ReLU`` modules (Hugging Face's ``ACT2FN["relu"]`` is one). Anything else that
passes a Linear's output to a ReLU (``relu(h) + h``, a branch in between, ...) is a rejected candidate,
reported with its reason.

The fused Linear is then only allowed to fuse when it is called from an accepted call site: the plan
records the parent module, the code object and the line, and the patched Linear checks its caller's
frame on every call. A Linear called from anywhere else (another site, changed control flow) runs plain
PyTorch. The ReLU side needs no proof: a ReLU applied to an already-ReLU'd tensor changes nothing, so the
patched ReLU merely skips the work when handed the fused output.
"""
from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import overrides_forward
from . import relu_routing

#: The functional ReLUs, by object: torch's, and our wrappers of them (while another patch has them in).
RELU_FUNCTIONS = {id(F.relu): "relu", id(torch.relu): "relu", id(F.relu_): "relu_", id(torch.relu_): "relu_",
                  id(relu_routing._f_relu): "relu", id(relu_routing._torch_relu): "relu",
                  id(relu_routing._f_relu_): "relu_", id(relu_routing._torch_relu_): "relu_"}
RELU_METHODS = ("relu", "relu_")


@dataclasses.dataclass
class CallSite:
    """Where a fused Linear may be called from: this parent module, this code object, this line."""

    parent: nn.Module
    code: Any
    lineno: int | None  # None: any line (nn.Sequential's loop)
    #: instruction offset (a frame's ``f_lasti``) in ``code`` -> whether it lies on ``lineno``, learned
    #: per offset: ``f_lineno`` decodes the code's line table from its start on every read
    on_line: dict[int, bool] = dataclasses.field(default_factory=dict, repr=False, compare=False)


@dataclasses.dataclass
class Pair:
    """An accepted Linear -> ReLU pair."""

    linear_name: str
    linear: nn.Linear
    relu_label: str  # the ReLU module's qualified name, or the function as written (e.g. "F.relu")
    relu_module: nn.ReLU | None
    sites: list[CallSite]

    @property
    def name(self) -> str:
        return f"{self.linear_name}+{self.relu_label}"


@dataclasses.dataclass
class Rejected:
    name: str
    reason: str


def plain_linear(m: Any) -> bool:
    """An nn.Linear whose forward is nn.Linear's own."""
    return isinstance(m, nn.Linear) and not overrides_forward(type(m), nn.Linear) and "forward" not in m.__dict__


def plain_relu(m: Any) -> bool:
    """An nn.ReLU whose forward is nn.ReLU's own."""
    return isinstance(m, nn.ReLU) and not overrides_forward(type(m), nn.ReLU) and "forward" not in m.__dict__


class _Source:
    """The parsed forward of one module class: AST, code object, and how AST lines map to file lines."""

    def __init__(self, fn: Any) -> None:
        self.fn = fn
        self.code = fn.__code__
        lines, first = inspect.getsourcelines(fn)
        self.tree = ast.parse(textwrap.dedent("".join(lines)))
        self.line_offset = first - 1

    def lineno(self, node: ast.AST) -> int:
        return node.lineno + self.line_offset


_SOURCES: dict[Any, _Source | None] = {}
#: (parent class, its children's names and types) -> (code, accepted, rejected) in the parent's own terms.
_ANALYSES: dict[tuple, tuple[Any, list, list]] = {}


def _source(cls: type) -> _Source | None:
    fn = inspect.unwrap(cls.forward)
    if fn not in _SOURCES:
        try:
            _SOURCES[fn] = _Source(fn) if inspect.isfunction(fn) else None
        except (OSError, TypeError, SyntaxError, IndentationError):
            _SOURCES[fn] = None
    return _SOURCES[fn]


def _self_attr(node: ast.AST) -> str | None:
    """``self.<attr>`` -> attr."""
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
        return node.attr
    return None


def _resolve(node: ast.AST, scope: dict[str, Any]) -> Any:
    """Evaluate a dotted name (``F.relu``, ``torch.nn.functional.relu``) in ``scope``; None if not one."""
    if isinstance(node, ast.Name):
        return scope.get(node.id, getattr(__builtins__, node.id, None) if not isinstance(__builtins__, dict)
                         else __builtins__.get(node.id))
    if isinstance(node, ast.Attribute):
        base = _resolve(node.value, scope)
        return getattr(base, node.attr, None) if base is not None else None
    return None


class _Analyser:
    """Finds pairs in one parent module's forward.

    Its results depend on the class's source and on the types of the parent's children only, so they
    are expressed in the parent's own terms (``self.<attr>`` names, attribute names rather than module
    objects) and cached per (class, children); :func:`find_pairs` maps them onto each instance.
    """

    def __init__(self, parent: nn.Module, src: _Source) -> None:
        self.parent, self.src = parent, src
        self.scope = src.fn.__globals__
        self.accepted: list[tuple[str, str, str | None, int]] = []  # linear attr, label, relu attr, line
        self.rejected: list[Rejected] = []

    @staticmethod
    def qual(attr: str) -> str:
        """A child's name in the parent's terms; find_pairs replaces ``self.`` with the parent's name."""
        return f"self.{attr}"

    def linear_call(self, node: ast.AST) -> tuple[str, nn.Linear] | None:
        """``self.<linear>(...)`` -> (attr, module)."""
        if isinstance(node, ast.Call):
            attr = _self_attr(node.func)
            if attr is not None and plain_linear(getattr(self.parent, attr, None)):
                return attr, getattr(self.parent, attr)
        return None

    def relu_call(self, node: ast.AST) -> tuple[ast.AST, str, str | None, bool] | None:
        """A ReLU call -> (its tensor argument, label, the ReLU module's attribute or None, in place?)."""
        if not isinstance(node, ast.Call):
            return None
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr in RELU_METHODS and not node.args and not node.keywords:
            if not (isinstance(func.value, ast.Name) and func.value.id == "self"):
                return func.value, f"Tensor.{func.attr}", None, func.attr == "relu_"
        if len(node.args) != 1:
            return None
        attr = _self_attr(func)
        if attr is not None:
            m = getattr(self.parent, attr, None)
            if plain_relu(m) and not node.keywords:
                return node.args[0], self.qual(attr), attr, bool(m.inplace)
            return None
        kind = RELU_FUNCTIONS.get(id(_resolve(func, self.scope)))
        if kind is None:
            return None
        inplace = kind == "relu_"
        for kw in node.keywords:
            if kw.arg != "inplace" or not isinstance(kw.value, ast.Constant):
                return None
            inplace = inplace or bool(kw.value.value)
        return node.args[0], ast.unparse(func), None, inplace

    def accept(self, linear_attr: str, relu: tuple, node: ast.AST) -> None:
        self.accepted.append((linear_attr, relu[1], relu[2], self.src.lineno(node)))

    def run(self) -> None:
        tree = self.src.tree
        # Lines holding more than one call of the same Linear cannot be told apart at run time.
        per_line: dict[tuple[int, int], int] = {}
        for node in ast.walk(tree):
            hit = self.linear_call(node)
            if hit is not None:
                key = (id(hit[1]), self.src.lineno(node))
                per_line[key] = per_line.get(key, 0) + 1
        self.per_line = per_line
        for node in ast.walk(tree):
            relu = self.relu_call(node)
            if relu is not None:
                hit = self.linear_call(relu[0])
                if hit is not None:
                    self.check_line(hit, relu, node)
        for node in ast.walk(tree):
            for field in ("body", "orelse", "finalbody"):
                stmts = getattr(node, field, None)
                if isinstance(stmts, list):
                    self.consecutive(stmts)

    def check_line(self, hit: tuple[str, nn.Linear], relu: tuple, node: ast.AST) -> None:
        if self.per_line[(id(hit[1]), self.src.lineno(node))] > 1:
            self.rejected.append(Rejected(f"{self.qual(hit[0])}+{relu[1]}",
                                          "the Linear is called more than once on that line"))
        else:
            self.accept(hit[0], relu, node)

    def consecutive(self, stmts: list[ast.stmt]) -> None:
        for i, stmt in enumerate(stmts):
            if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
                    and isinstance(stmt.targets[0], ast.Name)):
                continue
            hit = self.linear_call(stmt.value)
            if hit is None:
                continue
            var = stmt.targets[0].id
            nxt = stmts[i + 1] if i + 1 < len(stmts) else None
            verdict = self.next_statement(var, nxt)
            if verdict is None:
                continue  # no ReLU of this Linear's output follows: not a candidate
            relu, reason = verdict
            label = f"{self.qual(hit[0])}+{relu[1]}"
            if reason is not None:
                self.rejected.append(Rejected(label, reason))
            else:
                self.check_line(hit, relu, stmt.value)
        # Candidates further away: a ReLU of the same name that is not the very next statement.
        for i, stmt in enumerate(stmts):
            if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
                    and isinstance(stmt.targets[0], ast.Name)):
                continue
            hit = self.linear_call(stmt.value)
            if hit is None:
                continue
            var = stmt.targets[0].id
            if self.next_statement(var, stmts[i + 1] if i + 1 < len(stmts) else None) is not None:
                continue
            for later in stmts[i + 2:]:
                relus = [r for r in map(self.relu_call, ast.walk(later))
                         if r is not None and isinstance(r[0], ast.Name) and r[0].id == var]
                if relus:
                    self.rejected.append(Rejected(f"{self.qual(hit[0])}+{relus[0][1]}",
                                                  f"the ReLU of {var!r} is not the next statement"))
                    break
                if any(isinstance(n, ast.Name) and n.id == var and isinstance(n.ctx, ast.Store)
                       for n in ast.walk(later)):
                    break

    def next_statement(self, var: str, stmt: ast.stmt | None) -> tuple[tuple, str | None] | None:
        """If ``stmt`` applies a ReLU to ``var``: (relu, None) when that is a safe pair, (relu, reason)
        when it is not; None when ``stmt`` applies no ReLU to ``var``."""
        if stmt is None:
            return None
        value = stmt.value if isinstance(stmt, (ast.Assign, ast.Expr, ast.Return)) else None
        relus = [r for r in map(self.relu_call, ast.walk(stmt))
                 if r is not None and isinstance(r[0], ast.Name) and r[0].id == var]
        if not relus:
            return None
        relu = relus[0]
        loads = sum(1 for n in ast.walk(stmt) if isinstance(n, ast.Name) and n.id == var
                    and isinstance(n.ctx, ast.Load))
        direct = value is not None and self.relu_call(value) is not None and self.relu_call(value)[0] is relu[0]
        if loads != 1 or not direct:
            return relu, f"the pre-activation {var!r} is used elsewhere"
        if relu[3] or isinstance(stmt, ast.Return):
            return relu, None
        if (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)
                and stmt.targets[0].id == var):
            return relu, None
        return relu, f"the pre-activation {var!r} stays alive after the ReLU"


def find_pairs(model: nn.Module) -> tuple[list[Pair], list[Rejected]]:
    """All provable Linear -> ReLU pairs in ``model``, and the rejected candidates with reasons."""
    names = {id(m): n for n, m in model.named_modules()}
    pairs: dict[int, Pair] = {}
    rejected: list[Rejected] = []

    def add(linear: nn.Linear, label: str, relu: nn.ReLU | None, site: CallSite) -> None:
        pair = pairs.get(id(linear))
        if pair is None:
            pair = pairs[id(linear)] = Pair(names[id(linear)], linear, label, relu, [])
        pair.sites.append(site)

    for parent_name, parent in model.named_modules():
        if isinstance(parent, nn.Sequential) and not overrides_forward(type(parent), nn.Sequential):
            children = list(parent)
            for a, b in zip(children, children[1:]):
                if plain_linear(a) and plain_relu(b):
                    if sum(c is a for c in children) > 1:
                        rejected.append(Rejected(f"{names[id(a)]}+{names[id(b)]}",
                                                 "the Linear appears twice in the Sequential"))
                        continue
                    add(a, names[id(b)], b, CallSite(parent, inspect.unwrap(nn.Sequential.forward).__code__, None))
            continue
        if type(parent).forward is nn.Module.forward or "forward" in parent.__dict__:
            continue
        children = list(parent.named_children())
        if not any(plain_linear(c) for _, c in children):
            continue
        key = (type(parent), tuple((n, type(c), getattr(c, "inplace", None), "forward" in c.__dict__)
                                   for n, c in children))
        found = _ANALYSES.get(key)
        if found is None:
            src = _source(type(parent))
            found = None
            if src is not None:
                analyser = _Analyser(parent, src)
                analyser.run()
                found = (src.code, analyser.accepted, analyser.rejected)
            _ANALYSES[key] = found or (None, [], [])
            found = _ANALYSES[key]
        code, accepted, local_rejected = found
        prefix = f"{parent_name}." if parent_name else ""
        rejected += [Rejected(r.name.replace("self.", prefix), r.reason) for r in local_rejected]
        for linear_attr, label, relu_attr, line in accepted:
            add(getattr(parent, linear_attr), label.replace("self.", prefix),
                getattr(parent, relu_attr) if relu_attr is not None else None, CallSite(parent, code, line))
    return list(pairs.values()), rejected
