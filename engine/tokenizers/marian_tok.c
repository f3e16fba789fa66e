/* marian_tok.c - MarianTokenizer semantics over SentencePiece (see marian_tok.h). */
#include "tokenizers/marian_tok.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizers/spm_shim.h"
#include "tokenizers/spm_unigram.h"
#include "core/util.h"
#include "tokenizers/wordpiece.h" /* eng_wp_utf8_invalid_at */

#define MT_MAX_ADDED 64

/* A token written literally in texts and never split (HF "added tokens"). */
typedef struct mt_added {
    char *content;
    size_t len;
    int32_t id;
    int lstrip, rstrip;
    int special; /* one of all_special_tokens: dropped by skip_special_tokens */
} mt_added;

struct eng_marian_tok {
    eng_spm *spm[2]; /* source, target */
    eng_unigram *ug[2];
    char **keys;     /* vocab.json keys, unique, in file order (owned) */
    int32_t *key_id; /* their ids (a later duplicate key wins) */
    int n_keys;
    const char **piece; /* id -> piece (into keys; NULL for holes) */
    int n_ids;
    /* piece -> key index: open addressing, slots hold index + 1 (0 = empty) */
    int32_t *slot;
    size_t nslot;
    mt_added added[MT_MAX_ADDED];
    int n_added;
    int32_t eos, unk, pad;
    const char *unk_text; /* the unknown token's content */
    int max_len;
    int clean_up;
    char source_lang[32], target_lang[32];
    const char **codes;
    int n_codes;
};

/* ------------------------------------------------------------- vocabulary */

static uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 0x100000001b3ULL;
    return h;
}

/* Slot of key s[0, n): the one holding it, or the empty one where it goes. */
static size_t find_slot(const eng_marian_tok *t, const char *s, size_t n)
{
    size_t mask = t->nslot - 1, i = hash_bytes(s, n) & mask;
    for (; t->slot[i]; i = (i + 1) & mask) {
        const char *k = t->keys[t->slot[i] - 1];
        if (strlen(k) == n && memcmp(k, s, n) == 0)
            break;
    }
    return i;
}

static int32_t lookup(const eng_marian_tok *t, const char *s, size_t n)
{
    int32_t v = t->slot[find_slot(t, s, n)];
    return v ? t->key_id[v - 1] : -1;
}

/* vocab.json {piece: id} with Python's semantics: json.load keeps the last
 * value of a duplicate key; the inverse map {id: piece} built in key order
 * keeps the last piece of an id. */
static int load_vocab(eng_marian_tok *t, const char *dir, eng_error *err)
{
    char path[4096], *text;
    if (eng_path_join(path, sizeof path, dir, "vocab.json"))
        return eng_fail(err, ENG_EINVAL, "%s: path too long", dir);
    int rc = eng_read_file(path, &text, NULL, err);
    if (rc)
        return rc;
    cJSON *root = cJSON_Parse(text);
    free(text);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return eng_fail(err, ENG_EFORMAT, "%s: not a JSON object {piece: id}", path);
    }
    int max_id = -1, count = 0;
    for (const cJSON *e = root->child; e; e = e->next) {
        if (!cJSON_IsNumber(e) || e->valuedouble < 0 || e->valuedouble > (1 << 24) ||
            e->valuedouble != (double)(int)e->valuedouble) {
            rc = eng_fail(err, ENG_EFORMAT, "%s: the id of '%s' is not an integer in [0, 2^24]",
                          path, e->string);
            goto done;
        }
        max_id = e->valueint > max_id ? e->valueint : max_id;
        count++;
    }
    if (count == 0) {
        rc = eng_fail(err, ENG_EFORMAT, "%s: empty vocabulary", path);
        goto done;
    }
    t->n_ids = max_id + 1;
    t->nslot = 16;
    while (t->nslot < (size_t)count * 2)
        t->nslot *= 2;
    t->keys = calloc((size_t)count, sizeof *t->keys);
    t->key_id = calloc((size_t)count, sizeof *t->key_id);
    t->piece = calloc((size_t)t->n_ids, sizeof *t->piece);
    t->slot = calloc(t->nslot, sizeof *t->slot);
    if (!t->keys || !t->key_id || !t->piece || !t->slot) {
        rc = eng_fail(err, ENG_ENOMEM, "out of memory for %s", path);
        goto done;
    }
    for (const cJSON *e = root->child; e; e = e->next) {
        size_t i = find_slot(t, e->string, strlen(e->string));
        if (t->slot[i]) {
            t->key_id[t->slot[i] - 1] = e->valueint;
            continue;
        }
        if (!(t->keys[t->n_keys] = strdup(e->string))) {
            rc = eng_fail(err, ENG_ENOMEM, "out of memory for %s", path);
            goto done;
        }
        t->key_id[t->n_keys] = e->valueint;
        t->slot[i] = ++t->n_keys;
    }
    for (int k = 0; k < t->n_keys; k++)
        t->piece[t->key_id[k]] = t->keys[k];
    rc = ENG_OK;
