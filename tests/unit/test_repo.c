/* test_repo.c - the model repository (nlpd_repo.h): sign/verify round trips with a
 * generated ECDSA P-256 key, every refusal (tampered, extra, missing, symlink, wrong
 * key, unsigned with a key), a table of malformed bundles (must be refused, never
 * crash: run under ASan/UBSan), publish (names, atomicity, concurrency, failures),
 * pin and current, prune (retention). */
#include "test_util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cJSON.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "nlpd_repo.h"
#include "repo/repo_int.h"

extern int repo_publish_no_renameat2;

/* ---------------------------------------------------------------- helpers */

typedef struct fx {
    char root[64];       /* /tmp/nlpd-repo-XXXXXX */
    char model[128];     /* root/model: a small Hugging Face-like folder */
    char key[128], pub[128], key2[128], pub2[128];
} fx;

static void write_bytes(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

static void write_str(const char *path, const char *s)
{
    write_bytes(path, s, strlen(s));
}

static int rm_entry(const char *p, const struct stat *sb, int type, struct FTW *ftw)
{
    (void)sb;
    (void)ftw;
    return type == FTW_DP ? rmdir(p) : unlink(p);
}

static void rm_rf(const char *p)
{
    nftw(p, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void make_key(const char *priv, const char *pub)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");
    assert_non_null(k);
    FILE *f = fopen(priv, "w");
    assert_non_null(f);
    assert_int_equal(PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL), 1);
    fclose(f);
    f = fopen(pub, "w");
    assert_non_null(f);
    assert_int_equal(PEM_write_PUBKEY(f, k), 1);
    fclose(f);
    EVP_PKEY_free(k);
}

static void make_model(const char *dir)
{
    assert_int_equal(mkdir(dir, 0755), 0);
    write_str(tu_path("%s/config.json", dir), "{\"architectures\": [\"BertModel\"]}\n");
    unsigned char w[4096];
    for (size_t i = 0; i < sizeof w; i++)
        w[i] = (unsigned char)(i * 31 + 7);
    write_bytes(tu_path("%s/model.safetensors", dir), w, sizeof w);
    assert_int_equal(mkdir(tu_path("%s/sub", dir), 0755), 0);
    write_str(tu_path("%s/sub/tok.json", dir), "{\"v\": 1}");
    write_str(tu_path("%s/a.txt", dir), "a");
    assert_int_equal(mkdir(tu_path("%s/a", dir), 0755), 0);
    write_str(tu_path("%s/a/b", dir), "ab");
    /* The tool's ignore paths: never signed, never checked. */
    write_str(tu_path("%s/.gitignore", dir), "*.tmp\n");
    assert_int_equal(mkdir(tu_path("%s/.git", dir), 0755), 0);
    write_str(tu_path("%s/.git/HEAD", dir), "ref: refs/heads/main\n");
}

static int fx_setup(void **state)
{
    fx *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    snprintf(f->root, sizeof f->root, "/tmp/nlpd-repo-XXXXXX");
    if (!mkdtemp(f->root))
        return -1;
    chmod(f->root, 0755);
    snprintf(f->model, sizeof f->model, "%s/model", f->root);
    snprintf(f->key, sizeof f->key, "%s/k.pem", f->root);
    snprintf(f->pub, sizeof f->pub, "%s/k.pub", f->root);
    snprintf(f->key2, sizeof f->key2, "%s/k2.pem", f->root);
    snprintf(f->pub2, sizeof f->pub2, "%s/k2.pub", f->root);
    make_model(f->model);
    make_key(f->key, f->pub);
    make_key(f->key2, f->pub2);
    *state = f;
    return 0;
}

static int fx_teardown(void **state)
{
    fx *f = *state;
    rm_rf(f->root);
    free(f);
    return 0;
}

/* verify must refuse with a message containing each needle (NULL: any). */
static void expect_refused(const char *dir, const char *pub, const char *n1, const char *n2)
{
    eng_error err = {0};
    int rc = eng_repo_verify(dir, pub, &err);
    if (rc == 0)
        fail_msg("%s: verified but should be refused (%s)", dir, n1 ? n1 : "");
    assert_true(rc < 0);
    if ((n1 && !strstr(err.msg, n1)) || (n2 && !strstr(err.msg, n2)))
        fail_msg("message '%s' lacks '%s' / '%s'", err.msg, n1 ? n1 : "", n2 ? n2 : "");
}

static void expect_ok(const char *dir, const char *pub)
{
    eng_error err = {0};
    if (eng_repo_verify(dir, pub, &err) != 0)
        fail_msg("%s refused: %s", dir, err.msg);
}

static void sign_ok(const char *dir, const char *key)
{
    eng_error err = {0};
    if (eng_repo_sign(dir, key, &err) != 0)
        fail_msg("sign %s: %s", dir, err.msg);
}

static int count_entries(const char *dir)
{
    int n = 0;
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    struct dirent *de;
    while ((de = readdir(d)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
            n++;
    closedir(d);
    return n;
}

/* ------------------------------------------------------------------ names */

static void test_repo_names(void **state)
{
    (void)state;
    assert_true(eng_repo_name_valid("v000001"));
    assert_true(eng_repo_name_valid("2024-01-02_a.b"));
    assert_false(eng_repo_name_valid(""));
    assert_false(eng_repo_name_valid(".tmp-x"));
    assert_false(eng_repo_name_valid("a/b"));
    assert_false(eng_repo_name_valid("a b"));
    assert_false(eng_repo_name_valid(NULL));
    char longn[ENG_REPO_NAME_MAX + 2];
    memset(longn, 'a', sizeof longn - 1);
    longn[ENG_REPO_NAME_MAX + 1] = 0;
    assert_false(eng_repo_name_valid(longn));
    longn[ENG_REPO_NAME_MAX] = 0;
    assert_true(eng_repo_name_valid(longn));
    assert_true(eng_repo_version_cmp("v9", "v10") < 0);
    assert_true(eng_repo_version_cmp("v000009", "v000010") < 0);
    assert_true(eng_repo_version_cmp("v999999", "v1000000") < 0);
    assert_int_equal(eng_repo_version_cmp("v1", "v1"), 0);
    /* The tool's resource order: component by component. */
    assert_true(repo_path_cmp("a/b", "a.txt") < 0);
    assert_true(repo_path_cmp("a.txt", "ab") < 0);
    assert_true(repo_path_cmp("a", "a/b") < 0);
}

static void test_repo_base64(void **state)
{
    (void)state;
    const char *cases[][2] = {{"", ""}, {"f", "Zg=="}, {"fo", "Zm8="}, {"foo", "Zm9v"},
                              {"foob", "Zm9vYg=="}, {"fooba", "Zm9vYmE="}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *e = NULL;
        assert_int_equal(repo_b64_encode((const unsigned char *)cases[i][0],
                                         strlen(cases[i][0]), &e), 0);
        assert_string_equal(e, cases[i][1]);
        free(e);
        unsigned char *d = NULL;
        size_t n = 0;
        assert_int_equal(repo_b64_decode(cases[i][1], strlen(cases[i][1]), &d, &n), 0);
        assert_int_equal(n, strlen(cases[i][0]));
        assert_memory_equal(d, cases[i][0], n);
        free(d);
    }
    const char *bad[] = {"Z", "Zg=", "Z===", "Zh==", "Zm9v!", "Zm 9v", "=Zm9", "Zg==Zg=="};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        unsigned char *d = (unsigned char *)1;
        size_t n = 0;
        if (repo_b64_decode(bad[i], strlen(bad[i]), &d, &n) == 0)
            fail_msg("'%s' decoded", bad[i]);
        assert_null(d);
    }
    unsigned char *d = NULL;
    size_t n = 0;
    assert_int_equal(repo_b64_decode("-_8", 3, &d, &n), 0); /* URL-safe, no padding */
    assert_int_equal(n, 2);
    free(d);
}

/* ------------------------------------------------------------------ verify */

static void test_repo_sign_verify(void **state)
{
    fx *f = *state;
    sign_ok(f->model, f->key);
    expect_ok(f->model, f->pub);
    expect_ok(f->model, NULL);
    /* Key files may be symlinks (Kubernetes secrets are). */
    char link[160];
    snprintf(link, sizeof link, "%s/link.pub", f->root);
    assert_int_equal(symlink(f->pub, link), 0);
    expect_ok(f->model, link);
    /* The bundle as the tool writes it: hint = SHA-256 of the public key PEM. */
    char *json = tu_read_file(tu_path("%s/model.sig", f->model), NULL);
    assert_non_null(json);
    cJSON *b = cJSON_Parse(json);
    free(json);
    assert_non_null(b);
    assert_string_equal(cJSON_GetObjectItem(b, "mediaType")->valuestring,
                        "application/vnd.dev.sigstore.bundle.v0.3+json");
    cJSON *vm = cJSON_GetObjectItem(b, "verificationMaterial");
    const char *hint = cJSON_GetObjectItem(cJSON_GetObjectItem(vm, "publicKey"), "hint")->valuestring;
    size_t plen = 0;
    char *pem = tu_read_file(f->pub, &plen);
    unsigned char d[32];
    unsigned dl;
    EVP_Digest(pem, plen, d, &dl, EVP_sha256(), NULL);
    free(pem);
    char hex[65];
    repo_hex(d, 32, hex);
    assert_string_equal(hint, hex);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(vm, "tlogEntries")), 0);
    cJSON *env = cJSON_GetObjectItem(b, "dsseEnvelope");
    assert_string_equal(cJSON_GetObjectItem(env, "payloadType")->valuestring,
                        "application/vnd.in-toto+json");
    /* The statement: resources in the tool's order, ignore paths left out. */
    const char *p64 = cJSON_GetObjectItem(env, "payload")->valuestring;
    unsigned char *payload;
    size_t len;
    assert_int_equal(repo_b64_decode(p64, strlen(p64), &payload, &len), 0);
    cJSON *st = cJSON_ParseWithLength((char *)payload, len);
    free(payload);
    assert_non_null(st);
    cJSON *res = cJSON_GetObjectItem(cJSON_GetObjectItem(st, "predicate"), "resources");
    const char *want[] = {"a/b", "a.txt", "config.json", "model.safetensors", "sub/tok.json"};
    assert_int_equal(cJSON_GetArraySize(res), 5);
    for (int i = 0; i < 5; i++)
        assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(res, i), "name")->valuestring,
                            want[i]);
    cJSON *subj = cJSON_GetArrayItem(cJSON_GetObjectItem(st, "subject"), 0);
    assert_string_equal(cJSON_GetObjectItem(subj, "name")->valuestring, "model");
    cJSON_Delete(st);
    cJSON_Delete(b);
    /* Ignored paths may change freely. */
    write_str(tu_path("%s/.gitignore", f->model), "changed\n");
    write_str(tu_path("%s/.git/new", f->model), "x");
    expect_ok(f->model, f->pub);
}

