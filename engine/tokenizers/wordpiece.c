/* wordpiece.c - the WordPiece tokenizer of BERT-family models.
 *
 * Behaves like the Hugging Face fast tokenizer (BertNormalizer +
 * BertPreTokenizer + WordPiece + Template/BertProcessing): same ids, and the
 * same offsets expressed in bytes of the original text.
 *
 * The tokenizer is immutable after eng_tokenizer_load, so any number of
 * threads may encode with one tokenizer at once; encode keeps its working
 * state on the stack (growing to the heap for very long words).
 *
 * Pipeline of one text: validate UTF-8 -> split out added tokens ([CLS],
 * [MASK], ... written literally in the text) -> per character: normalise
 * (clean, CJK, strip accents, lowercase) and classify for the pre-tokenizer
 * (space / punctuation / word) -> each word: greedy longest-match WordPiece.
 * Every normalised character remembers the byte span of the original
 * character it came from; a token's offsets are [first.start, last.end).
 *
 * Known simplifications (none affects BERT-family tokenizers as published):
 * added tokens are matched verbatim, ignoring their lstrip/rstrip/single_word/
 * normalized flags; accents are stripped per character, without NFD's
 * canonical reordering (only the order of non-Mn combining marks with a
 * nonzero combining class could differ, and Mn marks are dropped anyway).
 */
#include "tokenizers/wordpiece.h"

#include <cjson/cJSON.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <utf8proc.h>

#include "core/util.h"

#define WP_DEFAULT_MAX_LEN 512
#define WP_NAME_MAX 4096

/* ------------------------------------------------------------ unicode tables
 * The reference tokenizer classifies characters with older Unicode tables
 * than utf8proc's; these code points differ and follow the reference (found
 * by comparing every code point, see tests/reference/make_tokenizer_goldens.py). */

typedef struct { uint32_t lo, hi; } wp_range;

/* Code points whose "is punctuation" answer differs from utf8proc's P*. */
static const wp_range wp_punct_flip[] = {
    {0x61d, 0x61d}, {0x9fd, 0x9fd}, {0xa76, 0xa76}, {0xc77, 0xc77}, {0xc84, 0xc84},
    {0x166d, 0x166d}, {0x1b7d, 0x1b7e}, {0x2e43, 0x2e4f}, {0x2e52, 0x2e5d},
    {0x10ead, 0x10ead}, {0x10f55, 0x10f59}, {0x10f86, 0x10f89}, {0x111c9, 0x111c9},
    {0x1144b, 0x1144f}, {0x1145a, 0x1145b}, {0x1145d, 0x1145d}, {0x11660, 0x1166c},
    {0x116b9, 0x116b9}, {0x1183b, 0x1183b}, {0x11944, 0x11946}, {0x119e2, 0x119e2},
    {0x11a3f, 0x11a46}, {0x11a9a, 0x11a9c}, {0x11a9e, 0x11aa2}, {0x11b00, 0x11b09},
    {0x11c41, 0x11c45}, {0x11c70, 0x11c71}, {0x11ef7, 0x11ef8}, {0x11f43, 0x11f4f},
    {0x11fff, 0x11fff}, {0x12ff1, 0x12ff2}, {0x16e97, 0x16e9a}, {0x16fe2, 0x16fe2},
    {0x1e95e, 0x1e95f},
};

/* Code points whose "is Cc/Cf/Co" answer differs from utf8proc's. */
static const wp_range wp_control_flip[] = {
    {0x890, 0x891}, {0x8e2, 0x8e2}, {0x110cd, 0x110cd}, {0x13430, 0x1343f},
};

/* Code points whose "is a nonspacing mark (Mn)" answer differs from utf8proc's. */
static const wp_range wp_mn_flip[] = {
    {0x7fd, 0x7fd}, {0x898, 0x89f}, {0x8ca, 0x8e1}, {0x9fe, 0x9fe}, {0xafa, 0xaff}, {0xb55,
    0xb55}, {0xc04, 0xc04}, {0xc3c, 0xc3c}, {0xd00, 0xd00}, {0xd3b, 0xd3c}, {0xd81, 0xd81},
    {0xeba, 0xeba}, {0xece, 0xece}, {0x1734, 0x1734}, {0x180f, 0x180f}, {0x1885, 0x1886},
    {0x1abf, 0x1ace}, {0x1df6, 0x1dfb}, {0xa82c, 0xa82c}, {0xa8c5, 0xa8c5}, {0xa8ff,
    0xa8ff}, {0xa9bd, 0xa9bd}, {0x10d24, 0x10d27}, {0x10eab, 0x10eac}, {0x10efd, 0x10eff},
    {0x10f46, 0x10f50}, {0x10f82, 0x10f85}, {0x11070, 0x11070}, {0x11073, 0x11074},
    {0x110c2, 0x110c2}, {0x111c9, 0x111c9}, {0x111cf, 0x111cf}, {0x1123e, 0x1123e},
    {0x11241, 0x11241}, {0x1133b, 0x1133b}, {0x11438, 0x1143f}, {0x11442, 0x11444},
    {0x11446, 0x11446}, {0x1145e, 0x1145e}, {0x1182f, 0x11837}, {0x11839, 0x1183a},
    {0x1193b, 0x1193c}, {0x1193e, 0x1193e}, {0x11943, 0x11943}, {0x119d4, 0x119d7},
    {0x119da, 0x119db}, {0x119e0, 0x119e0}, {0x11a01, 0x11a0a}, {0x11a33, 0x11a38},
    {0x11a3b, 0x11a3e}, {0x11a47, 0x11a47}, {0x11a51, 0x11a56}, {0x11a59, 0x11a5b},
    {0x11a8a, 0x11a96}, {0x11a98, 0x11a99}, {0x11c30, 0x11c36}, {0x11c38, 0x11c3d},
    {0x11c3f, 0x11c3f}, {0x11c92, 0x11ca7}, {0x11caa, 0x11cb0}, {0x11cb2, 0x11cb3},
    {0x11cb5, 0x11cb6}, {0x11d31, 0x11d36}, {0x11d3a, 0x11d3a}, {0x11d3c, 0x11d3d},
    {0x11d3f, 0x11d45}, {0x11d47, 0x11d47}, {0x11d90, 0x11d91}, {0x11d95, 0x11d95},
    {0x11d97, 0x11d97}, {0x11ef3, 0x11ef4}, {0x11f00, 0x11f01}, {0x11f36, 0x11f3a},
    {0x11f40, 0x11f40}, {0x11f42, 0x11f42}, {0x13440, 0x13440}, {0x13447, 0x13455},
    {0x16f4f, 0x16f4f}, {0x16fe4, 0x16fe4}, {0x1cf00, 0x1cf2d}, {0x1cf30, 0x1cf46},
    {0x1e000, 0x1e006}, {0x1e008, 0x1e018}, {0x1e01b, 0x1e021}, {0x1e023, 0x1e024},
    {0x1e026, 0x1e02a}, {0x1e08f, 0x1e08f}, {0x1e130, 0x1e136}, {0x1e2ae, 0x1e2ae},
    {0x1e2ec, 0x1e2ef}, {0x1e4ec, 0x1e4ef}, {0x1e944, 0x1e94a}
};

