/* beam.c - greedy and beam search reproducing transformers 4.44.2 generate()
 * (see beam.h and tests/reference/BEAM_SEARCH.md). */
#include "generate/beam.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"

/* ------------------------------------------------------- BeamHypotheses */

int eng_beam_list_init(eng_beam_list *l, int num_beams)
{
    memset(l, 0, sizeof *l);
    l->cap = num_beams;
    l->worst = 1e9;
    l->hyp = calloc((size_t)num_beams + 1, sizeof *l->hyp);
    return l->hyp ? ENG_OK : ENG_ENOMEM;
}

void eng_beam_list_free(eng_beam_list *l)
{
    for (int i = 0; l->hyp && i < l->n; i++)
        free(l->hyp[i].ids);
    free(l->hyp);
    l->hyp = NULL;
    l->n = 0;
}

int eng_beam_list_add(eng_beam_list *l, const int32_t *ids, int n, int eos, float sum_logprobs,
                      int generated_len, float length_penalty)
{
    /* Python: float(sum_logprobs) / (generated_len ** length_penalty), in double */
    double score = (double)sum_logprobs / pow((double)generated_len, (double)length_penalty);
    if (!(l->n < l->cap || score > l->worst))
        return ENG_OK;
    int32_t *copy = malloc(sizeof *copy * (size_t)(n > 0 ? n : 1));
    if (!copy)
        return ENG_ENOMEM;
    if (n)
        memcpy(copy, ids, sizeof *copy * (size_t)n);
    l->hyp[l->n++] = (eng_beam_hyp){score, copy, n, eos};
    if (l->n > l->cap) {
        /* sorted((score, index))[0] is deleted; the new worst is the next one */
        int lo = 0;
        for (int i = 1; i < l->n; i++)
            if (l->hyp[i].score < l->hyp[lo].score)
                lo = i;
        free(l->hyp[lo].ids);
        memmove(&l->hyp[lo], &l->hyp[lo + 1], sizeof *l->hyp * (size_t)(l->n - lo - 1));
        l->n--;
        double w = l->hyp[0].score;
        for (int i = 1; i < l->n; i++)
            w = l->hyp[i].score < w ? l->hyp[i].score : w;
        l->worst = w;
    } else {
        l->worst = score < l->worst ? score : l->worst;
    }
    return ENG_OK;
}

int eng_beam_list_is_done(const eng_beam_list *l, float best_sum_logprobs, int cur_len,
                          int early_stopping, float length_penalty, int max_length)
{
    if (l->n < l->cap)
        return 0;
    if (early_stopping == 1)
        return 1;
    int len = cur_len - 1; /* minus decoder_prompt_len */
    if (early_stopping == 2 && length_penalty > 0.0f)
        len = max_length - 1;
    double best = (double)best_sum_logprobs / pow((double)len, (double)length_penalty);
    return l->worst >= best;
}

const eng_beam_hyp *eng_beam_list_best(const eng_beam_list *l)
{
    const eng_beam_hyp *b = NULL;
    for (int i = 0; i < l->n; i++) /* stable sort + pop(): the last of the maxima */
        if (!b || l->hyp[i].score >= b->score)
            b = &l->hyp[i];
    return b;
}

/* ------------------------------------------------------------- search */

int eng_search_slots(int nsent, const eng_search_opts *o)
{
    return nsent * (o->num_beams > 1 ? o->num_beams : 1);
}

void eng_search_result_free(eng_search_result *r, int n)
{
    for (int i = 0; r && i < n; i++) {
        free(r[i].ids);
        r[i].ids = NULL;
        r[i].n = 0;
    }
}

/* Live hypotheses: parallel arrays, grouped by sentence (num_beams each for beam
 * search) in sentence order. hist holds each one's generated tokens. */
typedef struct live {
    int n;
    int32_t *sent, *slot, *tok;
    float *score;
    int32_t *hist; /* [cap][max_length] */
} live;

