"""Peer libraries for the benchmark suite, imported defensively.

The suite compares tritonpatch with two pure-Python peers, shipped as wheels in ``.whl/`` (git-ignored,
carried to the GPU machine) and installed by ``benchmarks/run_suite.sh`` one wheel per folder under
``$SUITE_PEERS_DIR`` (default ``/tmp/site``):

- Liger-Kernel (``liger_kernel``): ``LigerLayerNormFunction`` and ``LigerSoftmaxFunction`` (last dim
  only), called directly so that the Triton implementation runs (its dispatcher could pick another).
  It has no Linear+ReLU.
- triformer (the seed project): the newest wheel for LayerNorm (``Fast_Layernorm``) and softmax
  (``SoftmaxFunction``); 3.x dropped ``TritonLinear``, so Linear+ReLU uses the newest 2.x wheel that
  has it (``mlp.TritonLinearFunction``). Two versions of one package cannot share ``sys.path``, so
  every triformer is loaded from its folder under an alias (``triformer_3_0_7``). triformer 2.x's
  ``mlp.py`` imports torchvision without declaring it: when torchvision is missing, empty stand-in
  modules are present only while that file is imported (it uses nothing from them).

Without ``$SUITE_PEERS_DIR`` a peer installed in the environment is used. Nothing here raises: a peer
that cannot be imported is a :class:`Peer` whose ``reason`` says why, and the suite reports its rows as
``unavailable: <reason>``.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import re
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path

SITE = Path(os.environ.get("SUITE_PEERS_DIR", "/tmp/site"))


@dataclass
class Peer:
    name: str
    version: str | None = None
    reason: str | None = None          # None: available
    api: dict = field(default_factory=dict)
    note: str = ""

    @property
    def available(self) -> bool:
        return self.reason is None

    def describe(self) -> str:
        if self.available:
            return f"{self.version or '?'}" + (f" ({self.note})" if self.note else "")
        return f"unavailable: {self.reason}"


_CACHE: dict[str, Peer] = {}


def _short(e: BaseException) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {msg}"[:200]


def _dists(project: str) -> list[tuple[tuple[int, ...], str, Path]]:
    """(version tuple, version, install root) of each wheel of ``project`` under SITE, newest first."""
    found = []
    if SITE.is_dir():
        for root in SITE.iterdir():
            for info in root.glob("*.dist-info") if root.is_dir() else ():
                m = re.fullmatch(r"(.+)-([0-9][^-]*)\.dist-info", info.name)
                if m and m.group(1).lower().replace("-", "_") == project:
                    ver = m.group(2)
                    key = tuple(int(p) for p in re.findall(r"\d+", ver))
                    found.append((key, ver, root))
    return sorted(found, reverse=True)


def _load_alias(package_dir: Path, alias: str) -> types.ModuleType:
    """Import the package in ``package_dir`` under the module name ``alias`` (its relative imports follow)."""
    spec = importlib.util.spec_from_file_location(alias, package_dir / "__init__.py",
                                                  submodule_search_locations=[str(package_dir)])
    if spec is None or spec.loader is None:
        raise ImportError(f"no package in {package_dir}")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[alias] = mod
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        for name in [n for n in sys.modules if n == alias or n.startswith(alias + ".")]:
            del sys.modules[name]
        raise
    return mod


def liger() -> Peer:
    """Liger-Kernel: ``layer_norm`` (X, W, B, eps) and ``softmax`` (x, last dim) autograd Functions."""
    if "liger" in _CACHE:
        return _CACHE["liger"]
    peer = Peer("liger")
    try:
        dists = _dists("liger_kernel")
        if dists:
            _, peer.version, root = dists[0]
            if str(root) not in sys.path:
                sys.path.insert(0, str(root))
        ln = importlib.import_module("liger_kernel.ops.layer_norm")
        sm = importlib.import_module("liger_kernel.ops.softmax")
        peer.api = {"layer_norm": ln.LigerLayerNormFunction.apply, "softmax": sm.LigerSoftmaxFunction.apply}
        if peer.version is None:
            from importlib.metadata import version
            peer.version = version("liger-kernel")
    except BaseException as e:  # noqa: BLE001 (a peer must never stop the suite)
        peer.reason = _short(e)
    _CACHE["liger"] = peer
    return peer


def triformer(want: str) -> Peer:
    """The newest triformer that has ``want`` ("layer_norm"/"softmax": any version; "linear": 2.x mlp)."""
    key = f"triformer:{want}"
    if key in _CACHE:
        return _CACHE[key]
    peer = Peer("triformer")
    try:
        dists = _dists("triformer")
        if want == "linear":
            dists = [d for d in dists if (d[2] / "triformer" / "mlp.py").exists()]
        if dists:
            _, peer.version, root = dists[0]
            alias = "triformer_" + re.sub(r"\W", "_", peer.version)
            mod = sys.modules.get(alias)
            if mod is None:
                mod = _load_with_torchvision_stub(root / "triformer", alias, peer)
        elif SITE.is_dir() and any(SITE.iterdir()):
            raise ImportError(f"no triformer wheel{' with TritonLinear' if want == 'linear' else ''} "
                              f"installed under {SITE}")
        else:
            mod = _load_with_torchvision_stub(None, "triformer", peer)
            from importlib.metadata import version
            peer.version = version("triformer")
        name = mod.__name__
        if want == "layer_norm":
            peer.api = {"layer_norm": importlib.import_module(name + ".layernorm").Fast_Layernorm.apply}
        elif want == "softmax":
            peer.api = {"softmax": importlib.import_module(name + ".softmax").SoftmaxFunction.apply}
        else:
            peer.api = {"linear_relu": importlib.import_module(name + ".mlp").TritonLinearFunction.apply}
    except BaseException as e:  # noqa: BLE001
        peer.reason = _short(e)
    _CACHE[key] = peer
    return peer


def _load_with_torchvision_stub(package_dir: Path | None, alias: str, peer: Peer) -> types.ModuleType:
    """Import triformer (from ``package_dir`` as ``alias``, or the installed one); if it needs torchvision
    and torchvision is missing, empty modules stand in for it during the import only."""
    stubbed: list[str] = []
    try:
        importlib.import_module("torchvision")
    except Exception:  # noqa: BLE001
        for name in ("torchvision", "torchvision.transforms", "torchvision.datasets"):
            if name not in sys.modules:
                sys.modules[name] = types.ModuleType(name)
                stubbed.append(name)
    try:
        mod = _load_alias(package_dir, alias) if package_dir else importlib.import_module(alias)
        if package_dir:
            for sub in ("layernorm", "softmax", "mlp"):
                if (package_dir / f"{sub}.py").exists():
                    importlib.import_module(f"{alias}.{sub}")
    finally:
        for name in stubbed:
            sys.modules.pop(name, None)
    if stubbed and f"{alias}.mlp" in sys.modules:
        peer.note = "its mlp.py imports torchvision, which is missing here: stubbed for the import"
    return mod


def describe_all() -> dict[str, str]:
    """Version or unavailability of each peer that was asked for so far (for meta.json)."""
    out = {}
    for key, p in _CACHE.items():
        out[key.replace("triformer:", "triformer ")] = p.describe()
    return out
