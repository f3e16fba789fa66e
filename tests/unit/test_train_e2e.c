/* test_train_e2e.c - nlpd-train end to end: a short fine-tune of a tiny
 * sentence-transformers-layout BERT on a separable data set generated here must
 * lower the loss and reach >= 95 % dev accuracy; the published folder is complete
 * and loads; an interrupted run and a refused overwrite publish nothing; and
 * transformers' logits on a folder nlpd-train published (tests/fixtures/train/
 * tiny_trained, tests/reference/make_train_goldens.py) equal nlpd's. */
#include "test_util.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cJSON.h>

#include "finetune.h"
#include "nlpd_engine.h"

/* The word lists of tests/reference/make_train_goldens.py. */
static const char *const POS[] = {"excellent", "wonderful", "great", "superb",
                                  "delightful", "fantastic", "lovely", "brilliant"};
static const char *const NEG[] = {"terrible", "awful", "horrible", "boring",
                                  "dreadful", "bad", "poor", "dull"};
static const char *const FILL[] = {"the", "movie", "was", "plot", "actor", "film", "story",
                                   "and", "it", "a", "really", "very", "this", "acting",
                                   "music", "quite", "service", "food", "staff", "day"};

static uint64_t lcg(uint64_t *s)
{
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return *s >> 33;
}

/* n examples, alternately negative/positive: 3..8 filler words with one sentiment
 * word inserted somewhere. */
static void write_data(const char *path, int n, uint64_t seed)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    for (int i = 0; i < n; i++) {
        int lab = i % 2, nw = 3 + (int)(lcg(&seed) % 6), at = (int)(lcg(&seed) % (uint64_t)(nw + 1));
        fprintf(f, "{\"text\": \"");
        for (int w = 0; w <= nw; w++) {
            const char *word = w == at ? (lab ? POS : NEG)[lcg(&seed) % 8] : FILL[lcg(&seed) % 20];
            fprintf(f, "%s%s", w ? " " : "", word);
        }
        fprintf(f, "\", \"label\": \"%s\"}\n", lab ? "positive" : "negative");
    }
    fclose(f);
}

static char tmpdir[256];

