/* sign.c - eng_repo_sign: hash a version folder and write its model.sig (a signed
 * bundle with a private key, nlpd's digest-only marker without one), atomically. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "repo_int.h"
#include "core/util.h"

int repo_sign_ents(const char *dir, const repo_ent *ents, size_t n, const char *subject,
                   EVP_PKEY *key, const char *hint, eng_error *err)
{
    char *payload = NULL, *json = NULL;
    unsigned char *pae = NULL, *sig = NULL;
    size_t pae_len = 0, sig_len = 0;
    int rc = repo_statement_build(ents, n, subject, &payload, err);
    if (rc)
        return rc;
    if (key) {
        if ((rc = repo_pae(REPO_PAYLOAD_TYPE, (const unsigned char *)payload, strlen(payload),
                           &pae, &pae_len))) {
            rc = eng_fail(err, rc, "%s: out of memory signing", dir);
            goto fail_payload;
        }
        if ((rc = repo_key_sign(key, pae, pae_len, &sig, &sig_len, err)))
            goto fail_pae;
    }
    if ((rc = repo_bundle_build(payload, sig, sig_len, hint, &json, err)))
        goto fail_sig;
    rc = repo_write_atomic(dir, ENG_REPO_SIG_FILE, json, strlen(json), err);
    free(json);
fail_sig:
    free(sig);
fail_pae:
    free(pae);
fail_payload:
    free(payload);
    return rc;
}

/* The folder's own name (the statement's subject), as the tool takes it. */
static int subject_name(const char *dir, char *out, size_t cap)
{
    char real[PATH_MAX];
    if (!realpath(dir, real))
        return -1;
    const char *base = strrchr(real, '/');
    base = base && base[1] ? base + 1 : real;
    if (strlen(base) >= cap)
        return -1;
    strcpy(out, base);
    return 0;
}

int eng_repo_sign(const char *version_dir, const char *private_key_pem, eng_error *err)
{
    EVP_PKEY *key = NULL;
    char hint[65] = "";
    repo_ent *ents = NULL;
    size_t n = 0;
    char subject[NAME_MAX + 1];
    int rc;
    if (!version_dir)
        return eng_fail(err, ENG_EINVAL, "eng_repo_sign: no folder given");
    if (private_key_pem && (rc = repo_key_load(private_key_pem, 1, &key, hint, err)))
        return rc;
    if (subject_name(version_dir, subject, sizeof subject) != 0) {
        rc = eng_fail(err, ENG_EIO, "%s: not a folder", version_dir);
        goto fail_key;
    }
    if ((rc = repo_walk(version_dir, REPO_WALK_STRICT | REPO_WALK_HASH, &ents, &n, err)))
        goto fail_key;
    rc = repo_sign_ents(version_dir, ents, n, subject, key, hint, err);
    repo_ents_free(ents, n);
fail_key:
    repo_key_free(key);
    return rc;
}
