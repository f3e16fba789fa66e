/* test_marian_tok.c - the Marian (SentencePiece) tokenizer: parity with Hugging
 * Face's MarianTokenizer on the shared OPUS-MT tokenizer (goldens from
 * tests/reference/make_spm_goldens.py, which documents the fixture formats),
 * and the loader's refusals. */
#include "test_util.h"

#include <cjson/cJSON.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tokenizers/marian_tok.h"
#include "nlpd_engine.h"

#define FIX "%s/tests/fixtures/marian_tok/%s"

static const char *opus_dir(void)
{
    return tu_path("%s/tokenizers/opus-mt-tc-big-en-pt", tu_shared());
}

static eng_marian_tok *load_ok(void)
{
    eng_marian_tok *t = NULL;
    eng_error err = {0};
    int rc = eng_marian_tok_load(opus_dir(), &t, &err);
    if (rc)
        fail_msg("load %s: %s", opus_dir(), err.msg);
    return t;
}

static uint64_t fnv_bytes(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x100000001b3ULL;
    return h;
}

static uint64_t fnv_ids(const int32_t *ids, int n)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (int i = 0; i < n; i++) {
        uint32_t x = (uint32_t)ids[i];
        unsigned char le[4] = {x & 0xff, (x >> 8) & 0xff, (x >> 16) & 0xff, x >> 24};
        h = fnv_bytes(h, le, 4);
    }
    return h;
}

/* ------------------------------------------------------------ awkward.json */

static void expect_ids(const cJSON *arr, const eng_encoding *e, const char *what, int k)
{
    int n = cJSON_GetArraySize(arr), bad = n != e->n;
    for (int i = 0; !bad && i < n; i++)
        bad = cJSON_GetArrayItem(arr, i)->valueint != e->ids[i];
    if (bad) {
        printf("  case %d %s: got %d ids:", k, what, e->n);
        for (int i = 0; i < e->n; i++)
            printf(" %d", e->ids[i]);
        printf("\n  expected %d:", n);
        for (int i = 0; i < n; i++)
            printf(" %d", cJSON_GetArrayItem(arr, i)->valueint);
        printf("\n");
    }
    assert_false(bad);
}

typedef struct piece_list {
    char buf[8192];
    size_t n;
    int count;
    size_t off[512], len[512];
} piece_list;

static int collect(const char *p, size_t n, void *user)
{
    piece_list *l = user;
    if (l->n + n > sizeof l->buf || l->count == 512)
        return -99;
    memcpy(l->buf + l->n, p, n);
    l->off[l->count] = l->n;
    l->len[l->count++] = n;
    l->n += n;
    return 0;
}