typedef struct search {
    eng_backend *be;
    const eng_decoder *d;
    const eng_search_opts *o;
    int nsent, nb, V, cap, k;
    live cur, nxt;
    float *mask_bad, *mask_eos; /* backend: 0 / -inf rows for bias_act */
    float *dev_scores, *dev_vals;
    int32_t *dev_idx;
    float *vals;
    int32_t *idx;
    eng_beam_list *lists;
    int *done;
    int32_t *claim_src, *copy_dst, *copy_src;
    char *slot_used;
} search;

static int live_alloc(live *l, int cap, int max_len)
{
    l->sent = malloc(sizeof(int32_t) * (size_t)cap);
    l->slot = malloc(sizeof(int32_t) * (size_t)cap);
    l->tok = malloc(sizeof(int32_t) * (size_t)cap);
    l->score = malloc(sizeof(float) * (size_t)cap);
    l->hist = malloc(sizeof(int32_t) * (size_t)cap * (size_t)max_len);
    return l->sent && l->slot && l->tok && l->score && l->hist ? ENG_OK : ENG_ENOMEM;
}

static void live_free(live *l)
{
    free(l->sent);
    free(l->slot);
    free(l->tok);
    free(l->score);
    free(l->hist);
}

/* A backend row of vocab zeros with -inf at ids. */
static float *make_mask(search *S, const int32_t *ids, int n)
{
    float *host = calloc((size_t)S->V, sizeof *host);
    float *dev = S->be->ops->alloc(S->be, sizeof(float) * (size_t)S->V);
    if (!host || !dev) {
        free(host);
        if (dev)
            S->be->ops->free(S->be, dev);
        return NULL;
    }
    for (int i = 0; i < n; i++)
        if (ids[i] >= 0 && ids[i] < S->V)
            host[ids[i]] = -INFINITY;
    S->be->ops->upload(S->be, dev, host, sizeof(float) * (size_t)S->V);
    free(host);
    return dev;
}

static int set_result(eng_search_result *r, const int32_t *ids, int n, int eos, int32_t eos_id,
                      float score)
{
    r->ids = malloc(sizeof(int32_t) * (size_t)(n + 1));
    if (!r->ids)
        return ENG_ENOMEM;
    if (n)
        memcpy(r->ids, ids, sizeof(int32_t) * (size_t)n);
    if (eos)
        r->ids[n++] = eos_id;
    r->n = n;
    r->score = score;
    return ENG_OK;
}

/* Top candidates of the step into S->vals / S->idx: greedy k = 1 per hypothesis,
 * beam k = 2 * num_beams per sentence over its num_beams rows. */
static int candidates(search *S, int cur_len, eng_error *err)
{
    const eng_backend_ops *op = S->be->ops;
    const eng_search_opts *o = S->o;
    live *L = &S->cur;
    float *x = S->d->step(S->d->user, L->n, L->tok, L->sent, L->slot, cur_len - 1, err);
    if (!x)
        return err && err->code ? err->code : ENG_EBACKEND;
    int beam = S->nb > 1;
    /* With renormalisation, log_softmax(log_softmax(x) + masks) = log_softmax(x + masks):
     * one pass instead of two (greedy: the argmax needs neither). */
    if (beam && !o->renormalize)
        op->gen->log_softmax(S->be, x, L->n, S->V, S->V);
    if (S->mask_bad)
        op->core->bias_act(S->be, x, S->mask_bad, L->n, S->V, ENG_ACT_NONE);
    if (S->mask_eos && cur_len < o->min_length)
        op->core->bias_act(S->be, x, S->mask_eos, L->n, S->V, ENG_ACT_NONE);
    if (beam && o->renormalize)
        op->gen->log_softmax(S->be, x, L->n, S->V, S->V);
    int groups = beam ? L->n / S->nb : L->n;
    if (beam)
        op->upload(S->be, S->dev_scores, L->score, sizeof(float) * (size_t)L->n);
    op->gen->topk(S->be, x, groups, beam ? S->nb : 1, S->V, S->V, beam ? S->dev_scores : NULL, S->k,
             S->dev_vals, S->dev_idx);
    if (op->download(S->be, S->vals, S->dev_vals, sizeof(float) * (size_t)groups * S->k) ||
        op->download(S->be, S->idx, S->dev_idx, sizeof(int32_t) * (size_t)groups * S->k) ||
        op->synchronize(S->be))
        return eng_fail(err, ENG_EBACKEND, "%s backend failed", op->name);
    return ENG_OK;
}

