"""Every endpoint of README's HTTP API, single and list inputs, checked against the
golden values of the tiny fixture models and against nlpd-cli (the engine's own
front end). Runs directly and through nginx (the `api` fixture)."""
import http.client
import itertools
import json
import math
import re
import struct

import pytest

from conftest import (FIXTURES, ROOT, ModelSpec, cli_json, golden, have_minilm, json_error, require,
                      same_result, sst2_sentences)

TOL = 1e-4


def ok(r):
    assert r.status == 200, f"want 200, got {r!r}"
    ct = r.headers.get("Content-Type", "")
    assert ct.startswith("application/json"), f"Content-Type {ct!r}"
    j = r.json()
    assert isinstance(j.get("model"), str) and j["model"], f"response without model: {j}"
    assert isinstance(j.get("version"), str) and j["version"], f"response without version: {j}"
    rid = r.headers.get("X-Request-Id")
    assert rid, "response without X-Request-Id"
    return j


def close(a, b, tol=TOL):
    return abs(a - b) <= tol


def single_cases(model):
    """Golden cases that are one text without truncation (what the API sends)."""
    g = golden(model)
    return [c for c in g["cases"] if c["pair"] is None and c["max_length"] == 0 and c["text"]]


def labels_of(model):
    g = golden(model)
    return [g["id2label"][str(i)] for i in range(len(g["id2label"]))]


# ------------------------------------------------------------------ health

def test_healthz_readyz(api):
    for path in ("/healthz", "/readyz"):
        r = api.get(path)
        assert r.status == 200, f"GET {path}: {r!r}"


# --------------------------------------------------------------- sentiment

def check_sentiment(res, case, labels):
    probs = case["probs"]
    best = max(range(len(probs)), key=lambda i: probs[i])
    assert res["label"] == labels[best], f"{case['text']!r}: label {res['label']}, want {labels[best]}"
    assert close(res["score"], probs[best]), f"{case['text']!r}: score {res['score']} vs {probs[best]}"
    assert isinstance(res["scores"], dict), f"scores must be an object: {res}"
    assert set(res["scores"]) == set(labels), f"scores labels {sorted(res['scores'])} vs {labels}"
    for i, lab in enumerate(labels):
        assert close(res["scores"][lab], probs[i]), \
            f"{case['text']!r}: scores[{lab}] {res['scores'][lab]} vs golden {probs[i]}"


def test_sentiment_single_matches_golden(api):
    labels = labels_of("bert_cls")
    for case in single_cases("bert_cls")[:3]:
        j = ok(api.post("/v1/sentiment", {"text": case["text"], "model": "tiny-sentiment"}))
        assert j["model"] == "tiny-sentiment"
        assert "results" not in j, "single text must answer with 'result'"
        check_sentiment(j["result"], case, labels)


def test_sentiment_list_matches_golden(api):
    labels = labels_of("bert_cls")
    cases = single_cases("bert_cls")
    j = ok(api.post("/v1/sentiment", {"texts": [c["text"] for c in cases], "model": "tiny-sentiment"}))
    assert "result" not in j, "a list must answer with 'results'"
    assert len(j["results"]) == len(cases), f"{len(j['results'])} results for {len(cases)} texts"
    for res, case in zip(j["results"], cases, strict=True):
        check_sentiment(res, case, labels)


def test_sentiment_default_model(api):
    j = ok(api.post("/v1/sentiment", {"text": "Hello world!"}))
    assert j["model"] == "tiny-sentiment", f"the only sentiment model should serve by default: {j}"


# ---------------------------------------------------------------- classify

def check_classify(res, probs, labels, top_k):
    order = sorted(range(len(probs)), key=lambda i: -probs[i])[:top_k]
    assert res["label"] == labels[order[0]], f"label {res['label']} want {labels[order[0]]}"
    assert close(res["score"], probs[order[0]])
    got = res["labels"]
    assert [x["label"] for x in got] == [labels[i] for i in order], \
        f"labels {got} want top {top_k} {[labels[i] for i in order]}"
    for x, i in zip(got, order, strict=True):
        assert close(x["score"], probs[i]), f"{x} vs {probs[i]}"


