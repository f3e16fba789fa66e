#!/usr/bin/env python3
"""Fixtures for the trainer's end-to-end tests (tests/unit/test_train_e2e.c).

    /opt/nlpd-ref/bin/python tests/reference/make_train_goldens.py [--nlpd-train build/nlpd-train]
                                                                  [--nlpd-cli build/nlpd-cli]

1. tests/fixtures/train/tiny_st_base/ - a tiny BertModel in the sentence-transformers
   layout (modules.json, 1_Pooling, 2_Normalize, sentence_bert_config.json, like
   all-MiniLM-L6-v2), transformers' default initialisation (std 0.02, seeded), a
   small WordPiece vocabulary of the words the tests use (plus letters and ##letters,
   so any lowercase ASCII text tokenizes). Hidden 32, 2 layers, 2 heads, FFN 64.
   It is the base of the C end-to-end fine-tuning test.
2. tests/fixtures/train/tiny_trained/ - what `nlpd-train` makes of that base on the
   separable sentiment data below (written to a temporary folder): a
   BertForSequenceClassification folder, committed as nlpd-train published it.
3. tests/fixtures/train/tiny_trained/golden.json - transformers 4.44.2 loading that
   folder with AutoModelForSequenceClassification: logits and probabilities for
   CASES (same schema as tests/fixtures/models/*/golden.json). The script asserts
   at generation time that `nlpd-cli classify` on the folder gives the same
   probabilities (1e-5); the C test checks nlpd's logits against the golden (1e-4).

Deterministic given the nlpd-train build (fixed seeds; single thread).
"""
import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import torch
import transformers
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, BertConfig,
                          BertModel, BertTokenizerFast)

torch.set_num_threads(1)
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "tests", "fixtures", "train")

# The word lists of the separable data set; test_train_e2e.c holds the same lists.
POS = ["excellent", "wonderful", "great", "superb", "delightful", "fantastic", "lovely", "brilliant"]
NEG = ["terrible", "awful", "horrible", "boring", "dreadful", "bad", "poor", "dull"]
FILL = ["the", "movie", "was", "plot", "actor", "film", "story", "and", "it", "a", "really",
        "very", "this", "acting", "music", "quite", "service", "food", "staff", "day"]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
PUNCT = list(".,!?'-:;()\"")
LETTERS = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [str(d) for d in range(10)]

CASES = ["the movie was excellent", "a dreadful and boring story", "it was", "",
         "great acting, awful music!", "Wonderful Service; lovely staff.",
         "unknown words zebra quixotic", "the the the film film terrible terrible"]


def vocab():
    return SPECIAL + PUNCT + LETTERS + ["##" + c for c in LETTERS] + POS + NEG + FILL


