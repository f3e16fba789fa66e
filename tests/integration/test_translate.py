"""POST /v1/translate on the tiny random MarianMTModels (tests/fixtures/marian) served by
the main daemon as tiny-mt-a (en -> pt), tiny-mt-b (en -> es) and tiny-mt-c (de -> pt,
max_beam_size 4, max_length 64); see conftest.marian_models.

The oracle chain for the goldens: the committed generate() ids (golden.json) equal the
ids nlpd-cli prints for the same folder and options, and the daemon's text equals the
CLI's detokenised text."""
import json

import pytest

from conftest import (MARIAN, cli_json, have_marian, json_error, marian_folder, metric, require,
                      same_result, scrape)
from test_batching import burst

@pytest.fixture(autouse=True)
def _needs_marian():
    require(have_marian(), "shared OPUS-MT tokenizer (NLPD_SHARED/tokenizers/opus-mt-tc-big-en-pt)")

MODELS = {"tiny-mt-a": "marian_a", "tiny-mt-b": "marian_b", "tiny-mt-c": "marian_c"}
PAIRS = {"tiny-mt-a": ("en", "pt"), "tiny-mt-b": ("en", "es"), "tiny-mt-c": ("de", "pt")}


def golden(folder):
    return json.loads((MARIAN / folder / "golden.json").read_text())


def golden_texts(folder):
    return [c["text"] for c in golden(folder)["cases"] if c["text"]]


def ok(r):
    assert r.status == 200, f"{r!r}"
    assert r.headers.get("Content-Type", "").startswith("application/json")
    return r.json()


_cli_cache = {}


def cli_translations(folder, tmp_base, *opts):
    """nlpd-cli translate on the golden texts: [{"translation", "ids", ...}] (cached)."""
    key = (folder, opts)
    if key not in _cli_cache:
        d = marian_folder(folder, tmp_base)
        _cli_cache[key] = cli_json("translate", *opts, d, *golden_texts(folder))
    return _cli_cache[key]


@pytest.fixture(scope="module")
def mt_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("marian-cli")


# ------------------------------------------------------------------ basics

def test_single_by_pair(api):
    r = api.post("/v1/translate", {"text": "Good morning.", "source": "en", "target": "pt"},
                 headers={"X-Request-Id": "it-translate-1"})
    j = ok(r)
    assert r.headers.get("X-Request-Id") == "it-translate-1"
    assert j["model"] == "tiny-mt-a" and isinstance(j["version"], str) and j["version"]
    assert j["source"] == "en" and j["target"] == "pt"
    assert isinstance(j["translation"], str)
    assert "translations" not in j and "warnings" not in j


def test_list_equals_singles(api):
    texts = golden_texts("marian_b")[:6]
    j = ok(api.post("/v1/translate", {"texts": texts, "source": "en", "target": "es"}))
    assert j["model"] == "tiny-mt-b"
    assert isinstance(j["translations"], list) and len(j["translations"]) == len(texts)
    assert "translation" not in j
    for t, got in zip(texts, j["translations"], strict=True):
        one = ok(api.post("/v1/translate", {"text": t, "source": "en", "target": "es"}))
        assert one["translation"] == got, f"{t!r}: list and single differ"


@pytest.mark.parametrize("model", sorted(MODELS))
def test_model_by_name(api, model):
    j = ok(api.post("/v1/translate", {"text": "Hello world!", "model": model}))
    assert j["model"] == model
    assert (j["source"], j["target"]) == PAIRS[model]
    ms = {m["name"]: m for m in api.get("/v1/models").ok().json()["models"]}
    assert j["version"] == ms[model]["version"]


def test_pair_selects_model(api):
    for (src, tgt), model in [(("en", "pt"), "tiny-mt-a"), (("en", "es"), "tiny-mt-b"),
                              (("de", "pt"), "tiny-mt-c"), (("EN", "Es"), "tiny-mt-b")]:
        j = ok(api.post("/v1/translate", {"text": "Hello", "source": src, "target": tgt}))
        assert j["model"] == model, f"{src}->{tgt}: served by {j['model']}, want {model}"
    # A name and a pair that agree; a name and a pair that do not.
    ok(api.post("/v1/translate", {"text": "Hello", "model": "tiny-mt-c", "source": "de"}))
    r = api.post("/v1/translate", {"text": "Hello", "model": "tiny-mt-c", "source": "en"})
    j = json_error(r, 404, "model_not_found")
    assert {(p["source"], p["target"]) for p in j["error"]["supported"]} >= {("de", "pt")}
    assert all(p["model"] == "tiny-mt-c" for p in j["error"]["supported"])