static void test_repo_tampered(void **state)
{
    fx *f = *state;
    sign_ok(f->model, f->key);
    const char *w = tu_path("%s/model.safetensors", f->model);
    size_t len;
    char *data = tu_read_file(w, &len);
    assert_non_null(data);
    data[len / 2] ^= 1;
    write_bytes(w, data, len);
    expect_refused(f->model, f->pub, "'model.safetensors'", "does not match");
    expect_refused(f->model, NULL, "'model.safetensors'", "does not match");
    data[len / 2] ^= 1;
    write_bytes(w, data, len);
    expect_ok(f->model, f->pub);
    /* A change in a subfolder is named by its path. */
    write_str(tu_path("%s/sub/tok.json", f->model), "{\"v\": 2}");
    expect_refused(f->model, f->pub, "'sub/tok.json'", NULL);
    free(data);
}

static void test_repo_extra_missing(void **state)
{
    fx *f = *state;
    sign_ok(f->model, f->key);
    write_str(tu_path("%s/extra.bin", f->model), "x");
    expect_refused(f->model, f->pub, "'extra.bin'", "not listed");
    unlink(tu_path("%s/extra.bin", f->model));
    write_str(tu_path("%s/sub/.hidden", f->model), "x"); /* only top-level paths are ignored */
    expect_refused(f->model, NULL, "'sub/.hidden'", "not listed");
    unlink(tu_path("%s/sub/.hidden", f->model));
    expect_ok(f->model, f->pub);
    unlink(tu_path("%s/sub/tok.json", f->model));
    expect_refused(f->model, f->pub, "'sub/tok.json'", "missing");
    unlink(tu_path("%s/model.sig", f->model));
    expect_refused(f->model, NULL, "no model.sig", NULL);
}

static void test_repo_not_regular(void **state)
{
    fx *f = *state;
    sign_ok(f->model, NULL);
    assert_int_equal(symlink("config.json", tu_path("%s/link.json", f->model)), 0);
    expect_refused(f->model, NULL, "link.json", "symlink");
    eng_error err;
    assert_true(eng_repo_sign(f->model, NULL, &err) < 0); /* the tool refuses them too */
    unlink(tu_path("%s/link.json", f->model));
    assert_int_equal(mkfifo(tu_path("%s/sub/fifo", f->model), 0644), 0);
    expect_refused(f->model, NULL, "sub/fifo", "special file");
    unlink(tu_path("%s/sub/fifo", f->model));
    expect_ok(f->model, NULL);
    /* model.sig itself through a symlink. */
    char sig[160], moved[160], vlink[160];
    snprintf(sig, sizeof sig, "%s/model.sig", f->model);
    snprintf(moved, sizeof moved, "%s/sig", f->root);
    snprintf(vlink, sizeof vlink, "%s/vlink", f->root);
    assert_int_equal(rename(sig, moved), 0);
    assert_int_equal(symlink(moved, sig), 0);
    expect_refused(f->model, NULL, "symlink", NULL);
    /* The version folder itself as a symlink. */
    unlink(sig);
    assert_int_equal(rename(moved, sig), 0);
    assert_int_equal(symlink(f->model, vlink), 0);
    expect_refused(vlink, NULL, "symlink", NULL);
}

