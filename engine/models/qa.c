/* qa.c - extractive QA: windows over long contexts and span decoding, with the
 * same results as transformers' question-answering pipeline (fast tokenizer):
 * windows as the tokenizer's "only_second" truncation with stride and overflow,
 * softmax over context tokens (+ [CLS]) per window, spans start <= end <
 * start + max_answer_len ranked by p(start) * p(end), top_k per window then
 * over all windows, answers widened to whole words (align_to_words). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nlpd_engine.h"
#include "core/util.h"

void eng_qa_opts_default(eng_qa_opts *o)
{
    o->max_seq_len = 384;
    o->doc_stride = 128;
    o->max_answer_len = 15;
    o->top_k = 1;
    o->handle_impossible_answer = 0;
    o->align_to_words = 1;
    o->max_context_tokens = 0; /* ENG_QA_MAX_CONTEXT_TOKENS */
    o->max_windows = 0;     /* from max_context_tokens and max_seq_len */
    o->max_tokens = 0;      /* max_windows * max_seq_len */
    o->max_decode_work = 0; /* ENG_QA_MAX_DECODE_WORK */
}

void eng_qa_opts_for_model(const eng_model_info *info, eng_qa_opts *o)
{
    /* The pipeline's defaults (384-token windows, stride 128), capped by the
     * model; the stride never exceeds half a window. */
    eng_qa_opts_default(o);
    if (info && info->max_seq_len > 0 && o->max_seq_len > info->max_seq_len)
        o->max_seq_len = info->max_seq_len;
    if (o->doc_stride > o->max_seq_len / 2)
        o->doc_stride = o->max_seq_len / 2;
}

/* Worst-case span-search work of eng_qa_decode: every window's start positions
 * x the answer lengths tried x the top-k insertion. In double: no overflow. */
static double decode_work(int nwin, int win_len, const eng_qa_opts *o)
{
    int k = o->top_k > 0 ? o->top_k : 1, maxlen = o->max_answer_len > 0 ? o->max_answer_len : 1;
    if (maxlen > win_len)
        maxlen = win_len;
    return (double)nwin * win_len * maxlen * k;
}

static long max_decode_work(const eng_qa_opts *o)
{
    return o->max_decode_work > 0 ? o->max_decode_work : ENG_QA_MAX_DECODE_WORK;
}

void eng_qa_windows_free(eng_qa_windows *w)
{
    for (int i = 0; w->win && i < w->n; i++)
        eng_encoding_free(&w->win[i]);
    free(w->win);
    w->win = NULL;
    w->n = 0;
}

static int build_window(const eng_tokenizer *tok, const eng_encoding *q, const eng_encoding *c,
                        int from, int to, eng_encoding *w)
{
    int32_t cls = eng_tokenizer_cls_id(tok), sep = eng_tokenizer_sep_id(tok);
    eng_encoding_init(w);
    int rc = eng_encoding_reserve(w, q->n + (to - from) + 3);
    rc = rc ? rc : eng_encoding_push(w, cls, 0, -1, 0, 0);
    for (int i = 0; !rc && i < q->n; i++)
        rc = eng_encoding_push(w, q->ids[i], 0, 0, q->offsets[2 * i], q->offsets[2 * i + 1]);
    rc = rc ? rc : eng_encoding_push(w, sep, 0, -1, 0, 0);
    for (int i = from; !rc && i < to; i++)
        rc = eng_encoding_push(w, c->ids[i], 1, 1, c->offsets[2 * i], c->offsets[2 * i + 1]);
    return rc ? rc : eng_encoding_push(w, sep, 1, -1, 0, 0);
}

