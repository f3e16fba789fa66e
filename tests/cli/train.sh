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
# ---------------------------------------------------------------- head-only
check head-only 0 '"result": "saved".*"dev_accuracy": [01]\.[0-9]+' "$TRAIN" "${common[@]}" --head-only \
    --train "$T/train.csv" --dev-split 0.25 --out "$T/h1"
check head-only-record 0 '"mode":[[:space:]]*"head-only"' cat "$T/h1/nlpd_train.json"

# ------------------------------------------- repository: gate, publish, watch
# Rows of the separable kind the tiny models learn: a sentiment word among fillers.
POSW=(excellent wonderful great superb delightful fantastic lovely brilliant)
NEGW=(terrible awful horrible boring dreadful bad poor dull)
FILLW=(the movie was plot actor film story and it a really very this acting music quite)
# gen FILE N SEED [feedback TIME0] [flip]: N rows alternately negative/positive (JSONL);
# as feedback log lines from TIME0 (unix ms) on; flip swaps the labels.
gen() {
    local file=$1 n=$2 seed=$3 mode=${4:-plain} t0=${5:-0} flip=${6:-}
    RANDOM=$seed
    : > "$file"
    for ((i = 0; i < n; i++)); do
        local lab=$((i % 2)) word text name
        if [[ $lab -eq 1 ]]; then word=${POSW[RANDOM % 8]}; else word=${NEGW[RANDOM % 8]}; fi
        text="${FILLW[RANDOM % 16]} ${FILLW[RANDOM % 16]} $word ${FILLW[RANDOM % 16]} $i"
        [[ -n $flip ]] && lab=$((1 - lab))
        if [[ $lab -eq 1 ]]; then name=positive; else name=negative; fi
        if [[ $mode == feedback ]]; then
            printf '{"time": %d, "model": "m", "version": "v", "text": "%s", "label": "%s"}\n' \
                $((t0 + i)) "$text" "$name" >> "$file"
        else
            printf '{"text": "%s", "label": "%s"}\n' "$text" "$name" >> "$file"
        fi
    done
}
gen "$T/rtrain.jsonl" 120 1
gen "$T/rdev.jsonl" 40 2
TRAINED="$ROOT/tests/fixtures/train/tiny_trained"
rc_=(--max-length 32 --threads 1 --progress none --batch-size 8)
# A strong first version (the served one): tiny_trained's head kept, one head-only epoch.
check first-version 0 '"result": "published", "repository": "[^"]+", "version": "v[0-9]+"' \
    "$TRAIN" "${rc_[@]}" --base "$TRAINED" --labels negative,positive --head-only --epochs 1 \
    --train "$T/rtrain.jsonl" --dev "$T/rdev.jsonl" --repository "$T/repo1"
check first-version-meta 0 '"scores"' cat "$T/repo1/v000001/nlpd-version.json"
# Feedback that contradicts dev (sentiment flipped): better on its own held-aside part,
# much worse on dev -> refused, exit 3, the served version stays, nothing left over.
gen "$T/flipped.jsonl" 60 3 feedback 1000 flip
check gate-refuses 3 '"result": "refused".*"reason": "worse on dev' \
    "$TRAIN" "${rc_[@]}" --from-repository "$T/repo1" --repository "$T/repo1" \
    --feedback "$T/flipped.jsonl" --dev "$T/rdev.jsonl" --epochs 6 --lr 2e-3
check gate-refused-nothing-published 0 '^v000001 $' bash -c "ls -A '$T/repo1' | tr '\n' ' '"
check gate-refused-no-work-left 0 '^0$' bash -c "ls -A '$T/repo1' | grep -vc '^v000001$' || true"
# A weak served version (an untrained head) and correct feedback -> published v000002
# with both scores and feedback_until in its metadata.
check weak-version 0 '"version": "v000001"' "$TRAIN" "${rc_[@]}" --base "$BASE" \
    --labels negative,positive --head-only --max-steps 1 --train "$T/rtrain.jsonl" \
    --dev "$T/rdev.jsonl" --repository "$T/repo2"
gen "$T/good.jsonl" 60 4 feedback 5000
check gate-publishes 0 '"result": "published".*"version": "v000002".*"reason": "better on the [0-9]+ held-aside' \
    "$TRAIN" "${rc_[@]}" --from-repository "$T/repo2" --repository "$T/repo2" \
    --feedback "$T/good.jsonl" --train "$T/rtrain.jsonl" --dev "$T/rdev.jsonl" --epochs 6 --lr 2e-3