static int wp_in(const wp_range *r, size_t n, uint32_t cp)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < r[mid].lo)
            hi = mid;
        else if (cp > r[mid].hi)
            lo = mid + 1;
        else
            return 1;
    }
    return 0;
}

#define WP_IN(tab, cp) wp_in(tab, sizeof tab / sizeof tab[0], cp)

/* Unicode White_Space (what the reference's char::is_whitespace tests). */
int eng_wp_is_space(uint32_t cp)
{
    if (cp < 0x80)
        return cp == ' ' || (cp >= 9 && cp <= 13);
    return cp == 0x85 || cp == 0xa0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200a) ||
           cp == 0x2028 || cp == 0x2029 || cp == 0x202f || cp == 0x205f || cp == 0x3000;
}

/* clean_text's "control": Cc, Cf, Co except tab, newline, carriage return. */
static int wp_is_control(uint32_t cp)
{
    if (cp == '\t' || cp == '\n' || cp == '\r')
        return 0;
    if (cp < 0x20 || cp == 0x7f)
        return 1;
    if (cp < 0x80)
        return 0;
    utf8proc_category_t c = utf8proc_category((utf8proc_int32_t)cp);
    int ctl = c == UTF8PROC_CATEGORY_CC || c == UTF8PROC_CATEGORY_CF || c == UTF8PROC_CATEGORY_CO;
    return ctl ^ WP_IN(wp_control_flip, cp);
}

/* BERT punctuation: all non-alphanumeric ASCII symbols, plus Unicode P*. */
int eng_wp_is_punct(uint32_t cp)
{
    if (cp < 0x80)
        return (cp >= 33 && cp <= 47) || (cp >= 58 && cp <= 64) || (cp >= 91 && cp <= 96) ||
               (cp >= 123 && cp <= 126);
    utf8proc_category_t c = utf8proc_category((utf8proc_int32_t)cp);
    return (c >= UTF8PROC_CATEGORY_PC && c <= UTF8PROC_CATEGORY_PO) ^ WP_IN(wp_punct_flip, cp);
}

/* The CJK ideograph blocks the reference isolates (not all of Unicode's). */
static int wp_is_cjk(uint32_t cp)
{
    return (cp >= 0x4e00 && cp <= 0x9fff) || (cp >= 0x3400 && cp <= 0x4dbf) ||
           (cp >= 0xf900 && cp <= 0xfaff) || (cp >= 0x20000 && cp <= 0x2a6df) ||
           (cp >= 0x2a700 && cp <= 0x2b81f) || (cp >= 0x2b920 && cp <= 0x2ceaf) ||
           (cp >= 0x2f800 && cp <= 0x2fa1f);
}

int eng_wp_norm_char(unsigned flags, uint32_t cp, uint32_t *out, int *cjk)
{
    *cjk = 0;
    if (flags & ENG_WP_CLEAN) {
        if (cp == 0 || cp == 0xfffd || wp_is_control(cp))
            return 0;
        if (eng_wp_is_space(cp))
            cp = ' ';
    }
    if (flags & ENG_WP_CJK)
        *cjk = wp_is_cjk(cp);
    if (cp < 0x80) { /* fast path: ASCII has no accents or special cases */
        out[0] = (flags & ENG_WP_LOWER) && cp >= 'A' && cp <= 'Z' ? cp + 32 : cp;
        return 1;
    }
    int n = 1;
    out[0] = cp;
    if (flags & ENG_WP_STRIP) {
        utf8proc_int32_t d[8];
        int bound = 0;
        utf8proc_ssize_t k = utf8proc_decompose_char((utf8proc_int32_t)cp, d, 8,
                                                     UTF8PROC_DECOMPOSE, &bound);
        n = 0;
        /* k > 8 cannot happen for canonical decompositions; U+11938 gained
         * its decomposition after the reference's Unicode version. */
        if (k < 0 || k > 8 || cp == 0x11938) {
            d[0] = (utf8proc_int32_t)cp;
            k = 1;
        }
        for (utf8proc_ssize_t i = 0; i < k; i++)
            if ((utf8proc_category(d[i]) == UTF8PROC_CATEGORY_MN) ==
                WP_IN(wp_mn_flip, (uint32_t)d[i]))
                out[n++] = (uint32_t)d[i];
    }
    if (flags & ENG_WP_LOWER) {
        int m = 0;
        uint32_t tmp[8];
        for (int i = 0; i < n; i++) {
            if (out[i] == 0x130) { /* the one unconditional 1->2 lowercase mapping */
                tmp[m++] = 'i';
                tmp[m++] = 0x307;
            } else {
                tmp[m++] = (uint32_t)utf8proc_tolower((utf8proc_int32_t)out[i]);
            }
        }
        memcpy(out, tmp, (size_t)m * sizeof *out);
        n = m;
    }
    return n;
}

/* ------------------------------------------------------------------- UTF-8 */

long eng_wp_utf8_invalid_at(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < len) {
        unsigned c = p[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t need;
        unsigned lo = 0x80, hi = 0xbf; /* allowed range of the second byte */
        if (c >= 0xc2 && c <= 0xdf) {
            need = 1;
        } else if (c >= 0xe0 && c <= 0xef) {
            need = 2;
            if (c == 0xe0)
                lo = 0xa0; /* overlong */
            else if (c == 0xed)
                hi = 0x9f; /* surrogates */
        } else if (c >= 0xf0 && c <= 0xf4) {
            need = 3;
            if (c == 0xf0)
                lo = 0x90; /* overlong */
            else if (c == 0xf4)
                hi = 0x8f; /* above U+10FFFF */
        } else {
            return (long)i; /* continuation byte, C0/C1 overlong, F5..FF */
        }
        if (len - i <= need)
            return (long)i; /* truncated */
        if (p[i + 1] < lo || p[i + 1] > hi)
            return (long)i;
        for (size_t k = 2; k <= need; k++)
            if ((p[i + k] & 0xc0) != 0x80)
                return (long)i;
        i += need + 1;
    }
    return -1;
}

