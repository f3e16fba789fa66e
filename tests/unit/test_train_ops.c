/* test_train_ops.c - the backend's training ops (backend.h), each checked on its
 * own: backward passes against central finite differences of the forward op
 * (loss = sum w * out with random w), linear ops against direct computation,
 * AdamW against the formula in double, dropout masks for rate and determinism. */
#include "test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "cpu/cpu_kernels.h"

/* Finite differences in fp32: step 1e-2 (rounding of the loss, ~1e-7 relative,
 * stays below 1e-4 of it) and a tolerance of 1e-2 of the largest gradient. */
#define FD_H 1e-2f
#define FD_TOL 1e-2

static uint64_t rng = 12345;

static float frand(void) /* uniform in [-1, 1) */
{
    rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
    return (float)((rng >> 40) * (1.0 / 8388608.0)) - 1.0f;
}

static float *rnd(size_t n, float scale)
{
    float *x = malloc((n ? n : 1) * sizeof(float));
    assert_non_null(x);
    for (size_t i = 0; i < n; i++)
        x[i] = frand() * scale;
    return x;
}

static float *zeros(size_t n)
{
    float *x = calloc(n ? n : 1, sizeof(float));
    assert_non_null(x);
    return x;
}

static double dot(const float *w, const float *x, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += (double)w[i] * x[i];
    return s;
}

/* A forward function of the variable array, returning sum w * out. */
typedef double (*loss_fn)(void *ctx);

/* Compares grad[i] with a central difference of f at up to `samples` indices of x. */
static void fd_check(const char *what, loss_fn f, void *ctx, float *x, const float *grad,
                     size_t n, int samples)
{
    double gmax = 0, worst = 0;
    for (size_t i = 0; i < n; i++)
        gmax = fabs(grad[i]) > gmax ? fabs(grad[i]) : gmax;
    size_t stride = n / (size_t)samples > 1 ? n / (size_t)samples : 1;
    for (size_t i = 0; i < n; i += stride) {
        float keep = x[i];
        x[i] = keep + FD_H;
        double lp = f(ctx);
        x[i] = keep - FD_H;
        double lm = f(ctx);
        x[i] = keep;
        double fd = (lp - lm) / (2.0 * FD_H), d = fabs(fd - grad[i]);
        worst = d > worst ? d : worst;
        if (!(d <= FD_TOL * (gmax > 1 ? gmax : 1)))
            fail_msg("%s: d/dx[%zu] analytic %.6g, finite difference %.6g (max |grad| %.4g)",
                     what, i, grad[i], fd, gmax);
    }
    printf("    %-34s max |analytic - FD| %.2e (max |grad| %.3g)\n", what, worst, gmax);
}

static eng_backend *backend(void)
{
    eng_backend *be = eng_backend_cpu_new(2);
    assert_non_null(be);
    assert_non_null(be->ops->gemm_ex);
    return be;
}

/* ------------------------------------------------------------------ gemm_ex */

static void test_gemm_ex(void **s)
{
    (void)s;
    eng_backend *be = backend();
    const int M = 37, N = 29, K = 41;
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            float *A = rnd((size_t)M * K, 1), *B = rnd((size_t)K * N, 1);
            float *C = rnd((size_t)M * N, 1), *want = malloc(sizeof(float) * M * N);
            int lda = ta ? M : K, ldb = tb ? K : N;
            for (int i = 0; i < M; i++)
                for (int j = 0; j < N; j++) {
                    double acc = 0;
                    for (int k = 0; k < K; k++)
                        acc += (double)(ta ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k]) *
                               (tb ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j]);
                    want[(size_t)i * N + j] = (float)(0.5 * acc + 2.0 * C[(size_t)i * N + j]);
                }
            be->ops->gemm_ex(be, ta, tb, M, N, K, 0.5f, A, lda, B, ldb, 2.0f, C, N);
            float d = tu_max_abs_diff(C, want, (size_t)M * N);
            if (!(d <= 1e-4f))
                fail_msg("gemm_ex(trans_a %d, trans_b %d) differs by %g", ta, tb, d);
            free(A), free(B), free(C), free(want);
        }
    be->ops->destroy(be);
}

/* -------------------------------------------------------------- activations */

typedef struct act_ctx {
    eng_backend *be;
    float *pre, *tmp, *post, *w;
    int rows, cols;
    eng_act act;
} act_ctx;

