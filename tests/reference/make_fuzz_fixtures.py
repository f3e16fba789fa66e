#!/usr/bin/env python3
"""Create the small-vocabulary model folders that fuzz_model_folder loads, and its seeds.

    /opt/nlpd-ref/bin/python tests/reference/make_fuzz_fixtures.py

fuzz_model_folder loads a whole model per input, so the cost of a load decides how
many inputs it can try. The parity fixtures (tests/fixtures/models, marian) carry the
real 30,522-word BERT and 54,776-piece OPUS-MT vocabularies: a load under ASan takes
~8 ms (BERT) and ~400 ms (Marian, parsing the real spm and vocab.json). These folders
keep every file kind and tensor name but a 512-word vocabulary (BERT, specials at
their bert-base-uncased ids) and a 160-piece SentencePiece unigram model trained here
(Marian), with tiny random weights (hidden 8, one layer): nothing here is compared
with transformers, it only has to be a valid folder.

Writes tests/fixtures/fuzz/{bert_cls,bert_qa,distilbert_cls,bert_st,marian} and the
seeds tests/fuzz/corpus/model_folder/<fixture>_<json|txt> in the target's input
format (byte 0: fixture index | vocab.txt flag << 3; bytes 1-2: config.json length;
then config.json and the tokenizer file). Deterministic (fixed seeds).
"""
import json
import os
import shutil
import sys
import tempfile

import sentencepiece as spm
import torch
from transformers import (BertConfig, BertForQuestionAnswering, BertForSequenceClassification,
                          BertModel, DistilBertConfig, DistilBertForSequenceClassification,
                          MarianConfig, MarianMTModel)

torch.set_num_threads(1)
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SHARED = os.environ.get("NLPD_SHARED", os.path.join(ROOT, "..", "shared"))
BERT_TOK = os.path.join(SHARED, "tokenizers", "bert-base-uncased")
OUT = os.path.join(ROOT, "tests", "fixtures", "fuzz")
SEEDS = os.path.join(ROOT, "tests", "fuzz", "corpus", "model_folder")
# The target's fixture order (fuzz_model_folder.c `fixtures`): byte 0 & 7 picks one.
ORDER = ["bert_cls", "bert_qa", "distilbert_cls", "bert_st", "marian"]
# spm training text: the 32 sentences of the Marian goldens (fixed, in the repository)
GOLDEN = os.path.join(ROOT, "tests", "fixtures", "marian", "marian_a", "golden.json")
TINY = dict(hidden=8, heads=2, layers=1, inter=16, maxpos=64)


def dump(path, obj):
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=2, ensure_ascii=False)
        fh.write("\n")


def small_bert_vocab():
    """512 words: bert-base-uncased's first 104 (the [unused*] block, [UNK]=100,
    [CLS]=101, [SEP]=102, [MASK]=103, so the template's ids stay valid), then its
    one-character words, their ## forms and the most common short words."""
    words = open(os.path.join(BERT_TOK, "vocab.txt"), encoding="utf-8").read().split("\n")[:-1]
    vocab = words[:104]
    seen = set(vocab)
    rest = [w for w in words[104:] if len(w) == 1] + \
           [w for w in words[104:] if w.startswith("##") and len(w) == 3] + \
           [w for w in words[1996:] if w.isalpha() and len(w) <= 6]
    for w in rest:
        if len(vocab) == 512:
            break
        if w not in seen:
            vocab.append(w)
            seen.add(w)
    assert len(vocab) == 512
    return vocab


def bert_tokenizer_json(vocab):
    tj = json.load(open(os.path.join(BERT_TOK, "tokenizer.json"), encoding="utf-8"))
    tj["model"]["vocab"] = {w: i for i, w in enumerate(vocab)}
    return tj


