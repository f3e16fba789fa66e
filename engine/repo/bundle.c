/* bundle.c - the model.sig codec: a Sigstore bundle (v0.3 JSON) holding a DSSE
 * envelope whose payload is the model-signing in-toto statement
 * (shared/notes/model-signing.md). Every field is type-checked: hostile JSON gets
 * ENG_EFORMAT with the reason, never a crash. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>
#include <openssl/evp.h>

#include "repo_int.h"
#include "core/util.h"

#define BAD(...) eng_fail(err, ENG_EFORMAT, __VA_ARGS__)

static const cJSON *obj_get(const cJSON *o, const char *key)
{
    return cJSON_IsObject(o) ? cJSON_GetObjectItemCaseSensitive(o, key) : NULL;
}

/* The string at o[key], or NULL (absent or not a string). */
static const char *str_get(const cJSON *o, const char *key)
{
    const cJSON *v = obj_get(o, key);
    return cJSON_IsString(v) && v->valuestring ? v->valuestring : NULL;
}

/* Whether o[key] is the string want. */
static int str_is(const cJSON *o, const char *key, const char *want)
{
    const char *v = str_get(o, key);
    return v && strcmp(v, want) == 0;
}

typedef enum { J_OBJECT, J_LIST, J_STRING } j_kind;

/* o[key] into *out when it is of the kind (or, optional, absent: NULL); else ENG_EFORMAT
 * "<path> missing or not <kind>" ("<path> is not <kind>" when optional). */
static int field(const cJSON *o, const char *key, j_kind kind, int optional, const char *path,
                 const cJSON **out, eng_error *err)
{
    static const char *const what[] = {"an object", "a list", "a string"};
    const cJSON *v = obj_get(o, key);
    int ok = kind == J_OBJECT ? cJSON_IsObject(v) : kind == J_LIST ? cJSON_IsArray(v)
                                                                   : cJSON_IsString(v);
    *out = v;
    if (ok || (optional && !v))
        return ENG_OK;
    return optional ? BAD("%s is not %s", path, what[kind])
                    : BAD("%s missing or not %s", path, what[kind]);
}

void repo_bundle_free(repo_bundle *b)
{
    free(b->payload);
    free(b->sig);
    memset(b, 0, sizeof *b);
}

static int is_hex64(const char *s)
{
    if (strlen(s) != 64)
        return 0;
    for (int i = 0; i < 64; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f') ||
              (s[i] >= 'A' && s[i] <= 'F')))
            return 0;
    return 1;
}