static double act_loss(void *v)
{
    act_ctx *c = v;
    size_t n = (size_t)c->rows * c->cols;
    memcpy(c->tmp, c->pre, n * sizeof(float));
    c->be->ops->bias_act_train(c->be, c->tmp, c->post, NULL, c->rows, c->cols, c->act);
    return dot(c->w, c->post, n);
}

static void test_act_backward(void **s)
{
    (void)s;
    eng_backend *be = backend();
    static const struct { eng_act act; const char *name; } acts[] = {
        {ENG_ACT_GELU, "act_backward gelu"}, {ENG_ACT_GELU_TANH, "act_backward gelu_tanh"},
        {ENG_ACT_TANH, "act_backward tanh"}, {ENG_ACT_RELU, "act_backward relu"},
        {ENG_ACT_NONE, "act_backward none"}};
    const int R = 5, C = 700; /* more than one internal chunk of 512 */
    size_t n = (size_t)R * C;
    for (size_t a = 0; a < sizeof acts / sizeof acts[0]; a++) {
        act_ctx c = {be, rnd(n, 3), zeros(n), zeros(n), rnd(n, 1), R, C, acts[a].act};
        if (acts[a].act == ENG_ACT_RELU) /* keep away from the kink */
            for (size_t i = 0; i < n; i++)
                if (fabsf(c.pre[i]) < 0.05f)
                    c.pre[i] = 0.5f;
        float *dx = zeros(n);
        be->ops->act_backward(be, dx, c.w, c.pre, R, C, acts[a].act);
        fd_check(acts[a].name, act_loss, &c, c.pre, dx, n, 200);
        /* In place (dx aliasing dy) gives the same. */
        float *dy = malloc(n * sizeof(float));
        memcpy(dy, c.w, n * sizeof(float));
        be->ops->act_backward(be, dy, dy, c.pre, R, C, acts[a].act);
        assert_true(tu_max_abs_diff(dy, dx, n) == 0.0f);
        /* bias_act_train: pre gets the bias, post = act(pre), as bias_act computes it. */
        float *bias = rnd((size_t)C, 1), *p2 = malloc(n * sizeof(float)), *ref = malloc(n * sizeof(float));
        memcpy(p2, c.pre, n * sizeof(float));
        memcpy(ref, c.pre, n * sizeof(float));
        be->ops->bias_act_train(be, p2, c.post, bias, R, C, acts[a].act);
        be->ops->bias_act(be, ref, bias, R, C, acts[a].act);
        assert_true(tu_max_abs_diff(c.post, ref, n) == 0.0f);
        for (int i = 0; i < R * C; i++)
            assert_true(p2[i] == c.pre[i] + bias[i % C]);
        free(bias), free(p2), free(ref), free(dy);
        free(c.pre), free(c.tmp), free(c.post), free(c.w), free(dx);
    }
    be->ops->destroy(be);
}

/* ---------------------------------------------------------------- layernorm */

typedef struct ln_ctx {
    eng_backend *be;
    float *x, *res, *g, *b, *out, *w;
    int rows, cols;
} ln_ctx;

static double ln_loss(void *v)
{
    ln_ctx *c = v;
    c->be->ops->add_layernorm(c->be, c->out, c->x, c->res, c->g, c->b, c->rows, c->cols, 1e-5f);
    return dot(c->w, c->out, (size_t)c->rows * c->cols);
}

static void test_layernorm_backward(void **s)
{
    (void)s;
    eng_backend *be = backend();
    const int R = 7, C = 48;
    size_t n = (size_t)R * C;
    for (int with_res = 0; with_res < 2; with_res++) {
        ln_ctx c = {be, rnd(n, 2), with_res ? rnd(n, 1) : NULL, rnd((size_t)C, 1),
                    rnd((size_t)C, 1), zeros(n), rnd(n, 1), R, C};
        float *dx = zeros(n), *dg = zeros((size_t)C), *db = zeros((size_t)C);
        /* dgamma/dbeta accumulate: start from 1 and subtract it again. */
        for (int i = 0; i < C; i++)
            dg[i] = db[i] = 1.0f;
        be->ops->layernorm_backward(be, dx, dg, db, c.w, c.x, c.res, c.g, R, C, 1e-5f);
        for (int i = 0; i < C; i++)
            dg[i] -= 1.0f, db[i] -= 1.0f;
        fd_check(with_res ? "layernorm_backward dx (+res)" : "layernorm_backward dx", ln_loss,
                 &c, c.x, dx, n, 120);
        if (with_res)
            fd_check("layernorm_backward dres", ln_loss, &c, c.res, dx, n, 60);
        fd_check("layernorm_backward dgamma", ln_loss, &c, c.g, dg, (size_t)C, 48);
        fd_check("layernorm_backward dbeta", ln_loss, &c, c.b, db, (size_t)C, 48);
        free(c.x), free(c.res), free(c.g), free(c.b), free(c.out), free(c.w);
        free(dx), free(dg), free(db);
    }
    be->ops->destroy(be);
}

