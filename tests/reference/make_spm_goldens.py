#!/opt/nlpd-ref/bin/python
"""Golden outputs of Hugging Face's MarianTokenizer for nlpd's Marian tokenizer.

Run from the repository root (shared data in ../shared, or NLPD_SHARED):
    /opt/nlpd-ref/bin/python tests/reference/make_spm_goldens.py      # ~20 s

Reference: MarianTokenizer.from_pretrained(<shared>/tokenizers/opus-mt-tc-big-en-pt)
(transformers 4.44.2, the slow tokenizer; python sentencepiece). Source side:
tok(text).input_ids (pieces of source.spm, </s> appended). Target side:
tok(text_target=text).input_ids (target.spm), and the text of
tok.decode(those ids, skip_special_tokens=True).

Nothing from shared/ is copied: each corpus becomes one line per text, in
corpus order (files split on '\\n', a final empty piece dropped):
    source files (*.src.hashes):  <fnv1a64(ids as int32 LE)> <number of ids>
    target files (*.tgt.hashes):  <fnv1a64(ids)> <number of ids> <fnv1a64(decoded UTF-8)>
hashes as 16 hex digits; lines starting with '#' are comments.
  flores_eng.src    mt_testsets/flores200_devtest/eng_Latn.devtest
  newstest_en.src   mt_testsets/newstest2014_en-fr/newstest2014.en
  tatoeba_eng.src   mt_testsets/tatoeba_eng-deu/tatoeba-test-v2021-08-07.eng
  flores_por.tgt    mt_testsets/flores200_devtest/por_Latn.devtest
  flores_spa.tgt    mt_testsets/flores200_devtest/spa_Latn.devtest
  tatoeba_deu.tgt   mt_testsets/tatoeba_eng-deu/tatoeba-test-v2021-08-07.deu

Readable goldens (awkward.json) for the awkward texts below: per text its source
ids and pieces, target ids and decoded text, and source ids truncated at
max_length 6; plus decode cases: hand-made id lists (specials inside, unknown
ids, language codes, pieces that trigger clean_up_tokenization_spaces) with
their decode(skip_special_tokens=True) text.
"""
import json
import os
import struct
import sys

from refcommon import fnv1a64
from transformers import MarianTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHARED = os.environ.get("NLPD_SHARED") or os.path.join(ROOT, "..", "shared")
DATA = os.path.join(SHARED, "data", "mt_testsets")
TOKDIR = os.path.join(SHARED, "tokenizers", "opus-mt-tc-big-en-pt")
OUT = os.path.join(ROOT, "tests", "fixtures", "marian_tok")

SOURCES = [
    ("flores_eng", "flores200_devtest/eng_Latn.devtest"),
    ("newstest_en", "newstest2014_en-fr/newstest2014.en"),
    ("tatoeba_eng", "tatoeba_eng-deu/tatoeba-test-v2021-08-07.eng"),
]
TARGETS = [
    ("flores_por", "flores200_devtest/por_Latn.devtest"),
    ("flores_spa", "flores200_devtest/spa_Latn.devtest"),
    ("tatoeba_deu", "tatoeba_eng-deu/tatoeba-test-v2021-08-07.deu"),
]

AWKWARD = [
    "",
    " ",
    "Hello world!",
    "  leading and trailing spaces  ",
    "tabs\tand\nnewlines\r\nhere",
    ">>por<< Tom tried to stab me.",
    ">>pob<<Sem espaço.",
    ">>xyz<< unknown language code",
    "middle >>por<< code is deleted",
    ">>por<< two >>pob<< codes",
    ">>por<<\n>>pob<< across a newline",
    ">><< empty code",
    ">>>por<<< angle soup",
    "<< >> reversed",
    "ends with >>por<<",
    "The </s> token inside, and <unk> and <pad> too.",
    "</s></s>",
    "x<pad>y",
    "Café naïve résumé — Zürich's 東京 tower 😀 costs ¥500, señor Ångström.",
    "ﬁnancial ＦＵＬＬＷＩＤＴＨ ①②③ ㎏ ℃",
    "Zero\u200bwidth\u00a0no-break\u2009thin\u3000ideographic",
    "e\u0301 combining acute vs é",
    "Control \x01\x02 chars\x7f and NUL\x00 inside",
    "Emoji: 👩‍👩‍👧‍👦 🏳️‍🌈 🇵🇹",
    "Ελληνικά, русский, العربية, עברית, हिन्दी, ไทย",
    "I can't, won't, shouldn't: 'quoted' \"double\" «guillemets» „low“",
    "URL https://example.com/a?b=c&d=e#f and e-mail a.b@c.de",
    "Numbers 1,234.56 and 3/4 and 10^6 and -7 and 2023-11-05.",
    "a" * 300,
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "Ünïcödé ÀÉÎÕÜ àéîõü ÇçÑñ ßẞ",
    "...!!!???,,,;;;:::",
    "\u2581 literal lower one eighth block \u2581\u2581",
]

