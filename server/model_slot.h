/* model_slot.h - one served model name, its current version, and the
 * version objects requests hold (DESIGN §4 "Hot swap").
 *
 * A version is everything derived from one loaded model folder: the engine
 * model, its name, its translation pairs and its repository metadata. It is
 * reference counted: the slot holds one reference to the current version,
 * each request takes one for its whole life (tokenising, the batch, rendering
 * all see the same version), so a swap never changes work in flight and a
 * replaced version is freed when its last request finishes. */
#ifndef NLPD_SRV_MODEL_SLOT_H
#define NLPD_SRV_MODEL_SLOT_H

#include <stdatomic.h>
#include <stdint.h>

#include "lang_pairs.h"
#include "nlpd_engine.h"

typedef struct srv_version {
    atomic_int refs;
    char name[128];
    eng_model *model;            /* one reference, dropped with the version */
    const eng_model_info *info;  /* of model */
    /* translate: the pairs served (default first) and the generation defaults */
    srv_lang_pair *pairs;
    int n_pairs;
    eng_translator_info tr_info;
    char *metadata;              /* the repository's nlpd-version.json (a JSON object), or NULL */
    int64_t loaded_unix_ms;      /* when it finished loading */
    int64_t load_ns, warm_ns;    /* time to load and to warm up */
} srv_version;

/* A version of model (takes over the caller's reference) named name, with one
 * reference for the caller. NULL on allocation failure (the caller keeps its
 * model reference). */
srv_version *srv_version_new(eng_model *model, const char *name);
srv_version *srv_version_ref(srv_version *v);
void srv_version_unref(srv_version *v); /* NULL is fine */

typedef struct srv_model_slot srv_model_slot;

/* A slot named name, serving nothing yet. NULL on allocation failure. */
srv_model_slot *srv_model_slot_new(const char *name);
void srv_model_slot_free(srv_model_slot *s); /* drops the current version */

const char *srv_model_slot_name(const srv_model_slot *s);

/* A reference to the current version (srv_version_unref it), or NULL when
 * none has been loaded. Thread-safe. */
srv_version *srv_model_slot_acquire(srv_model_slot *s);

/* Make v current (takes over the caller's reference); the old version is
 * unreferenced (freed once the requests using it finish). Thread-safe. */
void srv_model_slot_swap(srv_model_slot *s, srv_version *v);

#endif
