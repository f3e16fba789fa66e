"""Server hardening (issue 12): bounded cost before work starts, early refusals,
a prompt exit. Transport-level tests talk to nlpd directly (raw sockets)."""
import http.client
import json
import re
import signal
import socket
import threading
import time

import pytest

from conftest import (FIXTURES, MINILM, MAX_BODY, ModelSpec, Nlpd, Resp, Target, have_minilm,
                      json_error, metric, scrape, wait_until)


@pytest.fixture
def direct(tmp_path):
    """start(models, **cfg) -> Target of a daemon reached directly; stopped with SIGTERM
    at the end unless the test ended it (and then checked its exit status)."""
    started = []

    def start(models, **cfg):
        n = Nlpd(tmp_path / f"d{len(started)}", models, **cfg)
        started.append(n)
        n.start()
        return Target("127.0.0.1", n.port, "direct", n)

    yield start
    problems = []
    for n in started:
        if n.alive():  # a graceful stop: exit 0, and the sanitizers' leak check runs
            problems += n.stop()
        else:
            problems += n.sanitizer_reports()
    assert not problems, "\n".join(problems)


def need_minilm():
    assert have_minilm(), f"MiniLM missing at {MINILM} (ln -s /work/main/models models)"


def tiny_embed(**kw):
    return ModelSpec("tiny-embed", FIXTURES / "bert_st", "embed", **kw)


def recv_response(s, method="POST"):
    r = http.client.HTTPResponse(s, method=method)
    r.begin()
    return Resp(r.status, r.headers, r.read())


# ------------------------------------------------------------- 8: raw NUL

def test_raw_nul_in_string_refused(direct):
    t = direct([ModelSpec("tiny-sentiment", FIXTURES / "bert_cls", "sentiment")])
    body = b'{"text": "good\x00 awful"}'
    r = t.post("/v1/sentiment", body)
    j = json_error(r, 422, "invalid_field")
    assert "NUL" in j["error"]["message"], j
    # Other raw control characters inside strings are malformed JSON.
    json_error(t.post("/v1/sentiment", b'{"text": "good\x01 awful"}'), 400, "malformed_json")
    # The escaped forms of newline/tab are fine.
    assert t.post("/v1/sentiment", b'{"text": "good\\n\\tawful"}').status == 200


# -------------------------------------------------- 9: exit and start-up

def test_second_signal_exits_during_a_batch(direct):
    """The loop thread joins the workers when it stops: a second SIGTERM must still
    end the process at once, not after the batch."""
    need_minilm()
    # A (256 texts) fills a batch by itself; B (1 text) queued behind it shows that A
    # is computing: the queue holds exactly B only once the worker took A.
    t = direct([ModelSpec("big", MINILM, "embed", max_delay_us=0, max_batch_size=256,
                          max_batch_tokens=1 << 22, workers=1, threads=1,
                          timeout_ms=600000, max_timeout_ms=600000)],
               limits={"max_texts": 512}, drain_timeout_ms=600000)
    text = " ".join(f"word{i} and more words" for i in range(80))
    holder = {}

    def post(key, body):
        try:
            holder[key] = t.post("/v1/embed", body, timeout=600)
        except OSError as e:
            holder[key] = e

    ths = [threading.Thread(target=post, args=("a", {"texts": [text] * 256}), daemon=True)]
    ths[0].start()
    wait_until(lambda: metric(scrape(t), "nlpd_requests_in_flight") >= 1, 30, "A to arrive")
    ths.append(threading.Thread(target=post, args=("b", {"text": "behind"}), daemon=True))
    ths[1].start()
    wait_until(lambda: metric(scrape(t), "nlpd_queue_depth", model="big") == 1, 60,
               "A computing with B queued behind it")
    t.nlpd.signal(signal.SIGTERM)
    wait_until(lambda: "draining" in t.nlpd.log(), 10, "the first SIGTERM to be handled")
    assert "a" not in holder, "the batch finished before the second signal: make it bigger"
    t0 = time.monotonic()
    t.nlpd.signal(signal.SIGTERM)
    rc = t.nlpd.wait_exit(120)
    took = time.monotonic() - t0
    assert took < 5, f"nlpd took {took:.1f}s to exit after a second SIGTERM during a batch"
    assert rc == 1, f"a forced exit must not report success: exit {rc}"
    for th in ths:
        th.join(30)