def test_language_token_target(api):
    """A >>xx<< token of the vocabulary makes xx a target: the token is prepended."""
    text = "Where is the nearest train station?"
    j = ok(api.post("/v1/translate", {"text": text, "source": "en", "target": "por"}))
    assert j["model"] == "tiny-mt-a" and j["target"] == "por"
    by_hand = ok(api.post("/v1/translate", {"text": ">>por<< " + text, "model": "tiny-mt-a"}))
    assert j["translation"] == by_hand["translation"]
    m = api.get("/v1/models/tiny-mt-a").ok().json()
    pairs = m["translation"]["pairs"]
    assert pairs[0] == {"source": "en", "target": "pt"}, pairs
    assert {"source": "en", "target": "por", "token": ">>por<<"} in pairs


def test_unsupported_pair(api):
    r = api.post("/v1/translate", {"text": "Hello", "source": "en", "target": "de"})
    j = json_error(r, 404, "model_not_found")
    msg = j["error"]["message"]
    for s, t in PAIRS.values():
        assert f"{s}->{t}" in msg, f"supported pair {s}->{t} not listed: {msg}"
    sup = {(p["source"], p["target"], p["model"]) for p in j["error"]["supported"]}
    assert {(s, t, m) for m, (s, t) in PAIRS.items()} <= sup, sup
    r = api.post("/v1/translate", {"text": "Hello", "model": "no-such-model"})
    json_error(r, 404, "model_not_found")
    r = api.post("/v1/translate", {"text": "Hello", "model": "tiny-embed"})
    json_error(r, 404, "model_not_found")


def test_models_show_pairs(api):
    ms = {m["name"]: m for m in api.get("/v1/models").ok().json()["models"]}
    for name, (s, t) in PAIRS.items():
        m = ms[name]
        assert m["task"] == "translate" and m["architecture"] == "MarianMTModel"
        tr = m["translation"]
        assert tr["pairs"][0] == {"source": s, "target": t}, tr
        assert tr["max_input_tokens"] == 512
    assert ms["tiny-mt-c"]["translation"]["max_beam_size"] == 4
    assert ms["tiny-mt-c"]["translation"]["max_length"] == 64
    assert ms["tiny-mt-a"]["translation"]["default_beam_size"] == 4
    assert ms["tiny-mt-a"]["translation"]["default_max_length"] == 40


# ----------------------------------------------------------------- goldens

GOLDEN_CASES = [
    # (model, golden key, request options, nlpd-cli options)
    ("tiny-mt-a", "greedy", {"beam_size": 1}, ("--beam-size", "1")),
    ("tiny-mt-a", "beam", {"beam_size": 4}, ("--beam-size", "4")),
    ("tiny-mt-a", "beam", {}, ()),
    ("tiny-mt-a", "beam5_max8", {"beam_size": 5, "max_length": 9},
     ("--beam-size", "5", "--max-new-tokens", "8")),
    ("tiny-mt-b", "greedy", {"beam_size": 1}, ("--beam-size", "1")),
    ("tiny-mt-b", "beam", {"beam_size": 4}, ("--beam-size", "4")),
    ("tiny-mt-c", "greedy", {"beam_size": 1}, ("--beam-size", "1")),
    ("tiny-mt-c", "beam", {}, ()),
]


@pytest.mark.parametrize("model,key,req,cli", GOLDEN_CASES,
                         ids=[f"{c[0]}-{c[1]}-{'-'.join(map(str, c[2].values())) or 'default'}"
                              for c in GOLDEN_CASES])
