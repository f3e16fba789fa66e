/* test_tokenizer.c - WordPiece tokenizer: unit tests and parity with the
 * Hugging Face fast tokenizer (goldens from tests/reference/make_tokenizer_goldens.py,
 * which documents the fixture formats and how each corpus is read). */
#include "test_util.h"

#include <cjson/cJSON.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nlpd_engine.h"
#include "core/util.h" /* eng_tok_steps */

#define FIX "%s/tests/fixtures/tokenizer/%s"
#define NO_TRUNC (1 << 30)

static const char *bert_dir(void)
{
    return tu_path("%s/tokenizers/bert-base-uncased", tu_shared());
}

static eng_tokenizer *load_ok(const char *dir)
{
    eng_tokenizer *t = NULL;
    eng_error err = {0};
    int rc = eng_tokenizer_load(dir, &t, &err);
    if (rc)
        fail_msg("load %s: %s", dir, err.msg);
    assert_non_null(t);
    return t;
}

/* ------------------------------------------------------------ temp dirs */

typedef struct tmpdir {
    char path[256];
    char files[8][64];
    int n;
} tmpdir;

static void tmp_make(tmpdir *d)
{
    snprintf(d->path, sizeof d->path, "/tmp/nlpd_tok_XXXXXX");
    assert_non_null(mkdtemp(d->path));
    d->n = 0;
}

static void tmp_write(tmpdir *d, const char *name, const char *data, size_t len)
{
    const char *p = tu_path("%s/%s", d->path, name);
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    fclose(f);
    for (int i = 0; i < d->n; i++)
        if (strcmp(d->files[i], name) == 0)
            return;
    assert_true(d->n < 8);
    snprintf(d->files[d->n++], sizeof d->files[0], "%s", name);
}

static void tmp_copy(tmpdir *d, const char *src, const char *name)
{
    size_t len;
    char *buf = tu_read_file(src, &len);
    assert_non_null(buf);
    tmp_write(d, name, buf, len);
    free(buf);
}

static void tmp_remove(tmpdir *d)
{
    for (int i = 0; i < d->n; i++)
        unlink(tu_path("%s/%s", d->path, d->files[i]));
    rmdir(d->path);
}

/* Folder with tokenizer.json's casing turned off and do_lower_case=false. */
static void make_cased(tmpdir *d)
{
    tmp_make(d);
    char *js = tu_read_file(tu_path("%s/tokenizer.json", bert_dir()), NULL);
    assert_non_null(js);
    cJSON *root = cJSON_Parse(js);
    free(js);
    assert_non_null(root);
    cJSON *norm = cJSON_GetObjectItem(root, "normalizer");
    cJSON_ReplaceItemInObject(norm, "lowercase", cJSON_CreateFalse());
    cJSON_ReplaceItemInObject(norm, "strip_accents", cJSON_CreateFalse());
    char *out = cJSON_PrintUnformatted(root);
    tmp_write(d, "tokenizer.json", out, strlen(out));
    free(out);
    cJSON_Delete(root);
    const char *cfg = "{\"do_lower_case\": false, \"tokenizer_class\": \"BertTokenizer\"}";
    tmp_write(d, "tokenizer_config.json", cfg, strlen(cfg));
}

/* Folder with only vocab.txt + tokenizer_config.json (cfg NULL: the real one). */
static void make_txt(tmpdir *d, const char *cfg)
{
    tmp_make(d);
    tmp_copy(d, tu_path("%s/vocab.txt", bert_dir()), "vocab.txt");
    if (cfg)
        tmp_write(d, "tokenizer_config.json", cfg, strlen(cfg));
    else
        tmp_copy(d, tu_path("%s/tokenizer_config.json", bert_dir()), "tokenizer_config.json");
}

/* ------------------------------------------------------------- corpora */

typedef struct text {
    const char *s;
    size_t len;
} text;

typedef struct corpus {
    text *v;
    size_t n, cap;
    char *store[2]; /* buffers the texts point into */
    cJSON *json;
} corpus;

static void corpus_add(corpus *c, const char *s, size_t len)
{
    if (c->n == c->cap) {
        c->cap = c->cap ? 2 * c->cap : 1024;
        c->v = realloc(c->v, c->cap * sizeof *c->v);
        assert_non_null(c->v);
    }
    c->v[c->n++] = (text){s, len};
}

static void corpus_free(corpus *c)
{
    free(c->v);
    free(c->store[0]);
    free(c->store[1]);
    cJSON_Delete(c->json);
    memset(c, 0, sizeof *c);
}

static char *read_data(const char *rel, size_t *len)
{
    char *buf = tu_read_file(tu_path("%s/data/%s", tu_shared(), rel), len);
    if (!buf)
        fail_msg("cannot read %s/data/%s", tu_shared(), rel);
    return buf;
}

/* Lines split on '\n', a final empty piece dropped; skip the first `skip`.
 * tsv: keep only the part before the line's last tab. */
static void read_lines(corpus *c, const char *rel, int skip, int tsv)
{
    size_t len;
    char *buf = c->store[0] = read_data(rel, &len);
    for (size_t i = 0; i < len;) {
        char *nl = memchr(buf + i, '\n', len - i);
        size_t e = nl ? (size_t)(nl - buf) : len;
        if (skip > 0) {
            skip--;
        } else {
            size_t end = e;
            if (tsv) {
                while (end > i && buf[end - 1] != '\t')
                    end--;
                assert_true(end > i);
                end--;
            }
            corpus_add(c, buf + i, end - i);
        }
        i = e + 1;
    }
}

