/* repo_int.h - internals of the model repository (nlpd_repo.h), shared by the
 * files of engine/repo/ only: folder walking and hashing, base64, the bundle and
 * in-toto statement codec, keys, and small file-system helpers. */
#ifndef NLPD_REPO_INT_H
#define NLPD_REPO_INT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include "nlpd_repo.h"

/* Limits on what is read from a repository (hostile input stays bounded). */
#define REPO_BUNDLE_MAX (16u << 20) /* model.sig */
#define REPO_PIN_MAX 4096           /* PIN */
#define REPO_META_MAX (1u << 20)    /* nlpd-version.json */
#define REPO_KEY_MAX 65536          /* a PEM key file */
#define REPO_DEPTH_MAX 32           /* folder nesting */
#define REPO_FILES_MAX 100000       /* files in one version */
#define REPO_RELPATH_MAX 4096       /* a file's path relative to the version folder */

/* The model-signing tool's media and statement types (notes/model-signing.md). */
#define REPO_BUNDLE_MEDIA_TYPE "application/vnd.dev.sigstore.bundle.v0.3+json"
#define REPO_PAYLOAD_TYPE "application/vnd.in-toto+json"
#define REPO_STATEMENT_TYPE "https://in-toto.io/Statement/v1"
#define REPO_PREDICATE_TYPE "https://model_signing/signature/v1.0"

/* ------------------------------------------------------------------ walk.c */

/* One entry under a folder: its path relative to the folder ('/'-separated),
 * lstat data, and (REPO_WALK_HASH) the SHA-256 of a regular file's bytes. */
typedef struct repo_ent {
    char *rel;
    struct stat st;
    unsigned char digest[32];
} repo_ent;

enum {
    REPO_WALK_STRICT = 1, /* refuse symlinks and special files (ENG_EFORMAT) */
    REPO_WALK_HASH = 2,   /* hash every regular file */
    REPO_WALK_DIRS = 4,   /* list directories and non-regular entries too */
};

/* The top-level names the model-signing tool never signs ("model.sig", ".git",
 * ".github", ".gitignore", ".gitattributes"): 1 when rel (a top-level name) is one. */
int repo_ignored(const char *name);
extern const char *const repo_ignore_paths[5];

/* Walk dir recursively (ignored top-level names skipped, symlinks never followed),
 * *out sorted by repo_path_cmp. Free with repo_ents_free. */
int repo_walk(const char *dir, int flags, repo_ent **out, size_t *n, eng_error *err);
void repo_ents_free(repo_ent *e, size_t n);
/* The model-signing order: component by component ('/' sorts before any byte). */
int repo_path_cmp(const char *a, const char *b);

/* ------------------------------------------------------------------ b64.c */

/* Standard base64 with padding; *out malloc'd and NUL-terminated. */
int repo_b64_encode(const unsigned char *in, size_t len, char **out);
/* Decode standard or URL-safe base64 (padding optional). ENG_EFORMAT when s is
 * not base64. *out malloc'd (NUL-terminated for convenience), *len its length. */
int repo_b64_decode(const char *s, size_t slen, unsigned char **out, size_t *len);

/* ------------------------------------------------------------------ bundle.c */

/* A parsed model.sig. */
typedef struct repo_bundle {
    int has_hint;
    char hint[65];          /* verificationMaterial.publicKey.hint (lowercase hex) */
    unsigned char *payload; /* decoded DSSE payload (NUL-terminated) */
    size_t payload_len;
    int n_sigs;             /* 0: nlpd's digest-only marker */
    unsigned char *sig;     /* signatures[0].sig, decoded (DER) */
    size_t sig_len;
} repo_bundle;

/* Parse the bundle JSON text; ENG_EFORMAT with the reason on anything malformed. */
int repo_bundle_parse(const char *json, size_t len, repo_bundle *b, eng_error *err);
void repo_bundle_free(repo_bundle *b);

/* One resource of an in-toto statement. */
typedef struct repo_res {
    char *name;
    unsigned char digest[32];
} repo_res;

/* Parse the DSSE payload as a model-signing in-toto statement and check that its
 * subject digest is the SHA-256 of the resources' digests in listed order.
 * *res (sorted by name, no duplicates) malloc'd; free with repo_res_free. */
int repo_statement_parse(const unsigned char *payload, size_t len, repo_res **res, size_t *n,
                         eng_error *err);
void repo_res_free(repo_res *r, size_t n);

/* The statement for the regular files of ents (sorted by repo_path_cmp) with the
 * subject name; *out is malloc'd JSON text. */
int repo_statement_build(const repo_ent *ents, size_t n, const char *subject, char **out,
                         eng_error *err);
/* The bundle JSON for payload: with sig (DER) and hint, a signed bundle as the
 * tool writes it; with sig NULL, the digest-only marker. *out malloc'd. */
int repo_bundle_build(const char *payload, const unsigned char *sig, size_t sig_len,
                      const char *hint, char **out, eng_error *err);

/* ------------------------------------------------------------------ keys.c */

struct evp_pkey_st;
/* Load an ECDSA P-256 public (or private) key from a PEM file; hint: the hex
 * SHA-256 of the public key's SubjectPublicKeyInfo PEM (the bundle's key hint). */
int repo_key_load(const char *path, int private_key, struct evp_pkey_st **key, char hint[65],
                  eng_error *err);
void repo_key_free(struct evp_pkey_st *key);
/* DSSE pre-authentication encoding of (type, payload); *out malloc'd. */
int repo_pae(const char *type, const unsigned char *payload, size_t len, unsigned char **out,
             size_t *out_len);
/* ECDSA-SHA256 over msg: *sig (DER) malloc'd. */
int repo_key_sign(struct evp_pkey_st *key, const unsigned char *msg, size_t len,
                  unsigned char **sig, size_t *sig_len, eng_error *err);
/* 1 when sig (DER) is key's signature over msg, else 0 (bad DER included). */
int repo_key_verify(struct evp_pkey_st *key, const unsigned char *msg, size_t len,
                    const unsigned char *sig, size_t sig_len);

/* ------------------------------------------------------------------ fsutil.c */

/* Read a regular file of at most max bytes (a final symlink is followed only with
 * follow: key files may be Kubernetes secrets); *out NUL-terminated. ENG_EIO if
 * unreadable (absent: *missing set when not NULL), ENG_ETOOLONG over max,
 * ENG_EFORMAT if not a regular file or a refused symlink. */
int repo_read_small(const char *path, size_t max, int follow, char **out, size_t *len,
                    int *missing, eng_error *err);
/* Write dir/name atomically: dir/.name.tmp-XXXXXX, fsync, rename, fsync dir. */
int repo_write_atomic(const char *dir, const char *name, const void *data, size_t len,
                      eng_error *err);
int repo_fsync_path(const char *path, int is_dir);
/* rm -rf (no error if absent). */
int repo_rm_tree(const char *path);
/* hex of n bytes into out[2n+1]. */
void repo_hex(const unsigned char *in, size_t n, char *out);
/* Parse exactly 64 hex digits (either case) into 32 bytes; 0 or -1. */
int repo_unhex32(const char *s, unsigned char out[32]);

/* ------------------------------------------------------------------ sign.c */

/* Write dir/model.sig for ents (the folder's hashed files) under subject name,
 * signed with key (NULL: digest-only). */
int repo_sign_ents(const char *dir, const repo_ent *ents, size_t n, const char *subject,
                   struct evp_pkey_st *key, const char *hint, eng_error *err);

#endif