check gate-meta 0 '"feedback_until":[[:space:]]*5059' cat "$T/repo2/v000002/nlpd-version.json"
check gate-meta-scores 0 '"base_version":[[:space:]]*"v000001"' cat "$T/repo2/v000002/nlpd-version.json"
check gate-meta-old 0 '"feedback":\{"old":0\.[0-9]+,"new":1,' \
    bash -c "tr -d ' \t\n' < '$T/repo2/v000002/nlpd-version.json'"

# Signed versions: --key signs, --public-key verifies (the served version must verify).
openssl ecparam -name prime256v1 -genkey -noout -out "$T/k.pem" 2>/dev/null
openssl ec -in "$T/k.pem" -pubout -out "$T/k.pub" 2>/dev/null
openssl ecparam -name prime256v1 -genkey -noout -out "$T/other.pem" 2>/dev/null
openssl ec -in "$T/other.pem" -pubout -out "$T/other.pub" 2>/dev/null
check signed-first 0 '"version": "v000001"' "$TRAIN" "${rc_[@]}" --base "$BASE" \
    --labels negative,positive --head-only --max-steps 1 --train "$T/rtrain.jsonl" \
    --dev "$T/rdev.jsonl" --repository "$T/repo5" --key "$T/k.pem"
check signed-verifies 0 '' "$TRAIN" verify "$T/repo5/v000001" --public-key "$T/k.pub"
check signed-gate 0 '"version": "v000002".*"pruned": \["v000001"\]' "$TRAIN" "${rc_[@]}" \
    --from-repository "$T/repo5" --public-key "$T/k.pub" --repository "$T/repo5" --key "$T/k.pem" \
    --feedback "$T/good.jsonl" --train "$T/rtrain.jsonl" --dev "$T/rdev.jsonl" --epochs 6 \
    --lr 2e-3 --keep 1
check signed-new-verifies 0 '' "$TRAIN" verify "$T/repo5/v000002" --public-key "$T/k.pub"
check keep-pruned-old 0 '^v000002 $' bash -c "ls -A '$T/repo5' | tr '\n' ' '"
check keep-needs-repository 2 '--keep prunes the --repository' "$TRAIN" "${common[@]}" \
    --train "$T/train.csv" --out "$T/m9" --keep 2
check wrong-key-refused 1 '"result": "failed"' "$TRAIN" "${rc_[@]}" --from-repository "$T/repo5" \
    --public-key "$T/other.pub" --repository "$T/repo5" --feedback "$T/good.jsonl" \
    --dev "$T/rdev.jsonl"

# prune (retention): the newest N valid versions stay, never the pinned one; .tmp-*
# publishes in progress and other files are not touched; leftovers are cleaned.
for i in 1 2 3 4; do "$TRAIN" publish "$BASE" --repository "$T/repo6" --key "$T/k.pem" >/dev/null; done
mkdir -p "$T/repo6/.tmp-inflight"
echo notes > "$T/repo6/NOTES"
"$TRAIN" pin --repository "$T/repo6" v000001
check prune-help 0 'usage: nlpd-train prune --repository DIR --keep N' "$TRAIN" prune --help
check prune-no-keep 2 '--keep N are required' "$TRAIN" prune --repository "$T/repo6"
check prune-keep-0 2 '--keep takes a whole number >= 1' "$TRAIN" prune --repository "$T/repo6" --keep 0
check prune-wrong-key 1 'nothing pruned' "$TRAIN" prune --repository "$T/repo6" --keep 1 \
    --public-key "$T/other.pub"
mkdir -p "$T/repo6/.pruned-v000009-999999999/sub"  # an interrupted prune's leftover
check prune-pinned 0 '^v000002 v000003 nlpd-train prune: .*removed 2 versions, 2 left, serving v000001 \(and deleted leftovers' \
    bash -c "'$TRAIN' prune --repository '$T/repo6' --keep 2 --public-key '$T/k.pub' 2>&1 | tr '\n' ' '"