/* Column 0 of a CSV file after its header, like Python's csv module
 * (quoted fields keep embedded newlines; "" is a quote; a lone \r, \n or
 * \r\n ends a record; text after a closing quote is kept, as non-strict csv). */
static void read_csv_col0(corpus *c, const char *rel)
{
    size_t len;
    char *src = c->store[0] = read_data(rel, &len);
    char *dst = c->store[1] = malloc(len + 1);
    assert_non_null(dst);
    size_t i = 0, o = 0;
    int row = 0;
    while (i < len) {
        int field = 0;
        size_t start = o;
        for (;;) { /* one field */
            int quoted = i < len && src[i] == '"';
            if (quoted)
                i++;
            while (i < len) {
                char ch = src[i];
                if (quoted && ch == '"') {
                    if (i + 1 < len && src[i + 1] == '"') {
                        dst[o++] = '"';
                        i += 2;
                        continue;
                    }
                    quoted = 0;
                    i++;
                    continue;
                }
                if (!quoted && (ch == ',' || ch == '\n' || ch == '\r'))
                    break;
                dst[o++] = ch;
                i++;
            }
            if (field == 0 && row > 0)
                corpus_add(c, dst + start, o - start);
            field++;
            if (i < len && src[i] == ',') {
                i++;
                start = o;
                continue;
            }
            if (i < len && src[i] == '\r')
                i++;
            if (i < len && src[i] == '\n')
                i++;
            break;
        }
        row++;
    }
}

static void read_clinc(corpus *c)
{
    size_t len;
    c->store[0] = read_data("clinc150/data_train_val.json", &len);
    c->json = cJSON_ParseWithLength(c->store[0], len);
    assert_non_null(c->json);
    const cJSON *split, *item;
    cJSON_ArrayForEach(split, c->json)
    {
        cJSON_ArrayForEach(item, split)
        {
            const char *s = cJSON_GetArrayItem(item, 0)->valuestring;
            corpus_add(c, s, strlen(s));
        }
    }
}

/* SQuAD: each paragraph's context, then its questions; pairs (question,
 * context) go to q/ctx when given. */
static void read_squad(corpus *c, corpus *q, corpus *ctx)
{
    size_t len;
    c->store[0] = read_data("squad/squad_v2_dev_subset.json", &len);
    c->json = cJSON_ParseWithLength(c->store[0], len);
    assert_non_null(c->json);
    const cJSON *art, *para, *qa;
    cJSON_ArrayForEach(art, cJSON_GetObjectItem(c->json, "data"))
    {
        cJSON_ArrayForEach(para, cJSON_GetObjectItem(art, "paragraphs"))
        {
            const char *cs = cJSON_GetObjectItem(para, "context")->valuestring;
            corpus_add(c, cs, strlen(cs));
            cJSON_ArrayForEach(qa, cJSON_GetObjectItem(para, "qas"))
            {
                const char *qs = cJSON_GetObjectItem(qa, "question")->valuestring;
                corpus_add(c, qs, strlen(qs));
                if (q) {
                    corpus_add(q, qs, strlen(qs));
                    corpus_add(ctx, cs, strlen(cs));
                }
            }
        }
    }
}

/* ------------------------------------------------------------- hashing */

static uint64_t fnv_i32(uint64_t h, const int32_t *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t x = (uint32_t)v[i];
        for (int b = 0; b < 4; b++) {
            h ^= (x >> (8 * b)) & 0xff;
            h *= 0x100000001b3ULL;
        }
    }
    return h;
}

static uint64_t enc_hash(const eng_encoding *e, int with_types)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    h = fnv_i32(h, e->ids, (size_t)e->n);
    h = fnv_i32(h, e->offsets, 2 * (size_t)e->n);
    if (with_types)
        h = fnv_i32(h, e->type_ids, (size_t)e->n);
    return h;
}

typedef struct golden_hash {
    uint64_t h;
    int n;
} golden_hash;

static golden_hash *read_hashes(const char *name, size_t *count)
{
    char *buf = tu_read_file(tu_path(FIX, tu_root(), name), NULL);
    if (!buf)
        fail_msg("missing fixture %s (run tests/reference/make_tokenizer_goldens.py)", name);
    size_t cap = 1024, n = 0;
    golden_hash *v = malloc(cap * sizeof *v);
    assert_non_null(v);
    for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
        if (line[0] == '#')
            continue;
        if (n == cap) {
            cap *= 2;
            v = realloc(v, cap * sizeof *v);
            assert_non_null(v);
        }
        unsigned long long h;
        int k;
        assert_int_equal(sscanf(line, "%16llx %d", &h, &k), 2);
        v[n++] = (golden_hash){h, k};
    }
    free(buf);
    *count = n;
    return v;
}

static void print_text(const char *what, size_t line, const text *t)
{
    printf("  MISMATCH %s text %zu: \"%.*s\"\n", what, line, (int)(t->len > 400 ? 400 : t->len),
           t->s);
}

/* Encode every text (pairs when b is given) and compare with the golden
 * hashes; prints each mismatch, returns the number of failures. */
