/* arena.h - per-context activation memory: one backend buffer, bump-allocated,
 * reset after each batch (DESIGN §3 "Memory"). */
#ifndef NLPD_ARENA_H
#define NLPD_ARENA_H

#include <stddef.h>

#include "backend/backend.h"

typedef struct eng_arena {
    eng_backend *be;
    char *base;
    size_t cap, used;
    size_t peak; /* largest reservation asked for since init or the last trim */
} eng_arena;

void eng_arena_init(eng_arena *a, eng_backend *be);
void eng_arena_close(eng_arena *a);
/* Make room for `bytes` (plus alignment slack) and reset; ENG_ENOMEM on failure. */
int eng_arena_reserve(eng_arena *a, size_t bytes);
/* Shrinks the buffer to at most keep bytes (contents are not kept: call between
 * batches) and resets peak; a failed smaller allocation leaves no buffer. */
void eng_arena_trim(eng_arena *a, size_t keep);
/* 64-byte aligned slice of the reserved buffer; NULL when it does not fit
 * (a programming error: reserve computes the need up front). */
void *eng_arena_alloc(eng_arena *a, size_t bytes);
/* Bytes eng_arena_alloc consumes for `bytes` (for computing reservations). */
size_t eng_arena_need(size_t bytes);

#endif