done:
    cJSON_Delete(root);
    return rc;
}

/* ------------------------------------------------------- special tokens */

/* "eos_token": "</s>" or {"content": "</s>", ...}. */
static const char *token_content(const cJSON *v)
{
    if (cJSON_IsString(v))
        return v->valuestring;
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(v, "content");
    return cJSON_IsString(c) ? c->valuestring : NULL;
}

static mt_added *find_added(eng_marian_tok *t, const char *content)
{
    for (int i = 0; i < t->n_added; i++)
        if (strcmp(t->added[i].content, content) == 0)
            return &t->added[i];
    return NULL;
}

static int add_token(eng_marian_tok *t, const char *content, int32_t id, int special,
                     eng_error *err)
{
    mt_added *a = find_added(t, content);
    if (a) {
        a->special |= special;
        if (id >= 0)
            a->id = id;
        return ENG_OK;
    }
    if (t->n_added == MT_MAX_ADDED)
        return eng_fail(err, ENG_EUNSUPPORTED, "more than %d added tokens", MT_MAX_ADDED);
    if (!*content)
        return eng_fail(err, ENG_EFORMAT, "an added token is empty");
    a = &t->added[t->n_added];
    if (!(a->content = strdup(content)))
        return eng_fail(err, ENG_ENOMEM, "out of memory");
    t->n_added++;
    a->len = strlen(content);
    a->id = id >= 0 ? id : lookup(t, content, a->len);
    a->special = special;
    return ENG_OK;
}

