/* test_parity.c - nlpd vs transformers on the tiny reference models in
 * tests/fixtures/models (made by tests/reference/make_models.py): token ids,
 * logits, probabilities, hidden states, pooled embeddings within 1e-4, and
 * the question-answering pipeline's windows and answers. */
#include "test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "nlpd_engine.h"

#define TOL 1e-4f

static cJSON *load_golden(const char *model)
{
    char *text = tu_read_file(tu_path("%s/tests/fixtures/models/%s/golden.json", tu_root(), model),
                              NULL);
    assert_non_null(text);
    cJSON *g = cJSON_Parse(text);
    free(text);
    assert_non_null(g);
    return g;
}

/* A JSON number array as floats; *n its length. Caller frees. */
static float *json_floats(const cJSON *arr, int *n)
{
    *n = cJSON_GetArraySize(arr);
    float *v = malloc(sizeof(float) * (size_t)(*n ? *n : 1));
    assert_non_null(v);
    int i = 0;
    const cJSON *x;
    cJSON_ArrayForEach(x, arr) v[i++] = (float)x->valuedouble;
    return v;
}

static void expect_ints(const cJSON *arr, const int32_t *got, int n, const char *what,
                        const char *ctx)
{
    if (cJSON_GetArraySize(arr) != n)
        fail_msg("%s: %s: %d values, golden has %d", ctx, what, n, cJSON_GetArraySize(arr));
    for (int i = 0; i < n; i++)
        if (cJSON_GetArrayItem(arr, i)->valueint != got[i])
            fail_msg("%s: %s[%d] = %d, golden %d", ctx, what, i, got[i],
                     cJSON_GetArrayItem(arr, i)->valueint);
}

static void expect_close(const cJSON *arr, const float *got, int n, const char *what,
                         const char *ctx)
{
    int gn;
    float *want = json_floats(arr, &gn);
    if (gn != n)
        fail_msg("%s: %s: %d values, golden has %d", ctx, what, n, gn);
    float d = tu_max_abs_diff(want, got, (size_t)n);
    free(want);
    if (!(d <= TOL))
        fail_msg("%s: %s differs from transformers by %g (tolerance %g)", ctx, what, d, TOL);
}

typedef struct run_out {
    float *main;  /* logits | hidden | start logits */
    float *extra; /* probs | pooled | end logits */
} run_out;

/* Floats per input in run_out.main and run_out.extra. */
static void output_sizes(const eng_model_info *info, const eng_encoding *e, int *main_n,
                         int *extra_n)
{
    switch (info->task) {
    case ENG_TASK_CLASSIFY: *main_n = *extra_n = info->num_labels; break;
    case ENG_TASK_EMBED: *main_n = e->n * info->hidden, *extra_n = info->hidden; break;
    default: *main_n = *extra_n = e->n;
    }
}

/* Runs the model's task on encodings; outputs packed in input order. */
static void run_task(eng_ctx *ctx, eng_model *m, const eng_encoding **enc, int n, run_out *o)
{
    const eng_model_info *info = eng_model_get_info(m);
    eng_error err = {0};
    int ntok = 0;
    for (int i = 0; i < n; i++)
        ntok += enc[i]->n;
    int rc;
    switch (info->task) {
    case ENG_TASK_CLASSIFY:
        o->main = malloc(sizeof(float) * (size_t)n * info->num_labels);
        o->extra = malloc(sizeof(float) * (size_t)n * info->num_labels);
        rc = eng_run_classify(ctx, m, enc, n, o->extra, o->main, &err);
        break;
    case ENG_TASK_EMBED:
        o->main = malloc(sizeof(float) * (size_t)ntok * info->hidden);
        o->extra = malloc(sizeof(float) * (size_t)n * info->hidden);
        rc = eng_run_hidden(ctx, m, enc, n, o->main, &err);
        if (!rc)
            rc = eng_run_embed(ctx, m, enc, n, o->extra, &err);
        break;
    default:
        o->main = malloc(sizeof(float) * (size_t)ntok);
        o->extra = malloc(sizeof(float) * (size_t)ntok);
        rc = eng_run_qa_logits(ctx, m, enc, n, o->main, o->extra, &err);
    }
    if (rc)
        fail_msg("run failed: %s", err.msg);
}