/* Decode one code point of already validated UTF-8; *n gets its length. */
static uint32_t wp_decode(const unsigned char *p, int *n)
{
    if (p[0] < 0x80) {
        *n = 1;
        return p[0];
    }
    if (p[0] < 0xe0) {
        *n = 2;
        return ((uint32_t)(p[0] & 0x1f) << 6) | (p[1] & 0x3f);
    }
    if (p[0] < 0xf0) {
        *n = 3;
        return ((uint32_t)(p[0] & 0x0f) << 12) | ((uint32_t)(p[1] & 0x3f) << 6) | (p[2] & 0x3f);
    }
    *n = 4;
    return ((uint32_t)(p[0] & 0x07) << 18) | ((uint32_t)(p[1] & 0x3f) << 12) |
           ((uint32_t)(p[2] & 0x3f) << 6) | (p[3] & 0x3f);
}

static int wp_encode_utf8(uint32_t cp, char *o)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xc0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xe0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        o[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    o[0] = (char)(0xf0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    o[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* --------------------------------------------------------------- tokenizer */

typedef struct wp_slot {
    uint64_t hash;
    const char *s; /* NULL: empty slot */
    uint32_t len;
    int32_t id;
} wp_slot;

typedef struct wp_added {
    char *s;
    size_t len;
    int32_t id;
} wp_added;

struct eng_tokenizer {
    char *arena;       /* all token strings, NUL-terminated */
    const char **id_str; /* id -> token (NULL for unused ids) */
    int nid;           /* ids are [0, nid) */
    wp_slot *table;    /* open addressing, power-of-two size */
    size_t mask;
    size_t max_tok_len; /* longest token in bytes: bounds the WordPiece search */
    wp_added *added;   /* tokens matched verbatim in the raw text */
    int nadded;
    unsigned char added_first[256]; /* first bytes of added tokens */
    unsigned flags;    /* ENG_WP_* */
    char prefix[32];   /* continuing_subword_prefix */
    size_t prefix_len;
    uint64_t prefix_hash;
    int max_chars;     /* max_input_chars_per_word */
    int32_t unk_id, pad_id;
    int32_t cls_id, sep_id, sep2_id; /* [CLS] A [SEP] (B [SEP2]) */
    int32_t type_a, type_b, type_cls, type_sep, type_sep2;
    int max_len;
};

#define WP_MAX_ADDED 4096
#define WP_MAX_ADDED_LEN 256

#define FNV_OFFSET 0xcbf29ce484222325ULL
#define FNV_PRIME 0x100000001b3ULL

static uint64_t wp_hash(uint64_t h, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= FNV_PRIME;
    }
    return h;
}

/* Id of prefix (when cont) + s[0, n) whose wp_hash is h, or -1. */
static int32_t wp_lookup_h(const eng_tokenizer *t, int cont, const char *s, size_t n,
                           uint64_t h)
{
    size_t plen = cont ? t->prefix_len : 0;
    if (n + plen > t->max_tok_len)
        return -1;
    for (size_t i = (size_t)h & t->mask;; i = (i + 1) & t->mask) {
        const wp_slot *sl = &t->table[i];
        if (!sl->s)
            return -1;
        if (sl->hash == h && sl->len == n + plen && memcmp(sl->s, t->prefix, plen) == 0 &&
            memcmp(sl->s + plen, s, n) == 0)
            return sl->id;
    }
}

/* Id of prefix (when cont) + s[0, n), or -1. */
static int32_t wp_lookup(const eng_tokenizer *t, int cont, const char *s, size_t n)
{
    size_t plen = cont ? t->prefix_len : 0;
    if (n + plen > t->max_tok_len)
        return -1;
    return wp_lookup_h(t, cont, s, n, wp_hash(cont ? t->prefix_hash : FNV_OFFSET, s, n));
}

/* ----------------------------------------------------------------- loading */

/* A token string with its id, collected while parsing; s borrows the parse buffer. */
typedef struct wp_entry {
    const char *s;
    size_t len;
    int32_t id;
} wp_entry;

typedef struct wp_entries {
    wp_entry *v;
    size_t n, cap;
} wp_entries;

static int wp_entries_add(wp_entries *e, const char *s, size_t len, int32_t id)
{
    if (e->n == e->cap) {
        size_t ncap = e->cap ? e->cap * 2 : 1024;
        wp_entry *nv = realloc(e->v, ncap * sizeof *nv);
        if (!nv)
            return ENG_ENOMEM;
        e->v = nv;
        e->cap = ncap;
    }
    e->v[e->n++] = (wp_entry){s, len, id};
    return ENG_OK;
}

/* Build the arena, id table and hash table from the entries. A token listed
 * twice maps to its last id (as a Python dict built in file order would). */
static int wp_build_vocab(eng_tokenizer *t, const wp_entries *e, const char *file,
                          eng_error *err)
{
    size_t bytes = 0;
    int32_t maxid = -1;
    for (size_t i = 0; i < e->n; i++) {
        if (e->v[i].len > UINT32_MAX / 2)
            return eng_fail(err, ENG_EFORMAT, "%s: token %zu is too long", file, i);
        bytes += e->v[i].len + 1;
        if (e->v[i].id > maxid)
            maxid = e->v[i].id;
    }
    if (maxid < 0)
        return eng_fail(err, ENG_EFORMAT, "%s: the vocabulary is empty", file);
    size_t size = 16;
    while (size < 2 * e->n)
        size *= 2;
    t->arena = malloc(bytes);
    t->id_str = calloc((size_t)maxid + 1, sizeof *t->id_str);
    t->table = calloc(size, sizeof *t->table);
    if (!t->arena || !t->id_str || !t->table)
        return eng_fail(err, ENG_ENOMEM, "%s: out of memory for the vocabulary", file);
    t->nid = maxid + 1;
    t->mask = size - 1;
    char *a = t->arena;
    for (size_t i = 0; i < e->n; i++) {
        const wp_entry *en = &e->v[i];
        memcpy(a, en->s, en->len);
        a[en->len] = 0;
        if (!t->id_str[en->id])
            t->id_str[en->id] = a;
        if (en->len > t->max_tok_len)
            t->max_tok_len = en->len;
        uint64_t h = wp_hash(FNV_OFFSET, a, en->len);
        size_t k = (size_t)h & t->mask;
        while (t->table[k].s &&
               !(t->table[k].hash == h && t->table[k].len == en->len &&
                 memcmp(t->table[k].s, a, en->len) == 0))
            k = (k + 1) & t->mask;
        t->table[k] = (wp_slot){h, a, (uint32_t)en->len, en->id};
        a += en->len + 1;
    }
    return ENG_OK;
}

static int wp_add_added(eng_tokenizer *t, const char *s, int32_t id)
{
    size_t len = strlen(s);
    if (!len)
        return ENG_OK;
    /* Every added token is tried at every byte of a text whose byte starts one
     * (and checked against the others here): their count and length bound it. */
    if (t->nadded >= WP_MAX_ADDED || len > WP_MAX_ADDED_LEN)
        return ENG_EUNSUPPORTED;
    for (int i = 0; i < t->nadded; i++)
        if (t->added[i].len == len && memcmp(t->added[i].s, s, len) == 0)
            return ENG_OK;
    wp_added *na = realloc(t->added, (size_t)(t->nadded + 1) * sizeof *na);
    if (!na)
        return ENG_ENOMEM;
    t->added = na;
    char *c = malloc(len + 1);
    if (!c)
        return ENG_ENOMEM;
    memcpy(c, s, len + 1);
    t->added[t->nadded++] = (wp_added){c, len, id};
    t->added_first[(unsigned char)s[0]] = 1;
    return ENG_OK;
}

static int wp_set_prefix(eng_tokenizer *t, const char *p, const char *file, eng_error *err)
{
    size_t n = strlen(p);
    if (n >= sizeof t->prefix)
        return eng_fail(err, ENG_EUNSUPPORTED, "%s: continuing_subword_prefix is too long",
                        file);
    memcpy(t->prefix, p, n + 1);
    t->prefix_len = n;
    t->prefix_hash = wp_hash(FNV_OFFSET, p, n);
    return ENG_OK;
}

/* Special token string of a tokenizer_config.json key: "x" or {"content": "x"}. */
static const char *wp_cfg_token(const cJSON *cfg, const char *key, const char *dflt)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, key);
    if (cJSON_IsObject(v))
        v = cJSON_GetObjectItemCaseSensitive(v, "content");
    return cJSON_IsString(v) ? v->valuestring : dflt;
}