static void test_repo_wrong_key(void **state)
{
    fx *f = *state;
    sign_ok(f->model, f->key);
    expect_refused(f->model, f->pub2, "another key", NULL);
    /* Without a hint the signature itself must fail. */
    char sp[160];
    snprintf(sp, sizeof sp, "%s/model.sig", f->model);
    char *json = tu_read_file(sp, NULL);
    cJSON *b = cJSON_Parse(json);
    free(json);
    cJSON_DeleteItemFromObject(cJSON_GetObjectItem(b, "verificationMaterial"), "publicKey");
    char *out = cJSON_Print(b);
    write_str(sp, out);
    free(out);
    cJSON_Delete(b);
    expect_ok(f->model, f->pub); /* the tool accepts hint-less bundles too */
    expect_refused(f->model, f->pub2, "does not verify", NULL);
    /* A private key where a public key is expected, a missing key file, another curve. */
    expect_refused(f->model, f->key, "not a PEM public key", NULL);
    expect_refused(f->model, tu_path("%s/nope.pub", f->root), "nope.pub", NULL);
    EVP_PKEY *k = EVP_EC_gen("P-384");
    FILE *fp = fopen(tu_path("%s/p384.pub", f->root), "w");
    PEM_write_PUBKEY(fp, k);
    fclose(fp);
    EVP_PKEY_free(k);
    expect_refused(f->model, tu_path("%s/p384.pub", f->root), "P-256", NULL);
}

static void test_repo_unsigned(void **state)
{
    fx *f = *state;
    sign_ok(f->model, NULL);
    expect_ok(f->model, NULL);
    expect_refused(f->model, f->pub, "unsigned", NULL);
    /* The marker: no signatures, no key hint. */
    char *json = tu_read_file(tu_path("%s/model.sig", f->model), NULL);
    cJSON *b = cJSON_Parse(json);
    free(json);
    assert_int_equal(
        cJSON_GetArraySize(cJSON_GetObjectItem(cJSON_GetObjectItem(b, "dsseEnvelope"), "signatures")),
        0);
    assert_null(cJSON_GetObjectItem(cJSON_GetObjectItem(b, "verificationMaterial"), "publicKey"));
    cJSON_Delete(b);
    /* Tampered digest-only versions are still refused. */
    write_str(tu_path("%s/config.json", f->model), "{}");
    expect_refused(f->model, NULL, "'config.json'", NULL);
}

/* ------------------------------------------------------- malformed bundles */

/* Replace the value at a dotted path ("dsseEnvelope.signatures.0.sig") of o with
 * the JSON text v ("-": delete). Array indices are numbers. */
static void json_set(cJSON *o, const char *path, const char *v)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", path);
    char *last = strrchr(buf, '.');
    cJSON *parent = o;
    if (last) {
        *last = 0;
        for (char *tok = strtok(buf, "."); tok; tok = strtok(NULL, ".")) {
            parent = (*tok >= '0' && *tok <= '9') ? cJSON_GetArrayItem(parent, atoi(tok))
                                                   : cJSON_GetObjectItem(parent, tok);
            assert_non_null(parent);
        }
        last++;
    } else {
        last = buf;
    }
    int is_index = *last >= '0' && *last <= '9';
    if (strcmp(v, "-") == 0) {
        if (is_index)
            cJSON_DeleteItemFromArray(parent, atoi(last));
        else
            cJSON_DeleteItemFromObject(parent, last);
        return;
    }
    cJSON *nv = cJSON_Parse(v);
    assert_non_null(nv);
    if (is_index)
        cJSON_ReplaceItemInArray(parent, atoi(last), nv);
    else if (cJSON_GetObjectItem(parent, last))
        cJSON_ReplaceItemInObject(parent, last, nv);
    else
        cJSON_AddItemToObject(parent, last, nv);
}

typedef struct bad_case {
    const char *what;
    int in_statement;   /* path applies to the decoded payload (re-encoded after) */
    const char *path;   /* NULL: raw replaces the whole text */
    const char *value;
    int ok_without_key; /* digest-only verification does not look at this field */
} bad_case;