int repo_bundle_parse(const char *json, size_t len, repo_bundle *b, eng_error *err)
{
    memset(b, 0, sizeof *b);
    if (len > REPO_BUNDLE_MAX)
        return BAD("bundle larger than %u bytes", REPO_BUNDLE_MAX);
    cJSON *root = cJSON_ParseWithLength(json, len);
    int rc;
    if (!root)
        return BAD("not JSON");
    if (!cJSON_IsObject(root)) {
        rc = BAD("not a JSON object");
        goto fail_root;
    }
    const char *media = str_get(root, "mediaType");
    if (!media) {
        rc = BAD("mediaType missing or not a string");
        goto fail_root;
    }
    if (strcmp(media, REPO_BUNDLE_MEDIA_TYPE) != 0 &&
        strcmp(media, "application/vnd.dev.sigstore.bundle+json;version=0.3") != 0) {
        rc = BAD("mediaType '%.80s' is not a Sigstore bundle v0.3", media);
        goto fail_root;
    }
    const cJSON *vm, *pk, *hint, *tlog, *env, *sigs;
    if ((rc = field(root, "verificationMaterial", J_OBJECT, 0, "verificationMaterial", &vm,
                    err)) ||
        (rc = field(vm, "publicKey", J_OBJECT, 1, "verificationMaterial.publicKey", &pk, err)))
        goto fail_root;
    if (pk) {
        if ((rc = field(pk, "hint", J_STRING, 1, "verificationMaterial.publicKey.hint", &hint,
                        err)))
            goto fail_root;
        if (hint && *hint->valuestring) {
            if (!is_hex64(hint->valuestring)) {
                rc = BAD("verificationMaterial.publicKey.hint is not a hex SHA-256");
                goto fail_root;
            }
            for (int i = 0; i < 64; i++) {
                char c = hint->valuestring[i];
                b->hint[i] = c >= 'A' && c <= 'F' ? (char)(c - 'A' + 'a') : c;
            }
            b->hint[64] = 0;
            b->has_hint = 1;
        }
    }
    if ((rc = field(vm, "tlogEntries", J_LIST, 1, "verificationMaterial.tlogEntries", &tlog,
                    err)) ||
        (rc = field(root, "dsseEnvelope", J_OBJECT, 0, "dsseEnvelope", &env, err)))
        goto fail_root;
    if (!str_is(env, "payloadType", REPO_PAYLOAD_TYPE)) {
        rc = BAD("dsseEnvelope.payloadType is not '%s'", REPO_PAYLOAD_TYPE);
        goto fail_root;
    }
    const char *payload = str_get(env, "payload");
    if (!payload || !*payload) {
        rc = BAD("dsseEnvelope.payload missing, empty or not a string");
        goto fail_root;
    }
    if ((rc = repo_b64_decode(payload, strlen(payload), &b->payload, &b->payload_len))) {
        rc = rc == ENG_ENOMEM ? eng_fail(err, rc, "out of memory decoding the payload")
                              : BAD("dsseEnvelope.payload is not base64");
        goto fail_root;
    }
    if ((rc = field(env, "signatures", J_LIST, 0, "dsseEnvelope.signatures", &sigs, err)))
        goto fail_bundle;
    int i = 0;
    const cJSON *s;
    cJSON_ArrayForEach(s, sigs)
    {
        const char *sig = str_get(s, "sig");
        if (!sig || !*sig) {
            rc = BAD("dsseEnvelope.signatures[%d].sig missing, empty or not a string", i);
            goto fail_bundle;
        }
        const cJSON *keyid = obj_get(s, "keyid");
        if (keyid && !cJSON_IsString(keyid)) {
            rc = BAD("dsseEnvelope.signatures[%d].keyid is not a string", i);
            goto fail_bundle;
        }
        if (i == 0) {
            /* An ECDSA P-256 DER signature is at most 72 bytes; allow any EC size. */
            if (strlen(sig) > 1024) {
                rc = BAD("dsseEnvelope.signatures[0].sig is too long for an ECDSA signature");
                goto fail_bundle;
            }
            if ((rc = repo_b64_decode(sig, strlen(sig), &b->sig, &b->sig_len))) {
                rc = rc == ENG_ENOMEM ? eng_fail(err, rc, "out of memory")
                                      : BAD("dsseEnvelope.signatures[0].sig is not base64");
                goto fail_bundle;
            }
        }
        i++;
    }
    b->n_sigs = i;
    cJSON_Delete(root);
    return 0;

fail_bundle:
    repo_bundle_free(b);
fail_root:
    cJSON_Delete(root);
    return rc;
}

void repo_res_free(repo_res *r, size_t n)
{
    if (!r)
        return;
    for (size_t i = 0; i < n; i++)
        free(r[i].name);
    free(r);
}

static int res_cmp(const void *a, const void *b)
{
    return strcmp(((const repo_res *)a)->name, ((const repo_res *)b)->name);
}

/* A name the walker could have produced: non-empty components, no "." or "..". */
static int rel_name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n >= REPO_RELPATH_MAX)
        return 0;
    const char *p = s;
    for (;;) {
        const char *slash = strchr(p, '/');
        size_t len = slash ? (size_t)(slash - p) : strlen(p);
        if (len == 0 || (len == 1 && p[0] == '.') || (len == 2 && p[0] == '.' && p[1] == '.'))
            return 0;
        if (!slash)
            return 1;
        p = slash + 1;
    }
}