static int load_specials(eng_marian_tok *t, const char *dir, eng_error *err)
{
    int rc;
    const char *names[3] = {"</s>", "<unk>", "<pad>"};
    static const char *const keys[3] = {"eos_token", "unk_token", "pad_token"};
    cJSON *cfg = eng_read_json(dir, "tokenizer_config.json", 1, &rc, err);
    if (rc)
        return rc;
    cJSON *map = eng_read_json(dir, "special_tokens_map.json", 1, &rc, err);
    if (rc)
        goto done;
    for (int k = 0; k < 3; k++) {
        const char *c = token_content(cJSON_GetObjectItemCaseSensitive(map, keys[k]));
        if (!c)
            c = token_content(cJSON_GetObjectItemCaseSensitive(cfg, keys[k]));
        if (c)
            names[k] = c;
    }
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(cfg, "separate_vocabs"))) {
        rc = eng_fail(err, ENG_EUNSUPPORTED, "%s/tokenizer_config.json: separate_vocabs (a "
                      "target_vocab.json) is not supported", dir);
        goto done;
    }
    const cJSON *ml = cJSON_GetObjectItemCaseSensitive(cfg, "model_max_length");
    if (cJSON_IsNumber(ml) && ml->valuedouble >= 2 && ml->valuedouble < 1e7)
        t->max_len = (int)ml->valuedouble;
    const cJSON *cu = cJSON_GetObjectItemCaseSensitive(cfg, "clean_up_tokenization_spaces");
    if (cJSON_IsBool(cu))
        t->clean_up = cJSON_IsTrue(cu);
    for (int k = 0; k < 2; k++) {
        const cJSON *l = cJSON_GetObjectItemCaseSensitive(cfg, k ? "target_lang" : "source_lang");
        char *dst = k ? t->target_lang : t->source_lang;
        if (cJSON_IsString(l))
            snprintf(dst, 32, "%s", l->valuestring);
    }
    /* Added tokens as saved by transformers: {"id": {"content", "lstrip", ...}}. */
    const cJSON *atd = cJSON_GetObjectItemCaseSensitive(cfg, "added_tokens_decoder");
    for (const cJSON *e = atd ? atd->child : NULL; e; e = e->next) {
        const char *c = token_content(e);
        char *end;
        long id = strtol(e->string, &end, 10);
        if (!c || *end || id < 0 || id >= (1 << 24)) {
            rc = eng_fail(err, ENG_EFORMAT, "%s/tokenizer_config.json: added_tokens_decoder "
                          "entry '%s' is not {id: {content}}", dir, e->string);
            goto done;
        }
        if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(e, "single_word"))) {
            rc = eng_fail(err, ENG_EUNSUPPORTED, "%s/tokenizer_config.json: added token '%s' "
                          "has single_word set (not supported)", dir, c);
            goto done;
        }
        if ((rc = add_token(t, c, (int32_t)id, 0, err)))
            goto done;
        mt_added *a = find_added(t, c);
        a->lstrip = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(e, "lstrip"));
        a->rstrip = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(e, "rstrip"));
    }
    for (int k = 0; k < 3; k++)
        if ((rc = add_token(t, names[k], -1, 1, err)))
            goto done;
    const cJSON *extra = cJSON_GetObjectItemCaseSensitive(map, "additional_special_tokens");
    if (!extra)
        extra = cJSON_GetObjectItemCaseSensitive(cfg, "additional_special_tokens");
    const cJSON *x;
    cJSON_ArrayForEach(x, extra) {
        const char *c = token_content(x);
        if (c && (rc = add_token(t, c, -1, 1, err)))
            goto done;
    }
    t->eos = find_added(t, names[0])->id;
    t->unk = find_added(t, names[1])->id;
    t->unk_text = find_added(t, names[1])->content;
    t->pad = find_added(t, names[2])->id;
    if (t->unk < 0 || t->eos < 0 || t->pad < 0) {
        rc = eng_fail(err, ENG_EFORMAT, "%s/vocab.json: the special tokens %s, %s and %s must "
                      "be in the vocabulary", dir, names[0], names[1], names[2]);
        goto done;
    }
    for (int i = 0; i < t->n_added; i++)
        if (t->added[i].id < 0) {
            rc = eng_fail(err, ENG_EFORMAT, "%s: special token '%s' has no id in vocab.json",
                          dir, t->added[i].content);
            goto done;
        }
done:
    cJSON_Delete(cfg);
    cJSON_Delete(map);
    return rc;
}

/* Language codes: vocabulary keys ">>xx<<", in file order (MarianTokenizer's
 * supported_language_codes). */
static int is_code(const char *k)
{
    size_t l = strlen(k);
    return l >= 4 && !strncmp(k, ">>", 2) && !strcmp(k + l - 2, "<<");
}

static int load_codes(eng_marian_tok *t)
{
    int n = 0;
    for (int i = 0; i < t->n_keys; i++)
        n += is_code(t->keys[i]);
    t->codes = calloc((size_t)n + 1, sizeof *t->codes);
    if (!t->codes)
        return ENG_ENOMEM;
    for (int i = 0; i < t->n_keys; i++)
        if (is_code(t->keys[i]))
            t->codes[t->n_codes++] = t->keys[i];
    return ENG_OK;
}

