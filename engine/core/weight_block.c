/* weight_block.c - see weight_block.h. */
#include "core/weight_block.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "core/util.h"

void eng_wplan_add(eng_wplan *p, const float **dst, int fused, int optional, int64_t rows,
                   int64_t cols, const char *fmt, ...)
{
    if (p->n == p->cap) {
        int cap = p->cap ? p->cap * 2 : 64;
        eng_wplan_entry *e = realloc(p->e, (size_t)cap * sizeof *e);
        if (!e) {
            p->fail = 1;
            return;
        }
        p->e = e;
        p->cap = cap;
    }
    eng_wplan_entry *e = &p->e[p->n++];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->name, sizeof e->name, fmt, ap);
    va_end(ap);
    e->alt_suffix = NULL;
    e->rows = rows;
    e->cols = cols;
    e->off = 0;
    e->dst = dst;
    e->optional = optional;
    e->t = NULL;
    e->fused = fused;
    e->tail = fused && p->n > 1 ? p->e[p->n - 2].tail : p->tail;
    e->lin = fused ? NULL : p->lin;
    p->tail = 0;
    p->lin = NULL;
}

/* Offsets: everything else first, then (from a page boundary, so that the packed
 * layers' originals can be released) the packable linear weights. */
static void layout(eng_wplan *p)
{
    p->floats = 0;
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1) {
            p->floats = (p->floats + 1023) / 1024 * 1024; /* 4 KB */
            p->tail_off = p->floats;
        }
        for (int i = 0; i < p->n; i++) {
            eng_wplan_entry *e = &p->e[i];
            if (e->tail != pass)
                continue;
            if (!e->fused)
                p->floats = (p->floats + 15) / 16 * 16;
            e->off = p->floats;
            p->floats += (size_t)(e->rows * (e->cols ? e->cols : 1));
        }
    }
}

int eng_weight_block_map(eng_wplan *p, float **block, size_t *floats, size_t *tail_off,
                         size_t *mapped, eng_error *err)
{
    layout(p);
    *floats = p->floats;
    *tail_off = p->tail_off;
    *mapped = (p->floats * sizeof(float) + 4095) / 4096 * 4096;
    *block = mmap(NULL, *mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (*block == MAP_FAILED) {
        *block = NULL;
        return eng_fail(err, ENG_ENOMEM, "out of memory for %zu MB of weights",
                        p->floats * sizeof(float) >> 20);
    }
    return ENG_OK;
}

void eng_weight_block_release(float *block, size_t *released, size_t end)
{
    size_t to = end * sizeof(float) / 4096 * 4096;
    if (to > *released && munmap((char *)block + *released, to - *released) == 0)
        *released = to;
}
