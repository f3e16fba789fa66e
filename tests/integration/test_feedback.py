"""POST /v1/feedback: labelled items appended to DIR/<model>/<instance>.jsonl and
acknowledged (202) only once synced; labels checked against the model; recent answers
named by request id when enabled; group commit; unwritable folder, full disk and
RLIMIT_FSIZE give 503 without losing or keeping anything unacknowledged; SIGKILL during
a burst loses no acknowledged item.

The reader below (read_logs) is what a consumer of the logs must do: take complete lines
only (a torn last line, from a process killed mid-write, is skipped) and parse each.
"""
import json
import os
import re
import resource
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import (FIXTURES, ModelSpec, Nlpd, Target, json_error, metric, optional, scrape,
                      wait_until)

LINE_RE = re.compile(
    r'^\{"time": (\d+), "model": "([^"\\]+)", "version": "([^"\\]+)", "text": ("(?:[^"\\]|\\.)*"), '
    r'"label": ("(?:[^"\\]|\\.)*")(, "request_id": ("(?:[^"\\]|\\.)*"))?\}$')
INSTANCE_RE = re.compile(r"^(.+)-(\d+)-(\d+)(\.\d+)?\.jsonl$")


def fb_models():
    return [
        ModelSpec("tiny-sentiment", FIXTURES / "bert_cls", "sentiment", threads=1),
        ModelSpec("tiny-classify", FIXTURES / "bert_cls", "classify", threads=1),
        ModelSpec("tiny-multilabel", FIXTURES / "bert_cls_multilabel", "classify", threads=1),
        ModelSpec("tiny-embed", FIXTURES / "bert_st", "embed", threads=1),
    ]


LABELS = ["negative", "neutral", "positive"]  # bert_cls's id2label


def read_logs(folder):
    """Every feedback line under folder (DIR or DIR/<model>): (records, torn), records as
    parsed dicts with "_file" added. A torn line may only be a file's last line."""
    records, torn = [], 0
    for f in sorted(Path(folder).rglob("*.jsonl")):
        data = f.read_bytes()
        parts = data.split(b"\n")
        if parts[-1]:
            torn += 1  # no final newline: the last line is torn; skip it
        for ln in parts[:-1]:
            text = ln.decode("utf-8")
            m = LINE_RE.match(text)
            assert m, f"{f}: a complete line that is not in the feedback format: {text[:200]!r}"
            rec = json.loads(text)
            rec["_file"] = f
            records.append(rec)
    return records, torn


def sanitized_host():
    return re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname())


class Daemon:
    """A direct daemon for one test (no nginx): started with the given feedback section,
    stopped (exit 0, clean sanitizer log) by the fixture unless killed."""

    def __init__(self, base):
        self.base, self.items, self.n = Path(base), [], 0

    def __call__(self, feedback, models=None, **kw):
        self.n += 1
        nlpd = Nlpd(self.base / f"d{self.n}", models or fb_models(),
                    extra={"feedback": feedback}, **kw)
        self.items.append(nlpd)
        nlpd.start()
        return Target("127.0.0.1", nlpd.port, "direct", nlpd)

    def close(self):
        problems = []
        for it in self.items:
            if it.proc is not None and it.proc.returncode is not None and it.proc.returncode < 0:
                problems += it.sanitizer_reports()  # killed on purpose
                continue
            problems += it.stop()
        return problems


@pytest.fixture
def daemon(tmp_path):
    d = Daemon(tmp_path)
    yield d
    problems = d.close()
    assert not problems, "\n".join(problems)


def post_fb(t, body, **kw):
    return t.post("/v1/feedback", body, **kw)


# ------------------------------------------------------------------ basics