static int check_hashes(const eng_tokenizer *tok, const char *name, const corpus *a,
                        const corpus *b, int max_len)
{
    size_t ng;
    golden_hash *g = read_hashes(tu_path("%s.hashes", name), &ng);
    if (ng != a->n) {
        printf("  %s: %zu texts read, %zu golden lines\n", name, a->n, ng);
        free(g);
        return 1;
    }
    eng_encoding e;
    eng_encoding_init(&e);
    eng_error err = {0};
    int bad = 0;
    for (size_t i = 0; i < a->n; i++) {
        int rc = eng_tokenizer_encode(tok, a->v[i].s, a->v[i].len, b ? b->v[i].s : NULL,
                                      b ? b->v[i].len : 0, max_len, &e, &err);
        if (rc || e.n != g[i].n || enc_hash(&e, b != NULL) != g[i].h) {
            if (bad < 10) {
                print_text(name, i + 1, &a->v[i]);
                if (rc)
                    printf("    error: %s\n", err.msg);
                else
                    printf("    %d tokens, golden %d\n", e.n, g[i].n);
            }
            bad++;
        }
    }
    eng_encoding_free(&e);
    free(g);
    printf("  %-16s %zu/%zu match\n", name, a->n - (size_t)bad, a->n);
    return bad;
}

static void test_parity_corpora(void **state)
{
    (void)state;
    eng_tokenizer *tok = load_ok(bert_dir());
    int bad = 0;
    static const struct {
        const char *name, *file;
        int kind; /* 0 lines, 1 tsv, 2 csv */
    } files[] = {
        {"sst2_glue_dev", "sst2/glue_sst2_dev.tsv", 1},
        {"sst2_dev", "sst2/sst_binary_sent_dev.csv", 2},
        {"sst2_train", "sst2/sst_binary_sent_train.csv", 2},
        {"banking77", "banking77/train.csv", 2},
        {"flores_eng", "mt_testsets/flores200_devtest/eng_Latn.devtest", 0},
        {"flores_deu", "mt_testsets/flores200_devtest/deu_Latn.devtest", 0},
        {"flores_fra", "mt_testsets/flores200_devtest/fra_Latn.devtest", 0},
    };
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        corpus c = {0};
        if (files[i].kind == 2)
            read_csv_col0(&c, files[i].file);
        else
            read_lines(&c, files[i].file, files[i].kind == 1, files[i].kind == 1);
        bad += check_hashes(tok, files[i].name, &c, NULL, NO_TRUNC);
        corpus_free(&c);
    }
    corpus c = {0}, q = {0}, ctx = {0};
    read_clinc(&c);
    bad += check_hashes(tok, "clinc150", &c, NULL, NO_TRUNC);
    corpus_free(&c);
    read_squad(&c, &q, &ctx);
    bad += check_hashes(tok, "squad", &c, NULL, NO_TRUNC);
    bad += check_hashes(tok, "squad_pairs_64", &q, &ctx, 64);
    bad += check_hashes(tok, "squad_pairs_128", &q, &ctx, 128);
    corpus_free(&c);
    corpus_free(&q);
    corpus_free(&ctx);
    eng_tokenizer_free(tok);
    assert_int_equal(bad, 0);
}

/* ------------------------------------------------------- full goldens */

static char *unhex(const char *h, size_t *len)
{
    size_t n = strlen(h) / 2;
    char *s = malloc(n + 1);
    assert_non_null(s);
    for (size_t i = 0; i < n; i++) {
        unsigned x;
        assert_int_equal(sscanf(h + 2 * i, "%2x", &x), 1);
        s[i] = (char)x;
    }
    s[n] = 0;
    *len = n;
    return s;
}

/* Compare e with golden arrays ids/offsets/type_ids (type_ids may be NULL). */
static int same_encoding(const eng_encoding *e, const cJSON *ids, const cJSON *offs,
                         const cJSON *types)
{
    if (cJSON_GetArraySize(ids) != e->n || cJSON_GetArraySize(offs) != 2 * e->n)
        return 0;
    for (int i = 0; i < e->n; i++) {
        if (cJSON_GetArrayItem(ids, i)->valueint != e->ids[i] ||
            cJSON_GetArrayItem(offs, 2 * i)->valueint != e->offsets[2 * i] ||
            cJSON_GetArrayItem(offs, 2 * i + 1)->valueint != e->offsets[2 * i + 1] ||
            (types && cJSON_GetArrayItem(types, i)->valueint != e->type_ids[i]))
            return 0;
    }
    return 1;
}

static void print_mismatch(const char *what, int idx, const char *s, size_t len,
                           const eng_encoding *e, const cJSON *ids, const cJSON *offs)
{
    printf("  MISMATCH %s #%d: \"%.*s\"\n    got:    ", what, idx, (int)len, s);
    for (int i = 0; i < e->n; i++)
        printf(" %d(%d,%d)", e->ids[i], e->offsets[2 * i], e->offsets[2 * i + 1]);
    printf("\n    golden: ");
    for (int i = 0; i < cJSON_GetArraySize(ids); i++)
        printf(" %d(%d,%d)", cJSON_GetArrayItem(ids, i)->valueint,
               cJSON_GetArrayItem(offs, 2 * i)->valueint,
               cJSON_GetArrayItem(offs, 2 * i + 1)->valueint);
    printf("\n");
}

static cJSON *read_json_fixture(const char *name)
{
    char *buf = tu_read_file(tu_path(FIX, tu_root(), name), NULL);
    if (!buf)
        fail_msg("missing fixture %s", name);
    cJSON *j = cJSON_Parse(buf);
    free(buf);
    assert_non_null(j);
    return j;
}

