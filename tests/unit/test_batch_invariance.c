/* test_batch_invariance.c - batching is bitwise invisible: every input gives the
 * SAME bits alone and inside a batch (the CPU backend's GEMM, attention, norms and
 * pooling never mix rows of different sequences, nor depend on the row count).
 * Tiny reference models (tests/fixtures/models) and, when present, the real
 * all-MiniLM-L6-v2 (models/) on 64 texts of mixed lengths. */
#include "test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "nlpd_engine.h"

typedef struct outs {
    float *a, *b; /* classify: probs, logits | embed: hidden, pooled | qa: start, end */
    size_t na, nb; /* floats per output, all inputs */
} outs;

/* Runs the model's task on enc[0..n); outputs packed in input order. */
static void run(eng_ctx *ctx, eng_model *m, const eng_encoding **enc, int n, outs *o)
{
    const eng_model_info *info = eng_model_get_info(m);
    eng_error err = {0};
    size_t ntok = 0;
    for (int i = 0; i < n; i++)
        ntok += (size_t)enc[i]->n;
    int rc;
    switch (info->task) {
    case ENG_TASK_CLASSIFY:
        o->na = o->nb = (size_t)n * info->num_labels;
        o->a = malloc(sizeof(float) * o->na);
        o->b = malloc(sizeof(float) * o->nb);
        rc = eng_run_classify(ctx, m, enc, n, o->a, o->b, &err);
        break;
    case ENG_TASK_EMBED:
        o->na = ntok * info->hidden;
        o->nb = (size_t)n * info->hidden;
        o->a = malloc(sizeof(float) * o->na);
        o->b = malloc(sizeof(float) * o->nb);
        rc = eng_run_hidden(ctx, m, enc, n, o->a, &err);
        if (!rc)
            rc = eng_run_embed(ctx, m, enc, n, o->b, &err);
        break;
    default:
        o->na = o->nb = ntok;
        o->a = malloc(sizeof(float) * ntok);
        o->b = malloc(sizeof(float) * ntok);
        rc = eng_run_qa_logits(ctx, m, enc, n, o->a, o->b, &err);
    }
    assert_non_null(o->a);
    assert_non_null(o->b);
    if (rc)
        fail_msg("run failed: %s", err.msg);
}

/* Each of enc[0..n) alone must give, bitwise, its slice of the batched outputs. */
static void expect_invariant(eng_ctx *ctx, eng_model *m, const eng_encoding **enc, int n,
                             const char *what)
{
    outs all;
    run(ctx, m, enc, n, &all);
    size_t oa = 0, ob = 0;
    for (int i = 0; i < n; i++) {
        outs one;
        run(ctx, m, &enc[i], 1, &one);
        assert_true(oa + one.na <= all.na && ob + one.nb <= all.nb);
        if (memcmp(one.a, all.a + oa, one.na * sizeof(float)) ||
            memcmp(one.b, all.b + ob, one.nb * sizeof(float)))
            fail_msg("%s: input %d (%d tokens) alone differs from it in a batch of %d", what, i,
                     enc[i]->n, n);
        oa += one.na;
        ob += one.nb;
        free(one.a);
        free(one.b);
    }
    assert_true(oa == all.na && ob == all.nb);
    free(all.a);
    free(all.b);
}

