/* auth.h - API keys (DESIGN §4). The key file holds hex SHA-256 hashes of the
 * accepted keys, one per line ('#' starts a comment, blank lines ignored), so
 * the daemon never stores a key itself. A presented key is hashed and compared
 * with every stored hash in constant time (CRYPTO_memcmp, no early exit). */
#ifndef NLPD_SRV_AUTH_H
#define NLPD_SRV_AUTH_H

#include <stddef.h>

typedef struct srv_auth srv_auth;

/* Parse key-file text. 0, or -1 with err naming the line (never its content). */
int srv_auth_parse(const char *text, size_t len, srv_auth **out, char *err, size_t cap);
/* Read and parse a key file. 0 or -1 + err. */
int srv_auth_load(const char *path, srv_auth **out, char *err, size_t cap);
void srv_auth_free(srv_auth *a);
int srv_auth_count(const srv_auth *a);

/* 1 when key[0..len) hashes to one of the stored hashes, else 0. */
int srv_auth_check(const srv_auth *a, const char *key, size_t len);

/* The key a request presents: "Authorization: Bearer KEY" (scheme
 * case-insensitive) or else "X-API-Key: KEY" (either header may be NULL).
 * Returns a pointer into the header and its length, or NULL when none. */
const char *srv_auth_extract(const char *authorization, const char *x_api_key, size_t *len);

/* Lowercase hex SHA-256 of data into hex[65] (for tests and tooling). */
void srv_auth_hash_hex(const char *data, size_t len, char hex[65]);

#endif
