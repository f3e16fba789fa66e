"""Every error status of README's table with its exact error code, on the main daemon
(directly and through nginx)."""
import json

import pytest

from conftest import MAX_BODY, MAX_TEXT_BYTES, MAX_TEXTS, json_error

POST_ENDPOINTS = [
    ("/v1/embed", {"text": "hello", "model": "tiny-embed"}),
    ("/v1/sentiment", {"text": "hello"}),
    ("/v1/classify", {"text": "hello", "model": "tiny-classify"}),
    ("/v1/qa", {"question": "who?", "context": "Marie wrote it.", "model": "tiny-qa"}),
]
TEXT_ENDPOINTS = POST_ENDPOINTS[:3]


@pytest.mark.parametrize("path,_", POST_ENDPOINTS)
@pytest.mark.parametrize("body", [b'{"text": "a"', b"{", b"", b"nul", b'{"text": "a",}',
                                  b"[1, 2", b'{"text" "a"}', b"\x00\x01"])
def test_malformed_json(api, path, _, body):
    json_error(api.post(path, body), 400, "malformed_json")


WRONG_TYPES = [
    {"text": 5},
    {"text": None},
    {"text": ["a"]},
    {"texts": "a"},
    {"texts": [1, 2]},
    {"texts": ["a", None]},
    {"texts": []},
    {"text": "a", "texts": ["b"]},
    {},
    {"text": "a", "model": 5},
    {"text": "a", "timeout_ms": "100"},
    {"text": "a", "timeout_ms": -5},
    {"text": "a", "timeout_ms": 1.5},
    {"text": "a", "unknown_field": 1},
]


@pytest.mark.parametrize("path,base", TEXT_ENDPOINTS)
@pytest.mark.parametrize("body", WRONG_TYPES, ids=lambda b: json.dumps(b)[:40])
def test_wrong_types(api, path, base, body):
    b = dict(body)
    if "model" not in b and "model" in base:
        b["model"] = base["model"]
    json_error(api.post(path, b), 422, "invalid_field")


@pytest.mark.parametrize("body", [[1], "text", 5, None], ids=["array", "string", "number", "null"])
def test_top_level_not_object(api, body):
    json_error(api.post("/v1/embed", json.dumps(body).encode()), 422, "invalid_field")


@pytest.mark.parametrize("extra", [{"top_k": 0}, {"top_k": -1}, {"top_k": "2"}, {"top_k": 1.5},
                                   {"threshold": "0.5"}, {"threshold": -0.1}, {"threshold": 1.5}],
                         ids=lambda e: json.dumps(e))
def test_classify_bad_fields(api, extra):
    json_error(api.post("/v1/classify", dict({"text": "a", "model": "tiny-multilabel"}, **extra)),
               422, "invalid_field")


QA_BAD = [
    {"question": "q?"},
    {"context": "c"},
    {"question": 5, "context": "c"},
    {"question": "q?", "context": ["c"]},
    {"items": []},
    {"items": "q"},
    {"items": [{"question": "q?"}]},
    {"items": [{"question": "q?", "context": "c", "extra": 1}]},
    {"question": "q?", "context": "c", "items": [{"question": "q?", "context": "c"}]},
    {"question": "q?", "context": "c", "top_k": 0},
    {"question": "q?", "context": "c", "max_answer_length": 0},
    {"question": "q?", "context": "c", "max_answer_length": "3"},
    {"question": "q?", "context": "c", "handle_impossible_answer": "yes"},
    {"question": "", "context": "c"},
    {"question": "q?", "context": ""},
]


@pytest.mark.parametrize("body", QA_BAD, ids=lambda b: json.dumps(b)[:50])
def test_qa_bad_fields(api, body):
    json_error(api.post("/v1/qa", dict(body, model="tiny-qa")), 422, "invalid_field")


@pytest.mark.parametrize("path,_", TEXT_ENDPOINTS)
@pytest.mark.parametrize("texts", [{"text": ""}, {"texts": ["ok", ""]}], ids=["text", "texts"])
def test_empty_text(api, path, _, texts):
    b = dict(texts)
    if path != "/v1/sentiment":
        b["model"] = dict(TEXT_ENDPOINTS)[path]["model"]
    json_error(api.post(path, b), 422, "invalid_field")