/* awkward.txt goldens ("full" and "t16") against one tokenizer. */
static int check_awkward(const eng_tokenizer *tok, const char *fixture, const char *what)
{
    cJSON *j = read_json_fixture(fixture);
    eng_encoding e;
    eng_encoding_init(&e);
    eng_error err = {0};
    int bad = 0, idx = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, j)
    {
        size_t len;
        char *s = unhex(cJSON_GetObjectItem(it, "hex")->valuestring, &len);
        static const char *const modes[] = {"full", "t16"};
        for (int m = 0; m < 2; m++) {
            const cJSON *g = cJSON_GetObjectItem(it, modes[m]);
            const cJSON *ids = cJSON_GetObjectItem(g, "ids");
            const cJSON *offs = cJSON_GetObjectItem(g, "offsets");
            int rc = eng_tokenizer_encode(tok, s, len, NULL, 0, m ? 16 : NO_TRUNC, &e, &err);
            if (rc || !same_encoding(&e, ids, offs, NULL)) {
                print_mismatch(tu_path("%s %s", what, modes[m]), idx, s, len, &e, ids, offs);
                bad++;
            }
        }
        free(s);
        idx++;
    }
    printf("  awkward %-22s %d texts, %d mismatches\n", what, idx, bad);
    eng_encoding_free(&e);
    cJSON_Delete(j);
    return bad;
}

static void test_parity_awkward(void **state)
{
    (void)state;
    tmpdir txt, cased, cased_txt;
    make_txt(&txt, NULL);
    make_cased(&cased);
    make_txt(&cased_txt, "{\"do_lower_case\": false}");
    const char *dirs[] = {bert_dir(), txt.path, cased.path, cased_txt.path};
    const char *what[] = {"uncased tokenizer.json", "uncased vocab.txt",
                          "cased tokenizer.json", "cased vocab.txt"};
    int bad = 0;
    for (int i = 0; i < 4; i++) {
        eng_tokenizer *tok = load_ok(dirs[i]);
        bad += check_awkward(tok, i < 2 ? "awkward_uncased.json" : "awkward_cased.json",
                             what[i]);
        eng_tokenizer_free(tok);
    }
    tmp_remove(&txt);
    tmp_remove(&cased);
    tmp_remove(&cased_txt);
    assert_int_equal(bad, 0);
}

static void test_parity_pairs(void **state)
{
    (void)state;
    eng_tokenizer *tok = load_ok(bert_dir());
    cJSON *j = read_json_fixture("pairs.json");
    eng_encoding e;
    eng_encoding_init(&e);
    eng_error err = {0};
    int bad = 0, idx = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, j)
    {
        const char *a = cJSON_GetObjectItem(it, "a")->valuestring;
        const char *b = cJSON_GetObjectItem(it, "b")->valuestring;
        int ml = cJSON_GetObjectItem(it, "max_length")->valueint;
        const cJSON *ids = cJSON_GetObjectItem(it, "ids");
        const cJSON *offs = cJSON_GetObjectItem(it, "offsets");
        int rc = eng_tokenizer_encode(tok, a, strlen(a), b, strlen(b), ml, &e, &err);
        if (rc || !same_encoding(&e, ids, offs, cJSON_GetObjectItem(it, "type_ids"))) {
            print_mismatch(tu_path("pair max_length=%d", ml), idx, a, strlen(a), &e, ids, offs);
            bad++;
        }
        idx++;
    }
    eng_encoding_free(&e);
    cJSON_Delete(j);
    eng_tokenizer_free(tok);
    assert_int_equal(bad, 0);
}

/* ----------------------------------------------------------- unit tests */

static int setup_tok(void **state)
{
    eng_tokenizer *t = NULL;
    eng_error err = {0};
    if (eng_tokenizer_load(bert_dir(), &t, &err)) {
        printf("load: %s\n", err.msg);
        return -1;
    }
    *state = t;
    return 0;
}

static int teardown_tok(void **state)
{
    eng_tokenizer_free(*state);
    return 0;
}

static void test_vocab_queries(void **state)
{
    const eng_tokenizer *t = *state;
    assert_int_equal(eng_tokenizer_vocab_size(t), 30522);
    assert_int_equal(eng_tokenizer_model_max_length(t), 512);
    assert_int_equal(eng_tokenizer_cls_id(t), 101);
    assert_int_equal(eng_tokenizer_sep_id(t), 102);
    assert_int_equal(eng_tokenizer_pad_id(t), 0);
    assert_int_equal(eng_tokenizer_token_id(t, "[UNK]"), 100);
    assert_int_equal(eng_tokenizer_token_id(t, "the"), 1996);
    assert_int_equal(eng_tokenizer_token_id(t, "##ing"), 2075);
    assert_int_equal(eng_tokenizer_token_id(t, "no-such-token-here"), -1);
    assert_int_equal(eng_tokenizer_token_id(t, ""), -1);
    assert_string_equal(eng_tokenizer_id_token(t, 1996), "the");
    assert_string_equal(eng_tokenizer_id_token(t, 0), "[PAD]");
    assert_null(eng_tokenizer_id_token(t, -1));
    assert_null(eng_tokenizer_id_token(t, 30522));
    /* every id maps back to itself */
    for (int32_t id = 0; id < eng_tokenizer_vocab_size(t); id++)
        assert_int_equal(eng_tokenizer_token_id(t, eng_tokenizer_id_token(t, id)), id);
}

