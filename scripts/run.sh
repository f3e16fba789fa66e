#!/usr/bin/env bash
# The quick start behind `make run`: serve config/nlpd.json at once and let a
# sidecar nlpd-train fill the sentiment and intents repositories meanwhile.
#
#   t = 0        nlpd starts with /v1/embed (all-MiniLM-L6-v2) serving; sentiment and
#                intents answer 503 not_ready until they have a version
#   seconds      the sidecar publishes a head-only version of each (frozen encoder,
#                one encoding pass, then the head): nlpd swaps them in; /readyz is 200
#   ~45 minutes  the full fine-tunes finish; each is published if the gate finds it
#                better on dev than the head-only version, and swapped in
#   then         `nlpd-train watch` per model: feedback POSTed to /v1/feedback
#                (models/feedback) is turned into gated new versions
#
# The sidecar runs at low priority (nice 10; the fine-tunes with one thread) so the
# daemon keeps its cores; its log is models/sidecar.log. Ctrl-C (SIGINT/SIGTERM)
# drains nlpd and stops the sidecar (no partial version is ever left: publishing is
# atomic). Versions are signed with models/signing.pem, made here on first run.
#
#   scripts/run.sh          env: BUILD (default build), NLPD_SHARED (default ../shared)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
BUILD=${BUILD:-build}
NLPD=$BUILD/nlpd
TRAIN=$BUILD/nlpd-train
SHARED=${NLPD_SHARED:-$ROOT/../shared}
KEY=models/signing.pem
PUB=models/signing.pub
SIDELOG=models/sidecar.log

mkdir -p models/repo models/feedback
if [[ ! -f $KEY || ! -f $PUB ]]; then
    echo "run: making the signing key pair $KEY / $PUB"
    (umask 077 && openssl ecparam -name prime256v1 -genkey -noout -out "$KEY")
    openssl ec -in "$KEY" -pubout -out "$PUB" 2>/dev/null
fi

echo "run: sidecar training in the background (log: $SIDELOG)"
# Its own process group, so that stopping it reaches every nlpd-train it started.
NLPD_TRAIN=$TRAIN NLPD_SHARED=$SHARED NLPD_SIGNING_KEY=$KEY NLPD_SIGNING_PUB=$PUB \
    setsid nice -n 10 scripts/sidecar.sh >"$SIDELOG" 2>&1 &
side=$!
"$NLPD" --config config/nlpd.json &
daemon=$!
stop() { kill -TERM "$daemon" 2>/dev/null || true; }
trap stop INT TERM
rc=0
wait "$daemon" || rc=$?
# A second wait: the first returns early when the trap runs.
kill -0 "$daemon" 2>/dev/null && { wait "$daemon" || rc=$?; }
kill -TERM -- "-$side" 2>/dev/null || true
wait "$side" 2>/dev/null || true
exit "$rc"
