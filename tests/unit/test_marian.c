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

/* ------------------------------------------------ fp16 / bf16 on CUDA */

size_t tu_cuda_emu_device_bytes(void) __attribute__((weak)); /* tests/cuda_emu/ */

/* Sentences whose ids equal the golden ids (transformers in fp32, which nlpd's fp32
 * matches exactly: the parity tests above) under key. */
static int agree_golden(const cJSON *cases, const char *key, const eng_translation *tr, int n)
{
    int same = 0;
    for (int i = 0; i < n; i++)
        same += ids_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(cases, i), key), tr[i].ids,
                          tr[i].n_ids);
    return same;
}

/* Sentences whose golden ids under key are the same in models a and b (the same
 * sentences and vocabulary, other weights): what ids from wrong weights agree on. */
static int agree_models(const cJSON *a, const cJSON *b, const char *key)
{
    int same = 0, n = cJSON_GetArraySize(a);
    for (int i = 0; i < n; i++) {
        const cJSON *x = cJSON_GetObjectItem(cJSON_GetArrayItem(a, i), key);
        const cJSON *y = cJSON_GetObjectItem(cJSON_GetArrayItem(b, i), key);
        int eq = cJSON_GetArraySize(x) == cJSON_GetArraySize(y);
        for (int k = 0; eq && k < cJSON_GetArraySize(x); k++)
            eq = cJSON_GetArrayItem(x, k)->valueint == cJSON_GetArrayItem(y, k)->valueint;
        same += eq;
    }
    return same;
}

/* Device memory of a translation model in fp32 and in prec on the emulated CUDA backend:
 * fp32 uploads the block; prec the block without the projections' fp32 weights (kept
 * bytes) plus a 16-bit copy of every packed layer (the lm head included: its fp32 weights
 * are the embedding, which lookups read), exactly. Returns the two figures in d[2] and
 * the projections' weights (elements) in *proj. */
static void marian_device_bytes(eng_model *m32, eng_model *m16, eng_ctx *gpu, size_t d[2],
                                size_t *proj)
{
    eng_error err = {0};
    eng_backend *be = eng_ctx_backend(gpu);
    assert_true(eng_model_device_bytes(m32) == 0 && eng_model_device_bytes(m16) == 0);
    size_t e0 = tu_cuda_emu_device_bytes();
    const eng_marian *v32 = eng_model_marian_on(m32, be, &err);
    size_t e1 = tu_cuda_emu_device_bytes();
    const eng_marian *v16 = eng_model_marian_on(m16, be, &err);
    assert_non_null(v32);
    assert_non_null(v16);
    d[0] = eng_model_device_bytes(m32);
    d[1] = eng_model_device_bytes(m16);
    /* what the emulation holds (the staging buffer given back) */
    assert_true(e1 - e0 == d[0]);
    assert_true(tu_cuda_emu_device_bytes() - e1 == d[1]);
    size_t block = 0;
    eng_marian_block(eng_model_marian(m32), &block);
    assert_true(d[0] == block);
    enum { MAXL = 128 };
    eng_linear *ls[MAXL];
    int n = eng_marian_linears((eng_marian *)v16, ls, MAXL);
    assert_true(n > 1 && n < MAXL);
    size_t half = 0;
    *proj = 0;
    for (int i = 0; i < n; i++) {
        size_t k = (size_t)ls[i]->out * ls[i]->in;
        half += 2 * k;
        assert_non_null(ls[i]->packed);
        if (i < n - 1) { /* a projection: no fp32 copy on the device */
            assert_null(ls[i]->w);
            *proj += k;
        } else { /* the lm head */
            assert_non_null(ls[i]->w);
            assert_int_equal(ls[i]->out, eng_marian_vocab(eng_model_marian(m16)));
        }
    }
    assert_true(d[1] == eng_marian_kept_bytes(eng_model_marian(m16)) + half);
    /* the part not uploaded holds the projections' fp32 weights */
    assert_true(eng_marian_kept_bytes(eng_model_marian(m16)) + 4 * *proj <= d[0]);
}

