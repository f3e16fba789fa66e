#!/usr/bin/env python3
"""Create the tiny random test models and their golden outputs.

    /opt/nlpd-ref/bin/python tests/reference/make_models.py [--out tests/fixtures/models]
                                                            [--only NAME ...]

Every model is a standard Hugging Face folder (config.json + model.safetensors +
the bert-base-uncased tokenizer files), randomly initialised with fixed seeds and
then re-randomised with LARGE weights (see `rescale`) so that logits are O(1..10)
and attention is far from uniform: a 1e-4 parity check is meaningless on the
near-zero outputs of the default std-0.02 init.

golden.json per folder: see tests/reference/README.md for the schema.
Outputs are deterministic (fixed seeds, single thread, CPU).
"""
import argparse
import copy
import json
import os
import shutil
import sys

import numpy as np
import torch
import transformers
from transformers import (AutoModel, AutoModelForQuestionAnswering,
                          AutoModelForSequenceClassification, AutoTokenizer,
                          BertConfig, BertForQuestionAnswering,
                          BertForSequenceClassification, BertModel,
                          DistilBertConfig, DistilBertForQuestionAnswering,
                          DistilBertForSequenceClassification, DistilBertModel)

torch.set_num_threads(1)

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TOK_SRC = os.path.abspath(os.path.join(ROOT, "..", "shared", "tokenizers", "bert-base-uncased"))
if not os.path.isdir(TOK_SRC):
    TOK_SRC = "/work/shared/tokenizers/bert-base-uncased"
TOK_FILES = ["tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"]

SMALL = dict(hidden=16, heads=4, layers=2, inter=32, maxpos=128)
WIDE = dict(hidden=32, heads=2, layers=2, inter=64, maxpos=128)   # bert_cls (head_dim 16)

# ---------------------------------------------------------------- inputs
LONG_TEXT = (
    "The quick brown fox jumps over the lazy dog while the committee debates "
    "whether tokenization, normalisation and unicode handling are adequately "
    "tested. In 2023, researchers at the University of Zürich measured 1,234 "
    "samples; their results (published in Nature) suggested a 42% improvement. "
    "Meanwhile, engineers re-implemented the transformer encoder in portable C "
    "so that inference runs without Python, matching logits to four decimals."
)
CASES = [
    dict(text="Hello world!", pair=None, max_length=0),
    dict(text="Café naïve résumé — Zürich's 東京 tower 😀 costs ¥500, señor Ångström.", pair=None, max_length=0),
    dict(text=LONG_TEXT, pair=None, max_length=32),
    dict(text="How old are you?", pair="I am 42 years old, give or take a décennie.", max_length=0),
    dict(text="Which team won the championship game in overtime last night?",
         pair="The Riverside Hawks defeated the Mountain Lions 104 to 99 after two overtimes at home.",
         max_length=24),
    dict(text=LONG_TEXT, pair=None, max_length=0),
    dict(text="", pair=None, max_length=0),
    dict(text="  Multiple   spaces\tand\nnewlines\r\n  here  ", pair=None, max_length=0),
    dict(text="THE QUICK, BROWN FOX... (jumped) over #1 lazy dog?! e-mail: a.b@c.de", pair=None, max_length=0),
    dict(text="supercalifragilistic " + "a" * 120 + " unbelievably", pair=None, max_length=0),
    dict(text="Short question?", pair=LONG_TEXT, max_length=32),
]

