/* test_seq2seq.c - transformers' BeamHypotheses bookkeeping, and the search
 * (engine/generate/beam.c) on a toy decoder: a hand-worked case where greedy and beam
 * search differ, and random cases against an independent slot-free beam search
 * (which checks the KV-slot handoffs and copies), alone and batched. The decoding
 * ops themselves are checked on every backend by test_backend_ops.c. */
#include "test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "generate/beam.h"

static eng_backend *backend(void)
{
    eng_backend *be = eng_backend_cpu_new(2);
    assert_non_null(be);
    return be;
}

/* ------------------------------------------------------- BeamHypotheses */

static void test_beam_list(void **state)
{
    (void)state;
    eng_beam_list l;
    int32_t ids[3] = {7, 8, 9};
    assert_int_equal(eng_beam_list_init(&l, 2), 0);
    assert_true(l.worst == 1e9);
    assert_null(eng_beam_list_best(&l));
    assert_int_equal(eng_beam_list_add(&l, ids, 1, 1, -2.0f, 2, 1.0f), 0); /* -1.0 */
    assert_true(l.worst == -1.0);
    assert_false(eng_beam_list_is_done(&l, -1.0f, 3, 0, 1.0f, 10)); /* not full */
    assert_int_equal(eng_beam_list_add(&l, ids, 2, 1, -1.5f, 3, 1.0f), 0); /* -0.5 */
    assert_int_equal(l.n, 2);
    assert_true(l.worst == -1.0);
    /* not better than the worst: rejected */
    assert_int_equal(eng_beam_list_add(&l, ids, 3, 0, -4.0f, 4, 1.0f), 0);
    assert_int_equal(l.n, 2);
    /* better: evicts the worst (-1.0), worst becomes -0.5 */
    assert_int_equal(eng_beam_list_add(&l, ids, 3, 0, -2.0f, 4, 1.0f), 0); /* -0.5 */
    assert_int_equal(l.n, 2);
    assert_true(l.worst == -0.5);
    /* equal maxima: the last added wins (stable sort + pop) */
    const eng_beam_hyp *b = eng_beam_list_best(&l);
    assert_int_equal(b->n, 3);
    assert_int_equal(b->eos, 0);
    /* is_done: true / heuristic / never */
    assert_true(eng_beam_list_is_done(&l, -100.0f, 5, 1, 1.0f, 10));
    assert_true(eng_beam_list_is_done(&l, -2.0f, 5, 0, 1.0f, 10));   /* -0.5 >= -2/4 */
    assert_false(eng_beam_list_is_done(&l, -1.0f, 5, 0, 1.0f, 10));  /* -0.5 < -0.25 */
    assert_false(eng_beam_list_is_done(&l, -2.0f, 5, 2, 1.0f, 10));  /* -0.5 < -2/9 */
    assert_true(eng_beam_list_is_done(&l, -5.0f, 5, 2, 1.0f, 10));   /* -0.5 >= -5/9 */
    /* length penalty: score = sum / len^lp */
    eng_beam_list_free(&l);
    assert_int_equal(eng_beam_list_init(&l, 1), 0);
    assert_int_equal(eng_beam_list_add(&l, ids, 3, 1, -4.0f, 4, 0.5f), 0);
    assert_true(fabs(l.hyp[0].score - (-2.0)) < 1e-12);
    eng_beam_list_free(&l);
}

/* ------------------------------------------------------------ toy search */

/* A toy decoder: log-probabilities from the token history each slot has
 * accumulated (so a wrong slot handoff or copy changes the results). */
enum { TV = 6, TMAXLEN = 12, TSLOTS = 64 };
enum { T_START = 0, T_EOS = 1 };

typedef struct toy {
    eng_backend *be;
    int32_t hist[TSLOTS][TMAXLEN];
    float *logits;
    int hand; /* 1: the hand-worked table; 0: pseudo-random by history */
    int copies;
} toy;

static void toy_logprobs(const toy *t, int sent, const int32_t *h, int n, float *lp)
{
    /* h[0] = start; generated tokens h[1..n) */
    double p[TV] = {0};
    if (t->hand) {
        /* tokens: 2 = a, 3 = b, 4 = c; 5 never */
        if (n == 1) {
            p[2] = 0.5, p[3] = 0.4, p[4] = 0.05, p[T_EOS] = 0.05;
        } else if (n == 2 && h[1] == 2) {
            p[T_EOS] = 0.1, p[2] = p[3] = p[4] = 0.3;
        } else if (n == 2 && h[1] == 3) {
            p[T_EOS] = 0.9, p[2] = 0.05, p[3] = 0.03, p[4] = 0.02;
        } else {
            p[T_EOS] = 0.9, p[2] = 0.04, p[3] = 0.03, p[4] = 0.03;
        }
        for (int v = 0; v < TV; v++)
            lp[v] = p[v] > 0 ? (float)log(p[v]) : -30.0f;
        return;
    }
    uint64_t x = 0x9E3779B97F4A7C15ULL * (uint64_t)(sent + 1);
    for (int i = 0; i < n; i++)
        x = (x ^ (uint64_t)(h[i] + 1)) * 0x100000001b3ULL;
    for (int v = 0; v < TV; v++) {
        x ^= x >> 29;
        x *= 0xBF58476D1CE4E5B9ULL;
        lp[v] = (float)((x >> 40) / 16777216.0 * 4.0 - 2.0);
    }
    lp[T_EOS] += 0.25f * (float)n; /* longer: likelier to stop */
}

