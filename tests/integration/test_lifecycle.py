"""Lifecycle: SIGTERM drains requests in flight (none lost), refuses new work at
once (connection refused, or 503 draining/not_ready), /readyz turns 503, exit 0.
Directly and through nginx."""
import concurrent.futures as cf
import http.client
import signal
import time

import pytest

from conftest import (FIXTURES, MINILM, ModelSpec, have_minilm, metric, scrape, sst2_sentences,
                      wait_until)

N_REQ = 8
TEXTS_PER_REQ = 8


def fast_model():
    return ModelSpec("fast", FIXTURES / "bert_st", "embed")


def open_keepalive(t):
    """A client connection opened (and used) before SIGTERM."""
    keep = t.keepalive_conn(timeout=30)
    keep.request("POST", "/v1/embed", body=b'{"text": "warm", "model": "fast"}',
                 headers={"Content-Type": "application/json"})
    r = keep.getresponse()
    r.read()
    assert r.status == 200, r.status
    return keep


GONE = (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected,
        http.client.NotConnected)


def slow_model():
    # A free worker waits up to 3 s for batch-mates (a batch needs 512 sequences), so
    # the requests are still queued when SIGTERM comes; the drain must finish them.
    path = MINILM if have_minilm() else FIXTURES / "bert_st"
    return ModelSpec("slow", path, "embed", max_delay_us=3_000_000, always_delay=True, max_batch_size=512,
                     max_batch_tokens=1 << 20, workers=1, timeout_ms=120000, max_timeout_ms=120000)


def texts():
    s = sst2_sentences() or [f"sentence number {i} about the service and the staff" for i in range(200)]
    return [s[i % len(s)] for i in range(N_REQ * TEXTS_PER_REQ)]


def new_request_refused(t, path="/v1/embed"):
    """A request on a NEW connection after SIGTERM: None when refused/reset, else Resp."""
    try:
        return t.post(path, {"text": "late", "model": "slow"}, timeout=30)
    except (ConnectionRefusedError, ConnectionResetError, BrokenPipeError,
            http.client.RemoteDisconnected):
        return None


def assert_readyz_turns_503(keep, mode):
    """Poll /readyz on a kept-alive connection right after SIGTERM: 200 only until the
    daemon handles the signal (bounded: 5 s), then 503 - or, directly, the daemon
    closes the idle connection."""
    t_end = time.monotonic() + 5
    while True:
        try:
            keep.request("GET", "/readyz")
            rr = keep.getresponse()
            rr.read()
        except GONE:
            assert mode == "direct", "nginx dropped a client connection during drain"
            return
        if rr.status != 200:
            assert rr.status == 503, f"/readyz during drain: {rr.status} (want 503)"
            return
        assert time.monotonic() < t_end, "/readyz still 200 5 s after SIGTERM"
        time.sleep(0.01)


def assert_not_served(r, mode, what):
    if r is None:
        assert mode == "direct", f"{what}: nginx must answer (503), not drop the connection"
        return
    assert r.status == 503, f"{what}: want connection refused or 503, got {r!r}"
    code = r.error_code
    assert code in ("draining", "not_ready"), f"{what}: 503 with code {code!r}"


def test_sigterm_drains_in_flight(spawn):
    t = spawn([slow_model(), fast_model()], drain_timeout_ms=60000)
    nlpd = t.nlpd
    all_texts = texts()
    bodies = [{"texts": all_texts[i * TEXTS_PER_REQ:(i + 1) * TEXTS_PER_REQ], "model": "slow"}
              for i in range(N_REQ)]

    keep = open_keepalive(t)

    with cf.ThreadPoolExecutor(N_REQ) as ex:
        futs = [ex.submit(t.post, "/v1/embed", b) for b in bodies]
        want = N_REQ * TEXTS_PER_REQ
        wait_until(lambda: metric(scrape(t), "nlpd_queue_depth", model="slow") >= want
                   or any(f.done() for f in futs), 60, f"{want} sequences queued")
        assert not any(f.done() for f in futs), \
            f"a request finished before SIGTERM: {[f.result() for f in futs if f.done()]}"

        nlpd.signal(signal.SIGTERM)
        t_sig = time.monotonic()

        # Readiness turns 503 at once for whoever can still ask (kept-alive connection).
        assert_readyz_turns_503(keep, t.mode)

        # New work is refused while the drain goes on, never served.
        assert_not_served(new_request_refused(t), t.mode, "new request after SIGTERM")

        results = [f.result() for f in futs]
    for i, r in enumerate(results):
        assert r.status == 200, f"in-flight request {i} lost in the drain: {r!r}"
        j = r.json()
        assert len(j["results"]) == TEXTS_PER_REQ, f"request {i}: {len(j['results'])} results"
        assert all(len(x["embedding"]) > 0 for x in j["results"])
    rc = nlpd.wait_exit()
    assert rc == 0, f"nlpd exited with {rc} after draining"
    assert time.monotonic() - t_sig < 60
    assert not nlpd.sanitizer_reports(), nlpd.sanitizer_reports()
    keep.close()
    if t.mode == "nginx":
        # With nlpd gone, nginx answers 503 not_ready in JSON.
        assert_not_served(new_request_refused(t), "nginx", "request after nlpd exited")


def test_draining_metrics_and_refusal(spawn):
    """Between SIGTERM and exit, a kept-alive client sees 503 on /v1 and /readyz."""
    t = spawn([slow_model(), fast_model()], drain_timeout_ms=60000)
    keep = open_keepalive(t)
    with cf.ThreadPoolExecutor(2) as ex:
        fut = ex.submit(t.post, "/v1/embed", {"texts": texts()[:TEXTS_PER_REQ], "model": "slow"})
        wait_until(lambda: metric(scrape(t), "nlpd_queue_depth", model="slow") >= TEXTS_PER_REQ
                   or fut.done(), 60, "the request queued")
        t.nlpd.signal(signal.SIGTERM)
        assert_readyz_turns_503(keep, t.mode)
        try:
            keep.request("POST", "/v1/embed", body=b'{"text": "x", "model": "fast"}',
                         headers={"Content-Type": "application/json"})
            rr = keep.getresponse()
            body = rr.read()
            assert rr.status == 503, f"POST during drain: {rr.status} {body[:200]!r}"
            import json
            assert json.loads(body)["error"]["code"] in ("draining", "not_ready"), body
        except GONE:
            assert t.mode == "direct", "nginx dropped a client connection during drain"
        assert fut.result().status == 200, fut.result()
    assert t.nlpd.wait_exit() == 0
    keep.close()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_idle_exit_zero(spawn, sig):
    t = spawn([ModelSpec("tiny-embed", FIXTURES / "bert_st", "embed")])
    assert t.post("/v1/embed", {"text": "hi"}).status == 200
    t.nlpd.signal(sig)
    assert t.nlpd.wait_exit(30) == 0
    assert not t.nlpd.sanitizer_reports(), t.nlpd.sanitizer_reports()