static void check_model_on(const char *name, const char *backend)
{
    cJSON *g = load_golden(name);
    eng_model *m;
    eng_ctx *ctx;
    eng_error err = {0};
    if (eng_model_load(tu_path("%s/tests/fixtures/models/%s", tu_root(), name), &m, &err))
        fail_msg("%s: load: %s", name, err.msg);
    if (eng_ctx_new(&(eng_ctx_opts){.backend = backend, .threads = 2}, &ctx, &err))
        fail_msg("%s: backend %s: %s", name, backend, err.msg);
    const eng_model_info *info = eng_model_get_info(m);
    const cJSON *cases = cJSON_GetObjectItem(g, "cases");
    int n = cJSON_GetArraySize(cases);
    assert_true(n > 0);
    eng_encoding *enc = calloc((size_t)n, sizeof *enc);
    const eng_encoding **ptrs = calloc((size_t)n, sizeof *ptrs);
    const char *main_key = info->task == ENG_TASK_CLASSIFY ? "logits"
                           : info->task == ENG_TASK_EMBED  ? "hidden"
                                                           : "start_logits";
    const char *extra_key = info->task == ENG_TASK_CLASSIFY ? "probs"
                            : info->task == ENG_TASK_EMBED  ? "pooled"
                                                            : "end_logits";
    for (int i = 0; i < n; i++) {
        const cJSON *c = cJSON_GetArrayItem(cases, i);
        const char *text = cJSON_GetObjectItem(c, "text")->valuestring;
        const cJSON *pair = cJSON_GetObjectItem(c, "pair");
        int max_len = cJSON_GetObjectItem(c, "max_length")->valueint;
        char where[96];
        snprintf(where, sizeof where, "%s [%s] case %d", name, backend, i);
        eng_encoding_init(&enc[i]);
        ptrs[i] = &enc[i];
        const char *p = cJSON_IsString(pair) ? pair->valuestring : NULL;
        if (eng_tokenizer_encode(eng_model_tokenizer(m), text, strlen(text), p, p ? strlen(p) : 0,
                                 max_len > 0 ? max_len : info->max_seq_len, &enc[i], &err))
            fail_msg("%s: tokenize: %s", where, err.msg);
        expect_ints(cJSON_GetObjectItem(c, "ids"), enc[i].ids, enc[i].n, "ids", where);
        expect_ints(cJSON_GetObjectItem(c, "type_ids"), enc[i].type_ids, enc[i].n, "type_ids",
                    where);
        /* Alone, as the golden was computed. */
        run_out o;
        run_task(ctx, m, &ptrs[i], 1, &o);
        int main_n, extra_n;
        output_sizes(info, &enc[i], &main_n, &extra_n);
        expect_close(cJSON_GetObjectItem(c, main_key), o.main, main_n, main_key, where);
        expect_close(cJSON_GetObjectItem(c, extra_key), o.extra, extra_n, extra_key, where);
        free(o.main);
        free(o.extra);
    }
    /* All cases in one batch: each result must still match its golden. */
    run_out b;
    run_task(ctx, m, ptrs, n, &b);
    size_t mo = 0, eo = 0;
    for (int i = 0; i < n; i++) {
        const cJSON *c = cJSON_GetArrayItem(cases, i);
        char where[96];
        snprintf(where, sizeof where, "%s [%s] case %d in a batch of %d", name, backend, i, n);
        int main_n, extra_n;
        output_sizes(info, &enc[i], &main_n, &extra_n);
        expect_close(cJSON_GetObjectItem(c, main_key), b.main + mo, main_n, main_key, where);
        expect_close(cJSON_GetObjectItem(c, extra_key), b.extra + eo, extra_n, extra_key, where);
        mo += (size_t)main_n;
        eo += (size_t)extra_n;
    }
    free(b.main);
    free(b.extra);
    for (int i = 0; i < n; i++)
        eng_encoding_free(&enc[i]);
    free(enc);
    free(ptrs);
    eng_ctx_free(ctx);
    eng_model_unref(m);
    cJSON_Delete(g);
}