int eng_marian_tok_load(const char *dir, eng_marian_tok **out, eng_error *err)
{
    static const char *const spm_names[2] = {"source.spm", "target.spm"};
    char path[4096];
    int rc;
    *out = NULL;
    eng_marian_tok *t = calloc(1, sizeof *t);
    if (!t)
        return eng_fail(err, ENG_ENOMEM, "out of memory");
    t->max_len = 512;
    t->clean_up = 1;
    for (int s = 0; s < 2; s++) {
        if (eng_path_join(path, sizeof path, dir, spm_names[s])) {
            rc = eng_fail(err, ENG_EINVAL, "%s: path too long", dir);
            goto fail;
        }
        if ((rc = eng_spm_load(path, &t->spm[s], err)))
            goto fail;
        if (eng_unigram_new(t->spm[s], &t->ug[s])) {
            rc = eng_fail(err, ENG_ENOMEM, "out of memory indexing %s", path);
            goto fail;
        }
    }
    if ((rc = load_vocab(t, dir, err)) || (rc = load_specials(t, dir, err)))
        goto fail;
    if (load_codes(t)) {
        rc = eng_fail(err, ENG_ENOMEM, "out of memory");
        goto fail;
    }
    *out = t;
    return ENG_OK;
fail:
    eng_marian_tok_free(t);
    return rc;
}

void eng_marian_tok_free(eng_marian_tok *t)
{
    if (!t)
        return;
    eng_unigram_free(t->ug[0]);
    eng_unigram_free(t->ug[1]);
    eng_spm_free(t->spm[0]);
    eng_spm_free(t->spm[1]);
    for (int i = 0; i < t->n_keys; i++)
        free(t->keys[i]);
    free(t->keys);
    free(t->key_id);
    free(t->piece);
    free(t->slot);
    for (int i = 0; i < t->n_added; i++)
        free(t->added[i].content);
    free(t->codes);
    free(t);
}

/* --------------------------------------------------------------- encoding */

