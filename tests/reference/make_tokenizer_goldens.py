#!/opt/nlpd-ref/bin/python
"""Golden outputs of the Hugging Face fast WordPiece tokenizer for nlpd's C tokenizer.

Run from the repository root (shared data in ../shared, or NLPD_SHARED):
    /opt/nlpd-ref/bin/python tests/reference/make_tokenizer_goldens.py

Reference: AutoTokenizer.from_pretrained(<shared>/tokenizers/bert-base-uncased)
(BertTokenizerFast built from tokenizer.json; transformers 4.44.2). Every text
is encoded with tok(text, add_special_tokens=True, truncation=False) unless
said otherwise. HF reports offsets in characters; we convert them to UTF-8
byte offsets into the same text (nlpd's eng_encoding offsets). Special tokens
have offsets (0, 0).

Nothing from shared/ is copied: the big corpora are stored as one line per text,
in corpus order:
    <fnv1a64 hex, 16 digits> <number of tokens>
where the hash is 64-bit FNV-1a over the ids as int32 little-endian, then the
offsets as int32 LE (start, end) pairs. For the SQuAD pair files the token
type ids (int32 LE) follow the offsets. Lines starting with '#' are comments.

How each corpus is read (tests/unit/test_tokenizer.c reads them the same way):
  sst2_glue_dev   sst2/glue_sst2_dev.tsv: file split on '\\n', first line (header)
                  and a final empty piece dropped; text = line before its LAST tab.
  sst2_dev        sst2/sst_binary_sent_dev.csv   } CSV (RFC 4180, Python's csv
  sst2_train      sst2/sst_binary_sent_train.csv } module, newline=''), header
  banking77       banking77/train.csv            } row dropped, text = column 0
                  (quoted fields keep embedded newlines/CRLF verbatim).
  clinc150        clinc150/data_train_val.json: top-level keys in file order
                  (oos_val, val, train, oos_train), each a list of [text, label].
  squad           squad/squad_v2_dev_subset.json: for each article, each
                  paragraph: its context, then each of its questions.
  flores_eng/deu/fra  mt_testsets/flores200_devtest/{eng,deu,fra}_Latn.devtest:
                  file split on '\\n', a final empty piece dropped.
  squad_pairs_64/128  each SQuAD question with its context as a pair,
                  tok(q, ctx, truncation='longest_first', max_length=64 / 128).

Full outputs (JSON, texts as hex of their UTF-8 bytes so any byte survives):
  awkward_uncased.json, awkward_cased.json: every text of awkward.txt (see the
  escapes described at its top), "full" without truncation and "t16" with
  truncation=True, max_length=16. The cased tokenizer is tokenizer.json with
  normalizer lowercase=false, strip_accents=false plus a tokenizer_config.json
  {"do_lower_case": false, "tokenizer_class": "BertTokenizer"} (BertTokenizerFast
  takes the casing from there).
  pairs.json: a few sentence pairs at several max_length values (longest_first).
"""
import csv
import json
import os
import shutil
import struct
import sys
import tempfile

from refcommon import fnv1a64
from transformers import AutoTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHARED = os.environ.get("NLPD_SHARED") or os.path.join(ROOT, "..", "shared")
DATA = os.path.join(SHARED, "data")
TOKDIR = os.path.join(SHARED, "tokenizers", "bert-base-uncased")
OUT = os.path.join(ROOT, "tests", "fixtures", "tokenizer")


def byte_offsets(text, offsets):
    """HF char offsets -> UTF-8 byte offsets into text."""
    pos = [0]
    for ch in text:
        pos.append(pos[-1] + len(ch.encode("utf-8")))
    return [(pos[s], pos[e]) for s, e in offsets]