int eng_qa_windows_make(const eng_tokenizer *tok, const char *question, size_t qlen,
                        const char *context, size_t clen, const eng_qa_opts *o,
                        eng_qa_windows *out, eng_error *err)
{
    eng_encoding q, c;
    int rc;
    memset(out, 0, sizeof *out);
    eng_encoding_init(&q);
    eng_encoding_init(&c);
    if ((rc = eng_tokenizer_encode_raw(tok, question, qlen, &q, err)) ||
        (rc = eng_tokenizer_encode_raw(tok, context, clen, &c, err)))
        goto done;
    if (q.n == 0 || c.n == 0) {
        rc = eng_fail(err, ENG_EINVAL, "the %s has no tokens", q.n == 0 ? "question" : "context");
        goto done;
    }
    int room = o->max_seq_len - q.n - 3; /* context tokens per window */
    if (room <= 0) {
        rc = eng_fail(err, ENG_ETOOLONG, "the question has %d tokens; at most %d fit in a "
                      "window of %d tokens", q.n, o->max_seq_len - 4, o->max_seq_len);
        goto done;
    }
    if (c.n > room && (o->doc_stride < 0 || o->doc_stride >= room)) {
        rc = eng_fail(err, ENG_EINVAL, "doc_stride %d must be smaller than the %d context "
                      "tokens per window", o->doc_stride, room);
        goto done;
    }
    int step = room - o->doc_stride;
    int nwin = c.n <= room ? 1 : 1 + (c.n - room + step - 1) / step;
    /* Bounds, before anything is built: context tokens, windows per item (a fair
     * step, so that a long question cannot make a window per context token), tokens
     * over the windows, span-search work. */
    int max_ctx = o->max_context_tokens > 0 ? o->max_context_tokens : ENG_QA_MAX_CONTEXT_TOKENS;
    long half = o->max_seq_len / 2 > 0 ? o->max_seq_len / 2 : 1;
    long cap_w = o->max_windows > 0 ? o->max_windows : (max_ctx + half - 1) / half;
    if (cap_w > ENG_QA_MAX_WINDOWS && o->max_windows <= 0)
        cap_w = ENG_QA_MAX_WINDOWS;
    long fair_step = (o->max_seq_len - 3 - o->doc_stride) / 2;
    if (fair_step < 1)
        fair_step = 1;
    long fair = 1 + ((long)c.n + fair_step - 1) / fair_step;
    long allowed = fair < cap_w ? fair : cap_w;
    int win_len = q.n + 3 + (c.n < room ? c.n : room);
    long max_tokens = o->max_tokens > 0 ? o->max_tokens : cap_w * o->max_seq_len;
    if (c.n > max_ctx) {
        rc = eng_fail(err, ENG_ETOOLONG, "the context has %d tokens; at most %d are allowed",
                      c.n, max_ctx);
        goto done;
    }
    if (nwin > allowed) {
        rc = eng_fail(err, ENG_ETOOLONG, "the question (%d tokens) leaves %d context tokens per "
                      "%d-token window, so the context's %d tokens would need %d windows; at "
                      "most %ld are allowed: shorten the question or the context", q.n, room,
                      o->max_seq_len, c.n, nwin, allowed);
        goto done;
    }
    if ((long)nwin * win_len > max_tokens) {
        out->tokens = (long)nwin * win_len; /* tells the caller which bound refused */
        rc = eng_fail(err, ENG_ETOOLONG, "the question and context need %d windows of %d tokens "
                      "(%ld tokens); at most %ld are allowed", nwin, win_len,
                      (long)nwin * win_len, max_tokens);
        goto done;
    }
    if (decode_work(nwin, win_len, o) > (double)max_decode_work(o)) {
        rc = eng_fail(err, ENG_ETOOLONG, "top_k %d x max_answer_length %d over %d windows of %d "
                      "tokens is more span search than allowed (%ld): lower top_k or "
                      "max_answer_length", o->top_k, o->max_answer_len, nwin, win_len,
                      max_decode_work(o));
        goto done;
    }
    out->win = calloc((size_t)nwin, sizeof *out->win);
    if (!out->win) {
        rc = eng_fail(err, ENG_ENOMEM, "out of memory");
        goto done;
    }
    for (int i = 0; i < nwin; i++) {
        int from = i * step, to = from + room < c.n ? from + room : c.n;
        out->n = i + 1;
        if ((rc = build_window(tok, &q, &c, from, to, &out->win[i]))) {
            rc = eng_fail(err, rc, "out of memory");
            break;
        }
        out->tokens += out->win[i].n;
    }
    if (rc)
        eng_qa_windows_free(out);
done:
    eng_encoding_free(&q);
    eng_encoding_free(&c);
    return rc;
}

/* The pipeline's "desired" tokens: context tokens and [CLS]. */
static int desired(const eng_encoding *w, int t) { return t == 0 || w->seq_ids[t] == 1; }

/* Softmax over the window's candidate positions (context tokens and [CLS]);
 * others get probability 0, as the pipeline's -10000 mask underflows to 0. */
static float window_probs(const eng_encoding *w, const float *logit, float *p)
{
    float mx = -INFINITY, sum = 0;
    for (int t = 0; t < w->n; t++)
        if (desired(w, t))
            mx = fmaxf(mx, logit[t]);
    for (int t = 0; t < w->n; t++) {
        p[t] = desired(w, t) ? expf(logit[t] - mx) : 0.0f;
        sum += p[t];
    }
    for (int t = 0; t < w->n; t++)
        p[t] /= sum;
    float cls = p[0];
    p[0] = 0.0f; /* [CLS] takes part in the softmax but is never an answer */
    return cls;
}

typedef struct cand {
    float score;
    int win, s, e;
} cand;

/* Insert into a list sorted by descending score, keeping at most k. */
static void topk_insert(cand *list, int *n, int k, cand c)
{
    if (*n == k && !(c.score > list[k - 1].score))
        return;
    int i = *n < k ? (*n)++ : k - 1;
    while (i > 0 && c.score > list[i - 1].score) {
        list[i] = list[i - 1];
        i--;
    }
    list[i] = c;
}

/* Widen token span [s, e] to whole words: a word is a first piece and the
 * "##" continuation pieces after it, within the context. */
