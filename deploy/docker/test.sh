#!/usr/bin/env bash
# deploy/docker/test.sh - build the nlpd image and smoke-test it in a container:
# start, /readyz, one request per endpoint (tiny test models), the HEALTHCHECK
# turns healthy, nlpd runs unprivileged, and SIGTERM (docker stop) drains the
# requests in flight and exits 0. Needs a running Docker engine; the base images
# (debian:12, debian:12-slim) must be pullable or already present (e.g. made
# with debootstrap + `docker import`: README.md "Deployment").
#
#   deploy/docker/test.sh                 # builds nlpd:smoke, runs the checks
#   NLPD_IMAGE=nlpd:latest NLPD_SKIP_BUILD=1 deploy/docker/test.sh
#   NLPD_DOCKER_BUILD_ARGS="--build-arg CUDA=1" deploy/docker/test.sh
# Prints "docker: N passed, N failed" last; exit status 0 when nothing failed.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SHARED=${NLPD_SHARED:-$ROOT/../shared}
IMAGE=${NLPD_IMAGE:-nlpd:smoke}
DOCKER=${DOCKER:-docker}
NAME=nlpd-smoke-$$
WORK=$(mktemp -d)
pass=0; fail=0
ok()   { echo "ok   $*"; pass=$((pass + 1)); }
bad()  { echo "FAIL $*"; fail=$((fail + 1)); }
check() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }
finish() {
    [[ $fail -ne 0 ]] && $DOCKER logs "$NAME" 2>&1 | tail -40
    $DOCKER rm -f "$NAME" >/dev/null 2>&1
    rm -rf "$WORK"
    echo "docker: ${pass} passed, ${fail} failed"
    [[ $fail -eq 0 ]]
    exit $?
}
trap finish EXIT

command -v "$DOCKER" >/dev/null || { bad "docker client ($DOCKER) not found"; exit 1; }
$DOCKER info >/dev/null 2>&1 || { bad "no Docker engine answers ($DOCKER info)"; exit 1; }

# ---- build
if [[ -z "${NLPD_SKIP_BUILD:-}" ]]; then
    # shellcheck disable=SC2086
    if DOCKER_BUILDKIT=1 $DOCKER build --network host ${NLPD_DOCKER_BUILD_ARGS:-} -t "$IMAGE" "$ROOT"; then
        ok "image $IMAGE built"
    else
        bad "docker build"; exit 1
    fi
fi
size=$($DOCKER image inspect -f '{{.Size}}' "$IMAGE")
echo "     image size: $((size / 1048576)) MiB"
check "image runs as a non-root user" \
    test "$($DOCKER image inspect -f '{{.Config.User}}' "$IMAGE")" = "10001:10001"

# ---- models: the tiny test models, one per endpoint (copies, no symlinks)
mkdir -p "$WORK/models"
for m in bert_cls bert_cls_multilabel bert_qa bert_st; do
    cp -rL "$ROOT/tests/fixtures/models/$m" "$WORK/models/$m"
done
have_mt=0
if [[ -f "$SHARED/tokenizers/opus-mt-tc-big-en-pt/source.spm" ]]; then
    mkdir -p "$WORK/models/tiny-en-pt"
    cp "$ROOT"/tests/fixtures/marian/marian_a/{config.json,generation_config.json,model.safetensors} \
       "$SHARED"/tokenizers/opus-mt-tc-big-en-pt/{source.spm,target.spm,vocab.json,tokenizer_config.json,special_tokens_map.json} \
       "$WORK/models/tiny-en-pt/"
    have_mt=1
fi
chmod -R a+rX "$WORK"
mt_model=""
[[ $have_mt == 1 ]] && mt_model=',
    {"name": "tiny-en-pt", "path": "models/tiny-en-pt", "task": "translate",
     "translation": {"source_lang": "en", "target_lang": "pt", "max_beam_size": 2, "max_length": 32},
     "batching": {"threads": 1}}'
cat > "$WORK/nlpd.json" <<JSON
{
  "listen": "0.0.0.0:8080",
  "drain_timeout_ms": 20000,
  "models": [
    {"name": "tiny-embed", "path": "models/bert_st", "task": "embed", "batching": {"threads": 1}},
    {"name": "tiny-sentiment", "path": "models/bert_cls", "task": "sentiment", "batching": {"threads": 1}},
    {"name": "tiny-classify", "path": "models/bert_cls_multilabel", "task": "classify", "batching": {"threads": 1}},
    {"name": "tiny-qa", "path": "models/bert_qa", "task": "qa", "batching": {"threads": 1}},
    {"name": "slow-embed", "path": "models/bert_st", "task": "embed",
     "batching": {"threads": 1, "max_delay_us": 3000000, "max_batch_size": 512,
                  "max_batch_tokens": 1048576}}$mt_model
  ]
}
JSON
chmod a+r "$WORK/nlpd.json"

# ---- start
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
if $DOCKER run -d --name "$NAME" -p "127.0.0.1:$port:8080" \
        -v "$WORK/models:/var/lib/nlpd/models:ro" -v "$WORK/nlpd.json:/etc/nlpd/nlpd.json:ro" \
        --read-only --tmpfs /tmp --cap-drop ALL --security-opt no-new-privileges \
        --health-interval 2s --health-start-period 60s \
        "$IMAGE" >/dev/null; then
    ok "container started"
