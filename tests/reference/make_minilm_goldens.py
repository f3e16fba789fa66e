#!/usr/bin/env python3
"""Golden sentence embeddings of the real all-MiniLM-L6-v2 on the GLUE SST-2 dev set.

    make models     # puts the model folder at models/all-MiniLM-L6-v2 (git-ignored)
    /opt/nlpd-ref/bin/python tests/reference/make_minilm_goldens.py [--model DIR] [--tsv FILE] [--out DIR]

Input parsing (what a test must replicate to read the same strings):
  ../shared/data/sst2/glue_sst2_dev.tsv, UTF-8. Split the file on "\\n" (no "\\r" present),
  drop the header line "sentence\\tlabel" and the empty string after the final newline;
  each remaining line is split on the LAST "\\t": the part before it is the `sentence`
  field, taken verbatim (no CSV quoting rules: the GLUE text contains bare quotes;
  no stripping: most fields end with a space). 872 sentences, kept in file order.
  meta.sentence_sha256[i] is the SHA-256 of the UTF-8 bytes of that verbatim field.

Embedding pipeline (= sentence-transformers Transformer -> Pooling(mean) -> Normalize):
  text.strip() (sentence-transformers strips; it changes no token here), fast AutoTokenizer
  from the model folder with truncation at max_seq_length 256 (no sentence reaches it),
  AutoModel (BertModel) fp32 eval/no_grad, mean of last_hidden_state over the attention
  mask, then x / max(||x||_2, 1e-12). Each sentence is run alone (batch of 1, no padding),
  so the masked mean is the mean over all tokens including [CLS] and [SEP].

Outputs in tests/fixtures/minilm/:
  sst2_dev_embeddings.f32  raw little-endian float32, row-major [872, 384]
  sst2_dev_hidden4.f32     raw little-endian float32: last_hidden_state (unnormalised, before
                           pooling) of sentences 0..3 concatenated, each [n_tokens_i, 384]
  sst2_dev_meta.json       counts, shapes, hashes, token counts
"""
import argparse
import hashlib
import json
import os
import sys

import numpy as np
import torch
import transformers
from transformers import AutoModel, AutoTokenizer

torch.set_num_threads(1)
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MAX_SEQ = 256   # sentence_bert_config.json max_seq_length


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for b in iter(lambda: fh.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


def read_sentences(tsv):
    with open(tsv, "rb") as fh:
        raw = fh.read().decode("utf-8")
    assert "\r" not in raw
    lines = raw.split("\n")
    assert lines[0] == "sentence\tlabel", lines[0]
    if lines[-1] == "":
        lines = lines[:-1]
    out = []
    for ln in lines[1:]:
        sent, label = ln.rsplit("\t", 1)
        assert label in ("0", "1") and "\t" not in sent, ln
        out.append(sent)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "all-MiniLM-L6-v2"))
    ap.add_argument("--tsv", default=os.path.join(ROOT, "..", "shared", "data", "sst2", "glue_sst2_dev.tsv"))
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "fixtures", "minilm"))
    args = ap.parse_args()
    if not os.path.exists(args.tsv):
        args.tsv = "/work/shared/data/sst2/glue_sst2_dev.tsv"
    st_cfg = json.load(open(os.path.join(args.model, "sentence_bert_config.json")))
    assert st_cfg["max_seq_length"] == MAX_SEQ and not st_cfg.get("do_lower_case")
    modules = json.load(open(os.path.join(args.model, "modules.json")))
    assert [m["type"].rsplit(".", 1)[1] for m in modules] == ["Transformer", "Pooling", "Normalize"]
    pool = json.load(open(os.path.join(args.model, "1_Pooling", "config.json")))
    assert pool["pooling_mode_mean_tokens"] and not (pool["pooling_mode_cls_token"] or pool["pooling_mode_max_tokens"])

    sents = read_sentences(args.tsv)
    assert len(sents) == 872, len(sents)
    tok = AutoTokenizer.from_pretrained(args.model)
    assert tok.is_fast
    model = AutoModel.from_pretrained(args.model).eval()
    dim = model.config.hidden_size

    emb = np.zeros((len(sents), dim), dtype=np.float32)
    hidden4, shapes4, ntok = [], [], []
    with torch.no_grad():
        for i, s in enumerate(sents):
            enc = tok([s.strip()], padding=True, truncation="longest_first", max_length=MAX_SEQ,
                      return_tensors="pt")
            out = model(**enc).last_hidden_state            # [1, n, dim]
            m = enc["attention_mask"].unsqueeze(-1).to(out.dtype)
            pooled = (out * m).sum(1) / torch.clamp(m.sum(1), min=1e-9)
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
            emb[i] = pooled[0].numpy()
            ntok.append(int(enc["input_ids"].shape[1]))
            if i < 4:
                hidden4.append(out[0].numpy().astype(np.float32))
                shapes4.append(list(out[0].shape))
            if i % 200 == 0:
                print(f"{i}/{len(sents)}", flush=True)

    os.makedirs(args.out, exist_ok=True)
    emb.astype("<f4").tofile(os.path.join(args.out, "sst2_dev_embeddings.f32"))
    np.concatenate(hidden4, 0).astype("<f4").tofile(os.path.join(args.out, "sst2_dev_hidden4.f32"))
    norms = np.linalg.norm(emb.astype(np.float64), axis=1)
    meta = {
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "model_safetensors_sha256": sha256_file(os.path.join(args.model, "model.safetensors")),
        "source_file": "../shared/data/sst2/glue_sst2_dev.tsv",
        "source_file_sha256": sha256_file(args.tsv),
        "column": "sentence",
        "parsing": "UTF-8; split on '\\n'; drop header 'sentence\\tlabel' and the trailing empty line; "
                   "each line split on the last '\\t'; the field before it verbatim (no quoting, no stripping; "
                   "sentence-transformers strips before tokenizing, which changes no token)",
        "count": len(sents),
        "dim": dim,
        "pipeline": "fast tokenizer, truncation at 256 tokens, BertModel fp32, mean over attention mask, "
                    "L2 normalise (eps 1e-12); each sentence alone (batch 1, no padding)",
        "embeddings_file": "sst2_dev_embeddings.f32",
        "embeddings_shape": [len(sents), dim],
        "dtype": "float32 little-endian, row-major",
        "hidden4_file": "sst2_dev_hidden4.f32",
        "hidden4_shapes": shapes4,
        "hidden4_note": "last_hidden_state (unnormalised) of sentences 0..3, concatenated in order, each [n_tokens, dim]",
        "hidden4_ids": [tok([s.strip()])["input_ids"][0] for s in sents[:4]],
        "n_tokens": ntok,
        "max_n_tokens": max(ntok),
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "sentence_sha256": [hashlib.sha256(s.encode("utf-8")).hexdigest() for s in sents],
    }
    with open(os.path.join(args.out, "sst2_dev_meta.json"), "w") as fh:
        json.dump(meta, fh, indent=1)
        fh.write("\n")
    print(f"done: {len(sents)} x {dim}, max tokens {max(ntok)}, norms {norms.min():.6f}..{norms.max():.6f}")


if __name__ == "__main__":
    sys.exit(main())