def test_items_on_disk_in_the_log_format(spawn, tmp_path):
    fbdir = tmp_path / "fb"
    t = spawn(fb_models(), extra={"feedback": {"dir": str(fbdir)}})
    t0 = int(time.time() * 1000)
    texts = ["great service", 'said "no"\nthen left\ttab \\ back', "caf\u00e9 \u2603 \U0001F600"]
    r = post_fb(t, {"model": "tiny-sentiment",
                    "items": [{"text": x, "label": lab} for x, lab in zip(texts, LABELS[::-1], strict=True)]})
    assert r.status == 202, r
    j = r.json()
    assert j["accepted"] == 3 and j["model"] == "tiny-sentiment"
    version = j["version"]
    assert version
    r = post_fb(t, {"model": "tiny-classify", "text": "one more", "label": "neutral"})
    assert r.status == 202 and r.json()["accepted"] == 1, r
    t1 = int(time.time() * 1000)

    files = sorted((fbdir / "tiny-sentiment").iterdir())
    assert len(files) == 1, files
    m = INSTANCE_RE.match(files[0].name)
    assert m and m.group(1) == sanitized_host() and int(m.group(2)) == t.nlpd.proc.pid, files
    assert t0 // 1000 - 120 <= int(m.group(3)) <= t1 // 1000 and not m.group(4)
    assert sorted(p.name for p in (fbdir / "tiny-classify").iterdir()) == [files[0].name]
    # The exact bytes: one object per line, keys in the documented order.
    raw = files[0].read_text(encoding="utf-8")
    lines = raw.split("\n")
    assert lines[-1] == "" and len(lines) == 4, raw
    for ln, x, lab in zip(lines[:-1], texts, LABELS[::-1], strict=True):
        mm = LINE_RE.match(ln)
        assert mm, ln
        rec = json.loads(ln)
        assert list(rec) == ["time", "model", "version", "text", "label"]
        assert rec["model"] == "tiny-sentiment" and rec["version"] == version
        assert rec["text"] == x and rec["label"] == lab
        assert t0 <= rec["time"] <= t1
    recs, torn = read_logs(fbdir)
    assert torn == 0 and len(recs) == 4
    s = scrape(t)
    assert metric(s, "nlpd_feedback_items_total", model="tiny-sentiment") == 3
    assert metric(s, "nlpd_feedback_items_total", model="tiny-classify") == 1
    assert metric(s, "nlpd_requests_total", endpoint="feedback", status="202") == 2


def test_not_configured(api):
    r = post_fb(api, {"model": "tiny-sentiment", "text": "x", "label": "positive"})
    j = json_error(r, 404, "feedback_not_configured")
    assert "feedback.dir" in j["error"]["message"]


def test_refusals(daemon, tmp_path):
    fbdir = tmp_path / "fb"
    t = daemon({"dir": str(fbdir), "max_items": 4})
    r = post_fb(t, {"model": "tiny-sentiment", "items": [
        {"text": "fine", "label": "positive"}, {"text": "x", "label": "POSITIVE"}]})
    j = json_error(r, 422, "unknown_label")
    msg = j["error"]["message"]
    assert "items[1].label" in msg and all(lab in msg for lab in LABELS), msg
    assert "POSITIVE" not in msg  # the client's input is not echoed
    json_error(post_fb(t, {"model": "nope", "text": "x", "label": "a"}), 404, "model_not_found")
    j = json_error(post_fb(t, {"model": "tiny-embed", "text": "x", "label": "a"}), 422,
                   "feedback_unsupported")
    assert "embed" in j["error"]["message"]
    j = json_error(post_fb(t, {"model": "tiny-multilabel", "text": "x", "label": "billing"}), 422,
                   "feedback_unsupported")
    assert "multi-label" in j["error"]["message"]
    json_error(post_fb(t, {"model": "tiny-sentiment", "items": [
        {"text": "a", "label": "positive"}] * 5}), 413, "too_many_items")
    json_error(post_fb(t, {"model": "tiny-sentiment", "text": "x" * 16385, "label": "positive"}),
               413, "text_too_long")
    json_error(post_fb(t, {"text": "x", "label": "positive"}), 422, "invalid_field")
    json_error(post_fb(t, {"model": "tiny-sentiment", "text": 5, "label": "positive"}), 422,
               "invalid_field")
    json_error(post_fb(t, {"model": "tiny-sentiment", "text": "x", "label": ["positive"]}), 422,
               "invalid_field")
    json_error(post_fb(t, {"model": "tiny-sentiment", "text": "x"}), 422, "invalid_field")
    json_error(post_fb(t, {"model": "tiny-sentiment", "items": []}), 422, "invalid_field")
    json_error(post_fb(t, b'{"model": "tiny-sentiment", '), 400, "malformed_json")
    json_error(post_fb(t, {"model": "tiny-sentiment", "text": "x", "label": "positive"},
                       content_type="text/plain"), 415, "unsupported_media_type")
    j = json_error(post_fb(t, {"model": "tiny-sentiment", "request_id": "abc",
                               "label": "positive"}), 404, "request_not_found")
    assert "feedback.recent.enabled" in j["error"]["message"]
    r = t.get("/v1/feedback")
    assert r.status == 405 and r.headers.get("Allow") == "POST", r
    # Nothing refused was written (the folder may exist, with no line in it).
    recs, torn = read_logs(fbdir)
    assert recs == [] and torn == 0


