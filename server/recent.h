/* recent.h - the texts of recent requests, by request id, so that
 * POST /v1/feedback can label an answer by its id (README "Feedback").
 *
 * It retains user text, so it exists only when the configuration asks for it
 * (feedback.recent.enabled) and is bounded three ways: entries, bytes (texts
 * plus a fixed overhead per entry) and age. Oldest entries go first; an entry
 * older than max_age is never returned. A request id stored again replaces the
 * older entry (ids are as unique as the clients that choose them make them).
 * Thread-safe (one mutex; every operation is O(1) expected, plus the texts it
 * copies).
 */
#ifndef NLPD_SRV_RECENT_H
#define NLPD_SRV_RECENT_H

#include <stddef.h>
#include <stdint.h>

typedef struct srv_recent srv_recent;

/* Bytes an entry counts beyond its texts (bookkeeping, id, lengths). */
#define SRV_RECENT_ENTRY_OVERHEAD 128

/* A store of at most max_entries entries, max_bytes bytes, max_age_ms old.
 * NULL on allocation failure or a zero bound. */
srv_recent *srv_recent_new(int max_entries, size_t max_bytes, int64_t max_age_ms);
void srv_recent_free(srv_recent *s); /* NULL is fine */

/* Remember request id's n texts (texts[i], lens[i] bytes), answered by model
 * index `model`, at now_ms (CLOCK_MONOTONIC ms; tests pass their own clock).
 * Evicts the oldest entries as needed. 0; 1 when not stored because the
 * entry alone exceeds max_bytes; -1 when out of memory or id is empty. */
int srv_recent_put(srv_recent *s, const char *id, int model, int n, const char *const *texts,
                   const size_t *lens, int64_t now_ms);

/* Copy text `index` of request id into *text (malloc'd, NUL-terminated;
 * caller frees) and its length, model and count of texts. 0; -1 when the id is
 * unknown or older than max_age; -2 when index is out of range (*n_texts
 * is set); -3 when out of memory. */
int srv_recent_get(srv_recent *s, const char *id, int index, int64_t now_ms, char **text,
                   size_t *len, int *model, int *n_texts);

/* Current entries and bytes (after expiring what is older than max_age at now_ms). */
void srv_recent_stats(srv_recent *s, int64_t now_ms, int *entries, size_t *bytes);

#endif
