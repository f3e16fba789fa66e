/* test_marian.c - MarianMTModel parity with transformers (goldens from
 * tests/reference/make_marian_models.py): source ids, encoder outputs and
 * logits within 1e-4, and IDENTICAL generate() ids for greedy and beam search
 * (2, 4 and 5 beams, with max_new_tokens), all sentences in one batch and a
 * third of them alone. */
#include "test_util.h"

#include <cjson/cJSON.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "models/marian.h"
#include "nlpd_engine.h"

#define TOL 1e-4f

/* A runnable model folder: the fixture's files plus the shared OPUS-MT tokenizer
 * files (not in the repository), linked into a temporary folder. */
typedef struct mfolder {
    char dir[64];
    char files[12][64];
    int n;
} mfolder;

static void link_into(mfolder *f, const char *src_dir, const char *name)
{
    char *abs = realpath(tu_path("%s/%s", src_dir, name), NULL);
    if (!abs)
        fail_msg("missing %s/%s", src_dir, name);
    assert_int_equal(symlink(abs, tu_path("%s/%s", f->dir, name)), 0);
    free(abs);
    snprintf(f->files[f->n++], 64, "%s", name);
}

static void folder_make(mfolder *f, const char *model)
{
    memset(f, 0, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/nlpd_marian_XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    const char *fix = tu_path("%s/tests/fixtures/marian/%s", tu_root(), model);
    char fixdir[4096];
    snprintf(fixdir, sizeof fixdir, "%s", fix);
    static const char *const model_files[] = {"config.json", "generation_config.json",
                                              "model.safetensors"};
    static const char *const tok_files[] = {"source.spm", "target.spm", "vocab.json",
                                            "tokenizer_config.json", "special_tokens_map.json"};
    for (int i = 0; i < 3; i++)
        link_into(f, fixdir, model_files[i]);
    char tokdir[4096];
    snprintf(tokdir, sizeof tokdir, "%s/tokenizers/opus-mt-tc-big-en-pt", tu_shared());
    for (int i = 0; i < 5; i++)
        link_into(f, tokdir, tok_files[i]);
}

static void folder_remove(mfolder *f)
{
    for (int i = 0; i < f->n; i++)
        unlink(tu_path("%s/%s", f->dir, f->files[i]));
    rmdir(f->dir);
}

static cJSON *golden(const char *model)
{
    char *txt = tu_read_file(tu_path("%s/tests/fixtures/marian/%s/golden.json", tu_root(), model),
                             NULL);
    if (!txt)
        fail_msg("missing golden for %s (run tests/reference/make_marian_models.py)", model);
    cJSON *g = cJSON_Parse(txt);
    free(txt);
    assert_non_null(g);
    return g;
}

static int ids_equal(const cJSON *want, const int32_t *ids, int n)
{
    if (cJSON_GetArraySize(want) != n)
        return 0;
    for (int i = 0; i < n; i++)
        if (cJSON_GetArrayItem(want, i)->valueint != ids[i])
            return 0;
    return 1;
}

static void print_ids(const char *what, const cJSON *want, const int32_t *ids, int n)
{
    printf("  %s: got", what);
    for (int i = 0; i < n; i++)
        printf(" %d", ids[i]);
    printf("\n  %*s  want", (int)strlen(what), "");
    const cJSON *x;
    cJSON_ArrayForEach(x, want) printf(" %d", x->valueint);
    printf("\n");
}

typedef struct mode {
    const char *key;
    int beams;    /* 0: generation_config */
    int max_new;  /* 0: generation_config */
} mode;

static const mode modes[] = {
    {"greedy", 1, 0},
    {"beam", 0, 0},
    {"beam2", 2, 0},
    {"beam5_max8", 5, 8},
};

static void check_model_on(const char *name, const char *backend)
{
    mfolder f;
    folder_make(&f, name);
    cJSON *g = golden(name);
    eng_model *m = NULL;
    eng_ctx *ctx = NULL;
    eng_error err = {0};
    if (eng_model_load(f.dir, &m, &err))
        fail_msg("load %s: %s", name, err.msg);
    eng_ctx_opts co = {.backend = backend, .threads = 2};
    if (eng_ctx_new(&co, &ctx, &err))
        fail_msg("%s: backend %s: %s", name, backend, err.msg);
    const eng_model_info *info = eng_model_get_info(m);
    assert_int_equal(info->task, ENG_TASK_TRANSLATE);
    assert_string_equal(eng_task_name(info->task), "translate");
    assert_string_equal(info->architecture, "MarianMTModel");

    const cJSON *cases = cJSON_GetObjectItem(g, "cases");
    int n = cJSON_GetArraySize(cases), bad = 0;
    eng_encoding *enc = calloc((size_t)n, sizeof *enc);
    const eng_encoding **ptr = calloc((size_t)n, sizeof *ptr);
    eng_translation *tr = calloc((size_t)n, sizeof *tr);
    for (int i = 0; i < n; i++) {
        const cJSON *c = cJSON_GetArrayItem(cases, i);
        const char *text = cJSON_GetObjectItem(c, "text")->valuestring;
        eng_encoding_init(&enc[i]);
        ptr[i] = &enc[i];
        assert_int_equal(eng_translate_encode(m, text, strlen(text), 0, &enc[i], &err), 0);
        if (!ids_equal(cJSON_GetObjectItem(c, "src_ids"), enc[i].ids, enc[i].n)) {
            print_ids("src", cJSON_GetObjectItem(c, "src_ids"), enc[i].ids, enc[i].n);
            bad++;
        }
    }
    assert_int_equal(bad, 0);
    /* numeric: encoder outputs and teacher-forced logits */
    float max_enc = 0, max_logit = 0;
    const cJSON *num;
    cJSON_ArrayForEach(num, cJSON_GetObjectItem(g, "numeric")) {
        int ci = cJSON_GetObjectItem(num, "case")->valueint;
        const cJSON *ew = cJSON_GetObjectItem(num, "encoder");
        int D = info->hidden, T = enc[ci].n;
        assert_int_equal(cJSON_GetArraySize(ew), T * D);
        float *eo = malloc(sizeof(float) * (size_t)T * D);
        assert_int_equal(eng_marian_encode(eng_model_marian_on(m, eng_ctx_backend(ctx), NULL), eng_ctx_backend(ctx), &ptr[ci], 1,
                                           eo, &err), 0);
        for (int i = 0; i < T * D; i++) {
            float d = fabsf(eo[i] - (float)cJSON_GetArrayItem(ew, i)->valuedouble);
            max_enc = d > max_enc || d != d ? d : max_enc;
        }
        free(eo);
        const cJSON *pre = cJSON_GetObjectItem(num, "prefixes"), *lg = cJSON_GetObjectItem(num, "logits");
        for (int k = 0; k < cJSON_GetArraySize(pre); k++) {
            const cJSON *p = cJSON_GetArrayItem(pre, k);
            int np = cJSON_GetArraySize(p);
            int32_t prefix[64];
            for (int i = 0; i < np; i++)
                prefix[i] = cJSON_GetArrayItem(p, i)->valueint;
            float *lo = malloc(sizeof(float) * (size_t)eng_marian_vocab(eng_model_marian(m)));
            assert_int_equal(eng_marian_logits(eng_model_marian_on(m, eng_ctx_backend(ctx), NULL), eng_ctx_backend(ctx), &enc[ci],
                                               prefix, np, lo, &err), 0);
            const cJSON *row = cJSON_GetArrayItem(lg, k);
            const cJSON *ids = cJSON_GetObjectItem(row, "ids"), *vals = cJSON_GetObjectItem(row, "values");
            for (int i = 0; i < cJSON_GetArraySize(ids); i++) {
                float d = fabsf(lo[cJSON_GetArrayItem(ids, i)->valueint] -
                                (float)cJSON_GetArrayItem(vals, i)->valuedouble);
                max_logit = d > max_logit || d != d ? d : max_logit;
            }
            free(lo);
        }
    }
    printf("  %s: max |encoder - HF| %.3g, max |logits - HF| %.3g\n", name, max_enc, max_logit);
    assert_true(max_enc <= TOL);
    assert_true(max_logit <= TOL);

    /* generate: each sentence alone, then all in one batch. The search itself does not
     * depend on the backend: on the (slow) CUDA emulation greedy and the default beam
     * cover the backend's ops, the other beam settings run on the CPU. */
    int emulated = strstr(backend, "emu") != NULL;
    size_t nmodes = emulated ? 2 : sizeof modes / sizeof *modes;
    for (size_t md = 0; md < nmodes; md++) {
        eng_translate_opts o;
        eng_translate_opts_default(&o);
        o.beam_size = modes[md].beams;
        o.max_new_tokens = modes[md].max_new;
        int mism = 0;
        /* alone: every third sentence (every ninth emulated; the batch run below
         * covers all of them) */
        for (int i = 0; i < n; i += emulated ? 9 : 3) {
            const cJSON *want = cJSON_GetObjectItem(cJSON_GetArrayItem(cases, i), modes[md].key);
            if (eng_translate_ids(ctx, m, &ptr[i], 1, &o, &tr[i], &err))
                fail_msg("%s %s case %d: %s", name, modes[md].key, i, err.msg);
            if (!ids_equal(want, tr[i].ids, tr[i].n_ids)) {
                printf("  %s %s case %d alone differs\n", name, modes[md].key, i);
                print_ids(modes[md].key, want, tr[i].ids, tr[i].n_ids);
                mism++;
            }
            if (!strcmp(modes[md].key, "beam")) {
                double ws = cJSON_GetObjectItem(cJSON_GetArrayItem(cases, i), "beam_score")->valuedouble;
                if (fabs(tr[i].score - ws) > 1e-4 * (1 + fabs(ws))) {
                    printf("  %s beam score case %d: %.7g vs %.7g\n", name, i, tr[i].score, ws);
                    mism++;
                }
            }
            eng_translation_free(&tr[i]);
        }
        if (eng_translate_ids(ctx, m, ptr, n, &o, tr, &err))
            fail_msg("%s %s batch: %s", name, modes[md].key, err.msg);
        for (int i = 0; i < n; i++) {
            const cJSON *want = cJSON_GetObjectItem(cJSON_GetArrayItem(cases, i), modes[md].key);
            if (!ids_equal(want, tr[i].ids, tr[i].n_ids)) {
                printf("  %s %s case %d in the batch differs\n", name, modes[md].key, i);
                mism++;
            }
            assert_int_equal(tr[i].src_tokens, enc[i].n);
            eng_translation_free(&tr[i]);
        }
        printf("  %s %s: %d sentences, %d mismatches\n", name, modes[md].key, n, mism);
        bad += mism;
    }
    assert_int_equal(bad, 0);
    for (int i = 0; i < n; i++)
        eng_encoding_free(&enc[i]);
    free(enc);
    free(ptr);
    free(tr);
    cJSON_Delete(g);
    eng_ctx_free(ctx);
    eng_model_unref(m);
    folder_remove(&f);
}

/* Every model on every backend there is (the CPU; the emulated CUDA backend in the
 * unit-test binary; a real GPU when present): the same ids in fp32. */
static void check_model(const char *name)
{
    const char *be[8];
    int nb = tu_model_backends(be, 8);
    for (int i = 0; i < nb; i++) {
        printf("  %s on %s\n", name, be[i]);
        check_model_on(name, be[i]);
    }
}

static void test_parity_a(void **state)
{
    (void)state;
    check_model("marian_a");
}

static void test_parity_b(void **state)
{
    (void)state;
    check_model("marian_b");
}

static void test_parity_c(void **state)
{
    (void)state;
    check_model("marian_c");
}

TEST_GROUP(marian)
{
    static const struct CMUnitTest t[] = {
        cmocka_unit_test(test_parity_a),
        cmocka_unit_test(test_parity_b),
        cmocka_unit_test(test_parity_c),
    };
    TEST_GROUP_RETURN(t);
}