else
    bad "docker run"; exit 1
fi
URL=http://127.0.0.1:$port
ready=0
for _ in $(seq 1 600); do
    [[ $($DOCKER inspect -f '{{.State.Running}}' "$NAME") == true ]] || break
    if [[ $(curl -s -o /dev/null -w '%{http_code}' "$URL/readyz") == 200 ]]; then ready=1; break; fi
    sleep 0.2
done
check "/readyz 200" test $ready = 1
[[ $ready == 1 ]] || exit 1
check "nlpd runs as uid 10001 under tini (PID 1)" \
    bash -c "$DOCKER exec $NAME cat /proc/1/comm | grep -qx tini && \
             $DOCKER top $NAME -o pid,uid,comm | awk '\$3==\"nlpd\"{print \$2}' | grep -qx 10001"

# ---- one request per endpoint
req() {  # name method path [body]: expects 200 and a JSON body
    local name=$1 method=$2 path=$3 body=${4:-} out code
    out=$WORK/resp.json
    if [[ -n $body ]]; then
        code=$(curl -s -o "$out" -w '%{http_code}' -X "$method" -H 'Content-Type: application/json' \
               --data "$body" "$URL$path")
    else
        code=$(curl -s -o "$out" -w '%{http_code}' -X "$method" "$URL$path")
    fi
    if [[ $code == 200 ]]; then ok "$name $method $path"; else bad "$name $method $path: HTTP $code $(head -c 300 "$out")"; fi
}
req embed     POST /v1/embed     '{"model": "tiny-embed", "texts": ["hello world", "good morning"]}'
req sentiment POST /v1/sentiment '{"model": "tiny-sentiment", "text": "I love it"}'
req classify  POST /v1/classify  '{"model": "tiny-classify", "text": "where is my order?"}'
req qa        POST /v1/qa        '{"model": "tiny-qa", "question": "Who wrote it?", "context": "It was written by Ada."}'
if [[ $have_mt == 1 ]]; then
    req translate POST /v1/translate '{"model": "tiny-en-pt", "text": "Hello", "source": "en", "target": "pt"}'
else
    bad "translate: the OPUS-MT tokenizer is missing ($SHARED/tokenizers/opus-mt-tc-big-en-pt)"
fi
req models    GET  /v1/models
req model     GET  /v1/models/tiny-qa
req healthz   GET  /healthz
req metrics   GET  /metrics
check "/metrics counts the requests" grep -q 'nlpd_requests_total{endpoint="qa"' "$WORK/resp.json"

# ---- HEALTHCHECK (deploy/docker/healthcheck.sh on /healthz)
healthy=0
for _ in $(seq 1 100); do
    [[ $($DOCKER inspect -f '{{.State.Health.Status}}' "$NAME") == healthy ]] && { healthy=1; break; }
    sleep 0.3
done
check "HEALTHCHECK reports healthy" test $healthy = 1

# ---- SIGTERM drains: requests in flight when SIGTERM arrives finish with 200.
# slow-embed's worker waits up to 3 s for batch-mates, so the requests are still
# queued when the signal comes.
# Straight to the container's address (not through docker-proxy, which accepts
# and then drops connections once nlpd has closed its listener).
ip=$($DOCKER inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$NAME")
texts=$(python3 -c 'import json; print(json.dumps({"model": "slow-embed", "texts": ["sentence number %d" % i for i in range(8)]}))')
pids=()
for i in $(seq 1 12); do
    ( code=$(curl -s -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' \
             --data "$texts" "http://$ip:8080/v1/embed"); echo "$code/$?" > "$WORK/drain.$i" ) &
    pids+=($!)
done
inflight=0
for _ in $(seq 1 200); do
    n=$(curl -s "http://$ip:8080/metrics" | awk '$1=="nlpd_requests_in_flight"{print $2}')
    [[ ${n:-0} -ge 12 ]] && { inflight=$n; break; }
    sleep 0.05
done
check "12 requests in flight before SIGTERM (nlpd_requests_in_flight ${inflight})" test "$inflight" -ge 12
$DOCKER kill -s TERM "$NAME" >/dev/null
for p in "${pids[@]}"; do wait "$p"; done
rc=$($DOCKER wait "$NAME")
check "exit status 0 after SIGTERM (got $rc)" test "$rc" = 0
check "nlpd logged the drain" bash -c "$DOCKER logs $NAME 2>&1 | grep -q 'draining'"
outcomes=$(cat "$WORK"/drain.* | sort | uniq -c | tr '\n' ' ')
echo "     HTTP status/curl exit of the requests around SIGTERM: $outcomes"
echo "     (000/7: refused, sent after the listener closed; 200/0: served)"
check "no request was cut off (only 200, 503 or connection refused)" \
    bash -c "! cat $WORK/drain.* | grep -vqxE '200/0|503/0|000/7'"
check "all 12 requests in flight were served" test "$(grep -lx '200/0' "$WORK"/drain.* | wc -l)" = 12