@pytest.mark.parametrize("raw", [b'{"text": "ab\xffcd"}', b'{"text": "caf\xc3"}',
                                 b'{"texts": ["fine", "\xed\xa0\x80"]}', b'{"text": "\xc0\xaf"}',
                                 b'{"text": "\xf4\x90\x80\x80"}'],
                         ids=["ff", "truncated", "surrogate", "overlong", "above-10ffff"])
def test_invalid_utf8(api, raw):
    json_error(api.post("/v1/sentiment", raw), 422, "invalid_utf8")


def test_invalid_utf8_qa(api):
    json_error(api.post("/v1/qa", b'{"question": "wh\xffo?", "context": "Marie.", "model": "tiny-qa"}'),
               422, "invalid_utf8")
    json_error(api.post("/v1/qa", b'{"question": "who?", "context": "Ma\xferie.", "model": "tiny-qa"}'),
               422, "invalid_utf8")


@pytest.mark.parametrize("path,base", POST_ENDPOINTS)
def test_unknown_model(api, path, base):
    json_error(api.post(path, dict(base, model="no-such-model")), 404, "model_not_found")


@pytest.mark.parametrize("method,path", [("GET", "/"), ("GET", "/v1"), ("GET", "/v1/nope"),
                                         ("POST", "/v1/nope"), ("GET", "/healthz/x"),
                                         ("POST", "/v2/embed"), ("GET", "/v1/models/a/b")])
def test_unknown_route(api, method, path):
    body = {"text": "a"} if method == "POST" else None
    json_error(api.request(method, path, body), 404, "not_found")


@pytest.mark.parametrize("method,path,allow", [
    ("GET", "/v1/embed", "POST"), ("PUT", "/v1/sentiment", "POST"), ("DELETE", "/v1/classify", "POST"),
    ("GET", "/v1/qa", "POST"), ("POST", "/healthz", "GET"), ("POST", "/readyz", "GET"),
    ("POST", "/metrics", "GET"), ("DELETE", "/v1/models", "GET"), ("POST", "/v1/models/tiny-qa", "GET"),
])
def test_method_not_allowed(api, method, path, allow):
    body = {"text": "a"} if method in ("POST", "PUT") else None
    r = api.request(method, path, body)
    json_error(r, 405, "method_not_allowed")
    got = {m.strip() for m in (r.headers.get("Allow") or "").split(",") if m.strip()}
    assert allow in got, f"Allow header {r.headers.get('Allow')!r} must list {allow}"
    assert method not in got, f"Allow header {r.headers.get('Allow')!r} lists {method}"


def _post_raw(api, body, extra_headers=b""):
    head = (b"POST /v1/sentiment HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n" % len(body)) + extra_headers + b"\r\n"
    return api.raw(head + body)


def test_body_too_large(api):
    body = b'{"text": "' + b"a" * (MAX_BODY - 11) + b'"}'
    assert len(body) == MAX_BODY + 1
    json_error(_post_raw(api, body), 413, "payload_too_large")


def test_body_too_large_declared(api):
    """Refused on Content-Length alone: the client sends the headers and waits."""
    import socket
    import http.client
    s = socket.create_connection((api.host, api.port), timeout=30)
    try:
        s.sendall(b"POST /v1/sentiment HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n{\"text\": \"" % (50 * MAX_BODY))
        r = http.client.HTTPResponse(s, method="POST")
        r.begin()
        from conftest import Resp
        json_error(Resp(r.status, r.headers, r.read()), 413, "payload_too_large")
    finally:
        s.close()


