#!/usr/bin/env python3
"""Gradient and optimizer goldens for nlpd's trainer, from PyTorch + transformers.

    /opt/nlpd-ref/bin/python tests/reference/make_grad_goldens.py [--out tests/fixtures/train]

For each tiny classifier of tests/fixtures/models (bert_cls: BERT, softmax CE over 3
labels; distilbert_cls: DistilBERT, CE over 2; bert_cls_multilabel: BERT, BCE over 4)
on a fixed padded batch of 4 texts, in training mode with every dropout rate set to 0:

  grad.<name>     d(mean loss)/d(parameter) for every named parameter
  after.<name>    the parameter after 3 AdamW steps on the same batch (transformers'
                  no-decay groups: biases and LayerNorm weights; linear warmup 2 steps,
                  linear decay over 5; clip_grad_norm_ 1.0; lr 1e-3, wd 0.01)

Word embeddings are stored for the rows the batch uses plus rows 0 and 1000 (unused:
zero gradient, weight decay only): grad.<name> / after.<name> are [rows, H] and
rows.<name> (I32) lists the row ids. Files: grad_<model>.safetensors and
grad_<model>.json (inputs: ids, type_ids per text, labels or targets; loss and logits
of the first forward; losses of the 3 steps; optimizer settings).

Deterministic (single thread, fixed inputs). The C side is tests/unit/test_train_grad.c.
"""
import argparse
import json
import os
import sys

import numpy as np
import torch
from safetensors.numpy import save_file
from transformers import (AutoTokenizer, AutoModelForSequenceClassification,
                          get_linear_schedule_with_warmup)

torch.set_num_threads(1)
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MODELS = os.path.join(ROOT, "tests", "fixtures", "models")

TEXTS = [
    "The film was a delight from start to finish.",
    "Awful.",
    "I waited forty minutes for a refund that never came, and nobody answered the phone.",
    "Not bad, not great: somewhere in between, honestly.",
]
OPT = dict(lr=1e-3, weight_decay=0.01, betas=(0.9, 0.999), eps=1e-8, max_grad_norm=1.0,
           warmup_steps=2, total_steps=5, steps=3)
CASES = {
    "bert_cls": dict(labels=[2, 0, 0, 1]),
    "distilbert_cls": dict(labels=[1, 0, 0, 1]),
    "bert_cls_multilabel": dict(targets=[[1, 0, 0, 0], [0, 1, 0, 1], [1, 0, 1, 1], [0, 0, 0, 0]]),
}
EXTRA_ROWS = [0, 1000]


def load(name):
    folder = os.path.join(MODELS, name)
    cfg = json.load(open(os.path.join(folder, "config.json")))
    if cfg["model_type"] == "bert":
        kw = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, classifier_dropout=0.0)
    else:
        kw = dict(dropout=0.0, attention_dropout=0.0, seq_classif_dropout=0.0)
    model = AutoModelForSequenceClassification.from_pretrained(folder, **kw)
    model.train()
    return folder, AutoTokenizer.from_pretrained(folder), model


def forward(model, enc, case):
    inp = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    if model.config.model_type == "bert":
        inp["token_type_ids"] = enc["token_type_ids"]
    if "targets" in case:
        inp["labels"] = torch.tensor(case["targets"], dtype=torch.float32)
    else:
        inp["labels"] = torch.tensor(case["labels"])
    return model(**inp)


def param_groups(model):
    # transformers.Trainer: no decay on LayerNorm parameters and biases
    no_decay = [n for n, _ in model.named_parameters() if "bias" in n or "LayerNorm" in n or "layer_norm" in n]
    return [
        {"params": [p for n, p in model.named_parameters() if n not in no_decay], "weight_decay": OPT["weight_decay"]},
        {"params": [p for n, p in model.named_parameters() if n in no_decay], "weight_decay": 0.0},
    ]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "fixtures", "train"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for name, case in CASES.items():
        folder, tok, model = load(name)
        enc = tok(TEXTS, padding=True, return_tensors="pt", return_token_type_ids=True)
        lens = enc["attention_mask"].sum(1).tolist()
        ids = [enc["input_ids"][i, :n].tolist() for i, n in enumerate(lens)]
        types = [enc["token_type_ids"][i, :n].tolist() for i, n in enumerate(lens)]
        used = sorted(set(i for seq in ids for i in seq) | set(EXTRA_ROWS))
        out = forward(model, enc, case)
        out.loss.backward()
        tensors = {}
        for pname, p in model.named_parameters():
            g = p.grad.detach().numpy().astype(np.float32)
            if pname.endswith("word_embeddings.weight"):
                tensors["rows." + pname] = np.asarray(used, dtype=np.int32)
                g = g[used]
            tensors["grad." + pname] = np.ascontiguousarray(g)
        first = dict(loss=float(out.loss), logits=out.logits.detach().numpy().reshape(-1).tolist())

        # optimizer: 3 steps from the same starting weights on the same batch
        model.zero_grad()
        opt = torch.optim.AdamW(param_groups(model), lr=OPT["lr"], betas=OPT["betas"], eps=OPT["eps"])
        sched = get_linear_schedule_with_warmup(opt, OPT["warmup_steps"], OPT["total_steps"])
        losses, lrs, norms = [], [], []
        for _ in range(OPT["steps"]):
            o = forward(model, enc, case)
            o.loss.backward()
            norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), OPT["max_grad_norm"])))
            lrs.append(float(sched.get_last_lr()[0]))
            opt.step()
            sched.step()
            opt.zero_grad()
            losses.append(float(o.loss))
        for pname, p in model.named_parameters():
            v = p.detach().numpy().astype(np.float32)
            if pname.endswith("word_embeddings.weight"):
                v = v[used]
            tensors["after." + pname] = np.ascontiguousarray(v)
        save_file(tensors, os.path.join(args.out, f"grad_{name}.safetensors"), metadata={"format": "np"})
        meta = dict(model=name, folder=f"tests/fixtures/models/{name}", texts=TEXTS, ids=ids, type_ids=types,
                    loss=first["loss"], logits=first["logits"], step_losses=losses, step_lrs=lrs,
                    step_grad_norms=norms, optimizer=dict(OPT, betas=list(OPT["betas"])),
                    torch_version=torch.__version__)
        meta.update({k: v for k, v in case.items()})
        with open(os.path.join(args.out, f"grad_{name}.json"), "w") as fh:
            json.dump(meta, fh, indent=1)
            fh.write("\n")
        gmax = max(float(np.abs(t).max()) for k, t in tensors.items() if k.startswith("grad."))
        print(f"{name:22s} loss {first['loss']:.6f} |grad| max {gmax:.4g} step losses "
              f"{[round(x, 5) for x in losses]} grad norms {[round(x, 3) for x in norms]}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