/* ---------------------------------------------------------------- embeddings */

static void test_embed_backward(void **s)
{
    (void)s;
    eng_backend *be = backend();
    const int V = 11, P = 9, Ty = 2, D = 40, T = 23;
    int32_t ids[23], pos[23], types[23];
    for (int t = 0; t < T; t++) {
        ids[t] = (t * 7) % 5; /* repeated ids: gradients must add up */
        pos[t] = t % P;
        types[t] = t % Ty;
    }
    float *dout = rnd((size_t)T * D, 1);
    float *dw = zeros((size_t)V * D), *dp = zeros((size_t)P * D), *dt = zeros((size_t)Ty * D);
    float *ww = zeros((size_t)V * D), *wp = zeros((size_t)P * D), *wt = zeros((size_t)Ty * D);
    be->ops->embed_backward(be, dw, dp, dt, dout, ids, pos, types, T, D);
    for (int t = 0; t < T; t++)
        for (int d = 0; d < D; d++) {
            float g = dout[(size_t)t * D + d];
            ww[(size_t)ids[t] * D + d] += g;
            wp[(size_t)pos[t] * D + d] += g;
            wt[(size_t)types[t] * D + d] += g;
        }
    assert_true(tu_max_abs_diff(dw, ww, (size_t)V * D) <= 1e-5f);
    assert_true(tu_max_abs_diff(dp, wp, (size_t)P * D) <= 1e-5f);
    assert_true(tu_max_abs_diff(dt, wt, (size_t)Ty * D) <= 1e-5f);
    free(dout), free(dw), free(dp), free(dt), free(ww), free(wp), free(wt);
    be->ops->destroy(be);
}

/* ---------------------------------------------------------------- attention */

typedef struct attn_ctx {
    eng_backend *be;
    float *qkv, *out, *probs, *w;
    int64_t p_off[4];
    int32_t seq_off[4];
    int nseq, heads, hd, T;
    float p;
    uint64_t seed;
} attn_ctx;

static double attn_loss(void *v)
{
    attn_ctx *c = v;
    int H = c->heads * c->hd;
    c->be->ops->attention_train(c->be, c->out, H, c->probs, c->p_off, c->qkv, c->qkv + H,
                                c->qkv + 2 * H, 3 * H, c->seq_off, c->nseq, c->heads, c->hd,
                                0.35f, c->p, c->seed);
    return dot(c->w, c->out, (size_t)c->T * H);
}

static void test_attention_backward(void **s)
{
    (void)s;
    eng_backend *be = backend();
    for (int drop = 0; drop < 2; drop++) {
        attn_ctx c = {.be = be, .nseq = 3, .heads = 2, .hd = 8, .p = drop ? 0.3f : 0.0f,
                      .seed = 99};
        int lens[3] = {5, 1, 9};
        c.seq_off[0] = 0;
        c.p_off[0] = 0;
        for (int i = 0; i < 3; i++) {
            c.seq_off[i + 1] = c.seq_off[i] + lens[i];
            c.p_off[i + 1] = c.p_off[i] + (int64_t)c.heads * lens[i] * lens[i];
        }
        c.T = c.seq_off[3];
        int H = c.heads * c.hd;
        c.qkv = rnd((size_t)c.T * 3 * H, 1.5f);
        c.out = zeros((size_t)c.T * H);
        c.probs = zeros((size_t)c.p_off[3]);
        c.w = rnd((size_t)c.T * H, 1);
        attn_loss(&c);
        if (!drop) { /* same result as the inference op */
            float *ref = zeros((size_t)c.T * H);
            be->ops->attention(be, ref, H, c.qkv, 3 * H, c.qkv + H, 3 * H, c.qkv + 2 * H, 3 * H,
                               c.seq_off, c.seq_off, c.nseq, c.heads, c.hd, 0.35f, 0);
            float d = tu_max_abs_diff(ref, c.out, (size_t)c.T * H);
            if (!(d <= 1e-5f))
                fail_msg("attention_train differs from attention by %g", d);
            free(ref);
        }
        float *dqkv = zeros((size_t)c.T * 3 * H);
        be->ops->attention_backward(be, dqkv, dqkv + H, dqkv + 2 * H, 3 * H, c.w, H, c.probs,
                                    c.p_off, c.qkv, c.qkv + H, c.qkv + 2 * H, 3 * H, c.seq_off,
                                    c.nseq, c.heads, c.hd, 0.35f, c.p, c.seed);
        fd_check(drop ? "attention_backward dq dk dv (dropout)" : "attention_backward dq dk dv",
                 attn_loss, &c, c.qkv, dqkv, (size_t)c.T * 3 * H, 400);
        free(c.qkv), free(c.out), free(c.probs), free(c.w), free(dqkv);
    }
    be->ops->destroy(be);
}

