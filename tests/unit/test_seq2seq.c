/* test_seq2seq.c - the decoding ops of the backend (each against a naive
 * reference), transformers' BeamHypotheses bookkeeping, and the search
 * (engine/generate/beam.c) on a toy decoder: a hand-worked case where greedy and beam
 * search differ, and random cases against an independent slot-free beam search
 * (which checks the KV-slot handoffs and copies), alone and batched. */
#include "test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "generate/beam.h"

static uint64_t rng_state = 88172645463325252ULL;

static float frand(void) /* [-1, 1) */
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((rng_state >> 40) / 8388608.0 - 1.0);
}

static eng_backend *backend(void)
{
    eng_backend *be = eng_backend_cpu_new(2);
    assert_non_null(be);
    return be;
}

/* ------------------------------------------------------------------ ops */

static void test_embed_scaled(void **state)
{
    (void)state;
    eng_backend *be = backend();
    enum { V = 7, P = 5, D = 9, T = 6 };
    float table[V * D], pos[P * D], out[T * D];
    int32_t ids[T] = {3, 0, 6, 3, 1, 5}, pids[T] = {0, 1, 2, 4, 3, 0};
    for (int i = 0; i < V * D; i++)
        table[i] = frand() * 3;
    for (int i = 0; i < P * D; i++)
        pos[i] = frand();
    be->ops->embed_scaled(be, out, table, 2.8284271f, pos, ids, pids, T, D);
    for (int t = 0; t < T; t++)
        for (int c = 0; c < D; c++) {
            float e = table[ids[t] * D + c] * 2.8284271f;
            assert_true(out[t * D + c] == e + pos[pids[t] * D + c]); /* bitwise */
        }
    be->ops->destroy(be);
}

/* Naive attention in double for sequence s, head h. */
static void ref_attention(float *out, int out_ld, const float *q, int q_ld, const float *k,
                          int k_ld, const float *v, int v_ld, int q0, int nq, int k0, int nk,
                          int h, int hd, float scale, int causal)
{
    for (int i = 0; i < nq; i++) {
        int n = causal ? i + nk - nq + 1 : nk;
        double p[256], mx = -1e300, sum = 0;
        for (int j = 0; j < n; j++) {
            double d = 0;
            for (int c = 0; c < hd; c++)
                d += (double)q[(q0 + i) * q_ld + h * hd + c] * k[(k0 + j) * k_ld + h * hd + c];
            p[j] = d * scale;
            mx = p[j] > mx ? p[j] : mx;
        }
        for (int j = 0; j < n; j++)
            sum += (p[j] = exp(p[j] - mx));
        for (int c = 0; c < hd; c++) {
            double acc = 0;
            for (int j = 0; j < n; j++)
                acc += p[j] / sum * v[(k0 + j) * v_ld + h * hd + c];
            out[(q0 + i) * out_ld + h * hd + c] = (float)acc;
        }
    }
}

static void test_attention_kv(void **state)
{
    (void)state;
    eng_backend *be = backend();
    enum { H = 3, HD = 12, D = H * HD, NS = 4, ROWS = 64 };
    /* q has 1, 1, 3, 2 rows; keys live anywhere in a 64-row cache */
    int32_t q_off[NS + 1] = {0, 1, 2, 5, 7}, kv_start[NS] = {40, 3, 17, 0},
            kv_len[NS] = {9, 1, 20, 5};
    float *q = malloc(sizeof(float) * 7 * D), *k = malloc(sizeof(float) * ROWS * 2 * D),
          *out = calloc(7 * D, sizeof(float)), *ref = calloc(7 * D, sizeof(float));
    for (int i = 0; i < 7 * D; i++)
        q[i] = frand() * 2;
    for (int i = 0; i < ROWS * 2 * D; i++)
        k[i] = frand() * 2;
    for (int causal = 0; causal < 2; causal++) {
        /* k and v interleaved in one buffer (row stride 2D), as the cross K/V */
        be->ops->attention_kv(be, out, D, q, D, k, 2 * D, k + D, 2 * D, q_off, kv_start, kv_len,
                              NS, H, HD, 0.29f, causal);
        for (int s = 0; s < NS; s++)
            for (int h = 0; h < H; h++)
                ref_attention(ref, D, q, D, k, 2 * D, k + D, 2 * D, q_off[s],
                              q_off[s + 1] - q_off[s], kv_start[s], kv_len[s], h, HD, 0.29f,
                              causal);
        float d = tu_max_abs_diff(out, ref, 7 * D);
        printf("  attention_kv causal=%d: max |diff| %.3g\n", causal, d);
        assert_true(d < 2e-6f);
    }
    free(q), free(k), free(out), free(ref);
    be->ops->destroy(be);
}

