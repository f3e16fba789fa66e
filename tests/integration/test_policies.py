"""Policies that need a daemon configured for them: API keys (401), a tiny queue
(429 + Retry-After) and deadlines (504). Directly and through nginx."""
import concurrent.futures as cf
import threading

import pytest

from conftest import FIXTURES, ModelSpec, api_key_file, json_error

KEYS = ["it-secret-key-number-one", "it-other-key-2"]


@pytest.fixture(scope="module")
def authed(spawn_module, tmp_path_factory):
    kf = api_key_file(tmp_path_factory.mktemp("keys") / "api_keys", KEYS)
    # A comment line and a blank line must be accepted in the key file.
    kf.write_text("# nlpd API keys (SHA-256)\n\n" + kf.read_text())
    return spawn_module([ModelSpec("tiny-embed", FIXTURES / "bert_st", "embed"),
                         ModelSpec("tiny-sentiment", FIXTURES / "bert_cls", "sentiment")],
                        api_key_file=kf)


BODY = {"text": "hello", "model": "tiny-embed"}


def test_auth_missing_key(authed):
    json_error(authed.post("/v1/embed", BODY), 401, "unauthorized")
    json_error(authed.post("/v1/sentiment", {"text": "x"}), 401, "unauthorized")
    json_error(authed.get("/v1/models"), 401, "unauthorized")
    json_error(authed.get("/v1/models/tiny-embed"), 401, "unauthorized")


@pytest.mark.parametrize("headers", [
    {"Authorization": "Bearer wrong-key"},
    {"Authorization": "Bearer " + KEYS[0] + "x"},
    {"Authorization": "Bearer " + KEYS[0][:-1]},
    {"Authorization": "Bearer "},
    {"Authorization": "Basic " + KEYS[0]},
    {"Authorization": KEYS[0]},
    {"X-API-Key": "wrong"},
    {"X-API-Key": ""},
], ids=["wrong", "longer", "shorter", "empty-bearer", "basic", "no-scheme", "xkey-wrong", "xkey-empty"])
def test_auth_wrong_key(authed, headers):
    json_error(authed.post("/v1/embed", BODY, headers=headers), 401, "unauthorized")


@pytest.mark.parametrize("headers", [
    {"Authorization": "Bearer " + KEYS[0]},
    {"Authorization": "Bearer " + KEYS[1]},
    {"X-API-Key": KEYS[0]},
    {"X-API-Key": KEYS[1]},
], ids=["bearer-1", "bearer-2", "xkey-1", "xkey-2"])
def test_auth_good_key(authed, headers):
    r = authed.post("/v1/embed", BODY, headers=headers)
    assert r.status == 200, f"valid key refused: {r!r}"
    r = authed.get("/v1/models", headers=headers)
    assert r.status == 200, f"valid key refused on /v1/models: {r!r}"


def test_auth_open_endpoints(authed):
    for path in ("/healthz", "/readyz", "/metrics"):
        r = authed.get(path)
        assert r.status == 200, f"{path} must stay open with API keys configured: {r!r}"


def test_auth_checked_before_body(authed):
    """Without a key, even a malformed body is 401 (no parsing for strangers)."""
    json_error(authed.post("/v1/embed", b"{"), 401, "unauthorized")


def test_auth_keys_never_logged(authed):
    authed.post("/v1/embed", BODY, headers={"Authorization": "Bearer " + KEYS[0]})
    authed.post("/v1/embed", BODY, headers={"X-API-Key": "not-a-key-but-secret-looking"})
    log = authed.nlpd.log()
    for secret in KEYS + ["not-a-key-but-secret-looking"]:
        assert secret not in log, f"the nlpd log contains an API key ({secret[:6]}...)"


# ------------------------------------------------------------- queue full

def test_queue_full(spawn):
    # queue_capacity 1 sequence; a free worker waits up to 1 s for batch-mates, so
    # the first request occupies the queue and a burst behind it overflows.
    t = spawn([ModelSpec("tiny-embed", FIXTURES / "bert_st", "embed", queue_capacity=1,
                         max_delay_us=1_000_000, always_delay=True, max_batch_size=64, workers=1)])
    n = 24
    barrier = threading.Barrier(n)

    def one(i):
        barrier.wait(30)
        return t.post("/v1/embed", {"text": f"burst text number {i}"})

    with cf.ThreadPoolExecutor(n) as ex:
        rs = list(ex.map(one, range(n)))
    codes = sorted(r.status for r in rs)
    assert set(codes) <= {200, 429}, f"a burst must get 200 or 429 only: {rs}"
    full = [r for r in rs if r.status == 429]
    assert full, f"no 429 from a burst of {n} into a queue of 1: {codes}"
    assert any(r.status == 200 for r in rs), f"every request refused: {codes}"
    for r in full:
        json_error(r, 429, "queue_full")
        ra = r.headers.get("Retry-After")
        assert ra is not None and ra.strip().isdigit(), f"429 without a delta-seconds Retry-After: {ra!r}"
        assert r.headers.get("X-Request-Id"), "429 without X-Request-Id"
    # The queue drains; the daemon serves again.
    r = t.post("/v1/embed", {"text": "after the burst"})
    assert r.status == 200, r
    m = t.get("/metrics").ok().body.decode()
    assert "429" in m, "/metrics does not count the 429 responses"


