/* weight_block.h - a model's weights in one anonymous fp32 mapping (BERT, Marian).
 * The loader plans every tensor (eng_wplan_add), then eng_weight_block_map lays them
 * out - everything else first, then from a page boundary (tail_off) the packable
 * linear weights - and maps the block. Once a layer is packed its original can be
 * released page by page (eng_weight_block_release). */
#ifndef NLPD_WEIGHT_BLOCK_H
#define NLPD_WEIGHT_BLOCK_H

#include <stddef.h>
#include <stdint.h>

#include "core/safetensors.h"
#include "nlpd_engine.h"

struct eng_linear;

/* One tensor to copy into the block. `fused` entries follow the previous one without
 * alignment padding, so that query|key|value form one [3H, H] matrix. */
typedef struct eng_wplan_entry {
    char name[168];
    const char *alt_suffix;  /* BERT's old checkpoints: LayerNorm.gamma/.beta */
    int64_t rows, cols;      /* cols 0: a vector of `rows` */
    size_t off;              /* floats, set by eng_weight_block_map */
    const float **dst;
    int optional;            /* Marian: absent means zeros or computed */
    const eng_st_tensor *t;  /* the loader's: resolved and checked */
    int fused, tail;         /* tail: a packable linear weight, laid out after the rest */
    struct eng_linear *lin;  /* tail: the layer whose weight this is */
} eng_wplan_entry;

typedef struct eng_wplan {
    eng_wplan_entry *e;
    int n, cap;
    int fail;                /* out of memory while planning */
    int tail;                /* the next eng_wplan_add is a packable linear weight */
    struct eng_linear *lin;  /* ... of this layer */
    size_t floats, tail_off; /* the layout (eng_weight_block_map) */
} eng_wplan;

/* Appends an entry named by fmt; on out of memory sets p->fail. */
void eng_wplan_add(eng_wplan *p, const float **dst, int fused, int optional, int64_t rows,
                   int64_t cols, const char *fmt, ...) __attribute__((format(printf, 7, 8)));

/* Lays p out (each entry's off, p->floats, p->tail_off) and maps a zeroed block of
 * p->floats floats, rounded up to whole pages: *block, *floats, *tail_off and *mapped
 * (bytes). Out of memory: ENG_ENOMEM in err, *block NULL. */
int eng_weight_block_map(eng_wplan *p, float **block, size_t *floats, size_t *tail_off,
                         size_t *mapped, eng_error *err);

/* Unmaps the whole pages of block from byte *released up to float `end` (rounded down
 * to a page); *released moves there when they are unmapped. */
void eng_weight_block_release(float *block, size_t *released, size_t end);

#endif