QA_LONG_CONTEXT = (
    "The Amazon rainforest covers much of the Amazon basin of South America. This basin "
    "encompasses seven million square kilometers, of which five and a half million are covered "
    "by the rainforest. The region includes territory belonging to nine nations. The majority of "
    "the forest is contained within Brazil, with sixty percent of the rainforest, followed by Peru "
    "with thirteen percent, Colombia with ten percent, and with minor amounts in Venezuela, Ecuador, "
    "Bolivia, Guyana, Suriname and French Guiana. The rainforest likely formed during the Eocene era."
)
QA_UNICODE_CONTEXT = (
    "Der Münchner Verkehrsverbund (MVV) betreibt Linien rund um München. Tōkyō (東京) ist die "
    "Hauptstadt Japans; 東京大学 wurde 1877 gegründet. Le café crème coûte 3,50 € à Montréal — "
    "déjà vu! Ångström et Øresund: naïve coöperation 😀 between señores."
)
QA_ITEMS = [
    dict(question="Which country contains most of the forest?", context=QA_LONG_CONTEXT,
         params=dict(max_seq_len=64, doc_stride=16, max_question_len=16, max_answer_len=8, top_k=3)),
    dict(question="Who wrote it?", context="The report was written by Marie Curie in Paris in 1911.",
         params=dict(max_seq_len=128)),
    dict(question="Wann wurde die Universität gegründet?", context=QA_UNICODE_CONTEXT,
         params=dict(max_seq_len=48, doc_stride=12, max_question_len=16, max_answer_len=8, top_k=3)),
    dict(question="When did the rainforest form?", context=QA_LONG_CONTEXT,
         params=dict(max_seq_len=64, doc_stride=16, max_answer_len=8, top_k=2, handle_impossible_answer=True)),
    dict(question="Wie viel kostet der café?", context=QA_UNICODE_CONTEXT,
         params=dict(max_seq_len=128, max_answer_len=4, top_k=3, align_to_words=False)),
    dict(question="Is it raining?", context="No one knows.",
         params=dict(max_seq_len=32, top_k=8, handle_impossible_answer=True)),
    dict(question="Where?", context="Le café crème coûte 3,50 € à Montréal.",
         params=dict(max_seq_len=64, padding="max_length", top_k=2)),
]


# ---------------------------------------------------------------- weights
def rescale(model, seed):
    """Overwrite every parameter with seeded values large enough for a meaningful parity test."""
    g = torch.Generator().manual_seed(seed)

    def rnd(shape, std, mean=0.0):
        return mean + std * torch.randn(shape, generator=g, dtype=torch.float32)

    with torch.no_grad():
        for name, p in model.named_parameters():
            lname = name.lower()
            if "layernorm" in lname or "layer_norm" in lname:
                v = rnd(p.shape, 0.2, 1.0) if name.endswith("weight") else rnd(p.shape, 0.2)
            elif "embeddings" in lname:
                v = rnd(p.shape, 0.5)
            elif name.endswith("bias"):
                v = rnd(p.shape, 0.2)
            elif any(k in lname for k in (".query.", ".key.", "q_lin", "k_lin")):
                v = rnd(p.shape, 0.45)
            elif "classifier" in lname and "pre_classifier" not in lname:
                v = rnd(p.shape, 1.0)
            elif "qa_outputs" in lname:
                v = rnd(p.shape, 0.8)
            else:                      # value/output/FFN/pooler/pre_classifier
                v = rnd(p.shape, 0.3)
            p.copy_(v)
    return model


def bert_config(d, **kw):
    return BertConfig(vocab_size=30522, hidden_size=d["hidden"], num_attention_heads=d["heads"],
                      num_hidden_layers=d["layers"], intermediate_size=d["inter"],
                      max_position_embeddings=d["maxpos"], type_vocab_size=2, **kw)


def distil_config(d, **kw):
    return DistilBertConfig(vocab_size=30522, dim=d["hidden"], n_heads=d["heads"], n_layers=d["layers"],
                            hidden_dim=d["inter"], max_position_embeddings=d["maxpos"], **kw)


CLS3 = dict(num_labels=3, id2label={0: "negative", 1: "neutral", 2: "positive"},
            label2id={"negative": 0, "neutral": 1, "positive": 2})
ML4_NAMES = ["billing", "technical", "account", "urgent"]
ML4 = dict(num_labels=4, id2label=dict(enumerate(ML4_NAMES)), label2id={n: i for i, n in enumerate(ML4_NAMES)},
           problem_type="multi_label_classification")

