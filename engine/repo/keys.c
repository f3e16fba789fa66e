/* keys.c - ECDSA P-256 keys for model.sig with OpenSSL EVP: loading PEM keys, the
 * bundle's key hint (hex SHA-256 of the public key's SubjectPublicKeyInfo PEM, as the
 * model-signing tool computes it), the DSSE pre-authentication encoding, sign, verify. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "repo_int.h"
#include "core/util.h"

/* Never prompt for a passphrase on the terminal: encrypted keys are refused. */
static int no_password(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return 0;
}

void repo_key_free(EVP_PKEY *key)
{
    EVP_PKEY_free(key);
}

static int key_hint(EVP_PKEY *key, char hint[65])
{
    BIO *b = BIO_new(BIO_s_mem());
    if (!b || PEM_write_bio_PUBKEY(b, key) != 1) {
        BIO_free(b);
        return -1;
    }
    char *data = NULL;
    long len = BIO_get_mem_data(b, &data);
    unsigned char d[32];
    unsigned dl = 0;
    int ok = len > 0 && EVP_Digest(data, (size_t)len, d, &dl, EVP_sha256(), NULL) == 1;
    BIO_free(b);
    if (!ok)
        return -1;
    repo_hex(d, 32, hint);
    return 0;
}

int repo_key_load(const char *path, int private_key, EVP_PKEY **key, char hint[65],
                  eng_error *err)
{
    *key = NULL;
    const char *what = private_key ? "private key" : "public key";
    char *pem = NULL;
    size_t len = 0;
    eng_error e;
    int rc = repo_read_small(path, REPO_KEY_MAX, 1, &pem, &len, NULL, &e);
    if (rc)
        return eng_fail(err, rc, "cannot read the %s: %s", what, e.msg);
    BIO *b = BIO_new_mem_buf(pem, (int)len);
    EVP_PKEY *k = NULL;
    if (b)
        k = private_key ? PEM_read_bio_PrivateKey(b, NULL, no_password, NULL)
                        : PEM_read_bio_PUBKEY(b, NULL, no_password, NULL);
    BIO_free(b);
    free(pem);
    ERR_clear_error();
    if (!k)
        return eng_fail(err, ENG_EFORMAT, "%s: not a PEM %s%s", path, what,
                        private_key ? " (or an encrypted one, which is not supported)"
                                    : " (BEGIN PUBLIC KEY)");
    char group[64] = "";
    size_t glen = 0;
    if (EVP_PKEY_get_base_id(k) != EVP_PKEY_EC ||
        EVP_PKEY_get_group_name(k, group, sizeof group, &glen) != 1 ||
        (strcmp(group, "prime256v1") != 0 && strcmp(group, "P-256") != 0)) {
        EVP_PKEY_free(k);
        ERR_clear_error();
        return eng_fail(err, ENG_EUNSUPPORTED, "%s: not an ECDSA P-256 (prime256v1) %s%s%s",
                        path, what, *group ? ", curve " : "", group);
    }
    if (key_hint(k, hint) != 0) {
        EVP_PKEY_free(k);
        ERR_clear_error();
        return eng_fail(err, ENG_EFORMAT, "%s: cannot encode the public key", path);
    }
    *key = k;
    return 0;
}

int repo_pae(const char *type, const unsigned char *payload, size_t len, unsigned char **out,
             size_t *out_len)
{
    char head[256];
    int h = snprintf(head, sizeof head, "DSSEv1 %zu %s %zu ", strlen(type), type, len);
    if (h < 0 || (size_t)h >= sizeof head)
        return ENG_EINVAL;
    unsigned char *o = malloc((size_t)h + len + 1);
    if (!o)
        return ENG_ENOMEM;
    memcpy(o, head, (size_t)h);
    memcpy(o + h, payload, len);
    *out = o;
    *out_len = (size_t)h + len;
    return 0;
}

int repo_key_sign(EVP_PKEY *key, const unsigned char *msg, size_t len, unsigned char **sig,
                  size_t *sig_len, eng_error *err)
{
    *sig = NULL;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    size_t n = 0;
    unsigned char *s = NULL;
    if (!ctx || EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, key) != 1 ||
        EVP_DigestSign(ctx, NULL, &n, msg, len) != 1 || !(s = malloc(n)) ||
        EVP_DigestSign(ctx, s, &n, msg, len) != 1) {
        free(s);
        EVP_MD_CTX_free(ctx);
        ERR_clear_error();
        return eng_fail(err, ENG_EINVAL, "ECDSA signing failed");
    }
    EVP_MD_CTX_free(ctx);
    *sig = s;
    *sig_len = n;
    return 0;
}

int repo_key_verify(EVP_PKEY *key, const unsigned char *msg, size_t len, const unsigned char *sig,
                    size_t sig_len)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = ctx && EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, key) == 1 &&
             EVP_DigestVerify(ctx, sig, sig_len, msg, len) == 1;
    EVP_MD_CTX_free(ctx);
    ERR_clear_error();
    return ok;
}
