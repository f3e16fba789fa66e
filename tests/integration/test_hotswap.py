"""Hot swap from signed model repositories (issue 8, DESIGN §4 "Hot swap").

The daemon serves two repository models while client threads send requests
without pause and the test publishes, one after another: a good version, one
with a byte changed after signing, an unsigned one, one signed with another key,
one whose weights are truncated under a matching signature, a publish killed
with SIGKILL half way (and a half-copied folder), a second good version; then
a rollback by pin and an unpin. Zero requests may fail; every response names a
version that was serving while it was in flight and carries that version's
exact result (a fresh daemon on the version's folder is the oracle); each bad
version is listed as rejected with its reason. Retention (`nlpd-train prune`) under
the same kind of load: no request fails, the daemon ends on the newest version.

These tests talk to nlpd directly (the nginx half of the suite adds nothing
here: the swap is inside nlpd).
"""
import json
import os
import shutil
import signal
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import FIXTURES, NLPD_BIN, ModelSpec, Nlpd, Target, api_key_file, json_error, \
    parse_metrics, metric, wait_until

TRAIN = NLPD_BIN.parent / "nlpd-train"
TEXTS = ["I loved it", "The service was terrible and slow.", "ok", "Where is the café?"]
SWAP_TIMEOUT = 120.0


def keypair(d, name):
    """An ECDSA P-256 key pair made with the openssl tool: (private, public)."""
    priv, pub = Path(d) / f"{name}.pem", Path(d) / f"{name}.pub"
    subprocess.run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout",
                    "-out", str(priv)], check=True, capture_output=True)
    subprocess.run(["openssl", "ec", "-in", str(priv), "-pubout", "-out", str(pub)],
                   check=True, capture_output=True)
    return priv, pub


def variant(src, dst, k):
    """A copy of model folder src whose first F32 LayerNorm bias is shifted by 0.01 k:
    a different model with the same shapes (k = 0: the same weights)."""
    shutil.copytree(src, dst)
    p = Path(dst) / "model.safetensors"
    b = bytearray(p.read_bytes())
    n = struct.unpack("<Q", b[:8])[0]
    header = json.loads(b[8:8 + n])
    name = next(t for t in sorted(header) if t.endswith("LayerNorm.bias")
                and header[t]["dtype"] == "F32")
    lo, hi = header[name]["data_offsets"]
    base = 8 + n
    vals = struct.unpack(f"<{(hi - lo) // 4}f", b[base + lo:base + hi])
    b[base + lo:base + hi] = struct.pack(f"<{len(vals)}f", *[v + 0.01 * k for v in vals])
    p.write_bytes(bytes(b))
    return Path(dst)


