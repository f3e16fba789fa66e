/* b64.c - base64 for the DSSE envelope (payload, signatures). The encoder writes
 * the standard alphabet with padding, as the model-signing tool does; the decoder
 * also takes the URL-safe alphabet and missing padding (protobuf JSON accepts both),
 * and refuses anything else: whitespace, stray '=', a dangling 6-bit group. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "repo_int.h"

static const char enc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int repo_b64_encode(const unsigned char *in, size_t len, char **out)
{
    if (len > (SIZE_MAX - 1) / 4 * 3 - 3)
        return ENG_ETOOLONG;
    size_t olen = (len + 2) / 3 * 4;
    char *o = malloc(olen + 1), *p = o;
    if (!o)
        return ENG_ENOMEM;
    size_t i = 0;
    for (; i + 3 <= len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        *p++ = enc[v >> 18];
        *p++ = enc[(v >> 12) & 63];
        *p++ = enc[(v >> 6) & 63];
        *p++ = enc[v & 63];
    }
    if (i < len) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < len ? (uint32_t)in[i + 1] << 8 : 0);
        *p++ = enc[v >> 18];
        *p++ = enc[(v >> 12) & 63];
        *p++ = i + 1 < len ? enc[(v >> 6) & 63] : '=';
        *p++ = '=';
    }
    *p = 0;
    *out = o;
    return 0;
}

static int dec(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+' || c == '-')
        return 62;
    if (c == '/' || c == '_')
        return 63;
    return -1;
}

int repo_b64_decode(const char *s, size_t slen, unsigned char **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    size_t n = slen;
    /* Up to two '=' of padding, only where a 4-character group ends. */
    size_t pad = 0;
    while (n > 0 && s[n - 1] == '=' && pad < 2) {
        n--;
        pad++;
    }
    if (pad && (slen % 4) != 0)
        return ENG_EFORMAT;
    if (n % 4 == 1)
        return ENG_EFORMAT;
    if (pad && (n % 4) + pad != 4)
        return ENG_EFORMAT;
    unsigned char *o = malloc(n / 4 * 3 + 3);
    if (!o)
        return ENG_ENOMEM;
    size_t k = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        int v = dec((unsigned char)s[i]);
        if (v < 0) {
            free(o);
            return ENG_EFORMAT;
        }
        acc = (acc << 6 | (uint32_t)v) & 0xffffff;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            o[k++] = (unsigned char)(acc >> bits);
        }
    }
    /* The bits left over must be zero (canonical encoding). */
    if (bits && (acc & ((1u << bits) - 1))) {
        free(o);
        return ENG_EFORMAT;
    }
    o[k] = 0;
    *out = o;
    *len = k;
    return 0;
}