static void test_empty_and_space(void **state)
{
    const eng_tokenizer *t = *state;
    eng_encoding e;
    eng_encoding_init(&e);
    eng_error err = {0};
    static const char *const blank[] = {"", " ", "\t\n\r ", "\xc2\xa0\xe3\x80\x80", "\x01\x7f"};
    for (size_t i = 0; i < sizeof blank / sizeof blank[0]; i++) {
        assert_int_equal(eng_tokenizer_encode(t, blank[i], strlen(blank[i]), NULL, 0, 0, &e, &err), 0);
        assert_int_equal(e.n, 2);
        assert_int_equal(e.ids[0], 101);
        assert_int_equal(e.ids[1], 102);
        assert_int_equal(e.seq_ids[0], -1);
        assert_int_equal(e.offsets[0], 0);
        assert_int_equal(e.offsets[3], 0);
        assert_int_equal(eng_tokenizer_encode_raw(t, blank[i], strlen(blank[i]), &e, &err), 0);
        assert_int_equal(e.n, 0);
    }
    /* NULL text of length 0 is the empty text */
    assert_int_equal(eng_tokenizer_encode_raw(t, NULL, 0, &e, &err), 0);
    assert_int_equal(e.n, 0);
    eng_encoding_free(&e);
}

static void test_invalid_utf8(void **state)
{
    const eng_tokenizer *t = *state;
    static const struct {
        const char *s;
        size_t len;
        long at;
    } bad[] = {
        {"ab\xff", 3, 2},                /* 0xFF never appears */
        {"\xc0\x80", 2, 0},              /* overlong NUL */
        {"x\xc1\xbf", 3, 1},             /* overlong ASCII */
        {"\xe0\x80\xaf", 3, 0},          /* overlong 3-byte */
        {"\xf0\x80\x80\xaf", 4, 0},      /* overlong 4-byte */
        {"ok \xed\xa0\x80", 6, 3},       /* UTF-16 surrogate D800 */
        {"\xed\xbf\xbf", 3, 0},          /* surrogate DFFF */
        {"\xf4\x90\x80\x80", 4, 0},      /* above U+10FFFF */
        {"\xf5\x80\x80\x80", 4, 0},      /* F5 lead byte */
        {"abc\xe2\x82", 5, 3},           /* truncated at end */
        {"\xe2\x82x", 3, 0},             /* truncated in the middle */
        {"\x80", 1, 0},                  /* lone continuation */
        {"caf\xc3\xa9\xc3", 6, 5},       /* valid then truncated */
        {"\xf0\x9f\x98", 3, 0},          /* truncated emoji */
    };
    eng_encoding e;
    eng_encoding_init(&e);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        eng_error err = {0};
        assert_int_equal(eng_tokenizer_encode(t, bad[i].s, bad[i].len, NULL, 0, 0, &e, &err),
                         ENG_EUTF8);
        assert_int_equal(err.code, ENG_EUTF8);
        char want[64];
        snprintf(want, sizeof want, "byte %ld", bad[i].at);
        if (!strstr(err.msg, want))
            fail_msg("case %zu: message \"%s\" lacks \"%s\"", i, err.msg, want);
        assert_int_equal(eng_tokenizer_encode_raw(t, bad[i].s, bad[i].len, &e, &err), ENG_EUTF8);
        /* invalid pair text too */
        assert_int_equal(eng_tokenizer_encode(t, "ok", 2, bad[i].s, bad[i].len, 0, &e, &err),
                         ENG_EUTF8);
        assert_non_null(strstr(err.msg, "pair"));
    }
    /* length is honoured: the bad byte past len is not looked at */
    eng_error err = {0};
    assert_int_equal(eng_tokenizer_encode_raw(t, "ab\xff", 2, &e, &err), 0);
    assert_int_equal(e.n, 1);
    eng_encoding_free(&e);
}

static void test_unknown_and_long_words(void **state)
{
    const eng_tokenizer *t = *state;
    eng_encoding e;
    eng_encoding_init(&e);
    eng_error err = {0};
    /* a character missing from the vocabulary makes its whole word [UNK] */
    const char *s = "hello \xf0\x9f\x98\x80x world";
    assert_int_equal(eng_tokenizer_encode_raw(t, s, strlen(s), &e, &err), 0);
    assert_int_equal(e.n, 3);
    assert_int_equal(e.ids[1], 100);
    assert_int_equal(e.offsets[2], 6);
    assert_int_equal(e.offsets[3], 11);
    /* 100 characters is still split into pieces, 101 is one [UNK] */
    char word[300];
    memset(word, 'a', 101);
    assert_int_equal(eng_tokenizer_encode_raw(t, word, 100, &e, &err), 0);
    assert_true(e.n > 1);
    assert_int_not_equal(e.ids[0], 100);
    assert_int_equal(eng_tokenizer_encode_raw(t, word, 101, &e, &err), 0);
    assert_int_equal(e.n, 1);
    assert_int_equal(e.ids[0], 100);
    assert_int_equal(e.offsets[0], 0);
    assert_int_equal(e.offsets[1], 101);
    /* the limit counts characters, not bytes: 99 x "é" (198 bytes) is a word */
    for (int i = 0; i < 99; i++)
        memcpy(word + 2 * i, "\xc3\xa9", 2);
    assert_int_equal(eng_tokenizer_encode_raw(t, word, 198, &e, &err), 0);
    assert_true(e.n > 1);
    /* a very long text of one word (heap path of the word buffer) */
    size_t big = 100000;
    char *huge = malloc(big);
    assert_non_null(huge);
    memset(huge, 'b', big);
    assert_int_equal(eng_tokenizer_encode_raw(t, huge, big, &e, &err), 0);
    assert_int_equal(e.n, 1);
    assert_int_equal(e.offsets[1], (int)big);
    free(huge);
    eng_encoding_free(&e);
}

