#!/opt/nlpd-ref/bin/python
"""Create tiny random MarianMTModels and their golden outputs (translation parity).

    /opt/nlpd-ref/bin/python tests/reference/make_marian_models.py      # ~1 min
        [--out tests/fixtures/marian] [--only NAME ...]
    /opt/nlpd-ref/bin/python tests/reference/make_marian_models.py --base DIR
        # an OPUS-MT base-sized random model (6+6 layers, d_model 512, 8 heads,
        # FFN 2048, swish, the real vocabulary) with its tokenizer files, for bench/translate

Each model is a standard Hugging Face folder (config.json, generation_config.json,
model.safetensors) built on the REAL OPUS-MT vocabulary (54,776 pieces, from
../shared/tokenizers/opus-mt-tc-big-en-pt) with small hidden sizes. The
tokenizer files (source.spm, target.spm, vocab.json, tokenizer_config.json,
special_tokens_map.json) are NOT copied into the repository (shared/ material):
tests link them into a temporary folder next to the fixture files.

Weights are stored as F16 to keep each folder at a few MB (the vocabulary
dominates: 54,776 x d_model); goldens are computed by transformers from the
same F16 values upcast to float32 (`torch_dtype=torch.float32`), which is what
nlpd loads. After the default init every parameter is re-drawn (seeded) with
LARGE values so logits are O(1-10) and attention is not uniform (see
`rescale`), and final_logits_bias gives </s> a boost so that generation stops
at varied lengths (a random model otherwise almost never emits </s>).

| name | d_model/heads/ffn | layers enc+dec | activation | embeddings | generation_config |
|---|---|---|---|---|---|
| marian_a | 32/4/64 | 2+2 | swish | shared, lm_head tied (as OPUS-MT) | as opus-mt-tc-big-en-pt: bad_words [[pad]], forced_eos, renormalize_logits, num_beams 4; max_length 40 |
| marian_b | 16/2/48 | 2+3 | gelu | encoder/decoder separate (share_encoder_decoder_embeddings false), lm_head tied to the decoder's, scale_embedding false | early_stopping true, length_penalty 1.0, no renormalize, max_length 24 |
| marian_c | 16/4/32 | 1+2 | relu | shared, lm_head untied (tie_word_embeddings false) | early_stopping "never", length_penalty 0.8, no forced_eos, max_length 20 |

golden.json:
  {"model", "config": {...}, "generation_config": {...},
   "cases": [{"text", "src_ids",                       (MarianTokenizer, no truncation)
              "greedy": ids,                              generate(num_beams=1)
              "beam": ids, "beam_score": s,               generate() with the folder's
                                                          generation_config (num_beams 4)
              "beam2": ids, "beam5_max8": ids}],          num_beams=2; num_beams=5 max_new_tokens=8
   "numeric": [{"case": i, "encoder": [T*d floats],       encoder last hidden state
                "prefix": [decoder input ids],            [pad] and [pad] + 5 greedy tokens
                "logit_ids": [...], "logits": [[...], ...]}],  final-position logits at logit_ids
                                                          for each prefix (teacher forcing)
   "batch_agrees": true|false}                            generate() on the padded batch of
                                                          all texts gives the same ids
Generated ids are returned by generate() for the text alone (batch of 1), with
the decoder start token (pad) removed; trailing pads cannot occur for batch 1.
Floats are float32 values written with repr (exact).
"""
import argparse
import json
import os
import shutil
import sys
import tempfile

import numpy as np
import torch
import transformers
from safetensors.torch import load_file, save_file
from transformers import GenerationConfig, MarianConfig, MarianMTModel, MarianTokenizer

torch.set_num_threads(1)

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SHARED = os.environ.get("NLPD_SHARED") or os.path.join(ROOT, "..", "shared")
TOK_SRC = os.path.join(SHARED, "tokenizers", "opus-mt-tc-big-en-pt")
TOK_FILES = ["source.spm", "target.spm", "vocab.json", "tokenizer_config.json",
             "special_tokens_map.json"]

VOCAB = 54776
EOS, PAD = 44670, 54775