check prune-left 0 '^\.tmp-inflight NOTES PIN v000001 v000004 $' bash -c "ls -A '$T/repo6' | LC_ALL=C sort | tr '\n' ' '"
check prune-again-none 0 'removed 0 versions, 2 left' "$TRAIN" prune --repository "$T/repo6" --keep 2
"$TRAIN" pin --repository "$T/repo6" --unpin
check publish-keep 0 '^v000005 nlpd-train publish: pruned v000001 \(keeping 2\) $' \
    bash -c "'$TRAIN' publish '$BASE' --repository '$T/repo6' --key '$T/k.pem' --keep 2 --public-key '$T/k.pub' 2>&1 | tr '\n' ' '"
check publish-keep-left 0 '^v000004 v000005 $' bash -c "ls '$T/repo6' | grep '^v' | tr '\n' ' '"

# watch: a weak served version, then 40 new feedback items -> one new version, then it
# waits (the next checks see 0 new items) until SIGTERM, which stops it cleanly.
"$TRAIN" "${rc_[@]}" --base "$BASE" --labels negative,positive --head-only --max-steps 1 \
    --train "$T/rtrain.jsonl" --dev "$T/rdev.jsonl" --repository "$T/repo3" >/dev/null 2>&1
mkdir -p "$T/fb3"
gen "$T/fb3/host-1-1.jsonl" 40 5 feedback 9000
# wait_for FILE PATTERN SECONDS: until FILE matches PATTERN (polls the log; bounded)
wait_for() {
    local i
    for ((i = 0; i < $3 * 10; i++)); do
        grep -qE -- "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}
"$TRAIN" watch --repository "$T/repo3" --feedback "$T/fb3" --min-new 30 --interval 0.2 \
    --train "$T/rtrain.jsonl" --base-ratio -1 --dev "$T/rdev.jsonl" "${rc_[@]}" --epochs 8 \
    --lr 2e-3 --keep 1 2> "$T/watch3.log" &
WPID=$!
if wait_for "$T/watch3.log" 'serving v000002; 0 new feedback items' 120; then
    wait_for "$T/watch3.log" 'low priority' 1
    kill -TERM $WPID; wait $WPID; wrc=$?
    check watch-published-once 0 '^1$' grep -c 'published v000002' "$T/watch3.log"
    check watch-pruned 0 'pruned v000001 \(--keep 1\)' cat "$T/watch3.log"
    check watch-then-waits 0 '^v000002 $' bash -c "ls -A '$T/repo3' | tr '\n' ' '"
    check watch-low-priority 0 'low priority: SCHED_BATCH' cat "$T/watch3.log"
    check watch-stops 0 "^$wrc stopped" bash -c "echo $wrc \$(tail -1 '$T/watch3.log' | awk '{print \$3}')"
else
    kill -TERM $WPID 2>/dev/null; wait $WPID
    check watch-published-once 0 'never' cat "$T/watch3.log"
fi

# SIGTERM while training: nothing published, no work folder left, exit 0.
"$TRAIN" "${rc_[@]}" --base "$BASE" --labels negative,positive --head-only --max-steps 1 \
    --train "$T/rtrain.jsonl" --dev "$T/rdev.jsonl" --repository "$T/repo4" >/dev/null 2>&1
mkdir -p "$T/fb4"
gen "$T/fb4/host-1-1.jsonl" 40 6 feedback 9000
"$TRAIN" watch --repository "$T/repo4" --feedback "$T/fb4" --min-new 30 --interval 0.2 \
    --train "$T/rtrain.jsonl" --base-ratio -1 --dev "$T/rdev.jsonl" "${rc_[@]}" --epochs 1000 \
    2> "$T/watch4.log" &
WPID=$!
wait_for "$T/watch4.log" 'training from v000001' 60
kill -TERM $WPID; wait $WPID; wrc=$?
check watch-term-exit 0 "^0$" echo $wrc
check watch-term-logged 0 'stopped during training: nothing published' cat "$T/watch4.log"
check watch-term-no-version 0 '^v000001 $' bash -c "ls -A '$T/repo4' | tr '\n' ' '"
check watch-term-no-partial 0 '^0$' bash -c "ls -A '$T/repo4' | grep -vc '^v000001$' || true"
check nothing-left 0 '^0$' bash -c "ls -A '$T' | grep -c 'tmp-' || true"

echo "cli-train: ${pass} passed, ${fail} failed, ${skipped} skipped"
[[ $fail -eq 0 ]]
