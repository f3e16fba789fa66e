/* spm_unigram.c - the unigram Viterbi of sentencepiece 0.2 (see spm_unigram.h). */
#include "tokenizers/spm_unigram.h"

#include <float.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct ug_piece {
    const char *s; /* owned by the eng_spm */
    uint32_t len;
    float score;
} ug_piece;

struct eng_unigram {
    const eng_spm *spm;
    ug_piece *pieces; /* normal pieces, indexed through slot */
    int32_t *slot;    /* open addressing: index + 1, 0 empty */
    size_t nslot;
    size_t max_len;   /* longest piece in bytes */
    float unk_score;
};

static uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 0x100000001b3ULL;
    return h;
}

static const ug_piece *find(const eng_unigram *u, const char *s, size_t n)
{
    size_t mask = u->nslot - 1;
    for (size_t i = hash_bytes(s, n) & mask; u->slot[i]; i = (i + 1) & mask) {
        const ug_piece *p = &u->pieces[u->slot[i] - 1];
        if (p->len == n && memcmp(p->s, s, n) == 0)
            return p;
    }
    return NULL;
}

int eng_unigram_new(const eng_spm *spm, eng_unigram **out)
{
    *out = NULL;
    int n = eng_spm_size(spm);
    eng_unigram *u = calloc(1, sizeof *u);
    if (!u)
        return ENG_ENOMEM;
    u->spm = spm;
    u->nslot = 16;
    while (u->nslot < (size_t)n * 2)
        u->nslot *= 2;
    u->pieces = calloc((size_t)n + 1, sizeof *u->pieces);
    u->slot = calloc(u->nslot, sizeof *u->slot);
    if (!u->pieces || !u->slot) {
        eng_unigram_free(u);
        return ENG_ENOMEM;
    }
    float min_score = FLT_MAX;
    int np = 0;
    for (int id = 0; id < n; id++) {
        const char *s;
        size_t len;
        float score;
        int kind;
        eng_spm_piece(spm, id, &s, &len, &score, &kind);
        /* unused pieces are in the library's trie but always skipped */
        if (kind != ENG_SPM_NORMAL || len == 0 || find(u, s, len))
            continue;
        min_score = score < min_score ? score : min_score;
        u->pieces[np] = (ug_piece){s, (uint32_t)len, score};
        size_t mask = u->nslot - 1, i = hash_bytes(s, len) & mask;
        while (u->slot[i])
            i = (i + 1) & mask;
        u->slot[i] = ++np;
        u->max_len = len > u->max_len ? len : u->max_len;
    }
    u->unk_score = min_score - 10.0f; /* kUnkPenalty */
    *out = u;
    return ENG_OK;
}

void eng_unigram_free(eng_unigram *u)
{
    if (!u)
        return;
    free(u->pieces);
    free(u->slot);
    free(u);
}

typedef struct ug_node {
    float score;
    int start; /* -1: not reached yet */
    int unk;   /* the best path ends with an uncovered character */
} ug_node;

int eng_unigram_segment(const eng_unigram *u, const char *norm, size_t n, eng_spm_piece_fn fn,
                        void *user)
{
    if (n == 0)
        return ENG_OK;
    if (n > (size_t)INT32_MAX / 2)
        return ENG_EINVAL;
    ug_node *best = malloc((n + 1) * sizeof *best);
    if (!best)
        return ENG_ENOMEM;
    for (size_t i = 0; i <= n; i++)
        best[i] = (ug_node){0.0f, -1, 0};
    for (size_t at = 0; at < n;) {
        static const unsigned char one_char_len[16] = {1, 1, 1, 1, 1, 1, 1, 1,
                                                       1, 1, 1, 1, 2, 2, 3, 4};
        size_t mblen = one_char_len[(unsigned char)norm[at] >> 4];
        mblen = mblen < n - at ? mblen : n - at;
        float till = best[at].score;
        int single = 0;
        size_t lim = u->max_len < n - at ? u->max_len : n - at;
        for (size_t len = 1; len <= lim; len++) {
            const ug_piece *p = find(u, norm + at, len);
            if (!p)
                continue;
            ug_node *t = &best[at + len];
            float cand = p->score + till; /* float, as 0.2 */
            if (t->start == -1 || cand > t->score) {
                t->score = cand;
                t->start = (int)at;
                t->unk = 0;
            }
            single |= len == mblen;
        }
        if (!single) {
            ug_node *t = &best[at + mblen];
            float cand = u->unk_score + till;
            if (t->start == -1 || cand > t->score) {
                t->score = cand;
                t->start = (int)at;
                t->unk = 1;
            }
        }
        at += mblen;
    }
    /* backtrack into ends[], then emit in order; the library merges runs of
     * uncovered characters into one unknown piece */
    for (size_t e = n; e > 0; e = (size_t)best[e].start) {
        size_t s = (size_t)best[e].start;
        while (best[e].unk && s > 0 && best[s].unk)
            s = (size_t)best[s].start;
        best[e].start = (int)s;
    }
    size_t count = 0;
    for (size_t e = n; e > 0; e = (size_t)best[e].start)
        count++;
    int32_t *ends = malloc(count * sizeof *ends);
    int rc = ENG_OK;
    if (!ends) {
        free(best);
        return ENG_ENOMEM;
    }
    size_t k = count;
    for (size_t e = n; e > 0; e = (size_t)best[e].start)
        ends[--k] = (int32_t)e;
    size_t start = 0;
    for (k = 0; k < count && !rc; k++) {
        rc = fn(norm + start, (size_t)ends[k] - start, user);
        start = (size_t)ends[k];
    }
    free(ends);
    free(best);
    return rc;
}

int eng_unigram_encode(const eng_unigram *u, const char *text, size_t len, eng_spm_piece_fn fn,
                       void *user)
{
    char *norm;
    size_t n;
    int rc = eng_spm_normalize(u->spm, text, len, &norm, &n);
    if (rc)
        return rc;
    rc = eng_unigram_segment(u, norm, n, fn, user);
    free(norm);
    return rc;
}
