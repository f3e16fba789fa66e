/* arena.c - bump allocator over one backend buffer. */
#include "core/arena.h"

#include "nlpd_engine.h"

#define ARENA_ALIGN 64

void eng_arena_init(eng_arena *a, eng_backend *be)
{
    a->be = be;
    a->base = NULL;
    a->cap = a->used = a->peak = 0;
}

void eng_arena_close(eng_arena *a)
{
    if (a->base)
        a->be->ops->free(a->be, a->base);
    a->base = NULL;
    a->cap = a->used = 0;
}

size_t eng_arena_need(size_t bytes)
{
    return (bytes + ARENA_ALIGN - 1) / ARENA_ALIGN * ARENA_ALIGN;
}

int eng_arena_reserve(eng_arena *a, size_t bytes)
{
    a->used = 0;
    if (bytes > a->peak)
        a->peak = bytes;
    if (bytes <= a->cap)
        return ENG_OK;
    /* Grow geometrically so a slowly rising peak does not reallocate each batch. */
    size_t cap = a->cap * 3 / 2 > bytes ? a->cap * 3 / 2 : bytes;
    eng_arena_close(a);
    a->base = a->be->ops->alloc(a->be, cap);
    if (!a->base)
        return ENG_ENOMEM;
    a->cap = cap;
    return ENG_OK;
}

void eng_arena_trim(eng_arena *a, size_t keep)
{
    a->peak = 0;
    if (a->cap <= keep)
        return;
    eng_arena_close(a);
    keep = keep / ARENA_ALIGN * ARENA_ALIGN; /* the bound is a bound, not a hint */
    if (keep && (a->base = a->be->ops->alloc(a->be, keep)))
        a->cap = keep;
}

void *eng_arena_alloc(eng_arena *a, size_t bytes)
{
    size_t need = eng_arena_need(bytes);
    if (need > a->cap - a->used)
        return NULL;
    void *p = a->base + a->used;
    a->used += need;
    return p;
}