static void test_awkward(void **state)
{
    (void)state;
    eng_marian_tok *t = load_ok();
    char *json = tu_read_file(tu_path(FIX, tu_root(), "awkward.json"), NULL);
    assert_non_null(json);
    cJSON *root = cJSON_Parse(json);
    free(json);
    assert_non_null(root);
    assert_int_equal(cJSON_GetObjectItem(root, "eos_id")->valueint, eng_marian_tok_eos_id(t));
    assert_int_equal(cJSON_GetObjectItem(root, "pad_id")->valueint, eng_marian_tok_pad_id(t));
    assert_int_equal(cJSON_GetObjectItem(root, "unk_id")->valueint, eng_marian_tok_unk_id(t));
    assert_int_equal(cJSON_GetObjectItem(root, "vocab_size")->valueint,
                     eng_marian_tok_vocab_size(t));
    eng_encoding e;
    eng_encoding_init(&e);
    eng_error err = {0};
    int k = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(root, "cases")) {
        const cJSON *text = cJSON_GetObjectItem(c, "text");
        /* cJSON strings end at NUL: the one text with a NUL is measured by hand */
        size_t len = strlen(text->valuestring);
        const char *nul_case = strstr(text->valuestring, "NUL");
        if (nul_case && !strcmp(nul_case, "NUL"))
            len += strlen(text->valuestring + len + 1) + 1;
        if (eng_marian_tok_encode(t, 0, text->valuestring, len, 0, &e, &err))
            fail_msg("case %d: %s", k, err.msg);
        expect_ids(cJSON_GetObjectItem(c, "source_ids"), &e, "source", k);
        assert_int_equal(e.truncated, 0);
        /* pieces before the lookup (HF's convert_ids_to_tokens differs for unknowns) */
        piece_list pl = {.n = 0};
        assert_int_equal(eng_marian_tok_pieces(t, 0, text->valuestring, len, collect, &pl, &err), 0);
        assert_int_equal(pl.count + 1, e.n);
        for (int i = 0; i < pl.count; i++) {
            const char *want = cJSON_GetArrayItem(cJSON_GetObjectItem(c, "source_pieces"), i)->valuestring;
            if (e.ids[i] != eng_marian_tok_unk_id(t) &&
                (strlen(want) != pl.len[i] || memcmp(pl.buf + pl.off[i], want, pl.len[i])))
                fail_msg("case %d piece %d: '%.*s' vs '%s'", k, i, (int)pl.len[i],
                         pl.buf + pl.off[i], want);
        }
        assert_int_equal(eng_marian_tok_encode(t, 0, text->valuestring, len, 6, &e, &err), 0);
        expect_ids(cJSON_GetObjectItem(c, "source_ids_max6"), &e, "source max 6", k);
        const cJSON *full = cJSON_GetObjectItem(c, "source_ids");
        assert_int_equal(e.truncated, cJSON_GetArraySize(full) > 6 ? cJSON_GetArraySize(full) - 6 : 0);
        assert_int_equal(eng_marian_tok_encode(t, 1, text->valuestring, len, 0, &e, &err), 0);
        expect_ids(cJSON_GetObjectItem(c, "target_ids"), &e, "target", k);
        char *dec = NULL;
        assert_int_equal(eng_marian_tok_decode(t, e.ids, e.n, &dec, NULL, &err), 0);
        const char *want = cJSON_GetObjectItem(c, "target_decoded")->valuestring;
        if (strcmp(dec, want))
            fail_msg("case %d decode: '%s' vs '%s'", k, dec, want);
        free(dec);
        k++;
    }
    assert_true(k >= 30);
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(root, "decodes")) {
        const cJSON *ids = cJSON_GetObjectItem(c, "ids");
        int n = cJSON_GetArraySize(ids);
        int32_t v[64];
        assert_true(n <= 64);
        for (int i = 0; i < n; i++)
            v[i] = cJSON_GetArrayItem(ids, i)->valueint;
        char *dec = NULL;
        size_t dl = 0;
        assert_int_equal(eng_marian_tok_decode(t, v, n, &dec, &dl, &err), 0);
        const char *want = cJSON_GetObjectItem(c, "text")->valuestring;
        if (strcmp(dec, want))
            fail_msg("decode %d: '%s' vs '%s'", k, dec, want);
        assert_int_equal(dl, strlen(want));
        free(dec);
        k++;
    }
    eng_encoding_free(&e);
    cJSON_Delete(root);
    eng_marian_tok_free(t);
}

/* ------------------------------------------------------------ corpora */

/* Lines of a shared file: split on '\n', a final empty piece dropped. */
static char **read_lines(const char *rel, int *count, char **buf_out)
{
    size_t len;
    char *buf = tu_read_file(tu_path("%s/data/mt_testsets/%s", tu_shared(), rel), &len);
    if (!buf)
        fail_msg("cannot read %s/data/mt_testsets/%s", tu_shared(), rel);
    int n = 0, cap = 1024;
    char **v = malloc(sizeof *v * (size_t)cap);
    for (char *p = buf; p < buf + len;) {
        char *nl = memchr(p, '\n', (size_t)(buf + len - p));
        if (n == cap)
            v = realloc(v, sizeof *v * (size_t)(cap *= 2));
        v[n++] = p;
        if (!nl)
            break;
        *nl = 0;
        p = nl + 1;
    }
    *count = n;
    *buf_out = buf;
    return v;
}