static void test_offsets_and_raw(void **state)
{
    const eng_tokenizer *t = *state;
    eng_encoding e;
    eng_encoding_init(&e);
    eng_error err = {0};
    /* "Café" lowercased and stripped -> "cafe"; offsets cover the original bytes */
    const char *s = "  Café, PLAYING!";
    assert_int_equal(eng_tokenizer_encode_raw(t, s, strlen(s), &e, &err), 0);
    const char *want[] = {"cafe", ",", "playing", "!"};
    const int offs[] = {2, 7, 7, 8, 9, 16, 16, 17};
    assert_int_equal(e.n, 4);
    for (int i = 0; i < 4; i++) {
        assert_string_equal(eng_tokenizer_id_token(t, e.ids[i]), want[i]);
        assert_int_equal(e.offsets[2 * i], offs[2 * i]);
        assert_int_equal(e.offsets[2 * i + 1], offs[2 * i + 1]);
        assert_int_equal(e.type_ids[i], 0);
        assert_int_equal(e.seq_ids[i], 0);
    }
    /* word pieces: "unaffable" -> una ##ffa ##ble */
    assert_int_equal(eng_tokenizer_encode_raw(t, "unaffable", 9, &e, &err), 0);
    assert_int_equal(e.n, 3);
    assert_string_equal(eng_tokenizer_id_token(t, e.ids[1]), "##ffa");
    assert_int_equal(e.offsets[2], 3);
    assert_int_equal(e.offsets[3], 6);
    /* CJK characters stand alone */
    s = "\xe4\xb8\xad\xe6\x96\x87" "ab";
    assert_int_equal(eng_tokenizer_encode_raw(t, s, strlen(s), &e, &err), 0);
    assert_int_equal(e.n, 3);
    assert_int_equal(e.offsets[2], 3);
    assert_int_equal(e.offsets[3], 6);
    /* literal special tokens are matched before normalisation */
    s = "a [MASK] b";
    assert_int_equal(eng_tokenizer_encode_raw(t, s, strlen(s), &e, &err), 0);
    assert_int_equal(e.n, 3);
    assert_int_equal(e.ids[1], 103);
    assert_int_equal(e.offsets[2], 2);
    assert_int_equal(e.offsets[3], 8);
    eng_encoding_free(&e);
}

static void test_truncation_and_pairs(void **state)
{
    const eng_tokenizer *t = *state;
    eng_encoding e;
    eng_encoding_init(&e);
    eng_error err = {0};
    const char *a = "one two three four five six seven eight nine ten";
    const char *b = "alpha beta gamma";
    /* single text: [CLS] + 8 + [SEP] */
    assert_int_equal(eng_tokenizer_encode(t, a, strlen(a), NULL, 0, 10, &e, &err), 0);
    assert_int_equal(e.n, 10);
    assert_int_equal(e.truncated, 2);
    assert_int_equal(e.ids[9], 102);
    assert_int_equal(e.offsets[2 * 8 + 1], (int)(strstr(a, "eight") - a) + 5);
    /* max_len 0: the model maximum, no truncation here */
    assert_int_equal(eng_tokenizer_encode(t, a, strlen(a), NULL, 0, 0, &e, &err), 0);
    assert_int_equal(e.n, 12);
    assert_int_equal(e.truncated, 0);
    /* pair, longest first: 10 + 3 tokens, budget 9 -> 6 + 3 */
    assert_int_equal(eng_tokenizer_encode(t, a, strlen(a), b, strlen(b), 12, &e, &err), 0);
    assert_int_equal(e.n, 12);
    assert_int_equal(e.truncated, 4);
    const int32_t types[] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1};
    const int32_t seqs[] = {-1, 0, 0, 0, 0, 0, 0, -1, 1, 1, 1, -1};
    for (int i = 0; i < 12; i++) {
        assert_int_equal(e.type_ids[i], types[i]);
        assert_int_equal(e.seq_ids[i], seqs[i]);
    }
    assert_int_equal(e.ids[7], 102);
    assert_int_equal(e.ids[11], 102);
    assert_int_equal(e.offsets[2 * 8], 0); /* "alpha" at the start of the pair text */
    assert_int_equal(e.offsets[2 * 9], 6);
    /* both long: split evenly, the odd token to the second */
    assert_int_equal(eng_tokenizer_encode(t, a, strlen(a), a, strlen(a), 8, &e, &err), 0);
    assert_int_equal(e.n, 8);
    assert_int_equal(e.ids[3], 102);
    /* too small for the special tokens */
    assert_int_equal(eng_tokenizer_encode(t, a, strlen(a), b, strlen(b), 2, &e, &err),
                     ENG_EINVAL);
    assert_int_equal(eng_tokenizer_encode(t, a, strlen(a), NULL, 0, 2, &e, &err), 0);
    assert_int_equal(e.n, 2);
    eng_encoding_free(&e);
}