# ------------------------------------------------------------ request ids

def test_request_id_round_trip(daemon, tmp_path):
    fbdir = tmp_path / "fb"
    t = daemon({"dir": str(fbdir), "recent": {"enabled": True, "max_requests": 3}})
    r = t.post("/v1/sentiment", {"texts": ["first text", "second text"]},
               headers={"X-Request-Id": "client-42"})
    assert r.status == 200 and r.headers["X-Request-Id"] == "client-42", r
    r = post_fb(t, {"model": "tiny-sentiment", "request_id": "client-42", "index": 1,
                    "label": "negative"})
    assert r.status == 202, r
    j = json_error(post_fb(t, {"model": "tiny-sentiment", "request_id": "client-42",
                               "label": "negative"}), 422, "invalid_field")
    assert "2 texts" in j["error"]["message"]
    json_error(post_fb(t, {"model": "tiny-sentiment", "request_id": "client-42", "index": 2,
                           "label": "negative"}), 422, "invalid_field")
    json_error(post_fb(t, {"model": "tiny-sentiment", "request_id": "client-43",
                           "label": "negative"}), 404, "request_not_found")
    # An id the server made up (no X-Request-Id sent) works the same; mixed with a text.
    r = t.post("/v1/classify", {"text": "classified text"})
    assert r.status == 200, r
    rid = r.headers["X-Request-Id"]
    r = post_fb(t, {"model": "tiny-classify", "items": [
        {"request_id": rid, "label": "positive"}, {"text": "plain", "label": "neutral"}]})
    assert r.status == 202 and r.json()["accepted"] == 2, r
    # ... but only for the model that answered it.
    j = json_error(post_fb(t, {"model": "tiny-sentiment", "request_id": rid,
                               "label": "positive"}), 422, "invalid_field")
    assert "tiny-classify" in j["error"]["message"]
    # Failed and non-classifier requests are not remembered.
    r = t.post("/v1/sentiment", {"text": ""}, headers={"X-Request-Id": "bad-one"})
    assert r.status == 422
    json_error(post_fb(t, {"model": "tiny-sentiment", "request_id": "bad-one",
                           "label": "positive"}), 404, "request_not_found")
    recs, torn = read_logs(fbdir)
    assert torn == 0
    got = sorted((x["model"], x["text"], x["label"], x.get("request_id") or "") for x in recs)
    assert got == [("tiny-classify", "classified text", "positive", rid),
                   ("tiny-classify", "plain", "neutral", ""),
                   ("tiny-sentiment", "second text", "negative", "client-42")], got
    # Bounded in count: three more requests push client-42 out.
    for i in range(3):
        assert t.post("/v1/sentiment", {"text": f"filler {i}"},
                      headers={"X-Request-Id": f"filler-{i}"}).status == 200
    json_error(post_fb(t, {"model": "tiny-sentiment", "request_id": "client-42", "index": 0,
                           "label": "negative"}), 404, "request_not_found")
    assert post_fb(t, {"model": "tiny-sentiment", "request_id": "filler-0",
                       "label": "negative"}).status == 202