static int greedy(search *S, eng_search_result *out, eng_error *err)
{
    const eng_search_opts *o = S->o;
    live *L = &S->cur;
    int rc = ENG_OK;
    for (int cur_len = 1; L->n > 0 && !rc; cur_len++) {
        int forced = o->forced_eos_id >= 0 && cur_len == o->max_length - 1;
        if (cur_len > 1 && o->should_stop && o->should_stop(o->stop_arg)) {
            rc = eng_fail(err, ENG_ECANCELLED, "stopped after %d decode steps", cur_len - 1);
            break;
        }
        if (!forced && (rc = candidates(S, cur_len, err)))
            break;
        int w = 0, len = cur_len - 1; /* generated so far */
        for (int i = 0; i < L->n && !rc; i++) {
            int32_t t = forced ? o->forced_eos_id : S->idx[i] % S->V;
            int32_t *h = L->hist + (size_t)i * o->max_length;
            h[len] = t;
            if (t == o->eos_id || cur_len + 1 >= o->max_length) {
                rc = set_result(&out[L->sent[i]], h, len + 1, 0, o->eos_id, 0.0f);
                continue;
            }
            /* keep: compact in place (w <= i) */
            L->sent[w] = L->sent[i];
            L->slot[w] = L->slot[i];
            L->tok[w] = t;
            if (w != i)
                memcpy(L->hist + (size_t)w * o->max_length, h, sizeof(int32_t) * (size_t)(len + 1));
            w++;
        }
        L->n = w;
    }
    return rc;
}

/* BeamSearchScorer.process for the live sentence whose beams start at row b0 of
 * the current list, candidates c (2 * num_beams, best first). Appends the
 * sentence's next beams to S->nxt (sources in claim_src) unless it is done. */
static int process(search *S, int b0, const float *vals, const int32_t *idx, int cur_len,
                   int forced)
{
    const eng_search_opts *o = S->o;
    live *L = &S->cur, *N = &S->nxt;
    int s = L->sent[b0], nb = S->nb, len = cur_len - 1, beam_idx = 0, rc;
    int base = N->n;
    for (int rank = 0; rank < S->k && beam_idx < nb; rank++) {
        int32_t tok, src;
        float score;
        if (forced) {
            /* every beam's </s> scores its beam score + 0, all else -inf: the top
             * num_beams candidates are the beams' </s>, best first (equal scores
             * by beam order); the -inf rest never matter, since the finished list
             * is then full and the search ends */
            if (rank >= nb)
                break;
            tok = o->forced_eos_id;
            int best = -1;
            for (int j = 0; j < nb; j++) {
                int used = 0;
                for (int r = 0; r < rank; r++)
                    used |= S->claim_src[r] == j;
                if (!used && (best < 0 || L->score[b0 + j] > L->score[b0 + best]))
                    best = j;
            }
            S->claim_src[rank] = best; /* scratch: beams already ranked */
            src = best;
            score = L->score[b0 + best];
        } else {
            tok = idx[rank] % S->V;
            src = idx[rank] / S->V;
            score = vals[rank];
        }
        const int32_t *h = L->hist + (size_t)(b0 + src) * o->max_length;
        if (tok == o->eos_id) {
            if (rank >= nb)
                continue;
            /* generated_len = cur_len + 1 - 1: the tokens so far plus </s> */
            if ((rc = eng_beam_list_add(&S->lists[s], h, len, 1, score, len + 1,
                                        o->length_penalty)))
                return rc;
        } else {
            int j = N->n++;
            N->sent[j] = s;
            N->tok[j] = tok;
            N->score[j] = score;
            N->slot[j] = b0 + src; /* old row for now; slots are assigned later */
            int32_t *nh = N->hist + (size_t)j * o->max_length;
            memcpy(nh, h, sizeof(int32_t) * (size_t)len);
            nh[len] = tok;
            beam_idx++;
        }
    }
    float best = forced ? L->score[b0 + S->claim_src[0]] : vals[0];
    S->done[s] = S->done[s] || eng_beam_list_is_done(&S->lists[s], best, cur_len + 1,
                                                    o->early_stopping, o->length_penalty,
                                                    o->max_length);
    if (S->done[s] || forced)
        N->n = base; /* the sentence leaves the batch */
    else if (beam_idx < nb)
        return ENG_EINVAL; /* cannot happen: 2 * num_beams candidates, at most num_beams </s> */
    return ENG_OK;
}