/* ------------------------------------------------------------------ dropout */

static void test_dropout(void **s)
{
    (void)s;
    eng_backend *be = backend();
    size_t n = 200000;
    float *x = rnd(n, 1), *y = zeros(n), *y2 = zeros(n);
    be->ops->dropout(be, y, x, n, 0.25f, 7);
    be->ops->dropout(be, y2, x, n, 0.25f, 7);
    assert_true(memcmp(y, y2, n * sizeof(float)) == 0); /* a function of (seed, index) */
    size_t dropped = 0;
    for (size_t i = 0; i < n; i++) {
        if (y[i] == 0.0f && x[i] != 0.0f)
            dropped++;
        else
            assert_true(fabsf(y[i] - x[i] / 0.75f) <= 1e-6f);
    }
    double rate = (double)dropped / n;
    if (!(fabs(rate - 0.25) < 0.01))
        fail_msg("dropout rate %.4f, expected 0.25", rate);
    be->ops->dropout(be, y2, x, n, 0.25f, 8);
    assert_true(memcmp(y, y2, n * sizeof(float)) != 0); /* another seed, another mask */
    be->ops->dropout(be, y2, x, n, 0.0f, 7);            /* p = 0 copies */
    assert_true(memcmp(x, y2, n * sizeof(float)) == 0);
    memcpy(y2, x, n * sizeof(float));
    be->ops->dropout(be, y2, y2, n, 0.25f, 7); /* in place */
    assert_true(memcmp(y, y2, n * sizeof(float)) == 0);
    free(x), free(y), free(y2);
    be->ops->destroy(be);
}

/* ------------------------------------------------------------------ losses */

typedef struct loss_ctx {
    eng_backend *be;
    float *logits, *d, *targets;
    int32_t *labels;
    int n, L;
} loss_ctx;

static double ce_loss(void *v)
{
    loss_ctx *c = v;
    float loss;
    c->be->ops->cross_entropy(c->be, &loss, c->d, c->logits, c->labels, c->n, c->L, 1.0f);
    return loss;
}

static double bce_loss(void *v)
{
    loss_ctx *c = v;
    float loss;
    c->be->ops->bce_logits(c->be, &loss, c->d, c->logits, c->targets, c->n, c->L, 1.0f);
    return loss;
}

static void test_losses(void **s)
{
    (void)s;
    eng_backend *be = backend();
    int32_t labels[6] = {0, 3, 2, 2, 1, 4};
    loss_ctx c = {be, rnd(30, 4), zeros(30), zeros(30), labels, 6, 5};
    for (int i = 0; i < 30; i++)
        c.targets[i] = (float)(i % 3 == 0);
    float loss, *grad = zeros(30);
    be->ops->cross_entropy(be, &loss, grad, c.logits, labels, 6, 5, 1.0f);
    /* the mean of -log softmax[label], computed directly */
    double want = 0;
    for (int i = 0; i < 6; i++) {
        double se = 0;
        for (int j = 0; j < 5; j++)
            se += exp(c.logits[i * 5 + j]);
        want += log(se) - c.logits[i * 5 + labels[i]];
    }
    assert_true(fabs(loss - want / 6) <= 1e-5 * fabs(want / 6));
    fd_check("cross_entropy dlogits", ce_loss, &c, c.logits, grad, 30, 30);
    float g2[30];
    be->ops->cross_entropy(be, &loss, g2, c.logits, labels, 6, 5, 0.25f); /* scale */
    for (int i = 0; i < 30; i++)
        assert_true(fabsf(g2[i] - 0.25f * grad[i]) <= 1e-7f);
    be->ops->bce_logits(be, &loss, grad, c.logits, c.targets, 6, 5, 1.0f);
    fd_check("bce_logits dlogits", bce_loss, &c, c.logits, grad, 30, 30);
    free(c.logits), free(c.d), free(c.targets), free(grad);
    be->ops->destroy(be);
}