def test_signal_stops_model_loading(direct, tmp_path):
    """SIGTERM while models load: loading stops after the model being loaded; exit 0."""
    need_minilm()
    n_models = 12
    models = [ModelSpec(f"m{i}", MINILM, "embed", threads=1, version=f"v{i}")
              for i in range(n_models)]
    n = Nlpd(tmp_path / "loading", models)
    # Start without waiting for readiness.
    from conftest import render_config, free_port
    import subprocess
    from conftest import NLPD_BIN, ROOT
    n.port = free_port()
    n.workdir.mkdir(parents=True, exist_ok=True)
    cfg = n.workdir / "nlpd.json"
    cfg.write_text(json.dumps(render_config(n.port, models)))
    with open(n.log_path, "ab") as log:
        n.proc = subprocess.Popen([str(NLPD_BIN), "--config", str(cfg)], stdin=subprocess.DEVNULL,
                                  stdout=log, stderr=subprocess.STDOUT, cwd=str(ROOT))
    try:
        wait_until(lambda: re.search(r"model m0: .* loaded in", n.log()), 60,
                   "the first model to load")
        n.signal(signal.SIGTERM)
        rc = n.wait_exit(60)
        loaded = len(re.findall(r"model m\d+: .* loaded in", n.log()))
        assert rc == 0, f"exit {rc} after SIGTERM during loading:\n{n.log()[-2000:]}"
        assert loaded < n_models, f"all {n_models} models were loaded after SIGTERM"
        assert "loading stopped" in n.log()
    finally:
        n.kill()


# ------------------------------------------------------- 7: refuse early

def head_only(t, head, timeout=5):
    """Send a request's headers only (its body never comes); return the response,
    which must arrive without the body."""
    s = socket.create_connection((t.host, t.port), timeout=timeout)
    try:
        s.sendall(head)
        return recv_response(s)
    finally:
        s.close()


def test_header_refusals_do_not_wait_for_the_body(direct, tmp_path):
    from conftest import api_key_file
    kf = api_key_file(tmp_path / "keys", ["a-key-for-the-test"])
    t = direct([tiny_embed()], api_key_file=kf)
    auth = b"Authorization: Bearer a-key-for-the-test\r\n"
    cases = [
        (b"POST /v1/embed", b"Content-Type: application/json\r\n", 401, "unauthorized"),
        (b"POST /v1/nowhere", auth + b"Content-Type: application/json\r\n", 404, "not_found"),
        (b"PUT /v1/embed", auth + b"Content-Type: application/json\r\n", 405,
         "method_not_allowed"),
        (b"POST /v1/embed", auth + b"Content-Type: text/plain\r\n", 415, "unsupported_media_type"),
    ]
    for line, extra, status, code in cases:
        for framing in (b"Content-Length: 5000\r\n", b"Transfer-Encoding: chunked\r\n"):
            head = line + b" HTTP/1.1\r\nHost: x\r\n" + extra + framing + b"\r\n"
            try:
                r = head_only(t, head)
            except socket.timeout:
                pytest.fail(f"{line.decode()} ({framing.decode().strip()}): no {status} "
                            f"before the body was sent")
            json_error(r, status, code)
    # Still serving.
    r = t.post("/v1/embed", {"text": "after"}, headers={"Authorization": "Bearer a-key-for-the-test"})
    assert r.status == 200, r