def encoding_of(tok, a, b=None, **kw):
    enc = tok(a, b, add_special_tokens=True, return_offsets_mapping=True, **kw)
    seq = enc.sequence_ids()
    offs = []
    for (s, e), sid in zip(enc["offset_mapping"], seq):
        if sid is None:
            offs.append((0, 0))
        else:
            offs.append(byte_offsets(a if sid == 0 else b, [(s, e)])[0])
    return enc["input_ids"], offs, enc["token_type_ids"]


def hash_line(ids, offs, types=None):
    data = struct.pack("<%di" % len(ids), *ids)
    data += struct.pack("<%di" % (2 * len(offs)), *[x for o in offs for x in o])
    if types is not None:
        data += struct.pack("<%di" % len(types), *types)
    return "%016x %d" % (fnv1a64(data), len(ids))


def read_lines(path):
    with open(path, "rb") as f:
        parts = f.read().decode("utf-8").split("\n")
    if parts and parts[-1] == "":
        parts.pop()
    return parts


def read_csv_col0(path):
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    return [r[0] for r in rows[1:]]


def read_squad():
    with open(os.path.join(DATA, "squad", "squad_v2_dev_subset.json"), encoding="utf-8") as f:
        d = json.load(f)
    texts, pairs = [], []
    for art in d["data"]:
        for para in art["paragraphs"]:
            texts.append(para["context"])
            for qa in para["qas"]:
                texts.append(qa["question"])
                pairs.append((qa["question"], para["context"]))
    return texts, pairs


def corpora():
    sst = os.path.join(DATA, "sst2")
    glue = [l[: l.rindex("\t")] for l in read_lines(os.path.join(sst, "glue_sst2_dev.tsv"))[1:]]
    with open(os.path.join(DATA, "clinc150", "data_train_val.json"), encoding="utf-8") as f:
        clinc = [item[0] for split in json.load(f).values() for item in split]
    flores = os.path.join(DATA, "mt_testsets", "flores200_devtest")
    return [
        ("sst2_glue_dev", glue),
        ("sst2_dev", read_csv_col0(os.path.join(sst, "sst_binary_sent_dev.csv"))),
        ("sst2_train", read_csv_col0(os.path.join(sst, "sst_binary_sent_train.csv"))),
        ("banking77", read_csv_col0(os.path.join(DATA, "banking77", "train.csv"))),
        ("clinc150", clinc),
        ("squad", read_squad()[0]),
        ("flores_eng", read_lines(os.path.join(flores, "eng_Latn.devtest"))),
        ("flores_deu", read_lines(os.path.join(flores, "deu_Latn.devtest"))),
        ("flores_fra", read_lines(os.path.join(flores, "fra_Latn.devtest"))),
    ]


