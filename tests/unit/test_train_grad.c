/* test_train_grad.c - the trainer against PyTorch: loss, the gradient of every
 * parameter tensor, and parameters after 3 AdamW steps (warmup + linear decay,
 * clipping, no decay on biases/LayerNorm), on the tiny classifiers of
 * tests/fixtures/models. Goldens: tests/reference/make_grad_goldens.py ->
 * tests/fixtures/train/grad_<model>.{json,safetensors}. */
#include "test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "core/model_config.h"
#include "nlpd_engine.h"
#include "core/safetensors.h"
#include "train/train.h"

/* Relative tolerance per tensor: max |ours - torch| / max |torch|. */
#define GRAD_RTOL 1e-4f
/* A tensor whose reference gradient stays below this is ill-conditioned (the key
 * bias: softmax ignores a per-row constant, so its true gradient is exactly 0 and
 * both sides hold rounding noise); it is checked in absolute terms. */
#define GRAD_TINY 1e-5f

typedef struct golden {
    cJSON *meta;
    eng_safetensors *st;
    eng_encoding *enc;
    const eng_encoding **encp;
    int n;
    int32_t labels[16];
    float targets[64];
    int multi;
} golden;

static void golden_load(golden *g, const char *model)
{
    char *text = tu_read_file(tu_path("%s/tests/fixtures/train/grad_%s.json", tu_root(), model),
                              NULL);
    assert_non_null(text);
    g->meta = cJSON_Parse(text);
    free(text);
    assert_non_null(g->meta);
    eng_error err = {0};
    int rc = eng_st_open(tu_path("%s/tests/fixtures/train/grad_%s.safetensors", tu_root(), model),
                         &g->st, &err);
    if (rc)
        fail_msg("%s", err.msg);
    const cJSON *ids = cJSON_GetObjectItem(g->meta, "ids");
    const cJSON *types = cJSON_GetObjectItem(g->meta, "type_ids");
    g->n = cJSON_GetArraySize(ids);
    assert_true(g->n > 0 && g->n <= 16);
    g->enc = calloc((size_t)g->n, sizeof *g->enc);
    g->encp = calloc((size_t)g->n, sizeof *g->encp);
    assert_non_null(g->enc);
    for (int i = 0; i < g->n; i++) {
        eng_encoding_init(&g->enc[i]);
        const cJSON *a = cJSON_GetArrayItem(ids, i), *b = cJSON_GetArrayItem(types, i);
        for (int t = 0; t < cJSON_GetArraySize(a); t++)
            assert_int_equal(eng_encoding_push(&g->enc[i], cJSON_GetArrayItem(a, t)->valueint,
                                               cJSON_GetArrayItem(b, t)->valueint, 0, 0, 0),
                             0);
        g->encp[i] = &g->enc[i];
    }
    const cJSON *labels = cJSON_GetObjectItem(g->meta, "labels");
    const cJSON *targets = cJSON_GetObjectItem(g->meta, "targets");
    g->multi = targets != NULL;
    for (int i = 0; labels && i < g->n; i++)
        g->labels[i] = cJSON_GetArrayItem(labels, i)->valueint;
    for (int i = 0; targets && i < g->n; i++) {
        const cJSON *row = cJSON_GetArrayItem(targets, i);
        for (int j = 0; j < cJSON_GetArraySize(row); j++)
            g->targets[i * cJSON_GetArraySize(row) + j] =
                (float)cJSON_GetArrayItem(row, j)->valuedouble;
    }
}

static void golden_free(golden *g)
{
    for (int i = 0; i < g->n; i++)
        eng_encoding_free(&g->enc[i]);
    free(g->enc);
    free(g->encp);
    eng_st_close(g->st);
    cJSON_Delete(g->meta);
}

static double opt_num(const golden *g, const char *key)
{
    return cJSON_GetObjectItem(cJSON_GetObjectItem(g->meta, "optimizer"), key)->valuedouble;
}