def test_body_too_large_chunked(api):
    chunk = b"a" * 65536
    parts = [b'{"text": "']
    parts += [chunk] * (MAX_BODY // len(chunk) + 1)
    parts.append(b'"}')
    data = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"
    head = (b"POST /v1/sentiment HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    json_error(api.raw(head + data), 413, "payload_too_large")


def test_body_under_limit_accepted(api):
    # A body close to the limit (padding in a whitespace run) is accepted.
    core = b'{"text": "fits"}'
    body = core[:-1] + b" " * (MAX_BODY - len(core) - 16) + b"}"
    r = _post_raw(api, body)
    assert r.status == 200, f"a body of {len(body)} bytes (limit {MAX_BODY}) must pass: {r!r}"


def test_too_many_texts(api):
    json_error(api.post("/v1/sentiment", {"texts": ["t"] * (MAX_TEXTS + 1)}), 413, "too_many_texts")
    json_error(api.post("/v1/embed", {"texts": ["t"] * (MAX_TEXTS + 1), "model": "tiny-embed"}),
               413, "too_many_texts")
    items = [{"question": "q?", "context": "c"}] * (MAX_TEXTS + 1)
    json_error(api.post("/v1/qa", {"items": items, "model": "tiny-qa"}), 413, "too_many_texts")
    r = api.post("/v1/sentiment", {"texts": ["t"] * MAX_TEXTS})
    assert r.status == 200 and len(r.json()["results"]) == MAX_TEXTS, r


def test_text_too_long(api):
    long_ascii = "a" * (MAX_TEXT_BYTES + 1)
    long_utf8 = "é" * (MAX_TEXT_BYTES // 2 + 1)  # under the limit in characters, over in bytes
    for t in (long_ascii, long_utf8):
        json_error(api.post("/v1/sentiment", {"text": t}), 413, "text_too_long")
        json_error(api.post("/v1/embed", {"texts": ["ok", t], "model": "tiny-embed"}), 413,
                   "text_too_long")
    json_error(api.post("/v1/qa", {"question": "q?", "context": long_ascii, "model": "tiny-qa"}),
               413, "text_too_long")
    json_error(api.post("/v1/qa", {"question": long_ascii, "context": "c", "model": "tiny-qa"}),
               413, "text_too_long")


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded",
                                   "multipart/form-data; boundary=x", "application/jsonx", None])
def test_unsupported_media_type(api, ctype):
    r = api.post("/v1/sentiment", {"text": "a"}, content_type=ctype)
    json_error(r, 415, "unsupported_media_type")


def test_error_responses_carry_request_id(api):
    for r in (api.post("/v1/sentiment", b"{", headers={"X-Request-Id": "err-rid-1"}),
              api.post("/v1/sentiment", {"text": ""}, headers={"X-Request-Id": "err-rid-1"}),
              api.post("/v1/sentiment", {"text": "a"}, content_type="text/plain",
                       headers={"X-Request-Id": "err-rid-1"})):
        assert r.headers.get("X-Request-Id") == "err-rid-1", f"{r!r}: X-Request-Id missing"


def test_server_survives_errors(api):
    """After all the bad requests the daemon still answers correctly."""
    r = api.post("/v1/sentiment", {"text": "still alive"})
    assert r.status == 200, r
    assert api.nlpd.alive(), "nlpd died"


def test_deeply_nested_json(api):
    """A pathological nesting depth is a 400 (or 422), never a crash."""
    for body in (b"[" * 100000, b'{"text": "a", "model": ' + b"[" * 50000 + b"]" * 50000 + b"}"):
        r = api.post("/v1/sentiment", body)
        assert r.status in (400, 422), f"nested JSON: {r!r}"
        assert r.error_code in ("malformed_json", "invalid_field"), r
    assert api.post("/v1/sentiment", {"text": "still alive"}).status == 200


def test_qa_window_bound(api):
    """Issue 12 item 1: a question that leaves doc_stride + 1 context tokens per window
    made a window per context token (16 KiB became ~16,000 windows). tiny-qa has
    128-token windows and stride 64: a 60-token question leaves 64 + 1."""
    question = "what " * 60
    context = "the bank opened a branch in town. " * 200
    r = api.post("/v1/qa", {"question": question, "context": context, "model": "tiny-qa"})
    assert r.status in (413, 422), f"want a refusal, got {r!r}"
    body = r.json()
    assert body["error"]["code"] in ("invalid_field", "request_too_large", "text_too_long",
                                     "payload_too_large"), body
    assert "windows" in body["error"]["message"], body
    # A short question over the same context is answered.
    r = api.post("/v1/qa", {"question": "who?", "context": context[:2000], "model": "tiny-qa"})
    assert r.status == 200, r
