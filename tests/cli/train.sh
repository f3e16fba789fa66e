#!/usr/bin/env bash
# CLI tests: nlpd-train (from the build dir in $1) on the tiny sentence-transformers
# base of tests/fixtures/train. Prints "cli-train: N passed, N failed".
set -uo pipefail
BUILD=${1:-build}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BASE="$ROOT/tests/fixtures/train/tiny_st_base"
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
SUITE=cli-train
source "$ROOT/tests/cli/lib.sh"
TRAIN=$(bin nlpd-train)

# 24 rows, two labels (pos/neg as the SST files name them)
{
    echo "sentence,label"
    for i in $(seq 1 12); do
        echo "\"the film was great, really $i\",pos"
        echo "\"a dull and boring story $i\",neg"
    done
} > "$T/train.csv"
printf 'sentence,label\n"great acting",pos\nawful,neg\nlovely,maybe\n' > "$T/dev_unknown.csv"
printf '{"text": "fine", "label": "a"}\n{"text": "", "label": "b"}\n{"text": "ok", "label": "b"}\n' > "$T/bad.jsonl"
common=(--base "$BASE" --epochs 1 --batch-size 8 --threads 1 --max-length 32 --progress lines)

check help 0 'usage: nlpd-train --base MODEL_DIR --train FILE' "$TRAIN" --help
check version 0 '^nlpd-train [0-9]+\.' "$TRAIN" --version
check no-args 2 '--base, --train and --out are required' "$TRAIN"
check bad-number 2 '--lr must be a number' "$TRAIN" --lr fast --base x --train y --out z
check bad-choice 2 '--on-bad-row is fail or skip' "$TRAIN" --on-bad-row maybe
check train 0 '"dev_accuracy": [01]\.[0-9]+' "$TRAIN" "${common[@]}" --train "$T/train.csv" \
    --label-map pos=positive,neg=negative --dev-split 0.25 --out "$T/m1"
check published 0 'positive' cat "$T/m1/config.json"
check plain-progress 0 '^train: epoch 1/1 step [0-9]+/[0-9]+ loss' "$TRAIN" "${common[@]}" \
    --train "$T/train.csv" --dev-split 0.25 --out "$T/m2"
check exists 1 'already exists \(--force replaces it\)' "$TRAIN" "${common[@]}" \
    --train "$T/train.csv" --dev-split 0.25 --out "$T/m1"
check bad-row-fatal 1 'bad\.jsonl:2: empty text' "$TRAIN" "${common[@]}" --train "$T/bad.jsonl" \
    --dev "$T/bad.jsonl" --out "$T/m3"
check unknown-label 1 'dev_unknown\.csv:4: unknown label .maybe.' "$TRAIN" "${common[@]}" \
    --train "$T/train.csv" --dev "$T/dev_unknown.csv" --out "$T/m4"
check unknown-label-skip 0 'dev_unknown\.csv:4: unknown label .maybe. .*\(row skipped\)' "$TRAIN" \
    "${common[@]}" --train "$T/train.csv" --dev "$T/dev_unknown.csv" --on-bad-row skip --out "$T/m5"
check missing-base 1 'config\.json' "$TRAIN" --base "$T/nothing" --train "$T/train.csv" --out "$T/m6"
check nothing-left 0 '^0$' bash -c "ls -A '$T' | grep -c 'tmp-' || true"

echo "cli-train: ${pass} passed, ${fail} failed, ${skipped} skipped"
[[ $fail -eq 0 ]]