/* New beams took their source's row index in slot[]; give each a KV slot: the
 * source's own when it is the first to claim it, else a free one with a copy. */
static int assign_slots(search *S, int rows, eng_error *err)
{
    live *L = &S->cur, *N = &S->nxt;
    int nslots = S->cap, ncopy = 0;
    memset(S->slot_used, 0, (size_t)nslots);
    int32_t *first = S->claim_src; /* old row -> claimed? (reused scratch) */
    for (int i = 0; i < L->n; i++)
        first[i] = 0;
    for (int j = 0; j < N->n; j++) {
        int src = N->slot[j];
        if (!first[src]) {
            first[src] = 1;
            N->slot[j] = L->slot[src];
            S->slot_used[N->slot[j]] = 1;
        } else {
            N->slot[j] = -1 - L->slot[src]; /* needs a copy of that slot */
        }
    }
    int free_at = 0;
    for (int j = 0; j < N->n; j++) {
        if (N->slot[j] >= 0)
            continue;
        while (S->slot_used[free_at])
            free_at++;
        S->copy_dst[ncopy] = free_at;
        S->copy_src[ncopy++] = -1 - N->slot[j];
        N->slot[j] = free_at;
        S->slot_used[free_at] = 1;
    }
    if (ncopy)
        return S->d->copy_slots(S->d->user, ncopy, S->copy_dst, S->copy_src, rows, err);
    return ENG_OK;
}

static int beam(search *S, eng_search_result *out, eng_error *err)
{
    const eng_search_opts *o = S->o;
    int rc = ENG_OK, cur_len = 1, nb = S->nb, hit_max = 0;
    for (; S->cur.n > 0; cur_len++) {
        int forced = o->forced_eos_id >= 0 && cur_len == o->max_length - 1;
        if (cur_len > 1 && o->should_stop && o->should_stop(o->stop_arg))
            return eng_fail(err, ENG_ECANCELLED, "stopped after %d decode steps", cur_len - 1);
        if (!forced && (rc = candidates(S, cur_len, err)))
            return rc;
        S->nxt.n = 0;
        for (int g = 0; g * nb < S->cur.n; g++)
            if ((rc = process(S, g * nb, S->vals + (size_t)g * S->k, S->idx + (size_t)g * S->k,
                              cur_len, forced)))
                return rc == ENG_ENOMEM ? eng_fail(err, rc, "out of memory") : rc;
        if (cur_len + 1 >= o->max_length) {
            hit_max = 1; /* the beams in nxt are finalised below */
            break;
        }
        if ((rc = assign_slots(S, cur_len, err)))
            return rc;
        live t = S->cur;
        S->cur = S->nxt;
        S->nxt = t;
    }
    /* finalize(): sentences not done add their live beams (no </s>), in order;
     * generated_len = the max_length - 1 tokens they hold */
    for (int j = 0; hit_max && j < S->nxt.n; j++) {
        live *N = &S->nxt;
        int s = N->sent[j];
        if (S->done[s])
            continue;
        rc = eng_beam_list_add(&S->lists[s], N->hist + (size_t)j * o->max_length, cur_len, 0,
                               N->score[j], cur_len, o->length_penalty);
        if (rc)
            return eng_fail(err, rc, "out of memory");
    }
    for (int s = 0; s < S->nsent; s++) {
        const eng_beam_hyp *b = eng_beam_list_best(&S->lists[s]);
        if (!b)
            return eng_fail(err, ENG_EINVAL, "beam search ended without a hypothesis");
        if ((rc = set_result(&out[s], b->ids, b->n, b->eos, o->eos_id, (float)b->score)))
            return eng_fail(err, rc, "out of memory");
    }
    return ENG_OK;
}

