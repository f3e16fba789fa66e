/* verify.c - eng_repo_verify: a version folder against its model.sig. Order: read
 * and parse the bundle (bounded), check the key hint and the ECDSA signature over the
 * DSSE pre-authentication encoding (with a key), parse the in-toto statement, then
 * hash the folder and compare file by file. Refusals are ENG_EFORMAT (ENG_EIO for
 * unreadable files) with the reason in err. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "repo_int.h"
#include "core/util.h"

static int ent_strcmp(const void *a, const void *b)
{
    return strcmp((*(repo_ent *const *)a)->rel, (*(repo_ent *const *)b)->rel);
}

/* Compare the folder's files with the statement's resources (both sorted by strcmp). */
static int compare(const char *dir, repo_ent *ents, size_t ne, const repo_res *res, size_t nr,
                   eng_error *err)
{
    /* The walker sorts in the tool's order; merge in strcmp order. */
    repo_ent **by = malloc((ne ? ne : 1) * sizeof *by);
    if (!by)
        return eng_fail(err, ENG_ENOMEM, "%s: out of memory", dir);
    for (size_t i = 0; i < ne; i++)
        by[i] = &ents[i];
    if (ne > 1)
        qsort(by, ne, sizeof *by, ent_strcmp);
    int rc = 0;
    size_t i = 0, j = 0;
    while (i < ne || j < nr) {
        int c = i == ne ? 1 : j == nr ? -1 : strcmp(by[i]->rel, res[j].name);
        if (c < 0) {
            rc = eng_fail(err, ENG_EFORMAT, "%s: file '%s' is not listed in %s (refused)", dir,
                          by[i]->rel, ENG_REPO_SIG_FILE);
            break;
        }
        if (c > 0) {
            rc = eng_fail(err, ENG_EFORMAT, "%s: file '%s' listed in %s is missing", dir,
                          res[j].name, ENG_REPO_SIG_FILE);
            break;
        }
        if (memcmp(by[i]->digest, res[j].digest, 32) != 0) {
            rc = eng_fail(err, ENG_EFORMAT,
                          "%s: file '%s' does not match its SHA-256 in %s (modified)", dir,
                          by[i]->rel, ENG_REPO_SIG_FILE);
            break;
        }
        i++;
        j++;
    }
    free(by);
    return rc;
}

int eng_repo_verify(const char *version_dir, const char *public_key_pem, eng_error *err)
{
    if (!version_dir)
        return eng_fail(err, ENG_EINVAL, "eng_repo_verify: no folder given");
    EVP_PKEY *key = NULL;
    char hint[65] = "", path[4096];
    char *json = NULL;
    size_t len = 0;
    repo_bundle b;
    repo_res *res = NULL;
    size_t nres = 0;
    repo_ent *ents = NULL;
    size_t nents = 0;
    eng_error e;
    int rc, missing = 0;
    if (public_key_pem && (rc = repo_key_load(public_key_pem, 0, &key, hint, err)))
        return rc;
    if (eng_path_join(path, sizeof path, version_dir, ENG_REPO_SIG_FILE) != 0) {
        rc = eng_fail(err, ENG_EINVAL, "%s: path too long", version_dir);
        goto fail_key;
    }
    if ((rc = repo_read_small(path, REPO_BUNDLE_MAX, 0, &json, &len, &missing, &e))) {
        rc = missing ? eng_fail(err, ENG_EIO, "%s: no %s (not a complete version)", version_dir,
                                ENG_REPO_SIG_FILE)
                     : eng_fail(err, rc, "%s", e.msg);
        goto fail_key;
    }
    rc = repo_bundle_parse(json, len, &b, &e);
    free(json);
    if (rc) {
        rc = eng_fail(err, rc, "%s: malformed bundle: %s", path, e.msg);
        goto fail_key;
    }
    if (key) {
        if (b.n_sigs == 0) {
            rc = eng_fail(err, ENG_EFORMAT,
                          "%s: unsigned (digest-only bundle) but a public key is configured "
                          "(refused)", path);
            goto fail_bundle;
        }
        if (b.has_hint && strcmp(b.hint, hint) != 0) {
            rc = eng_fail(err, ENG_EFORMAT,
                          "%s: signed by another key (key hint %.16s..., %s is %.16s...)", path,
                          b.hint, public_key_pem, hint);
            goto fail_bundle;
        }
        unsigned char *pae = NULL;
        size_t pae_len = 0;
        if (repo_pae(REPO_PAYLOAD_TYPE, b.payload, b.payload_len, &pae, &pae_len)) {
            rc = eng_fail(err, ENG_ENOMEM, "%s: out of memory", path);
            goto fail_bundle;
        }
        int ok = repo_key_verify(key, pae, pae_len, b.sig, b.sig_len);
        free(pae);
        if (!ok) {
            rc = eng_fail(err, ENG_EFORMAT,
                          "%s: the signature does not verify with %s (wrong key or altered "
                          "bundle)", path, public_key_pem);
            goto fail_bundle;
        }
    }
    if ((rc = repo_statement_parse(b.payload, b.payload_len, &res, &nres, &e))) {
        rc = eng_fail(err, rc, "%s: malformed statement: %s", path, e.msg);
        goto fail_bundle;
    }
    if ((rc = repo_walk(version_dir, REPO_WALK_STRICT | REPO_WALK_HASH, &ents, &nents, err)))
        goto fail_res;
    rc = compare(version_dir, ents, nents, res, nres, err);
    repo_ents_free(ents, nents);
fail_res:
    repo_res_free(res, nres);
fail_bundle:
    repo_bundle_free(&b);
fail_key:
    repo_key_free(key);
    return rc;
}