# name: (arch class, config builder, task, seed, extra)
MODELS = {
    "bert_base": (BertModel, lambda: bert_config(SMALL), "embed", 1001),
    "bert_st": (BertModel, lambda: bert_config(SMALL), "embed", 1002),
    "bert_cls": (BertForSequenceClassification, lambda: bert_config(WIDE, **CLS3), "classify", 1003),
    "bert_cls_multilabel": (BertForSequenceClassification, lambda: bert_config(SMALL, **ML4), "classify", 1004),
    "bert_qa": (BertForQuestionAnswering, lambda: bert_config(SMALL, hidden_act="gelu_new"), "qa", 1005),
    "distilbert_base": (DistilBertModel, lambda: distil_config(SMALL), "embed", 1006),
    "distilbert_cls": (DistilBertForSequenceClassification, lambda: distil_config(SMALL, num_labels=2), "classify", 1007),
    "distilbert_qa": (DistilBertForQuestionAnswering, lambda: distil_config(SMALL), "qa", 1008),
}
HALF = {"bert_cls_f16": torch.float16, "bert_cls_bf16": torch.bfloat16}


# ---------------------------------------------------------------- helpers
def flist(t):
    return [float(x) for x in np.asarray(t, dtype=np.float32).reshape(-1)]


def byte_off(text, c):
    return len(text[:c].encode("utf-8"))


def copy_tokenizer(folder, distil):
    for f in TOK_FILES:
        shutil.copyfile(os.path.join(TOK_SRC, f), os.path.join(folder, f))
    if distil:
        # With tokenizer_class "BertTokenizer" AutoTokenizer would return token_type_ids as a model
        # input, which DistilBERT's forward() rejects (the QA pipeline passes all model_input_names).
        # Real DistilBERT folders resolve to DistilBertTokenizer(Fast): same vocab and algorithm,
        # model_input_names = [input_ids, attention_mask].
        p = os.path.join(folder, "tokenizer_config.json")
        cfg = json.load(open(p))
        cfg["tokenizer_class"] = "DistilBertTokenizer"
        with open(p, "w") as fh:
            json.dump(cfg, fh, indent=2, ensure_ascii=False)
            fh.write("\n")


def write_st_layout(folder, hidden):
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    os.makedirs(os.path.join(folder, "1_Pooling"), exist_ok=True)
    dump(os.path.join(folder, "modules.json"), modules)
    dump(os.path.join(folder, "1_Pooling", "config.json"), {
        "word_embedding_dimension": hidden, "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False})
    dump(os.path.join(folder, "sentence_bert_config.json"), {"max_seq_length": 128, "do_lower_case": False})
    dump(os.path.join(folder, "config_sentence_transformers.json"),
         {"__version__": {"sentence_transformers": "2.0.0", "transformers": transformers.__version__,
                          "pytorch": torch.__version__}})


def dump(path, obj, indent=2):
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=indent, ensure_ascii=False)
        fh.write("\n")


def encode(tok, case):
    kw = dict(return_token_type_ids=True, return_tensors="pt")
    if case["max_length"]:
        kw.update(truncation=True, max_length=case["max_length"])   # longest_first for pairs
    if case["pair"] is None:
        return tok(case["text"], **kw)
    return tok(case["text"], case["pair"], **kw)


def model_inputs(model, enc):
    inp = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    if model.config.model_type == "bert":
        inp["token_type_ids"] = enc["token_type_ids"]
    return inp


# ---------------------------------------------------------------- goldens
def run_cases(name, folder, task, arch, load_dtype=None):
    tok = AutoTokenizer.from_pretrained(folder)
    assert tok.is_fast
    auto = {"embed": AutoModel, "classify": AutoModelForSequenceClassification,
            "qa": AutoModelForQuestionAnswering}[task]
    kw = {"torch_dtype": load_dtype} if load_dtype is not None else {}
    model = auto.from_pretrained(folder, **kw).eval()
    assert type(model).__name__ == arch, (type(model).__name__, arch)
    multilabel = model.config.problem_type == "multi_label_classification"
    cases, stats = [], {"abs_max": 0.0, "abs_mean": [], "attn_max": []}
    for case in CASES:
        enc = encode(tok, case)
        with torch.no_grad():
            out = model(**model_inputs(model, enc), output_attentions=True)
        rec = dict(text=case["text"], pair=case["pair"], max_length=case["max_length"],
                   ids=enc["input_ids"][0].tolist(), type_ids=enc["token_type_ids"][0].tolist())
        if task == "embed":
            h = out.last_hidden_state[0]
            pooled = h.mean(dim=0)   # no padding: mean over all tokens == masked mean
            if os.path.exists(os.path.join(folder, "modules.json")):
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=0)
            rec["hidden"] = flist(h)
            rec["pooled"] = flist(pooled)
            v = h
        elif task == "classify":
            lg = out.logits[0]
            rec["logits"] = flist(lg)
            rec["probs"] = flist(torch.sigmoid(lg) if multilabel else torch.softmax(lg, dim=-1))
            v = lg
        else:
            rec["start_logits"] = flist(out.start_logits[0])
            rec["end_logits"] = flist(out.end_logits[0])
            v = torch.cat([out.start_logits[0], out.end_logits[0]])
        stats["abs_max"] = max(stats["abs_max"], float(v.abs().max()))
        stats["abs_mean"].append(float(v.abs().mean()))
        if len(rec["ids"]) > 3:
            stats["attn_max"].append(float(torch.stack(out.attentions).max(dim=-1).values.mean()))
        cases.append(rec)
    golden = {"model": name, "architecture": arch, "task": task,
              "transformers_version": transformers.__version__, "torch_version": torch.__version__}
    if task == "classify":
        golden["id2label"] = {str(k): v for k, v in model.config.id2label.items()}
        golden["problem_type"] = "multi_label_classification" if multilabel else "single_label_classification"
    if task == "embed":
        golden["pooling"] = "mean+l2norm" if os.path.exists(os.path.join(folder, "modules.json")) else "mean"
    golden["cases"] = cases
    if task == "qa":
        golden["qa_pipeline"] = run_qa_pipeline(folder, model, tok)
    print(f"{name:22s} {arch:38s} |out| max {stats['abs_max']:7.3f} mean {np.mean(stats['abs_mean']):6.3f}"
          f"  mean max-attn-prob {np.mean(stats['attn_max']):.3f}", flush=True)
    return golden, stats


