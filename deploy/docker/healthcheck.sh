#!/bin/bash
# nlpd-healthcheck [PATH]: exit 0 when GET PATH (default /healthz) on
# 127.0.0.1:$NLPD_PORT answers 200. bash's /dev/tcp only: the runtime image has
# no curl or wget.
set -euo pipefail
path=${1:-/healthz}
exec 3<>"/dev/tcp/127.0.0.1/${NLPD_PORT:-8080}"
printf 'GET %s HTTP/1.0\r\nHost: localhost\r\n\r\n' "$path" >&3
IFS= read -r -t 3 status <&3
[[ $status == "HTTP/1."?" 200"* ]]
