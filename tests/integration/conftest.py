"""Integration tests: the real nlpd binary over loopback HTTP, directly and behind nginx.

Environment:
  NLPD_BIN     the daemon under test (default build/nlpd; run_tests.sh sets build/san/nlpd)
  NLPD_CLI     nlpd-cli used as the oracle (default: next to NLPD_BIN)
  NLPD_TRAIN   nlpd-train (publish/verify; default: next to NLPD_BIN)
  NLPD_SHARED  shared data folder (SST-2 sentences for the MiniLM checks; default ../shared)
  NLPD_IT_NGINX=0   skip the nginx half of the suite (default: run it when nginx exists)

Every test runs twice, once against nlpd directly ("direct") and once through nginx
("nginx") configured with deploy/nginx/nlpd.conf. A closing line
"integration: N passed, M failed" (errors count as failures) is printed for
scripts/run_tests.sh.
"""
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NLPD_BIN = Path(os.environ.get("NLPD_BIN") or ROOT / "build" / "nlpd")
if not NLPD_BIN.is_absolute():
    NLPD_BIN = ROOT / NLPD_BIN
NLPD_CLI = Path(os.environ.get("NLPD_CLI") or NLPD_BIN.parent / "nlpd-cli")
if not NLPD_CLI.is_absolute():
    NLPD_CLI = ROOT / NLPD_CLI
NLPD_TRAIN = Path(os.environ.get("NLPD_TRAIN") or NLPD_BIN.parent / "nlpd-train")
if not NLPD_TRAIN.is_absolute():
    NLPD_TRAIN = ROOT / NLPD_TRAIN
FIXTURES = ROOT / "tests" / "fixtures" / "models"
MINILM = ROOT / "models" / "all-MiniLM-L6-v2"
SHARED = Path(os.environ.get("NLPD_SHARED") or ROOT.parent / "shared")
SITE_CONF = ROOT / "deploy" / "nginx" / "nlpd.conf"
MARIAN = ROOT / "tests" / "fixtures" / "marian"
MARIAN_TOK = SHARED / "tokenizers" / "opus-mt-tc-big-en-pt"
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)

# Limits the test daemons run with. MAX_BODY must equal nlpd's default and the
# client_max_body_size of deploy/nginx/nlpd.conf (checked by a test).
MAX_BODY = 1 << 20
MAX_TEXTS = 64
MAX_TEXT_BYTES = 16384

SANITIZER_RE = re.compile(
    r"ERROR: (AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer)|runtime error:|"
    r"WARNING: ThreadSanitizer|SUMMARY: (Address|Undefined|Leak)")

# Bounds for waiting on conditions (ASan builds on 2 shared cores are slow).
START_TIMEOUT = 120.0
STOP_TIMEOUT = 60.0
HTTP_TIMEOUT = 60.0


def have_minilm():
    return (MINILM / "model.safetensors").exists()


def have_marian():
    return (MARIAN_TOK / "source.spm").exists()


def marian_folder(name, base):
    """A runnable MarianMTModel folder under base: tests/fixtures/marian/<name> plus the
    shared OPUS-MT tokenizer files (not in the repository), symlinked."""
    d = Path(base) / name
    d.mkdir(parents=True, exist_ok=True)
    files = [MARIAN / name / f for f in ("config.json", "generation_config.json", "model.safetensors")]
    files += [MARIAN_TOK / f for f in ("source.spm", "target.spm", "vocab.json",
                                       "tokenizer_config.json", "special_tokens_map.json")]
    for f in files:
        if not (d / f.name).exists():
            (d / f.name).symlink_to(f.resolve())
    return d


def marian_models(base, **batching):
    """The tiny Marian models as translate models with distinct language pairs (the
    "translation" config section overrides tokenizer_config.json's en -> pt)."""
    return [
        ModelSpec("tiny-mt-a", marian_folder("marian_a", base), "translate", **batching),
        ModelSpec("tiny-mt-b", marian_folder("marian_b", base), "translate",
                  translation={"target_lang": "es"}, **batching),
        ModelSpec("tiny-mt-c", marian_folder("marian_c", base), "translate",
                  translation={"source_lang": "de", "max_beam_size": 4, "max_length": 64},
                  **batching),
    ]