int repo_statement_parse(const unsigned char *payload, size_t len, repo_res **res, size_t *n,
                         eng_error *err)
{
    *res = NULL;
    *n = 0;
    int rc;
    cJSON *root = cJSON_ParseWithLength((const char *)payload, len);
    if (!root)
        return BAD("the DSSE payload is not JSON");
    repo_res *r = NULL;
    size_t nr = 0;
    EVP_MD_CTX *ctx = NULL;
    if (!str_is(root, "_type", REPO_STATEMENT_TYPE)) {
        rc = BAD("the payload is not an in-toto statement (_type is not '%s')",
                 REPO_STATEMENT_TYPE);
        goto fail;
    }
    if (!str_is(root, "predicateType", REPO_PREDICATE_TYPE)) {
        rc = BAD("predicateType is not '%s' (other model-signing formats are not supported)",
                 REPO_PREDICATE_TYPE);
        goto fail;
    }
    const cJSON *subj = obj_get(root, "subject");
    if (!cJSON_IsArray(subj) || cJSON_GetArraySize(subj) != 1) {
        rc = BAD("subject is not a list of one");
        goto fail;
    }
    const cJSON *s0 = cJSON_GetArrayItem(subj, 0);
    const char *sdig = str_get(obj_get(s0, "digest"), "sha256");
    unsigned char want[32], got[32];
    if (!str_get(s0, "name") || !sdig || repo_unhex32(sdig, want) != 0) {
        rc = BAD("subject[0] lacks a name or a hex digest.sha256");
        goto fail;
    }
    const cJSON *pred, *ser, *rs;
    if ((rc = field(root, "predicate", J_OBJECT, 0, "predicate", &pred, err)) ||
        (rc = field(pred, "serialization", J_OBJECT, 0, "predicate.serialization", &ser, err)))
        goto fail;
    if (!str_is(ser, "method", "files")) {
        rc = BAD("predicate.serialization.method is not 'files' (shards are not supported)");
        goto fail;
    }
    if (!str_is(ser, "hash_type", "sha256")) {
        rc = BAD("predicate.serialization.hash_type is not 'sha256'");
        goto fail;
    }
    if ((rc = field(pred, "resources", J_LIST, 0, "predicate.resources", &rs, err)))
        goto fail;
    int count = cJSON_GetArraySize(rs);
    if (count > REPO_FILES_MAX) {
        rc = BAD("predicate.resources lists more than %d files", REPO_FILES_MAX);
        goto fail;
    }
    if (count > 0 && !(r = calloc((size_t)count, sizeof *r))) {
        rc = eng_fail(err, ENG_ENOMEM, "out of memory reading the statement");
        goto fail;
    }
    if (!(ctx = EVP_MD_CTX_new()) || !EVP_DigestInit_ex(ctx, EVP_sha256(), NULL)) {
        rc = eng_fail(err, ENG_ENOMEM, "cannot start SHA-256");
        goto fail;
    }
    const cJSON *it;
    cJSON_ArrayForEach(it, rs)
    {
        const char *name = str_get(it, "name"), *alg = str_get(it, "algorithm"),
                   *dig = str_get(it, "digest");
        if (!name || !rel_name_ok(name)) {
            rc = BAD("predicate.resources[%zu].name missing or not a relative path", nr);
            goto fail;
        }
        if (!alg || strcmp(alg, "sha256") != 0) {
            rc = BAD("resource '%.200s': algorithm is not 'sha256'", name);
            goto fail;
        }
        if (!dig || repo_unhex32(dig, r[nr].digest) != 0) {
            rc = BAD("resource '%.200s': digest is not a hex SHA-256", name);
            goto fail;
        }
        if (!(r[nr].name = strdup(name))) {
            rc = eng_fail(err, ENG_ENOMEM, "out of memory reading the statement");
            goto fail;
        }
        EVP_DigestUpdate(ctx, r[nr].digest, 32);
        nr++;
    }
    unsigned dl = 0;
    EVP_DigestFinal_ex(ctx, got, &dl);
    if (memcmp(got, want, 32) != 0) {
        rc = BAD("the statement is inconsistent: its subject digest is not the digest of its "
                 "resources");
        goto fail;
    }
    if (nr > 1)
        qsort(r, nr, sizeof *r, res_cmp);
    for (size_t i = 1; i < nr; i++)
        if (strcmp(r[i - 1].name, r[i].name) == 0) {
            rc = BAD("resource '%.200s' is listed twice", r[i].name);
            goto fail;
        }
    EVP_MD_CTX_free(ctx);
    cJSON_Delete(root);
    *res = r;
    *n = nr;
    return 0;

fail:
    EVP_MD_CTX_free(ctx);
    repo_res_free(r, nr);
    cJSON_Delete(root);
    return rc;
}

static int oom(eng_error *err)
{
    return eng_fail(err, ENG_ENOMEM, "out of memory building model.sig");
}