static const bad_case bad_cases[] = {
    {"not json", 0, NULL, "this is not json", 0},
    {"empty", 0, NULL, "", 0},
    {"truncated", 0, NULL, "{\"mediaType\": \"application/vnd.dev.sigstore.bundle.v0.3+json\", "
                           "\"dsseEnvelope\": {\"payload\": \"ab", 0},
    {"array", 0, NULL, "[]", 0},
    {"null", 0, NULL, "null", 0},
    {"number", 0, NULL, "1e999999", 0},
    {"nested", 0, NULL, NULL, 0}, /* 100000 '[' (filled in below) */
    {"mediaType missing", 0, "mediaType", "-", 0},
    {"mediaType number", 0, "mediaType", "3", 0},
    {"mediaType other", 0, "mediaType", "\"application/json\"", 0},
    {"verificationMaterial string", 0, "verificationMaterial", "\"x\"", 0},
    {"verificationMaterial missing", 0, "verificationMaterial", "-", 0},
    {"publicKey list", 0, "verificationMaterial.publicKey", "[]", 0},
    {"hint number", 0, "verificationMaterial.publicKey.hint", "5", 0},
    {"hint not hex", 0, "verificationMaterial.publicKey.hint", "\"zz\"", 0},
    {"hint other key", 0, "verificationMaterial.publicKey.hint",
     "\"0000000000000000000000000000000000000000000000000000000000000000\"", 1},
    {"tlogEntries object", 0, "verificationMaterial.tlogEntries", "{}", 0},
    {"dsseEnvelope missing", 0, "dsseEnvelope", "-", 0},
    {"dsseEnvelope list", 0, "dsseEnvelope", "[1,2]", 0},
    {"payloadType other", 0, "dsseEnvelope.payloadType", "\"text/plain\"", 0},
    {"payloadType number", 0, "dsseEnvelope.payloadType", "1", 0},
    {"payload number", 0, "dsseEnvelope.payload", "12", 0},
    {"payload empty", 0, "dsseEnvelope.payload", "\"\"", 0},
    {"payload not base64", 0, "dsseEnvelope.payload", "\"!!!!\"", 0},
    {"payload bad padding", 0, "dsseEnvelope.payload", "\"e30=e30=\"", 0},
    {"payload not json", 0, "dsseEnvelope.payload", "\"bm90IGpzb24=\"", 0},
    {"payload a list", 0, "dsseEnvelope.payload", "\"W10=\"", 0},
    {"payload {}", 0, "dsseEnvelope.payload", "\"e30=\"", 0},
    {"signatures missing", 0, "dsseEnvelope.signatures", "-", 0},
    {"signatures object", 0, "dsseEnvelope.signatures", "{}", 0},
    {"signatures of numbers", 0, "dsseEnvelope.signatures", "[1]", 0},
    {"sig number", 0, "dsseEnvelope.signatures.0.sig", "5", 0},
    {"sig empty", 0, "dsseEnvelope.signatures.0.sig", "\"\"", 0},
    {"sig not base64", 0, "dsseEnvelope.signatures.0.sig", "\"%%%\"", 0},
    {"sig bad DER", 0, "dsseEnvelope.signatures.0.sig", "\"MAUCAQECAQ==\"", 1},
    {"sig garbage", 0, "dsseEnvelope.signatures.0.sig", "\"3q2+7w==\"", 1},
    {"sig DER huge length", 0, "dsseEnvelope.signatures.0.sig", "\"MIT/////AgEBAgEB\"", 1},
    {"sig huge", 0, "dsseEnvelope.signatures.0.sig", NULL, 0}, /* 4 KiB of 'A' (below) */
    {"keyid number", 0, "dsseEnvelope.signatures.0.keyid", "7", 0},
    {"no signatures", 0, "dsseEnvelope.signatures", "[]", 1},
    {"_type other", 1, "_type", "\"https://in-toto.io/Statement/v0.1\"", 0},
    {"_type missing", 1, "_type", "-", 0},
    {"predicateType old", 1, "predicateType", "\"https://model_signing/Digests/v0.1\"", 0},
    {"subject empty", 1, "subject", "[]", 0},
    {"subject two", 1, "subject", "[{\"name\":\"a\",\"digest\":{\"sha256\":\"00\"}},{}]", 0},
    {"subject digest number", 1, "subject.0.digest.sha256", "1", 0},
    {"subject digest short", 1, "subject.0.digest.sha256", "\"abcd\"", 0},
    {"subject digest wrong", 1, "subject.0.digest.sha256",
     "\"1111111111111111111111111111111111111111111111111111111111111111\"", 0},
    {"subject name missing", 1, "subject.0.name", "-", 0},
    {"predicate missing", 1, "predicate", "-", 0},
    {"predicate string", 1, "predicate", "\"p\"", 0},
    {"serialization missing", 1, "predicate.serialization", "-", 0},
    {"method shards", 1, "predicate.serialization.method", "\"shards\"", 0},
    {"hash_type blake2", 1, "predicate.serialization.hash_type", "\"blake2\"", 0},
    {"resources object", 1, "predicate.resources", "{}", 0},
    {"resources missing", 1, "predicate.resources", "-", 0},
    {"resource number", 1, "predicate.resources.0", "42", 0},
    {"resource name number", 1, "predicate.resources.0.name", "42", 0},
    {"resource name dotdot", 1, "predicate.resources.0.name", "\"../etc/passwd\"", 0},
    {"resource name absolute", 1, "predicate.resources.0.name", "\"/etc/passwd\"", 0},
    {"resource name empty", 1, "predicate.resources.0.name", "\"\"", 0},
    {"resource algorithm", 1, "predicate.resources.0.algorithm", "\"sha512\"", 0},
    {"resource digest short", 1, "predicate.resources.0.digest", "\"00ff\"", 0},
    {"resource digest list", 1, "predicate.resources.0.digest", "[1]", 0},
    {"resource digest not hex", 1, "predicate.resources.0.digest",
     "\"zz00000000000000000000000000000000000000000000000000000000000000\"", 0},
    {"resource dropped", 1, "predicate.resources.0", "-", 0},
    {"resource duplicated", 1, "predicate.resources.1.name", "\"a/b\"", 0},
};

static char *statement_of(cJSON *b)
{
    const char *p64 =
        cJSON_GetObjectItem(cJSON_GetObjectItem(b, "dsseEnvelope"), "payload")->valuestring;
    unsigned char *p;
    size_t n;
    assert_int_equal(repo_b64_decode(p64, strlen(p64), &p, &n), 0);
    return (char *)p;
}

static void test_repo_malformed_bundles(void **state)
{
    fx *f = *state;
    sign_ok(f->model, f->key);
    char sp[160];
    snprintf(sp, sizeof sp, "%s/model.sig", f->model);
    char *good = tu_read_file(sp, NULL);
    assert_non_null(good);
    size_t nested_len = 100000;
    char *nested = malloc(nested_len + 1);
    memset(nested, '[', nested_len);
    nested[nested_len] = 0;
    char huge_sig[4100];
    huge_sig[0] = '"';
    memset(huge_sig + 1, 'A', 4096);
    strcpy(huge_sig + 4097, "\"");
    for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
        const bad_case *c = &bad_cases[i];
        char *text;
        if (!c->path) {
            text = strdup(c->value ? c->value : nested);
        } else {
            cJSON *b = cJSON_Parse(good);
            const char *v = c->value ? c->value : huge_sig;
            if (c->in_statement) {
                char *p = statement_of(b);
                cJSON *st = cJSON_Parse(p);
                free(p);
                json_set(st, c->path, v);
                char *ps = cJSON_PrintUnformatted(st), *p64;
                cJSON_Delete(st);
                assert_int_equal(repo_b64_encode((unsigned char *)ps, strlen(ps), &p64), 0);
                free(ps);
                cJSON_ReplaceItemInObject(cJSON_GetObjectItem(b, "dsseEnvelope"), "payload",
                                          cJSON_CreateString(p64));
                free(p64);
            } else {
                json_set(b, c->path, v);
            }
            text = cJSON_PrintUnformatted(b);
            cJSON_Delete(b);
        }
        write_str(sp, text);
        free(text);
        eng_error err = {0};
        int rc = eng_repo_verify(f->model, f->pub, &err);
        if (rc == 0)
            fail_msg("bundle case '%s' verified with the key", c->what);
        assert_true(strlen(err.msg) > 0);
        rc = eng_repo_verify(f->model, NULL, &err);
        if (c->ok_without_key ? rc != 0 : rc == 0)
            fail_msg("bundle case '%s' without a key: rc %d (%s)", c->what, rc, err.msg);
    }
    /* Bigger than the 16 MiB cap: refused before parsing. */
    FILE *fp = fopen(sp, "wb");
    assert_non_null(fp);
    fputs("{\"mediaType\": \"", fp);
    for (int i = 0; i < 17 * 1024; i++)
        for (int j = 0; j < 1024; j++)
            fputc('A', fp);
    fputs("\"}", fp);
    fclose(fp);
    expect_refused(f->model, NULL, "bytes", NULL);
    /* An 8 MiB payload that is valid base64 of junk: refused without a crash. */
    cJSON *b = cJSON_Parse(good);
    char *big = malloc(8u << 20 | 1);
    memset(big, 'Q', 8u << 20);
    big[8u << 20] = 0;
    cJSON_ReplaceItemInObject(cJSON_GetObjectItem(b, "dsseEnvelope"), "payload",
                              cJSON_CreateString(big));
    free(big);
    char *text = cJSON_PrintUnformatted(b);
    cJSON_Delete(b);
    write_str(sp, text);
    free(text);
    expect_refused(f->model, f->pub, NULL, NULL);
    expect_refused(f->model, NULL, "not JSON", NULL);
    /* The original still verifies. */
    write_str(sp, good);
    expect_ok(f->model, f->pub);
    free(good);
    free(nested);
}