/* Boolean option: 1/0, or dflt when absent or null. */
static int wp_json_bool(const cJSON *o, const char *key, int dflt)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsBool(v) ? cJSON_IsTrue(v) : dflt;
}

/* ENG_WP_LOWER / _STRIP / _CJK from o's lowercase and Chinese-characters keys (both
 * default true) and strip_accents (defaults to the lowercase setting). */
static unsigned wp_case_flags(const cJSON *o, const char *lower_key, const char *cjk_key)
{
    int lower = wp_json_bool(o, lower_key, 1);
    return (wp_json_bool(o, cjk_key, 1) ? ENG_WP_CJK : 0) |
           (wp_json_bool(o, "strip_accents", lower) ? ENG_WP_STRIP : 0) |
           (lower ? ENG_WP_LOWER : 0);
}

static int wp_parse_json(const char *path, size_t max_bytes, char **buf, cJSON **out,
                         eng_error *err)
{
    size_t len;
    int rc = eng_read_file_max(path, max_bytes, buf, &len, err);
    if (rc)
        return rc;
    const char *end = NULL;
    *out = cJSON_ParseWithLengthOpts(*buf, len, &end, 0);
    if (!*out) {
        long at = end ? (long)(end - *buf) : -1;
        free(*buf);
        *buf = NULL;
        return eng_fail(err, ENG_EFORMAT, "%s: invalid JSON near byte %ld", path, at);
    }
    return ENG_OK;
}

/* tokenizer_config.json (optional): model_max_length; cfg stays for the caller. */
static int wp_read_config(eng_tokenizer *t, const char *dir, cJSON **cfg, char **buf,
                          eng_error *err)
{
    char path[WP_NAME_MAX];
    *cfg = NULL;
    *buf = NULL;
    t->max_len = WP_DEFAULT_MAX_LEN;
    if (eng_path_join(path, sizeof path, dir, "tokenizer_config.json"))
        return eng_fail(err, ENG_EINVAL, "%s: path too long", dir);
    if (access(path, F_OK) != 0)
        return ENG_OK; /* absent: defaults (present but unreadable, or not a regular file: refused) */
    int rc = wp_parse_json(path, ENG_MAX_CONFIG_BYTES, buf, cfg, err);
    if (rc)
        return rc;
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(*cfg, "model_max_length");
    /* transformers writes 1e30 for "no limit"; such a model gets BERT's 512. */
    if (cJSON_IsNumber(m) && m->valuedouble >= 2 && m->valuedouble <= 1e7) /* [CLS] [SEP] */
        t->max_len = (int)m->valuedouble;
    return ENG_OK;
}

static int wp_json_id(const cJSON *v, int32_t *id)
{
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 1e8 ||
        v->valuedouble != floor(v->valuedouble))
        return -1;
    *id = (int32_t)v->valuedouble;
    return 0;
}

/* Id of a special token of a TemplateProcessing "SpecialToken" item. */
static int wp_template_special(const cJSON *pp, const cJSON *item, int32_t *id, int32_t *type)
{
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(item, "SpecialToken");
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(st, "id");
    if (!cJSON_IsString(name))
        return -1;
    const cJSON *sp = cJSON_GetObjectItemCaseSensitive(pp, "special_tokens");
    const cJSON *def = cJSON_GetObjectItemCaseSensitive(sp, name->valuestring);
    const cJSON *ids = cJSON_GetObjectItemCaseSensitive(def, "ids");
    if (cJSON_GetArraySize(ids) != 1 || wp_json_id(cJSON_GetArrayItem(ids, 0), id))
        return -1;
    const cJSON *ty = cJSON_GetObjectItemCaseSensitive(st, "type_id");
    *type = cJSON_IsNumber(ty) ? ty->valueint : 0;
    return 0;
}

static int wp_template_seq(const cJSON *item, const char *which, int32_t *type)
{
    const cJSON *sq = cJSON_GetObjectItemCaseSensitive(item, "Sequence");
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(sq, "id");
    if (!cJSON_IsString(name) || strcmp(name->valuestring, which) != 0)
        return -1;
    const cJSON *ty = cJSON_GetObjectItemCaseSensitive(sq, "type_id");
    *type = cJSON_IsNumber(ty) ? ty->valueint : 0;
    return 0;
}