def test_classify_top_k(api):
    labels = labels_of("bert_cls")
    cases = single_cases("bert_cls")
    for k in (1, 2, 3):
        j = ok(api.post("/v1/classify", {"texts": [c["text"] for c in cases],
                                         "model": "tiny-classify", "top_k": k}))
        assert j["model"] == "tiny-classify"
        assert len(j["results"]) == len(cases)
        for res, c in zip(j["results"], cases, strict=True):
            check_classify(res, c["probs"], labels, k)
    j = ok(api.post("/v1/classify", {"text": cases[0]["text"], "model": "tiny-classify", "top_k": 1}))
    check_classify(j["result"], cases[0]["probs"], labels, 1)


def test_classify_default_top_k_sorted(api):
    labels = labels_of("bert_cls")
    case = single_cases("bert_cls")[0]
    j = ok(api.post("/v1/classify", {"text": case["text"], "model": "tiny-classify"}))
    got = j["result"]["labels"]
    assert 1 <= len(got) <= len(labels), got
    scores = [x["score"] for x in got]
    assert scores == sorted(scores, reverse=True), f"labels not sorted by score: {got}"
    check_classify(j["result"], case["probs"], labels, len(got))


def test_classify_distilbert(api):
    labels = labels_of("distilbert_cls")
    cases = single_cases("distilbert_cls")
    j = ok(api.post("/v1/classify", {"texts": [c["text"] for c in cases], "model": "tiny-distil",
                                     "top_k": 2}))
    for res, c in zip(j["results"], cases, strict=True):
        check_classify(res, c["probs"], labels, 2)


@pytest.mark.parametrize("threshold", [None, 0.3, 0.8])
def test_classify_multilabel_threshold(api, threshold):
    labels = labels_of("bert_cls_multilabel")
    cases = single_cases("bert_cls_multilabel")
    body = {"texts": [c["text"] for c in cases], "model": "tiny-multilabel"}
    if threshold is not None:
        body["threshold"] = threshold
    j = ok(api.post("/v1/classify", body))
    th = 0.5 if threshold is None else threshold
    for res, c in zip(j["results"], cases, strict=True):
        p = c["probs"]
        want = sorted((i for i in range(len(p)) if p[i] > th), key=lambda i: -p[i])
        got = res["labels"]
        assert [x["label"] for x in got] == [labels[i] for i in want], \
            f"{c['text']!r} threshold {th}: labels {got}, want {[labels[i] for i in want]} (probs {p})"
        for x, i in zip(got, want, strict=True):
            assert close(x["score"], p[i]), f"{x} vs sigmoid {p[i]}"
        best = max(range(len(p)), key=lambda i: p[i])
        if want:
            assert res["label"] == labels[best] and close(res["score"], p[best]), res


# -------------------------------------------------------------------- embed

def test_embed_tiny_matches_golden(api):
    g = golden("bert_st")
    cases = [c for c in g["cases"] if c["pair"] is None and c["max_length"] == 0 and c["text"]]
    j = ok(api.post("/v1/embed", {"texts": [c["text"] for c in cases], "model": "tiny-embed"}))
    assert j["model"] == "tiny-embed"
    assert len(j["results"]) == len(cases)
    for res, c in zip(j["results"], cases, strict=True):
        e = res["embedding"]
        assert len(e) == len(c["pooled"]), f"dim {len(e)} want {len(c['pooled'])}"
        d = max(abs(a - b) for a, b in zip(e, c["pooled"], strict=True))
        assert d <= TOL, f"{c['text']!r}: max |diff| {d:.3g} vs golden pooled"
        assert close(math.sqrt(sum(x * x for x in e)), 1.0, 1e-4), "embedding not L2-normalised"
    one = ok(api.post("/v1/embed", {"text": cases[0]["text"], "model": "tiny-embed"}))
    d = same_result(one["result"], j["results"][0])
    assert d is None, f"single-text embedding differs from the same text in a list: {d}"