def test_chunked_body_stops_at_the_limit(direct):
    t = direct([tiny_embed()])
    s = socket.create_connection((t.host, t.port), timeout=5)
    try:
        s.sendall(b"POST /v1/embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n")
        chunk = b"a" * 65536
        for _ in range(MAX_BODY // len(chunk) + 2):
            s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        # The body never ends: the answer must come anyway.
        try:
            r = recv_response(s)
        except socket.timeout:
            pytest.fail("no 413 while a chunked body over the limit keeps coming")
        json_error(r, 413, "payload_too_large")
    finally:
        s.close()
    assert t.post("/v1/embed", {"text": "after"}).status == 200


def test_request_must_arrive_within_a_total_time(direct):
    t = direct([tiny_embed()], limits={"request_timeout_ms": 1000, "connection_timeout_s": 60})
    # A body trickling in a byte at a time is never idle, yet it is cut off.
    s = socket.create_connection((t.host, t.port), timeout=10)
    t0 = time.monotonic()
    try:
        s.sendall(b"POST /v1/embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 1000\r\n\r\n{")
        try:
            for _ in range(100):
                s.sendall(b" ")
                time.sleep(0.05)  # the slow client being simulated, not a wait for nlpd
        except OSError:
            pass  # cut off
        json_error(recv_response(s), 408, "request_timeout")
    finally:
        s.close()
    assert time.monotonic() - t0 < 4.5, "the 408 came long after request_timeout_ms"
    # Headers that never end: the connection is closed.
    s = socket.create_connection((t.host, t.port), timeout=10)
    t0 = time.monotonic()
    try:
        s.sendall(b"POST /v1/embed HTTP/1.1\r\nHost: x\r\n")
        got = b""
        try:
            for _ in range(100):
                s.sendall(b"X-Slow: 1\r\n")
                time.sleep(0.05)
        except OSError:
            pass
        try:
            got = s.recv(4096)
        except OSError:
            got = b""
        assert got == b"" or b"408" in got.split(b"\r\n")[0], got[:200]
    finally:
        s.close()
    assert time.monotonic() - t0 < 4.5, "slow headers were not cut off"
    assert t.post("/v1/embed", {"text": "after"}).status == 200


def test_connections_per_client_bounded(direct):
    t = direct([tiny_embed()], limits={"max_connections_per_client": 2})
    held = []

    def hold_one():
        # Connections closed just before (the readiness probe) may not be reaped yet.
        c = t.keepalive_conn(timeout=10)
        try:
            c.request("GET", "/healthz")
            r = c.getresponse()
            r.read()
        except (OSError, http.client.HTTPException):
            c.close()
            return False
        if r.status != 200:
            c.close()
            return False
        held.append(c)
        return True
    try:
        for _ in range(2):
            wait_until(hold_one, 10, "a connection to be accepted")
        s = socket.create_connection((t.host, t.port), timeout=5)
        try:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            r = recv_response(s, "GET")
        finally:
            s.close()
        json_error(r, 429, "too_many_connections")
        assert r.headers.get("Retry-After")
    finally:
        for c in held:
            c.close()
    # Closed connections are given back.
    wait_until(lambda: t.get("/healthz").status == 200, 10, "a new connection to be accepted")


# ----------------------------------------------- 6: in-flight bounds at arrival

def hold_body(t, path="/v1/embed"):
    """A request whose headers arrived and whose body is still to come."""
    s = socket.create_connection((t.host, t.port), timeout=10)
    body = json.dumps({"text": "held"}).encode()
    s.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n" % (path.encode(), len(body)))
    return s, body


def test_in_flight_bounded_at_arrival(direct):
    t = direct([tiny_embed()], limits={"max_in_flight": 1})
    s, body = hold_body(t)
    try:
        wait_until(lambda: metric(scrape(t), "nlpd_requests_in_flight") >= 2, 10,
                   "the held request to arrive")  # the held one and this scrape
        try:
            r = head_only(t, b"POST /v1/embed HTTP/1.1\r\nHost: x\r\nContent-Type: "
                             b"application/json\r\nContent-Length: 20\r\n\r\n")
        except socket.timeout:
            pytest.fail("the second request was not refused from its headers")
        j = json_error(r, 429, "queue_full")
        assert "max_in_flight" in j["error"]["message"]
        assert r.headers.get("Retry-After", "").isdigit()
        s.sendall(body)
        assert recv_response(s).status == 200
    finally:
        s.close()
    assert t.post("/v1/embed", {"text": "released"}).status == 200


def test_model_in_flight_bounded(direct):
    # One model for /v1/embed: its bound applies from the headers.
    t = direct([tiny_embed(max_in_flight=1)])
    s, body = hold_body(t)
    try:
        wait_until(lambda: metric(scrape(t), "nlpd_requests_in_flight") >= 2, 10,
                   "the held request to arrive")
        r = head_only(t, b"POST /v1/embed HTTP/1.1\r\nHost: x\r\nContent-Type: "
                         b"application/json\r\nContent-Length: 20\r\n\r\n")
        j = json_error(r, 429, "queue_full")
        assert "tiny-embed" in j["error"]["message"]
        s.sendall(body)
        assert recv_response(s).status == 200
    finally:
        s.close()


def test_model_in_flight_bounded_when_named(direct):
    # Two models serve /v1/embed: the body names one; its bound applies before tokenising.
    t = direct([tiny_embed(max_in_flight=1, max_delay_us=5_000_000, always_delay=True),
                ModelSpec("other", FIXTURES / "bert_st", "embed")])
    holder = {}
    th = threading.Thread(target=lambda: holder.setdefault(
        "r", t.post("/v1/embed", {"text": "queued", "model": "tiny-embed"}, timeout=60)))
    th.start()
    wait_until(lambda: metric(scrape(t), "nlpd_queue_depth", model="tiny-embed") == 1, 10,
               "the first request to be queued")
    json_error(t.post("/v1/embed", {"text": "second", "model": "tiny-embed"}), 429, "queue_full")
    assert t.post("/v1/embed", {"text": "to the other", "model": "other"}).status == 200
    th.join(60)
    assert holder["r"].status == 200, holder


# ------------------------------------- 1 (server side), 2: limits said and refused

def test_models_say_their_limits(direct):
    t = direct([tiny_embed(max_in_flight=7, max_job_mib=64),
                ModelSpec("tiny-qa", FIXTURES / "bert_qa", "qa")], limits={"max_texts": 9})
    r = t.get("/v1/models/tiny-embed")
    assert r.status == 200, r
    lim = r.json()["limits"]
    assert lim["max_texts"] == 9 and lim["max_in_flight"] == 7 and lim["max_job_mib"] == 64, lim
    assert lim["max_seq_len"] > 0 and lim["max_body_bytes"] == MAX_BODY, lim
    lst = t.get("/v1/models").ok().json()
    models = lst["models"] if isinstance(lst, dict) else lst
    qa = [m for m in models if m["name"] == "tiny-qa"][0]["limits"]
    assert qa["qa_window_tokens"] > 0 and qa["qa_doc_stride"] > 0, qa


def test_qa_over_the_window_bound_is_413(direct):
    """The engine refuses a question that leaves no room in a window (ENG_ETOOLONG):
    that is a request too large for the model, 413 with the engine's reason."""
    t = direct([ModelSpec("tiny-qa", FIXTURES / "bert_qa", "qa")])
    q = " ".join(f"word{i}" for i in range(400))
    j = json_error(t.post("/v1/qa", {"question": q, "context": "A short context."}), 413,
                   "request_too_large")
    assert "question" in j["error"]["message"], j


def test_translate_cost_bounded(direct, tmp_path):
    """A translate request's working memory grows with texts x beams x max_length:
    refused (413, before any work) beyond batching.max_job_mib; /v1/models says
    the estimate per text at the maxima."""
    from conftest import have_marian, marian_folder
    assert have_marian(), "the shared OPUS-MT tokenizer is missing"
    t = direct([ModelSpec("tiny-mt-a", marian_folder("marian_a", tmp_path), "translate",
                          max_job_mib=1)])
    lim = t.get("/v1/models/tiny-mt-a").ok().json()["limits"]
    assert lim["max_job_mib"] == 1 and lim["mib_per_text_at_maxima"] > 1, lim
    big = {"texts": ["Hello world!"] * 8, "model": "tiny-mt-a", "beam_size": 8,
           "max_length": 512}
    j = json_error(t.post("/v1/translate", big), 413, "request_too_large")
    assert "max_job_mib" in j["error"]["message"], j
    small = {"text": "Hello world!", "model": "tiny-mt-a", "beam_size": 1, "max_length": 8}
    r = t.post("/v1/translate", small)
    assert r.status == 200, r


def test_large_header_block_is_json_431(direct):
    t = direct([tiny_embed()], limits={"max_header_bytes": 4096})
    s = socket.create_connection((t.host, t.port), timeout=5)
    try:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 6000 + b"\r\n\r\n")
        r = recv_response(s, "GET")
    finally:
        s.close()
    j = json_error(r, 431, "headers_too_large")
    assert "max_header_bytes" in j["error"]["message"], j
    assert t.get("/healthz").status == 200


