"""Model signing interoperability: nlpd's model repository (engine/repo, through
`nlpd-train publish|verify|pin`) against the real OpenSSF model-signing tool
(`model_signing` 1.1.1 from PyPI, installed by scripts/install_deps.sh into
$NLPD_TEST_VENV, default /opt/nlpd-test). Both ways: a folder the tool signs, nlpd
accepts (and refuses once a byte changes); a version nlpd publishes, the tool
verifies (and refuses with another key). The tool missing is a failure, not a skip.
"""
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import FIXTURES, NLPD_TRAIN, SANITIZER_RE

VENV = Path(os.environ.get("NLPD_TEST_VENV") or "/opt/nlpd-test")
MODEL_SIGNING = VENV / "bin" / "model_signing"
TIMEOUT = 120


def run(*args, ok=None):
    """Run a command; ok=True/False asserts its exit status is zero / non-zero."""
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=TIMEOUT,
                       stdin=subprocess.DEVNULL)
    out = r.stdout + r.stderr
    assert not SANITIZER_RE.search(out), f"sanitizer report from {args[0]}:\n{out}"
    if ok is True:
        assert r.returncode == 0, f"{args} exited {r.returncode}:\n{out}"
    elif ok is False:
        assert r.returncode != 0, f"{args} succeeded but should fail:\n{out}"
    return r


def train(*args, ok=None):
    if not NLPD_TRAIN.exists():
        pytest.fail(f"{NLPD_TRAIN} missing (build it, or set NLPD_TRAIN)")
    return run(NLPD_TRAIN, *args, ok=ok)


def tool(*args, ok=None):
    if not MODEL_SIGNING.exists():
        pytest.fail(f"{MODEL_SIGNING} missing: run scripts/install_deps.sh "
                    "(tests/requirements.txt: model-signing, pyopenssl)")
    return run(MODEL_SIGNING, *args, ok=ok)


def tool_verify(folder, pub, ok):
    r = tool("verify", "key", folder, "--signature", Path(folder) / "model.sig",
             "--public_key", pub, ok=ok)
    if ok:
        assert "Verification succeeded" in r.stdout + r.stderr
    else:
        assert "Verification succeeded" not in r.stdout + r.stderr
    return r


@pytest.fixture
def keys(tmp_path):
    """Two ECDSA P-256 key pairs made with the openssl CLI, as the tool's docs do."""
    out = {}
    for name in ("a", "b"):
        pem, pub = tmp_path / f"{name}.pem", tmp_path / f"{name}.pub"
        run("openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", pem, ok=True)
        run("openssl", "ec", "-in", pem, "-pubout", "-out", pub, ok=True)
        out[name] = (pem, pub)
    return out


@pytest.fixture
def model(tmp_path):
    """A tiny BERT classifier folder from the fixtures, plus a subfolder (as
    sentence-transformers folders have) and git files the tool ignores."""
    d = tmp_path / "bert_cls"
    shutil.copytree(FIXTURES / "bert_cls", d)
    (d / "1_Pooling").mkdir()
    (d / "1_Pooling" / "config.json").write_text('{"pooling_mode_mean_tokens": true}\n')
    (d / ".gitattributes").write_text("*.safetensors filter=lfs\n")
    return d


def flip_byte(path, offset=None):
    data = bytearray(path.read_bytes())
    i = len(data) // 2 if offset is None else offset
    data[i] ^= 0x01
    path.write_bytes(bytes(data))


def test_tool_signed_folder_verifies_in_nlpd(model, keys):
    (pem, pub), (_, pub_b) = keys["a"], keys["b"]
    tool("sign", "key", model, "--private_key", pem, "--signature", model / "model.sig", ok=True)
    r = train("verify", model, "--public-key", pub, ok=True)
    assert "verified" in r.stdout
    train("verify", model, ok=True)  # digests only
    r = train("verify", model, "--public-key", pub_b, ok=False)
    assert r.returncode == 1 and "another key" in r.stderr
    # One byte of the weights changed after signing: refused, naming the file.
    weights = model / "model.safetensors"
    flip_byte(weights)
    r = train("verify", model, "--public-key", pub, ok=False)
    assert r.returncode == 1 and "model.safetensors" in r.stderr, r.stderr
    train("verify", model, ok=False)
    tool_verify(model, pub, ok=False)  # the tool agrees
    flip_byte(weights)
    train("verify", model, "--public-key", pub, ok=True)
    # A file in a subfolder changed, an extra file: refused too.
    (model / "1_Pooling" / "config.json").write_text("{}\n")
    r = train("verify", model, "--public-key", pub, ok=False)
    assert "1_Pooling/config.json" in r.stderr
    tool("sign", "key", model, "--private_key", pem, "--signature", model / "model.sig", ok=True)
    train("verify", model, "--public-key", pub, ok=True)
    (model / "extra.txt").write_text("x")
    r = train("verify", model, "--public-key", pub, ok=False)
    assert "extra.txt" in r.stderr and "not listed" in r.stderr