def minilm_golden_rows(idx):
    raw = (ROOT / "tests/fixtures/minilm/sst2_dev_embeddings.f32").read_bytes()
    dim = 384
    return [list(struct.unpack_from(f"<{dim}f", raw, i * dim * 4)) for i in idx]


def test_embed_minilm_matches_golden(api):
    require(have_minilm(), "models/all-MiniLM-L6-v2 (make models)")
    sents = sst2_sentences()
    require(sents, "SST-2 dev sentences (NLPD_SHARED/data/sst2)")
    idx = [0, 1, 2, 3, 17, 100, 400, 871]
    j = ok(api.post("/v1/embed", {"texts": [sents[i] for i in idx], "model": "minilm"}))
    assert len(j["results"]) == len(idx), f"{len(j['results'])} results for {len(idx)} texts"
    for res, want, i in zip(j["results"], minilm_golden_rows(idx), idx, strict=True):
        e = res["embedding"]
        assert len(e) == 384
        d = max(abs(a - b) for a, b in zip(e, want, strict=True))
        assert d <= TOL, f"SST-2 dev #{i}: max |diff| {d:.3g} vs sentence-transformers golden"


# ----------------------------------------------------------------------- qa

QA_ITEMS = [
    ("Who wrote it?", "The report was written by Marie Curie in Paris in 1911."),
    ("Where?", "Le café crème coûte 3,50 € à Montréal."),
    ("Where is it?", "The café is in Montréal, near the river. It opened in 1998 😀 and serves crêpes."),
]


def check_answer(got, want, context):
    assert got["answer"] == want["answer"], f"answer {got['answer']!r} want {want['answer']!r}"
    assert (got["start"], got["end"]) == (want["start"], want["end"]), f"{got} want {want}"
    assert close(got["score"], want["score"]), f"score {got['score']} want {want['score']}"
    assert context[got["start"]:got["end"]] == got["answer"], \
        f"start/end are not code-point offsets of the answer in the context: {got}"


def test_qa_matches_golden(api):
    g = golden("bert_qa")
    item = next(q for q in g["qa_pipeline"] if q["question"] == "Who wrote it?")
    want = item["answers"][0]
    j = ok(api.post("/v1/qa", {"question": item["question"], "context": item["context"],
                               "model": "tiny-qa"}))
    res = j["result"]
    check_answer(res, {"answer": want["answer"], "start": want["char_start"],
                       "end": want["char_end"], "score": want["score"]}, item["context"])
    assert len(res["answers"]) >= 1
    check_answer(res["answers"][0], res, item["context"])


@pytest.mark.parametrize("top_k", [1, 3])
def test_qa_matches_cli(api, top_k):
    for q, c in QA_ITEMS:
        want = cli_json("qa", FIXTURES / "bert_qa", "--question", q, "--context", c,
                        "--top-k", top_k)
        j = ok(api.post("/v1/qa", {"question": q, "context": c, "top_k": top_k, "model": "tiny-qa"}))
        res = j["result"]
        assert len(res["answers"]) == len(want), f"{len(res['answers'])} answers, cli {len(want)}"
        for got, w in zip(res["answers"], want, strict=True):
            check_answer(got, w, c)
        check_answer(res, want[0], c)


def test_qa_max_answer_length_matches_cli(api):
    q, c = QA_ITEMS[0]
    want = cli_json("qa", FIXTURES / "bert_qa", "--question", q, "--context", c,
                    "--max-answer-length", 3, "--top-k", 2)
    j = ok(api.post("/v1/qa", {"question": q, "context": c, "model": "tiny-qa",
                               "max_answer_length": 3, "top_k": 2}))
    assert len(want) >= 1, f"the CLI gave no answer: {want}"
    assert len(j["result"]["answers"]) == len(want), \
        f"{len(j['result']['answers'])} answers, cli {len(want)}"
    for got, w in zip(j["result"]["answers"], want, strict=True):
        check_answer(got, w, c)