/* A trainer on the fixture model with the golden's labels and optimizer settings. */
static eng_trainer *trainer_for(const golden *g, const char *model, eng_model_config *cfg)
{
    eng_error err = {0};
    const char *dir = tu_path("%s/tests/fixtures/models/%s", tu_root(), model);
    if (eng_model_config_load(dir, cfg, &err))
        fail_msg("%s", err.msg);
    eng_train_opts o;
    eng_train_opts_default(&o);
    o.num_labels = cfg->num_labels;
    o.labels = (const char *const *)cfg->labels;
    o.multi_label = cfg->multi_label;
    o.dropout = 0;
    o.threads = 2;
    o.lr = (float)opt_num(g, "lr");
    o.weight_decay = (float)opt_num(g, "weight_decay");
    o.adam_eps = (float)opt_num(g, "eps");
    o.max_grad_norm = (float)opt_num(g, "max_grad_norm");
    o.warmup_steps = (long)opt_num(g, "warmup_steps");
    o.total_steps = (long)opt_num(g, "total_steps");
    eng_trainer *t = NULL;
    if (eng_trainer_new(dir, &o, &t, &err))
        fail_msg("%s: %s", model, err.msg);
    return t;
}

/* Rows of our [vocab, H] tensor that the golden lists (word embeddings), else all. */
static float *gather(const golden *g, const char *name, const float *ours, const eng_param *p,
                     size_t *count)
{
    char key[200];
    snprintf(key, sizeof key, "rows.%s", name);
    const eng_st_tensor *rows = eng_st_find(g->st, key);
    if (!rows) {
        *count = p->numel;
        float *c = malloc(p->numel * sizeof(float));
        memcpy(c, ours, p->numel * sizeof(float));
        return c;
    }
    size_t H = (size_t)p->shape[1], nr = (size_t)rows->numel;
    float *c = malloc(nr * H * sizeof(float));
    for (size_t r = 0; r < nr; r++) {
        int32_t id;
        memcpy(&id, (const char *)rows->data + 4 * r, 4);
        memcpy(c + r * H, ours + (size_t)id * H, H * sizeof(float));
    }
    *count = nr * H;
    return c;
}

static float *golden_tensor(const golden *g, const char *prefix, const char *name, size_t count)
{
    char key[200];
    snprintf(key, sizeof key, "%s.%s", prefix, name);
    const eng_st_tensor *t = eng_st_find(g->st, key);
    if (!t)
        fail_msg("golden has no tensor %s", key);
    if ((size_t)t->numel != count)
        fail_msg("%s: %lld values in the golden, %zu here", key, (long long)t->numel, count);
    float *v = malloc(count * sizeof(float));
    assert_int_equal(eng_st_to_f32(t, v), 0);
    return v;
}

static float max_abs(const float *x, size_t n)
{
    float m = 0;
    for (size_t i = 0; i < n; i++)
        m = fabsf(x[i]) > m ? fabsf(x[i]) : m;
    return m;
}

static void check_grads(const char *model)
{
    golden g = {0};
    eng_model_config cfg;
    golden_load(&g, model);
    eng_trainer *t = trainer_for(&g, model, &cfg);
    eng_error err = {0};
    float loss = 0;
    int rc = eng_trainer_backward(t, g.encp, g.n, g.multi ? NULL : g.labels,
                                  g.multi ? g.targets : NULL, 1.0f, &loss, &err);
    if (rc)
        fail_msg("%s", err.msg);
    double want_loss = cJSON_GetObjectItem(g.meta, "loss")->valuedouble;
    if (!(fabs(loss - want_loss) <= 1e-5 * fabs(want_loss)))
        fail_msg("%s: loss %.7f, torch %.7f", model, loss, want_loss);
    int np;
    const eng_param *ps = eng_trainer_params(t, &np);
    float worst = 0;
    const char *worst_name = "";
    int checked = 0;
    for (int i = 0; i < np; i++) {
        size_t count;
        float *ours = gather(&g, ps[i].name, eng_trainer_grads(t) + ps[i].off, &ps[i], &count);
        float *ref = golden_tensor(&g, "grad", ps[i].name, count);
        float scale = max_abs(ref, count), d = tu_max_abs_diff(ours, ref, count);
        if (scale < GRAD_TINY) {
            if (!(d <= 1e-6f))
                fail_msg("%s: %s: gradient should be ~0 (torch max %g), ours differs by %g",
                         model, ps[i].name, scale, d);
        } else {
            float rel = d / scale;
            if (!(rel <= GRAD_RTOL))
                fail_msg("%s: %s: gradient differs from torch by %g (max |grad| %g): relative "
                         "%g > %g", model, ps[i].name, d, scale, rel, GRAD_RTOL);
            if (rel > worst) {
                worst = rel;
                worst_name = ps[i].name;
            }
        }
        checked++;
        free(ours);
        free(ref);
    }
    printf("    %s: loss %.6f (torch %.6f); %d gradient tensors, worst relative error %.2e (%s)\n",
           model, loss, want_loss, checked, worst, worst_name);
    eng_trainer_free(t);
    eng_model_config_free(&cfg);
    golden_free(&g);
}