int repo_statement_build(const repo_ent *ents, size_t n, const char *subject, char **out,
                         eng_error *err)
{
    *out = NULL;
    cJSON *root = cJSON_CreateObject();
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int rc = 0;
    if (!root || !ctx || !EVP_DigestInit_ex(ctx, EVP_sha256(), NULL))
        goto fail_oom;
    cJSON_AddStringToObject(root, "_type", REPO_STATEMENT_TYPE);
    cJSON *subj = cJSON_AddArrayToObject(root, "subject");
    cJSON_AddStringToObject(root, "predicateType", REPO_PREDICATE_TYPE);
    cJSON *pred = cJSON_AddObjectToObject(root, "predicate");
    cJSON *ser = cJSON_AddObjectToObject(pred, "serialization");
    cJSON_AddFalseToObject(ser, "allow_symlinks");
    cJSON_AddStringToObject(ser, "hash_type", "sha256");
    cJSON *ign = cJSON_AddArrayToObject(ser, "ignore_paths");
    for (size_t i = 0; i < sizeof repo_ignore_paths / sizeof repo_ignore_paths[0]; i++)
        cJSON_AddItemToArray(ign, cJSON_CreateString(repo_ignore_paths[i]));
    cJSON_AddStringToObject(ser, "method", "files");
    cJSON *rs = cJSON_AddArrayToObject(pred, "resources");
    if (!subj || !rs || !ign)
        goto fail_oom;
    char hex[65];
    for (size_t i = 0; i < n; i++) {
        if (!S_ISREG(ents[i].st.st_mode))
            continue;
        cJSON *r = cJSON_CreateObject();
        if (!r)
            goto fail_oom;
        cJSON_AddItemToArray(rs, r);
        repo_hex(ents[i].digest, 32, hex);
        if (!cJSON_AddStringToObject(r, "name", ents[i].rel) ||
            !cJSON_AddStringToObject(r, "algorithm", "sha256") ||
            !cJSON_AddStringToObject(r, "digest", hex))
            goto fail_oom;
        EVP_DigestUpdate(ctx, ents[i].digest, 32);
    }
    unsigned char root_digest[32];
    unsigned dl = 0;
    EVP_DigestFinal_ex(ctx, root_digest, &dl);
    repo_hex(root_digest, 32, hex);
    cJSON *s0 = cJSON_CreateObject();
    if (!s0)
        goto fail_oom;
    cJSON_AddItemToArray(subj, s0);
    cJSON *dig = cJSON_AddObjectToObject(s0, "digest");
    if (!cJSON_AddStringToObject(s0, "name", subject) || !dig ||
        !cJSON_AddStringToObject(dig, "sha256", hex))
        goto fail_oom;
    if (!(*out = cJSON_Print(root)))
        goto fail_oom;
    goto done;
fail_oom:
    rc = oom(err);
done:
    EVP_MD_CTX_free(ctx);
    cJSON_Delete(root);
    return rc;
}

int repo_bundle_build(const char *payload, const unsigned char *sig, size_t sig_len,
                      const char *hint, char **out, eng_error *err)
{
    *out = NULL;
    int rc = 0;
    char *p64 = NULL, *s64 = NULL;
    cJSON *root = cJSON_CreateObject();
    if (!root || repo_b64_encode((const unsigned char *)payload, strlen(payload), &p64))
        goto fail_oom;
    if (sig && repo_b64_encode(sig, sig_len, &s64))
        goto fail_oom;
    cJSON_AddStringToObject(root, "mediaType", REPO_BUNDLE_MEDIA_TYPE);
    cJSON *vm = cJSON_AddObjectToObject(root, "verificationMaterial");
    if (!vm)
        goto fail_oom;
    if (sig) {
        cJSON *pk = cJSON_AddObjectToObject(vm, "publicKey");
        if (!pk || !cJSON_AddStringToObject(pk, "hint", hint))
            goto fail_oom;
    }
    cJSON *env = NULL;
    if (!cJSON_AddArrayToObject(vm, "tlogEntries") ||
        !(env = cJSON_AddObjectToObject(root, "dsseEnvelope")) ||
        !cJSON_AddStringToObject(env, "payload", p64) ||
        !cJSON_AddStringToObject(env, "payloadType", REPO_PAYLOAD_TYPE))
        goto fail_oom;
    cJSON *sigs = cJSON_AddArrayToObject(env, "signatures");
    if (!sigs)
        goto fail_oom;
    if (sig) {
        cJSON *s = cJSON_CreateObject();
        if (!s)
            goto fail_oom;
        cJSON_AddItemToArray(sigs, s);
        if (!cJSON_AddStringToObject(s, "sig", s64) || !cJSON_AddStringToObject(s, "keyid", ""))
            goto fail_oom;
    }
    if (!(*out = cJSON_Print(root)))
        goto fail_oom;
    goto done;
fail_oom:
    rc = oom(err);
done:
    free(p64);
    free(s64);
    cJSON_Delete(root);
    return rc;
}