# --------------------------------------------------------------- deadlines

def test_deadline_exceeded(spawn):
    # A free worker waits up to 400 ms for batch-mates: requests that may wait only
    # 20 ms expire in the queue and must get 504 without being computed.
    t = spawn([ModelSpec("tiny-embed", FIXTURES / "bert_st", "embed", max_delay_us=400_000, always_delay=True,
                         max_batch_size=64, workers=1),
               ModelSpec("short", FIXTURES / "bert_cls", "sentiment", max_delay_us=400_000, always_delay=True,
                         timeout_ms=20, max_timeout_ms=60000)])
    n = 8
    barrier = threading.Barrier(n)

    def one(i):
        barrier.wait(30)
        return t.post("/v1/embed", {"text": f"deadline text {i}", "timeout_ms": 20})

    with cf.ThreadPoolExecutor(n) as ex:
        rs = list(ex.map(one, range(n)))
    for r in rs:
        json_error(r, 504, "deadline_exceeded")
        assert r.headers.get("X-Request-Id")
    # The model's configured timeout_ms (20 ms) is the default deadline...
    json_error(t.post("/v1/sentiment", {"text": "model default deadline"}), 504, "deadline_exceeded")
    # ...and a request may ask for more, up to max_timeout_ms.
    r = t.post("/v1/sentiment", {"text": "longer deadline", "timeout_ms": 30000})
    assert r.status == 200, r
    # Default deadline (10 s) on the embed model: served after the batching delay.
    r = t.post("/v1/embed", {"text": "patient"})
    assert r.status == 200, r


def test_deadline_under_load(spawn):
    """A worker busy with large batches; short-deadline requests queued behind expire."""
    t = spawn([ModelSpec("tiny-qa", FIXTURES / "bert_qa", "qa", workers=1, max_batch_tokens=2048,
                         max_delay_us=0, queue_capacity=1_000_000)])
    ctx = " ".join(f"Sentence {i} tells that the item number {i} was built in {1900 + i}."
                   for i in range(120))[:16000]
    # timeout_ms bounds compute too: the heavy ones get the most a request may ask for, so
    # that a slow build (sanitizers) still serves them.
    heavy = {"items": [{"question": f"When was item {i} built?", "context": ctx} for i in range(16)],
             "timeout_ms": 60000}
    n_heavy, n_short = 6, 12
    barrier = threading.Barrier(n_heavy + n_short)

    def heavy_one(i):
        barrier.wait(30)
        return t.post("/v1/qa", heavy)

    def short_one(i):
        barrier.wait(30)
        return t.post("/v1/qa", {"question": "When?", "context": ctx, "timeout_ms": 1})

    with cf.ThreadPoolExecutor(n_heavy + n_short) as ex:
        hs = [ex.submit(heavy_one, i) for i in range(n_heavy)]
        ss = [ex.submit(short_one, i) for i in range(n_short)]
        hs = [f.result() for f in hs]
        ss = [f.result() for f in ss]
    for r in hs:
        assert r.status == 200, f"heavy request: {r!r}"
    codes = [r.status for r in ss]
    assert set(codes) <= {200, 504}, f"short-deadline requests: {ss}"
    assert 504 in codes, f"no request with timeout_ms 1 expired behind {n_heavy} heavy ones: {codes}"
    for r in ss:
        if r.status == 504:
            json_error(r, 504, "deadline_exceeded")


# ------------------------------------------------------------- client gone

def test_client_gone_while_queued(spawn):
    """A client that disconnects while its request waits is dropped (counted as 499);
    the daemon carries on."""
    import socket
    from conftest import metric, scrape, wait_until
    t = spawn([ModelSpec("tiny-embed", FIXTURES / "bert_st", "embed", max_delay_us=2_500_000, always_delay=True,
                         max_batch_size=64, workers=1)])
    body = b'{"text": "I will not wait", "model": "tiny-embed"}'
    socks = []
    for i in range(3):
        s = socket.create_connection((t.host, t.port), timeout=30)
        s.sendall(b"POST /v1/embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        socks.append(s)
    wait_until(lambda: metric(scrape(t), "nlpd_queue_depth", model="tiny-embed") >= 3, 30,
               "3 requests queued")
    for s in socks:
        s.close()
    wait_until(lambda: metric(scrape(t), "nlpd_requests_total", endpoint="embed", status="499") >= 3,
               30, "the 3 abandoned requests counted with status 499")
    r = t.post("/v1/embed", {"text": "I will wait"})
    assert r.status == 200, r
    assert t.nlpd.alive()
