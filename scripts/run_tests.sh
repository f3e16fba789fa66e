#!/usr/bin/env bash
# Run every test suite against the build in $1 (default build/san) and print
# one closing line "N passed, N failed" that CI reads.
set -uo pipefail
BUILD=${1:-build/san}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
export NLPD_ROOT="$ROOT" NLPD_SHARED="${NLPD_SHARED:-$ROOT/../shared}"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

total_pass=0; total_fail=0
run_suite() {  # name command...: runs a suite whose last counts line is "N passed, N failed"
    local name=$1; shift
    local log; log=$(mktemp)
    "$@" 2>&1 | tee "$log"
    local rc=${PIPESTATUS[0]}
    local line; line=$(grep -E '[0-9]+ passed, [0-9]+ failed' "$log" | tail -1)
    local p f
    p=$(grep -oE '[0-9]+ passed' <<<"$line" | grep -oE '[0-9]+'); p=${p:-0}
    f=$(grep -oE '[0-9]+ failed' <<<"$line" | grep -oE '[0-9]+'); f=${f:-0}
    if [[ -z "$line" || ( $rc -ne 0 && $f -eq 0 ) ]]; then
        echo "run_tests: suite $name exited $rc without a result line" >&2; f=$((f + 1))
    fi
    total_pass=$((total_pass + p)); total_fail=$((total_fail + f))
    rm -f "$log"
}

run_suite unit "$BUILD/test_unit"
[[ -x tests/cli/run.sh ]] && run_suite cli tests/cli/run.sh "$BUILD"

echo "${total_pass} passed, ${total_fail} failed"
[[ $total_fail -eq 0 ]]