static void check_qa_on(const char *name, const char *backend);

/* Every golden on every backend there is (the CPU; the emulated CUDA backend in the
 * unit-test binary; a real GPU when present). */
static void check_model(const char *name)
{
    const char *be[8];
    int nb = tu_model_backends(be, 8);
    for (int i = 0; i < nb; i++) {
        print_message("  %s on %s\n", name, be[i]);
        check_model_on(name, be[i]);
    }
}

static void check_qa(const char *name)
{
    const char *be[8];
    int nb = tu_model_backends(be, 8);
    for (int i = 0; i < nb; i++) {
        print_message("  %s qa pipeline on %s\n", name, be[i]);
        check_qa_on(name, be[i]);
    }
}

static void test_bert_base(void **s) { (void)s; check_model("bert_base"); }
static void test_bert_st(void **s) { (void)s; check_model("bert_st"); }
static void test_bert_cls(void **s) { (void)s; check_model("bert_cls"); }
static void test_bert_cls_f16(void **s) { (void)s; check_model("bert_cls_f16"); }
static void test_bert_cls_bf16(void **s) { (void)s; check_model("bert_cls_bf16"); }
static void test_bert_cls_multilabel(void **s) { (void)s; check_model("bert_cls_multilabel"); }
static void test_bert_qa(void **s) { (void)s; check_model("bert_qa"); }
static void test_distilbert_base(void **s) { (void)s; check_model("distilbert_base"); }
static void test_distilbert_cls(void **s) { (void)s; check_model("distilbert_cls"); }
static void test_distilbert_qa(void **s) { (void)s; check_model("distilbert_qa"); }

/* ------------------------------------------------------------------ QA */

static int param(const cJSON *p, const char *key)
{
    const cJSON *v = cJSON_GetObjectItem(p, key);
    return cJSON_IsBool(v) ? cJSON_IsTrue(v) : v->valueint;
}

static void expect_answers(const cJSON *want, const eng_qa_answer *got, int n, float tol,
                           const char *where)
{
    if (cJSON_GetArraySize(want) != n)
        fail_msg("%s: %d answers, pipeline gave %d", where, n, cJSON_GetArraySize(want));
    for (int i = 0; i < n; i++) {
        const cJSON *a = cJSON_GetArrayItem(want, i);
        int ws = cJSON_GetObjectItem(a, "start")->valueint, we = cJSON_GetObjectItem(a, "end")->valueint;
        float sc = (float)cJSON_GetObjectItem(a, "score")->valuedouble;
        if (ws != got[i].start || we != got[i].end || !(fabsf(sc - got[i].score) <= tol))
            fail_msg("%s: answer %d is [%d, %d) score %.7g; pipeline [%d, %d) score %.7g '%s'",
                     where, i, got[i].start, got[i].end, got[i].score, ws, we, sc,
                     cJSON_GetObjectItem(a, "answer")->valuestring);
    }
}