def test_qa_items_list(api):
    items = [{"question": q, "context": c} for q, c in QA_ITEMS]
    j = ok(api.post("/v1/qa", {"items": items, "model": "tiny-qa"}))
    assert len(j["results"]) == len(items)
    for res, (q, c) in zip(j["results"], QA_ITEMS, strict=True):
        alone = ok(api.post("/v1/qa", {"question": q, "context": c, "model": "tiny-qa"}))["result"]
        check_answer(res, alone, c)


def test_qa_handle_impossible_answer(api):
    q, c = "Is it raining?", "No one knows."
    j = ok(api.post("/v1/qa", {"question": q, "context": c, "model": "tiny-qa", "top_k": 8,
                               "handle_impossible_answer": True}))
    answers = j["result"]["answers"]
    assert any(a["answer"] == "" and a["start"] == a["end"] == 0 for a in answers), \
        f"handle_impossible_answer with top_k 8 should rank the empty answer: {answers}"
    j2 = ok(api.post("/v1/qa", {"question": q, "context": c, "model": "tiny-qa", "top_k": 8}))
    assert all(a["answer"] != "" for a in j2["result"]["answers"])


def test_qa_default_model(api):
    q, c = QA_ITEMS[0]
    j = ok(api.post("/v1/qa", {"question": q, "context": c}))
    assert j["model"] == "tiny-qa"


# ---------------------------------------------------------------- translate
# (test_translate.py covers /v1/translate with the tiny Marian models.)

def test_translate_not_configured(spawn):
    t = spawn([ModelSpec("tiny-embed", FIXTURES / "bert_st", "embed")])
    json_error(t.post("/v1/translate", {"text": "Hello", "source": "en", "target": "de"}),
               404, "model_not_found")
    json_error(t.post("/v1/translate", {"text": "Hello", "model": "tiny-embed"}), 404,
               "model_not_found")


# ------------------------------------------------------------------- models

EXPECTED_MODELS = {
    "tiny-sentiment": ("sentiment", "BertForSequenceClassification", "bert_cls"),
    "tiny-classify": ("classify", "BertForSequenceClassification", "bert_cls"),
    "tiny-multilabel": ("classify", "BertForSequenceClassification", "bert_cls_multilabel"),
    "tiny-distil": ("classify", "DistilBertForSequenceClassification", "distilbert_cls"),
    "tiny-qa": ("qa", "BertForQuestionAnswering", "bert_qa"),
    "tiny-embed": ("embed", "BertModel", "bert_st"),
}


def check_model_entry(m, name):
    task, arch, folder = EXPECTED_MODELS[name]
    assert m.get("name") == name, m
    assert m.get("task") == task, f"{name}: task {m.get('task')} want {task}"
    assert m.get("architecture") == arch, f"{name}: architecture {m.get('architecture')}"
    assert isinstance(m.get("version"), str) and m["version"], f"{name}: version {m.get('version')}"
    assert isinstance(m.get("device"), str) and m["device"], f"{name}: device {m.get('device')}"
    assert isinstance(m.get("status"), str) and m["status"], f"{name}: status {m.get('status')}"
    assert isinstance(m.get("batching"), dict) and m["batching"], f"{name}: batching {m.get('batching')}"
    if task in ("sentiment", "classify"):
        assert m.get("labels") == labels_of(folder), f"{name}: labels {m.get('labels')}"


def models_list(j):
    ms = j.get("models") if isinstance(j, dict) else j
    assert isinstance(ms, list), f"/v1/models must list the models: {j}"
    return {m.get("name"): m for m in ms}