/* Gradient accumulation: the batch in two micro-batches, each weighted by its share
 * (loss_scale 2/4), gives the full batch's gradient. */
static void test_grad_accumulation(void **s)
{
    (void)s;
    golden g = {0};
    eng_model_config cfg;
    golden_load(&g, "bert_cls");
    assert_int_equal(g.n, 4);
    eng_trainer *t = trainer_for(&g, "bert_cls", &cfg);
    eng_error err = {0};
    float l1, l2;
    if (eng_trainer_backward(t, g.encp, 2, g.labels, NULL, 0.5f, &l1, &err) ||
        eng_trainer_backward(t, g.encp + 2, 2, g.labels + 2, NULL, 0.5f, &l2, &err))
        fail_msg("%s", err.msg);
    double want_loss = cJSON_GetObjectItem(g.meta, "loss")->valuedouble;
    assert_true(fabs(0.5 * (l1 + l2) - want_loss) <= 1e-5 * want_loss);
    int np;
    const eng_param *ps = eng_trainer_params(t, &np);
    float worst = 0;
    for (int i = 0; i < np; i++) {
        size_t count;
        float *ours = gather(&g, ps[i].name, eng_trainer_grads(t) + ps[i].off, &ps[i], &count);
        float *ref = golden_tensor(&g, "grad", ps[i].name, count);
        float scale = max_abs(ref, count), d = tu_max_abs_diff(ours, ref, count);
        if (scale >= GRAD_TINY) {
            if (!(d / scale <= GRAD_RTOL))
                fail_msg("%s: accumulated gradient differs from torch's full batch by %g "
                         "(relative %g)", ps[i].name, d, d / scale);
            worst = d / scale > worst ? d / scale : worst;
        }
        free(ours);
        free(ref);
    }
    printf("    bert_cls: 2 accumulated micro-batches = full batch, worst relative error %.2e\n",
           worst);
    eng_trainer_free(t);
    eng_model_config_free(&cfg);
    golden_free(&g);
}

/* Learning-rate schedules as transformers' get_{linear,cosine,constant}_schedule_with_warmup
 * compute them: warmup 2, total 10, lr 1. */
static void test_schedules(void **s)
{
    (void)s;
    static const struct {
        eng_lr_schedule sch;
        double want[11];
    } cases[] = {
        {ENG_LR_LINEAR, {0, 0.5, 1, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125, 0}},
        {ENG_LR_COSINE, {0, 0.5, 1, 0.96193977, 0.85355339, 0.69134172, 0.5, 0.30865828,
                         0.14644661, 0.03806023, 0}},
        {ENG_LR_CONSTANT, {0, 0.5, 1, 1, 1, 1, 1, 1, 1, 1, 1}},
    };
    const char *labels[2] = {"negative", "positive"};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        eng_train_opts o;
        eng_train_opts_default(&o);
        o.num_labels = 2;
        o.labels = labels;
        o.lr = 1.0f;
        o.schedule = cases[c].sch;
        o.total_steps = 10;
        o.warmup_steps = 2;
        o.threads = 1;
        eng_trainer *t;
        eng_error err;
        if (eng_trainer_new(tu_path("%s/tests/fixtures/train/tiny_st_base", tu_root()), &o, &t,
                            &err))
            fail_msg("%s", err.msg);
        for (int k = 0; k <= 10; k++)
            if (!(fabs(eng_trainer_lr_at(t, k) - cases[c].want[k]) <= 1e-6))
                fail_msg("schedule %d step %d: lr %.8f, expected %.8f", (int)cases[c].sch, k,
                         eng_trainer_lr_at(t, k), cases[c].want[k]);
        eng_trainer_free(t);
    }
}