def test_request_id_expires(daemon, tmp_path):
    t = daemon({"dir": str(tmp_path / "fb"), "recent": {"enabled": True, "max_age_s": 1}})
    t_sent = time.monotonic()
    assert t.post("/v1/sentiment", {"text": "soon forgotten"},
                  headers={"X-Request-Id": "short-lived"}).status == 200
    body = {"model": "tiny-sentiment", "request_id": "short-lived", "label": "neutral"}

    def gone():
        r = post_fb(t, body)
        assert r.status in (202, 404), r
        return r.status == 404 and r.error_code == "request_not_found"
    wait_until(gone, 30, "the remembered request to expire", interval=0.1)
    assert time.monotonic() - t_sent >= 0.9  # not before its age


def test_recent_needs_feedback_dir(tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"models": [{"name": "s", "path": str(FIXTURES / "bert_cls"),
                                           "task": "sentiment"}],
                               "feedback": {"recent": {"enabled": True}}}))
    from conftest import NLPD_BIN
    r = subprocess.run([str(NLPD_BIN), "--config", str(cfg), "--check-config"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "feedback.recent.enabled" in r.stderr, r


# ------------------------------------------------------------ group commit

def burst(t, n_clients, per_client, make_body):
    """n_clients threads post per_client requests each, starting together; returns the
    responses as (client, i, status, body)."""
    out, lock = [], threading.Lock()
    barrier = threading.Barrier(n_clients)

    def client(c):
        barrier.wait()
        for i in range(per_client):
            r = post_fb(t, make_body(c, i))
            with lock:
                out.append((c, i, r.status, r.body))
    th = [threading.Thread(target=client, args=(c,)) for c in range(n_clients)]
    for x in th:
        x.start()
    for x in th:
        x.join()
    return out


def test_burst_is_group_committed(daemon, tmp_path):
    fbdir = tmp_path / "fb"
    t = daemon({"dir": str(fbdir)}, threads=2)
    before = metric(scrape(t), "nlpd_feedback_fsyncs_total")
    n_clients, per = 32, 4
    res = burst(t, n_clients, per, lambda c, i: {"model": "tiny-sentiment", "items": [
        {"text": f"burst {c}-{i}", "label": LABELS[(c + i) % 3]}]})
    assert all(st == 202 for _, _, st, _ in res), [r for r in res if r[2] != 202][:3]
    fsyncs = metric(scrape(t), "nlpd_feedback_fsyncs_total") - before
    n_req = n_clients * per
    print(f"\ngroup commit: {n_req} requests from {n_clients} clients -> {fsyncs:.0f} fsyncs")
    # Grouping is shown by fewer fsyncs than requests. How many fewer depends on timing
    # (8-32 usually, 65 once under ASan on a loaded run): a bound on it would be a timed
    # assertion, flaky in CI.
    assert 1 <= fsyncs < n_req, f"{fsyncs} fsyncs for {n_req} concurrent requests"
    recs, torn = read_logs(fbdir)
    assert torn == 0
    assert sorted(x["text"] for x in recs) == sorted(f"burst {c}-{i}" for c in range(n_clients)
                                                     for i in range(per))


# ------------------------------------------------------------ failures

def assert_acked_exactly(fbdir, acked, refused=()):
    """Every acknowledged text is in the logs exactly once; refused ones are not there."""
    recs, torn = read_logs(fbdir)
    seen = {}
    for x in recs:
        seen[x["text"]] = seen.get(x["text"], 0) + 1
    missing = [x for x in acked if seen.get(x, 0) != 1]
    assert not missing, f"{len(missing)} acknowledged items missing or duplicated: {missing[:5]}"
    kept = [x for x in refused if x in seen]
    assert not kept, f"{len(kept)} refused items were kept: {kept[:5]}"
    return recs, torn


def test_unwritable_folder(daemon, tmp_path):
    # Works for any user (root ignores permission bits): a file where a folder must be.
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    t = daemon({"dir": str(blocker / "fb")})
    j = json_error(post_fb(t, {"model": "tiny-sentiment", "text": "lost?", "label": "positive"}),
                   503, "feedback_unavailable")
    assert "Not a directory" in j["error"]["message"], j
    s = scrape(t)
    assert metric(s, "nlpd_feedback_errors_total", model="tiny-sentiment") == 1
    assert metric(s, "nlpd_feedback_items_total", model="tiny-sentiment") == 0
    # The daemon keeps serving, and feedback works once the folder can be made.
    assert t.post("/v1/sentiment", {"text": "still serving"}).status == 200
    blocker.unlink()
    r = post_fb(t, {"model": "tiny-sentiment", "text": "now stored", "label": "positive"})
    assert r.status == 202, r
    assert_acked_exactly(blocker / "fb", ["now stored"], ["lost?"])


class Mount:
    """A tmpfs mounted for one test (needs root and mount permission)."""

    def __init__(self, path, opts):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(self.path)],
                           capture_output=True, text=True)
        optional(r.returncode == 0, f"tmpfs mount ({r.stderr.strip()}); "
                 "test_rlimit_fsize covers a full disk without it")

    def remount(self, opts):
        subprocess.run(["mount", "-o", f"remount,{opts}", str(self.path)], check=True)

    def close(self):
        if subprocess.run(["umount", str(self.path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(self.path)], capture_output=True)


@pytest.fixture
def mounts():
    ms = []

    def make(path, opts):
        m = Mount(path, opts)
        ms.append(m)
        return m
    yield make
    for m in ms:
        m.close()


def test_read_only_folder(daemon, tmp_path, mounts):
    m = mounts(tmp_path / "ro", "ro,size=64k")
    t = daemon({"dir": str(m.path / "fb")})
    j = json_error(post_fb(t, {"model": "tiny-sentiment", "text": "ro", "label": "positive"}),
                   503, "feedback_unavailable")
    assert "Read-only file system" in j["error"]["message"], j
    m.remount("rw")
    assert post_fb(t, {"model": "tiny-sentiment", "text": "rw", "label": "positive"}).status == 202
    assert_acked_exactly(m.path / "fb", ["rw"], ["ro"])


def fill_until_refused(t, tag, n_clients=4, item_bytes=900, max_rounds=200):
    """Post 3-item requests from several clients until the log refuses (503); returns
    (acked texts, refused texts, the 503 bodies)."""
    acked, refused, errors = [], [], []
    lock = threading.Lock()
    stop = threading.Event()

    def client(c):
        for i in range(max_rounds):
            if stop.is_set():
                return
            texts = [f"{tag} {c}-{i}-{k} " + "x" * item_bytes for k in range(3)]
            r = post_fb(t, {"model": "tiny-sentiment",
                            "items": [{"text": x, "label": "neutral"} for x in texts]})
            with lock:
                if r.status == 202:
                    acked.extend(texts)
                else:
                    refused.extend(texts)
                    errors.append(r)
                    if len(errors) >= 8:
                        stop.set()
    th = [threading.Thread(target=client, args=(c,)) for c in range(n_clients)]
    for x in th:
        x.start()
    for x in th:
        x.join()
    return acked, refused, errors


def test_full_disk(daemon, tmp_path, mounts):
    m = mounts(tmp_path / "small", "size=64k")
    filler = m.path / "filler"
    filler.write_bytes(b"f" * 16384)
    fbdir = m.path / "fb"
    t = daemon({"dir": str(fbdir)})
    acked, refused, errors = fill_until_refused(t, "full")
    assert acked and errors, (len(acked), errors[:2])
    for r in errors:
        j = json_error(r, 503, "feedback_unavailable")
        assert "No space left on device" in j["error"]["message"], j
    recs, torn = assert_acked_exactly(fbdir, acked, refused)
    assert torn == 0  # partial writes were cut off again
    print(f"\nfull disk: {len(acked)} items acknowledged, {len(refused)} refused (503), "
          f"{len(recs)} lines on disk")
    s = scrape(t)
    assert metric(s, "nlpd_feedback_items_total", model="tiny-sentiment") == len(acked)
    assert metric(s, "nlpd_feedback_errors_total", model="tiny-sentiment") == len(errors)
    # Space again: feedback is accepted again, appended after the last good line.
    filler.unlink()
    r = post_fb(t, {"model": "tiny-sentiment", "text": "after the disk was freed",
                    "label": "positive"})
    assert r.status == 202, r
    assert_acked_exactly(fbdir, acked + ["after the disk was freed"], refused)


def test_rlimit_fsize(daemon, tmp_path):
    """A full disk without mounting anything: RLIMIT_FSIZE on the daemon turns writes past
    the limit into EFBIG (the daemon ignores SIGXFSZ)."""
    LIMIT = 200000  # bytes: the daemon's own log (stderr, a file here) stays far below
    fbdir = tmp_path / "fb"
    t = daemon({"dir": str(fbdir)})
    assert post_fb(t, {"model": "tiny-sentiment", "text": "first", "label": "positive"}).status == 202
    pid = t.nlpd.proc.pid
    soft, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (LIMIT, hard))  # soft only: raised again below
    acked, refused, errors = fill_until_refused(t, "fsize", n_clients=3)
    assert errors, "no request was refused past RLIMIT_FSIZE"
    for r in errors:
        j = json_error(r, 503, "feedback_unavailable")
        assert "too large" in j["error"]["message"], j  # strerror(EFBIG): File too large
    assert t.nlpd.alive()
    recs, torn = assert_acked_exactly(fbdir, ["first"] + acked, refused)
    assert torn == 0
    for f in fbdir.rglob("*.jsonl"):
        assert f.stat().st_size <= LIMIT
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (soft, hard))
    assert post_fb(t, {"model": "tiny-sentiment", "text": "later", "label": "positive"}).status == 202
    assert_acked_exactly(fbdir, ["first", "later"] + acked, refused)