def publish(src, repo, key=None, check=True):
    cmd = [str(TRAIN), "publish", str(src), "--repository", str(repo)]
    if key:
        cmd += ["--key", str(key)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if check:
        assert r.returncode == 0, f"nlpd-train publish failed: {r.stderr}"
    return r.stdout.strip()


def next_name(repo):
    """The name the next publish into repo would get (v + 6 digits)."""
    nums = [int(p.name[1:]) for p in Path(repo).iterdir()
            if p.name.startswith("v") and p.name[1:].isdigit()]
    return f"v{max(nums, default=0) + 1:06d}"


def place(stage_version, repo):
    """Move a version made elsewhere into repo under the next name, in one rename."""
    dst = Path(repo) / next_name(repo)
    os.rename(stage_version, dst)
    return dst.name


def versions(t, model, headers=None):
    r = t.get(f"/v1/models/{model}/versions", headers=headers)
    assert r.status == 200, r
    return r.json()


def state_of(doc, version):
    for v in doc["versions"]:
        if v["version"] == version:
            return v
    return None


def wait_state(t, model, version, states):
    """Wait until version's state is one of states; return its entry."""
    def done():
        v = state_of(versions(t, model), version)
        return v if v and v["state"] in states else None
    return wait_until(done, SWAP_TIMEOUT, f"{model} {version} in state {states}", 0.05)


def post_json(t, path, body):
    return t.post(path, body)


class Load:
    """Client threads sending requests to the models without pause, bounded in
    count and time; each response is recorded with its send/receive times."""

    def __init__(self, t, models, threads=4, max_requests=40000, max_seconds=600):
        self.t, self.models = t, models
        self.stop = threading.Event()
        self.records, self.lock = [], threading.Lock()
        self.max_requests, self.deadline = max_requests, time.monotonic() + max_seconds
        self.threads = [threading.Thread(target=self.run, args=(i,)) for i in range(threads)]

    def run(self, i):
        conn = None
        k = i
        while not self.stop.is_set() and time.monotonic() < self.deadline:
            with self.lock:
                if len(self.records) >= self.max_requests:
                    return
            name, path = self.models[k % len(self.models)]
            text = TEXTS[k % len(TEXTS)]
            k += 1
            t0 = time.monotonic()
            try:
                conn = conn or self.t.keepalive_conn()
                r = self.t.post(path, {"model": name, "text": text}, conn=conn)
            except Exception as e:  # a failed request is a result too
                conn = None
                r = e
            t1 = time.monotonic()
            with self.lock:
                self.records.append((t0, t1, name, text, r))

    def __enter__(self):
        for th in self.threads:
            th.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for th in self.threads:
            th.join(60)


@pytest.fixture
def repo_env(tmp_path):
    keys = {n: keypair(tmp_path, n) for n in ("good", "other")}
    src = {
        "s": [variant(FIXTURES / "bert_cls", tmp_path / f"src/s{k}", k) for k in range(3)],
        "e": [variant(FIXTURES / "bert_st", tmp_path / f"src/e{k}", k) for k in range(3)],
    }
    repos = {m: tmp_path / f"repo-{m}" for m in src}
    return tmp_path, keys, src, repos


def start_repo_daemon(tmp_path, repos, pub, extra=None, env=None):
    models = [ModelSpec("s", None, "sentiment", repository=repos["s"], threads=1),
              ModelSpec("e", None, "embed", repository=repos["e"], threads=1)]
    cfg = {"signing": {"public_key_file": str(pub)},
           "reload": {"rescan_interval_s": 1, "debounce_ms": 50}}
    if extra:
        cfg.update(extra)
    d = Nlpd(tmp_path / "daemon", models, extra=cfg, env=env)
    d.start()
    return d, Target("127.0.0.1", d.port, "direct", d)


def test_swaps_under_load_zero_failures(repo_env):
    tmp_path, keys, src, repos = repo_env
    priv, pub = keys["good"]
    for m in ("s", "e"):
        assert publish(src[m][0], repos[m], priv) == "v000001"
    nlpd, t = start_repo_daemon(tmp_path, repos, pub)
    t_start = time.monotonic()
    # (model, version) -> its times as current version, each [lo, hi]: lo when the step
    # that made it current began, hi when the next one was seen current (the bounds
    # the test can observe); a version pinned again gets a second interval.
    spans = {(m, "v000001"): [[t_start, None]] for m in ("s", "e")}
    rejected = {}  # (model, version) -> expected reason fragment
    good_src = {(m, "v000001"): src[m][0] for m in ("s", "e")}
    serving = {"s": "v000001", "e": "v000001"}

    def now_serving(m, v, t_step):
        """Record that v became m's serving version (seen now; the step began at t_step)."""
        spans[(m, serving[m])][-1][1] = time.monotonic()
        spans.setdefault((m, v), []).append([t_step, None])
        serving[m] = v

    def publish_good(m, k):
        t0 = time.monotonic()
        v = publish(src[m][k], repos[m], priv)
        wait_state(t, m, v, ("serving",))
        good_src[(m, v)] = src[m][k]
        now_serving(m, v, t0)

    def expect_rejected(m, v, fragment):
        e = wait_state(t, m, v, ("rejected",))
        assert fragment in e["reason"], e
        rejected[(m, v)] = fragment

    with Load(t, [("s", "/v1/sentiment"), ("e", "/v1/embed")]) as load:
        for m in ("s", "e"):
            publish_good(m, 1)
            # A byte changed after signing.
            stage = tmp_path / f"stage-{m}"
            publish(src[m][2], stage, priv)
            f = stage / "v000001" / "model.safetensors"
            b = bytearray(f.read_bytes())
            b[-3] ^= 0x01
            f.write_bytes(bytes(b))
            expect_rejected(m, place(stage / "v000001", repos[m]), "does not match its SHA-256")
            # Unsigned (a digest-only bundle) while a key is configured.
            expect_rejected(m, publish(src[m][2], repos[m]), "unsigned")
            # Signed with another key.
            expect_rejected(m, publish(src[m][2], repos[m], keys["other"][0]), "another key")
            # Weights truncated, signature matching: verification passes, loading fails.
            trunc = tmp_path / f"trunc-{m}"
            shutil.copytree(src[m][2], trunc)
            w = trunc / "model.safetensors"
            os.truncate(w, w.stat().st_size - 64)
            expect_rejected(m, publish(trunc, repos[m], priv), "cannot load")
            # A half-copied folder (no model.sig) and a publish killed half way.
            half = Path(repos[m]) / next_name(repos[m])
            half.mkdir()
            shutil.copy(src[m][2] / "config.json", half)
            big = tmp_path / f"big-{m}"
            shutil.copytree(src[m][2], big)
            with open(big / "padding.bin", "wb") as fp:
                fp.truncate(256 << 20)  # sparse: the copy takes a while
            p = subprocess.Popen([str(TRAIN), "publish", str(big), "--repository",
                                  str(repos[m]), "--key", str(priv)],
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            time.sleep(0.05)
            p.send_signal(signal.SIGKILL)
            p.wait()
            # Nothing of the killed publish is a version: only hidden temporary folders.
            names = {d.name for d in Path(repos[m]).iterdir() if d.is_dir()}
            assert all(n.startswith(".") or n.startswith("v") for n in names), names
            complete = [n for n in names if (Path(repos[m]) / n / "model.sig").exists()]
            assert half.name not in complete
            # A second good version.
            publish_good(m, 2)
            assert state_of(versions(t, m), half.name)["state"] == "incomplete"
        # Rollback by pin, then unpin.
        for m in ("s", "e"):
            t0 = time.monotonic()
            r = t.post(f"/v1/admin/models/{m}/activate", {"version": "v000002"})
            assert r.status == 200, r
            assert r.json()["serving"] == "v000002" and r.json()["pinned"] == "v000002"
            assert (Path(repos[m]) / "PIN").read_text().strip() == "v000002"
            now_serving(m, "v000002", t0)
            # A rejected version cannot be activated; the pin stays where it was.
            bad = next(v for (mm, v) in rejected if mm == m)
            json_error(t.post(f"/v1/admin/models/{m}/activate", {"version": bad}), 409,
                       "version_rejected")
            assert (Path(repos[m]) / "PIN").read_text().strip() == "v000002"
            time.sleep(0.5)  # traffic on the pinned version
            t0 = time.monotonic()
            r = t.post(f"/v1/admin/models/{m}/unpin", {})
            assert r.status == 200, r
            newest = max(v for (mm, v) in good_src if mm == m)
            assert r.json()["serving"] == newest and r.json()["pinned"] is None
            now_serving(m, newest, t0)
        time.sleep(0.5)
    t_end = time.monotonic()
    for ivs in spans.values():
        for iv in ivs:
            iv[1] = iv[1] or t_end

    # The rejected versions are listed with their reasons; none ever served.
    for (m, v), fragment in rejected.items():
        e = state_of(versions(t, m), v)
        assert e["state"] == "rejected" and fragment in e["reason"], e
    _, samples = parse_metrics(t.get("/metrics").ok().body.decode())
    for m in ("s", "e"):
        assert metric(samples, "nlpd_model_reloads_total", model=m, result="rejected") >= 4
        assert metric(samples, "nlpd_model_reloads_total", model=m, result="success") >= 4

    # Oracle: a fresh daemon serving every good version's folder as a fixed model.
    oracle_models = []
    for (m, v), folder in good_src.items():
        oracle_models.append(ModelSpec(f"{m}-{v}", Path(repos[m]) / v,
                                       "sentiment" if m == "s" else "embed", threads=1))
    oracle = Nlpd(tmp_path / "oracle", oracle_models)
    oracle.start()
    ot = Target("127.0.0.1", oracle.port, "direct", oracle)
    want = {}
    for (m, v) in good_src:
        for text in TEXTS:
            r = ot.post("/v1/sentiment" if m == "s" else "/v1/embed",
                        {"model": f"{m}-{v}", "text": text})
            assert r.status == 200, r
            want[(m, v, text)] = r.json()["result"]
    assert not oracle.stop()

    failures, wrong = [], []
    counts = {}
    for t0, t1, m, text, r in load.records:
        if isinstance(r, Exception) or r.status != 200:
            failures.append((m, text, r if isinstance(r, Exception) else (r.status, r.body[:200])))
            continue
        j = r.json()
        v = j["version"]
        counts[(m, v)] = counts.get((m, v), 0) + 1
        if (m, v) not in good_src:
            wrong.append(f"{m}: answered by version {v}, which never became current")
            continue
        # Current at some moment while in flight: became current before it was answered
        # and stopped being current after it was sent (the bounds the test can observe).
        if not any(lo <= t1 and t0 <= hi for lo, hi in spans[(m, v)]):
            wrong.append(f"{m}: {v} answered a request sent at {t0 - t_start:.3f}s, outside "
                         f"its time as current version")
        if j["result"] != want[(m, v, text)]:
            wrong.append(f"{m} {v} {text!r}: {j['result']} != fresh daemon {want[(m, v, text)]}")
    assert not failures, f"{len(failures)} failed requests, e.g. {failures[:5]}"
    assert not wrong, "\n".join(wrong[:20])
    assert len(load.records) > 200, len(load.records)
    # Every good version answered requests, so each swap happened under load.
    for key in good_src:
        assert counts.get(key, 0) > 0, f"no request was answered by {key}"
    print(f"hot swap under load: {len(load.records)} requests, 0 failed; answers per version: "
          f"{dict(sorted(counts.items()))}")
    assert not nlpd.stop()


def prune(repo, keep, pub):
    """nlpd-train prune: the removed versions (its stdout), asserting exit 0."""
    r = subprocess.run([str(TRAIN), "prune", "--repository", str(repo), "--keep", str(keep),
                        "--public-key", str(pub)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"nlpd-train prune failed: {r.stderr}"
    return r.stdout.split()


def test_prune_while_serving(repo_env):
    """Retention under load: a daemon follows a repository of four signed versions
    while `nlpd-train prune --keep 2` removes the two oldest; then a publish with
    --keep 2; then a version published and the repository pruned to 1 at once --
    usually before the daemon swaps the new one in, so the version it still serves
    from memory is removed under it. Zero failed requests; the daemon ends on the newest version; pruned
    versions leave its listing; nothing hidden is left in the repository."""
    tmp_path, keys, src, repos = repo_env
    priv, pub = keys["good"]
    for k in (0, 1, 2, 0):
        publish(src["s"][k], repos["s"], priv)
    publish(src["e"][0], repos["e"], priv)
    nlpd, t = start_repo_daemon(tmp_path, repos, pub)
    wait_state(t, "s", "v000004", ("serving",))
    with Load(t, [("s", "/v1/sentiment"), ("e", "/v1/embed")]) as load:
        time.sleep(0.3)
        assert prune(repos["s"], 2, pub) == ["v000001", "v000002"]
        wait_until(lambda: state_of(versions(t, "s"), "v000001") is None, SWAP_TIMEOUT,
                   "v000001 gone from the listing")
        time.sleep(0.3)
        r = subprocess.run([str(TRAIN), "publish", str(src["s"][1]), "--repository",
                            str(repos["s"]), "--key", str(priv), "--keep", "2",
                            "--public-key", str(pub)], capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0 and r.stdout.strip() == "v000005", r.stderr
        assert "pruned v000003" in r.stderr, r.stderr
        wait_state(t, "s", "v000005", ("serving",))
        time.sleep(0.3)
        # Published and pruned at once: v000005 (serving) goes before v000006 is in.
        assert publish(src["s"][2], repos["s"], priv) == "v000006"
        assert prune(repos["s"], 1, pub) == ["v000004", "v000005"]
        wait_state(t, "s", "v000006", ("serving",))
        time.sleep(0.5)
    names = sorted(p.name for p in Path(repos["s"]).iterdir())
    assert names == ["v000006"], names
    doc = versions(t, "s")
    assert doc["serving"] == "v000006", doc
    assert [v["version"] for v in doc["versions"]] == ["v000006"], doc
    failures = [(m, r if isinstance(r, Exception) else (r.status, r.body[:200]))
                for _, _, m, _, r in load.records
                if isinstance(r, Exception) or r.status != 200]
    assert not failures, f"{len(failures)} failed requests, e.g. {failures[:5]}"
    served = {r.json()["version"] for _, _, m, _, r in load.records if m == "s"}
    assert {"v000004", "v000005", "v000006"} <= served, served
    last = t.post("/v1/sentiment", {"model": "s", "text": "I loved it"})
    assert last.status == 200 and last.json()["version"] == "v000006", last
    print(f"prune under load: {len(load.records)} requests, 0 failed")
    assert not nlpd.stop()


def vm_rss_kb(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_rss_flat_over_30_swaps(repo_env):
    """30 swaps under traffic: RSS after the last stays within 10 % of RSS after the
    first (a leaked version per swap would add its weights each time). The
    allocator's quarantine of sanitizer builds is kept small so that RSS measures
    what nlpd holds."""
    tmp_path, keys, src, repos = repo_env
    priv, pub = keys["good"]
    for m in ("s", "e"):
        publish(src[m][0], repos[m], priv)
    env = {"ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "") + ":quarantine_size_mb=1:"
           "thread_local_quarantine_size_kb=64"}
    nlpd, t = start_repo_daemon(tmp_path, repos, pub, env=env)
    rss = []
    with Load(t, [("e", "/v1/embed")], threads=2) as load:
        for i in range(30):
            v = publish(src["e"][1 + i % 2], repos["e"], priv)
            wait_state(t, "e", v, ("serving",))
            rss.append(vm_rss_kb(nlpd.proc.pid))
    bad = [r for r in load.records if isinstance(r, Exception) or r[4].status != 200]
    assert not bad, bad[:3]
    print(f"RSS over 30 swaps (KiB): first {rss[0]}, last {rss[-1]}, max {max(rss)}")
    assert rss[-1] <= rss[0] * 1.10, f"RSS grew from {rss[0]} to {rss[-1]} KiB over 30 swaps"
    assert not nlpd.stop()


def test_burst_of_events_one_check(repo_env):
    """Many file events within the debounce window cause one check, not many."""
    tmp_path, keys, src, repos = repo_env
    priv, pub = keys["good"]
    for m in ("s", "e"):
        publish(src[m][0], repos[m], priv)
    nlpd, t = start_repo_daemon(tmp_path, repos, pub,
                                extra={"reload": {"rescan_interval_s": 0, "debounce_ms": 300}})
    before = versions(t, "s")["checks"]
    for i in range(50):
        (Path(repos["s"]) / f".noise-{i}").write_text("x")
    wait_until(lambda: versions(t, "s")["checks"] > before, 30, "a check after the burst")
    time.sleep(1.0)
    assert versions(t, "s")["checks"] == before + 1
    # SIGHUP checks every model; the admin reload checks one.
    nlpd.signal(signal.SIGHUP)
    wait_until(lambda: versions(t, "e")["checks"] > 1, 30, "a check after SIGHUP")
    n = versions(t, "s")["checks"]
    r = t.post("/v1/admin/models/s/reload", {})
    assert r.status == 200 and r.json()["checks"] == n + 1, r
    assert not nlpd.stop()


def test_empty_repository_not_ready_until_published(repo_env):
    """A repository without versions: the daemon starts, that model answers 503 and
    /readyz is 503 until a version is published; the other model serves meanwhile."""
    tmp_path, keys, src, repos = repo_env
    priv, pub = keys["good"]
    publish(src["e"][0], repos["e"], priv)
    models = [ModelSpec("s", None, "sentiment", repository=repos["s"], threads=1),
              ModelSpec("e", None, "embed", repository=repos["e"], threads=1)]
    d = Nlpd(tmp_path / "daemon", models,
             extra={"signing": {"public_key_file": str(pub)}, "reload": {"debounce_ms": 50}})

    def started():
        try:
            r = Target("127.0.0.1", d.port, "direct", d).get("/readyz")
            return d.proc.poll() is None and r.json()["models"] == {"s": "loading", "e": "ready"}
        except OSError:
            return False
    # start() waits for /readyz 200, which stays 503 here: wait for the embed model.
    d.wait_ready = lambda: wait_until(started, 60, "nlpd started, model e ready")
    d.start()
    t = Target("127.0.0.1", d.port, "direct", d)
    assert t.get("/readyz").status == 503
    assert t.post("/v1/embed", {"model": "e", "text": "hi"}).status == 200
    json_error(t.post("/v1/sentiment", {"model": "s", "text": "hi"}), 503, "not_ready")
    publish(src["s"][0], repos["s"], priv)
    wait_until(lambda: t.get("/readyz").status == 200, SWAP_TIMEOUT, "ready once published")
    assert t.post("/v1/sentiment", {"model": "s", "text": "hi"}).status == 200
    assert not d.stop()


def test_fixed_folder_reloads_when_its_content_changes(tmp_path):
    """A model served from a fixed folder is reloaded (new content version) when its
    files change; SIGHUP makes the daemon look at once."""
    folder = variant(FIXTURES / "bert_cls", tmp_path / "m", 0)
    d = Nlpd(tmp_path / "daemon", [ModelSpec("s", folder, "sentiment", threads=1)],
             extra={"reload": {"rescan_interval_s": 0}})
    d.start()
    t = Target("127.0.0.1", d.port, "direct", d)
    v1 = t.post("/v1/sentiment", {"text": "good"}).ok().json()["version"]
    changed = variant(FIXTURES / "bert_cls", tmp_path / "m2", 3)
    tmp = folder / "model.safetensors.tmp"
    shutil.copy(changed / "model.safetensors", tmp)
    os.rename(tmp, folder / "model.safetensors")
    d.signal(signal.SIGHUP)
    wait_until(lambda: t.post("/v1/sentiment", {"text": "good"}).ok().json()["version"] != v1,
               SWAP_TIMEOUT, "the new content version")
    json_error(t.post("/v1/admin/models/s/activate", {"version": "v000001"}), 409,
               "not_a_repository")
    assert not d.stop()


def test_admin_keys(repo_env):
    """The admin API takes admin keys only: a data-plane key gets 403; with data keys
    but no admin key file it is refused; with no keys at all it is open."""
    tmp_path, keys, src, repos = repo_env
    priv, pub = keys["good"]
    for m in ("s", "e"):
        publish(src[m][0], repos[m], priv)
    data_keys = api_key_file(tmp_path / "data.keys", ["data-key"])
    admin_keys = api_key_file(tmp_path / "admin.keys", ["admin-key"])
    models = [ModelSpec("s", None, "sentiment", repository=repos["s"], threads=1)]
    extra = {"signing": {"public_key_file": str(pub)}}

    d = Nlpd(tmp_path / "a", models, api_key_file=data_keys,
             extra=dict(extra, auth={"admin_key_file": str(admin_keys)}))
    d.start()
    t = Target("127.0.0.1", d.port, "direct", d)
    path = "/v1/models/s/versions"
    json_error(t.get(path), 401, "unauthorized")
    json_error(t.get(path, headers={"Authorization": "Bearer data-key"}), 403, "forbidden")
    assert t.get(path, headers={"Authorization": "Bearer admin-key"}).status == 200
    json_error(t.post("/v1/admin/models/s/reload", {},
                      headers={"Authorization": "Bearer data-key"}), 403, "forbidden")
    assert t.post("/v1/admin/models/s/reload", {},
                  headers={"X-API-Key": "admin-key"}).status == 200
    # The admin key is not a data-plane key.
    json_error(t.post("/v1/sentiment", {"text": "x"}, headers={"X-API-Key": "admin-key"}),
               401, "unauthorized")
    assert not d.stop()

    d = Nlpd(tmp_path / "b", models, api_key_file=data_keys, extra=extra)
    d.start()
    t = Target("127.0.0.1", d.port, "direct", d)
    json_error(t.get(path, headers={"Authorization": "Bearer data-key"}), 403, "forbidden")
    assert not d.stop()

    d = Nlpd(tmp_path / "c", models, extra=extra)
    d.start()
    t = Target("127.0.0.1", d.port, "direct", d)
    assert t.get(path).status == 200
    json_error(t.post("/v1/admin/models/nope/reload", {}), 404, "model_not_found")
    json_error(t.post("/v1/admin/models/s/activate", {"version": "../etc"}), 422,
               "invalid_field")
    json_error(t.post("/v1/admin/models/s/activate", {"version": "v000404"}), 404,
               "version_not_found")
    assert not d.stop()
