"""The integration tests themselves: checks that cannot silently pass."""
import ast
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent


def test_every_zip_is_strict():
    """zip() stops at the shorter list: a response with fewer results than the
    golden would compare nothing and pass. Every zip() here must say strict=True
    (itertools.pairwise for neighbours)."""
    bad = []
    for p in sorted(HERE.glob("*.py")):
        for node in ast.walk(ast.parse(p.read_text(), str(p))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id == "zip"
                    and not any(k.arg == "strict" and isinstance(k.value, ast.Constant)
                                and k.value.value is True for k in node.keywords)):
                bad.append(f"{p.name}:{node.lineno}")
    assert not bad, f"zip() without strict=True: {', '.join(bad)}"


def test_no_unconditional_skips():
    """Skips go through conftest.require (a failure in make test and CI) or
    conftest.optional (a counted skip); a bare pytest.skip / skipif / importorskip
    would let a test pass by not running, uncounted."""
    bad = []
    for p in sorted(HERE.glob("*.py")):
        if p.name in ("conftest.py", "test_meta.py"):
            continue
        text = p.read_text()
        for needle in ("pytest.skip(", "mark.skipif", "importorskip", "mark.skip(", "mark.xfail"):
            if needle in text:
                bad.append(f"{p.name}: {needle}")
        # pytest.xfail only for work pending on an open issue, said so ("PENDING: ..."),
        # and counted as pending in the closing line
        for m in re.finditer(r"pytest\.xfail\(\s*(f?[\"'])(.{0,8})", text):
            if not m.group(2).startswith("PENDING"):
                bad.append(f"{p.name}: pytest.xfail without PENDING")
    assert not bad, f"skips outside conftest.require: {bad}"


def test_statuses_checked():
    """A response read without its status (api.get(...).json()) would take an error
    body for the answer: such reads go through Resp.ok() (asserts 200), ok() or
    json_error()."""
    import re
    pat = re.compile(r"\.(?:post|get)\((?:[^()]|\([^()]*\))*\)\.(?:json\(\)|body)")
    bad = []
    for p in sorted(HERE.glob("test_*.py")):
        if p.name == "test_meta.py":
            continue
        for i, line in enumerate(p.read_text().splitlines(), 1):
            if pat.search(line):
                bad.append(f"{p.name}:{i}")
    assert not bad, f"response used without checking its status: {bad}"