/* A payload edited to match a tampered file: fine without a key (digest-only
 * trusts the bundle), refused with one (the signature covers the payload). */
static void test_repo_payload_swap(void **state)
{
    fx *f = *state;
    sign_ok(f->model, f->key);
    char sp[160];
    snprintf(sp, sizeof sp, "%s/model.sig", f->model);
    char *signed_json = tu_read_file(sp, NULL);
    write_str(tu_path("%s/config.json", f->model), "{\"evil\": true}");
    sign_ok(f->model, NULL);
    char *unsigned_json = tu_read_file(sp, NULL);
    cJSON *s = cJSON_Parse(signed_json), *u = cJSON_Parse(unsigned_json);
    cJSON *upl = cJSON_GetObjectItem(cJSON_GetObjectItem(u, "dsseEnvelope"), "payload");
    cJSON_ReplaceItemInObject(cJSON_GetObjectItem(s, "dsseEnvelope"), "payload",
                              cJSON_CreateString(upl->valuestring));
    char *text = cJSON_Print(s);
    write_str(sp, text);
    expect_ok(f->model, NULL);
    expect_refused(f->model, f->pub, "does not verify", NULL);
    free(text);
    cJSON_Delete(s);
    cJSON_Delete(u);
    free(signed_json);
    free(unsigned_json);
}

/* ------------------------------------------------------------------ publish */

static void test_repo_publish(void **state)
{
    fx *f = *state;
    char repo[128];
    snprintf(repo, sizeof repo, "%s/repo/models", f->root); /* created with its parent */
    char v1[ENG_REPO_NAME_MAX + 1], v2[ENG_REPO_NAME_MAX + 1];
    eng_error err = {0};
    if (eng_repo_publish(f->model, repo, f->key, "{\"base\": \"v0\", \"source\": \"unit\"}", v1,
                         sizeof v1, &err))
        fail_msg("publish: %s", err.msg);
    assert_string_equal(v1, "v000001");
    if (eng_repo_publish(f->model, repo, NULL, NULL, v2, sizeof v2, &err))
        fail_msg("publish: %s", err.msg);
    assert_string_equal(v2, "v000002");
    assert_true(eng_repo_version_cmp(v1, v2) < 0);
    char d1[256], d2[256];
    snprintf(d1, sizeof d1, "%s/%s", repo, v1);
    snprintf(d2, sizeof d2, "%s/%s", repo, v2);
    expect_ok(d1, f->pub);
    expect_ok(d2, NULL);
    expect_refused(d2, f->pub, "unsigned", NULL);
    /* Git files are not copied; the folder is otherwise the source's. */
    assert_false(tu_exists(tu_path("%s/.git", d1)));
    assert_true(tu_exists(tu_path("%s/sub/tok.json", d1)));
    /* Metadata: the caller's object plus published_at; source kept. */
    char *meta = NULL;
    assert_int_equal(eng_repo_read_metadata(d1, &meta, &err), 0);
    cJSON *m = cJSON_Parse(meta);
    free(meta);
    assert_string_equal(cJSON_GetObjectItem(m, "base")->valuestring, "v0");
    assert_string_equal(cJSON_GetObjectItem(m, "source")->valuestring, "unit");
    const char *ts = cJSON_GetObjectItem(m, "published_at")->valuestring;
    assert_int_equal(strlen(ts), 20);
    assert_true(ts[4] == '-' && ts[10] == 'T' && ts[19] == 'Z');
    cJSON_Delete(m);
    assert_int_equal(eng_repo_read_metadata(d2, &meta, &err), 0);
    m = cJSON_Parse(meta);
    free(meta);
    assert_true(strstr(cJSON_GetObjectItem(m, "source")->valuestring, "/model") != NULL);
    cJSON_Delete(m);
    assert_int_equal(eng_repo_read_metadata(f->model, &meta, &err), 0);
    assert_null(meta);
    /* Listing: oldest first, complete, fingerprints that follow the files. */
    assert_int_equal(mkdir(tu_path("%s/v000003", repo), 0755), 0); /* incomplete */
    eng_repo_entry *e = NULL;
    int n = 0;
    assert_int_equal(eng_repo_list(repo, &e, &n, &err), 0);
    assert_int_equal(n, 3);
    assert_string_equal(e[0].name, "v000001");
    assert_string_equal(e[1].name, "v000002");
    assert_true(e[0].has_sig && e[1].has_sig && !e[2].has_sig);
    uint64_t fp0 = e[0].fingerprint, fp1 = e[1].fingerprint;
    free(e);
    write_str(tu_path("%s/sub/tok.json", d1), "{\"v\": 1} ");
    assert_int_equal(eng_repo_list(repo, &e, &n, &err), 0);
    assert_true(e[0].fingerprint != fp0);
    assert_true(e[1].fingerprint == fp1);
    free(e);
    /* The next name skips the incomplete v000003. */
    char v4[16];
    if (eng_repo_publish(f->model, repo, f->key, NULL, v4, sizeof v4, &err))
        fail_msg("publish: %s", err.msg);
    assert_string_equal(v4, "v000004");
    /* Bad metadata: refused before anything is created. */
    int before = count_entries(repo);
    assert_int_equal(eng_repo_publish(f->model, repo, NULL, "[1, 2]", v4, sizeof v4, &err),
                     ENG_EINVAL);
    assert_non_null(strstr(err.msg, "JSON object"));
    assert_int_equal(eng_repo_publish(f->model, repo, NULL, "{oops", v4, sizeof v4, &err),
                     ENG_EINVAL);
    assert_true(eng_repo_publish(tu_path("%s/none", f->root), repo, NULL, NULL, v4, sizeof v4,
                                 &err) < 0);
    assert_true(eng_repo_publish(f->model, repo, tu_path("%s/none.pem", f->root), NULL, v4,
                                 sizeof v4, &err) < 0);
    assert_int_equal(count_entries(repo), before);
}