static void align_to_words(const eng_encoding *w, const eng_tokenizer *tok, int s, int e,
                           int align, int *start, int *end)
{
    if (!align || w->seq_ids[s] != 1 || w->seq_ids[e] != 1) { /* [CLS] has no word: token offsets */
        *start = w->offsets[2 * s];
        *end = w->offsets[2 * e + 1];
        return;
    }
    while (s > 0 && w->seq_ids[s - 1] == 1 &&
           strncmp(eng_tokenizer_id_token(tok, w->ids[s]), "##", 2) == 0)
        s--;
    while (e + 1 < w->n && w->seq_ids[e + 1] == 1 &&
           strncmp(eng_tokenizer_id_token(tok, w->ids[e + 1]), "##", 2) == 0)
        e++;
    *start = w->offsets[2 * s];
    *end = w->offsets[2 * e + 1];
}

int eng_qa_decode(const eng_tokenizer *tok, const eng_qa_windows *w, const float *start,
                  const float *end, const eng_qa_opts *o, eng_qa_answer *out, int *n_out)
{
    int k = o->top_k > 0 ? o->top_k : 1, maxlen = o->max_answer_len > 0 ? o->max_answer_len : 1;
    int maxn = 0;
    for (int i = 0; i < w->n; i++)
        maxn = w->win[i].n > maxn ? w->win[i].n : maxn;
    if (decode_work(w->n, maxn, o) > (double)max_decode_work(o))
        return ENG_ETOOLONG;
    if (maxlen > maxn)
        maxlen = maxn > 0 ? maxn : 1;
    cand *all = malloc(sizeof(cand) * ((size_t)k * (size_t)w->n + 1)), *best = malloc(sizeof(cand) * (size_t)k);
    float *ps = malloc(sizeof(float) * (size_t)maxn), *pe = malloc(sizeof(float) * (size_t)maxn);
    if (!all || !best || !ps || !pe) {
        free(all), free(best), free(ps), free(pe);
        return ENG_ENOMEM;
    }
    int nall = 0;
    float null_score = 1e6f;
    const float *sl = start, *el = end;
    for (int i = 0; i < w->n; i++) {
        const eng_encoding *win = &w->win[i];
        float cls_s = window_probs(win, sl, ps), cls_e = window_probs(win, el, pe);
        null_score = fminf(null_score, cls_s * cls_e);
        /* top k over the whole band first; spans touching masked tokens are
         * then dropped (so a window may give fewer than k, as in the pipeline). */
        int nb = 0;
        for (int s = 0; s < win->n; s++)
            for (int e = s; e < win->n && e < s + maxlen; e++)
                topk_insert(best, &nb, k, (cand){ps[s] * pe[e], i, s, e});
        for (int j = 0; j < nb; j++)
            if (desired(win, best[j].s) && desired(win, best[j].e))
                all[nall++] = best[j];
        sl += win->n;
        el += win->n;
    }
    if (o->handle_impossible_answer) /* the empty answer, ranked after equal scores */
        all[nall++] = (cand){null_score, -1, 0, 0};
    /* Stable merge over windows: earlier windows win ties, like Python's sorted(). */
    int n = 0;
    for (int j = 0; j < nall; j++)
        topk_insert(best, &n, k, all[j]);
    for (int j = 0; j < n; j++) {
        out[j].score = best[j].score;
        if (best[j].win < 0)
            out[j].start = out[j].end = 0;
        else
            align_to_words(&w->win[best[j].win], tok, best[j].s, best[j].e, o->align_to_words,
                           &out[j].start, &out[j].end);
    }
    *n_out = n;
    free(all), free(best), free(ps), free(pe);
    return ENG_OK;
}

int eng_qa(eng_ctx *ctx, eng_model *m, const char *question, const char *context,
           const eng_qa_opts *o, eng_qa_answer *out, int *n_out, eng_error *err)
{
    eng_qa_windows w;
    const eng_tokenizer *tok = eng_model_tokenizer(m);
    int rc = eng_qa_windows_make(tok, question, strlen(question), context, strlen(context), o,
                                 &w, err);
    if (rc)
        return rc;
    const eng_encoding **enc = malloc(sizeof *enc * (size_t)w.n);
    int ntok = 0;
    for (int i = 0; enc && i < w.n; i++) {
        enc[i] = &w.win[i];
        ntok += w.win[i].n;
    }
    float *logits = malloc(sizeof(float) * 2 * (size_t)ntok);
    if (!enc || !logits)
        rc = eng_fail(err, ENG_ENOMEM, "out of memory");
    else
        rc = eng_run_qa_logits(ctx, m, enc, w.n, logits, logits + ntok, err);
    if (!rc && (rc = eng_qa_decode(tok, &w, logits, logits + ntok, o, out, n_out)))
        rc = eng_fail(err, rc, rc == ENG_ETOOLONG ? "the span search is over max_decode_work"
                                                  : "out of memory");
    free(logits);
    free(enc);
    eng_qa_windows_free(&w);
    return rc;
}