# Our own sentences (nothing from shared/ data): varied lengths and scripts.
TEXTS = [
    "Hello world!",
    "The cat sat on the mat.",
    "",
    "How are you today?",
    "I would like a cup of coffee, please.",
    "The committee approved the new budget after a long debate on Tuesday evening.",
    "Yes.",
    "Translation models are evaluated with BLEU and chrF on standard test sets.",
    "Café naïve résumé — Zürich's tower costs ¥500.",
    "Please send the report by Friday.",
    "She said: \"I'll be there at 10:30.\"",
    "Numbers like 3.14159 and 2,718 appear in many documents.",
    "Where is the nearest train station?",
    "The database host is experiencing issues.",
    "In Git, a branch is a new version of the main repository.",
    "Asynchronous programming models improve the efficiency of I/O operations.",
    "Tom tried to stab me.",
    "He has been to Hawaii several times.",
    "What time does the museum open on Sundays?",
    "Our team won the championship in overtime last night, and the whole city celebrated "
    "in the streets until the early morning hours.",
    "Thank you very much for your help with the move last weekend.",
    "The weather forecast predicts heavy rain and strong winds for the coast.",
    ">>por<< A sentence with a language code.",
    "Ünïcödé àéîõü ÇçÑñ ßẞ 東京 😀",
    "It's not what you think; it's what you do.",
    "Read the manual before installing the software on a production server.",
    "Children learn languages faster than adults, according to several studies.",
    "Wow!!!",
    "A B C D E F G",
    "The quick brown fox jumps over the lazy dog.",
    "If the server returns an error, retry the request after a short delay.",
    "Good morning.",
]

MODELS = {
    "marian_a": dict(
        d_model=32, heads=4, ffn=64, enc=2, dec=2, act="swish", share=True, tie=True,
        scale_embedding=True, eos_boost=4.0, emb=0.1, out_gamma=4.0,
        gen=dict(bad_words_ids=[[PAD]], forced_eos_token_id=EOS, renormalize_logits=True,
                 num_beams=4, max_length=40)),
    "marian_b": dict(
        d_model=16, heads=2, ffn=48, enc=2, dec=3, act="gelu", share=False, tie=True,
        scale_embedding=False, eos_boost=3.5, emb=0.3, out_gamma=2.0,
        gen=dict(bad_words_ids=[[PAD]], forced_eos_token_id=EOS, num_beams=4, max_length=24,
                 early_stopping=True, length_penalty=1.0)),
    "marian_c": dict(
        d_model=16, heads=4, ffn=32, enc=1, dec=2, act="relu", share=True, tie=False,
        scale_embedding=True, eos_boost=3.5, emb=0.12, out_gamma=3.0,
        gen=dict(bad_words_ids=[[PAD]], num_beams=4, max_length=20, early_stopping="never",
                 length_penalty=0.8)),
}

BASE = dict(d_model=512, heads=8, ffn=2048, enc=6, dec=6, act="swish", share=True, tie=True,
            scale_embedding=True, eos_boost=None, emb=float(os.environ.get("NLPD_BASE_EMB", "0.01")), out_gamma=2.0,
            gen=dict(bad_words_ids=[[PAD]], forced_eos_token_id=EOS, renormalize_logits=True,
                     num_beams=4, max_length=512))


def make_config(spec):
    return MarianConfig(
        vocab_size=VOCAB, decoder_vocab_size=VOCAB, d_model=spec["d_model"],
        encoder_layers=spec["enc"], decoder_layers=spec["dec"],
        encoder_attention_heads=spec["heads"], decoder_attention_heads=spec["heads"],
        encoder_ffn_dim=spec["ffn"], decoder_ffn_dim=spec["ffn"],
        activation_function=spec["act"], max_position_embeddings=512 if spec["d_model"] < 64 else 1024,
        scale_embedding=spec["scale_embedding"],
        share_encoder_decoder_embeddings=spec["share"], tie_word_embeddings=spec["tie"],
        pad_token_id=PAD, eos_token_id=EOS, decoder_start_token_id=PAD, forced_eos_token_id=None,
        bos_token_id=0, dropout=0.1, attention_dropout=0.0, activation_dropout=0.0,
        architectures=["MarianMTModel"], static_position_embeddings=True,
    )