/* A source the copy cannot take (a FIFO deep inside) fails half-way: the temporary
 * folder is removed and the repository is as it was. */
static void test_repo_publish_failure_leaves_nothing(void **state)
{
    fx *f = *state;
    char repo[128], v[16];
    snprintf(repo, sizeof repo, "%s/repo", f->root);
    eng_error err = {0};
    assert_int_equal(eng_repo_publish(f->model, repo, NULL, NULL, v, sizeof v, &err), 0);
    assert_int_equal(mkfifo(tu_path("%s/sub/zz-fifo", f->model), 0644), 0);
    assert_true(eng_repo_publish(f->model, repo, NULL, NULL, v, sizeof v, &err) < 0);
    assert_non_null(strstr(err.msg, "zz-fifo"));
    assert_int_equal(count_entries(repo), 1);
    unlink(tu_path("%s/sub/zz-fifo", f->model));
    /* A symlinked folder in the source is refused; a symlinked file is copied. */
    assert_int_equal(symlink(tu_path("%s/sub", f->model), tu_path("%s/dirlink", f->model)), 0);
    assert_true(eng_repo_publish(f->model, repo, NULL, NULL, v, sizeof v, &err) < 0);
    assert_non_null(strstr(err.msg, "dirlink"));
    assert_int_equal(count_entries(repo), 1);
    unlink(tu_path("%s/dirlink", f->model));
    assert_int_equal(symlink("config.json", tu_path("%s/cfg-link.json", f->model)), 0);
    assert_int_equal(eng_repo_publish(f->model, repo, NULL, NULL, v, sizeof v, &err), 0);
    struct stat st;
    assert_int_equal(lstat(tu_path("%s/%s/cfg-link.json", repo, v), &st), 0);
    assert_true(S_ISREG(st.st_mode));
    expect_ok(tu_path("%s/%s", repo, v), NULL);
}

/* Read-only repository: as an unprivileged user (root ignores mode bits, so a
 * child process drops to nobody first). */
static void test_repo_publish_readonly(void **state)
{
    fx *f = *state;
    char repo[128];
    snprintf(repo, sizeof repo, "%s/ro", f->root);
    assert_int_equal(mkdir(repo, 0755), 0);
    char v[16];
    eng_error err = {0};
    assert_int_equal(eng_repo_publish(f->model, repo, NULL, NULL, v, sizeof v, &err), 0);
    assert_int_equal(chmod(repo, 0555), 0);
    /* The child (maybe nobody) must read the source and keys. */
    chmod(f->key, 0644);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (geteuid() == 0 && (setgid(65534) != 0 || setuid(65534) != 0))
            _exit(3);
        char cv[16];
        eng_error e;
        int rc = eng_repo_publish(f->model, repo, f->key, NULL, cv, sizeof cv, &e);
        if (rc == 0)
            _exit(0);
        _exit(strstr(e.msg, "ro") ? 1 : 2);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    chmod(repo, 0755);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 1);
    assert_int_equal(count_entries(repo), 1);
    assert_true(tu_exists(tu_path("%s/v000001/model.sig", repo)));
}

typedef struct pub_arg {
    const char *src, *repo, *key;
    char names[3][16];
    int rc;
} pub_arg;

static void *publisher(void *p)
{
    pub_arg *a = p;
    for (int i = 0; i < 3; i++) {
        eng_error err;
        if ((a->rc = eng_repo_publish(a->src, a->repo, a->key, NULL, a->names[i], 16, &err)))
            return NULL;
    }
    return NULL;
}

/* Two concurrent publishers never take the same name, with renameat2 and with the
 * mkdir-as-lock fallback. */
static void test_repo_publish_concurrent(void **state)
{
    fx *f = *state;
    for (int mode = 0; mode < 2; mode++) {
        repo_publish_no_renameat2 = mode;
        char repo[128];
        snprintf(repo, sizeof repo, "%s/conc%d", f->root, mode);
        pub_arg a[2] = {{.src = f->model, .repo = repo, .key = f->key},
                        {.src = f->model, .repo = repo, .key = NULL}};
        assert_int_equal(mkdir(repo, 0755), 0);
        pthread_t t[2];
        for (int i = 0; i < 2; i++)
            assert_int_equal(pthread_create(&t[i], NULL, publisher, &a[i]), 0);
        for (int i = 0; i < 2; i++)
            pthread_join(t[i], NULL);
        repo_publish_no_renameat2 = 0;
        assert_int_equal(a[0].rc, 0);
        assert_int_equal(a[1].rc, 0);
        eng_repo_entry *e = NULL;
        int n = 0;
        eng_error err;
        assert_int_equal(eng_repo_list(repo, &e, &n, &err), 0);
        assert_int_equal(n, 6); /* six distinct versions, nothing else */
        assert_int_equal(count_entries(repo), 6);
        for (int i = 0; i < n; i++) {
            assert_true(e[i].has_sig);
            expect_ok(tu_path("%s/%s", repo, e[i].name), NULL);
        }
        for (int i = 0; i < 3; i++)
            expect_ok(tu_path("%s/%s", repo, a[0].names[i]), f->pub);
        free(e);
    }
}

/* ------------------------------------------------------------ pin, current */

