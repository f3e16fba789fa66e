"""The APIs clients already speak, driven by the real client libraries (openai,
langchain-openai, llama-index-embeddings-text-embeddings-inference from
tests/requirements.txt, installed by scripts/install_deps.sh into the test venv
$NLPD_TEST_VENV, default /opt/nlpd-test) and by raw HTTP for the exact shapes:
OpenAI POST /v1/embeddings, text-embeddings-inference POST /embed, /predict,
/tokenize. Results are checked against nlpd's native routes on the same model.
The libraries run in the venv's python (clients/clients.py); a missing venv or
library fails, never skips."""
import base64
import json
import math
import os
import struct
import subprocess
from pathlib import Path

import pytest

from conftest import have_minilm, json_error

VENV = Path(os.environ.get("NLPD_TEST_VENV", "/opt/nlpd-test"))
CLIENTS = Path(__file__).resolve().parent / "clients" / "clients.py"
TEXTS = ["The service was excellent.", "Mi pedido llegó tarde y dañado.", "ok"]
TOL = 1e-6


def embed_model():
    return "minilm" if have_minilm() else "tiny-embed"


def run_client(kind, api, model, texts=TEXTS):
    py = VENV / "bin" / "python"
    if not py.exists():
        pytest.fail(f"{py} missing: run scripts/install_deps.sh (tests/requirements.txt)")
    base = f"http://{api.host}:{api.port}"
    r = subprocess.run([str(py), str(CLIENTS), kind, base, model, *texts], capture_output=True,
                       timeout=180, env=dict(os.environ, NO_PROXY="*", no_proxy="*"))
    assert r.returncode == 0, f"{kind} client failed:\n{r.stderr.decode(errors='replace')[-3000:]}"
    return json.loads(r.stdout)


def native(api, model, texts):
    r = api.post("/v1/embed", {"texts": texts, "model": model})
    assert r.status == 200, r
    return [x["embedding"] for x in r.json()["results"]]


def same(a, b, tol=TOL):
    assert len(a) == len(b), f"length {len(a)} vs {len(b)}"
    worst = max(abs(x - y) for x, y in zip(a, b))
    assert worst <= tol, f"differs by {worst}"


def norm(v):
    return math.sqrt(sum(x * x for x in v))


# ------------------------------------------------------------------ OpenAI

def test_openai_sdk(api):
    model = embed_model()
    want = native(api, model, TEXTS)
    got = run_client("openai", api, model)
    assert got["object"] == "list" and got["model"] == model
    same(got["single_default"], want[0])  # base64 (the SDK's default), decoded by the SDK
    assert got["indices"] == list(range(len(TEXTS)))
    for i in range(len(TEXTS)):
        same(got["list_float"][i], want[i])
        # asked for explicitly, base64 comes back as the string (little-endian float32)
        raw = base64.b64decode(got["list_base64"][i])
        same(struct.unpack(f"<{len(raw) // 4}f", raw), want[i])
    assert got["single_usage"][0] == got["single_usage"][1] > 2
    assert got["dimensions_ok"] == len(want[0])
    bad = got["dimensions_bad"]
    assert bad and bad["status"] == 422 and "dimensions" in bad["message"], bad
    for k in ("token_ids", "token_ids_flat"):
        e = got[k]
        assert e and e["status"] == 422 and e["type"] == "UnprocessableEntityError", e
        assert "check_embedding_ctx_length=False" in e["message"], e
        assert e["code"] == "unsupported_input" and e["error_type"] == "invalid_request_error", e
    assert got["unknown_model"]["status"] == 404, got["unknown_model"]


def test_openai_raw_shapes(api):
    model = embed_model()
    r = api.post("/v1/embeddings", {"input": TEXTS, "model": model, "encoding_format": "base64"})
    assert r.status == 200, r
    j = r.json()
    assert set(j) >= {"object", "data", "model", "usage"} and j["object"] == "list"
    assert j["usage"]["prompt_tokens"] == j["usage"]["total_tokens"]
    want = native(api, model, TEXTS)
    for i, d in enumerate(j["data"]):
        assert d["object"] == "embedding" and d["index"] == i
        raw = base64.b64decode(d["embedding"])
        vec = struct.unpack(f"<{len(raw) // 4}f", raw)  # little-endian float32, as OpenAI
        same(vec, want[i])
    # usage counts the tokens embedded ([CLS] and [SEP] included), as nlpd /tokenize shows
    t = api.post("/tokenize", {"inputs": TEXTS}).json()
    assert j["usage"]["prompt_tokens"] == sum(len(x) for x in t)
    for body, code in (({"input": "x"}, "invalid_field"),                      # model missing
                       ({"input": [], "model": model}, "invalid_field"),
                       ({"input": "", "model": model}, "invalid_field"),
                       ({"input": "x", "model": model, "encoding_format": "f16"}, "invalid_field"),
                       ({"input": "x", "model": model, "dimensions": 0}, "invalid_field"),
                       ({"input": [[1, 2]], "model": model}, "unsupported_input"),
                       ({"input": "x", "model": model, "suffix": 1}, "invalid_field")):
        json_error(api.post("/v1/embeddings", body), 422, code)
    long = " ".join(["word"] * 2000)
    json_error(api.post("/v1/embeddings", {"input": long, "model": model}), 422,
               "context_length_exceeded")