# ------------------------------------------------------------ durability

def test_sigkill_during_burst_loses_no_acknowledged_item(daemon, tmp_path):
    fbdir = tmp_path / "fb"
    t = daemon({"dir": str(fbdir)}, threads=2)
    acked, lock = [], threading.Lock()
    sent = []
    failures = []
    stop, killed = threading.Event(), threading.Event()

    def client(c):
        i = 0
        while not stop.is_set():
            texts = [f"kill {c}-{i}-{k}" for k in range(1 + (c + i) % 3)]
            i += 1
            with lock:
                sent.extend(texts)
            try:
                r = post_fb(t, {"model": "tiny-sentiment", "items": [
                    {"text": x, "label": LABELS[len(x) % 3]} for x in texts]}, timeout=30)
            except Exception as e:  # the daemon died under us (connection reset/refused)
                if not killed.is_set():
                    failures.append(repr(e))
                return
            with lock:
                if r.status == 202:
                    acked.extend(texts)
                else:
                    failures.append(repr(r))
                    return
    th = [threading.Thread(target=client, args=(c,)) for c in range(8)]
    for x in th:
        x.start()
    wait_until(lambda: len(acked) >= 400, 120, "400 acknowledged items")
    killed.set()
    os.kill(t.nlpd.proc.pid, signal.SIGKILL)  # mid-burst: the clients are still posting
    t.nlpd.proc.wait()
    stop.set()
    for x in th:
        x.join()
    assert not failures, failures[:3]
    n_acked_before = len(acked)

    # A restarted daemon writes a new instance file beside the old one.
    t2 = daemon({"dir": str(fbdir)})
    r = post_fb(t2, {"model": "tiny-sentiment", "text": "after restart", "label": "positive"})
    assert r.status == 202, r
    files = sorted((fbdir / "tiny-sentiment").glob("*.jsonl"))
    assert len(files) == 2, files

    recs, torn = assert_acked_exactly(fbdir, acked + ["after restart"])
    texts = [x["text"] for x in recs]
    assert len(texts) == len(set(texts)), "an item is in the logs twice"
    unacked_on_disk = len(set(texts) - set(acked) - {"after restart"})
    assert set(texts) <= set(sent) | {"after restart"}
    print(f"\nSIGKILL: {len(sent)} items sent, {n_acked_before} acknowledged (202), all "
          f"{n_acked_before} on disk exactly once; {unacked_on_disk} more on disk whose answer "
          f"was lost; {torn} torn last line(s) skipped")