def write_st_layout(folder, hidden):
    dump(os.path.join(folder, "modules.json"), [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}])
    os.makedirs(os.path.join(folder, "1_Pooling"), exist_ok=True)
    dump(os.path.join(folder, "1_Pooling", "config.json"), {
        "word_embedding_dimension": hidden, "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False})
    dump(os.path.join(folder, "sentence_bert_config.json"), {"max_seq_length": 64, "do_lower_case": False})


def bert_models():
    d = TINY
    bert = dict(vocab_size=512, hidden_size=d["hidden"], num_attention_heads=d["heads"],
                num_hidden_layers=d["layers"], intermediate_size=d["inter"],
                max_position_embeddings=d["maxpos"], type_vocab_size=2)
    distil = dict(vocab_size=512, dim=d["hidden"], n_heads=d["heads"], n_layers=d["layers"],
                  hidden_dim=d["inter"], max_position_embeddings=d["maxpos"])
    cls3 = dict(num_labels=3, id2label={0: "negative", 1: "neutral", 2: "positive"},
                label2id={"negative": 0, "neutral": 1, "positive": 2})
    return {
        "bert_cls": (BertForSequenceClassification, BertConfig(**bert, **cls3)),
        "bert_qa": (BertForQuestionAnswering, BertConfig(**bert)),
        "distilbert_cls": (DistilBertForSequenceClassification, DistilBertConfig(**distil, num_labels=2)),
        "bert_st": (BertModel, BertConfig(**bert)),
    }


def make_spm(folder):
    """A 160-piece unigram model; ids as MarianTokenizer's vocab.json has them:
    </s> 0, <unk> 1, the pieces, <pad> last."""
    here = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)  # relative names: the model stores its trainer's paths
        with open("text", "w", encoding="utf-8") as fh:
            fh.writelines(c["text"] + "\n" for c in json.load(open(GOLDEN, encoding="utf-8"))["cases"])
        spm.SentencePieceTrainer.train(
            input="text", model_prefix="m", vocab_size=160, model_type="unigram",
            character_coverage=1.0, eos_id=0, unk_id=1, bos_id=-1, pad_id=-1,
            num_threads=1, seed_sentencepiece_size=100000, minloglevel=2)
        for name in ("source.spm", "target.spm"):
            shutil.copyfile("m.model", os.path.join(folder, name))
        sp = spm.SentencePieceProcessor(model_file="m.model")
        pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
        os.chdir(here)
    vocab = {"</s>": 0, "<unk>": 1}
    for p in pieces:
        vocab.setdefault(p, len(vocab))
    vocab["<pad>"] = len(vocab)
    dump(os.path.join(folder, "vocab.json"), vocab)
    dump(os.path.join(folder, "special_tokens_map.json"),
         {"eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"})
    return vocab


def marian_tokenizer_config(vocab):
    def tok(s):
        return {"content": s, "lstrip": False, "normalized": False, "rstrip": False,
                "single_word": False, "special": True}
    return {"added_tokens_decoder": {str(vocab[s]): tok(s) for s in ("</s>", "<unk>", "<pad>")},
            "clean_up_tokenization_spaces": True, "eos_token": "</s>", "model_max_length": 64,
            "pad_token": "<pad>", "separate_vocabs": False, "source_lang": "en", "target_lang": "pt",
            "sp_model_kwargs": {}, "tokenizer_class": "MarianTokenizer", "unk_token": "<unk>"}


def marian_model(folder, vocab):
    v, d = len(vocab), TINY
    cfg = MarianConfig(
        vocab_size=v, decoder_vocab_size=v, d_model=d["hidden"], encoder_layers=1, decoder_layers=1,
        encoder_attention_heads=d["heads"], decoder_attention_heads=d["heads"],
        encoder_ffn_dim=d["inter"], decoder_ffn_dim=d["inter"], activation_function="swish",
        max_position_embeddings=d["maxpos"], scale_embedding=True,
        share_encoder_decoder_embeddings=True, tie_word_embeddings=True,
        pad_token_id=vocab["<pad>"], eos_token_id=0, decoder_start_token_id=vocab["<pad>"],
        forced_eos_token_id=None, bos_token_id=0, architectures=["MarianMTModel"],
        static_position_embeddings=True)
    MarianMTModel(cfg).save_pretrained(folder, safe_serialization=True)
    os.chmod(os.path.join(folder, "model.safetensors"), 0o644)


def seed(index, vocab_txt, config_path, tokenizer_bytes):
    cfg = open(config_path, "rb").read()
    assert len(cfg) < 65536
    return bytes([index | (vocab_txt << 3), len(cfg) & 255, len(cfg) >> 8]) + cfg + tokenizer_bytes


def main():
    torch.manual_seed(1234)
    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(OUT)
    vocab = small_bert_vocab()
    vocab_txt = ("\n".join(vocab) + "\n").encode()
    tok_json = json.dumps(bert_tokenizer_json(vocab), ensure_ascii=False).encode()
    seeds = {}
    for name, (cls, cfg) in bert_models().items():
        folder = os.path.join(OUT, name)
        cls(cfg).save_pretrained(folder, safe_serialization=True)
        os.chmod(os.path.join(folder, "model.safetensors"), 0o644)
        if name == "bert_st":
            write_st_layout(folder, TINY["hidden"])
        cfg_path = os.path.join(folder, "config.json")
        i = ORDER.index(name)
        seeds[name + "_json"] = seed(i, 0, cfg_path, tok_json)
        seeds[name + "_txt"] = seed(i, 1, cfg_path, vocab_txt)
        os.remove(cfg_path)  # the target writes the fuzzed one
    folder = os.path.join(OUT, "marian")
    os.makedirs(folder)
    mv = make_spm(folder)
    marian_model(folder, mv)
    os.remove(os.path.join(folder, "generation_config.json"))
    tcfg = json.dumps(marian_tokenizer_config(mv), indent=2).encode()
    seeds["marian"] = seed(ORDER.index("marian"), 0, os.path.join(folder, "config.json"), tcfg)
    os.remove(os.path.join(folder, "config.json"))
    os.makedirs(SEEDS, exist_ok=True)
    for old in os.listdir(SEEDS):  # the fixtures' old seeds; crash inputs (others) stay
        if old.endswith(("_json", "_txt")) or old == "marian_a":
            os.remove(os.path.join(SEEDS, old))
    for name, data in seeds.items():
        with open(os.path.join(SEEDS, name), "wb") as fh:
            fh.write(data)
    print("wrote %s and %d seeds" % (OUT, len(seeds)), file=sys.stderr)


if __name__ == "__main__":
    main()
