"""The OpenAPI 3.1 contract (server/openapi.json, served at GET /openapi.json):
the document and the route table agree (nlpd --print-routes), and schemathesis
(tests/requirements.txt, in the test venv) fuzzes a live daemon against it with
zero server errors and zero response-schema, status-code, content-type or header
violations. A missing schemathesis fails, never skips."""
import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from conftest import NLPD_BIN, ROOT, have_marian, marian_models, tiny_models

DOC = ROOT / "server" / "openapi.json"
VENV = Path(os.environ.get("NLPD_TEST_VENV", "/opt/nlpd-test"))
HOOKS = Path(__file__).resolve().parent / "schemathesis"
METHODS = {"get", "post", "put", "patch", "delete", "head", "options"}
# Checks that judge the server's answers against the document.
CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,"
          "response_schema_conformance,response_headers_conformance")
MAX_EXAMPLES = int(os.environ.get("NLPD_SCHEMATHESIS_EXAMPLES", "20"))


def routes():
    if not NLPD_BIN.exists():
        pytest.fail(f"{NLPD_BIN} missing (build it, or set NLPD_BIN)")
    out = subprocess.run([str(NLPD_BIN), "--print-routes"], capture_output=True, text=True,
                         timeout=30, check=True).stdout
    return {tuple(line.split(" ", 1)) for line in out.splitlines() if line}


def documented():
    doc = json.loads(DOC.read_text())
    return {(m.upper(), p) for p, item in doc["paths"].items() for m in item if m in METHODS}


def test_document_matches_routes():
    doc = json.loads(DOC.read_text())
    assert doc["openapi"].startswith("3.1"), doc["openapi"]
    r, d = routes(), documented()
    assert r - d == set(), f"routes missing from server/openapi.json: {sorted(r - d)}"
    assert d - r == set(), f"documented but not routed: {sorted(d - r)}"
    # Every operation documents its success and its errors, with a JSON error body.
    for path, item in doc["paths"].items():
        for m, op in item.items():
            if m not in METHODS:
                continue
            codes = set(op["responses"])
            assert any(c.startswith("2") for c in codes), f"{m} {path}: no 2xx"
            if m == "post":
                assert {"400", "404", "422"} <= codes, f"{m} {path}: {sorted(codes)}"
            # path parameters are declared
            for name in re.findall(r"{(\w+)}", path):
                params = item.get("parameters", []) + op.get("parameters", [])
                assert any(p["name"] == name and p["in"] == "path" for p in params), \
                    f"{path}: parameter {name} undeclared"


# The server's error calls: (status arg, code arg) positions, counted from 0.
ERROR_CALLS = {"srv_req_error": (1, 2), "srv_api_error_set": (1, 2), "gate_refuse": (1, 3),
               "conn_refuse": (1, 3)}
# Emitted but not answered to an operation of the document: 405 answers a method a path
# lacks (the info says so); 499 only labels, in logs and metrics, a client that left.
UNDOCUMENTED = {405, 499}
# Transport-level refusals, before a route is known: every operation can get them.
EVERY_OPERATION = {"400", "429", "431"}


def _call_args(text, i):
    """The top-level arguments of the call whose "(" ends at text[i - 1]."""
    args, depth, start = [], 1, i
    while depth:
        c = text[i]
        if c == '"':
            i += 1
            while text[i] != '"':
                i += 2 if text[i] == "\\" else 1
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        if (c == "," and depth == 1) or depth == 0:
            args.append(text[start:i].strip())
            start = i + 1
        i += 1
    return args


def emitted_errors():
    """{(status, code): file} for every literal status and code the server's sources
    pass to an error call (a ternary gives each branch's pair)."""
    call = re.compile(r"\b(" + "|".join(ERROR_CALLS) + r")\s*\(")
    out = {}
    for f in sorted((ROOT / "server").glob("*.c")):
        text = f.read_text()
        for m in call.finditer(text):
            if re.search(r"\b(void|int)\s*$", text[max(0, m.start() - 16):m.start()]):
                continue  # the definition or a declaration
            args = _call_args(text, m.end())
            si, ci = ERROR_CALLS[m.group(1)]
            if len(args) <= ci:
                continue
            statuses = re.findall(r"\b[1-5]\d\d\b", args[si])
            codes = re.findall(r'"([a-z0-9_]+)"', args[ci])
            if not statuses or not codes:
                continue  # forwards a status and code decided elsewhere
            if len(statuses) == 1:
                statuses *= len(codes)
            for st, code in zip(statuses, codes, strict=True):
                out[(int(st), code)] = f.name
    return out