/* ------------------------------------------------------------ small linear ops */

static void test_small_ops(void **s)
{
    (void)s;
    eng_backend *be = backend();
    const int R = 13, C = 70;
    float *dy = rnd((size_t)R * C, 1), *db = rnd((size_t)C, 1), *db0 = malloc(sizeof(float) * C);
    memcpy(db0, db, sizeof(float) * C);
    be->ops->sum_rows(be, db, dy, R, C);
    for (int c = 0; c < C; c++) {
        double acc = db0[c];
        for (int r = 0; r < R; r++)
            acc += dy[(size_t)r * C + c];
        assert_true(fabs(db[c] - acc) <= 1e-5);
    }
    int32_t off[4] = {0, 4, 5, 13};
    float *dx = zeros((size_t)R * C), *src = rnd((size_t)3 * C, 1);
    be->ops->scatter_rows(be, dx, src, off, 3, 0, C);
    be->ops->scatter_rows(be, dx, src, off, 3, 0, C); /* accumulates */
    for (int sq = 0; sq < 3; sq++)
        for (int c = 0; c < C; c++)
            assert_true(dx[(size_t)off[sq] * C + c] == 2 * src[(size_t)sq * C + c]);
    float *y = rnd(1000, 1), *y0 = malloc(sizeof(float) * 1000), *x = rnd(1000, 1);
    memcpy(y0, y, sizeof(float) * 1000);
    be->ops->axpy(be, y, -0.5f, x, 1000);
    double ss = 0;
    for (int i = 0; i < 1000; i++) {
        assert_true(fabsf(y[i] - (y0[i] - 0.5f * x[i])) <= 1e-6f);
        ss += (double)x[i] * x[i];
    }
    float got;
    be->ops->sum_squares(be, &got, x, 1000);
    assert_true(fabs(got - ss) <= 1e-5 * ss);
    be->ops->zero(be, y, 1000 * sizeof(float));
    for (int i = 0; i < 1000; i++)
        assert_true(y[i] == 0.0f);
    free(dy), free(db), free(db0), free(dx), free(src), free(y), free(y0), free(x);
    be->ops->destroy(be);
}

/* -------------------------------------------------------------------- AdamW */

static void test_adamw(void **s)
{
    (void)s;
    eng_backend *be = backend();
    const size_t n = 5000;
    float *p = rnd(n, 1), *g = rnd(n, 0.1f), *m = rnd(n, 0.01f), *v = zeros(n);
    for (size_t i = 0; i < n; i++)
        v[i] = fabsf(frand()) * 1e-3f;
    double *pp = malloc(n * sizeof(double));
    const double lr = 1e-3, b1 = 0.9, b2 = 0.999, eps = 1e-8, wd = 0.01, gs = 0.5;
    const int step = 3;
    double bc1 = 1 - pow(b1, step), bc2 = 1 - pow(b2, step);
    for (size_t i = 0; i < n; i++) {
        double gi = g[i] * gs, mi = b1 * m[i] + (1 - b1) * gi, vi = b2 * v[i] + (1 - b2) * gi * gi;
        pp[i] = p[i] * (1 - lr * wd) - lr / bc1 * mi / (sqrt(vi) / sqrt(bc2) + eps);
    }
    be->ops->adamw(be, p, g, m, v, n, (float)lr, (float)b1, (float)b2, (float)eps, (float)wd,
                   (float)bc1, (float)bc2, (float)gs);
    for (size_t i = 0; i < n; i++) {
        if (!(fabs(p[i] - pp[i]) <= 1e-6))
            fail_msg("adamw p[%zu] = %.9g, expected %.9g", i, p[i], pp[i]);
        assert_true(g[i] == 0.0f); /* gradients are reset for the next accumulation */
    }
    free(p), free(g), free(m), free(v), free(pp);
    be->ops->destroy(be);
}

TEST_GROUP(train_ops)
{
    static const struct CMUnitTest t[] = {
        cmocka_unit_test(test_gemm_ex),
        cmocka_unit_test(test_act_backward),
        cmocka_unit_test(test_layernorm_backward),
        cmocka_unit_test(test_embed_backward),
        cmocka_unit_test(test_attention_backward),
        cmocka_unit_test(test_dropout),
        cmocka_unit_test(test_losses),
        cmocka_unit_test(test_small_ops),
        cmocka_unit_test(test_adamw),
    };
    TEST_GROUP_RETURN(t);
}