int eng_search(eng_backend *be, const eng_decoder *d, int nsent, const eng_search_opts *o,
               eng_search_result *out, eng_error *err)
{
    if (nsent <= 0)
        return ENG_OK;
    if (o->max_length < 2 || o->num_beams < 1 || o->num_beams > 64)
        return eng_fail(err, ENG_EINVAL, "max_length must be >= 2 and num_beams in [1, 64]");
    memset(out, 0, sizeof *out * (size_t)nsent);
    search S = {.be = be, .d = d, .o = o, .nsent = nsent, .V = d->vocab};
    S.nb = o->num_beams;
    S.cap = eng_search_slots(nsent, o);
    S.k = S.nb > 1 ? 2 * S.nb : 1;
    int groups = S.nb > 1 ? nsent : S.cap, rc = ENG_ENOMEM;
    const eng_backend_ops *op = be->ops;
    if (live_alloc(&S.cur, S.cap, o->max_length) || live_alloc(&S.nxt, S.cap, o->max_length))
        goto done;
    S.vals = malloc(sizeof(float) * (size_t)groups * S.k);
    S.idx = malloc(sizeof(int32_t) * (size_t)groups * S.k);
    S.dev_vals = op->alloc(be, sizeof(float) * (size_t)groups * S.k);
    S.dev_idx = op->alloc(be, sizeof(int32_t) * (size_t)groups * S.k);
    S.dev_scores = op->alloc(be, sizeof(float) * (size_t)S.cap);
    S.lists = calloc((size_t)nsent, sizeof *S.lists);
    S.done = calloc((size_t)nsent, sizeof *S.done);
    S.claim_src = malloc(sizeof(int32_t) * (size_t)(S.cap > S.k ? S.cap : S.k));
    S.copy_dst = malloc(sizeof(int32_t) * (size_t)S.cap);
    S.copy_src = malloc(sizeof(int32_t) * (size_t)S.cap);
    S.slot_used = malloc((size_t)S.cap);
    if (!S.vals || !S.idx || !S.dev_vals || !S.dev_idx || !S.dev_scores || !S.lists ||
        !S.done || !S.claim_src || !S.copy_dst || !S.copy_src || !S.slot_used)
        goto done;
    for (int s = 0; s < nsent; s++)
        if (eng_beam_list_init(&S.lists[s], S.nb))
            goto done;
    if (o->n_bad && !(S.mask_bad = make_mask(&S, o->bad_ids, o->n_bad)))
        goto done;
    if (o->min_length > 1 && !(S.mask_eos = make_mask(&S, &o->eos_id, 1)))
        goto done;
    /* every sentence starts with num_beams copies of [start]; beams 1.. at -1e9 so
     * that the first step expands beam 0 only */
    for (int i = 0; i < S.cap; i++) {
        S.cur.sent[i] = i / S.nb;
        S.cur.slot[i] = i;
        S.cur.tok[i] = o->start_id;
        S.cur.score[i] = i % S.nb ? -1e9f : 0.0f;
    }
    S.cur.n = S.cap;
    rc = S.nb > 1 ? beam(&S, out, err) : greedy(&S, out, err);
    if (rc)
        eng_search_result_free(out, nsent);
done:
    if (rc == ENG_ENOMEM && (!err || err->code != ENG_ENOMEM))
        eng_fail(err, rc, "out of memory for the search over %d sentences", nsent);
    for (int s = 0; S.lists && s < nsent; s++)
        eng_beam_list_free(&S.lists[s]);
    free(S.lists);
    free(S.done);
    live_free(&S.cur);
    live_free(&S.nxt);
    free(S.vals);
    free(S.idx);
    free(S.claim_src);
    free(S.copy_dst);
    free(S.copy_src);
    free(S.slot_used);
    if (S.dev_vals)
        op->free(be, S.dev_vals);
    if (S.dev_idx)
        op->free(be, S.dev_idx);
    if (S.dev_scores)
        op->free(be, S.dev_scores);
    if (S.mask_bad)
        op->free(be, S.mask_bad);
    if (S.mask_eos)
        op->free(be, S.mask_eos);
    return rc;
}