def test_generate_goldens(api, mt_dir, model, key, req, cli):
    """Every golden sentence, in one list request: the text whose ids are generate()'s."""
    folder = MODELS[model]
    cases = [c for c in golden(folder)["cases"] if c["text"]]
    want = cli_translations(folder, mt_dir, *cli)
    for c, w in zip(cases, want, strict=True):
        assert w["ids"] == c[key], f"nlpd-cli ids for {c['text']!r} differ from the golden {key}"
    j = ok(api.post("/v1/translate", dict(req, texts=[c["text"] for c in cases], model=model)))
    got = j["translations"]
    assert len(got) == len(cases)
    bad = [(c["text"], g, w["translation"]) for c, g, w in zip(cases, got, want, strict=True)
           if g != w["translation"]]
    assert not bad, f"{len(bad)} of {len(cases)} translations differ from generate(), e.g. {bad[:2]}"


# -------------------------------------------------------------- truncation

def test_truncation_warning(api):
    long = "word " * 700  # ~700 tokens > the model's 512
    j = ok(api.post("/v1/translate", {"text": long, "model": "tiny-mt-b", "beam_size": 1}))
    assert isinstance(j["translation"], str)
    (w,) = j["warnings"]
    assert w["index"] == 0 and w["code"] == "truncated" and "512" in w["message"], w
    j = ok(api.post("/v1/translate", {"texts": ["short", long], "model": "tiny-mt-b",
                                      "beam_size": 1}))
    assert len(j["translations"]) == 2
    assert [w["index"] for w in j["warnings"]] == [1], j["warnings"]


# ---------------------------------------------------------------- batching

N = 32


def test_batching_invariance(api):
    """Each sentence translates identically alone and inside a burst of 32 concurrent
    requests (greedy and beam 4 mixed: each option set batches on its own)."""
    texts = golden_texts("marian_a")[:N // 2]
    bodies = [{"text": t, "source": "en", "target": "pt", "beam_size": b}
              for b in (1, 4) for t in texts]
    alone = [ok(api.post("/v1/translate", b)) for b in bodies]
    s0 = scrape(api)
    together = [ok(r) for r in burst(api, "/v1/translate", bodies)]
    s1 = scrape(api)
    for i, (a, t) in enumerate(zip(alone, together, strict=True)):
        d = same_result(a, t)
        assert d is None, f"request #{i} ({bodies[i]}): alone differs from the burst: {d}"
    batches = metric(s1, "nlpd_batch_size_count", model="tiny-mt-a") - \
        metric(s0, "nlpd_batch_size_count", model="tiny-mt-a")
    seqs = metric(s1, "nlpd_batch_size_sum", model="tiny-mt-a") - \
        metric(s0, "nlpd_batch_size_sum", model="tiny-mt-a")
    assert seqs >= N and 1 <= batches < N, \
        f"the burst of {N} ran in {batches} batches ({seqs} sequences): nothing was batched"


# ------------------------------------------------------------------ errors

BAD = [
    {"text": "x", "source": "en", "target": "pt", "beam_size": 0},
    {"text": "x", "source": "en", "target": "pt", "beam_size": 65},
    {"text": "x", "source": "en", "target": "pt", "beam_size": "4"},
    {"text": "x", "source": "en", "target": "pt", "beam_size": 1.5},
    {"text": "x", "source": "en", "target": "pt", "max_length": 1},
    {"text": "x", "source": "en", "target": "pt", "max_length": 5000},
    {"text": "x", "source": "en"},
    {"text": "x", "target": "pt"},
    {"text": "x", "source": "en", "target": 7},
    {"text": "x", "source": "en", "target": "p t"},
    {"text": "", "source": "en", "target": "pt"},
    {"texts": [], "source": "en", "target": "pt"},
    {"texts": ["a", None], "source": "en", "target": "pt"},
    {"text": "x", "source": "en", "target": "pt", "top_k": 1},
    {"text": "x", "model": "tiny-mt-c", "beam_size": 5},   # over its max_beam_size 4
    {"text": "x", "model": "tiny-mt-c", "max_length": 65},  # over its max_length 64
]


@pytest.mark.parametrize("body", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_fields_422(api, body):
    json_error(api.post("/v1/translate", body), 422, "invalid_field")


def test_invalid_utf8_and_limits(api):
    r = api.post("/v1/translate", b'{"text": "\xc3\x28", "source": "en", "target": "pt"}')
    json_error(r, 422, "invalid_utf8")
    r = api.post("/v1/translate", {"texts": ["a"] * 65, "source": "en", "target": "pt"})
    json_error(r, 413, "too_many_texts")