def read_awkward():
    texts = []
    for line in read_lines(os.path.join(OUT, "awkward.txt")):
        if line.startswith("# "):
            continue
        out, i = [], 0
        while i < len(line):
            c = line[i]
            if c == "\\" and i + 1 < len(line):
                n = line[i + 1]
                if n in "ntr\\":
                    out.append({"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}[n])
                    i += 2
                    continue
                if n == "u":
                    out.append(chr(int(line[i + 2 : i + 6], 16)))
                    i += 6
                    continue
                if n == "U":
                    out.append(chr(int(line[i + 2 : i + 10], 16)))
                    i += 10
                    continue
            out.append(c)
            i += 1
        texts.append("".join(out))
    return texts


def write_hashes(name, lines, what):
    with open(os.path.join(OUT, name + ".hashes"), "w") as f:
        f.write("# %s: %d texts; fnv1a64(ids, offsets%s) ntokens\n" % (what, len(lines),
                ", type_ids" if "pairs" in name else ""))
        for l in lines:
            f.write(l + "\n")


def awkward_json(tok, texts):
    items = []
    for t in texts:
        ids, offs, _ = encoding_of(tok, t)
        ids16, offs16, _ = encoding_of(tok, t, truncation=True, max_length=16)
        items.append({"hex": t.encode("utf-8").hex(), "text": t,
                      "full": {"ids": ids, "offsets": [x for o in offs for x in o]},
                      "t16": {"ids": ids16, "offsets": [x for o in offs16 for x in o]}})
    return items


PAIRS = [
    ("How old is the universe?", "The universe is about 13.8 billion years old, say cosmologists."),
    ("short", "a considerably longer second sentence with many more word pieces in it than the first"),
    ("a considerably longer first sentence with many more word pieces in it than the second", "short"),
    ("Équipe française, café!", "Die Mannschaft spielt heute Abend in München um 20:00 Uhr."),
    ("中文问题是什么？", "答案在这里：北京是中国的首都。"),
    ("same length here", "same length there"),
]
PAIR_LENGTHS = [5, 8, 9, 10, 11, 16, 17, 64]


def main():
    os.makedirs(OUT, exist_ok=True)
    tok = AutoTokenizer.from_pretrained(TOKDIR)
    assert type(tok).__name__ == "BertTokenizerFast", type(tok)

    for name, texts in corpora():
        lines = [hash_line(*encoding_of(tok, t)[:2]) for t in texts]
        write_hashes(name, lines, name)
        print("%-14s %6d texts" % (name, len(texts)))

    _, pairs = read_squad()
    for ml in (64, 128):
        lines = [hash_line(*encoding_of(tok, q, c, truncation="longest_first", max_length=ml))
                 for q, c in pairs]
        write_hashes("squad_pairs_%d" % ml, lines, "SQuAD (question, context) max_length=%d" % ml)
        print("squad_pairs_%d %d pairs" % (ml, len(pairs)))

    awk = read_awkward()
    with open(os.path.join(OUT, "awkward_uncased.json"), "w", encoding="utf-8") as f:
        json.dump(awkward_json(tok, awk), f, ensure_ascii=True, indent=0)

    # Cased variant and a check that the vocab.txt route gives the same tokenizer.
    tmp = tempfile.mkdtemp()
    try:
        with open(os.path.join(TOKDIR, "tokenizer.json"), encoding="utf-8") as f:
            tj = json.load(f)
        tj["normalizer"]["lowercase"] = False
        tj["normalizer"]["strip_accents"] = False
        cased_dir = os.path.join(tmp, "cased")
        os.makedirs(cased_dir)
        with open(os.path.join(cased_dir, "tokenizer.json"), "w", encoding="utf-8") as f:
            json.dump(tj, f)
        with open(os.path.join(cased_dir, "tokenizer_config.json"), "w") as f:
            json.dump({"do_lower_case": False, "tokenizer_class": "BertTokenizer"}, f)
        cased = AutoTokenizer.from_pretrained(cased_dir)
        assert not cased.backend_tokenizer.normalizer.__getstate__() is None
        with open(os.path.join(OUT, "awkward_cased.json"), "w", encoding="utf-8") as f:
            json.dump(awkward_json(cased, awk), f, ensure_ascii=True, indent=0)

        txt_dir = os.path.join(tmp, "txt")
        os.makedirs(txt_dir)
        for n in ("vocab.txt", "tokenizer_config.json"):
            shutil.copy(os.path.join(TOKDIR, n), txt_dir)
        slow_route = AutoTokenizer.from_pretrained(txt_dir)
        assert all(encoding_of(slow_route, t) == encoding_of(tok, t) for t in awk)
    finally:
        shutil.rmtree(tmp)

    items = []
    for a, b in PAIRS:
        for ml in PAIR_LENGTHS:
            ids, offs, types = encoding_of(tok, a, b, truncation="longest_first", max_length=ml)
            items.append({"a": a, "b": b, "max_length": ml, "ids": ids, "type_ids": types,
                          "offsets": [x for o in offs for x in o]})
    with open(os.path.join(OUT, "pairs.json"), "w", encoding="utf-8") as f:
        json.dump(items, f, ensure_ascii=True, indent=0)
    print("awkward %d texts, pairs %d" % (len(awk), len(items)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