/* post_processor: only the BERT shapes "[CLS] A [SEP]" / "[CLS] A [SEP] B [SEP]". */
static int wp_parse_post(eng_tokenizer *t, const cJSON *pp, const char *file, eng_error *err)
{
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(pp, "type");
    if (cJSON_IsString(type) && strcmp(type->valuestring, "BertProcessing") == 0) {
        const cJSON *cls = cJSON_GetObjectItemCaseSensitive(pp, "cls");
        const cJSON *sep = cJSON_GetObjectItemCaseSensitive(pp, "sep");
        if (wp_json_id(cJSON_GetArrayItem(cls, 1), &t->cls_id) ||
            wp_json_id(cJSON_GetArrayItem(sep, 1), &t->sep_id))
            return eng_fail(err, ENG_EFORMAT, "%s: malformed BertProcessing", file);
        t->sep2_id = t->sep_id;
        t->type_a = t->type_cls = t->type_sep = 0;
        t->type_b = t->type_sep2 = 1;
        return ENG_OK;
    }
    if (!cJSON_IsString(type) || strcmp(type->valuestring, "TemplateProcessing") != 0)
        return eng_fail(err, ENG_EUNSUPPORTED,
                        "%s: post_processor %s is not supported (BertProcessing or "
                        "TemplateProcessing)",
                        file, cJSON_IsString(type) ? type->valuestring : "(missing)");
    const cJSON *single = cJSON_GetObjectItemCaseSensitive(pp, "single");
    const cJSON *pair = cJSON_GetObjectItemCaseSensitive(pp, "pair");
    int32_t ta, cls2, sep1, t1, t2;
    if (cJSON_GetArraySize(single) != 3 || cJSON_GetArraySize(pair) != 5 ||
        wp_template_special(pp, cJSON_GetArrayItem(single, 0), &t->cls_id, &t->type_cls) ||
        wp_template_seq(cJSON_GetArrayItem(single, 1), "A", &t->type_a) ||
        wp_template_special(pp, cJSON_GetArrayItem(single, 2), &t->sep_id, &t->type_sep) ||
        wp_template_special(pp, cJSON_GetArrayItem(pair, 0), &cls2, &t1) ||
        wp_template_seq(cJSON_GetArrayItem(pair, 1), "A", &ta) ||
        wp_template_special(pp, cJSON_GetArrayItem(pair, 2), &sep1, &t2) ||
        wp_template_seq(cJSON_GetArrayItem(pair, 3), "B", &t->type_b) ||
        wp_template_special(pp, cJSON_GetArrayItem(pair, 4), &t->sep2_id, &t->type_sep2) ||
        cls2 != t->cls_id || sep1 != t->sep_id || ta != t->type_a || t1 != t->type_cls ||
        t2 != t->type_sep)
        return eng_fail(err, ENG_EUNSUPPORTED,
                        "%s: TemplateProcessing must be \"[CLS] $A [SEP]\" / "
                        "\"[CLS] $A [SEP] $B [SEP]\"",
                        file);
    return ENG_OK;
}

static int wp_parse_normalizer(eng_tokenizer *t, const cJSON *n, const char *file,
                               eng_error *err)
{
    if (cJSON_IsNull(n) || !n) {
        t->flags = 0;
        return ENG_OK;
    }
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(n, "type");
    if (!cJSON_IsString(type) || strcmp(type->valuestring, "BertNormalizer") != 0)
        return eng_fail(err, ENG_EUNSUPPORTED,
                        "%s: normalizer %s is not supported (only BertNormalizer)", file,
                        cJSON_IsString(type) ? type->valuestring : "(missing type)");
    t->flags = ENG_WP_BERT | (wp_json_bool(n, "clean_text", 1) ? ENG_WP_CLEAN : 0) |
               wp_case_flags(n, "lowercase", "handle_chinese_chars");
    return ENG_OK;
}

/* transformers' BertTokenizerFast (what AutoTokenizer builds for BERT-family
 * folders) replaces the casing options of tokenizer.json's BertNormalizer with
 * tokenizer_config.json's do_lower_case / strip_accents / tokenize_chinese_chars
 * (defaults true / null / true); a generic PreTrainedTokenizerFast does not. */
static void wp_config_overrides(eng_tokenizer *t, const cJSON *cfg)
{
    const cJSON *cls = cJSON_GetObjectItemCaseSensitive(cfg, "tokenizer_class");
    if (!(t->flags & ENG_WP_BERT) ||
        (cJSON_IsString(cls) && strcmp(cls->valuestring, "PreTrainedTokenizerFast") == 0))
        return;
    t->flags = (t->flags & (ENG_WP_CLEAN | ENG_WP_BERT)) |
               wp_case_flags(cfg, "do_lower_case", "tokenize_chinese_chars");
}

static int wp_load_json(eng_tokenizer *t, const char *path, const cJSON *cfg, eng_error *err)
{
    char *buf = NULL;
    cJSON *root = NULL;
    wp_entries ents = {0};
    int rc = wp_parse_json(path, ENG_MAX_TOKENIZER_BYTES, &buf, &root, err);
    if (rc)
        return rc;
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    const cJSON *mtype = cJSON_GetObjectItemCaseSensitive(model, "type");
    if (!cJSON_IsString(mtype) || strcmp(mtype->valuestring, "WordPiece") != 0) {
        rc = eng_fail(err, ENG_EUNSUPPORTED,
                      "%s: tokenizer model %s is not supported (only WordPiece)", path,
                      cJSON_IsString(mtype) ? mtype->valuestring : "(missing type)");
        goto fail_parse;
    }
    const cJSON *pre = cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer");
    const cJSON *ptype = cJSON_GetObjectItemCaseSensitive(pre, "type");
    if (!cJSON_IsString(ptype) || strcmp(ptype->valuestring, "BertPreTokenizer") != 0) {
        rc = eng_fail(err, ENG_EUNSUPPORTED,
                      "%s: pre_tokenizer %s is not supported (only BertPreTokenizer)", path,
                      cJSON_IsString(ptype) ? ptype->valuestring : "(missing)");
        goto fail_parse;
    }
    rc = wp_parse_normalizer(t, cJSON_GetObjectItemCaseSensitive(root, "normalizer"), path, err);
    if (rc)
        goto fail_parse;
    wp_config_overrides(t, cfg);

    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    if (!cJSON_IsObject(vocab)) {
        rc = eng_fail(err, ENG_EFORMAT, "%s: model.vocab is missing", path);
        goto fail_parse;
    }
    const cJSON *v;
    cJSON_ArrayForEach(v, vocab)
    {
        int32_t id;
        if (wp_json_id(v, &id)) {
            rc = eng_fail(err, ENG_EFORMAT, "%s: bad id for token \"%.64s\"", path, v->string);
            goto fail_ents;
        }
        if ((rc = wp_entries_add(&ents, v->string, strlen(v->string), id)))
            goto fail_oom;
    }
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    cJSON_ArrayForEach(v, added)
    {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(v, "content");
        int32_t id;
        if (!cJSON_IsString(c) || wp_json_id(cJSON_GetObjectItemCaseSensitive(v, "id"), &id)) {
            rc = eng_fail(err, ENG_EFORMAT, "%s: malformed added_tokens entry", path);
            goto fail_ents;
        }
        if ((rc = wp_entries_add(&ents, c->valuestring, strlen(c->valuestring), id)) ||
            (rc = wp_add_added(t, c->valuestring, id)))
            goto fail_oom;
    }
    if ((rc = wp_build_vocab(t, &ents, path, err)))
        goto fail_ents;

    const cJSON *unk = cJSON_GetObjectItemCaseSensitive(model, "unk_token");
    const cJSON *pfx = cJSON_GetObjectItemCaseSensitive(model, "continuing_subword_prefix");
    const cJSON *mx = cJSON_GetObjectItemCaseSensitive(model, "max_input_chars_per_word");
    t->unk_id = eng_tokenizer_token_id(t, cJSON_IsString(unk) ? unk->valuestring : "[UNK]");
    if (t->unk_id < 0) {
        rc = eng_fail(err, ENG_EFORMAT, "%s: unk_token is not in the vocabulary", path);
        goto fail_ents;
    }
    if ((rc = wp_set_prefix(t, cJSON_IsString(pfx) ? pfx->valuestring : "##", path, err)))
        goto fail_ents;
    t->max_chars = cJSON_IsNumber(mx) && mx->valuedouble >= 1 && mx->valuedouble < 1e9
                       ? (int)mx->valuedouble
                       : 100;
    if ((rc = wp_parse_post(t, cJSON_GetObjectItemCaseSensitive(root, "post_processor"), path,
                            err)))
        goto fail_ents;
    const cJSON *pad = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(root, "padding"), "pad_id");
    if (wp_json_id(pad, &t->pad_id)) {
        t->pad_id = eng_tokenizer_token_id(t, wp_cfg_token(cfg, "pad_token", "[PAD]"));
        if (t->pad_id < 0)
            t->pad_id = 0;
    }
    free(ents.v);
    cJSON_Delete(root);
    free(buf);
    return ENG_OK;