static void test_repo_pin_current(void **state)
{
    fx *f = *state;
    char repo[128];
    snprintf(repo, sizeof repo, "%s/pins", f->root);
    char v[ENG_REPO_NAME_MAX + 1];
    eng_error err = {0};
    assert_int_equal(eng_repo_current(repo, NULL, v, sizeof v, &err), ENG_EIO);
    for (int i = 0; i < 3; i++)
        assert_int_equal(eng_repo_publish(f->model, repo, f->key, NULL, v, sizeof v, &err), 0);
    assert_int_equal(eng_repo_pin_get(repo, v, sizeof v, &err), 0);
    assert_int_equal(eng_repo_current(repo, f->pub, v, sizeof v, &err), 0);
    assert_string_equal(v, "v000003");
    /* Pin (rollback) and read it back; PIN holds the name and a newline. */
    assert_int_equal(eng_repo_pin_set(repo, "v000001", &err), 0);
    assert_int_equal(eng_repo_pin_get(repo, v, sizeof v, &err), 1);
    assert_string_equal(v, "v000001");
    char *pin = tu_read_file(tu_path("%s/PIN", repo), NULL);
    assert_string_equal(pin, "v000001\n");
    free(pin);
    assert_int_equal(eng_repo_current(repo, f->pub, v, sizeof v, &err), 0);
    assert_string_equal(v, "v000001");
    assert_int_equal(count_entries(repo), 4); /* no temporary file left */
    /* Unknown, invalid, incomplete versions cannot be pinned. */
    assert_int_equal(eng_repo_pin_set(repo, "v000009", &err), ENG_EINVAL);
    assert_int_equal(eng_repo_pin_set(repo, "../x", &err), ENG_EINVAL);
    assert_int_equal(mkdir(tu_path("%s/v000010", repo), 0755), 0);
    assert_int_equal(eng_repo_pin_set(repo, "v000010", &err), ENG_EINVAL);
    assert_int_equal(eng_repo_pin_get(repo, v, sizeof v, &err), 1);
    assert_string_equal(v, "v000001");
    /* A pinned version that no longer verifies: the newest good one is picked. */
    write_str(tu_path("%s/v000001/config.json", repo), "{}");
    assert_int_equal(eng_repo_current(repo, f->pub, v, sizeof v, &err), 0);
    assert_string_equal(v, "v000003");
    /* The newest is tampered too: the one before. */
    write_str(tu_path("%s/v000003/extra", repo), "x");
    assert_int_equal(eng_repo_current(repo, f->pub, v, sizeof v, &err), 0);
    assert_string_equal(v, "v000002");
    /* Wrong key for all: none qualifies, and err says why. */
    assert_int_equal(eng_repo_current(repo, f->pub2, v, sizeof v, &err), ENG_EIO);
    assert_non_null(strstr(err.msg, "another key"));
    /* Unpin, twice (no pin is fine). */
    assert_int_equal(eng_repo_pin_set(repo, NULL, &err), 0);
    assert_int_equal(eng_repo_pin_set(repo, NULL, &err), 0);
    assert_int_equal(eng_repo_pin_get(repo, v, sizeof v, &err), 0);
    /* A PIN file with junk is an error, not a version. */
    write_str(tu_path("%s/PIN", repo), "../../etc\n");
    assert_int_equal(eng_repo_pin_get(repo, v, sizeof v, &err), ENG_EFORMAT);
    write_str(tu_path("%s/PIN", repo), "v000002\r\n");
    assert_int_equal(eng_repo_pin_get(repo, v, sizeof v, &err), 1);
    assert_string_equal(v, "v000002");
    assert_int_equal(eng_repo_pin_get(repo, v, 4, &err), ENG_EINVAL);
}

/* ------------------------------------------------------------------ prune */

static void publish_n(const fx *f, const char *repo, const char *key, int n)
{
    char v[ENG_REPO_NAME_MAX + 1];
    eng_error err = {0};
    for (int i = 0; i < n; i++)
        if (eng_repo_publish(f->model, repo, key, NULL, v, sizeof v, &err))
            fail_msg("publish: %s", err.msg);
}

/* The version folders left, as "v000001,v000003". */
static const char *versions_left(const char *repo)
{
    static char out[512];
    eng_repo_entry *e = NULL;
    int n = 0;
    eng_error err = {0};
    if (eng_repo_list(repo, &e, &n, &err))
        fail_msg("list: %s", err.msg);
    out[0] = 0;
    for (int i = 0; i < n; i++) {
        size_t l = strlen(out);
        snprintf(out + l, sizeof out - l, "%s%s", i ? "," : "", e[i].name);
    }
    free(e);
    return out;
}

static const char *removed_list(const eng_repo_prune_report *r)
{
    static char out[512];
    out[0] = 0;
    for (int i = 0; i < r->n_removed; i++) {
        size_t l = strlen(out);
        snprintf(out + l, sizeof out - l, "%s%s", i ? "," : "", r->removed[i].name);
    }
    return out;
}

static void prune_ok(const char *repo, int keep, const char *pub, const char *removed,
                     const char *left)
{
    eng_repo_prune_report r;
    eng_error err = {0};
    if (eng_repo_prune(repo, keep, pub, &r, &err))
        fail_msg("prune %s keep %d: %s", repo, keep, err.msg);
    assert_string_equal(removed_list(&r), removed);
    assert_string_equal(versions_left(repo), left);
    eng_repo_prune_report_free(&r);
}

/* Keeps the newest N; .tmp-* publishes, foreign files and folders, names that are
 * not v + 6 digits stay; a second prune removes nothing. */
static void test_repo_prune_keep(void **state)
{
    fx *f = *state;
    char repo[128];
    snprintf(repo, sizeof repo, "%s/prune", f->root);
    publish_n(f, repo, f->key, 5);
    assert_int_equal(mkdir(tu_path("%s/.tmp-abc123", repo), 0755), 0); /* publish in progress */
    write_str(tu_path("%s/.tmp-abc123/config.json", repo), "{}");
    write_str(tu_path("%s/README", repo), "notes");
    assert_int_equal(mkdir(tu_path("%s/archive", repo), 0755), 0);
    assert_int_equal(mkdir(tu_path("%s/v12", repo), 0755), 0);
    assert_int_equal(mkdir(tu_path("%s/v000001-old", repo), 0755), 0);
    eng_repo_prune_report r;
    eng_error err = {0};
    if (eng_repo_prune(repo, 2, f->pub, &r, &err))
        fail_msg("prune: %s", err.msg);
    assert_string_equal(removed_list(&r), "v000001,v000002,v000003");
    assert_string_equal(r.current, "v000005");
    assert_int_equal(r.n_kept, 2);
    assert_int_equal(r.leftovers, 0);
    eng_repo_prune_report_free(&r);
    assert_string_equal(versions_left(repo), "archive,v000001-old,v000004,v000005,v12");
    assert_true(tu_exists(tu_path("%s/.tmp-abc123/config.json", repo)));
    assert_true(tu_exists(tu_path("%s/README", repo)));
    /* Nothing hidden is left behind: only what was there before. */
    assert_int_equal(count_entries(repo), 7);
    prune_ok(repo, 2, f->pub, "", "archive,v000001-old,v000004,v000005,v12");
    /* Digest-only verification (no key) works the same. */
    prune_ok(repo, 1, NULL, "v000004", "archive,v000001-old,v000005,v12");
}

/* The pinned and the current version are never removed, even when old; invalid
 * versions go only when older than the current one. */