# ids -> decode(skip_special_tokens=True); built from the vocabulary below.
DECODE_PIECES = [
    ["▁Olá", ",", "▁mundo", "!", "</s>"],
    ["▁Olá", "▁", ".", "▁Isto", "▁é", "▁um", "▁teste", "▁", "?", "</s>", "<pad>"],
    ["<pad>", "▁Um", "<unk>", "▁dois", "</s>"],
    [">>por<<", "▁Bom", "▁dia"],
    ["▁I", "▁can", "'", "t", "▁'", "s", "▁n", "'", "t"],
    ["▁", "'", "▁a", "▁", "'", "▁b", "▁'", "m", "▁'", "ve", "▁'", "re"],
    [],
    ["</s>"],
    ["▁a", "</s>", "▁b"],
]


def ids_bytes(ids):
    return struct.pack("<%di" % len(ids), *ids)


def read_lines(rel):
    with open(os.path.join(DATA, rel), encoding="utf-8", newline="") as f:
        parts = f.read().split("\n")
    if parts and parts[-1] == "":
        parts.pop()
    return parts


def main():
    tok = MarianTokenizer.from_pretrained(TOKDIR)
    os.makedirs(OUT, exist_ok=True)
    for name, rel in SOURCES:
        lines = read_lines(rel)
        with open(os.path.join(OUT, name + ".src.hashes"), "w") as f:
            f.write("# %s: %d texts; fnv1a64(source ids) n_ids\n" % (name, len(lines)))
            for t in lines:
                ids = tok(t).input_ids
                f.write("%016x %d\n" % (fnv1a64(ids_bytes(ids)), len(ids)))
        print(name, len(lines), file=sys.stderr)
    for name, rel in TARGETS:
        lines = read_lines(rel)
        with open(os.path.join(OUT, name + ".tgt.hashes"), "w") as f:
            f.write("# %s: %d texts; fnv1a64(target ids) n_ids fnv1a64(decoded text)\n"
                    % (name, len(lines)))
            for t in lines:
                ids = tok(text_target=t).input_ids
                text = tok.decode(ids, skip_special_tokens=True)
                f.write("%016x %d %016x\n" % (fnv1a64(ids_bytes(ids)), len(ids),
                                             fnv1a64(text.encode("utf-8"))))
        print(name, len(lines), file=sys.stderr)

    vocab = tok.get_vocab()
    cases = []
    for t in AWKWARD:
        src = tok(t).input_ids
        tgt = tok(text_target=t).input_ids
        cases.append(dict(
            text=t,
            source_ids=src,
            source_pieces=tok.convert_ids_to_tokens(src),
            source_ids_max6=tok(t, truncation=True, max_length=6).input_ids,
            target_ids=tgt,
            target_decoded=tok.decode(tgt, skip_special_tokens=True),
        ))
    decodes = []
    for pieces in DECODE_PIECES:
        ids = [vocab[p] for p in pieces]
        decodes.append(dict(pieces=pieces, ids=ids,
                            text=tok.decode(ids, skip_special_tokens=True)))
    # ids without a vocabulary entry decode as the unknown token's text
    decodes.append(dict(pieces=None, ids=[vocab["▁a"], len(vocab) + 5, vocab["▁b"]],
                        text=tok.decode([vocab["▁a"], len(vocab) + 5, vocab["▁b"]],
                                        skip_special_tokens=True)))
    meta = dict(tokenizer="opus-mt-tc-big-en-pt (shared/tokenizers)",
                transformers=__import__("transformers").__version__,
                eos_id=tok.eos_token_id, pad_id=tok.pad_token_id, unk_id=tok.unk_token_id,
                vocab_size=len(vocab), cases=cases, decodes=decodes)
    with open(os.path.join(OUT, "awkward.json"), "w", encoding="utf-8") as f:
        json.dump(meta, f, ensure_ascii=True, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
