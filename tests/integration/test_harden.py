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
    """start(models, **cfg) -> Target of a daemon reached directly; killed at the end
    (tests here check their own exit statuses)."""
    started = []

    def start(models, **cfg):
        n = Nlpd(tmp_path / f"d{len(started)}", models, **cfg)
        started.append(n)
        n.start()
        return Target("127.0.0.1", n.port, "direct", n)

    yield start
    for n in started:
        n.kill()
        reports = n.sanitizer_reports()
        assert not reports, "\n".join(reports)


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