fail_oom:
    if (rc == ENG_EUNSUPPORTED)
        rc = eng_fail(err, rc, "%s: more than %d added tokens, or one over %d bytes", path,
                      WP_MAX_ADDED, WP_MAX_ADDED_LEN);
    else
        rc = eng_fail(err, ENG_ENOMEM, "%s: out of memory", path);
fail_ents:
    free(ents.v);
fail_parse:
    cJSON_Delete(root);
    free(buf);
    return rc;
}

/* vocab.txt (one token per line, id = line number) + tokenizer_config.json
 * options, as transformers converts a slow BertTokenizer to a fast one. */
static int wp_load_txt(eng_tokenizer *t, const char *path, const cJSON *cfg, eng_error *err)
{
    char *buf = NULL;
    size_t len;
    wp_entries ents = {0};
    int rc = eng_read_file_max(path, ENG_MAX_TOKENIZER_BYTES, &buf, &len, err);
    if (rc)
        return rc;
    if (eng_wp_utf8_invalid_at(buf, len) >= 0) {
        rc = eng_fail(err, ENG_EFORMAT, "%s: not valid UTF-8 at byte %ld", path,
                      eng_wp_utf8_invalid_at(buf, len));
        goto fail_buf;
    }
    for (size_t i = 0; i < len;) {
        const char *nl = memchr(buf + i, '\n', len - i);
        size_t e = nl ? (size_t)(nl - buf) : len;
        if (ents.n >= INT32_MAX - 1) {
            rc = eng_fail(err, ENG_EFORMAT, "%s: too many tokens", path);
            goto fail_ents;
        }
        if ((rc = wp_entries_add(&ents, buf + i, e - i, (int32_t)ents.n)))
            goto fail_oom;
        i = e + 1;
    }
    if ((rc = wp_build_vocab(t, &ents, path, err)))
        goto fail_ents;

    int lower = wp_json_bool(cfg, "do_lower_case", 1);
    t->flags = ENG_WP_CLEAN | (wp_json_bool(cfg, "tokenize_chinese_chars", 1) ? ENG_WP_CJK : 0) |
               (wp_json_bool(cfg, "strip_accents", lower) ? ENG_WP_STRIP : 0) |
               (lower ? ENG_WP_LOWER : 0);
    static const char *const keys[] = {"unk_token", "sep_token", "pad_token", "cls_token",
                                       "mask_token"};
    static const char *const dflt[] = {"[UNK]", "[SEP]", "[PAD]", "[CLS]", "[MASK]"};
    int32_t ids[5];
    for (int k = 0; k < 5; k++) {
        const char *s = wp_cfg_token(cfg, keys[k], dflt[k]);
        ids[k] = eng_tokenizer_token_id(t, s);
        if (ids[k] < 0 && k != 2 && k != 4) {
            rc = eng_fail(err, ENG_EFORMAT, "%s: %s \"%s\" is not in the vocabulary", path,
                          keys[k], s);
            goto fail_ents;
        }
        if (ids[k] >= 0 && (rc = wp_add_added(t, s, ids[k])))
            goto fail_oom;
    }
    /* Further added tokens that exist in the vocabulary. */
    const cJSON *dec = cJSON_GetObjectItemCaseSensitive(cfg, "added_tokens_decoder");
    const cJSON *v;
    cJSON_ArrayForEach(v, dec)
    {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(v, "content");
        if (cJSON_IsString(c) && eng_tokenizer_token_id(t, c->valuestring) >= 0 &&
            (rc = wp_add_added(t, c->valuestring, eng_tokenizer_token_id(t, c->valuestring))))
            goto fail_oom;
    }
    t->unk_id = ids[0];
    t->sep_id = t->sep2_id = ids[1];
    t->pad_id = ids[2] >= 0 ? ids[2] : 0;
    t->cls_id = ids[3];
    t->type_a = t->type_cls = t->type_sep = 0;
    t->type_b = t->type_sep2 = 1;
    t->max_chars = 100;
    if ((rc = wp_set_prefix(t, "##", path, err)))
        goto fail_ents;
    free(ents.v);
    free(buf);
    return ENG_OK;

fail_oom:
    if (rc == ENG_EUNSUPPORTED)
        rc = eng_fail(err, rc, "%s: more than %d added tokens, or one over %d bytes", path,
                      WP_MAX_ADDED, WP_MAX_ADDED_LEN);
    else
        rc = eng_fail(err, ENG_ENOMEM, "%s: out of memory", path);
fail_ents:
    free(ents.v);
fail_buf:
    free(buf);
    return rc;
}

int eng_tokenizer_load(const char *model_dir, eng_tokenizer **out, eng_error *err)
{
    char jpath[WP_NAME_MAX], tpath[WP_NAME_MAX];
    *out = NULL;
    if (!model_dir)
        return eng_fail(err, ENG_EINVAL, "tokenizer: no model directory");
    if (eng_path_join(jpath, sizeof jpath, model_dir, "tokenizer.json") ||
        eng_path_join(tpath, sizeof tpath, model_dir, "vocab.txt"))
        return eng_fail(err, ENG_EINVAL, "%s: path too long", model_dir);
    eng_tokenizer *t = calloc(1, sizeof *t);
    if (!t)
        return eng_fail(err, ENG_ENOMEM, "tokenizer: out of memory");
    cJSON *cfg = NULL;
    char *cfgbuf = NULL;
    int rc = wp_read_config(t, model_dir, &cfg, &cfgbuf, err);
    if (rc)
        goto fail_tok;
    /* Presence only (opening to probe would block on a FIFO); the reader refuses
     * what is not a regular file, with its name. */
    if (access(jpath, F_OK) == 0) {
        rc = wp_load_json(t, jpath, cfg, err);
    } else {
        if (access(tpath, F_OK) != 0) {
            rc = eng_fail(err, ENG_EIO, "%s: no tokenizer.json or vocab.txt", model_dir);
            goto fail_cfg;
        }
        rc = wp_load_txt(t, tpath, cfg, err);
    }
    if (rc)
        goto fail_cfg;
    cJSON_Delete(cfg);
    free(cfgbuf);
    *out = t;
    return ENG_OK;

fail_cfg:
    cJSON_Delete(cfg);
    free(cfgbuf);
fail_tok:
    eng_tokenizer_free(t);
    return rc;
}