/* 3 optimizer steps on the same batch; parameters and per-step losses vs torch. */
static void check_optimizer(const char *model)
{
    golden g = {0};
    eng_model_config cfg;
    golden_load(&g, model);
    eng_trainer *t = trainer_for(&g, model, &cfg);
    eng_error err = {0};
    const cJSON *losses = cJSON_GetObjectItem(g.meta, "step_losses");
    const cJSON *lrs = cJSON_GetObjectItem(g.meta, "step_lrs");
    const cJSON *norms = cJSON_GetObjectItem(g.meta, "step_grad_norms");
    int steps = cJSON_GetArraySize(losses);
    double lr_sum = 0;
    for (int s = 0; s < steps; s++) {
        float loss;
        eng_step_info info;
        if (eng_trainer_backward(t, g.encp, g.n, g.multi ? NULL : g.labels,
                                 g.multi ? g.targets : NULL, 1.0f, &loss, &err) ||
            eng_trainer_step(t, &info, &err))
            fail_msg("%s", err.msg);
        double wl = cJSON_GetArrayItem(losses, s)->valuedouble;
        double wlr = cJSON_GetArrayItem(lrs, s)->valuedouble;
        double wn = cJSON_GetArrayItem(norms, s)->valuedouble;
        if (!(fabs(loss - wl) <= 1e-4 * fabs(wl)))
            fail_msg("%s: step %d loss %.7f, torch %.7f", model, s + 1, loss, wl);
        if (!(fabs(info.lr - wlr) <= 1e-7 + 1e-6 * wlr))
            fail_msg("%s: step %d lr %g, torch %g", model, s + 1, info.lr, wlr);
        if (!(fabs(info.grad_norm - wn) <= 1e-4 * wn))
            fail_msg("%s: step %d grad norm %g, torch %g", model, s + 1, info.grad_norm, wn);
        lr_sum += wlr;
    }
    int np;
    const eng_param *ps = eng_trainer_params(t, &np);
    float worst = 0;
    size_t noisy = 0;
    for (int i = 0; i < np; i++) {
        size_t count;
        float *ours = gather(&g, ps[i].name, eng_trainer_weights(t) + ps[i].off, &ps[i], &count);
        float *ref = golden_tensor(&g, "after", ps[i].name, count);
        float *gref = golden_tensor(&g, "grad", ps[i].name, count);
        /* Adam divides by sqrt(v): where a gradient element is at the level of the
         * rounding noise of the gradients (below GRAD_RTOL of its tensor's largest;
         * all of the key bias, whose true gradient is 0) an update of up to lr in
         * either direction is legitimate on both sides. Elsewhere: 2e-6. */
        float gmax = max_abs(gref, count);
        for (size_t e = 0; e < count; e++) {
            int noise = fabsf(gref[e]) <= GRAD_RTOL * gmax || gmax < GRAD_TINY;
            float d = fabsf(ours[e] - ref[e]), tol = noise ? (float)(2 * lr_sum) : 2e-6f;
            if (!(d <= tol))
                fail_msg("%s: %s[%zu] after %d AdamW steps is %.8g, torch %.8g (gradient %g "
                         "of max %g; tolerance %g)", model, ps[i].name, e, steps, ours[e],
                         ref[e], gref[e], gmax, tol);
            if (noise)
                noisy++;
            else if (d > worst)
                worst = d;
        }
        free(ours);
        free(ref);
        free(gref);
    }
    printf("    %s: %d AdamW steps match torch; worst parameter difference %.2e (%zu "
           "noise-level gradient elements allowed up to 2 lr)\n", model, steps, worst, noisy);
    eng_trainer_free(t);
    eng_model_config_free(&cfg);
    golden_free(&g);
}

static void test_grad_bert_cls(void **s) { (void)s; check_grads("bert_cls"); }
static void test_grad_distilbert_cls(void **s) { (void)s; check_grads("distilbert_cls"); }
static void test_grad_bert_multilabel(void **s) { (void)s; check_grads("bert_cls_multilabel"); }
static void test_adamw_bert_cls(void **s) { (void)s; check_optimizer("bert_cls"); }
static void test_adamw_distilbert_cls(void **s) { (void)s; check_optimizer("distilbert_cls"); }
static void test_adamw_bert_multilabel(void **s) { (void)s; check_optimizer("bert_cls_multilabel"); }

TEST_GROUP(train_grad)
{
    static const struct CMUnitTest t[] = {
        cmocka_unit_test(test_grad_bert_cls),
        cmocka_unit_test(test_grad_distilbert_cls),
        cmocka_unit_test(test_grad_bert_multilabel),
        cmocka_unit_test(test_grad_accumulation),
        cmocka_unit_test(test_schedules),
        cmocka_unit_test(test_adamw_bert_cls),
        cmocka_unit_test(test_adamw_distilbert_cls),
        cmocka_unit_test(test_adamw_bert_multilabel),
    };
    TEST_GROUP_RETURN(t);
}