def test_langchain_openai(api):
    model = embed_model()
    want = native(api, model, TEXTS)
    got = run_client("langchain", api, model)
    for i in range(len(TEXTS)):
        same(got["documents"][i], want[i])
        same(got["adocuments"][i], want[i])
    same(got["query"], want[0])


# -------------------------------------------------------------------- TEI

def test_llamaindex_tei(api):
    r = api.get("/v1/models")
    first_embed = next(m["name"] for m in r.json()["models"] if m["task"] == "embed")
    want = native(api, first_embed, TEXTS)
    got = run_client("llamaindex", api, "nlpd")
    for i in range(len(TEXTS)):
        same(got["batch"][i], [x / norm(want[i]) for x in want[i]], 1e-5)
    same(got["query"], got["batch"][0])
    same(got["aquery"], got["batch"][0])
    same(got["text"], got["batch"][1])
    assert abs(norm(got["query"]) - 1) < 1e-5  # TEI's default normalize=true


def test_tei_embed_shapes(api):
    r = api.post("/embed", {"inputs": "hello"})
    assert r.status == 200, r
    j = r.json()
    assert isinstance(j, list) and len(j) == 1 and all(isinstance(x, float) for x in j[0])
    j2 = api.post("/embed", {"inputs": ["hello", "world"], "normalize": True, "truncate": False}).json()
    assert len(j2) == 2 and j2[0] == j[0]
    long = " ".join(["word"] * 2000)
    json_error(api.post("/embed", {"inputs": long}), 413, "too_many_tokens")
    r = api.post("/embed", {"inputs": long, "truncate": True, "truncation_direction": "Right"})
    assert r.status == 200, r
    json_error(api.post("/embed", {"inputs": "x", "truncation_direction": "Left"}), 422,
               "invalid_field")
    json_error(api.post("/embed", {"inputs": [101, 102]}), 422, "invalid_field")
    json_error(api.post("/embed", {"text": "x"}), 422, "invalid_field")


def test_tei_predict(api):
    texts = ["great service", "terrible, never again"]
    nat = api.post("/v1/sentiment", {"texts": texts}).json()
    r = api.post("/predict", {"inputs": texts[0]})
    assert r.status == 200, r
    single = r.json()
    res = nat["results"][0]
    assert single[0]["label"] == res["label"] and abs(single[0]["score"] - res["score"]) < 1e-6
    assert [p["score"] for p in single] == sorted((p["score"] for p in single), reverse=True)
    assert {p["label"]: p["score"] for p in single} == pytest.approx(res["scores"], abs=1e-6)
    batch = api.post("/predict", {"inputs": [[texts[0]], [texts[1]]]}).json()
    assert len(batch) == 2 and batch[0] == single
    assert batch[1][0]["label"] == nat["results"][1]["label"]
    raw = api.post("/predict", {"inputs": texts[0], "raw_scores": True}).json()
    # softmax of the logits gives the probabilities
    z = sum(math.exp(p["score"]) for p in raw)
    assert {p["label"]: math.exp(p["score"]) / z for p in raw} == \
        pytest.approx(res["scores"], abs=1e-5)
    pair = api.post("/predict", {"inputs": ["is it good?", "yes it is"]})
    assert pair.status == 200 and isinstance(pair.json()[0], dict), pair
    json_error(api.post("/predict", {"inputs": ["a", "b", "c"]}), 422, "invalid_field")
    json_error(api.post("/predict", {"inputs": []}), 422, "invalid_field")


def test_tei_tokenize(api):
    text = "Hello, wörld! naïve café"
    r = api.post("/tokenize", {"inputs": text})
    assert r.status == 200, r
    toks = r.json()
    assert len(toks) == 1
    t = toks[0]
    assert t[0]["special"] and t[-1]["special"] and t[0]["start"] is None
    raw = text.encode()
    for tok in t[1:-1]:
        assert not tok["special"]
        assert raw[tok["start"]:tok["stop"]].decode() == tok["text"], tok  # byte offsets, as TEI
    nospec = api.post("/tokenize", {"inputs": [text, "ok"], "add_special_tokens": False}).json()
    assert len(nospec) == 2 and [x["id"] for x in nospec[0]] == [x["id"] for x in t[1:-1]]
    json_error(api.post("/tokenize", {"inputs": "x", "prompt_name": "query"}), 422,
               "invalid_field")