void eng_tokenizer_free(eng_tokenizer *tok)
{
    if (!tok)
        return;
    for (int i = 0; i < tok->nadded; i++)
        free(tok->added[i].s);
    free(tok->added);
    free(tok->table);
    free(tok->id_str);
    free(tok->arena);
    free(tok);
}

/* ---------------------------------------------------------------- encoding */

/* One normalised character of the current word. */
typedef struct wp_wchar {
    uint32_t boff;        /* byte offset in the word's normalised UTF-8 */
    int32_t start, end;   /* byte span of the original character */
} wp_wchar;

#define WP_INLINE_CHARS 128

/* The word being assembled; inline storage, heap only for very long words. */
typedef struct wp_word {
    wp_wchar *ch;
    char *buf;
    int n, cap;           /* characters (buf holds up to 4 bytes per character) */
    wp_wchar ich[WP_INLINE_CHARS + 1];
    char ibuf[4 * WP_INLINE_CHARS + 4];
} wp_word;

static void wp_word_init(wp_word *w)
{
    w->ch = w->ich;
    w->buf = w->ibuf;
    w->n = 0;
    w->cap = WP_INLINE_CHARS;
}

static void wp_word_free(wp_word *w)
{
    if (w->ch != w->ich) {
        free(w->ch);
        free(w->buf);
    }
    wp_word_init(w);
}

static int wp_word_grow(wp_word *w)
{
    if (w->cap > INT_MAX / 8)
        return ENG_ENOMEM;
    int ncap = w->cap * 2;
    wp_wchar *nch = malloc(((size_t)ncap + 1) * sizeof *nch);
    char *nbuf = malloc(4 * (size_t)ncap + 4);
    if (!nch || !nbuf) {
        free(nch);
        free(nbuf);
        return ENG_ENOMEM;
    }
    memcpy(nch, w->ch, ((size_t)w->n + 1) * sizeof *nch);
    memcpy(nbuf, w->buf, w->ch[w->n].boff);
    if (w->ch != w->ich) {
        free(w->ch);
        free(w->buf);
    }
    w->ch = nch;
    w->buf = nbuf;
    w->cap = ncap;
    return ENG_OK;
}

static int wp_word_add(wp_word *w, uint32_t cp, int32_t start, int32_t end)
{
    if (w->n == w->cap && wp_word_grow(w))
        return ENG_ENOMEM;
    wp_wchar *c = &w->ch[w->n];
    if (w->n == 0)
        c->boff = 0;
    c->start = start;
    c->end = end;
    w->ch[w->n + 1].boff = c->boff + (uint32_t)wp_encode_utf8(cp, w->buf + c->boff);
    w->n++;
    return ENG_OK;
}

/* Greedy longest-match-first WordPiece of the word; a word that is too long
 * or has a piece missing from the vocabulary becomes one [UNK]. */
static int wp_word_flush(const eng_tokenizer *t, wp_word *w, eng_encoding *out, int32_t type,
                         int32_t seq)
{
    int n = w->n;
    if (!n)
        return ENG_OK;
    w->n = 0;
    const wp_wchar *ch = w->ch;
    int first = out->n;
    if (n <= t->max_chars) {
        /* Cost O(n * L) for a word of n characters and a longest vocabulary entry
         * of L bytes: candidates start at the longest one that can fit (binary
         * search) and their hashes are extended byte by byte, not recomputed. */
        uint64_t hbuf[65], *hs = hbuf;
        if (n + 1 > 65 && !(hs = malloc(sizeof *hs * ((size_t)n + 1))))
            return ENG_ENOMEM;
        int start = 0;
        while (start < n) {
            size_t plen = start > 0 ? t->prefix_len : 0;
            const char *base = w->buf + ch[start].boff;
            int lo = start, hi = n; /* the largest end whose piece fits in max_tok_len */
            while (lo < hi) {
                int mid = lo + (hi - lo + 1) / 2;
                if (ch[mid].boff - ch[start].boff + plen <= t->max_tok_len)
                    lo = mid;
                else
                    hi = mid - 1;
            }
            uint64_t h = start > 0 ? t->prefix_hash : FNV_OFFSET;
            size_t done = 0;
            for (int e = start + 1; e <= lo; e++) {
                size_t upto = ch[e].boff - ch[start].boff;
                h = wp_hash(h, base + done, upto - done);
                done = upto;
                hs[e - start] = h;
            }
            ENG_TOK_STEP(2 * (lo - start) + 1);
            int end = lo;
            int32_t id = -1;
            for (; end > start; end--) {
                id = wp_lookup_h(t, start > 0, base, ch[end].boff - ch[start].boff, hs[end - start]);
                if (id >= 0)
                    break;
            }
            if (id < 0)
                break;
            int rc = eng_encoding_push(out, id, type, seq, ch[start].start, ch[end - 1].end);
            if (rc) {
                if (hs != hbuf)
                    free(hs);
                return rc;
            }
            start = end;
        }
        if (hs != hbuf)
            free(hs);
        if (start == n)
            return ENG_OK;
        out->n = first; /* a piece is missing: the whole word is unknown */
    }
    return eng_encoding_push(out, t->unk_id, type, seq, ch[0].start, ch[n - 1].end);
}

/* Normalise, pre-tokenize and WordPiece the raw text s[from, to) (no added
 * tokens inside); offsets are relative to s. */
static int wp_encode_span(const eng_tokenizer *t, const char *s, size_t from, size_t to,
                          wp_word *w, eng_encoding *out, int32_t type, int32_t seq)
{
    const unsigned char *p = (const unsigned char *)s;
    int rc = ENG_OK;
    for (size_t i = from; i < to;) {
        int clen;
        uint32_t cp = wp_decode(p + i, &clen);
        uint32_t nc[16];
        int cjk;
        int m = eng_wp_norm_char(t->flags, cp, nc, &cjk);
        int32_t a = (int32_t)i, b = (int32_t)(i + (size_t)clen);
        i += (size_t)clen;
        if (cjk && (rc = wp_word_flush(t, w, out, type, seq)))
            return rc;
        for (int k = 0; k < m; k++) {
            if (eng_wp_is_space(nc[k])) {
                rc = wp_word_flush(t, w, out, type, seq);
            } else if (eng_wp_is_punct(nc[k])) {
                if (!(rc = wp_word_flush(t, w, out, type, seq)) &&
                    !(rc = wp_word_add(w, nc[k], a, b)))
                    rc = wp_word_flush(t, w, out, type, seq);
            } else {
                rc = wp_word_add(w, nc[k], a, b);
            }
            if (rc)
                return rc;
        }
        if (cjk && (rc = wp_word_flush(t, w, out, type, seq)))
            return rc;
    }
    return wp_word_flush(t, w, out, type, seq);
}