static float *toy_step(void *user, int nh, const int32_t *tok, const int32_t *sent,
                       const int32_t *slot, int pos, eng_error *err)
{
    toy *t = user;
    (void)err;
    float *host = malloc(sizeof(float) * (size_t)nh * TV);
    for (int i = 0; i < nh; i++) {
        assert_true(slot[i] >= 0 && slot[i] < TSLOTS && pos < TMAXLEN);
        t->hist[slot[i]][pos] = tok[i];
        toy_logprobs(t, sent[i], t->hist[slot[i]], pos + 1, host + (size_t)i * TV);
    }
    t->be->ops->upload(t->be, t->logits, host, sizeof(float) * (size_t)nh * TV);
    free(host);
    return t->logits;
}

static int toy_copy(void *user, int n, const int32_t *dst, const int32_t *src, int rows,
                    eng_error *err)
{
    toy *t = user;
    (void)err;
    for (int i = 0; i < n; i++)
        memcpy(t->hist[dst[i]], t->hist[src[i]], sizeof(int32_t) * (size_t)rows);
    t->copies += n;
    return 0;
}

static void toy_init(toy *t, eng_backend *be, int hand)
{
    memset(t, 0, sizeof *t);
    t->be = be;
    t->hand = hand;
    t->logits = be->ops->alloc(be, sizeof(float) * TSLOTS * TV);
}

static eng_search_opts toy_opts(int beams)
{
    eng_search_opts o = {.num_beams = beams, .max_length = TMAXLEN, .length_penalty = 1.0f,
                         .start_id = T_START, .eos_id = T_EOS, .forced_eos_id = -1};
    return o;
}

static void test_search_hand(void **state)
{
    (void)state;
    eng_backend *be = backend();
    toy t;
    toy_init(&t, be, 1);
    eng_decoder d = {&t, TV, toy_step, toy_copy};
    eng_error err = {0};
    eng_search_result r;
    /* greedy: a (0.5), then a/b/c tie at 0.3 -> the first (a), then eos */
    eng_search_opts o = toy_opts(1);
    assert_int_equal(eng_search(be, &d, 1, &o, &r, &err), 0);
    assert_int_equal(r.n, 3);
    assert_true(r.ids[0] == 2 && r.ids[1] == 2 && r.ids[2] == T_EOS);
    eng_search_result_free(&r, 1);
    /* beam 2 (BEAM_SEARCH.md): b + eos = (log .4 + log .9) / 2 beats a a eos */
    o = toy_opts(2);
    assert_int_equal(eng_search(be, &d, 1, &o, &r, &err), 0);
    assert_int_equal(r.n, 2);
    assert_true(r.ids[0] == 3 && r.ids[1] == T_EOS);
    float want = ((float)log(0.4) + (float)log(0.9)) / 2.0f;
    assert_true(fabsf(r.score - want) < 1e-5f);
    assert_true(t.copies >= 1); /* both step-2 beams came from beam a */
    eng_search_result_free(&r, 1);
    /* forced eos at max_length - 1 = 2: one token, then eos */
    o = toy_opts(2);
    o.max_length = 3;
    o.forced_eos_id = T_EOS;
    assert_int_equal(eng_search(be, &d, 1, &o, &r, &err), 0);
    assert_int_equal(r.n, 2);
    assert_int_equal(r.ids[1], T_EOS);
    eng_search_result_free(&r, 1);
    /* bad words: a banned -> greedy takes b, then eos */
    o = toy_opts(1);
    int32_t bad = 2;
    o.bad_ids = &bad, o.n_bad = 1;
    assert_int_equal(eng_search(be, &d, 1, &o, &r, &err), 0);
    assert_true(r.n == 2 && r.ids[0] == 3 && r.ids[1] == T_EOS);
    eng_search_result_free(&r, 1);
    /* min_length 4: eos banned while cur_len < 4 */
    o = toy_opts(1);
    o.min_length = 4;
    assert_int_equal(eng_search(be, &d, 1, &o, &r, &err), 0);
    assert_true(r.n >= 4 && r.ids[r.n - 1] == T_EOS);
    eng_search_result_free(&r, 1);
    /* invalid settings */
    o = toy_opts(1);
    o.max_length = 1;
    assert_int_equal(eng_search(be, &d, 1, &o, &r, &err), ENG_EINVAL);
    be->ops->free(be, t.logits);
    be->ops->destroy(be);
}

/* ---- an independent beam search without slots: full histories, naive sort */