def test_nlpd_published_version_verifies_in_tool(model, keys, tmp_path):
    (pem, pub), (_, pub_b) = keys["a"], keys["b"]
    repo = tmp_path / "repo"
    meta = tmp_path / "meta.json"
    meta.write_text(json.dumps({"base_version": "v0", "scores": {"accuracy": 0.9}}))
    r = train("publish", model, "--repository", repo, "--key", pem, "--metadata", meta, ok=True)
    assert r.stdout == "v000001\n", r.stdout
    v1 = repo / "v000001"
    tool_verify(v1, pub, ok=True)
    r = tool_verify(v1, pub_b, ok=False)
    assert "Key mismatch" in r.stdout + r.stderr
    train("verify", v1, "--public-key", pub, ok=True)
    # The published folder: the model's files, the metadata, the bundle; no git files.
    names = {str(p.relative_to(v1)) for p in v1.rglob("*") if p.is_file()}
    assert names == {str(p.relative_to(model)) for p in model.rglob("*")
                     if p.is_file() and p.name != ".gitattributes"} | {"nlpd-version.json",
                                                                        "model.sig"}
    m = json.loads((v1 / "nlpd-version.json").read_text())
    assert m["base_version"] == "v0" and m["scores"]["accuracy"] == 0.9
    assert m["published_at"].endswith("Z") and m["source"] == str(model.resolve())
    bundle = json.loads((v1 / "model.sig").read_text())
    assert bundle["mediaType"] == "application/vnd.dev.sigstore.bundle.v0.3+json"
    assert bundle["verificationMaterial"]["tlogEntries"] == []
    # Tampered after publishing: both refuse.
    flip_byte(v1 / "model.safetensors", 100)
    tool_verify(v1, pub, ok=False)
    r = train("verify", v1, "--public-key", pub, ok=False)
    assert "model.safetensors" in r.stderr
    flip_byte(v1 / "model.safetensors", 100)
    # The next publish takes the next name and verifies too.
    r = train("publish", model, "--repository", repo, "--key", pem, ok=True)
    assert r.stdout == "v000002\n"
    tool_verify(repo / "v000002", pub, ok=True)
    assert sorted(p.name for p in repo.iterdir()) == ["v000001", "v000002"]


def test_digest_only_publish_and_pin(model, keys, tmp_path):
    _, pub = keys["a"]
    repo = tmp_path / "repo"
    r = train("publish", model, "--repository", repo, ok=True)
    v1 = repo / r.stdout.strip()
    r = train("verify", v1, ok=True)
    assert "digests only" in r.stdout
    r = train("verify", v1, "--public-key", pub, ok=False)
    assert "unsigned" in r.stderr
    bundle = json.loads((v1 / "model.sig").read_text())
    assert bundle["dsseEnvelope"]["signatures"] == []
    assert "publicKey" not in bundle["verificationMaterial"]
    flip_byte(v1 / "vocab.txt", 0)
    r = train("verify", v1, ok=False)
    assert "vocab.txt" in r.stderr
    # Pin: set, read back, refuse an unknown version, unpin.
    train("publish", model, "--repository", repo, ok=True)
    assert train("pin", "--repository", repo, ok=True).stdout == ""
    train("pin", "--repository", repo, "v000001", ok=True)
    assert (repo / "PIN").read_text() == "v000001\n"
    assert train("pin", "--repository", repo, ok=True).stdout == "v000001\n"
    r = train("pin", "--repository", repo, "v000042", ok=False)
    assert r.returncode == 1 and "v000042" in r.stderr
    train("pin", "--repository", repo, "--unpin", ok=True)
    assert not (repo / "PIN").exists()


def test_publish_usage_and_failures(model, keys, tmp_path):
    pem, _ = keys["a"]
    repo = tmp_path / "repo"
    assert train("publish", model, ok=False).returncode == 2          # no --repository
    assert train("publish", "--repository", repo, ok=False).returncode == 2  # no SRC_DIR
    assert train("verify", ok=False).returncode == 2
    assert "usage: nlpd-train publish" in train("publish", "--help", ok=True).stdout
    r = train("publish", tmp_path / "missing", "--repository", repo, ok=False)
    assert r.returncode == 1 and "missing" in r.stderr
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    r = train("publish", model, "--repository", repo, "--metadata", bad, ok=False)
    assert r.returncode == 1 and "JSON object" in r.stderr
    r = train("publish", model, "--repository", repo, "--key", tmp_path / "nokey.pem", ok=False)
    assert r.returncode == 1 and "nokey.pem" in r.stderr
    # A source with a FIFO fails half-way; the repository keeps no trace of it.
    os.mkfifo(model / "pipe")
    r = train("publish", model, "--repository", repo, "--key", pem, ok=False)
    assert r.returncode == 1 and "pipe" in r.stderr
    assert list(repo.iterdir()) == []
    # The existing training usage still works.
    r = train("--help", ok=True)
    assert r.stdout.startswith("usage: nlpd-train --base MODEL_DIR")
    assert "nlpd-train publish SRC_DIR" in r.stdout