def wait_until(cond, timeout, what, interval=0.02):
    """Poll cond() until it returns a truthy value (returned) or fail after timeout s."""
    t_end = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() >= t_end:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------- HTTP client

class Resp:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # http.client.HTTPMessage (case-insensitive get)
        self.body = body

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError as e:
            raise AssertionError(f"response body is not JSON ({e}): {self.body[:300]!r}")

    @property
    def error_code(self):
        try:
            return json.loads(self.body)["error"]["code"]
        except Exception:
            return None

    def __repr__(self):
        return f"<HTTP {self.status} {self.body[:300]!r}>"


def _body_bytes(body):
    if body is None:
        return None
    if isinstance(body, (bytes, bytearray)):
        return bytes(body)
    if isinstance(body, str):
        return body.encode()
    return json.dumps(body).encode()


class Target:
    """Where tests send requests: nlpd itself or the nginx in front of it."""

    def __init__(self, host, port, mode, nlpd, nginx=None):
        self.host, self.port, self.mode, self.nlpd, self.nginx = host, port, mode, nlpd, nginx

    def conn(self, timeout=HTTP_TIMEOUT):
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def keepalive_conn(self, timeout=HTTP_TIMEOUT):
        """A connected HTTPConnection that never reconnects silently: a request after the
        server closed it raises (http.client.NotConnected or a socket error)."""
        c = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        c.connect()
        c.auto_open = 0
        return c

    def request(self, method, path, body=None, headers=None, content_type="application/json",
                timeout=HTTP_TIMEOUT, conn=None):
        """One request on a new connection (or on conn, kept open). body: dict/list -> JSON."""
        data = _body_bytes(body)
        h = {}
        if data is not None and content_type is not None:
            h["Content-Type"] = content_type
        if headers:
            h.update(headers)
        own = conn is None
        c = conn or self.conn(timeout)
        try:
            c.request(method, path, body=data, headers=h)
            r = c.getresponse()
            return Resp(r.status, r.headers, r.read())
        finally:
            if own:
                c.close()

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body, **kw):
        return self.request("POST", path, body, **kw)

    def raw(self, data, timeout=HTTP_TIMEOUT):
        """Send raw bytes (a whole request); return the parsed response. Send errors
        (the server may answer and close before reading everything) are ignored."""
        s = socket.create_connection((self.host, self.port), timeout=timeout)
        try:
            try:
                for i in range(0, len(data), 65536):
                    s.sendall(data[i:i + 65536])
            except (BrokenPipeError, ConnectionResetError):
                pass
            r = http.client.HTTPResponse(s, method="POST")
            r.begin()
            return Resp(r.status, r.headers, r.read())
        finally:
            s.close()


def json_error(r, status, code):
    """Assert r is the JSON error {"error": {"code": code, "message": ...}} with status."""
    assert r.status == status, f"want HTTP {status} {code}, got {r!r}"
    ct = r.headers.get("Content-Type", "")
    assert ct.startswith("application/json"), f"error Content-Type {ct!r}, body {r.body[:200]!r}"
    j = r.json()
    assert isinstance(j, dict) and isinstance(j.get("error"), dict), f"not an error object: {j}"
    assert j["error"].get("code") == code, f"want error code {code!r}, got {j['error']}"
    assert isinstance(j["error"].get("message"), str) and j["error"]["message"], \
        f"error without a message: {j}"
    return j


# ------------------------------------------------------------------ the daemon

class ModelSpec:
    """A served model: a fixed folder (path), or a repository of versions
    (repository=DIR, path None)."""

    def __init__(self, name, path, task, repository=None, **batching):
        self.name, self.task, self.batching = name, task, batching
        self.path = Path(path) if path is not None else None
        self.repository = Path(repository) if repository is not None else None


def tiny_models(**batching):
    """The tiny fixture models, one served model per task (plus variants)."""
    return [
        ModelSpec("tiny-sentiment", FIXTURES / "bert_cls", "sentiment", **batching),
        ModelSpec("tiny-classify", FIXTURES / "bert_cls", "classify", **batching),
        ModelSpec("tiny-multilabel", FIXTURES / "bert_cls_multilabel", "classify", **batching),
        ModelSpec("tiny-distil", FIXTURES / "distilbert_cls", "classify", **batching),
        ModelSpec("tiny-qa", FIXTURES / "bert_qa", "qa", **batching),
        ModelSpec("tiny-embed", FIXTURES / "bert_st", "embed", **batching),
    ]