/* fp16 / bf16 on the emulated CUDA backend (models[].precision with a CUDA backend):
 * greedy and the folder's beam search (fp16; bf16 greedy) over all sentences in one batch
 * give the fp32 ids (the goldens) on most sentences - the gate - while ids from other
 * weights (another fixture's goldens for the same sentences) do not come near it;
 * teacher-forced logits are not fp32's but close; device memory as the layout says. */
static void test_cuda_16bit(void **state)
{
    (void)state;
    assert_non_null(tu_cuda_emu_device_bytes);
    static const char *const names[] = {"marian_a", "marian_b", "marian_c"};
    static const char *const precs[] = {"fp16", "bf16"};
    static const char *const keys[] = {"greedy", "beam"};
    cJSON *g[3];
    for (int mi = 0; mi < 3; mi++)
        g[mi] = golden(names[mi]);
    int total = 0, same[2][2] = {{0}}, other[2] = {0};
    double worst_logit[2] = {0};
    eng_ctx *gpu;
    eng_error err = {0};
    assert_int_equal(eng_ctx_new(&(eng_ctx_opts){.backend = "cuda-emu"}, &gpu, &err), 0);
    for (int mi = 0; mi < 3; mi++) {
        mfolder f;
        folder_make(&f, names[mi]);
        const cJSON *cases = cJSON_GetObjectItem(g[mi], "cases");
        int n = cJSON_GetArraySize(cases);
        total += n;
        for (int k = 0; k < 2; k++)
            other[k] += agree_models(cases, cJSON_GetObjectItem(g[(mi + 1) % 3], "cases"),
                                     keys[k]);
        eng_model *m32;
        if (eng_model_load_opts(f.dir, &(eng_model_opts){.precision = "fp32",
                                                         .backend = "cuda-emu"}, &m32, &err))
            fail_msg("load %s: %s", names[mi], err.msg);
        eng_encoding *enc = calloc((size_t)n, sizeof *enc);
        const eng_encoding **ptr = calloc((size_t)n, sizeof *ptr);
        eng_translation *tr = calloc((size_t)n, sizeof *tr);
        for (int i = 0; i < n; i++) {
            const char *text = cJSON_GetObjectItem(cJSON_GetArrayItem(cases, i), "text")->valuestring;
            eng_encoding_init(&enc[i]);
            ptr[i] = &enc[i];
            assert_int_equal(eng_translate_encode(m32, text, strlen(text), 0, &enc[i], &err), 0);
        }
        for (int p = 0; p < 2; p++) {
            eng_model *m16;
            if (eng_model_load_opts(f.dir, &(eng_model_opts){.precision = precs[p],
                                                             .backend = "cuda-emu"}, &m16, &err))
                fail_msg("load %s in %s on cuda-emu: %s", names[mi], precs[p], err.msg);
            const eng_model_info *info = eng_model_get_info(m16);
            assert_string_equal(info->precision, precs[p]);
            assert_string_equal(info->kernel, p ? "cublas_bf16" : "cublas_fp16");
            size_t d[2] = {0}, proj = 0;
            if (p == 0) /* before any run: the views are made here */
                marian_device_bytes(m32, m16, gpu, d, &proj);
            for (int k = 0; k < 2 - p; k++) { /* bf16: greedy (the search is the same) */
                eng_translate_opts o;
                eng_translate_opts_default(&o);
                o.beam_size = k ? 0 : 1; /* 0: the folder's num_beams */
                if (eng_translate_ids(gpu, m16, ptr, n, &o, tr, &err))
                    fail_msg("%s %s %s: %s", names[mi], precs[p], keys[k], err.msg);
                int s = agree_golden(cases, keys[k], tr, n);
                same[p][k] += s;
                printf("  %s %s %s: %d of %d sentences give the fp32 ids\n", names[mi],
                       precs[p], keys[k], s, n);
                for (int i = 0; i < n; i++)
                    eng_translation_free(&tr[i]);
            }
            /* teacher-forced logits against transformers' fp32 ones */
            const cJSON *num = cJSON_GetArrayItem(cJSON_GetObjectItem(g[mi], "numeric"), 0);
            int ci = cJSON_GetObjectItem(num, "case")->valueint;
            const cJSON *pre = cJSON_GetArrayItem(cJSON_GetObjectItem(num, "prefixes"), 1);
            const cJSON *row = cJSON_GetArrayItem(cJSON_GetObjectItem(num, "logits"), 1);
            int32_t prefix[64];
            int np = cJSON_GetArraySize(pre);
            assert_true(np <= 64);
            for (int i = 0; i < np; i++)
                prefix[i] = cJSON_GetArrayItem(pre, i)->valueint;
            float *lo = malloc(sizeof(float) * (size_t)eng_marian_vocab(eng_model_marian(m16)));
            eng_backend *be = eng_ctx_backend(gpu);
            assert_int_equal(eng_marian_logits(eng_model_marian_on(m16, be, NULL), be, &enc[ci],
                                               prefix, np, lo, &err), 0);
            const cJSON *ids = cJSON_GetObjectItem(row, "ids"), *vals = cJSON_GetObjectItem(row, "values");
            double worst = 0;
            for (int i = 0; i < cJSON_GetArraySize(ids); i++)
                worst = fmax(worst, fabs(lo[cJSON_GetArrayItem(ids, i)->valueint] -
                                         cJSON_GetArrayItem(vals, i)->valuedouble));
            free(lo);
            worst_logit[p] = fmax(worst_logit[p], worst);
            printf("  %s %s: max |logits - fp32| %.3g\n", names[mi], precs[p], worst);
            assert_true(worst > TOL); /* 16-bit weights were used */
            assert_true(worst < (p ? 0.4 : 0.05)); /* 8 or 11 significant bits */
            if (p == 0) {
                printf("  %s device memory: fp32 %zu bytes, fp16 %zu (projections %zu -> %zu; "
                       "the lm head's 16-bit copy %zu)\n", names[mi], d[0], d[1], 4 * proj,
                       2 * proj, d[1] - eng_marian_kept_bytes(eng_model_marian(m16)) - 2 * proj);
                /* freeing the version gives back what it reported */
                size_t e1 = tu_cuda_emu_device_bytes();
                eng_model_unref(m16);
                assert_true(e1 - tu_cuda_emu_device_bytes() == d[1]);
            } else {
                eng_model_unref(m16);
            }
        }
        for (int i = 0; i < n; i++)
            eng_encoding_free(&enc[i]);
        free(enc), free(ptr), free(tr);
        eng_model_unref(m32);
        folder_remove(&f);
    }
    printf("  fp16 on cuda-emu: fp32 ids on %d/%d sentences greedy, %d/%d beam (gate 90 %%); "
           "bf16: %d/%d greedy (gate 85 %%); max |logits - fp32| %.3g / %.3g\n", same[0][0],
           total, same[0][1], total, same[1][0], total, worst_logit[0], worst_logit[1]);
    printf("  ids from other weights agree on %d/%d (greedy), %d/%d (beam)\n", other[0], total,
           other[1], total);
    assert_true(same[0][0] * 10 >= total * 9 && same[0][1] * 10 >= total * 9);
    assert_true(same[1][0] * 100 >= total * 85);
    /* the gate tells converted weights from wrong ones */
    assert_true(other[0] * 100 < total * 50 && other[1] * 100 < total * 50);
    eng_ctx_free(gpu);
    for (int mi = 0; mi < 3; mi++)
        cJSON_Delete(g[mi]);
}

TEST_GROUP(marian)
{
    static const struct CMUnitTest t[] = {
        cmocka_unit_test(test_parity_a),
        cmocka_unit_test(test_parity_b),
        cmocka_unit_test(test_parity_c),
        cmocka_unit_test(test_cuda_16bit),
    };
    TEST_GROUP_RETURN(t);
}