static void test_repo_prune_pinned_current(void **state)
{
    fx *f = *state;
    char repo[128];
    eng_error err = {0};
    snprintf(repo, sizeof repo, "%s/p1", f->root);
    publish_n(f, repo, f->key, 5);
    assert_int_equal(eng_repo_pin_set(repo, "v000001", &err), 0);
    /* Pinned = current = the oldest: it and the newest stay with keep 2. */
    prune_ok(repo, 2, f->pub, "v000002,v000003,v000004", "v000001,v000005");
    /* keep 1: the pin, and the newest folder stays so its name is never reused. */
    prune_ok(repo, 1, f->pub, "", "v000001,v000005");
    char v[ENG_REPO_NAME_MAX + 1];
    assert_int_equal(eng_repo_publish(f->model, repo, f->key, NULL, v, sizeof v, &err), 0);
    assert_string_equal(v, "v000006");
    prune_ok(repo, 1, f->pub, "v000005", "v000001,v000006");

    /* A pinned version that does not verify is still kept (not current). */
    snprintf(repo, sizeof repo, "%s/p2", f->root);
    publish_n(f, repo, f->key, 4);
    assert_int_equal(eng_repo_pin_set(repo, "v000002", &err), 0);
    write_str(tu_path("%s/v000002/config.json", repo), "{}");
    prune_ok(repo, 1, f->pub, "v000001,v000003", "v000002,v000004");

    /* The newest ones do not verify: the current one is older; the invalid newer
     * ones stay, the invalid older one goes, keep counts valid versions. */
    snprintf(repo, sizeof repo, "%s/p3", f->root);
    publish_n(f, repo, NULL, 1);     /* v1: digest-only, refused with a key */
    publish_n(f, repo, f->key, 4);   /* v2..v5 */
    write_str(tu_path("%s/v000005/extra", repo), "x");
    write_str(tu_path("%s/v000004/config.json", repo), "{}");
    assert_int_equal(mkdir(tu_path("%s/v000006", repo), 0755), 0); /* no model.sig yet */
    prune_ok(repo, 2, f->pub, "v000001", "v000002,v000003,v000004,v000005,v000006");
    prune_ok(repo, 1, f->pub, "v000002", "v000003,v000004,v000005,v000006");
    /* An incomplete folder older than the current one is old too. */
    snprintf(repo, sizeof repo, "%s/p4", f->root);
    publish_n(f, repo, f->key, 2);
    assert_int_equal(rename(tu_path("%s/v000001/model.sig", repo),
                            tu_path("%s/v000001/x.sig", repo)), 0);
    prune_ok(repo, 5, f->pub, "v000001", "v000002");
}

/* Leftovers of a crashed prune (a hidden .pruned-* folder) are invisible to the
 * listing and deleted by the next prune; other hidden names are not touched. */
static void test_repo_prune_leftovers(void **state)
{
    fx *f = *state;
    char repo[128];
    snprintf(repo, sizeof repo, "%s/left", f->root);
    publish_n(f, repo, f->key, 3);
    /* A prune that died after its rename. */
    assert_int_equal(rename(tu_path("%s/v000001", repo),
                            tu_path("%s/.pruned-v000001-2147483000", repo)), 0);
    assert_int_equal(mkdir(tu_path("%s/.pruned-v000009-1", repo), 0755), 0);
    assert_int_equal(mkdir(tu_path("%s/.pruned-v000009-1/sub", repo), 0755), 0);
    write_str(tu_path("%s/.pruned-v000009-1/sub/x", repo), "x");
    assert_int_equal(mkdir(tu_path("%s/.tmp-XYZ", repo), 0755), 0);
    assert_string_equal(versions_left(repo), "v000002,v000003");
    eng_repo_prune_report r;
    eng_error err = {0};
    assert_int_equal(eng_repo_prune(repo, 5, f->pub, &r, &err), 0);
    assert_int_equal(r.n_removed, 0);
    assert_int_equal(r.leftovers, 2);
    assert_int_equal(r.n_kept, 2);
    eng_repo_prune_report_free(&r);
    assert_false(tu_exists(tu_path("%s/.pruned-v000001-2147483000", repo)));
    assert_false(tu_exists(tu_path("%s/.pruned-v000009-1", repo)));
    assert_true(tu_exists(tu_path("%s/.tmp-XYZ", repo)));
    assert_string_equal(versions_left(repo), "v000002,v000003");
}

/* keep < 1, a missing folder, an empty repository, a wrong key, a junk PIN. */
static void test_repo_prune_refusals(void **state)
{
    fx *f = *state;
    char repo[128];
    snprintf(repo, sizeof repo, "%s/ref", f->root);
    eng_error err = {0};
    eng_repo_prune_report r;
    assert_int_equal(eng_repo_prune(repo, 1, NULL, &r, &err), ENG_EIO); /* no folder */
    assert_int_equal(r.n_removed, 0);
    assert_int_equal(mkdir(repo, 0755), 0);
    assert_int_equal(eng_repo_prune(repo, 1, NULL, &r, &err), 0); /* empty: nothing to do */
    assert_int_equal(r.n_removed, 0);
    publish_n(f, repo, f->key, 3);
    assert_int_equal(eng_repo_prune(repo, 0, f->pub, &r, &err), ENG_EINVAL);
    assert_non_null(strstr(err.msg, "at least 1"));
    assert_int_equal(eng_repo_prune(repo, -3, f->pub, NULL, &err), ENG_EINVAL);
    /* None verifies with this key: nothing removed, and the reason. */
    assert_int_equal(eng_repo_prune(repo, 1, f->pub2, &r, &err), ENG_EIO);
    assert_non_null(strstr(err.msg, "nothing pruned"));
    assert_int_equal(r.n_removed, 0);
    write_str(tu_path("%s/PIN", repo), "../junk\n");
    assert_true(eng_repo_prune(repo, 1, f->pub, &r, &err) < 0);
    assert_int_equal(r.n_removed, 0);
    assert_string_equal(versions_left(repo), "v000001,v000002,v000003");
    assert_int_equal(unlink(tu_path("%s/PIN", repo)), 0);
    prune_ok(repo, 1, f->pub, "v000001,v000002", "v000003");
}

TEST_GROUP(repo)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, fx_setup, fx_teardown)
    static const struct CMUnitTest t[] = {
        cmocka_unit_test(test_repo_names),
        cmocka_unit_test(test_repo_base64),
        T(test_repo_sign_verify),
        T(test_repo_tampered),
        T(test_repo_extra_missing),
        T(test_repo_not_regular),
        T(test_repo_wrong_key),
        T(test_repo_unsigned),
        T(test_repo_malformed_bundles),
        T(test_repo_payload_swap),
        T(test_repo_publish),
        T(test_repo_publish_failure_leaves_nothing),
        T(test_repo_publish_readonly),
        T(test_repo_publish_concurrent),
        T(test_repo_pin_current),
        T(test_repo_prune_keep),
        T(test_repo_prune_pinned_current),
        T(test_repo_prune_leftovers),
        T(test_repo_prune_refusals),
    };
#undef T
    TEST_GROUP_RETURN(t);
}