def _merge(dst, src):
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            _merge(dst[k], v)
        else:
            dst[k] = v


def render_config(port, models, api_key_file=None, threads=None, drain_timeout_ms=None,
                  limits=None, extra=None):
    """The one place that knows nlpd's config file format (server/config.c, config/nlpd.json).
    ModelSpec.batching may hold timeout_ms / max_timeout_ms (model keys) and the
    batching.* keys (max_batch_tokens, max_batch_size, max_delay_us, queue_capacity,
    workers, threads). extra: more top-level keys, merged (e.g. {"reload": {...}})."""
    lim = {"max_body_bytes": MAX_BODY, "max_texts": MAX_TEXTS, "max_text_bytes": MAX_TEXT_BYTES}
    lim.update(limits or {})
    cfg = {
        "listen": f"127.0.0.1:{port}",
        "log": {"level": "info", "format": "text"},
        "limits": lim,
        "models": [],
    }
    if threads is not None:
        cfg["threads"] = threads
    if drain_timeout_ms is not None:
        cfg["drain_timeout_ms"] = drain_timeout_ms
    if api_key_file:
        cfg["auth"] = {"api_key_file": str(api_key_file)}
    for m in models:
        e = {"name": m.name, "task": m.task}
        if m.repository is not None:
            e["repository"] = str(m.repository)
        else:
            e["path"] = str(m.path)
        b = dict(m.batching)
        for k in ("timeout_ms", "max_timeout_ms", "version", "backend", "translation"):
            if k in b:
                e[k] = b.pop(k)
        if b:
            e["batching"] = b
        cfg["models"].append(e)
    if extra:
        _merge(cfg, extra)
    return cfg