/* Compares every line with its golden hash line; returns the mismatches. */
static int check_corpus(const eng_marian_tok *t, const char *name, const char *rel, int target)
{
    int n;
    char *buf, *gold;
    char **lines = read_lines(rel, &n, &buf);
    gold = tu_read_file(tu_path("%s/tests/fixtures/marian_tok/%s.%s.hashes", tu_root(), name,
                                target ? "tgt" : "src"), NULL);
    if (!gold)
        fail_msg("missing fixture %s (run tests/reference/make_spm_goldens.py)", name);
    eng_encoding e;
    eng_encoding_init(&e);
    eng_error err = {0};
    int i = 0, bad = 0;
    for (char *line = strtok(gold, "\n"); line; line = strtok(NULL, "\n")) {
        if (line[0] == '#')
            continue;
        unsigned long long h, th = 0;
        int k;
        int fields = sscanf(line, "%16llx %d %16llx", &h, &k, &th);
        assert_int_equal(fields, target ? 3 : 2);
        assert_true(i < n);
        int rc = eng_marian_tok_encode(t, target, lines[i], strlen(lines[i]), 0, &e, &err);
        int ok = !rc && e.n == k && fnv_ids(e.ids, e.n) == h;
        if (ok && target) {
            char *dec = NULL;
            size_t dl = 0;
            ok = !eng_marian_tok_decode(t, e.ids, e.n, &dec, &dl, &err) &&
                 fnv_bytes(0xcbf29ce484222325ULL, dec, dl) == th;
            if (!ok && bad < 5)
                printf("  %s line %d decoded: \"%s\"\n", name, i + 1, dec ? dec : "(error)");
            free(dec);
        }
        if (!ok && bad++ < 5)
            printf("  MISMATCH %s line %d (%d ids): \"%.200s\"\n", name, i + 1, e.n, lines[i]);
        i++;
    }
    assert_int_equal(i, n);
    printf("  %s: %d texts, %d mismatches\n", name, n, bad);
    eng_encoding_free(&e);
    free(gold);
    free(lines);
    free(buf);
    return bad;
}

static void test_corpora(void **state)
{
    (void)state;
    eng_marian_tok *t = load_ok();
    int bad = 0;
    bad += check_corpus(t, "flores_eng", "flores200_devtest/eng_Latn.devtest", 0);
    bad += check_corpus(t, "newstest_en", "newstest2014_en-fr/newstest2014.en", 0);
    bad += check_corpus(t, "tatoeba_eng", "tatoeba_eng-deu/tatoeba-test-v2021-08-07.eng", 0);
    bad += check_corpus(t, "flores_por", "flores200_devtest/por_Latn.devtest", 1);
    bad += check_corpus(t, "flores_spa", "flores200_devtest/spa_Latn.devtest", 1);
    bad += check_corpus(t, "tatoeba_deu", "tatoeba_eng-deu/tatoeba-test-v2021-08-07.deu", 1);
    assert_int_equal(bad, 0);
    eng_marian_tok_free(t);
}

/* ------------------------------------------------------------ API */