static void check_tiny(const char *name)
{
    char *text = tu_read_file(tu_path("%s/tests/fixtures/models/%s/golden.json", tu_root(), name),
                              NULL);
    assert_non_null(text);
    cJSON *g = cJSON_Parse(text);
    free(text);
    assert_non_null(g);
    eng_model *m;
    eng_error err = {0};
    if (eng_model_load(tu_path("%s/tests/fixtures/models/%s", tu_root(), name), &m, &err))
        fail_msg("%s: load: %s", name, err.msg);
    const eng_model_info *info = eng_model_get_info(m);
    const cJSON *cases = cJSON_GetObjectItem(g, "cases");
    int n = cJSON_GetArraySize(cases);
    assert_true(n > 1);
    eng_encoding *enc = calloc((size_t)n, sizeof *enc);
    const eng_encoding **ptrs = calloc((size_t)n, sizeof *ptrs);
    for (int i = 0; i < n; i++) {
        const cJSON *c = cJSON_GetArrayItem(cases, i);
        const char *t = cJSON_GetObjectItem(c, "text")->valuestring;
        const cJSON *pair = cJSON_GetObjectItem(c, "pair");
        const char *p = cJSON_IsString(pair) ? pair->valuestring : NULL;
        int max_len = cJSON_GetObjectItem(c, "max_length")->valueint;
        eng_encoding_init(&enc[i]);
        ptrs[i] = &enc[i];
        if (eng_tokenizer_encode(eng_model_tokenizer(m), t, strlen(t), p, p ? strlen(p) : 0,
                                 max_len > 0 ? max_len : info->max_seq_len, &enc[i], &err))
            fail_msg("%s case %d: tokenize: %s", name, i, err.msg);
    }
    for (int threads = 1; threads <= 2; threads++) {
        eng_ctx *ctx;
        assert_int_equal(eng_ctx_new(&(eng_ctx_opts){.threads = threads}, &ctx, &err), ENG_OK);
        char what[96];
        snprintf(what, sizeof what, "%s, %d threads", name, threads);
        expect_invariant(ctx, m, ptrs, n, what);
        eng_ctx_free(ctx);
    }
    for (int i = 0; i < n; i++)
        eng_encoding_free(&enc[i]);
    free(enc);
    free(ptrs);
    eng_model_unref(m);
    cJSON_Delete(g);
}

static void test_tiny_models(void **state)
{
    (void)state;
    static const char *const models[] = {
        "bert_base",    "bert_st",        "bert_cls",     "bert_cls_f16",
        "bert_cls_bf16", "bert_cls_multilabel", "bert_qa", "distilbert_base",
        "distilbert_cls", "distilbert_qa"};
    for (size_t i = 0; i < sizeof models / sizeof models[0]; i++)
        check_tiny(models[i]);
}

/* 64 texts of 1 to ~120 words from a fixed word list (deterministic). */
static void test_minilm_mixed_lengths(void **state)
{
    (void)state;
    const char *dir = tu_path("%s/models/all-MiniLM-L6-v2", tu_root());
    tu_require(tu_path("%s/model.safetensors", dir), "make models");
    static const char *const words[] = {
        "the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "service", "was",
        "terrible", "wonderful", "movie", "an", "unexpected", "delight", "batching", "never",
        "changes", "results", "café", "naïve", "東京", "!", "?", "42", "tokenization", "and"};
    enum { N = 64 };
    eng_model *m;
    eng_ctx *ctx;
    eng_error err = {0};
    if (eng_model_load(dir, &m, &err))
        fail_msg("load: %s", err.msg);
    assert_int_equal(eng_ctx_new(&(eng_ctx_opts){.threads = 2}, &ctx, &err), ENG_OK);
    eng_encoding enc[N];
    const eng_encoding *ptrs[N];
    char buf[2048];
    uint32_t r = 12345;
    for (int i = 0; i < N; i++) {
        int nw = 1 + (i * 37) % 120, len = 0;
        for (int w = 0; w < nw; w++) {
            r = r * 1103515245u + 12345u;
            len += snprintf(buf + len, sizeof buf - (size_t)len, "%s%s", w ? " " : "",
                            words[(r >> 16) % (sizeof words / sizeof words[0])]);
        }
        eng_encoding_init(&enc[i]);
        ptrs[i] = &enc[i];
        if (eng_tokenizer_encode(eng_model_tokenizer(m), buf, (size_t)len, NULL, 0, 256, &enc[i],
                                 &err))
            fail_msg("tokenize %d: %s", i, err.msg);
    }
    const eng_model_info *info = eng_model_get_info(m);
    float *all = malloc(sizeof(float) * N * info->hidden), *one = malloc(sizeof(float) * info->hidden);
    assert_non_null(all);
    assert_non_null(one);
    assert_int_equal(eng_run_embed(ctx, m, ptrs, N, all, &err), 0);
    for (int i = 0; i < N; i++) {
        assert_int_equal(eng_run_embed(ctx, m, &ptrs[i], 1, one, &err), 0);
        if (memcmp(one, all + (size_t)i * info->hidden, sizeof(float) * info->hidden))
            fail_msg("MiniLM: text %d (%d tokens) alone differs from it in a batch of %d", i,
                     enc[i].n, N);
    }
    for (int i = 0; i < N; i++)
        eng_encoding_free(&enc[i]);
    free(all);
    free(one);
    eng_ctx_free(ctx);
    eng_model_unref(m);
}

