"""deploy/nginx/nlpd.conf: valid for Debian's nginx and consistent with nlpd's limits."""
import re
import subprocess

import pytest

from conftest import MAX_BODY, NGINX, ROOT, SITE_CONF, Nginx, free_port, require


def site():
    return SITE_CONF.read_text()


def strip_comments(text):
    return "\n".join(ln.split("#", 1)[0] for ln in text.splitlines())


def test_nginx_config_valid(tmp_path):
    require(NGINX, "nginx (scripts/install_deps.sh)")
    n = Nginx(tmp_path, free_port())
    n.write_conf(free_port())
    r = subprocess.run(n.cmd("-t"), capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, f"nginx -t: {r.stderr}"


def test_body_limit_matches_nlpd_default():
    m = re.search(r"^\s*client_max_body_size\s+(\d+)([kKmM]?);", strip_comments(site()), re.M)
    assert m, "client_max_body_size missing"
    n = int(m.group(1)) * {"": 1, "k": 1024, "m": 1 << 20}[m.group(2).lower()]
    assert n == MAX_BODY, f"nginx client_max_body_size {n} != the tests' nlpd limit {MAX_BODY}"
    cfg = (ROOT / "server" / "config.c").read_text()
    d = re.search(r'"limits\.max_body_bytes",\s*K_INT,\s*TOP\(max_body_bytes\),\s*"(\d+)"', cfg)
    assert d, "limits.max_body_bytes default not found in server/config.c"
    assert int(d.group(1)) == n, f"nlpd default max_body_bytes {d.group(1)} != nginx limit {n}"


def test_proxy_settings():
    s = strip_comments(site())
    assert re.search(r"upstream\s+nlpd\s*\{[^}]*\bkeepalive\s+\d+;", s), "upstream keepalive missing"
    assert re.search(r"proxy_http_version\s+1\.1;", s), "upstream keepalive needs HTTP/1.1"
    assert re.search(r'proxy_set_header\s+Connection\s+"";', s), "Connection header must be cleared"
    assert re.search(r"proxy_set_header\s+X-Request-Id\s+\$\w+;", s), "X-Request-Id not passed"
    loc = re.search(r"location\s+/v1/\s*\{([^}]*)\}", s)
    assert loc and re.search(r"proxy_next_upstream\s+off;", loc.group(1)), \
        "POSTs under /v1/ must not be retried (proxy_next_upstream off)"
    assert re.search(r"proxy_read_timeout\s+\d+s;", s)
    assert "ssl_certificate" in site(), "the TLS comment block is missing"