static void test_copy_rows(void **state)
{
    (void)state;
    eng_backend *be = backend();
    float src[6 * 10], dst[6 * 12];
    for (int i = 0; i < 60; i++)
        src[i] = (float)i;
    for (int i = 0; i < 72; i++)
        dst[i] = -1;
    int32_t d_rows[3] = {5, 0, 2}, s_rows[3] = {1, 4, 4};
    be->ops->copy_rows(be, dst, 12, d_rows, src, 10, s_rows, 3, 7);
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 12; j++)
            assert_true(dst[d_rows[i] * 12 + j] == (j < 7 ? src[s_rows[i] * 10 + j] : -1));
    assert_true(dst[1 * 12] == -1 && dst[3 * 12] == -1);
    /* NULL index arrays: row i to row i */
    be->ops->copy_rows(be, dst, 12, NULL, src, 10, NULL, 2, 10);
    assert_true(dst[12 + 9] == src[19] && dst[0] == 0);
    be->ops->destroy(be);
}

static void test_log_softmax(void **state)
{
    (void)state;
    eng_backend *be = backend();
    enum { R = 3, C = 3000, LD = 3008 };
    float *x = malloc(sizeof(float) * R * LD);
    for (int i = 0; i < R * LD; i++)
        x[i] = frand() * 20;
    for (int c = 0; c < C; c += 3)
        x[LD + c] = -INFINITY; /* masked entries in row 1 */
    for (int c = 0; c < C; c++)
        x[2 * LD + c] = -INFINITY; /* row 2 entirely masked */
    float *ref = malloc(sizeof(float) * R * LD);
    memcpy(ref, x, sizeof(float) * R * LD);
    be->ops->log_softmax(be, x, R, C, LD);
    for (int r = 0; r < 2; r++) {
        double mx = -1e300, sum = 0;
        for (int c = 0; c < C; c++)
            mx = ref[r * LD + c] > mx ? ref[r * LD + c] : mx;
        for (int c = 0; c < C; c++)
            sum += exp(ref[r * LD + c] - mx);
        for (int c = 0; c < C; c++) {
            double want = ref[r * LD + c] - mx - log(sum);
            float got = x[r * LD + c];
            if (isinf(want))
                assert_true(isinf(got) && got < 0);
            else
                assert_true(fabs(got - want) < 2e-5);
        }
        assert_true(x[r * LD + C] == ref[r * LD + C]); /* padding untouched */
    }
    for (int c = 0; c < C; c++)
        assert_true(isinf(x[2 * LD + c]) && x[2 * LD + c] < 0);
    free(x), free(ref);
    be->ops->destroy(be);
}

static void test_topk(void **state)
{
    (void)state;
    eng_backend *be = backend();
    enum { G = 3, RPG = 4, C = 50, K = 8 };
    float *x = malloc(sizeof(float) * G * RPG * C), add[G * RPG];
    for (int i = 0; i < G * RPG * C; i++)
        x[i] = (float)(int)(frand() * 6); /* many ties */
    for (int r = 0; r < G * RPG; r++)
        add[r] = r % 2 ? 0.5f : 0.0f;
    float vals[G * K];
    int32_t idx[G * K];
    be->ops->topk(be, x, G, RPG, C, C, add, K, vals, idx);
    for (int g = 0; g < G; g++) {
        /* reference: selection by (value desc, index asc) */
        int taken[RPG * C] = {0};
        for (int j = 0; j < K; j++) {
            int best = -1;
            float bv = 0;
            for (int f = 0; f < RPG * C; f++) {
                float v = x[(g * RPG + f / C) * C + f % C] + add[g * RPG + f / C];
                if (!taken[f] && (best < 0 || v > bv))
                    best = f, bv = v;
            }
            taken[best] = 1;
            assert_int_equal(idx[g * K + j], best);
            assert_true(vals[g * K + j] == bv);
        }
    }
    /* k = 1 per row, no row_add: argmax, first index of the maximum */
    float row[6] = {1, 5, 2, 5, -INFINITY, 0};
    be->ops->topk(be, row, 1, 1, 6, 6, NULL, 1, vals, idx);
    assert_int_equal(idx[0], 1);
    free(x);
    be->ops->destroy(be);
}

static void test_bias_silu(void **state)
{
    (void)state;
    eng_backend *be = backend();
    enum { R = 5, C = 37 };
    float x[R * C], b[C], ref[R * C];
    for (int i = 0; i < C; i++)
        b[i] = frand();
    for (int i = 0; i < R * C; i++) {
        x[i] = frand() * 12;
        double y = (double)x[i] + b[i % C];
        ref[i] = (float)(y / (1 + exp(-y)));
    }
    x[0] = 100.0f, ref[0] = 100.0f + b[0];
    x[1] = -100.0f, ref[1] = 0.0f;
    be->ops->bias_silu(be, x, b, R, C);
    for (int i = 0; i < R * C; i++)
        assert_true(fabsf(x[i] - ref[i]) <= 2e-6f * (1 + fabsf(ref[i])));
    be->ops->destroy(be);
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
        cmocka_unit_test(test_embed_scaled),
        cmocka_unit_test(test_attention_kv),
        cmocka_unit_test(test_copy_rows),
        cmocka_unit_test(test_log_softmax),
        cmocka_unit_test(test_topk),
        cmocka_unit_test(test_bias_silu),
        cmocka_unit_test(test_beam_list),
        cmocka_unit_test(test_search_hand),
        cmocka_unit_test(test_search_random),
    };
    TEST_GROUP_RETURN(t);
}
