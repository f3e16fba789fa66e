#!/usr/bin/env bash
# Build and run nlpd's libFuzzer targets (tests/fuzz/fuzz_*.c) for a bounded time each.
# Prints one line per target and "fuzz: N passed, N failed, N skipped" last (a
# target passes when its seeds pass and fuzzing finds no crash, leak, UB,
# contract violation, timeout or out-of-memory).
#
#   tests/fuzz/run.sh [BUILD_DIR] [SECONDS_PER_TARGET] [TARGET...]
#       defaults: build/san, $NLPD_FUZZ_SECONDS or 12, every target
#   make fuzz FUZZ_SECONDS=600                the long runs (build/fuzz-long)
#   NLPD_FUZZ_RUNS=N                          stop each target after N executions (or the time)
#   NLPD_FUZZ_NICE=19                         run the fuzzers under nice (shared machines)
#   NLPD_FUZZ_SEED=N                          a fixed libFuzzer seed (make test sets 1, so a
#                                             CI run repeats the last one; default: random)
#
# Targets: request (server/api.c, auth.c), safetensors (engine header parser),
# wordpiece (bert-base-uncased from NLPD_SHARED), marian_tok (the OPUS-MT spm the tiny
# Marian fixtures use), config (server/config.c), model_folder (fuzzed config.json and
# tokenizer file next to a fixture's weights, then eng_model_load).
#
# The engine and server are built with clang (-fsanitize=fuzzer-no-link,address,
# undefined) into BUILD_DIR/fuzz/lib by the Makefile; each target links them. The seed
# corpus tests/fuzz/corpus/TARGET is read-only input; new units go to a temporary corpus.
# A crash leaves its input in BUILD_DIR/fuzz/artifacts/TARGET-* and is printed as
# base64; reproduce with: BUILD_DIR/fuzz/fuzz_TARGET ARTIFACT. Slow units (over
# NLPD_FUZZ_SLOW seconds, default 1) are reported; a unit over 10 s is a failure.
set -uo pipefail
BUILD=${1:-build/san}
SECS=${2:-${NLPD_FUZZ_SECONDS:-12}}
shift $(( $# > 2 ? 2 : $# ))
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
OUT="$BUILD/fuzz"
CC=${FUZZ_CC:-clang}
CXX=${FUZZ_CXX:-clang++}
SLOW=${NLPD_FUZZ_SLOW:-1}
NICE=()
[[ -n ${NLPD_FUZZ_NICE:-} ]] && NICE=(nice -n "$NLPD_FUZZ_NICE")
export NLPD_ROOT="$ROOT" NLPD_SHARED="${NLPD_SHARED:-$ROOT/../shared}"

ALL=(request safetensors wordpiece marian_tok config model_folder)
TARGETS=("$@")
[[ ${#TARGETS[@]} -eq 0 ]] && TARGETS=("${ALL[@]}")

pass=0; fail=0
result() { echo "fuzz: $pass passed, $fail failed, 0 skipped"; [[ $fail -eq 0 ]]; exit $?; }

# clang is required (scripts/install_deps.sh installs it): missing, every target fails.
if ! command -v "$CC" >/dev/null || ! command -v "$CXX" >/dev/null; then
    echo "fuzz: $CC/$CXX not found (scripts/install_deps.sh installs clang)" >&2
    fail=${#TARGETS[@]}; result
fi

# Per target: maximum input length (bytes).
declare -A MAXLEN=([request]=4096 [safetensors]=65536 [wordpiece]=16384 [marian_tok]=16384
                   [config]=8192 [model_folder]=65536)

mkdir -p "$OUT/artifacts"
LIB="$OUT/lib"
if ! CFLAGS="-O1 -g -fsanitize=fuzzer-no-link" CXXFLAGS="-O1 -g -fsanitize=fuzzer-no-link" \
        make --no-print-directory -s -j"${NLPD_FUZZ_JOBS:-2}" CC="$CC" CXX="$CXX" SAN=1 CUDA=0 \
        BUILD="$LIB" "$LIB/libnlpd_engine.a" "$LIB/libnlpd_server.a" >"$OUT/lib.log" 2>&1; then
    tail -30 "$OUT/lib.log"
    echo "fuzz: building the engine and server with $CC failed (log: $OUT/lib.log)" >&2
    fail=${#TARGETS[@]}; result
fi
# shellcheck disable=SC2207
LIBS=($(pkg-config --libs libcjson libutf8proc openblas libmicrohttpd libuv libcrypto 2>/dev/null))

# Scratch in memory when there is a tmpfs (the targets write files on every input).
WORK=$(mktemp -d -p "$( [[ -d /dev/shm && -w /dev/shm ]] && echo /dev/shm || echo "${TMPDIR:-/tmp}")")
trap 'rm -rf "$WORK"' EXIT
export TMPDIR="$WORK"   # the targets' scratch folders go away with it
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}:abort_on_error=0
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

for t in "${TARGETS[@]}"; do
    src="tests/fuzz/fuzz_$t.c" bin="$OUT/fuzz_$t"
    if [[ ! -f $src ]]; then
        echo "fuzz $t: no $src" >&2; fail=$((fail + 1)); continue
    fi
    # shellcheck disable=SC2046
    if ! "$CC" -g -O1 -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror \
            -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined \
            -Iserver -Iengine -Iengine/include -Itests/fuzz $(pkg-config --cflags libcjson) -c "$src" \
            -o "$OUT/fuzz_$t.o" >"$OUT/fuzz_$t.build.log" 2>&1 ||
       ! "$CXX" -fsanitize=fuzzer,address,undefined "$OUT/fuzz_$t.o" "$LIB/libnlpd_server.a" \
            "$LIB/libnlpd_engine.a" "${LIBS[@]}" -lsentencepiece -lpthread -lm -o "$bin" \
            >>"$OUT/fuzz_$t.build.log" 2>&1; then
        tail -20 "$OUT/fuzz_$t.build.log"
        echo "fuzz $t: build failed" >&2; fail=$((fail + 1)); continue
    fi
    corpus="tests/fuzz/corpus/$t"
    dict=(); [[ -f tests/fuzz/fuzz_$t.dict ]] && dict=(-dict="tests/fuzz/fuzz_$t.dict")
    seeds=0; [[ -d $corpus ]] && seeds=$(find "$corpus" -type f | wc -l)
    if [[ $seeds -eq 0 ]]; then
        echo "fuzz $t: no seeds in $corpus" >&2; fail=$((fail + 1)); continue
    fi
    # 1. Regression: every seed must pass.
    if ! "${NICE[@]}" "$bin" -runs=0 -timeout=10 -rss_limit_mb=2048 -max_len="${MAXLEN[$t]:-65536}" \
            -artifact_prefix="$OUT/artifacts/$t-seed-" "$corpus" >"$WORK/$t.seeds.log" 2>&1; then
        grep -E 'contract violated|ERROR|runtime error|SUMMARY' "$WORK/$t.seeds.log" | head -5
        tail -30 "$WORK/$t.seeds.log"
        echo "fuzz $t: a seed input fails ($corpus)" >&2; fail=$((fail + 1)); continue
    fi
    # 2. Bounded fuzzing from the seeds (one process: cores are shared).
    new="$WORK/corpus-$t"; mkdir -p "$new"
    limit=(-max_total_time="$SECS"); [[ -n ${NLPD_FUZZ_RUNS:-} ]] && limit+=(-runs="$NLPD_FUZZ_RUNS")
    [[ -n ${NLPD_FUZZ_SEED:-} ]] && limit+=(-seed="$NLPD_FUZZ_SEED")
    start=$(date +%s)
    "${NICE[@]}" "$bin" "${limit[@]}" -timeout=10 -report_slow_units="$SLOW" -rss_limit_mb=2048 \
        -max_len="${MAXLEN[$t]:-65536}" "${dict[@]}" -artifact_prefix="$OUT/artifacts/$t-" \
        -print_final_stats=1 "$new" "$corpus" >"$WORK/$t.log" 2>&1
    rc=$?
    took=$(( $(date +%s) - start ))
    runs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$WORK/$t.log" | grep -oE '[0-9]+$')
    rate=$(grep -oE 'stat::average_exec_per_sec: *[0-9]+' "$WORK/$t.log" | grep -oE '[0-9]+$')
    cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+' "$WORK/$t.log" | tail -1)
    slow=$(grep -cE '^Slowest unit:' "$WORK/$t.log")
    slowest=$(grep -oE '^Slowest unit: [0-9]+ s' "$WORK/$t.log" | tail -1 | grep -oE '[0-9]+ s')
    units=$(find "$new" -type f | wc -l)
    if [[ $rc -ne 0 ]]; then
        grep -E 'ERROR|contract violated|runtime error|SUMMARY|Test unit written|Base64|timeout' \
            "$WORK/$t.log" | head -20
        tail -40 "$WORK/$t.log"
        echo "fuzz $t: FAILED after ${runs:-?} runs in ${took}s; input saved in $OUT/artifacts/$t-*" >&2
        fail=$((fail + 1)); continue
    fi
    echo "fuzz $t: ${runs:-0} execs in ${took}s (${rate:-0}/s), ${cov:-cov ?}, $seeds seeds +" \
         "$units new units, slow units (>${SLOW}s): ${slow}${slowest:+ (slowest $slowest)}, no crash"
    if [[ $slow -gt 0 ]]; then
        grep -A2 -E '^Slowest unit:' "$WORK/$t.log" | head -12 | sed "s/^/fuzz $t slow: /"
    fi
    pass=$((pass + 1))
done
result