def rescale(model, seed, spec):
    """Large seeded weights. Token embeddings N(0, emb) - small next to the
    sinusoidal positions (magnitude 1), else a random post-norm decoder repeats
    its input token and never or always stops; the last decoder LayerNorm's
    gamma is multiplied by out_gamma so logits are O(1-10) anyway. Q/K
    N(0, 2/sqrt(fan_in)) for peaked attention; other matrices N(0, 1/sqrt(fan_in));
    untied lm_head N(0, emb); biases N(0, 0.2); LayerNorm gamma 1+N(0,0.2),
    beta N(0,0.2); final_logits_bias N(0, 0.5) with </s> raised by eos_boost."""
    eos_boost = spec["eos_boost"]
    last_ln = "model.decoder.layers.%d.final_layer_norm.weight" % (spec["dec"] - 1)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "embed_positions" in name:
                continue
            if "layer_norm" in name or "layernorm" in name:
                if name.endswith("weight"):
                    p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
                    if name == last_ln:
                        p.mul_(spec["out_gamma"])
                else:
                    p.copy_(0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
            elif "embed_tokens" in name or "shared" in name or "lm_head" in name:
                p.copy_(torch.randn(p.shape, generator=g) * spec["emb"])
            elif "q_proj" in name or "k_proj" in name:
                p.copy_(torch.randn(p.shape, generator=g) * (2.0 / p.shape[1] ** 0.5))
            else:
                p.copy_(torch.randn(p.shape, generator=g) * (1.0 / p.shape[1] ** 0.5))
        flb = 0.5 * torch.randn(model.final_logits_bias.shape, generator=g)
        if eos_boost is not None:
            flb[0, EOS] += eos_boost
        else:
            flb.zero_()
        model.final_logits_bias.copy_(flb)


def tune_eos(model, gen):
    """Pick the </s> bias that spreads greedy and beam lengths the most (a
    random model either stops at once or never): the most distinct lengths,
    few at 1 or at max_length - 1."""
    tok = MarianTokenizer.from_pretrained(TOK_SRC)
    inputs = [tok(t, return_tensors="pt").input_ids for t in TEXTS]
    base = float(model.final_logits_bias[0, EOS])
    best = None
    for boost in np.arange(-3.0, 7.01, 1.0):
        with torch.no_grad():
            model.final_logits_bias[0, EOS] = base + float(boost)
        score = 0
        for beams in (1, gen.num_beams):
            lens = [len(strip(generate(model, ids, num_beams=beams, generation_config=gen)[0]))
                    for ids in inputs]
            extreme = sum(1 for n in lens if n <= 1 or n >= gen.max_length - 1)
            score += len(set(lens)) - 2 * max(0, extreme - len(lens) // 4)
        if best is None or score > best[0]:
            best = (score, float(boost), sorted(lens))
    with torch.no_grad():
        model.final_logits_bias[0, EOS] = base + best[1]
    print("  eos boost %+.1f: greedy lengths %s" % (best[1], best[2]), file=sys.stderr)


def to_f16(folder):
    path = os.path.join(folder, "model.safetensors")
    sd = load_file(path)
    save_file({k: v.to(torch.float16).contiguous() for k, v in sd.items()}, path,
              metadata={"format": "pt"})


def link_tokenizer(folder):
    for f in TOK_FILES:
        dst = os.path.join(folder, f)
        if not os.path.exists(dst):
            os.symlink(os.path.abspath(os.path.join(TOK_SRC, f)), dst)


def f32list(t):
    return [float(np.float32(x)) for x in t.reshape(-1).tolist()]


def generate(model, ids, **kw):
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **kw)
    return out


def strip(seq):
    seq = seq.tolist()
    assert seq[0] == PAD
    seq = seq[1:]
    while seq and seq[-1] == PAD:
        seq.pop()
    return seq


def build(name, spec, out_dir, seed, fixtures=True):
    torch.manual_seed(seed)
    cfg = make_config(spec)
    model = MarianMTModel(cfg).eval()
    rescale(model, seed + 1, spec)
    folder = os.path.join(out_dir, name)
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    gen = GenerationConfig(decoder_start_token_id=PAD, pad_token_id=PAD, eos_token_id=EOS,
                           bos_token_id=0, **spec["gen"])
    if fixtures:
        tune_eos(model, gen)
    model.save_pretrained(folder, safe_serialization=True)
    gen.save_pretrained(folder)
    if not fixtures:
        link_tokenizer(folder)
        for f in TOK_FILES:  # the bench folder is outside the repository: real copies
            p = os.path.join(folder, f)
            os.unlink(p)
            shutil.copyfile(os.path.join(TOK_SRC, f), p)
        return folder
    to_f16(folder)
    # Reload exactly what nlpd will read (F16 upcast to float32), with the tokenizer.
    tmp = tempfile.mkdtemp(prefix="nlpd_marian_")
    for f in os.listdir(folder):
        os.symlink(os.path.abspath(os.path.join(folder, f)), os.path.join(tmp, f))
    link_tokenizer(tmp)
    tok = MarianTokenizer.from_pretrained(tmp)
    model = MarianMTModel.from_pretrained(tmp, torch_dtype=torch.float32).eval()
    cases, lengths = [], []
    for text in TEXTS:
        ids = tok(text, return_tensors="pt").input_ids
        greedy = strip(generate(model, ids, num_beams=1)[0])
        out = generate(model, ids, output_scores=True, return_dict_in_generate=True)
        beam = strip(out.sequences[0])
        cases.append(dict(
            text=text, src_ids=ids[0].tolist(), greedy=greedy, beam=beam,
            beam_score=float(out.sequences_scores[0]),
            beam2=strip(generate(model, ids, num_beams=2)[0]),
            beam5_max8=strip(generate(model, ids, num_beams=5, max_new_tokens=8)[0]),
        ))
        lengths.append((len(greedy), len(beam)))
    # Numeric goldens: encoder output and logits after [pad] and [pad] + 5 tokens.
    rng = np.random.RandomState(seed)
    numeric = []
    for ci in (5, 8):
        c = cases[ci]
        ids = torch.tensor([c["src_ids"]])
        with torch.no_grad():
            enc = model.get_encoder()(input_ids=ids).last_hidden_state
            entry = dict(case=ci, encoder=f32list(enc[0]), prefixes=[], logits=[])
            forced = (c["greedy"] + [EOS] * 5)[:5]
            for prefix in ([PAD], [PAD] + forced):
                out = model(input_ids=ids, decoder_input_ids=torch.tensor([prefix]))
                row = out.logits[0, -1]
                top = torch.topk(row, 32).indices.tolist()
                sample = sorted(set(rng.choice(VOCAB, 2000, replace=False).tolist() + top +
                                    [EOS, PAD]))
                entry["prefixes"].append(prefix)
                entry["logits"].append(dict(ids=sample, values=f32list(row[sample])))
        numeric.append(entry)
    # Does HF give the same ids on the padded batch?
    batch = tok(TEXTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        bout = model.generate(**batch)
    batch_agrees = all(strip(bout[i]) == cases[i]["beam"] for i in range(len(TEXTS)))
    golden = dict(model=name, transformers=transformers.__version__, torch=torch.__version__,
                  config=json.load(open(os.path.join(folder, "config.json"))),
                  generation_config=json.load(open(os.path.join(folder, "generation_config.json"))),
                  cases=cases, numeric=numeric, batch_agrees=batch_agrees)
    with open(os.path.join(folder, "golden.json"), "w") as f:
        json.dump(golden, f, indent=0)
        f.write("\n")
    shutil.rmtree(tmp)
    g = [a for a, _ in lengths]
    b = [b for _, b in lengths]
    print("%s: greedy lengths %s; beam lengths %s; batch agrees %s; %.1f MB" % (
        name, sorted(g), sorted(b), batch_agrees,
        sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder)) / 1e6),
        file=sys.stderr)
    return folder


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "fixtures", "marian"))
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--base", help="write the OPUS-MT base-sized random model to this folder")
    ap.add_argument("--eos-boost", type=float, default=None,
                    help="--base: raise the </s> logit by this much (lengths like real output)")
    a = ap.parse_args()
    if a.base:
        parent, name = os.path.split(os.path.abspath(a.base))
        os.makedirs(parent, exist_ok=True)
        build(name, dict(BASE, eos_boost=a.eos_boost), parent, 1234, fixtures=False)
        print("wrote", a.base, file=sys.stderr)
        return
    os.makedirs(a.out, exist_ok=True)
    for i, (name, spec) in enumerate(MODELS.items()):
        if a.only and name not in a.only:
            continue
        build(name, spec, a.out, 100 + 10 * i)


if __name__ == "__main__":
    main()