def test_models_list(api):
    r = api.get("/v1/models")
    assert r.status == 200, r
    ms = models_list(r.json())
    for name in EXPECTED_MODELS:
        assert name in ms, f"/v1/models lacks {name}: {sorted(ms)}"
        check_model_entry(ms[name], name)
    if have_minilm():
        assert ms["minilm"]["task"] == "embed"


def test_model_detail(api):
    for name in EXPECTED_MODELS:
        r = api.get(f"/v1/models/{name}")
        assert r.status == 200, f"GET /v1/models/{name}: {r!r}"
        j = r.json()
        check_model_entry(j.get("model") if isinstance(j.get("model"), dict) else j, name)
    json_error(api.get("/v1/models/no-such-model"), 404, "model_not_found")


def test_version_matches_models(api):
    ms = models_list(api.get("/v1/models").ok().json())
    for name, path, body in [("tiny-embed", "/v1/embed", {"text": "x"}),
                             ("tiny-sentiment", "/v1/sentiment", {"text": "x"}),
                             ("tiny-classify", "/v1/classify", {"text": "x"}),
                             ("tiny-qa", "/v1/qa", {"question": "x?", "context": "y z"})]:
        j = ok(api.post(path, dict(body, model=name)))
        assert j["model"] == name and j["version"] == ms[name]["version"], \
            f"{path}: model/version {j['model']}/{j['version']} vs /v1/models {ms[name]['version']}"


# --------------------------------------------------------------- request id

def test_request_id_echoed(api):
    rid = "it-test-0123456789abcdef"
    r = api.post("/v1/embed", {"text": "hello", "model": "tiny-embed"}, headers={"X-Request-Id": rid})
    assert r.status == 200, r
    assert r.headers.get("X-Request-Id") == rid, f"X-Request-Id {r.headers.get('X-Request-Id')!r}"
    r = api.get("/v1/nope", headers={"X-Request-Id": rid + "-err"})
    assert r.status == 404 and r.headers.get("X-Request-Id") == rid + "-err", \
        f"error responses must echo X-Request-Id too: {r!r} {r.headers.get('X-Request-Id')!r}"


def test_request_id_generated(api):
    ids = set()
    for _ in range(3):
        r = api.post("/v1/embed", {"text": "hello", "model": "tiny-embed"})
        assert r.status == 200, r
        rid = r.headers.get("X-Request-Id")
        assert rid and re.fullmatch(r"[\x21-\x7e]{8,200}", rid), f"generated X-Request-Id {rid!r}"
        ids.add(rid)
    assert len(ids) == 3, f"generated request ids must differ: {ids}"
    # The id the client got is the one nlpd logged (through nginx: nginx's $request_id,
    # passed to nlpd and echoed back), so a client's report can be found in the logs.
    from conftest import wait_until
    for rid in ids:
        wait_until(lambda: rid in api.nlpd.log(), 10, f"generated request id {rid} in the nlpd log")
        if api.nginx:
            wait_until(lambda: f"rid={rid}" in (api.nginx.dir / "access.log").read_text(), 10,
                       f"request id {rid} in the nginx access log")


def test_request_id_logged(api):
    rid = f"it-log-{api.mode}-7f3a9c"
    r = api.post("/v1/sentiment", {"text": "log me"}, headers={"X-Request-Id": rid})
    assert r.status == 200
    from conftest import wait_until
    wait_until(lambda: rid in api.nlpd.log(), 10, f"request id {rid} in the nlpd log")


# --------------------------------------------------------------- protocol

def test_content_type_with_charset(api):
    r = api.post("/v1/embed", {"text": "hello", "model": "tiny-embed"},
                 content_type="application/json; charset=utf-8")
    ok(r)