/* eng_ctx_trim gives back what a big batch reserved, and changes no output bit. */
static void test_ctx_trim(void **state)
{
    (void)state;
    enum { BIG = 96 };
    eng_model *m;
    eng_ctx *ctx;
    eng_error err = {0};
    if (eng_model_load(tu_path("%s/tests/fixtures/models/bert_base", tu_root()), &m, &err))
        fail_msg("load: %s", err.msg);
    assert_int_equal(eng_ctx_new(&(eng_ctx_opts){.threads = 2}, &ctx, &err), ENG_OK);
    static const char text[] = "a batch far larger than usual leaves its memory behind";
    eng_encoding enc;
    eng_encoding_init(&enc);
    if (eng_tokenizer_encode(eng_model_tokenizer(m), text, sizeof text - 1, NULL, 0, 64, &enc,
                             &err))
        fail_msg("tokenize: %s", err.msg);
    const eng_encoding *ptrs[BIG];
    for (int i = 0; i < BIG; i++)
        ptrs[i] = &enc;
    outs before, big, after, after0;
    eng_ctx_stats small_st, big_st, st;
    run(ctx, m, ptrs, 1, &before);
    eng_ctx_get_stats(ctx, &small_st);
    assert_true(small_st.reserved_bytes > 0 && small_st.peak_bytes > 0);
    run(ctx, m, ptrs, BIG, &big);
    eng_ctx_get_stats(ctx, &big_st);
    assert_true(big_st.reserved_bytes > 8 * small_st.reserved_bytes);
    assert_true(big_st.peak_bytes > 8 * small_st.peak_bytes);

    eng_ctx_trim(ctx, small_st.reserved_bytes);
    eng_ctx_get_stats(ctx, &st);
    assert_true(st.reserved_bytes <= small_st.reserved_bytes);
    assert_int_equal(st.peak_bytes, 0);
    run(ctx, m, ptrs, 1, &after);
    eng_ctx_get_stats(ctx, &st);
    assert_true(st.reserved_bytes < big_st.reserved_bytes);
    assert_int_equal(st.peak_bytes, small_st.peak_bytes); /* the peak counts from the trim */

    eng_ctx_trim(ctx, 0); /* everything goes; the next run reserves afresh */
    eng_ctx_get_stats(ctx, &st);
    assert_int_equal(st.reserved_bytes, 0);
    run(ctx, m, ptrs, 1, &after0);
    assert_true(before.na == after.na && before.nb == after.nb);
    assert_true(before.na == after0.na && before.nb == after0.nb);
    assert_memory_equal(before.a, after.a, before.na * sizeof(float));
    assert_memory_equal(before.b, after.b, before.nb * sizeof(float));
    assert_memory_equal(before.a, after0.a, before.na * sizeof(float));
    assert_memory_equal(before.b, after0.b, before.nb * sizeof(float));
    /* and the big batch's first row is the same input: the same bits */
    assert_memory_equal(before.b, big.b, before.nb * sizeof(float));
    outs *all[] = {&before, &big, &after, &after0};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        free(all[i]->a);
        free(all[i]->b);
    }
    eng_encoding_free(&enc);
    eng_ctx_free(ctx);
    eng_model_unref(m);
}

TEST_GROUP(batch_invariance)
{
    static const struct CMUnitTest t[] = {
        cmocka_unit_test(test_tiny_models),
        cmocka_unit_test(test_minilm_mixed_lengths),
        cmocka_unit_test(test_ctx_trim),
    };
    TEST_GROUP_RETURN(t);
}
