/* recent.c - see recent.h. Entries sit in one list in insertion order (the
 * oldest first: eviction and expiry take from the head) and in a chained hash
 * table by id. Each entry is one allocation: header, id, lengths, texts. */
#include "recent.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

typedef struct entry {
    struct entry *prev, *next; /* insertion order */
    struct entry *hnext;       /* hash chain */
    uint64_t hash;
    int64_t t_ms;
    int model;
    int n;
    size_t bytes;              /* what it counts against max_bytes */
    size_t *lens;              /* n */
    char *texts;               /* the n texts back to back */
    char id[];                 /* NUL-terminated */
} entry;

struct srv_recent {
    pthread_mutex_t mu;
    entry **buckets;
    size_t mask;
    entry *head, *tail;
    int n, max_n;
    size_t bytes, max_bytes;
    int64_t max_age_ms;
};

static uint64_t hash_id(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

srv_recent *srv_recent_new(int max_entries, size_t max_bytes, int64_t max_age_ms)
{
    if (max_entries < 1 || max_bytes < 1 || max_age_ms < 1)
        return NULL;
    srv_recent *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    size_t nb = 16;
    while (nb < (size_t)max_entries)
        nb *= 2;
    if (!(s->buckets = calloc(nb, sizeof *s->buckets))) {
        free(s);
        return NULL;
    }
    pthread_mutex_init(&s->mu, NULL);
    s->mask = nb - 1;
    s->max_n = max_entries;
    s->max_bytes = max_bytes;
    s->max_age_ms = max_age_ms;
    return s;
}

void srv_recent_free(srv_recent *s)
{
    if (!s)
        return;
    for (entry *e = s->head, *next; e; e = next) {
        next = e->next;
        free(e);
    }
    pthread_mutex_destroy(&s->mu);
    free(s->buckets);
    free(s);
}

static entry **chain_slot(srv_recent *s, const char *id, uint64_t h)
{
    entry **p = &s->buckets[h & s->mask];
    while (*p && ((*p)->hash != h || strcmp((*p)->id, id) != 0))
        p = &(*p)->hnext;
    return p;
}

static void unlink_entry(srv_recent *s, entry *e)
{
    entry **p = chain_slot(s, e->id, e->hash);
    if (*p == e)
        *p = e->hnext;
    if (e->prev)
        e->prev->next = e->next;
    else
        s->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        s->tail = e->prev;
    s->n--;
    s->bytes -= e->bytes;
    free(e);
}

static int expired(const srv_recent *s, const entry *e, int64_t now_ms)
{
    return now_ms - e->t_ms >= s->max_age_ms;
}

/* Drop expired entries from the head (insertion order is close to time order:
 * entries that expire behind a younger head go when the head does, and get()
 * checks each entry's own age). */
static void expire(srv_recent *s, int64_t now_ms)
{
    while (s->head && expired(s, s->head, now_ms))
        unlink_entry(s, s->head);
}

int srv_recent_put(srv_recent *s, const char *id, int model, int n, const char *const *texts,
                   const size_t *lens, int64_t now_ms)
{
    size_t idlen = id ? strlen(id) : 0;
    if (!idlen || n < 1)
        return -1;
    size_t text_bytes = 0;
    for (int i = 0; i < n; i++)
        text_bytes += lens[i];
    size_t bytes = SRV_RECENT_ENTRY_OVERHEAD + idlen + (size_t)n * sizeof(size_t) + text_bytes;
    if (bytes > s->max_bytes)
        return 1;
    /* Lay out: header + id (aligned up for the lengths) + lengths + texts. */
    size_t id_sz = (idlen + 1 + sizeof(size_t) - 1) / sizeof(size_t) * sizeof(size_t);
    entry *e = malloc(sizeof *e + id_sz + (size_t)n * sizeof(size_t) + text_bytes + 1);
    if (!e)
        return -1;
    memcpy(e->id, id, idlen + 1);
    e->lens = (size_t *)(void *)(e->id + id_sz);
    e->texts = (char *)(e->lens + n);
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        e->lens[i] = lens[i];
        memcpy(e->texts + off, texts[i], lens[i]);
        off += lens[i];
    }
    e->hash = hash_id(id);
    e->t_ms = now_ms;
    e->model = model;
    e->n = n;
    e->bytes = bytes;
    e->hnext = NULL;

    pthread_mutex_lock(&s->mu);
    expire(s, now_ms);
    entry **slot = chain_slot(s, id, e->hash);
    if (*slot)
        unlink_entry(s, *slot); /* the same id again: the newer request wins */
    while (s->head && (s->n + 1 > s->max_n || s->bytes + bytes > s->max_bytes))
        unlink_entry(s, s->head);
    slot = chain_slot(s, id, e->hash);
    *slot = e;
    e->prev = s->tail;
    e->next = NULL;
    if (s->tail)
        s->tail->next = e;
    else
        s->head = e;
    s->tail = e;
    s->n++;
    s->bytes += bytes;
    pthread_mutex_unlock(&s->mu);
    return 0;
}

int srv_recent_get(srv_recent *s, const char *id, int index, int64_t now_ms, char **text,
                   size_t *len, int *model, int *n_texts)
{
    if (!id || !*id)
        return -1;
    int rc = -1;
    pthread_mutex_lock(&s->mu);
    expire(s, now_ms);
    entry *e = *chain_slot(s, id, hash_id(id));
    if (!e || expired(s, e, now_ms))
        goto done;
    *n_texts = e->n;
    *model = e->model;
    rc = -2;
    if (index < 0 || index >= e->n)
        goto done;
    size_t off = 0;
    for (int i = 0; i < index; i++)
        off += e->lens[i];
    rc = -3;
    if (!(*text = malloc(e->lens[index] + 1)))
        goto done;
    memcpy(*text, e->texts + off, e->lens[index]);
    (*text)[e->lens[index]] = 0;
    *len = e->lens[index];
    rc = 0;
done:
    pthread_mutex_unlock(&s->mu);
    return rc;
}

void srv_recent_stats(srv_recent *s, int64_t now_ms, int *entries, size_t *bytes)
{
    pthread_mutex_lock(&s->mu);
    expire(s, now_ms);
    *entries = s->n;
    *bytes = s->bytes;
    pthread_mutex_unlock(&s->mu);
}