static int setup(void **s)
{
    (void)s;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/nlpd_train_e2e_XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **s)
{
    (void)s;
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* Entries of dir whose name contains ".tmp-" (left-over temporary folders). */
static int temp_leftovers(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        n += strstr(e->d_name, ".tmp-") != NULL;
    closedir(d);
    return n;
}

static void base_opts(trn_opts *o, const char *out)
{
    static char base[4096], train[300], dev[300]; /* tu_path's buffers get reused */
    trn_opts_default(o);
    snprintf(base, sizeof base, "%s/tests/fixtures/train/tiny_st_base", tu_root());
    snprintf(train, sizeof train, "%s/train.jsonl", tmpdir);
    snprintf(dev, sizeof dev, "%s/dev.jsonl", tmpdir);
    o->base = base;
    o->train = train;
    o->dev = dev;
    o->out = out;
    o->epochs = 8;
    o->lr = 2e-3f;
    o->batch_size = 16;
    o->max_length = 32;
    o->seed = 11;
    o->threads = 2;
    o->progress = TRN_PROGRESS_NONE;
    o->eval_each_epoch = 0;
    static FILE *devnull;
    if (!devnull)
        devnull = fopen("/dev/null", "w");
    o->log = devnull;
}

static void test_finetune_separable(void **s)
{
    (void)s;
    write_data(tu_path("%s/train.jsonl", tmpdir), 200, 101);
    write_data(tu_path("%s/dev.jsonl", tmpdir), 60, 202);
    char out[300];
    snprintf(out, sizeof out, "%s/model", tmpdir);
    trn_opts o;
    base_opts(&o, out);
    trn_result r;
    eng_error err;
    if (trn_finetune(&o, &r, &err))
        fail_msg("%s", err.msg);
    printf("    tiny fine-tune: loss %.4f -> %.4f, dev accuracy %.1f %%, macro-F1 %.1f %%, %ld steps\n",
           r.first_loss, r.last_loss, 100 * r.accuracy, 100 * r.macro_f1, r.steps);
    assert_true(r.last_loss < 0.9 * r.first_loss);
    assert_true(r.accuracy >= 0.95);
    assert_int_equal(r.train_examples, 200);
    assert_int_equal(r.dev_examples, 60);
    /* The folder is complete, without the base's sentence-transformers modules. */
    static const char *const files[] = {"config.json", "model.safetensors", "tokenizer.json",
                                        "vocab.txt", "tokenizer_config.json",
                                        "special_tokens_map.json", "eval_results.json",
                                        "nlpd_train.json"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++)
        if (!tu_exists(tu_path("%s/%s", out, files[i])))
            fail_msg("%s missing from the published folder", files[i]);
    assert_false(tu_exists(tu_path("%s/modules.json", out)));
    assert_int_equal(temp_leftovers(tmpdir), 0);
    /* It loads as a classifier with the data's labels, and classifies. */
    eng_model *m;
    eng_ctx *ctx;
    assert_int_equal(eng_model_load(out, &m, &err), 0);
    const eng_model_info *info = eng_model_get_info(m);
    assert_string_equal(info->architecture, "BertForSequenceClassification");
    assert_int_equal(info->num_labels, 2);
    assert_string_equal(info->labels[0], "negative");
    assert_string_equal(info->labels[1], "positive");
    eng_ctx_opts co = {.threads = 1};
    assert_int_equal(eng_ctx_new(&co, &ctx, &err), 0);
    const char *texts[2] = {"the film was wonderful", "a boring and dull story"};
    eng_encoding enc[2];
    const eng_encoding *ep[2];
    for (int i = 0; i < 2; i++) {
        eng_encoding_init(&enc[i]);
        assert_int_equal(eng_tokenizer_encode(eng_model_tokenizer(m), texts[i], strlen(texts[i]),
                                              NULL, 0, 0, &enc[i], &err), 0);
        ep[i] = &enc[i];
    }
    float probs[4];
    assert_int_equal(eng_run_classify(ctx, m, ep, 2, probs, NULL, &err), 0);
    assert_true(probs[1] > 0.5f && probs[2] > 0.5f);
    for (int i = 0; i < 2; i++)
        eng_encoding_free(&enc[i]);
    eng_ctx_free(ctx);
    eng_model_unref(m);
    /* The metrics file holds what the run reported. */
    char *text = tu_read_file(tu_path("%s/eval_results.json", out), NULL);
    cJSON *j = cJSON_Parse(text);
    assert_non_null(j);
    assert_true(fabs(cJSON_GetObjectItem(j, "accuracy")->valuedouble - r.accuracy) < 1e-9);
    assert_non_null(cJSON_GetObjectItem(j, "confusion"));
    cJSON_Delete(j);
    free(text);

    /* Without --force an existing folder is refused and left as it was. */
    o.epochs = 1;
    assert_int_not_equal(trn_finetune(&o, &r, &err), 0);
    assert_non_null(strstr(err.msg, "already exists"));
    assert_true(tu_exists(tu_path("%s/model.safetensors", out)));
    assert_int_equal(temp_leftovers(tmpdir), 0);
    /* With it, the folder is replaced atomically. */
    o.force = 1;
    if (trn_finetune(&o, &r, &err))
        fail_msg("%s", err.msg);
    assert_true(tu_exists(tu_path("%s/config.json", out)));
    assert_int_equal(temp_leftovers(tmpdir), 0);
}

/* The same seed gives the same model, bit for bit; another seed another one. */
static void test_reproducible(void **s)
{
    (void)s;
    write_data(tu_path("%s/train.jsonl", tmpdir), 64, 7);
    write_data(tu_path("%s/dev.jsonl", tmpdir), 16, 8);
    char out[3][300];
    for (int i = 0; i < 3; i++) {
        snprintf(out[i], sizeof out[i], "%s/run%d", tmpdir, i);
        trn_opts o;
        base_opts(&o, out[i]);
        o.epochs = 2;
        o.seed = i == 2 ? 12 : 11;
        trn_result r;
        eng_error err;
        if (trn_finetune(&o, &r, &err))
            fail_msg("%s", err.msg);
    }
    size_t n0, n1, n2;
    char *a = tu_read_file(tu_path("%s/model.safetensors", out[0]), &n0);
    char *b = tu_read_file(tu_path("%s/model.safetensors", out[1]), &n1);
    char *c = tu_read_file(tu_path("%s/model.safetensors", out[2]), &n2);
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(c);
    assert_true(n0 == n1 && memcmp(a, b, n0) == 0);
    assert_true(n0 == n2 && memcmp(a, c, n0) != 0);
    free(a), free(b), free(c);
}

/* An interrupted run publishes nothing and leaves no temporary folder. */
static void test_interrupted(void **s)
{
    (void)s;
    write_data(tu_path("%s/train.jsonl", tmpdir), 40, 5);
    write_data(tu_path("%s/dev.jsonl", tmpdir), 10, 6);
    char out[300];
    snprintf(out, sizeof out, "%s/interrupted", tmpdir);
    trn_opts o;
    base_opts(&o, out);
    volatile sig_atomic_t stop = 1;
    o.stop = &stop;
    trn_result r;
    eng_error err;
    assert_int_not_equal(trn_finetune(&o, &r, &err), 0);
    assert_non_null(strstr(err.msg, "interrupted"));
    assert_false(tu_exists(out));
    assert_int_equal(temp_leftovers(tmpdir), 0);
}

/* A temporary folder left by a dead process is cleaned up by the next publish. */
static void test_stale_temp_removed(void **s)
{
    (void)s;
    char stale[400];
    /* pid 2^22 + 1 exceeds Linux's pid_max limit: never a live process */
    snprintf(stale, sizeof stale, "%s/.pub.tmp-4194305-abcdef", tmpdir);
    assert_int_equal(mkdir(stale, 0755), 0);
    FILE *f = fopen(tu_path("%s/half-written", stale), "w");
    assert_non_null(f);
    fclose(f);
    eng_ckpt *c;
    eng_error err;
    assert_int_equal(eng_ckpt_begin(tu_path("%s/pub", tmpdir), &c, &err), 0);
    assert_false(tu_exists(stale));
    assert_int_equal(eng_ckpt_write(c, "sub/a.txt", "hello", 5, &err), 0);
    assert_int_equal(eng_ckpt_commit(c, 0, &err), 0);
    char *t = tu_read_file(tu_path("%s/pub/sub/a.txt", tmpdir), NULL);
    assert_string_equal(t, "hello");
    free(t);
    assert_int_equal(temp_leftovers(tmpdir), 0);
}

/* transformers loads a folder nlpd-train published and computes these logits. */
static void test_transformers_parity(void **s)
{
    (void)s;
    const char *dir = tu_path("%s/tests/fixtures/train/tiny_trained", tu_root());
    char *text = tu_read_file(tu_path("%s/golden.json", dir), NULL);
    assert_non_null(text);
    cJSON *g = cJSON_Parse(text);
    free(text);
    assert_non_null(g);
    eng_model *m;
    eng_ctx *ctx;
    eng_error err;
    if (eng_model_load(dir, &m, &err))
        fail_msg("%s", err.msg);
    eng_ctx_opts co = {.threads = 1};
    assert_int_equal(eng_ctx_new(&co, &ctx, &err), 0);
    int L = eng_model_get_info(m)->num_labels;
    float worst = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(g, "cases")) {
        const char *t = cJSON_GetObjectItem(c, "text")->valuestring;
        eng_encoding e;
        eng_encoding_init(&e);
        assert_int_equal(eng_tokenizer_encode(eng_model_tokenizer(m), t, strlen(t), NULL, 0, 0,
                                              &e, &err), 0);
        const cJSON *ids = cJSON_GetObjectItem(c, "ids");
        assert_int_equal(cJSON_GetArraySize(ids), e.n);
        for (int i = 0; i < e.n; i++)
            assert_int_equal(cJSON_GetArrayItem(ids, i)->valueint, e.ids[i]);
        float logits[8], probs[8];
        const eng_encoding *ep = &e;
        assert_int_equal(eng_run_classify(ctx, m, &ep, 1, probs, logits, &err), 0);
        for (int i = 0; i < L; i++) {
            float d = fabsf(logits[i] -
                            (float)cJSON_GetArrayItem(cJSON_GetObjectItem(c, "logits"), i)->valuedouble);
            worst = d > worst ? d : worst;
        }
        eng_encoding_free(&e);
    }
    printf("    tiny_trained: nlpd vs transformers logits max |diff| %.2e\n", worst);
    assert_true(worst <= 1e-4f);
    eng_ctx_free(ctx);
    eng_model_unref(m);
    cJSON_Delete(g);
}

TEST_GROUP(train_e2e)
{
    static const struct CMUnitTest t[] = {
        cmocka_unit_test_setup_teardown(test_finetune_separable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reproducible, setup, teardown),
        cmocka_unit_test_setup_teardown(test_interrupted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stale_temp_removed, setup, teardown),
        cmocka_unit_test(test_transformers_parity),
    };
    TEST_GROUP_RETURN(t);
}
