"""Batching is invisible in the results: every text's output is identical (labels,
answers, offsets and every float; see conftest.INVARIANCE_TOL) whether it ran alone
or inside a burst of 64 concurrent requests that the batcher packs together."""
import concurrent.futures as cf
import threading

import pytest

from conftest import have_minilm, metric, require, same_result, scrape, sst2_sentences

N = 64


def texts_64():
    s = sst2_sentences()
    require(s, "SST-2 dev sentences (NLPD_SHARED/data/sst2)")
    # Varied lengths: short and long sentences interleaved.
    by_len = sorted(s, key=len)
    return [by_len[(i * 137) % len(by_len)] for i in range(N)]


def qa_64():
    out = []
    for i in range(N):
        ctx = " ".join(f"Branch {j} of the bank opened in {1950 + (i + j) % 70} in town {j + i}."
                       for j in range(1 + i % 9))
        out.append({"question": f"When did branch {i % (1 + i % 9)} open?", "context": ctx})
    return out


def burst(api, path, bodies):
    barrier = threading.Barrier(len(bodies))

    def one(b):
        barrier.wait(60)
        return api.post(path, b)

    with cf.ThreadPoolExecutor(len(bodies)) as ex:
        return list(ex.map(one, bodies))


def result_of(r):
    assert r.status == 200, f"{r!r}"
    j = r.json()
    return j["result"], j["version"]


CASES = [
    ("/v1/sentiment", "tiny-sentiment", "text"),
    ("/v1/classify", "tiny-classify", "text"),
    ("/v1/classify", "tiny-multilabel", "text"),
    ("/v1/embed", "tiny-embed", "text"),
    ("/v1/qa", "tiny-qa", "qa"),
    ("/v1/embed", "minilm", "text"),
]


@pytest.mark.parametrize("path,model,kind", CASES, ids=[c[1] for c in CASES])
def test_batching_invariance(api, path, model, kind):
    if model == "minilm":
        require(have_minilm(), "models/all-MiniLM-L6-v2 (make models)")
    if kind == "qa":
        bodies = [dict(q, model=model, top_k=2) for q in qa_64()]
    else:
        bodies = [{"text": t, "model": model} for t in texts_64()]
        if path == "/v1/classify":
            for b in bodies:
                b["top_k" if model == "tiny-classify" else "threshold"] = 3 if model == "tiny-classify" else 0.4
    alone = [result_of(api.post(path, b)) for b in bodies]

    s0 = scrape(api)
    together = [result_of(r) for r in burst(api, path, bodies)]
    s1 = scrape(api)

    bitwise = 0
    for i, (a, t) in enumerate(zip(alone, together, strict=True)):
        assert a[1] == t[1], f"version changed: {a[1]} vs {t[1]}"
        d = same_result(a[0], t[0])
        assert d is None, f"{model} input #{i}: result alone differs from the burst: {d}"
        bitwise += a[0] == t[0]
    print(f"{model}: {bitwise}/{N} results bitwise equal alone and in the burst")

    batches = metric(s1, "nlpd_batch_size_count", model=model) - metric(s0, "nlpd_batch_size_count", model=model)
    seqs = metric(s1, "nlpd_batch_size_sum", model=model) - metric(s0, "nlpd_batch_size_sum", model=model)
    assert batches >= 1 and seqs >= N, f"{model}: metrics saw {batches} batches, {seqs} sequences"
    assert batches < N, (f"{model}: the burst of {N} concurrent requests ran in {batches} batches: "
                         "nothing was batched, so invariance was not tested")


def test_list_equals_singles(api):
    """{"texts": [...]} answers each text exactly as a single request does."""
    texts = texts_64()[:16]
    j = api.post("/v1/embed", {"texts": texts, "model": "tiny-embed"}).ok().json()
    for t, res in zip(texts, j["results"], strict=True):
        one = api.post("/v1/embed", {"text": t, "model": "tiny-embed"}).ok().json()["result"]
        d = same_result(one, res)
        assert d is None, f"{t!r}: list and single results differ: {d}"


def test_many_concurrent_connections(api):
    """256 clients at once (4x a full batch): every one answered 200, none lost."""
    n = 256
    bodies = [{"text": f"client {i} says the service was {'good' if i % 2 else 'bad'}"} for i in range(n)]
    rs = burst(api, "/v1/sentiment", bodies)
    bad = [(i, r) for i, r in enumerate(rs) if r.status != 200]
    assert not bad, f"{len(bad)} of {n} concurrent requests failed, e.g. {bad[:3]}"
    ids = {r.headers.get("X-Request-Id") for r in rs}
    assert len(ids) == n, "request ids are not unique under concurrency"