static void test_encoding_buffers(void **state)
{
    (void)state;
    eng_encoding e;
    eng_encoding_init(&e);
    assert_int_equal(e.n, 0);
    assert_null(e.ids);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(eng_encoding_push(&e, i, i & 1, 0, i, i + 1), 0);
    assert_int_equal(e.n, 1000);
    assert_true(e.cap >= 1000);
    assert_int_equal(e.ids[999], 999);
    assert_int_equal(e.offsets[2 * 999 + 1], 1000);
    assert_int_equal(eng_encoding_reserve(&e, 5000), 0);
    assert_true(e.cap >= 5000);
    assert_int_equal(e.ids[500], 500);
    assert_int_equal(eng_encoding_reserve(&e, -1), ENG_EINVAL);
    eng_encoding_free(&e);
    assert_int_equal(e.cap, 0);
    assert_null(e.ids);
    eng_encoding_free(&e); /* twice is fine */
}

/* load errors name the file */
static void expect_load_error(const char *dir, int code, const char *needle)
{
    eng_tokenizer *t = (eng_tokenizer *)1;
    eng_error err = {0};
    assert_int_equal(eng_tokenizer_load(dir, &t, &err), code);
    assert_null(t);
    assert_int_equal(err.code, code);
    if (!strstr(err.msg, needle))
        fail_msg("message \"%s\" lacks \"%s\"", err.msg, needle);
}

static void test_load_errors(void **state)
{
    (void)state;
    expect_load_error("/nonexistent/nlpd-model", ENG_EIO, "/nonexistent/nlpd-model");
    tmpdir d;
    tmp_make(&d);
    expect_load_error(d.path, ENG_EIO, d.path); /* empty folder */

    tmp_write(&d, "tokenizer.json", "{\"model\": {", 11);
    expect_load_error(d.path, ENG_EFORMAT, "tokenizer.json");

    const char *bpe = "{\"normalizer\":null,\"pre_tokenizer\":{\"type\":\"ByteLevel\"},"
                      "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]}}";
    tmp_write(&d, "tokenizer.json", bpe, strlen(bpe));
    expect_load_error(d.path, ENG_EUNSUPPORTED, "tokenizer.json");
    expect_load_error(d.path, ENG_EUNSUPPORTED, "BPE");

    const char *nopre = "{\"normalizer\":null,\"pre_tokenizer\":{\"type\":\"Metaspace\"},"
                        "\"model\":{\"type\":\"WordPiece\",\"vocab\":{\"[UNK]\":0}}}";
    tmp_write(&d, "tokenizer.json", nopre, strlen(nopre));
    expect_load_error(d.path, ENG_EUNSUPPORTED, "Metaspace");

    const char *nounk = "{\"normalizer\":null,\"pre_tokenizer\":{\"type\":\"BertPreTokenizer\"},"
                        "\"model\":{\"type\":\"WordPiece\",\"vocab\":{\"a\":0}}}";
    tmp_write(&d, "tokenizer.json", nounk, strlen(nounk));
    expect_load_error(d.path, ENG_EFORMAT, "unk_token");

    /* vocab.txt route: bad tokenizer_config.json, vocab without [CLS] */
    unlink(tu_path("%s/tokenizer.json", d.path));
    tmp_write(&d, "vocab.txt", "[PAD]\n[UNK]\n[SEP]\nhello\n", 24);
    tmp_write(&d, "tokenizer_config.json", "{oops", 5);
    expect_load_error(d.path, ENG_EFORMAT, "tokenizer_config.json");
    tmp_write(&d, "tokenizer_config.json", "{}", 2);
    expect_load_error(d.path, ENG_EFORMAT, "cls_token");
    tmp_write(&d, "vocab.txt", "a\xff\n", 3);
    expect_load_error(d.path, ENG_EFORMAT, "vocab.txt");
    tmp_remove(&d);
}

/* A small vocab.txt model: defaults, model_max_length, encode through it. */
static void test_small_vocab_txt(void **state)
{
    (void)state;
    tmpdir d;
    tmp_make(&d);
    const char *vocab = "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nhellos\n##lo\nhel\n,\n";
    tmp_write(&d, "vocab.txt", vocab, strlen(vocab));
    const char *cfg = "{\"model_max_length\": 128, \"do_lower_case\": true}";
    tmp_write(&d, "tokenizer_config.json", cfg, strlen(cfg));
    eng_tokenizer *t = load_ok(d.path);
    assert_int_equal(eng_tokenizer_vocab_size(t), 9);
    assert_int_equal(eng_tokenizer_model_max_length(t), 128);
    assert_int_equal(eng_tokenizer_cls_id(t), 2);
    assert_int_equal(eng_tokenizer_sep_id(t), 3);
    assert_int_equal(eng_tokenizer_pad_id(t), 0);
    eng_encoding e;
    eng_encoding_init(&e);
    eng_error err = {0};
    /* greedy longest match, no backtracking: "helo" = hel + ##o? -> [UNK] */
    const char *s = "HELLO, Hellos hel helo xyz";
    assert_int_equal(eng_tokenizer_encode(t, s, strlen(s), NULL, 0, 0, &e, &err), 0);
    const int32_t want[] = {2, 7, 6, 8, 5, 7, 1, 1, 3};
    assert_int_equal(e.n, 9);
    for (int i = 0; i < 9; i++)
        assert_int_equal(e.ids[i], want[i]);
    eng_encoding_free(&e);
    eng_tokenizer_free(t);
    /* the "unset" sentinel of transformers means 512 */
    cfg = "{\"model_max_length\": 1000000000000000019884624838656}";
    tmp_write(&d, "tokenizer_config.json", cfg, strlen(cfg));
    t = load_ok(d.path);
    assert_int_equal(eng_tokenizer_model_max_length(t), 512);
    eng_tokenizer_free(t);
    tmp_remove(&d);
}

