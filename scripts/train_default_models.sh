#!/usr/bin/env bash
# Build the default served classifiers with nlpd-train when they are absent:
#   models/sentiment  all-MiniLM-L6-v2 fine-tuned on SST-2 (sentence level, train split;
#                     labels negative/positive)                -> /v1/sentiment
#   models/intents    all-MiniLM-L6-v2 fine-tuned on BANKING77 (train.csv minus a seeded,
#                     stratified 10 % dev split; the 77 category names) -> /v1/classify
# Each run shows its progress (a bar on a terminal, plain lines otherwise), evaluates on
# its dev set and publishes the folder atomically (eval_results.json, nlpd_train.json
# inside). Present models are left alone; --force retrains them.
#
# --repository ROOT publishes into model repositories ROOT/sentiment and ROOT/intents
# instead (what a daemon following them serves): first a head-only version (frozen
# encoder, seconds of training after one encoding pass) when the repository has no
# version yet, then the full fine-tune, which the gate publishes only when it beats
# the served version on dev. NLPD_SIGNING_KEY (a PEM file) signs the versions.
# --stage head|full (with --repository) runs only one of the two steps, so that a
# quick start can publish every head-only version before the long fine-tunes.
#
#   scripts/train_default_models.sh [--force] [--repository ROOT [--stage head|full]]
#                                   [sentiment] [intents]
#   env: NLPD_TRAIN (binary, default build/nlpd-train), NLPD_SHARED (default ../shared),
#        NLPD_TRAIN_THREADS (default: all cores)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
TRAIN=${NLPD_TRAIN:-build/nlpd-train}
SHARED=${NLPD_SHARED:-$ROOT/../shared}
BASE=models/all-MiniLM-L6-v2
THREADS=${NLPD_TRAIN_THREADS:-0}

force=0; want=(); repo_root=""; stage=all
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    a=${args[i]}
    case $a in
        --force) force=1 ;;
        --repository) i=$((i + 1)); repo_root=${args[i]:-} ;;
        --stage) i=$((i + 1)); stage=${args[i]:-}
                 [[ $stage == head || $stage == full ]] ||
                     { echo "train_default_models: --stage head|full" >&2; exit 2; } ;;
        sentiment|intents) want+=("$a") ;;
        -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
        *) echo "train_default_models: unknown argument '$a'" >&2; exit 2 ;;
    esac
done
[[ ${#want[@]} -gt 0 ]] || want=(sentiment intents)

present() { [[ -f "$1/config.json" && -f "$1/model.safetensors" ]]; }

if [[ ! -x "$TRAIN" ]]; then
    echo "train_default_models: building $TRAIN"
    make --no-print-directory "$TRAIN"
fi
if ! present "$BASE"; then
    scripts/fetch_models.sh
fi

run() {  # name, then nlpd-train arguments
    local name=$1; shift
    if [[ -n $repo_root ]]; then
        run_repo "$name" "$@"
        return
    fi
    local out=models/$name
    if present "$out" && [[ $force -eq 0 ]]; then
        echo "train_default_models: $out present (--force retrains it)"
        return 0
    fi
    echo "train_default_models: training $out (all-MiniLM-L6-v2, $*) ..."
    local t0=$SECONDS
    "$TRAIN" --base "$BASE" --out "$out" --force --threads "$THREADS" "$@"
    echo "train_default_models: $out done in $(( (SECONDS - t0) / 60 )) min $(( (SECONDS - t0) % 60 )) s"
}

# A repository: head-only first when it has no version, then the gated full fine-tune.
run_repo() {
    local name=$1; shift
    local repo=$repo_root/$name key=()
    [[ -n ${NLPD_SIGNING_KEY:-} ]] && key=(--key "$NLPD_SIGNING_KEY")
    mkdir -p "$repo_root"
    if [[ $stage != full ]] && ! compgen -G "$repo/v*/model.sig" >/dev/null; then
        echo "train_default_models: $repo: publishing a head-only version first ..."
        local t0=$SECONDS
        "$TRAIN" --base "$BASE" --repository "$repo" "${key[@]}" --threads "$THREADS" \
            --head-only "$@" --lr 2e-3 --epochs 20 || return 1
        echo "train_default_models: $repo: head-only version published in $((SECONDS - t0)) s"
    fi
    [[ $stage == head ]] && return 0
    echo "train_default_models: $repo: full fine-tune, published if it beats the served version ..."
    local t0=$SECONDS rc=0
    "$TRAIN" --base "$BASE" --repository "$repo" "${key[@]}" --threads "$THREADS" "$@" || rc=$?
    [[ $rc -eq 3 ]] && { echo "train_default_models: $repo: the gate kept the served version"; rc=0; }
    echo "train_default_models: $repo done in $(( (SECONDS - t0) / 60 )) min $(( (SECONDS - t0) % 60 )) s"
    return $rc
}

for m in "${want[@]}"; do
    case $m in
    sentiment)
        [[ -f "$SHARED/data/sst2/sst_binary_sent_train.csv" ]] ||
            { echo "train_default_models: $SHARED/data/sst2 is missing" >&2; exit 1; }
        run sentiment --train "$SHARED/data/sst2/sst_binary_sent_train.csv" \
            --dev "$SHARED/data/sst2/sst_binary_sent_dev.csv" \
            --label-map pos=positive,neg=negative,0=negative,1=positive \
            --labels negative,positive \
            --epochs 4 --lr 8e-5 --batch-size 32 --max-length 128 --seed 42
        ;;
    intents)
        [[ -f "$SHARED/data/banking77/train.csv" ]] ||
            { echo "train_default_models: $SHARED/data/banking77 is missing" >&2; exit 1; }
        run intents --train "$SHARED/data/banking77/train.csv" --dev-split 0.1 \
            --text-column text --label-column category \
            --labels "@$SHARED/data/banking77/categories.json" \
            --epochs 10 --lr 1.5e-4 --batch-size 32 --max-length 64 --seed 42
        ;;
    esac
done