def run_qa_pipeline(folder, model, tok):
    pipe = transformers.pipeline("question-answering", model=folder, tokenizer=folder, device=-1)
    items = []
    for it in QA_ITEMS:
        q, c, params = it["question"], it["context"], it["params"]
        pre, _, post = pipe._sanitize_parameters(**params)
        example = pipe.create_sample(question=q, context=c)
        windows = []
        for feat in pipe.preprocess(example, **pre):
            enc = feat["encoding"]
            ids = feat["input_ids"][0].tolist()
            with torch.no_grad():
                out = pipe._forward(feat)
            seq_ids = [None] * len(ids)
            seq_ids[:len(enc.sequence_ids)] = enc.sequence_ids
            offs = []
            for i, (a, b) in enumerate(list(enc.offsets) + [(0, 0)] * (len(ids) - len(enc.offsets))):
                src = q if seq_ids[i] == 0 else c if seq_ids[i] == 1 else ""
                offs.append([byte_off(src, a), byte_off(src, b)])
            words = list(enc.word_ids) + [None] * (len(ids) - len(enc.word_ids))
            windows.append(dict(
                ids=ids, type_ids=feat["token_type_ids"][0].tolist(),
                attention_mask=feat["attention_mask"][0].tolist(),
                p_mask=[int(x) for x in feat["p_mask"][0].tolist()],
                sequence_ids=seq_ids, word_ids=words, offsets=offs,
                start_logits=flist(out["start"][0]), end_logits=flist(out["end"][0])))
        res = pipe(question=q, context=c, **params)
        res = res if isinstance(res, list) else [res]
        answers = [dict(score=float(a["score"]), start=byte_off(c, a["start"]), end=byte_off(c, a["end"]),
                        char_start=a["start"], char_end=a["end"], answer=a["answer"]) for a in res]
        eff = dict(max_seq_len=pre.get("max_seq_len", min(tok.model_max_length, 384)))
        eff["doc_stride"] = pre.get("doc_stride", min(eff["max_seq_len"] // 2, 128))
        eff["max_question_len"] = pre.get("max_question_len", 64)
        eff["padding"] = pre.get("padding", "do_not_pad")
        eff.update({k: post.get(k, d) for k, d in
                    (("top_k", 1), ("max_answer_len", 15), ("handle_impossible_answer", False), ("align_to_words", True))})
        item = dict(question=q, context=c, params=params, effective_params=eff, windows=windows, answers=answers)
        check = reimplemented_decode(item)
        for a, b in zip(check, answers):
            assert (a["start"], a["end"], a["answer"]) == (b["start"], b["end"], b["answer"]), (a, b)
            assert abs(a["score"] - b["score"]) <= 1e-6 * max(1.0, abs(b["score"])), (a, b)
        assert len(check) == len(answers), (check, answers)
        items.append(item)
        print(f"    qa: {len(windows)} window(s) {[(round(a['score'], 4), a['answer']) for a in answers]}", flush=True)
    return items


def reimplemented_decode(item):
    """Independent re-implementation of QA_DECODING.md from the golden data alone (self-check)."""
    eff, ctx = item["effective_params"], item["context"].encode("utf-8")
    top_k, mal = eff["top_k"], eff["max_answer_len"]
    answers, null = [], 1e6
    for w in item["windows"]:
        allowed = [pm == 0 and am == 1 for pm, am in zip(w["p_mask"], w["attention_mask"])]
        n = len(allowed)

        def softmax(lg):
            x = np.where(allowed, np.asarray(lg, np.float32), np.float32(-10000.0)).astype(np.float32)
            e = np.exp(x - x.max())
            return e / e.sum()

        ps, pe = softmax(w["start_logits"]), softmax(w["end_logits"])
        if eff["handle_impossible_answer"]:
            null = min(null, float(ps[0] * pe[0]))
        ps[0] = pe[0] = 0.0
        cand = []
        for s in range(n):
            for e in range(s, min(n, s + mal)):
                cand.append((float(ps[s] * pe[e]), s * n + e))
        cand = [x for x in cand if x[0] > 0.0]
        cand.sort(key=lambda x: (-x[0], x[1]))
        for score, flat in cand[:top_k]:
            s, e = divmod(flat, n)
            if not (allowed[s] and allowed[e]):
                continue
            ws, we = w["word_ids"][s], w["word_ids"][e]
            if eff["align_to_words"] and ws is not None and we is not None:
                toks_s = [i for i in range(n) if w["sequence_ids"][i] == 1 and w["word_ids"][i] == ws]
                toks_e = [i for i in range(n) if w["sequence_ids"][i] == 1 and w["word_ids"][i] == we]
                a, b = w["offsets"][toks_s[0]][0], w["offsets"][toks_e[-1]][1]
            else:
                a, b = w["offsets"][s][0], w["offsets"][e][1]
            answers.append(dict(score=score, start=a, end=b, answer=ctx[a:b].decode("utf-8")))
    if eff["handle_impossible_answer"]:
        answers.append(dict(score=null, start=0, end=0, answer=""))
    answers.sort(key=lambda x: -x["score"])   # stable
    return answers[:top_k]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "fixtures", "models"))
    ap.add_argument("--only", nargs="*")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    want = lambda n: not args.only or n in args.only
    report = {}
    for name, (cls, mkcfg, task, seed) in MODELS.items():
        if not (want(name) or (name == "bert_cls" and any(want(h) for h in HALF))):
            continue
        folder = os.path.join(args.out, name)
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder)
        torch.manual_seed(seed)
        model = rescale(cls(mkcfg()), seed).eval()
        model.save_pretrained(folder, safe_serialization=True)
        copy_tokenizer(folder, distil=name.startswith("distilbert"))
        if name == "bert_st":
            write_st_layout(folder, model.config.hidden_size)
        golden, st = run_cases(name, folder, task, cls.__name__)
        dump(os.path.join(folder, "golden.json"), golden, indent=1)
        report[name] = st["abs_max"]
        if name == "bert_cls":
            for hname, dt in HALF.items():
                if not want(hname):
                    continue
                hf = os.path.join(args.out, hname)
                shutil.rmtree(hf, ignore_errors=True)
                os.makedirs(hf)
                copy.deepcopy(model).to(dt).save_pretrained(hf, safe_serialization=True)
                copy_tokenizer(hf, distil=False)
                g, _ = run_cases(hname, hf, task, cls.__name__, load_dtype=torch.float32)
                g["weights_dtype"] = str(dt).replace("torch.", "")
                dump(os.path.join(hf, "golden.json"), g, indent=1)
    print("done:", json.dumps(report))


if __name__ == "__main__":
    sys.exit(main())