static void check_qa_on(const char *name, const char *backend)
{
    cJSON *g = load_golden(name);
    eng_model *m;
    eng_ctx *ctx;
    eng_error err = {0};
    if (eng_model_load(tu_path("%s/tests/fixtures/models/%s", tu_root(), name), &m, &err))
        fail_msg("%s: load: %s", name, err.msg);
    if (eng_ctx_new(&(eng_ctx_opts){.backend = backend, .threads = 2}, &ctx, &err))
        fail_msg("%s: backend %s: %s", name, backend, err.msg);
    const eng_tokenizer *tok = eng_model_tokenizer(m);
    const cJSON *item;
    int k = 0;
    cJSON_ArrayForEach(item, cJSON_GetObjectItem(g, "qa_pipeline")) {
        char where[96];
        snprintf(where, sizeof where, "%s [%s] qa item %d", name, backend, k++);
        const char *q = cJSON_GetObjectItem(item, "question")->valuestring;
        const char *c = cJSON_GetObjectItem(item, "context")->valuestring;
        const cJSON *p = cJSON_GetObjectItem(item, "effective_params");
        eng_qa_opts o;
        eng_qa_opts_default(&o);
        o.max_seq_len = param(p, "max_seq_len");
        o.doc_stride = param(p, "doc_stride");
        o.max_answer_len = param(p, "max_answer_len");
        o.top_k = param(p, "top_k");
        o.handle_impossible_answer = param(p, "handle_impossible_answer");
        o.align_to_words = param(p, "align_to_words");
        eng_qa_windows w;
        if (eng_qa_windows_make(tok, q, strlen(q), c, strlen(c), &o, &w, &err))
            fail_msg("%s: windows: %s", where, err.msg);
        const cJSON *gw = cJSON_GetObjectItem(item, "windows");
        if (cJSON_GetArraySize(gw) != w.n)
            fail_msg("%s: %d windows, pipeline made %d", where, w.n, cJSON_GetArraySize(gw));
        /* Windows match (padding, when the pipeline used it, stripped), and the
         * decoder on the pipeline's own logits gives the pipeline's answers. */
        int total = 0;
        for (int i = 0; i < w.n; i++)
            total += w.win[i].n;
        float *sl = malloc(sizeof(float) * (size_t)total), *el = malloc(sizeof(float) * (size_t)total);
        int off = 0;
        for (int i = 0; i < w.n; i++) {
            const cJSON *win = cJSON_GetArrayItem(gw, i);
            int gn;
            float *gs = json_floats(cJSON_GetObjectItem(win, "start_logits"), &gn);
            float *ge = json_floats(cJSON_GetObjectItem(win, "end_logits"), &gn);
            int real = 0;
            const cJSON *am;
            cJSON_ArrayForEach(am, cJSON_GetObjectItem(win, "attention_mask")) real += am->valueint;
            if (real != w.win[i].n)
                fail_msg("%s: window %d has %d tokens, pipeline %d", where, i, w.win[i].n, real);
            for (int t = 0; t < real; t++) {
                if (cJSON_GetArrayItem(cJSON_GetObjectItem(win, "ids"), t)->valueint != w.win[i].ids[t] ||
                    cJSON_GetArrayItem(cJSON_GetObjectItem(win, "type_ids"), t)->valueint != w.win[i].type_ids[t])
                    fail_msg("%s: window %d token %d differs", where, i, t);
                const cJSON *go = cJSON_GetArrayItem(cJSON_GetObjectItem(win, "offsets"), t);
                if (w.win[i].seq_ids[t] == 1 &&
                    (cJSON_GetArrayItem(go, 0)->valueint != w.win[i].offsets[2 * t] ||
                     cJSON_GetArrayItem(go, 1)->valueint != w.win[i].offsets[2 * t + 1]))
                    fail_msg("%s: window %d token %d offsets differ", where, i, t);
                sl[off + t] = gs[t];
                el[off + t] = ge[t];
            }
            off += real;
            free(gs);
            free(ge);
        }
        eng_qa_answer ans[16];
        int na = 0;
        assert_true(o.top_k + 1 <= 16);
        assert_int_equal(eng_qa_decode(tok, &w, sl, el, &o, ans, &na), ENG_OK);
        expect_answers(cJSON_GetObjectItem(item, "answers"), ans, na, 1e-5f, where);
        /* End to end with nlpd's own logits. */
        char where2[128];
        snprintf(where2, sizeof where2, "%s (nlpd logits)", where);
        if (eng_qa(ctx, m, q, c, &o, ans, &na, &err))
            fail_msg("%s: %s", where2, err.msg);
        expect_answers(cJSON_GetObjectItem(item, "answers"), ans, na, TOL, where2);
        free(sl);
        free(el);
        eng_qa_windows_free(&w);
    }
    eng_ctx_free(ctx);
    eng_model_unref(m);
    cJSON_Delete(g);
}