/* Python's str.isspace() for the code point starting at s[0]; *n its length. */
static int py_space_at(const char *s, size_t avail, size_t *n)
{
    const unsigned char *p = (const unsigned char *)s;
    uint32_t c = p[0];
    *n = 1;
    if (c >= 0xc0 && avail >= 2 && c < 0xe0) {
        c = ((c & 0x1f) << 6) | (p[1] & 0x3f), *n = 2;
    } else if (c >= 0xe0 && c < 0xf0 && avail >= 3) {
        c = ((c & 0x0f) << 12) | ((p[1] & 0x3fu) << 6) | (p[2] & 0x3f), *n = 3;
    } else if (c >= 0xf0) {
        *n = 4;
        return 0;
    }
    return (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 ||
           c == 0x1680 || (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 ||
           c == 0x202f || c == 0x205f || c == 0x3000;
}

/* Length of s without its Python-whitespace prefix / suffix. */
static size_t py_lstrip(const char *s, size_t n)
{
    size_t i = 0, k;
    while (i < n && py_space_at(s + i, n - i, &k))
        i += k;
    return i;
}

static size_t py_rstrip_len(const char *s, size_t n)
{
    size_t end = n;
    while (end > 0) {
        size_t st = end - 1, k;
        while (st > 0 && ((unsigned char)s[st] & 0xc0) == 0x80)
            st--;
        if (!py_space_at(s + st, end - st, &k) || st + k != end)
            break;
        end = st;
    }
    return end;
}

/* End of a match of >>.+<< starting at s[i], or 0 when none ('.' is any
 * character but '\n'; greedy: the last "<<" on the line). */
static size_t code_match(const char *s, size_t n, size_t i)
{
    if (i + 5 > n || s[i] != '>' || s[i + 1] != '>')
        return 0;
    const char *nl = memchr(s + i + 2, '\n', n - i - 2);
    size_t line_end = nl ? (size_t)(nl - s) : n;
    for (size_t p = line_end >= 2 ? line_end - 2 : 0; p >= i + 3 && p + 2 <= line_end; p--)
        if (s[p] == '<' && s[p + 1] == '<')
            return p + 2;
    return 0;
}

typedef struct piece_sink {
    eng_marian_piece_fn fn;
    void *user;
} piece_sink;

/* One chunk between added tokens: leading language code, deletion of every
 * code (re.sub), SentencePiece on the rest. */
static int encode_chunk(const eng_marian_tok *t, int target, const char *s, size_t n,
                        eng_marian_piece_fn fn, void *user)
{
    size_t code_end = code_match(s, n, 0);
    int rc;
    if (code_end && (rc = fn(s, code_end, user)))
        return rc;
    char *buf = malloc(n + 1);
    if (!buf)
        return ENG_ENOMEM;
    size_t w = 0;
    for (size_t i = 0; i < n;) {
        size_t e = code_match(s, n, i);
        if (e) {
            i = e;
        } else {
            buf[w++] = s[i++];
        }
    }
    rc = eng_unigram_encode(t->ug[target ? 1 : 0], buf, w, fn, user);
    free(buf);
    return rc;
}

/* Longest added token starting at s[i], or NULL. */
static const mt_added *added_at(const eng_marian_tok *t, const char *s, size_t n, size_t i)
{
    const mt_added *best = NULL;
    for (int k = 0; k < t->n_added; k++) {
        const mt_added *a = &t->added[k];
        if (a->len <= n - i && memcmp(s + i, a->content, a->len) == 0 &&
            (!best || a->len > best->len))
            best = a;
    }
    return best;
}

int eng_marian_tok_pieces(const eng_marian_tok *t, int target, const char *text, size_t len,
                          eng_marian_piece_fn fn, void *user, eng_error *err)
{
    long bad = eng_wp_utf8_invalid_at(text, len);
    if (bad >= 0)
        return eng_fail(err, ENG_EUTF8, "text is not valid UTF-8 at byte %ld", bad);
    /* chunk = text between added tokens, after the neighbours' strip flags */
    size_t start = 0, i = 0;
    int strip_left_next = 0; /* previous added token had rstrip */
    int rc = ENG_OK;
    while (i <= len) {
        const mt_added *a = i < len ? added_at(t, text, len, i) : NULL;
        if (!a && i < len) {
            i++;
            continue;
        }
        const char *cs = text + start;
        size_t cn = i - start;
        if (strip_left_next) {
            size_t k = py_lstrip(cs, cn);
            cs += k, cn -= k;
        }
        if (a && a->lstrip)
            cn = py_rstrip_len(cs, cn);
        if (cn && (rc = encode_chunk(t, target, cs, cn, fn, user)))
            break;
        if (!a)
            break;
        if ((rc = fn(a->content, a->len, user)))
            break;
        strip_left_next = a->rstrip;
        i += a->len;
        start = i;
    }
    if (rc == ENG_ENOMEM)
        return eng_fail(err, rc, "out of memory");
    if (rc == ENG_EINVAL)
        return eng_fail(err, rc, "SentencePiece could not encode the text");
    return rc;
}

typedef struct id_sink {
    const eng_marian_tok *t;
    eng_encoding *out;
    int limit; /* tokens kept before </s> (-1: all) */
    int dropped;
} id_sink;

static int push_piece(const char *p, size_t n, void *user)
{
    id_sink *s = user;
    if (s->limit >= 0 && s->out->n >= s->limit) {
        s->dropped++;
        return 0;
    }
    const eng_marian_tok *t = s->t;
    int32_t id = -1;
    for (int k = 0; k < t->n_added && id < 0; k++)
        if (t->added[k].len == n && memcmp(t->added[k].content, p, n) == 0)
            id = t->added[k].id;
    if (id < 0)
        id = lookup(t, p, n);
    if (id < 0)
        id = t->unk;
    return eng_encoding_push(s->out, id, 0, 0, 0, 0) ? ENG_ENOMEM : 0;
}

int eng_marian_tok_encode(const eng_marian_tok *t, int target, const char *text, size_t len,
                          int max_len, eng_encoding *out, eng_error *err)
{
    out->n = 0;
    out->truncated = 0;
    id_sink s = {t, out, max_len > 0 ? max_len - 1 : -1, 0};
    int rc = eng_marian_tok_pieces(t, target, text, len, push_piece, &s, err);
    if (rc)
        return rc == ENG_ENOMEM ? eng_fail(err, rc, "out of memory") : rc;
    if (eng_encoding_push(out, t->eos, 0, -1, 0, 0))
        return eng_fail(err, ENG_ENOMEM, "out of memory");
    out->truncated = s.dropped;
    return ENG_OK;
}

/* --------------------------------------------------------------- decoding */

typedef struct sbuf {
    char *p;
    size_t n, cap;
    int oom;
} sbuf;

static void sb_add(sbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static int is_special_str(const eng_marian_tok *t, const char *s)
{
    for (int k = 0; k < t->n_added; k++)
        if (t->added[k].special && strcmp(t->added[k].content, s) == 0)
            return 1;
    return 0;
}

/* target.spm over pieces[0, n) appended to b. */
static int spm_decode_run(const eng_marian_tok *t, const char **pieces, size_t *lens, int n,
                          sbuf *b)
{
    char *txt;
    size_t tl;
    int rc = eng_spm_decode(t->spm[1], pieces, lens, n, &txt, &tl);
    if (rc)
        return rc;
    sb_add(b, txt, tl);
    free(txt);
    return b->oom ? ENG_ENOMEM : ENG_OK;
}

/* convert_tokens_to_string: specials verbatim between decoded runs, U+2581 ->
 * ' ', strip. Appends to out. */
static int tokens_to_string(const eng_marian_tok *t, const char **tok, size_t *lens, int n,
                            sbuf *out)
{
    sbuf s = {0};
    int rc = ENG_OK, run = 0;
    for (int i = 0; i <= n && !rc; i++) {
        if (i < n && !is_special_str(t, tok[i]))
            continue;
        rc = spm_decode_run(t, tok + run, lens + run, i - run, &s);
        if (!rc && i < n) {
            sb_add(&s, tok[i], lens[i]);
            sb_add(&s, " ", 1);
        }
        run = i + 1;
    }
    sb_add(&s, "", 0);
    if (!rc && s.oom)
        rc = ENG_ENOMEM;
    if (!rc) {
        size_t w = 0; /* U+2581 (e2 96 81) -> ' ' */
        for (size_t i = 0; i < s.n; i++) {
            if (i + 2 < s.n && (unsigned char)s.p[i] == 0xe2 &&
                (unsigned char)s.p[i + 1] == 0x96 && (unsigned char)s.p[i + 2] == 0x81) {
                s.p[w++] = ' ';
                i += 2;
            } else {
                s.p[w++] = s.p[i];
            }
        }
        size_t a = py_lstrip(s.p, w);
        size_t e = a + py_rstrip_len(s.p + a, w - a);
        sb_add(out, s.p + a, e - a);
        if (out->oom)
            rc = ENG_ENOMEM;
    }
    free(s.p);
    return rc;
}

/* PreTrainedTokenizerBase.clean_up_tokenization: str.replace, in this order. */
static void clean_up(sbuf *b)
{
    static const char *const from[] = {" .", " ?", " !", " ,", " ' ", " n't", " 'm", " 's",
                                       " 've", " 're"};
    static const char *const to[] = {".", "?", "!", ",", "'", "n't", "'m", "'s", "'ve", "'re"};
    for (size_t r = 0; r < sizeof from / sizeof from[0]; r++) {
        size_t fl = strlen(from[r]), tl = strlen(to[r]), w = 0;
        for (size_t i = 0; i < b->n;) {
            if (i + fl <= b->n && memcmp(b->p + i, from[r], fl) == 0) {
                memmove(b->p + w, to[r], tl); /* tl < fl: never overtakes i */
                w += tl;
                i += fl;
            } else {
                b->p[w++] = b->p[i++];
            }
        }
        b->n = w;
        b->p[w] = 0;
    }
}

int eng_marian_tok_decode(const eng_marian_tok *t, const int32_t *ids, int n, char **out,
                          size_t *out_len, eng_error *err)
{
    *out = NULL;
    const char **tok = malloc(sizeof *tok * (size_t)(n > 0 ? n : 1));
    size_t *lens = malloc(sizeof *lens * (size_t)(n > 0 ? n : 1));
    sbuf text = {0};
    int rc = ENG_OK, nt = 0, run = 0, nsub = 0;
    if (!tok || !lens) {
        rc = ENG_ENOMEM;
        goto done;
    }
    for (int i = 0; i < n; i++) {
        int32_t id = ids[i];
        const mt_added *a = NULL;
        for (int k = 0; k < t->n_added && !a; k++)
            if (t->added[k].id == id)
                a = &t->added[k];
        if (a && a->special)
            continue; /* skip_special_tokens */
        /* decoder.get(id, unk_token): an id without a piece decodes as the
         * unknown token's text, which then stays verbatim (it is special) */
        const char *p = a ? a->content
                          : id >= 0 && id < t->n_ids && t->piece[id] ? t->piece[id]
                                                                     : t->unk_text;
        tok[nt] = p;
        lens[nt] = strlen(p);
        nt++;
    }
    /* sub_texts: runs of ordinary tokens, and non-special added tokens alone */
    for (int i = 0; i <= nt && !rc; i++) {
        const mt_added *a = NULL;
        if (i < nt)
            for (int k = 0; k < t->n_added && !a; k++)
                if (!t->added[k].special && strcmp(t->added[k].content, tok[i]) == 0)
                    a = &t->added[k];
        if (i < nt && !a)
            continue;
        if (i > run) {
            sbuf sub = {0};
            rc = tokens_to_string(t, tok + run, lens + run, i - run, &sub);
            /* an empty run before an added token is dropped (len(string) > 0) */
            if (!rc && (sub.n > 0 || i == nt)) {
                if (nsub++)
                    sb_add(&text, " ", 1);
                sb_add(&text, sub.p ? sub.p : "", sub.n);
            }
            free(sub.p);
        }
        if (a) {
            if (nsub++)
                sb_add(&text, " ", 1);
            sb_add(&text, a->content, a->len);
        }
        run = i + 1;
    }
    sb_add(&text, "", 0);
    if (!rc && text.oom)
        rc = ENG_ENOMEM;
    if (!rc && t->clean_up)
        clean_up(&text);
done:
    free(tok);
    free(lens);
    if (rc) {
        free(text.p);
        return rc == ENG_ENOMEM ? eng_fail(err, rc, "out of memory")
                                : eng_fail(err, rc, "SentencePiece could not decode the ids");
    }
    *out = text.p;
    if (out_len)
        *out_len = text.n;
    return ENG_OK;
}

/* ---------------------------------------------------------------- getters */

int eng_marian_tok_vocab_size(const eng_marian_tok *t) { return t->n_ids; }
int32_t eng_marian_tok_eos_id(const eng_marian_tok *t) { return t->eos; }
int32_t eng_marian_tok_pad_id(const eng_marian_tok *t) { return t->pad; }
int32_t eng_marian_tok_unk_id(const eng_marian_tok *t) { return t->unk; }
int eng_marian_tok_model_max_length(const eng_marian_tok *t) { return t->max_len; }
const char *eng_marian_tok_source_lang(const eng_marian_tok *t) { return t->source_lang; }
const char *eng_marian_tok_target_lang(const eng_marian_tok *t) { return t->target_lang; }

int32_t eng_marian_tok_id(const eng_marian_tok *t, const char *piece)
{
    return lookup(t, piece, strlen(piece));
}

const char *eng_marian_tok_piece(const eng_marian_tok *t, int32_t id)
{
    return id >= 0 && id < t->n_ids ? t->piece[id] : NULL;
}

int eng_marian_tok_lang_codes(const eng_marian_tok *t, const char *const **codes)
{
    *codes = t->codes;
    return t->n_codes;
}