static void test_api(void **state)
{
    (void)state;
    eng_marian_tok *t = load_ok();
    eng_encoding e;
    eng_encoding_init(&e);
    eng_error err = {0};
    assert_int_equal(eng_marian_tok_encode(t, 0, "a\xff", 2, 0, &e, &err), ENG_EUTF8);
    assert_non_null(strstr(err.msg, "UTF-8"));
    assert_int_equal(eng_marian_tok_id(t, "</s>"), eng_marian_tok_eos_id(t));
    assert_int_equal(eng_marian_tok_id(t, "no such piece at all"), -1);
    assert_string_equal(eng_marian_tok_piece(t, eng_marian_tok_pad_id(t)), "<pad>");
    assert_null(eng_marian_tok_piece(t, -1));
    assert_null(eng_marian_tok_piece(t, eng_marian_tok_vocab_size(t)));
    assert_string_equal(eng_marian_tok_source_lang(t), "en");
    assert_string_equal(eng_marian_tok_target_lang(t), "pt");
    assert_int_equal(eng_marian_tok_model_max_length(t), 512);
    const char *const *codes;
    int nc = eng_marian_tok_lang_codes(t, &codes);
    int has_por = 0;
    for (int i = 0; i < nc; i++)
        has_por |= !strcmp(codes[i], ">>por<<");
    assert_true(has_por);
    /* truncation keeps </s> last */
    assert_int_equal(eng_marian_tok_encode(t, 0, "one two three four five six", 27, 3, &e, &err), 0);
    assert_int_equal(e.n, 3);
    assert_int_equal(e.ids[2], eng_marian_tok_eos_id(t));
    assert_true(e.truncated > 0);
    /* a decode of nothing is the empty string */
    char *dec = NULL;
    assert_int_equal(eng_marian_tok_decode(t, NULL, 0, &dec, NULL, &err), 0);
    assert_string_equal(dec, "");
    free(dec);
    eng_encoding_free(&e);
    eng_marian_tok_free(t);

    /* refusals: a folder without the files, a folder with separate vocabularies */
    eng_marian_tok *bad = NULL;
    int rc;
    assert_int_equal(eng_marian_tok_load("/nonexistent-dir", &bad, &err), ENG_EIO);
    assert_null(bad);
    char dir[] = "/tmp/nlpd_mtok_XXXXXX";
    assert_non_null(mkdtemp(dir));
    const char *files[] = {"source.spm", "target.spm", "vocab.json"};
    char *abs = realpath(opus_dir(), NULL); /* links resolve from their own folder */
    assert_non_null(abs);
    for (int i = 0; i < 3; i++)
        assert_int_equal(symlink(tu_path("%s/%s", abs, files[i]),
                                 tu_path("%s/%s", dir, files[i])), 0);
    free(abs);
    FILE *f = fopen(tu_path("%s/tokenizer_config.json", dir), "w");
    fputs("{\"separate_vocabs\": true}", f);
    fclose(f);
    rc = eng_marian_tok_load(dir, &bad, &err);
    if (rc != ENG_EUNSUPPORTED)
        fail_msg("rc %d: %s", rc, err.msg);
    assert_non_null(strstr(err.msg, "separate_vocabs"));
    f = fopen(tu_path("%s/tokenizer_config.json", dir), "w");
    fputs("{}", f); /* defaults: </s> <unk> <pad> */
    fclose(f);
    assert_int_equal(eng_marian_tok_load(dir, &bad, &err), 0);
    assert_int_equal(eng_marian_tok_eos_id(bad), 44670);
    eng_marian_tok_free(bad);
    /* replace the link (never write through it) by garbage */
    assert_int_equal(unlink(tu_path("%s/source.spm", dir)), 0);
    f = fopen(tu_path("%s/source.spm", dir), "w");
    fputs("not a model", f);
    fclose(f);
    assert_int_equal(eng_marian_tok_load(dir, &bad, &err), ENG_EFORMAT);
    assert_non_null(strstr(err.msg, "source.spm"));
    for (int i = 0; i < 3; i++)
        unlink(tu_path("%s/%s", dir, files[i]));
    unlink(tu_path("%s/tokenizer_config.json", dir));
    rmdir(dir);
}

TEST_GROUP(marian_tok)
{
    static const struct CMUnitTest t[] = {
        cmocka_unit_test(test_awkward),
        cmocka_unit_test(test_corpora),
        cmocka_unit_test(test_api),
    };
    TEST_GROUP_RETURN(t);
}
