#!/usr/bin/env bash
# Install the Debian packages nlpd needs to build and test (idempotent).
#   scripts/install_deps.sh          build + test dependencies
#   scripts/install_deps.sh --ref    also the reference stack (torch, transformers,
#                                    onnxruntime + onnx, ctranslate2) used by tests/reference and bench/
set -euo pipefail

PKGS=(build-essential pkg-config libcjson-dev libutf8proc-dev libopenblas-dev libsentencepiece-dev
      libcmocka-dev libssl-dev libmicrohttpd-dev libuv1-dev python3 python3-pip
      python3-venv python3-numpy unzip python3-pytest nginx wrk clang libclang-rt-14-dev
      python3-yaml systemd prometheus docker-compose)
# For tests/integration/test_deploy.py: systemd (systemd-analyze, -sysusers,
# -tmpfiles check systemd/), prometheus (promtool checks deploy/monitoring/alerts.yml),
# docker-compose (`docker-compose config` checks deploy/docker-compose.yml; no engine).
REF_PKGS=(python3-torch)
REF_VENV=${NLPD_REF_VENV:-/opt/nlpd-ref}
# Python packages the tests drive as real peers (tests/requirements.txt), in a
# venv of their own so that Debian's python stays untouched.
TEST_VENV=${NLPD_TEST_VENV:-/opt/nlpd-test}

want=("${PKGS[@]}")
[[ "${1:-}" == "--ref" ]] && want+=("${REF_PKGS[@]}")

missing=()
for p in "${want[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
    SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
    echo "install_deps: installing ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

ROOT=$(cd "$(dirname "$0")/.." && pwd)
REQ="$ROOT/tests/requirements.txt"
stamp="$TEST_VENV/.requirements"
if [[ -f "$REQ" ]] && ! cmp -s "$REQ" "$stamp"; then
    [[ -x "$TEST_VENV/bin/python" ]] || /usr/bin/python3 -m venv --system-site-packages "$TEST_VENV"
    "$TEST_VENV/bin/pip" install -q -r "$REQ"
    cp "$REQ" "$stamp"
fi

if [[ "${1:-}" == "--ref" ]]; then
    # Debian's torch is the CPU reference; transformers is pinned to a release
    # that supports torch 1.13.
    if [[ ! -x "$REF_VENV/bin/python" ]]; then
        /usr/bin/python3 -m venv --system-site-packages "$REF_VENV"
    fi
    "$REF_VENV/bin/pip" install -q "transformers==4.44.2" tokenizers safetensors \
        onnxruntime onnx sentencepiece ctranslate2 "numpy<2"
fi
echo "install_deps: ok"
