/* model_slot.c - see model_slot.h. A mutex guards the current pointer:
 * acquire happens once per request, so contention is negligible. The old
 * version is unreferenced outside the lock (freeing a model takes a while). */
#include "model_slot.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

srv_version *srv_version_new(eng_model *model, const char *name)
{
    srv_version *v = calloc(1, sizeof *v);
    if (!v)
        return NULL;
    atomic_init(&v->refs, 1);
    snprintf(v->name, sizeof v->name, "%s", name ? name : "");
    v->model = model;
    v->info = eng_model_get_info(model);
    return v;
}

srv_version *srv_version_ref(srv_version *v)
{
    if (v)
        atomic_fetch_add_explicit(&v->refs, 1, memory_order_relaxed);
    return v;
}

void srv_version_unref(srv_version *v)
{
    if (!v || atomic_fetch_sub_explicit(&v->refs, 1, memory_order_acq_rel) != 1)
        return;
    eng_model_unref(v->model);
    free(v->pairs);
    free(v->metadata);
    free(v);
}

struct srv_model_slot {
    pthread_mutex_t mu;
    char *name;
    srv_version *cur; /* our reference to the current version, or NULL */
};

srv_model_slot *srv_model_slot_new(const char *name)
{
    if (!name)
        return NULL;
    srv_model_slot *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    if (!(s->name = strdup(name)))
        goto fail_slot;
    if (pthread_mutex_init(&s->mu, NULL) != 0)
        goto fail_name;
    return s;

fail_name:
    free(s->name);
fail_slot:
    free(s);
    return NULL;
}

void srv_model_slot_free(srv_model_slot *s)
{
    if (!s)
        return;
    srv_version_unref(s->cur);
    pthread_mutex_destroy(&s->mu);
    free(s->name);
    free(s);
}

const char *srv_model_slot_name(const srv_model_slot *s) { return s->name; }

srv_version *srv_model_slot_acquire(srv_model_slot *s)
{
    pthread_mutex_lock(&s->mu);
    srv_version *v = srv_version_ref(s->cur);
    pthread_mutex_unlock(&s->mu);
    return v;
}

void srv_model_slot_swap(srv_model_slot *s, srv_version *v)
{
    pthread_mutex_lock(&s->mu);
    srv_version *old = s->cur;
    s->cur = v;
    pthread_mutex_unlock(&s->mu);
    srv_version_unref(old);
}
