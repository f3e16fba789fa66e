#!/usr/bin/env bash
# deploy/docker/systemd-test.sh - run systemd/nlpd.service and nlpd-train@.service
# under a real systemd (in a container) with all their sandboxing: start, /readyz,
# one request, reload (SIGHUP), stop drains and exits 0, the trainer runs at nice
# 19 with SCHED_BATCH. Needs a Docker engine and the nlpd image (deploy/docker/test.sh
# builds nlpd:smoke); debian:12 as the base (pullable, or made with debootstrap).
#   NLPD_IMAGE=nlpd:smoke deploy/docker/systemd-test.sh
# Last line: "systemd: N passed, N failed, N pending".
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
IMAGE=${NLPD_IMAGE:-nlpd:smoke}
DOCKER=${DOCKER:-docker}
NAME=nlpd-systemd-$$
TAG=nlpd-systemd-test:latest
WORK=$(mktemp -d)
pass=0; fail=0; pending=0
ok()   { echo "ok   $*"; pass=$((pass + 1)); }
bad()  { echo "FAIL $*"; fail=$((fail + 1)); }
check() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }
finish() {
    [[ $fail -ne 0 ]] && $DOCKER exec "$NAME" journalctl --no-pager -n 40 2>/dev/null
    $DOCKER rm -f "$NAME" >/dev/null 2>&1
    rm -rf "$WORK"
    echo "systemd: ${pass} passed, ${fail} failed, ${pending} pending"
    [[ $fail -eq 0 ]]
    exit $?
}
trap finish EXIT
$DOCKER info >/dev/null 2>&1 || { bad "no Docker engine answers ($DOCKER info)"; exit 1; }
$DOCKER image inspect "$IMAGE" >/dev/null 2>&1 || { bad "image $IMAGE missing (deploy/docker/test.sh builds it)"; exit 1; }

cat > "$WORK/Dockerfile" <<DOCKERFILE
FROM $IMAGE AS app
FROM debian:12
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      systemd curl procps libcjson1 libutf8proc2 libopenblas0-pthread libsentencepiece0 libssl3 \
      libmicrohttpd12 libuv1 && rm -rf /var/lib/apt/lists/*
COPY --from=app /usr/local/bin/nlpd /usr/local/bin/nlpd-train /usr/local/bin/
DOCKERFILE
if DOCKER_BUILDKIT=1 $DOCKER build --network host -q -t "$TAG" "$WORK" >/dev/null; then
    ok "systemd image built"
else
    bad "docker build of the systemd image"; exit 1
fi
# systemd as PID 1 needs most capabilities (mount namespaces for the sandboxing);
# CAP_SYS_RESOURCE is left out, as some sandboxes (this project's machines) lack it.
if $DOCKER run -d --name "$NAME" --cap-add ALL --cap-drop SYS_RESOURCE --security-opt seccomp=unconfined \
        --security-opt apparmor=unconfined --cgroupns=host -v /sys/fs/cgroup:/sys/fs/cgroup:rw \
        --tmpfs /run --tmpfs /run/lock -v "$ROOT/systemd:/src/systemd:ro" \
        -v "$ROOT/tests/fixtures/models:/src/fixtures:ro" "$TAG" /lib/systemd/systemd >/dev/null; then
    ok "container with systemd started"
else
    bad "docker run (systemd needs CAP_SYS_ADMIN and friends)"; exit 1
fi
sx() { $DOCKER exec "$NAME" bash -c "$1"; }
for _ in $(seq 1 100); do
    state=$(sx "systemctl is-system-running" 2>/dev/null)
    [[ $state == running || $state == degraded ]] && break
    sleep 0.2
done
check "systemd is up ($state)" test "$state" = running -o "$state" = degraded

sx '
install -m 644 /src/systemd/nlpd.service /src/systemd/nlpd-train@.service /etc/systemd/system/
install -m 644 /src/systemd/nlpd.sysusers /usr/lib/sysusers.d/nlpd.conf
install -m 644 /src/systemd/nlpd.tmpfiles /usr/lib/tmpfiles.d/nlpd.conf
systemd-sysusers && systemd-tmpfiles --create
cp -r /src/fixtures/bert_cls /src/fixtures/bert_st /var/lib/nlpd/models/
chown -R nlpd:nlpd /var/lib/nlpd/models
cat > /etc/nlpd/nlpd.json <<JSON
{"listen": "127.0.0.1:8080", "drain_timeout_ms": 10000, "models": [
 {"name": "embed", "path": "models/bert_st", "task": "embed", "batching": {"threads": 1}},
 {"name": "sentiment", "path": "models/bert_cls", "task": "sentiment", "batching": {"threads": 1}}]}
JSON
systemctl daemon-reload' >/dev/null
check "systemctl start nlpd" sx "systemctl start nlpd"
ready=0
for _ in $(seq 1 300); do
    [[ $(sx "curl -s -o /dev/null -w %{http_code} localhost:8080/readyz") == 200 ]] && { ready=1; break; }
    sleep 0.2
done
check "/readyz 200 under the sandbox" test $ready = 1
check "POST /v1/sentiment 200" test "$(sx "curl -s -o /dev/null -w %{http_code} -H 'Content-Type: application/json' -d '{\"text\": \"good\"}' localhost:8080/v1/sentiment")" = 200
check "nlpd runs as user nlpd" test "$(sx 'ps -o user= -C nlpd')" = nlpd

sx "systemctl reload nlpd" >/dev/null 2>&1
sleep 1
if [[ $(sx "systemctl is-active nlpd") == active ]]; then
    ok "systemctl reload (SIGHUP) keeps nlpd running"
elif ! grep -q SIGHUP "$ROOT/server/main.c"; then
    echo "PENDING systemctl reload: nlpd does not handle SIGHUP yet (hot-swap issue), so SIGHUP stops it"
    pending=$((pending + 1))
    sx "systemctl start nlpd"
    for _ in $(seq 1 300); do
        [[ $(sx "curl -s -o /dev/null -w %{http_code} localhost:8080/readyz") == 200 ]] && break
        sleep 0.2
    done
else
    bad "systemctl reload stopped nlpd"
fi

check "systemctl stop: drains and exits 0" sx "systemctl stop nlpd && \
    test \$(systemctl show nlpd -p ExecMainStatus --value) = 0 && \
    journalctl -u nlpd --no-pager | grep -q 'exit 0'"

# The trainer's priority: a probe in place of ExecStart, under the same unit
# settings (instance sentiment; its credential, the private key, must load).
sx 'mkdir -p /etc/systemd/system/nlpd-train@.service.d
openssl ecparam -name prime256v1 -genkey -noout -out /etc/nlpd/signing.pem 2>/dev/null ||
    echo "-----BEGIN EC PRIVATE KEY-----" > /etc/nlpd/signing.pem
chmod 600 /etc/nlpd/signing.pem
printf "[Service]\nExecStart=\nExecStart=/bin/sh -c \"ps -o ni=,cls=,user= -p \$\$\$\$ > /var/lib/nlpd/prio; test -r %%d/signing.pem && echo key >> /var/lib/nlpd/prio\"\nRestart=no\n" \
    > /etc/systemd/system/nlpd-train@.service.d/probe.conf
systemctl daemon-reload && systemctl start nlpd-train@sentiment'
sleep 1
prio=$(sx "cat /var/lib/nlpd/prio" 2>/dev/null | xargs)
check "nlpd-train@sentiment runs at nice 19, SCHED_BATCH, as nlpd, with its key (got: $prio)" test "$prio" = "19 B nlpd key"
