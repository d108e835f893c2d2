"""python -m tritonpatch check: runs every kernel against torch and reports."""
from __future__ import annotations

from tests.conftest import INTERPRET
from tritonpatch import selfcheck


def test_selfcheck_passes_and_prints_a_table(capsys):
    assert selfcheck.main(["check"]) == 0
    out = capsys.readouterr().out
    assert "torch " in out and "triton " in out
    for op in ("layer_norm", "softmax(dim=1)", "softmax(dim=1, long)", "linear_relu"):
        assert out.count(op + " ") == 3  # fp32, bf16, fp16
    assert out.count("softmax") == 9  # last dim, dim=1, a long dim=1
    assert "FAIL" not in out and "all checks passed" in out
    # the speed column: a ratio on a GPU; not taken under the interpreter (its speed says nothing of a GPU)
    checked = [line.rstrip(" |") for line in out.splitlines() if "PASS" in line]
    assert len(checked) == 15 and all(line.endswith("-" if INTERPRET else "x") for line in checked)


def test_selfcheck_fails_on_a_wrong_kernel(monkeypatch, capsys):
    from tritonpatch.ops import softmax as op
    real = op.softmax
    monkeypatch.setattr(op, "softmax", lambda x, dim, dtype=None: real(x, dim, dtype) * 1.001)
    assert selfcheck.main(["check"]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_selfcheck_usage():
    assert selfcheck.main([]) == 2