def test_kept_alive_connection_refusals_are_json(direct):
    """libmicrohttpd's own refusals (HTML) are replaced by JSON on a kept-alive
    connection's later requests too, after a plain and after an inference request:
    a header block over its memory (431), an unparsable or overflowing
    Content-Length (400, 413), an unsupported HTTP version (400)."""
    t = direct([tiny_embed()], limits={"max_header_bytes": 4096})
    body = json.dumps({"text": "hello", "model": "tiny-embed"}).encode()
    embed = (b"POST /v1/embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
             b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    healthz = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    bad = [(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 60000 + b"\r\n\r\n", "GET",
            431, "headers_too_large"),
           (b"POST /v1/embed HTTP/1.1\r\nHost: x\r\nContent-Length: 12x\r\n\r\n", "POST",
            400, "malformed_request"),
           (b"POST /v1/embed HTTP/1.1\r\nHost: x\r\nContent-Length: " + b"9" * 30 + b"\r\n\r\n",
            "POST", 413, "payload_too_large"),
           (b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n", "GET", 400, "malformed_request")]
    for first, method in ((healthz, "GET"), (embed, "POST")):
        for req, m, status, code in bad:
            s = socket.create_connection((t.host, t.port), timeout=10)
            try:
                for _ in range(2):  # kept alive over two good requests
                    s.sendall(first)
                    r = recv_response(s, method)
                    assert r.status == 200, r
                    assert r.headers.get("Connection", "").lower() != "close", r.headers
                s.sendall(req)
                r = recv_response(s, m)
            finally:
                s.close()
            json_error(r, status, code)
    assert t.get("/healthz").status == 200


def test_qa_cost_bounded(direct):
    """QA windows multiply with the context (and with a long question); the request's
    estimated memory is bounded by batching.max_job_mib before compute."""
    t = direct([ModelSpec("tiny-qa", FIXTURES / "bert_qa", "qa", max_job_mib=1)])
    ctx = " ".join(f"Sentence {i} tells that item {i} was built in {1900 + i}." for i in range(300))
    j = json_error(t.post("/v1/qa", {"question": "When was item 7 built?", "context": ctx}), 413,
                   "request_too_large")
    assert "max_job_mib" in j["error"]["message"], j
    r = t.post("/v1/qa", {"question": "Who?", "context": "Marie wrote it."})
    assert r.status == 200, r


def test_qa_request_token_budget(direct):
    """The windows of all a QA request's items share one token budget (what
    batching.max_job_mib allows, said as qa_max_tokens): items that each fit alone are
    refused together, by the engine before their windows are built, naming the item."""
    t = direct([ModelSpec("tiny-qa", FIXTURES / "bert_qa", "qa", max_job_mib=1)])
    lim = t.get("/v1/models/tiny-qa").ok().json()["limits"]
    budget = lim["qa_max_tokens"]
    assert 0 < budget < 64 * lim["qa_window_tokens"], lim
    ctx = " ".join(f"Item {i} was built in {1900 + i}." for i in range(12))
    item = {"question": "When was item 7 built?", "context": ctx}
    r = t.post("/v1/qa", {"items": [item], "model": "tiny-qa"})
    assert r.status == 200, r
    j = json_error(t.post("/v1/qa", {"items": [item] * 64, "model": "tiny-qa"}), 413,
                   "request_too_large")
    msg = j["error"]["message"]
    m = re.match(r"items\[(\d+)\] \(model tiny-qa allows a request's windows (\d+) tokens", msg)
    assert m and int(m.group(1)) > 0 and int(m.group(2)) == budget, j
    assert "max_job_mib" in msg, j


def test_draining_refusal_does_not_wait_for_the_body(direct):
    t = direct([tiny_embed()], drain_timeout_ms=30000)
    keep = socket.create_connection((t.host, t.port), timeout=5)
    s, body = hold_body(t)  # keeps the drain waiting
    try:
        keep.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert recv_response(keep, "GET").status == 200
        wait_until(lambda: metric(scrape(t), "nlpd_requests_in_flight") >= 2, 10,
                   "the held request to arrive")
        t.nlpd.signal(signal.SIGTERM)
        wait_until(lambda: "draining" in t.nlpd.log(), 10, "the drain to start")
        keep.sendall(b"POST /v1/embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 5000\r\n\r\n")
        try:
            r = recv_response(keep)
        except socket.timeout:
            pytest.fail("no 503 before the body was sent while draining")
        json_error(r, 503, "draining")
        s.sendall(body)  # the request in flight still completes
        assert recv_response(s).status == 200
    finally:
        s.close()
        keep.close()
    assert t.nlpd.wait_exit(30) == 0


@pytest.mark.parametrize("head,status,code", [
    (b"POST /v1/embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
     b"Content-Length: 99999999999999999999999\r\n\r\n", 413, "payload_too_large"),
    (b"POST /v1/embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
     b"Content-Length: 12abc\r\n\r\n", 400, "malformed_request"),
    (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n", 431,
     "headers_too_large"),
    (b"GARBAGE\r\n\r\n", 400, "malformed_request"),
], ids=["content-length-overflow", "content-length-not-a-number", "header-block-70k",
        "no-request-line"])
def test_malformed_http_answered_in_json(direct, head, status, code):
    """What libmicrohttpd would refuse itself (with HTML, or silently) is JSON too."""
    t = direct([tiny_embed()])
    s = socket.create_connection((t.host, t.port), timeout=5)
    try:
        s.sendall(head)
        r = recv_response(s)
    finally:
        s.close()
    json_error(r, status, code)
    assert t.get("/healthz").status == 200