def test_sigterm_during_burst_answers_or_refuses_cleanly(daemon, tmp_path):
    """SIGTERM while feedback is queued: what is in flight is written and answered, new
    requests are refused (503 draining or connection refused), the daemon exits 0 with a
    clean sanitizer log (the Daemon fixture checks), and every 202'd item is on disk."""
    fbdir = tmp_path / "fb"
    t = daemon({"dir": str(fbdir)}, threads=2)
    acked, lock, failures = [], threading.Lock(), []
    stop, termed = threading.Event(), threading.Event()

    def client(c):
        i = 0
        while not stop.is_set():
            texts = [f"term {c}-{i}-{k}" for k in range(2)]
            i += 1
            try:
                r = post_fb(t, {"model": "tiny-sentiment", "items": [
                    {"text": x, "label": "positive"} for x in texts]}, timeout=30)
            except Exception as e:
                if not termed.is_set():
                    failures.append(repr(e))
                return
            with lock:
                if r.status == 202:
                    acked.extend(texts)
                elif not (termed.is_set() and r.status == 503 and r.error_code == "draining"):
                    failures.append(repr(r))
                    return
    th = [threading.Thread(target=client, args=(c,)) for c in range(8)]
    for x in th:
        x.start()
    wait_until(lambda: len(acked) >= 100, 120, "100 acknowledged items")
    termed.set()
    t.nlpd.signal(signal.SIGTERM)
    assert t.nlpd.wait_exit() == 0, t.nlpd.log()[-2000:]
    stop.set()
    for x in th:
        x.join()
    assert not failures, failures[:3]
    assert_acked_exactly(fbdir, acked)


def test_reader_skips_only_a_torn_last_line(tmp_path):
    """The reader the tests use (and the trainer must mirror): a last line without its
    newline is torn and skipped; an unparsable complete line is an error."""
    d = tmp_path / "m"
    d.mkdir()
    good = ('{"time": 1, "model": "m", "version": "v", "text": "a", "label": "x"}\n'
            '{"time": 2, "model": "m", "version": "v", "text": "b", "label": "y", '
            '"request_id": "r"}\n')
    (d / "h-1-1.jsonl").write_text(good + '{"time": 3, "model": "m", "vers')
    recs, torn = read_logs(tmp_path)
    assert [x["text"] for x in recs] == ["a", "b"] and torn == 1
    assert recs[1]["request_id"] == "r"
    (d / "h-2-2.jsonl").write_text('{"time": 3, "mod\n' + good)
    with pytest.raises(AssertionError):
        read_logs(tmp_path)
