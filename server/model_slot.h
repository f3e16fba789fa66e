/* model_slot.h - one served model name and its current version (DESIGN §4).
 * The current version is swapped atomically; users take a reference for the
 * duration of a batch, so in-flight work finishes on the version it started
 * with and a replaced version is freed when its last reference drops.
 * Refined: srv_model_slot_new says who owns the model when it fails. */
#ifndef NLPD_SRV_MODEL_SLOT_H
#define NLPD_SRV_MODEL_SLOT_H

#include "nlpd_engine.h"

typedef struct srv_model_slot srv_model_slot;

/* A slot named `name` serving `model` (takes over the caller's reference) as `version`.
 * NULL on allocation failure; the caller then keeps its reference. */
srv_model_slot *srv_model_slot_new(const char *name, eng_model *model, const char *version);
void srv_model_slot_free(srv_model_slot *s); /* drops the current reference */

const char *srv_model_slot_name(const srv_model_slot *s);

/* A reference to the current version (caller must eng_model_unref) and its
 * name copied into version[cap]. Thread-safe. */
eng_model *srv_model_slot_acquire(srv_model_slot *s, char *version, size_t cap);

/* Make `model` (caller's reference) current as `version`; the old version is
 * unreferenced (freed once the batches using it finish). Thread-safe. */
void srv_model_slot_swap(srv_model_slot *s, eng_model *model, const char *version);

#endif
