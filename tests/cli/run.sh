#!/usr/bin/env bash
# CLI tests: nlpd-cli (from the build dir in $1) on the tiny reference models.
# Prints "cli: N passed, N failed, N skipped".
set -uo pipefail
BUILD=${1:-build}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
F="$ROOT/tests/fixtures/models"
SUITE=cli
source "$ROOT/tests/cli/lib.sh"
CLI=$(bin nlpd-cli)

check help 0 'usage: nlpd-cli COMMAND' "$CLI" --help
check version 0 '^nlpd-cli [0-9]+\.' "$CLI" --version
check no-args 2 'usage' "$CLI"
check unknown-command 2 "unknown command 'frob'" "$CLI" frob "$F/bert_cls"
check bad-int 2 '--top-k must be an integer' "$CLI" classify --top-k x "$F/bert_cls" hi
check classify 0 '"label":"(negative|neutral|positive)","score":0\.[0-9]' "$CLI" classify "$F/bert_cls" "I love it" "awful"
check classify-top1 0 '"scores":\[\{"label":"[a-z]+","score":[0-9.e-]+\}\]' "$CLI" classify --top-k 1 "$F/bert_cls" "hi"
check multilabel 0 '"labels":\[' "$CLI" classify "$F/bert_cls_multilabel" "hello"
check embed 0 '"embedding":\[-?[0-9]' "$CLI" embed "$F/bert_st" "hello there"
check qa 0 '"answer":"[^"]+","score":[0-9.e-]+,"start":[0-9]+,"end":[0-9]+' "$CLI" qa "$F/bert_qa" --question "Where is it?" --context "The café is in Montréal, near the river."
check qa-missing 2 'needs --question and --context' "$CLI" qa "$F/bert_qa" --question "x"
check tokenize 0 '"tokens":\["\[CLS\]","hello","world","\[SEP\]"\]' "$CLI" tokenize "$F/bert_cls" "Hello world"
check tokenize-offsets 0 '"offsets":\[\[0,0\],\[0,4\],\[5,7\],\[7,9\]' "$CLI" tokenize "$F/bert_cls" "Café naïf"
check truncate 0 '"truncated_tokens":' "$CLI" tokenize --max-length 4 "$F/bert_cls" "one two three four five"
check info 0 '"labels":\["negative","neutral","positive"\]' "$CLI" info "$F/bert_cls"
check missing-model 1 'load: /nonexistent/config.json' "$CLI" classify /nonexistent hi
check invalid-utf8 1 'invalid UTF-8 at byte 2' "$CLI" classify "$F/bert_cls" $'ab\xffcd'
check wrong-task 1 "needs a model of task 'embed'" "$CLI" embed "$F/bert_cls" hi
check too-long 1 'at most 128' "$CLI" classify --max-length 1000 "$F/bert_cls" "$(printf 'word %.0s' {1..200})"

# The daemon's start-up checks of a model's backend and precision (the real nlpd binary):
# a GPU this machine lacks, or a precision the backend cannot run, stops --check-config
# and start-up with exit 1 and a message naming the model and the device, before
# anything is loaded. ("cuda:7", the last index the config accepts, is absent unless a machine has 8 GPUs.)
NLPD=$(bin nlpd)
CFGD=$(mktemp -d)
gpu_cfg() { # NAME BACKEND PRECISION
    printf '{"listen":"127.0.0.1:0","models":[{"name":"%s","path":"%s","task":"embed","backend":"%s","precision":"%s"}]}\n' \
        "$1" "$F/bert_st" "$2" "$3" >"$CFGD/$1.json"
    echo "$CFGD/$1.json"
}
check nlpd-cuda-absent 1 "models\[0\] \(emb\): backend 'cuda:7'(: no such device \([0-9]+ cuda devices? present| is not available \(this build has: cpu\))" \
    "$NLPD" --check-config --config "$(gpu_cfg emb cuda:7 fp32)"
check nlpd-cuda-absent-start 1 "models\[0\] \(emb2\): backend 'cuda:7'" \
    timeout 20 "$NLPD" --config "$(gpu_cfg emb2 cuda:7 fp16)"
if "$NLPD" --check-config --config "$(gpu_cfg probe cuda:0 fp32)" >/dev/null 2>&1; then
    echo "cli: a CUDA device is present: the no-GPU message is not checked for cuda:0"
else
    check nlpd-no-gpu 1 "models\[0\] \(emb3\): backend 'cuda'(: no such device \(0 cuda devices present: no GPU or no driver here\)| is not available \(this build has: cpu\))" \
        "$NLPD" --check-config --config "$(gpu_cfg emb3 cuda fp16)"
fi
check nlpd-fp16-cpu 1 "models\[0\] \(emb4\): precision fp16 runs on CUDA only; backend 'cpu' is the CPU" \
    "$NLPD" --check-config --config "$(gpu_cfg emb4 cpu fp16)"
check nlpd-cpu-ok 0 'configuration ok' "$NLPD" --check-config --config "$(gpu_cfg emb5 cpu bf16)"
rm -rf "$CFGD"

# Translation: a tiny Marian fixture with the real OPUS-MT tokenizer from ../shared
# (linked, not copied); ids must equal transformers' generate() goldens.
SHARED=${NLPD_SHARED:-$ROOT/../shared}
TOKDIR="$SHARED/tokenizers/opus-mt-tc-big-en-pt"
if require translation "$TOKDIR/source.spm" "the shared OPUS-MT tokenizer, NLPD_SHARED"; then
    MT=$(mktemp -d); trap 'rm -rf "$MT"' EXIT
    for f in "$ROOT"/tests/fixtures/marian/marian_a/{config.json,generation_config.json,model.safetensors} \
             "$TOKDIR"/{source.spm,target.spm,vocab.json,tokenizer_config.json,special_tokens_map.json}; do
        ln -s "$f" "$MT/"
    done
    check translate-greedy 0 '"ids":\[2318,2318,2318,2318,44670\]' "$CLI" translate --beam-size 1 "$MT" "The cat sat on the mat."
    check translate-beam 0 '"ids":\[54082,54082,54082,39261,39261,' "$CLI" translate "$MT" "The cat sat on the mat."
    check translate-wrong-task 1 'is not a translation model' "$CLI" translate "$F/bert_cls" "hi"
    check classify-on-marian 1 'is a translation model' "$CLI" classify "$MT" "hi"
fi

echo "cli: ${pass} passed, ${fail} failed, ${skipped} skipped"
[[ $fail -eq 0 ]]