def test_every_error_the_server_emits_is_documented():
    doc = json.loads(DOC.read_text())

    def resolve(r):
        while "$ref" in r:
            r = doc["components"]["responses"][r["$ref"].rsplit("/", 1)[-1]]
        return r

    described = {}  # status -> the descriptions documenting it
    for path, item in doc["paths"].items():
        for m, op in item.items():
            if m not in METHODS:
                continue
            codes = set(op["responses"])
            missing = EVERY_OPERATION - codes | ({"408"} - codes if m == "post" else set())
            assert not missing, f"{m} {path}: transport errors {sorted(missing)} undocumented"
            for st, r in op["responses"].items():
                described.setdefault(st, set()).add(resolve(r)["description"])
    errors = emitted_errors()
    assert len(errors) > 20 and (431, "headers_too_large") in errors, errors  # the parse works
    lacking = []
    for (st, code), f in sorted(errors.items()):
        if st in UNDOCUMENTED:
            continue
        if not any(re.search(rf"\b{code}\b", d) for d in described.get(str(st), ())):
            lacking.append(f"{st} {code} ({f})")
    assert not lacking, f"emitted by the server, missing from server/openapi.json: {lacking}"


def test_document_is_valid_openapi_31():
    """openapi-spec-validator (tests/requirements.txt) checks the document against the
    OpenAPI 3.1 specification and its JSON Schema dialect."""
    py = VENV / "bin" / "python"
    if not py.exists():
        pytest.fail(f"{py} missing: run scripts/install_deps.sh (tests/requirements.txt)")
    code = ("import json, sys\n"
            "from openapi_spec_validator import validate\n"
            "d = json.load(open(sys.argv[1]))\n"
            "validate(d)\n"
            "print('valid', d['openapi'])\n")
    r = subprocess.run([str(py), "-c", code, str(DOC)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "valid 3.1" in r.stdout, f"{r.stdout}{r.stderr[-3000:]}"


def test_served_document(api):
    r = api.get("/openapi.json")
    assert r.status == 200, r
    assert r.headers.get("Content-Type", "").startswith("application/json")
    assert r.json() == json.loads(DOC.read_text())


def test_schemathesis(spawn, tmp_path):
    st = VENV / "bin" / "schemathesis"
    if not st.exists():
        pytest.fail(f"{st} missing: run scripts/install_deps.sh (tests/requirements.txt)")
    models = tiny_models(threads=1)
    if have_marian():
        models += marian_models(tmp_path / "marian", threads=1)
    t = spawn(models, extra={"feedback": {"dir": str(tmp_path / "feedback")}})
    base = f"http://{t.host}:{t.port}"
    env = dict(os.environ, SCHEMATHESIS_HOOKS="hooks", PYTHONPATH=str(HOOKS), NO_COLOR="1",
               NO_PROXY="*", no_proxy="*")
    cmd = [str(st), "run", f"{base}/openapi.json", "--url", base, "--checks", CHECKS,
           "--max-examples", str(MAX_EXAMPLES), "--seed", "20261203", "--request-timeout", "30",
           "--workers", "1", "--no-color",
           "--report", "junit", "--report-junit-path", str(tmp_path / "schemathesis.xml")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=540, env=env, cwd=tmp_path)
    out = r.stdout + r.stderr
    summary = [l for l in out.splitlines() if re.search(r"\d+ generated", l)]
    print("schemathesis:", summary[-1].strip() if summary else "(no summary)")
    assert r.returncode == 0, f"schemathesis failed (exit {r.returncode}):\n{out[-8000:]}"
    assert summary and re.search(r"(\d+) generated, \1 passed", summary[-1]), out[-4000:]
    assert not re.search(r"Server error|ST10[0-9]", out), out[-4000:]
