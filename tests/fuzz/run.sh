#!/usr/bin/env bash
# Build and run the libFuzzer target over nlpd's request parsing (server/api.c,
# server/auth.c) for a bounded time. Prints "fuzz: N passed, N failed" last.
#
#   tests/fuzz/run.sh [BUILD_DIR] [SECONDS]      (defaults: build/san, $NLPD_FUZZ_SECONDS or 45)
#
# The seed corpus (tests/fuzz/corpus) is read-only input; new units go to a
# temporary corpus. A crash leaves its input in BUILD_DIR/fuzz/artifacts/ and is
# printed as base64; reproduce with: BUILD_DIR/fuzz/fuzz_request ARTIFACT
set -uo pipefail
BUILD=${1:-build/san}
SECS=${2:-${NLPD_FUZZ_SECONDS:-45}}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
OUT="$BUILD/fuzz"
BIN="$OUT/fuzz_request"
CC=${FUZZ_CC:-clang}

result() { echo "fuzz: $1 passed, $2 failed"; [[ $2 -eq 0 ]]; exit $?; }

if ! command -v "$CC" >/dev/null; then
    echo "fuzz: $CC not found (scripts/install_deps.sh installs clang)" >&2
    result 0 1
fi
mkdir -p "$OUT/artifacts"
SRCS=(tests/fuzz/fuzz_request.c server/api.c server/api_compat.c server/auth.c)
# shellcheck disable=SC2046
if ! "$CC" -g -O1 -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror \
        -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
        -Iserver -Iengine/include $(pkg-config --cflags libcjson) "${SRCS[@]}" \
        $(pkg-config --libs libcjson) -lcrypto -lm -o "$BIN"; then
    echo "fuzz: build failed" >&2
    result 0 1
fi

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}:abort_on_error=0
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

# 1. Regression: every seed (and every saved crash of earlier runs) must pass.
if ! "$BIN" -runs=0 tests/fuzz/corpus >"$WORK/seeds.log" 2>&1; then
    tail -40 "$WORK/seeds.log"
    echo "fuzz: a seed input fails" >&2
    result 0 1
fi

# 2. Bounded fuzzing from the seeds with the dictionary (one process; 2 cores shared).
"$BIN" -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 -max_len=4096 \
    -dict=tests/fuzz/request.dict -artifact_prefix="$OUT/artifacts/" -print_final_stats=1 \
    "$WORK" tests/fuzz/corpus >"$WORK/fuzz.log" 2>&1
rc=$?
runs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$WORK/fuzz.log" | grep -oE '[0-9]+$')
execs=$(grep -oE 'stat::average_exec_per_sec: *[0-9]+' "$WORK/fuzz.log" | grep -oE '[0-9]+$')
cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+' "$WORK/fuzz.log" | tail -1)
units=$(find "$WORK" -type f | wc -l)
if [[ $rc -ne 0 ]]; then
    grep -E 'ERROR|contract violated|runtime error|SUMMARY|Test unit written|Base64' "$WORK/fuzz.log" | head -20
    tail -60 "$WORK/fuzz.log"
    echo "fuzz: crash after ${runs:-?} runs; input saved in $OUT/artifacts/" >&2
    result 0 1
fi
echo "fuzz: ${runs:-0} inputs in ${SECS}s (${execs:-0}/s), ${cov:-cov ?}, corpus $(ls tests/fuzz/corpus | wc -l) seeds + ${units} new units, no crash"
result 1 0
