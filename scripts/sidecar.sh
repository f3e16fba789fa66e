#!/usr/bin/env bash
# The quick start's sidecar (scripts/run.sh starts it at nice 10 in its own process
# group): head-only versions of the default classifiers first, then their gated full
# fine-tunes, then the feedback loop (`nlpd-train watch` per model).
#   env: NLPD_TRAIN, NLPD_SHARED, NLPD_SIGNING_KEY, NLPD_SIGNING_PUB (set by run.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
TRAIN=${NLPD_TRAIN:-build/nlpd-train}
SHARED=${NLPD_SHARED:-../shared}
KEY=${NLPD_SIGNING_KEY:-models/signing.pem}
PUB=${NLPD_SIGNING_PUB:-models/signing.pub}
export NLPD_TRAIN=$TRAIN NLPD_SHARED=$SHARED NLPD_SIGNING_KEY=$KEY

stamp() { echo "sidecar: $(date -u +%H:%M:%S) $*"; }
# Head-only versions first, every core (the daemon is idle until they exist) ...
stamp "head-only versions"
scripts/train_default_models.sh --repository models/repo --stage head
# ... then the full fine-tunes on one thread, each gated against the served version ...
stamp "full fine-tunes"
NLPD_TRAIN_THREADS=1 scripts/train_default_models.sh --repository models/repo --stage full
# ... then the feedback loop, one watcher per model (SIGTERM to the group stops both).
stamp "watching models/feedback"
"$TRAIN" watch --repository models/repo/sentiment --public-key "$PUB" --key "$KEY" \
    --feedback models/feedback/sentiment --train "$SHARED/data/sst2/sst_binary_sent_train.csv" \
    --dev "$SHARED/data/sst2/sst_binary_sent_dev.csv" \
    --label-map pos=positive,neg=negative,0=negative,1=positive \
    --epochs 1 --lr 3e-5 --max-length 128 --min-new 20 --interval 30 --keep 5 &
"$TRAIN" watch --repository models/repo/intents --public-key "$PUB" --key "$KEY" \
    --feedback models/feedback/intents --train "$SHARED/data/banking77/train.csv" \
    --dev-split 0.1 --text-column text --label-column category \
    --epochs 1 --lr 5e-5 --max-length 64 --min-new 20 --interval 30 --keep 5 &
wait