def test_keep_alive(api):
    """HTTP/1.1 keep-alive: GETs and POSTs (and errors) reuse one connection."""
    c = api.keepalive_conn()
    try:
        for i in range(3):
            ok(api.request("POST", "/v1/sentiment", {"text": f"text {i}"}, conn=c))
            for path in ("/healthz", "/readyz", "/v1/models", "/metrics"):
                r = api.request("GET", path, conn=c)
                assert r.status == 200, f"GET {path}: {r!r}"
            r = api.request("POST", "/v1/sentiment", {"text": ""}, conn=c)
            json_error(r, 422, "invalid_field")
            r = api.request("GET", "/v1/nope", conn=c)
            json_error(r, 404, "not_found")
    except http.client.NotConnected:
        raise AssertionError("the server closed a keep-alive connection after a normal response")
    finally:
        c.close()


def test_timeout_ms_field(api):
    ok(api.post("/v1/embed", {"text": "hello", "model": "tiny-embed", "timeout_ms": 5000}))
    # The models' max_timeout_ms is the default 60000.
    json_error(api.post("/v1/embed", {"text": "hello", "model": "tiny-embed", "timeout_ms": 600000}),
               422, "invalid_field")
    json_error(api.post("/v1/embed", {"text": "hello", "model": "tiny-embed", "timeout_ms": 0}),
               422, "invalid_field")