class Nlpd:
    def __init__(self, workdir, models, env=None, **cfg_kw):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.models, self.cfg_kw = models, cfg_kw
        self.env = dict(os.environ, **env) if env else None
        self.proc = None
        self.port = None
        self.log_path = self.workdir / "nlpd.log"
        self.stopped_rc = None

    def start(self):
        if not NLPD_BIN.exists():
            pytest.fail(f"{NLPD_BIN} does not exist (build it: make, or set NLPD_BIN)")
        for attempt in range(3):
            self.port = free_port()
            cfg = render_config(self.port, self.models, **self.cfg_kw)
            cfg_path = self.workdir / "nlpd.json"
            cfg_path.write_text(json.dumps(cfg, indent=2))
            log = open(self.log_path, "ab")
            self.proc = subprocess.Popen(
                [str(NLPD_BIN), "--config", str(cfg_path), "--listen", f"127.0.0.1:{self.port}"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=str(ROOT),
                env=self.env)
            log.close()
            try:
                self.wait_ready()
                return self
            except AssertionError:
                rc = self.proc.poll()
                if rc is not None and attempt < 2 and re.search(
                        r"(?i)address already in use|EADDRINUSE", self.log()):
                    continue  # lost the port race: try another port
                self.kill()
                raise
        raise AssertionError("nlpd: no free port")

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def ready(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"nlpd exited with {self.proc.returncode} while starting:\n"
                                 f"{self.log()[-3000:]}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            c.request("GET", "/readyz")
            r = c.getresponse()
            r.read()
            c.close()
            return r.status == 200
        except OSError:
            return False

    def wait_ready(self):
        wait_until(self.ready, START_TIMEOUT, f"nlpd /readyz on port {self.port}", 0.05)

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait_exit(self, timeout=STOP_TIMEOUT):
        try:
            self.stopped_rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"nlpd did not exit within {timeout:.0f}s of SIGTERM:\n"
                                 f"{self.log()[-3000:]}")
        return self.stopped_rc

    def stop(self):
        """SIGTERM; return problems (exit status, sanitizer reports) as a list of strings."""
        problems = []
        if self.proc is None:
            return problems
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        rc = self.wait_exit()
        if rc != 0:
            problems.append(f"nlpd exited with {rc} after SIGTERM (want 0)")
        problems += self.sanitizer_reports()
        if problems:
            problems.append("log tail:\n" + self.log()[-4000:])
        return problems

    def sanitizer_reports(self):
        hits = [ln for ln in self.log().splitlines() if SANITIZER_RE.search(ln)]
        return [f"sanitizer report in nlpd log: {h}" for h in hits[:10]]

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


# ----------------------------------------------------------------------- nginx

def site_conf_for(upstream_port, listen_port, workdir):
    """deploy/nginx/nlpd.conf with the test's addresses and log paths substituted."""
    text = SITE_CONF.read_text()
    text, n_up = re.subn(r"(\bserver\s+)127\.0\.0\.1:8080\b", rf"\g<1>127.0.0.1:{upstream_port}", text)
    text, n_listen = re.subn(r"^(\s*)listen\s+80\b[^;]*;", rf"\1listen 127.0.0.1:{listen_port};",
                             text, flags=re.M)
    text = re.sub(r"(access_log\s+)/var/log/nginx/\S+", rf"\g<1>{workdir}/access.log", text)
    text = re.sub(r"(error_log\s+)/var/log/nginx/\S+", r"\1stderr", text)
    assert n_up == 1 and n_listen == 1, \
        f"{SITE_CONF}: expected one 'server 127.0.0.1:8080' upstream and one 'listen 80' line"
    return text


class Nginx:
    def __init__(self, workdir, upstream_port):
        self.dir = Path(workdir)
        self.upstream_port = upstream_port
        self.proc = None
        self.port = None

    def write_conf(self, port):
        for d in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi", "logs"):
            (self.dir / d).mkdir(parents=True, exist_ok=True)
        (self.dir / "nlpd.conf").write_text(site_conf_for(self.upstream_port, port, self.dir))
        user = "user root root;\n" if os.geteuid() == 0 else ""
        main = f"""{user}worker_processes 1;
events {{ worker_connections 1024; }}
http {{
    client_body_temp_path {self.dir}/client_body;
    proxy_temp_path {self.dir}/proxy;
    fastcgi_temp_path {self.dir}/fastcgi;
    uwsgi_temp_path {self.dir}/uwsgi;
    scgi_temp_path {self.dir}/scgi;
    access_log {self.dir}/access.log;
    include {self.dir}/nlpd.conf;
}}
"""
        (self.dir / "nginx.conf").write_text(main)

    def cmd(self, *extra):
        return [NGINX, "-e", "stderr", "-p", str(self.dir), "-c", str(self.dir / "nginx.conf"),
                "-g", f"daemon off; pid {self.dir}/nginx.pid; error_log stderr;", *extra]

    def start(self):
        for attempt in range(3):
            self.port = free_port()
            self.write_conf(self.port)
            log = open(self.dir / "nginx.log", "ab")
            self.proc = subprocess.Popen(self.cmd(), stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT)
            log.close()

            def up():
                if self.proc.poll() is not None:
                    return "exited"
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                    return "up"
                except OSError:
                    return None
            state = wait_until(up, 30, f"nginx listening on {self.port}")
            if state == "up":
                return self
            if attempt == 2 or "Address already in use" not in self.log():
                raise AssertionError(f"nginx failed to start:\n{self.log()[-3000:]}")
        return self

    def log(self):
        try:
            return (self.dir / "nginx.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# -------------------------------------------------------------------- fixtures

def pytest_addoption(parser):
    parser.addoption("--modes", default=os.environ.get("NLPD_IT_MODES", "direct,nginx"),
                     help="comma-separated: direct, nginx")


def _modes(config):
    modes = [m for m in config.getoption("--modes").split(",") if m]
    if os.environ.get("NLPD_IT_NGINX") == "0":
        modes = [m for m in modes if m != "nginx"]
    return modes


def pytest_generate_tests(metafunc):
    if "mode" in metafunc.fixturenames:
        metafunc.parametrize("mode", _modes(metafunc.config), scope="session")


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("nlpd-it")


class Spawner:
    """Starts nlpd instances (and nginx in front in nginx mode); stops them all at the
    end, asserting exit 0 and clean sanitizer logs."""

    def __init__(self, base, mode):
        self.base, self.mode = Path(base), mode
        self.items = []
        self.n = 0

    def __call__(self, models, **cfg_kw):
        if self.mode == "nginx" and not NGINX:
            pytest.skip("nginx not installed")
        self.n += 1
        d = self.base / f"{self.mode}-{self.n}"
        nlpd = Nlpd(d, models, **cfg_kw)
        self.items.append(nlpd)
        nlpd.start()
        if self.mode == "direct":
            return Target("127.0.0.1", nlpd.port, "direct", nlpd)
        ngx = Nginx(d / "nginx", nlpd.port)
        self.items.append(ngx)
        ngx.start()
        return Target("127.0.0.1", ngx.port, "nginx", nlpd, ngx)

    def close(self):
        problems = []
        for it in reversed(self.items):
            if isinstance(it, Nginx):
                it.stop()
            else:
                problems += it.stop()
        self.items = []
        return problems


def main_models(workdir=None):
    # One compute thread per model worker: 10 models share the machine's cores.
    models = tiny_models(threads=1)
    if have_minilm():
        models.append(ModelSpec("minilm", MINILM, "embed", threads=1))
    if workdir is not None and have_marian():
        models += marian_models(Path(workdir) / "marian", threads=1)
    return models


@pytest.fixture(scope="session")
def main_nlpd(session_dir):
    """One daemon with every tiny model (and MiniLM) shared by both modes."""
    nlpd = Nlpd(session_dir / "main", main_models(session_dir))
    nlpd.start()
    yield nlpd
    problems = nlpd.stop()
    assert not problems, "\n".join(problems)


@pytest.fixture(scope="session")
def api(mode, main_nlpd, session_dir):
    """The main daemon, reached directly or through nginx."""
    if mode == "direct":
        yield Target("127.0.0.1", main_nlpd.port, "direct", main_nlpd)
        return
    if not NGINX:
        pytest.skip("nginx not installed")
    ngx = Nginx(session_dir / "main-nginx", main_nlpd.port)
    ngx.start()
    yield Target("127.0.0.1", ngx.port, "nginx", main_nlpd, ngx)
    ngx.stop()


@pytest.fixture
def spawn(mode, tmp_path):
    """spawn(models, **config) -> Target of a fresh daemon for this test only."""
    s = Spawner(tmp_path, mode)
    yield s
    problems = s.close()
    assert not problems, "\n".join(problems)


@pytest.fixture(scope="module")
def spawn_module(mode, tmp_path_factory):
    s = Spawner(tmp_path_factory.mktemp("spawn"), mode)
    yield s
    problems = s.close()
    assert not problems, "\n".join(problems)


# ------------------------------------------------------------- oracles, data

def cli_json(*args):
    """Run nlpd-cli (the engine's own front end) and parse its JSON output."""
    if not NLPD_CLI.exists():
        pytest.fail(f"{NLPD_CLI} missing (build it, or set NLPD_CLI)")
    r = subprocess.run([str(NLPD_CLI), *map(str, args)], capture_output=True, timeout=120)
    assert r.returncode == 0, f"nlpd-cli {args} failed: {r.stderr.decode(errors='replace')}"
    return json.loads(r.stdout)


# Batching invariance: the engine computes every sequence independently of its
# batch-mates with a per-element summation order that depends only on the sequence
# (tests/unit batch_invariance checks it with memcmp), so results must be identical:
# same labels, answers and offsets, and the very same floats. NLPD_IT_INVARIANCE_TOL
# relaxes the float comparison (|diff| <= tol x max(1, |value|)) when diagnosing.
INVARIANCE_TOL = float(os.environ.get("NLPD_IT_INVARIANCE_TOL", "0"))


def same_result(a, b, path="result"):
    """None when a and b are the same result (floats equal, or within INVARIANCE_TOL),
    else where they differ."""
    if isinstance(a, float) or isinstance(b, float):
        if not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
            return f"{path}: {a!r} vs {b!r}"
        if abs(a - b) > INVARIANCE_TOL * max(1.0, abs(a)):
            return f"{path}: {a!r} vs {b!r} (|diff| {abs(a - b):.3g})"
        return None
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return f"{path}: keys {sorted(a)} vs {sorted(b)}"
        for k in a:
            d = same_result(a[k], b[k], f"{path}.{k}")
            if d:
                return d
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{path}: {len(a)} vs {len(b)} items"
        for i, (x, y) in enumerate(zip(a, b)):
            d = same_result(x, y, f"{path}[{i}]")
            if d:
                return d
        return None
    return None if a == b else f"{path}: {a!r} vs {b!r}"


def golden(model):
    return json.loads((FIXTURES / model / "golden.json").read_text())


def sst2_sentences():
    """SST-2 dev sentences, parsed as tests/fixtures/minilm/sst2_dev_meta.json says."""
    for d in (os.environ.get("NLPD_SST2_DIR"), SHARED / "data" / "sst2", "/work/shared/data/sst2"):
        if d and (Path(d) / "glue_sst2_dev.tsv").exists():
            lines = (Path(d) / "glue_sst2_dev.tsv").read_text(encoding="utf-8").split("\n")
            assert lines[0] == "sentence\tlabel"
            return [ln.rsplit("\t", 1)[0] for ln in lines[1:] if ln]
    return None


def api_key_file(path, keys):
    path.write_text("".join(hashlib.sha256(k.encode()).hexdigest() + "\n" for k in keys))
    return path


# ------------------------------------------------------------ closing line

def pytest_terminal_summary(terminalreporter):
    st = terminalreporter.stats
    passed = len(st.get("passed", []))
    failed = len(st.get("failed", [])) + len(st.get("error", []))
    skipped = len(st.get("skipped", []))
    # xfail marks work that is pending on an open issue (e.g. test_deploy's
    # PENDING_METRICS): neither passed nor failed, and said so.
    pending = len(st.get("xfailed", []))
    terminalreporter.write_line(
        f"integration: {passed} passed, {failed} failed" + (f" ({skipped} skipped)" if skipped else "")
        + (f" ({pending} pending: see XFAIL above)" if pending else ""))


# ------------------------------------------------------------------ metrics

_SAMPLE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+-?\d+)?$')
_LABEL_RE = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*(,|$)')


def parse_metrics(text):
    """Prometheus text format -> ({family: type}, [(name, {labels}, value)]).
    Raises AssertionError on a line that is not valid exposition format."""
    types, samples = {}, []
    for ln in text.splitlines():
        if not ln.strip():
            continue
        if ln.startswith("#"):
            parts = ln.split(None, 3)
            if len(parts) >= 4 and parts[1] == "TYPE":
                types[parts[2]] = parts[3].strip()
            continue
        m = _SAMPLE_RE.match(ln)
        assert m, f"/metrics: not a sample line: {ln!r}"
        labels = {}
        if m.group(3):
            rest = m.group(3)
            pos = 0
            while pos < len(rest):
                lm = _LABEL_RE.match(rest, pos)
                assert lm, f"/metrics: bad labels in {ln!r}"
                labels[lm.group(1)] = lm.group(2)
                pos = lm.end()
        v = m.group(4)
        value = float("inf") if v == "+Inf" else float("-inf") if v == "-Inf" else float(v)
        samples.append((m.group(1), labels, value))
    return types, samples


def metric(samples, name, **labels):
    """Sum of the samples of `name` whose labels include `labels`."""
    return sum(v for n, lab, v in samples
               if n == name and all(lab.get(k) == str(x) for k, x in labels.items()))


def metric_present(samples, name, **labels):
    return any(n == name and all(lab.get(k) == str(x) for k, x in labels.items())
               for n, lab, v in samples)


def scrape(target):
    r = target.get("/metrics")
    assert r.status == 200, f"/metrics: {r!r}"
    return parse_metrics(r.body.decode())[1]


def read_response(f):
    """Read one HTTP/1.1 response from a binary file object without closing it (for
    pipelining and 100-continue): (status, {lower-case header: value}, body)."""
    line = f.readline()
    assert line.startswith(b"HTTP/1."), f"not a status line: {line!r}"
    status = int(line.split()[1])
    headers = {}
    while True:
        h = f.readline()
        assert h, "connection closed inside the headers"
        if h in (b"\r\n", b"\n"):
            break
        k, _, v = h.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()
    if status in (100, 204, 304) or 100 <= status < 200:
        return status, headers, b""
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while True:
            n = int(f.readline().split(b";")[0], 16)
            if n == 0:
                while f.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return status, headers, body
            body += f.read(n)
            f.readline()
    n = int(headers.get("content-length", "0"))
    return status, headers, f.read(n)
