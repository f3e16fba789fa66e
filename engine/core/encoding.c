/* encoding.c - eng_encoding: the growable token arrays a tokenizer fills. */
#include "nlpd_engine.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

void eng_encoding_init(eng_encoding *e)
{
    memset(e, 0, sizeof *e);
}

void eng_encoding_free(eng_encoding *e)
{
    free(e->ids);
    free(e->type_ids);
    free(e->seq_ids);
    free(e->offsets);
    eng_encoding_init(e);
}

/* Grow one array to cap elements of size sz (times mul); keeps old contents. */
static int grow(int32_t **p, int cap, int mul)
{
    int32_t *np = realloc(*p, (size_t)cap * (size_t)mul * sizeof(int32_t));
    if (!np)
        return ENG_ENOMEM;
    *p = np;
    return ENG_OK;
}

int eng_encoding_reserve(eng_encoding *e, int cap)
{
    if (cap < 0)
        return ENG_EINVAL;
    if (cap <= e->cap)
        return ENG_OK;
    if (cap > INT_MAX / 4)
        return ENG_ENOMEM;
    /* Each array is grown independently; on failure the ones already grown
     * stay valid (larger), and e->cap keeps the old, still-true capacity. */
    if (grow(&e->ids, cap, 1) || grow(&e->type_ids, cap, 1) || grow(&e->seq_ids, cap, 1) ||
        grow(&e->offsets, cap, 2))
        return ENG_ENOMEM;
    e->cap = cap;
    return ENG_OK;
}

int eng_encoding_push(eng_encoding *e, int32_t id, int32_t type_id, int32_t seq_id,
                      int32_t start, int32_t end)
{
    if (e->n == e->cap) {
        int ncap = e->cap < 16 ? 32 : (e->cap > INT_MAX / 8 ? INT_MAX / 4 : e->cap * 2);
        if (ncap <= e->cap)
            return ENG_ENOMEM;
        int rc = eng_encoding_reserve(e, ncap);
        if (rc)
            return rc;
    }
    int i = e->n++;
    e->ids[i] = id;
    e->type_ids[i] = type_id;
    e->seq_ids[i] = seq_id;
    e->offsets[2 * i] = start;
    e->offsets[2 * i + 1] = end;
    return ENG_OK;
}