def test_text_at_byte_limit_accepted(api):
    from conftest import MAX_TEXT_BYTES
    text = ("word " * (MAX_TEXT_BYTES // 5 + 1))[:MAX_TEXT_BYTES]
    assert len(text.encode()) == MAX_TEXT_BYTES
    ok(api.post("/v1/sentiment", {"text": text}))
    ok(api.post("/v1/embed", {"text": text, "model": "tiny-embed"}))


# ------------------------------------------------------------------ metrics

def test_metrics(api):
    from conftest import metric, metric_present, parse_metrics, scrape
    ok(api.post("/v1/sentiment", {"text": "count me"}))
    r = api.get("/metrics")
    assert r.status == 200, r
    ct = r.headers.get("Content-Type", "")
    assert ct.startswith("text/plain") and "0.0.4" in ct, f"/metrics Content-Type {ct!r}"
    types, s = parse_metrics(r.body.decode())
    want_types = {
        "nlpd_requests_total": "counter",
        "nlpd_request_duration_seconds": "histogram",
        "nlpd_queue_duration_seconds": "histogram",
        "nlpd_inference_duration_seconds": "histogram",
        "nlpd_batch_size": "histogram",
        "nlpd_batch_tokens": "histogram",
        "nlpd_queue_depth": "gauge",
        "nlpd_model_info": "gauge",
        "nlpd_ready": "gauge",
        "nlpd_draining": "gauge",
        "nlpd_requests_in_flight": "gauge",
    }
    for fam, typ in want_types.items():
        assert types.get(fam) == typ, f"/metrics: # TYPE {fam} is {types.get(fam)!r}, want {typ}"

    lab = dict(endpoint="sentiment", model="tiny-sentiment", status="200")
    before = metric(s, "nlpd_requests_total", **lab)
    assert before >= 1, "nlpd_requests_total does not count a served sentiment request"
    ok(api.post("/v1/sentiment", {"text": "count me again"}))
    json_error(api.post("/v1/sentiment", {"text": ""}), 422, "invalid_field")
    s2 = scrape(api)
    assert metric(s2, "nlpd_requests_total", **lab) == before + 1, \
        "nlpd_requests_total{sentiment,tiny-sentiment,200} must grow by exactly one per request"
    assert metric(s2, "nlpd_requests_total", endpoint="sentiment", status="422") >= 1, \
        "422 responses are not counted"

    for h, key in (("nlpd_request_duration_seconds", {"endpoint": "sentiment"}),
                   ("nlpd_queue_duration_seconds", {"model": "tiny-sentiment"}),
                   ("nlpd_inference_duration_seconds", {"model": "tiny-sentiment"}),
                   ("nlpd_batch_size", {"model": "tiny-sentiment"}),
                   ("nlpd_batch_tokens", {"model": "tiny-sentiment"})):
        cnt = metric(s2, h + "_count", **key)
        inf = metric(s2, h + "_bucket", le="+Inf", **key)
        assert cnt >= 1, f"{h}{key}_count is {cnt}"
        assert inf == cnt, f"{h}{key}: +Inf bucket {inf} != count {cnt}"
        assert metric_present(s2, h + "_sum", **key), f"{h}{key}_sum missing"
        buckets = sorted((float(lab_["le"]), v) for n, lab_, v in s2
                         if n == h + "_bucket" and all(lab_.get(k) == x for k, x in key.items()))
        assert all(a[1] <= b[1] for a, b in itertools.pairwise(buckets)), \
            f"{h}{key}: buckets not cumulative: {buckets}"

    ms = models_list(api.get("/v1/models").ok().json())
    for name in EXPECTED_MODELS:
        assert metric_present(s2, "nlpd_queue_depth", model=name), f"nlpd_queue_depth{{{name}}} missing"
        task, arch, _ = EXPECTED_MODELS[name]
        assert metric(s2, "nlpd_model_info", model=name, version=ms[name]["version"], task=task,
                      architecture=arch) == 1, f"nlpd_model_info for {name} missing or wrong"
    assert metric(s2, "nlpd_ready") == 1 and metric(s2, "nlpd_draining") == 0
    assert metric_present(s2, "nlpd_requests_in_flight")


def test_content_type_case_insensitive(api):
    ok(api.post("/v1/embed", {"text": "hello", "model": "tiny-embed"}, content_type="Application/JSON"))


def test_pipelined_requests(api):
    """HTTP/1.1 pipelining: two requests in one write are answered in order."""
    import socket
    from conftest import read_response
    bodies = [b'{"text": "first text", "model": "tiny-embed"}', b'{"text": "second", "model": "tiny-embed"}']
    data = b"".join(b"POST /v1/embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"X-Request-Id: pipe-%d\r\nContent-Length: %d\r\n\r\n%s" % (i, len(b), b)
                    for i, b in enumerate(bodies))
    s = socket.create_connection((api.host, api.port), timeout=30)
    try:
        s.sendall(data)
        f = s.makefile("rb")
        for i, b in enumerate(bodies):
            status, headers, body = read_response(f)
            assert status == 200, f"pipelined request {i}: {status} {body[:200]!r}"
            assert headers.get("x-request-id") == f"pipe-{i}", "pipelined responses out of order"
            want = api.post("/v1/embed", json.loads(b)).ok()
            assert json.loads(body)["result"] == want.json()["result"]
    finally:
        s.close()


def test_expect_100_continue(api):
    """curl sends 'Expect: 100-continue' for larger bodies: the server must go on."""
    import socket
    from conftest import read_response
    body = json.dumps({"texts": ["expect continue"] * 40, "model": "tiny-embed"}).encode()
    s = socket.create_connection((api.host, api.port), timeout=30)
    try:
        s.sendall(b"POST /v1/embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body))
        f = s.makefile("rb")
        status, _, _ = read_response(f)
        assert status == 100, f"want '100 Continue' before the body, got {status}"
        s.sendall(body)
        status, _, rbody = read_response(f)
        assert status == 200, f"after 100 Continue: {status} {rbody[:200]!r}"
        assert len(json.loads(rbody)["results"]) == 40
    finally:
        s.close()


def test_long_request_id(api):
    """An over-long or odd X-Request-Id is echoed or replaced, never breaks the response."""
    for rid in ("x" * 2000, "spaces in id", "ünïcode"):
        r = api.post("/v1/sentiment", {"text": "hi"}, headers={"X-Request-Id": rid.encode("utf-8")})
        assert r.status == 200, r
        got = r.headers.get("X-Request-Id")
        assert got, "X-Request-Id missing"
        assert len(got) <= 2000