typedef struct rbeam {
    int32_t h[TMAXLEN]; /* h[0] = start */
    float score;
} rbeam;

static void ref_search(const toy *t, int sent, const eng_search_opts *o, int32_t *ids, int *n,
                       float *score)
{
    int B = o->num_beams, len = 1;
    rbeam beams[16], next[16];
    eng_beam_list l;
    int done = 0;
    assert_int_equal(eng_beam_list_init(&l, B), 0);
    for (int j = 0; j < B; j++) {
        beams[j].h[0] = o->start_id;
        beams[j].score = j ? -1e9f : 0.0f;
    }
    for (; !done; len++) {
        float cand[16 * TV];
        for (int j = 0; j < B; j++) {
            float lp[TV];
            toy_logprobs(t, sent, beams[j].h, len, lp);
            double mx = -1e300, s = 0;
            for (int v = 0; v < TV; v++)
                mx = lp[v] > mx ? lp[v] : mx;
            for (int v = 0; v < TV; v++)
                s += exp(lp[v] - mx);
            for (int v = 0; v < TV; v++)
                cand[j * TV + v] = (float)(lp[v] - mx - log(s)) + beams[j].score;
        }
        int taken[16 * TV] = {0}, nb = 0;
        float best = -INFINITY;
        for (int r = 0; r < 2 * B && nb < B; r++) {
            int f = -1;
            for (int c = 0; c < B * TV; c++)
                if (!taken[c] && (f < 0 || cand[c] > cand[f]))
                    f = c;
            taken[f] = 1;
            best = r == 0 ? cand[f] : best;
            int src = f / TV, tok = f % TV;
            if (tok == o->eos_id) {
                if (r < B)
                    eng_beam_list_add(&l, beams[src].h + 1, len - 1, 1, cand[f], len,
                                      o->length_penalty);
            } else {
                next[nb] = beams[src];
                next[nb].h[len] = tok;
                next[nb++].score = cand[f];
            }
        }
        done = eng_beam_list_is_done(&l, best, len + 1, o->early_stopping, o->length_penalty,
                                     o->max_length);
        memcpy(beams, next, sizeof beams);
        if (len + 1 >= o->max_length) {
            for (int j = 0; !done && j < B; j++)
                eng_beam_list_add(&l, beams[j].h + 1, len, 0, beams[j].score, len,
                                  o->length_penalty);
            break;
        }
    }
    const eng_beam_hyp *b = eng_beam_list_best(&l);
    memcpy(ids, b->ids, sizeof(int32_t) * (size_t)b->n);
    *n = b->n;
    if (b->eos)
        ids[(*n)++] = o->eos_id;
    *score = (float)b->score;
    eng_beam_list_free(&l);
}

static void test_search_random(void **state)
{
    (void)state;
    eng_backend *be = backend();
    toy t;
    toy_init(&t, be, 0);
    eng_decoder d = {&t, TV, toy_step, toy_copy};
    eng_error err = {0};
    enum { NS = 6 };
    static const struct { int beams, early; float lp; } cfg[] = {
        {2, 0, 1.0f}, {3, 1, 1.0f}, {4, 2, 0.7f}, {4, 0, 1.3f}, {5, 0, 1.0f},
    };
    int checked = 0;
    for (size_t c = 0; c < sizeof cfg / sizeof *cfg; c++) {
        eng_search_opts o = toy_opts(cfg[c].beams);
        o.early_stopping = cfg[c].early;
        o.length_penalty = cfg[c].lp;
        eng_search_result batch[NS], alone;
        assert_int_equal(eng_search(be, &d, NS, &o, batch, &err), 0);
        for (int s = 0; s < NS; s++) {
            int32_t ids[TMAXLEN + 1];
            int n;
            float score;
            ref_search(&t, s, &o, ids, &n, &score);
            if (batch[s].n != n || memcmp(batch[s].ids, ids, sizeof(int32_t) * (size_t)n))
                fail_msg("config %zu sentence %d: beam.c differs from the reference", c, s);
            assert_true(fabsf(batch[s].score - score) < 1e-5f);
            /* the same sentence alone: sentence index s only matters to the toy */
            eng_search_result all[NS];
            assert_int_equal(eng_search(be, &d, s + 1, &o, all, &err), 0);
            alone = all[s];
            assert_int_equal(alone.n, n);
            assert_memory_equal(alone.ids, ids, sizeof(int32_t) * (size_t)n);
            eng_search_result_free(all, s + 1);
            checked++;
        }
        eng_search_result_free(batch, NS);
    }
    printf("  %d random searches match the reference (%d slot copies)\n", checked, t.copies);
    assert_true(t.copies > 0);
    be->ops->free(be, t.logits);
    be->ops->destroy(be);
}

TEST_GROUP(seq2seq)
{
    static const struct CMUnitTest t[] = {
        cmocka_unit_test(test_beam_list),
        cmocka_unit_test(test_search_hand),
        cmocka_unit_test(test_search_random),
    };
    TEST_GROUP_RETURN(t);
}