def make_base(folder, seed=2024):
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    vt = os.path.join(folder, "vocab.txt")
    with open(vt, "w") as fh:
        fh.write("\n".join(vocab()) + "\n")
    tok = BertTokenizerFast(vocab_file=vt, do_lower_case=True, model_max_length=64)
    tok.save_pretrained(folder)
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(vocab()), hidden_size=32, num_attention_heads=2,
                     num_hidden_layers=2, intermediate_size=64, max_position_embeddings=64,
                     type_vocab_size=2)
    BertModel(cfg).eval().save_pretrained(folder, safe_serialization=True)
    # sentence-transformers layout, as all-MiniLM-L6-v2 has it
    mods = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]
    os.makedirs(os.path.join(folder, "1_Pooling"))
    os.makedirs(os.path.join(folder, "2_Normalize"))
    dump(os.path.join(folder, "modules.json"), mods)
    dump(os.path.join(folder, "1_Pooling", "config.json"),
         {"word_embedding_dimension": 32, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True,
          "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False})
    dump(os.path.join(folder, "sentence_bert_config.json"), {"max_seq_length": 64, "do_lower_case": False})


def dump(path, obj):
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=1, ensure_ascii=False)
        fh.write("\n")


def make_data(path, n, seed):
    rnd = random.Random(seed)
    with open(path, "w") as fh:
        for i in range(n):
            lab = i % 2
            words = [rnd.choice(FILL) for _ in range(rnd.randint(3, 8))]
            words.insert(rnd.randint(0, len(words)), rnd.choice(POS if lab else NEG))
            fh.write(json.dumps({"text": " ".join(words), "label": "positive" if lab else "negative"}) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nlpd-train", default=os.path.join(ROOT, "build", "nlpd-train"))
    ap.add_argument("--nlpd-cli", default=os.path.join(ROOT, "build", "nlpd-cli"))
    args = ap.parse_args()
    base = os.path.join(OUT, "tiny_st_base")
    trained = os.path.join(OUT, "tiny_trained")
    make_base(base)
    with tempfile.TemporaryDirectory() as tmp:
        make_data(os.path.join(tmp, "train.jsonl"), 200, 1)
        make_data(os.path.join(tmp, "dev.jsonl"), 60, 2)
        out = os.path.join(tmp, "model")
        cmd = [args.nlpd_train, "--base", base, "--train", os.path.join(tmp, "train.jsonl"),
               "--dev", os.path.join(tmp, "dev.jsonl"), "--out", out, "--epochs", "6", "--lr", "2e-3",
               "--batch-size", "16", "--seed", "7", "--threads", "1", "--progress", "none"]
        subprocess.run(cmd, check=True)
        shutil.rmtree(trained, ignore_errors=True)
        shutil.copytree(out, trained)
    # nlpd_train.json records temporary paths: keep the fixture stable
    rec = json.load(open(os.path.join(trained, "nlpd_train.json")))
    for k in ("command", "train_file", "dev_file", "base_model", "train_seconds", "train_examples_per_second"):
        rec.pop(k, None)
    for e in rec.get("epochs", []):
        e.pop("seconds", None)
    dump(os.path.join(trained, "nlpd_train.json"), rec)

    tok = AutoTokenizer.from_pretrained(trained)
    model = AutoModelForSequenceClassification.from_pretrained(trained).eval()
    assert type(model).__name__ == "BertForSequenceClassification", type(model).__name__
    cases = []
    for text in CASES:
        enc = tok(text, return_tensors="pt", return_token_type_ids=True)
        with torch.no_grad():
            lg = model(**enc).logits[0]
        cases.append(dict(text=text, pair=None, max_length=0, ids=enc["input_ids"][0].tolist(),
                          type_ids=enc["token_type_ids"][0].tolist(),
                          logits=[float(x) for x in lg.numpy().astype(np.float32)],
                          probs=[float(x) for x in torch.softmax(lg, -1).numpy().astype(np.float32)]))
    golden = dict(model="tiny_trained", architecture="BertForSequenceClassification", task="classify",
                  transformers_version=transformers.__version__, torch_version=torch.__version__,
                  id2label={str(k): v for k, v in model.config.id2label.items()},
                  problem_type="single_label_classification", cases=cases)
    dump(os.path.join(trained, "golden.json"), golden)

    # generation-time check: nlpd gives transformers' probabilities on its own output
    texts = [c["text"] for c in cases if c["text"]]
    res = json.loads(subprocess.run([args.nlpd_cli, "classify", trained] + texts, check=True,
                                    capture_output=True, text=True).stdout)
    worst = 0.0
    for c, r in zip([c for c in cases if c["text"]], res):
        ours = {s["label"]: s["score"] for s in r["scores"]}
        for i, p in enumerate(c["probs"]):
            worst = max(worst, abs(ours[golden["id2label"][str(i)]] - p))
    assert worst <= 1e-5, f"nlpd-cli and transformers disagree by {worst}"
    acc = json.load(open(os.path.join(trained, "eval_results.json")))["accuracy"]
    print(f"tiny_trained: dev accuracy {acc:.3f}; transformers vs nlpd-cli probabilities max diff {worst:.2e}")


if __name__ == "__main__":
    sys.exit(main())
