/* model_slot.c - one served model name and its current version (model_slot.h).
 * A mutex guards the (model, version) pair: acquire happens once per batch, so
 * contention is negligible, and the pair is always read consistently. The old
 * version is unreferenced outside the lock (freeing a model can take a while). */
#include "model_slot.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct srv_model_slot {
    pthread_mutex_t mu;
    char *name;
    eng_model *model; /* our reference to the current version */
    char *version;
};

srv_model_slot *srv_model_slot_new(const char *name, eng_model *model, const char *version)
{
    if (!name || !model)
        return NULL;
    srv_model_slot *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    if (!(s->name = strdup(name)))
        goto fail_slot;
    if (!(s->version = strdup(version ? version : "")))
        goto fail_name;
    if (pthread_mutex_init(&s->mu, NULL) != 0)
        goto fail_version;
    s->model = model;
    return s;

fail_version:
    free(s->version);
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
    eng_model_unref(s->model);
    pthread_mutex_destroy(&s->mu);
    free(s->version);
    free(s->name);
    free(s);
}

const char *srv_model_slot_name(const srv_model_slot *s) { return s->name; }

eng_model *srv_model_slot_acquire(srv_model_slot *s, char *version, size_t cap)
{
    pthread_mutex_lock(&s->mu);
    eng_model *m = eng_model_ref(s->model);
    if (version && cap)
        snprintf(version, cap, "%s", s->version);
    pthread_mutex_unlock(&s->mu);
    return m;
}

void srv_model_slot_swap(srv_model_slot *s, eng_model *model, const char *version)
{
    /* Copy the name before taking the lock; on allocation failure keep serving
     * the new model under an empty version name rather than dropping the swap. */
    char *v = strdup(version ? version : "");
    pthread_mutex_lock(&s->mu);
    eng_model *old = s->model;
    char *old_v = s->version;
    s->model = model;
    s->version = v ? v : NULL;
    if (!s->version) {
        s->version = old_v;
        old_v = NULL;
        s->version[0] = 0;
    }
    pthread_mutex_unlock(&s->mu);
    free(old_v);
    eng_model_unref(old);
}