/* Longest added token starting at s[i], or NULL. */
static const wp_added *wp_match_added(const eng_tokenizer *t, const char *s, size_t i,
                                      size_t len)
{
    const wp_added *best = NULL;
    ENG_TOK_STEP(t->nadded);
    for (int k = 0; k < t->nadded; k++) {
        const wp_added *a = &t->added[k];
        if (a->len <= len - i && (!best || a->len > best->len) &&
            memcmp(s + i, a->s, a->len) == 0)
            best = a;
    }
    return best;
}

/* Append the tokens of one text to out (which is not reset). */
static int wp_encode_text(const eng_tokenizer *t, const char *text, size_t len,
                          eng_encoding *out, int32_t type, int32_t seq, const char *what,
                          eng_error *err)
{
    if (!text && len)
        return eng_fail(err, ENG_EINVAL, "%s: NULL text", what);
    if (len > INT32_MAX)
        return eng_fail(err, ENG_ETOOLONG, "%s: %zu bytes is over the 2 GiB limit", what, len);
    long bad = eng_wp_utf8_invalid_at(text, len);
    if (bad >= 0)
        return eng_fail(err, ENG_EUTF8, "%s: invalid UTF-8 at byte %ld", what, bad);
    wp_word w;
    wp_word_init(&w);
    int rc = ENG_OK;
    size_t from = 0;
    for (size_t i = 0; i < len && !rc;) {
        const wp_added *a = t->added_first[(unsigned char)text[i]]
                                ? wp_match_added(t, text, i, len)
                                : NULL;
        if (!a) {
            i++;
            continue;
        }
        if (!(rc = wp_encode_span(t, text, from, i, &w, out, type, seq)))
            rc = eng_encoding_push(out, a->id, type, seq, (int32_t)i, (int32_t)(i + a->len));
        i += a->len;
        from = i;
    }
    if (!rc)
        rc = wp_encode_span(t, text, from, len, &w, out, type, seq);
    wp_word_free(&w);
    if (rc)
        return eng_fail(err, rc, "%s: %s while tokenizing", what, eng_strerror(rc));
    return ENG_OK;
}

int eng_tokenizer_encode_raw(const eng_tokenizer *tok, const char *text, size_t len,
                             eng_encoding *out, eng_error *err)
{
    out->n = 0;
    out->truncated = 0;
    return wp_encode_text(tok, text, len, out, tok->type_a, 0, "text", err);
}

/* Hugging Face's "longest_first" split of a budget between two lengths. */
static void wp_longest_first(int budget, int *na, int *nb)
{
    int n1 = *na, n2 = *nb;
    if (n1 + n2 <= budget)
        return;
    int swap = n1 > n2;
    if (swap) {
        int x = n1;
        n1 = n2;
        n2 = x;
    }
    if (n1 > budget)
        n2 = n1;
    else
        n2 = budget - n1 > n1 ? budget - n1 : n1;
    if (n1 + n2 > budget) {
        n1 = budget / 2;
        n2 = n1 + budget % 2;
    }
    *na = swap ? n2 : n1;
    *nb = swap ? n1 : n2;
}

int eng_tokenizer_encode(const eng_tokenizer *tok, const char *text, size_t len,
                         const char *pair, size_t pair_len, int max_len, eng_encoding *out,
                         eng_error *err)
{
    const eng_tokenizer *t = tok;
    int nspecial = pair ? 3 : 2;
    if (max_len <= 0)
        max_len = t->max_len;
    if (max_len < nspecial)
        return eng_fail(err, ENG_EINVAL, "max_len %d leaves no room for the %d special tokens",
                        max_len, nspecial);
    out->n = 0;
    out->truncated = 0;
    int rc = eng_encoding_push(out, t->cls_id, t->type_cls, -1, 0, 0);
    if (rc)
        return eng_fail(err, rc, "text: out of memory");
    if ((rc = wp_encode_text(t, text, len, out, t->type_a, 0, "text", err)))
        return rc;
    int na = out->n - 1, nb = 0;
    eng_encoding b;
    eng_encoding_init(&b);
    if (pair) {
        if ((rc = wp_encode_text(t, pair, pair_len, &b, t->type_b, 1, "pair", err)))
            goto fail_pair;
        nb = b.n;
    }
    int ka = na, kb = nb;
    wp_longest_first(max_len - nspecial, &ka, &kb);
    out->truncated = (na - ka) + (nb - kb);
    out->n = 1 + ka;
    if ((rc = eng_encoding_reserve(out, ka + kb + nspecial)))
        goto fail_oom;
    eng_encoding_push(out, t->sep_id, t->type_sep, -1, 0, 0); /* reserved: cannot fail */
    if (pair) {
        for (int i = 0; i < kb; i++)
            eng_encoding_push(out, b.ids[i], b.type_ids[i], 1, b.offsets[2 * i],
                              b.offsets[2 * i + 1]);
        eng_encoding_push(out, t->sep2_id, t->type_sep2, -1, 0, 0);
    }
    eng_encoding_free(&b);
    return ENG_OK;

fail_oom:
    rc = eng_fail(err, ENG_ENOMEM, "text: out of memory");
fail_pair:
    eng_encoding_free(&b);
    out->n = 0;
    return rc;
}

/* ----------------------------------------------------------------- queries */

int eng_tokenizer_vocab_size(const eng_tokenizer *tok) { return tok->nid; }
int eng_tokenizer_model_max_length(const eng_tokenizer *tok) { return tok->max_len; }
int32_t eng_tokenizer_cls_id(const eng_tokenizer *tok) { return tok->cls_id; }
int32_t eng_tokenizer_sep_id(const eng_tokenizer *tok) { return tok->sep_id; }
int32_t eng_tokenizer_pad_id(const eng_tokenizer *tok) { return tok->pad_id; }

int32_t eng_tokenizer_token_id(const eng_tokenizer *tok, const char *token)
{
    return token ? wp_lookup(tok, 0, token, strlen(token)) : -1;
}

const char *eng_tokenizer_id_token(const eng_tokenizer *tok, int32_t id)
{
    return id >= 0 && id < tok->nid ? tok->id_str[id] : NULL;
}