/* Concurrent encodes on one tokenizer give the same results as serial ones. */
typedef struct thread_arg {
    const eng_tokenizer *tok;
    const corpus *c;
    uint64_t hash;
    int errors;
} thread_arg;

static void *encode_all(void *p)
{
    thread_arg *a = p;
    eng_encoding e;
    eng_encoding_init(&e);
    eng_error err;
    a->hash = 0;
    for (int rep = 0; rep < 3; rep++)
        for (size_t i = 0; i < a->c->n; i++) {
            if (eng_tokenizer_encode(a->tok, a->c->v[i].s, a->c->v[i].len, NULL, 0, 0, &e, &err))
                a->errors++;
            a->hash ^= enc_hash(&e, 1) + i;
        }
    eng_encoding_free(&e);
    return NULL;
}

static void test_threads(void **state)
{
    const eng_tokenizer *t = *state;
    corpus c = {0};
    read_lines(&c, "mt_testsets/flores200_devtest/deu_Latn.devtest", 0, 0);
    c.n = c.n > 300 ? 300 : c.n;
    thread_arg serial = {t, &c, 0, 0}, par[3];
    encode_all(&serial);
    pthread_t th[3];
    for (int i = 0; i < 3; i++) {
        par[i] = (thread_arg){t, &c, 0, 0};
        assert_int_equal(pthread_create(&th[i], NULL, encode_all, &par[i]), 0);
    }
    for (int i = 0; i < 3; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(par[i].errors, 0);
        assert_true(par[i].hash == serial.hash);
    }
    corpus_free(&c);
}

static unsigned long long wp_steps(const eng_tokenizer *t, const char *unit, size_t n)
{
    size_t ul = strlen(unit);
    n -= n % ul; /* whole units: multibyte ones stay valid UTF-8 */
    char *text = malloc(n + 1);
    assert_non_null(text);
    for (size_t i = 0; i < n; i++)
        text[i] = unit[i % ul];
    eng_encoding e;
    eng_encoding_init(&e);
    eng_error err = {0};
    unsigned long long s0 = eng_tok_steps;
    if (eng_tokenizer_encode_raw(t, text, n, &e, &err))
        fail_msg("encode %zu bytes of '%s': %s", n, unit, err.msg);
    unsigned long long steps = eng_tok_steps - s0;
    eng_encoding_free(&e);
    free(text);
    return steps;
}

/* Cost linear in the text (issue 12 item 5), counted by eng_tok_steps: words up
 * to max_input_chars_per_word long, added-token prefixes at every byte. */
static void test_linear_cost(void **state)
{
    const eng_tokenizer *t = *state;
    static const char *const units[] = {"a", "unaffable ", "[", "[CLS]", "[[SEP", "##",
                                        "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcd"
                                        "efghijklmnopqrstuvwxyzabcdefghijklmnopqrstuv ",
                                        "\xe6\x9d\xb1"};
    for (size_t u = 0; u < sizeof units / sizeof *units; u++) {
        unsigned long long a = wp_steps(t, units[u], 128 << 10);
        unsigned long long b = wp_steps(t, units[u], 256 << 10);
        unsigned long long c = wp_steps(t, units[u], 1 << 20);
        if (b > 5 * a / 2 + 4096 || c > 512ULL << 20)
            fail_msg("'%s' x n: %llu steps at 128 KiB, %llu at 256 KiB, %llu at 1 MiB: not linear",
                     units[u], a, b, c);
    }
}

TEST_GROUP(tokenizer)
{
    static const struct CMUnitTest t[] = {
        cmocka_unit_test(test_encoding_buffers),
        cmocka_unit_test_setup_teardown(test_vocab_queries, setup_tok, teardown_tok),
        cmocka_unit_test_setup_teardown(test_empty_and_space, setup_tok, teardown_tok),
        cmocka_unit_test_setup_teardown(test_invalid_utf8, setup_tok, teardown_tok),
        cmocka_unit_test_setup_teardown(test_unknown_and_long_words, setup_tok, teardown_tok),
        cmocka_unit_test_setup_teardown(test_offsets_and_raw, setup_tok, teardown_tok),
        cmocka_unit_test_setup_teardown(test_truncation_and_pairs, setup_tok, teardown_tok),
        cmocka_unit_test_setup_teardown(test_linear_cost, setup_tok, teardown_tok),
        cmocka_unit_test(test_load_errors),
        cmocka_unit_test(test_small_vocab_txt),
        cmocka_unit_test_setup_teardown(test_threads, setup_tok, teardown_tok),
        cmocka_unit_test(test_parity_awkward),
        cmocka_unit_test(test_parity_pairs),
        cmocka_unit_test(test_parity_corpora),
    };
    TEST_GROUP_RETURN(t);
}