static void test_bert_qa_pipeline(void **s) { (void)s; check_qa("bert_qa"); }
static void test_distilbert_qa_pipeline(void **s) { (void)s; check_qa("distilbert_qa"); }

static char *repeat(const char *unit, int times)
{
    size_t ul = strlen(unit);
    char *s = malloc(ul * (size_t)times + 1);
    assert_non_null(s);
    for (int i = 0; i < times; i++)
        memcpy(s + ul * (size_t)i, unit, ul);
    s[ul * (size_t)times] = 0;
    return s;
}

/* Issue 12 item 1: a question that leaves doc_stride + 1 context tokens per
 * window made the stride 1 (a window per context token); now the pair is
 * refused with ENG_ETOOLONG before any window is built, as are pairs over the
 * token budget or with too much span search (top_k x max_answer_length). */
static void test_qa_bounds(void **state)
{
    (void)state;
    eng_model *m;
    eng_error err = {0};
    if (eng_model_load(tu_path("%s/tests/fixtures/models/bert_qa", tu_root()), &m, &err))
        fail_msg("load: %s", err.msg);
    const eng_tokenizer *tok = eng_model_tokenizer(m);
    eng_qa_opts o;
    eng_qa_opts_for_model(eng_model_get_info(m), &o);
    assert_int_equal(o.max_seq_len, eng_model_get_info(m)->max_seq_len);
    assert_true(o.doc_stride <= o.max_seq_len / 2);
    /* A question of exactly max_seq_len - 3 - doc_stride - 1 tokens: step 1. */
    int qn = o.max_seq_len - 3 - o.doc_stride - 1;
    char *q = repeat("what ", qn);
    eng_encoding e;
    eng_encoding_init(&e);
    assert_int_equal(eng_tokenizer_encode_raw(tok, q, strlen(q), &e, &err), ENG_OK);
    assert_int_equal(e.n, qn);
    eng_encoding_free(&e);
    char *ctx = repeat("the bank opened a branch in town. ", 300); /* ~2400 tokens */
    eng_qa_windows w = {0};
    int rc = eng_qa_windows_make(tok, q, strlen(q), ctx, strlen(ctx), &o, &w, &err);
    if (rc != ENG_ETOOLONG || !strstr(err.msg, "windows"))
        fail_msg("step-1 windows: rc %d (%d windows), '%s'", rc, w.n, err.msg);
    assert_null(w.win);
    /* A short question over the same context is answered (~45 windows of 128 tokens),
     * unless the caller allows fewer windows or context tokens. */
    rc = eng_qa_windows_make(tok, "who?", 4, ctx, strlen(ctx), &o, &w, &err);
    if (rc)
        fail_msg("a short question over ~2400 tokens refused: %s", err.msg);
    assert_true(w.n > 16 && w.n <= ENG_QA_MAX_WINDOWS);
    eng_qa_windows_free(&w);
    eng_qa_opts few = o;
    few.max_windows = 16;
    rc = eng_qa_windows_make(tok, "who?", 4, ctx, strlen(ctx), &few, &w, &err);
    if (rc != ENG_ETOOLONG || !strstr(err.msg, "windows"))
        fail_msg("max_windows 16: rc %d, '%s'", rc, err.msg);
    few = o;
    few.max_context_tokens = 1000;
    rc = eng_qa_windows_make(tok, "who?", 4, ctx, strlen(ctx), &few, &w, &err);
    if (rc != ENG_ETOOLONG || !strstr(err.msg, "context has"))
        fail_msg("max_context_tokens 1000: rc %d, '%s'", rc, err.msg);
    char *mid = repeat("the bank opened a branch in town. ", 40); /* ~320 tokens */
    if (eng_qa_windows_make(tok, "who?", 4, mid, strlen(mid), &o, &w, &err))
        fail_msg("a normal pair refused: %s", err.msg);
    assert_true(w.n >= 2 && w.n <= ENG_QA_MAX_WINDOWS);
    int nwin = w.n;
    eng_qa_windows_free(&w);
    /* The caller's token budget (what is left of a request's). */
    eng_qa_opts small = o;
    small.max_tokens = (long)nwin * o.max_seq_len / 2;
    rc = eng_qa_windows_make(tok, "who?", 4, mid, strlen(mid), &small, &w, &err);
    if (rc != ENG_ETOOLONG || !strstr(err.msg, "tokens"))
        fail_msg("token budget: rc %d, '%s'", rc, err.msg);
    /* The caller can tell this bound refused (what the windows need is over it)... */
    assert_true(w.tokens > small.max_tokens);
    few = o;
    few.max_windows = 1;
    rc = eng_qa_windows_make(tok, "who?", 4, mid, strlen(mid), &few, &w, &err);
    assert_int_equal(rc, ENG_ETOOLONG);
    assert_int_equal(w.tokens, 0); /* ...from another bound's refusal */
    /* Span search: top_k 1000 x max_answer_length 4096 over the windows. */
    eng_qa_opts big = o;
    big.top_k = 1000;
    big.max_answer_len = 4096;
    big.max_decode_work = 1L << 20;
    rc = eng_qa_windows_make(tok, "who?", 4, mid, strlen(mid), &big, &w, &err);
    if (rc != ENG_ETOOLONG || !strstr(err.msg, "top_k"))
        fail_msg("decode work: rc %d, '%s'", rc, err.msg);
    /* eng_qa_decode checks the same bound itself. */
    assert_int_equal(eng_qa_windows_make(tok, "who?", 4, mid, strlen(mid), &o, &w, &err), ENG_OK);
    int total = 0;
    for (int i = 0; i < w.n; i++)
        total += w.win[i].n;
    assert_int_equal(w.tokens, total);
    float *z = calloc((size_t)total, sizeof *z);
    eng_qa_answer *ans = calloc(1000, sizeof *ans);
    int na = -1;
    assert_int_equal(eng_qa_decode(tok, &w, z, z, &big, ans, &na), ENG_ETOOLONG);
    assert_int_equal(eng_qa_decode(tok, &w, z, z, &o, ans, &na), ENG_OK);
    assert_int_equal(na, 1);
    free(z);
    free(ans);
    eng_qa_windows_free(&w);
    free(q);
    free(ctx);
    free(mid);
    eng_model_unref(m);
}

TEST_GROUP(parity)
{
    static const struct CMUnitTest t[] = {
        cmocka_unit_test(test_bert_base),
        cmocka_unit_test(test_bert_st),
        cmocka_unit_test(test_bert_cls),
        cmocka_unit_test(test_bert_cls_f16),
        cmocka_unit_test(test_bert_cls_bf16),
        cmocka_unit_test(test_bert_cls_multilabel),
        cmocka_unit_test(test_bert_qa),
        cmocka_unit_test(test_distilbert_base),
        cmocka_unit_test(test_distilbert_cls),
        cmocka_unit_test(test_distilbert_qa),
        cmocka_unit_test(test_bert_qa_pipeline),
        cmocka_unit_test(test_distilbert_qa_pipeline),
        cmocka_unit_test(test_qa_bounds),
    };
    TEST_GROUP_RETURN(t);
}
