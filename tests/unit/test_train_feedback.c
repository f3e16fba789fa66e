/* test_train_feedback.c - nlpd-train's issue-9 parts on the tiny models:
 * the feedback log reader (torn last line, bad lines, folders, newest label wins),
 * head-only training on a frozen encoder (the loss falls, the
 * encoder is unchanged, the saved folder gives the head's logits), the feedback mix
 * ratio and holdout, and the gate's rule. A finished model kept when it cannot be
 * put in place is test_checkpoint.c; the repository side (the gate refusing and
 * publishing, watch) is tests/cli/train.sh. */
#include "test_util.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cJSON.h>

#include "feedback.h"
#include "finetune.h"
#include "nlpd_engine.h"

static char tmpdir[256];

static int setup(void **s)
{
    (void)s;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/nlpd_train_fb_XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **s)
{
    (void)s;
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* ------------------------------------------------------------ the reader */

static void test_reader(void **s)
{
    (void)s;
    char dir[300];
    snprintf(dir, sizeof dir, "%s/fb", tmpdir);
    assert_int_equal(mkdir(dir, 0755), 0);
    /* instance a: two items, a bad line, then a torn last line (no newline) */
    write_file(tu_path("%s/host-1-100.jsonl", dir),
               "{\"time\": 1000, \"model\": \"m\", \"version\": \"v1\", \"text\": \"alpha\", "
               "\"label\": \"pos\"}\n"
               "{\"time\": 1001, \"model\": \"m\", \"version\": \"v1\", \"text\": \"beta\", "
               "\"label\": \"neg\", \"request_id\": \"r1\"}\n"
               "not json at all\n"
               "{\"time\": 1002, \"model\": \"m\", \"text\": \"no label\"}\n"
               "{\"time\": 1003, \"model\": \"m\", \"version\": \"v1\", \"text\": \"gam");
    /* instance b: relabels alpha later; an older beta that must lose */
    write_file(tu_path("%s/host-2-200.jsonl", dir),
               "{\"time\": 2000, \"model\": \"m\", \"version\": \"v1\", \"text\": \"alpha\", "
               "\"label\": \"neg\"}\n"
               "{\"time\": 900, \"model\": \"m\", \"version\": \"v1\", \"text\": \"beta\", "
               "\"label\": \"pos\"}\n");
    write_file(tu_path("%s/notes.txt", dir), "not a log\n");
    FILE *log = tmpfile();
    assert_non_null(log);
    const char *paths[] = {dir};
    trn_feedback fb = {0};
    eng_error err;
    assert_int_equal(trn_feedback_read(paths, 1, 0, NULL, log, &fb, &err), 0);
    assert_int_equal(fb.files, 2);
    assert_int_equal(fb.n, 4);
    assert_int_equal(fb.torn, 1);
    assert_int_equal(fb.bad, 2);
    assert_true(fb.max_time == 2000);
    trn_feedback_dedupe(&fb);
    assert_int_equal(fb.n, 2);
    assert_int_equal(fb.duplicates, 2);
    int a = trn_feedback_find(&fb, "alpha"), b = trn_feedback_find(&fb, "beta");
    assert_true(a >= 0 && b >= 0);
    assert_string_equal(fb.it[a].label, "neg"); /* the newer label */
    assert_string_equal(fb.it[b].label, "neg"); /* time 1001 beats time 900 */
    assert_int_equal(trn_feedback_find(&fb, "gam"), -1);
    trn_feedback_free(&fb);
    /* The skipped lines were reported as FILE:LINE. */
    rewind(log);
    char buf[4096] = {0};
    size_t got = fread(buf, 1, sizeof buf - 1, log);
    buf[got] = 0;
    fclose(log);
    assert_non_null(strstr(buf, "host-1-100.jsonl:5: torn last line"));
    assert_non_null(strstr(buf, "host-1-100.jsonl:3: not JSON"));
    /* Only items after a time: what watch counts as new. */
    trn_feedback nf = {0};
    assert_int_equal(trn_feedback_read(paths, 1, 1001, NULL, NULL, &nf, &err), 0);
    assert_int_equal(nf.n, 1);
    assert_int_equal(nf.older, 3);
    trn_feedback_free(&nf);
    /* A single log file works too; a missing path is an error naming it. */
    const char *one[] = {tu_path("%s/host-2-200.jsonl", dir)};
    assert_int_equal(trn_feedback_read(one, 1, 0, NULL, NULL, &nf, &err), 0);
    assert_int_equal(nf.n, 2);
    trn_feedback_free(&nf);
    const char *missing[] = {tu_path("%s/nowhere", tmpdir)};
    assert_int_equal(trn_feedback_read(missing, 1, 0, NULL, NULL, &nf, &err), ENG_EIO);
    assert_non_null(strstr(err.msg, "nowhere"));
    trn_feedback_free(&nf);
}

/* What watch reads at each check: a log that is unchanged and holds nothing newer
 * than the time asked for is not read again; a change or an earlier time reads it. */
static int read_cached(const char *dir, int64_t after, trn_fb_cache *c, trn_feedback *fb)
{
    const char *paths[] = {dir};
    eng_error err;
    trn_feedback_free(fb);
    memset(fb, 0, sizeof *fb);
    return trn_feedback_read(paths, 1, after, c, NULL, fb, &err);
}

static void test_feedback_read_cache(void **state)
{
    (void)state;
    const char *dir = tu_path("%s/fbcache", tmpdir);
    assert_int_equal(mkdir(dir, 0755), 0);
    char old[512], cur[512];
    snprintf(old, sizeof old, "%s/a.1.jsonl", dir);
    snprintf(cur, sizeof cur, "%s/a.jsonl", dir);
    write_file(old, "{\"time\": 1000, \"text\": \"x\", \"label\": \"pos\"}\n");
    write_file(cur, "{\"time\": 2000, \"text\": \"y\", \"label\": \"neg\"}\n");
    trn_fb_cache c = {0};
    trn_feedback fb = {0};
    assert_int_equal(read_cached(dir, 2000, &c, &fb), 0); /* first check: both read */
    assert_int_equal(fb.files, 2);
    assert_int_equal(fb.n, 0);
    assert_int_equal(read_cached(dir, 2000, &c, &fb), 0); /* nothing changed: none read */
    assert_int_equal(fb.files, 0);
    assert_int_equal(fb.unchanged, 2);
    assert_int_equal(read_cached(dir, 1500, &c, &fb), 0); /* an earlier time: the newer log */
    assert_int_equal(fb.files, 1);
    assert_int_equal(fb.unchanged, 1);
    assert_int_equal(fb.n, 1);
    FILE *f = fopen(cur, "a"); /* the daemon appends: read again, the new item counted */
    assert_non_null(f);
    fputs("{\"time\": 3000, \"text\": \"z\", \"label\": \"pos\"}\n", f);
    fclose(f);
    assert_int_equal(read_cached(dir, 2000, &c, &fb), 0);
    assert_int_equal(fb.files, 1);
    assert_int_equal(fb.n, 1);
    assert_string_equal(fb.it[0].text, "z");
    assert_int_equal(unlink(old), 0); /* a log that is gone is forgotten */
    assert_int_equal(read_cached(dir, 3000, &c, &fb), 0);
    assert_int_equal(c.n, 1);
    trn_feedback_free(&fb);
    trn_fb_cache_free(&c);
}

/* ----------------------------------------------------------------- runs */

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

/* n separable examples (as test_train_e2e): labels pos_name/neg_name; with flip the
 * labels are swapped (a contradiction of the usual data). feedback: log format. */
static void write_rows(const char *path, int n, uint64_t seed, const char *pos_name,
                       const char *neg_name, int feedback)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    for (int i = 0; i < n; i++) {
        int lab = i % 2, nw = 3 + (int)(lcg(&seed) % 6), at = (int)(lcg(&seed) % (uint64_t)(nw + 1));
        if (feedback)
            fprintf(f, "{\"time\": %d, \"model\": \"m\", \"version\": \"v1\", ", 1000 + i);
        fprintf(f, "%s\"text\": \"", feedback ? "" : "{");
        for (int w = 0; w <= nw; w++) {
            const char *word = w == at ? (lab ? POS : NEG)[lcg(&seed) % 8] : FILL[lcg(&seed) % 20];
            fprintf(f, "%s%s", w ? " " : "", word);
        }
        fprintf(f, " %d\", \"label\": \"%s\"}\n", i, lab ? pos_name : neg_name);
    }
    fclose(f);
}

static FILE *devnull(void)
{
    static FILE *f;
    if (!f)
        f = fopen("/dev/null", "w");
    return f;
}

/* Head-only on a frozen encoder: the encoder of tests/fixtures/train/tiny_trained
 * (a tiny BERT fine-tuned on this kind of data) with a new head for new label
 * names. The dev loss falls from chance, the encoder's tensors are unchanged, and
 * the saved folder, loaded for serving, gives the head's logits. */
static void test_head_only(void **s)
{
    (void)s;
    write_rows(tu_path("%s/train.jsonl", tmpdir), 200, 101, "good", "bad", 0);
    write_rows(tu_path("%s/dev.jsonl", tmpdir), 60, 202, "good", "bad", 0);
    char base[4096], train[300], dev[300], out[300];
    snprintf(base, sizeof base, "%s/tests/fixtures/train/tiny_trained", tu_root());
    snprintf(train, sizeof train, "%s/train.jsonl", tmpdir);
    snprintf(dev, sizeof dev, "%s/dev.jsonl", tmpdir);
    snprintf(out, sizeof out, "%s/head", tmpdir);
    trn_opts o;
    trn_opts_default(&o);
    o.base = base, o.train = train, o.dev = dev, o.out = out;
    o.head_only = 1;
    o.epochs = 20;
    o.lr = 2e-3f;
    o.batch_size = 16;
    o.max_length = 32;
    o.threads = 1;
    o.progress = TRN_PROGRESS_NONE;
    o.labels = "bad,good";
    o.log = devnull();
    trn_result r;
    eng_error err;
    if (trn_finetune(&o, &r, &err))
        fail_msg("%s", err.msg);
    printf("    head-only: loss %.4f -> %.4f, dev accuracy %.1f %%, dev loss %.4f, %ld steps\n",
           r.first_loss, r.last_loss, 100 * r.accuracy, r.dev_loss, r.steps);
    assert_true(r.first_loss > 0.5);   /* a new head starts at chance (ln 2 = 0.69) */
    assert_true(r.last_loss < 0.2);
    assert_true(r.dev_loss < 0.2);
    assert_true(r.accuracy >= 0.95);
    /* The encoder is the base's, bit for bit; the head is not. */
    eng_model *mb, *mn;
    assert_int_equal(eng_model_load(base, &mb, &err), 0);
    assert_int_equal(eng_model_load(out, &mn, &err), 0);
    assert_string_equal(eng_model_get_info(mn)->labels[1], "good");
    eng_ctx *ctx;
    eng_ctx_opts co = {.threads = 1};
    assert_int_equal(eng_ctx_new(&co, &ctx, &err), 0);
    const char *texts[3] = {"the film was wonderful", "a boring and dull story", "music day"};
    eng_encoding enc[3];
    const eng_encoding *ep[3];
    for (int i = 0; i < 3; i++) {
        eng_encoding_init(&enc[i]);
        assert_int_equal(eng_tokenizer_encode(eng_model_tokenizer(mn), texts[i], strlen(texts[i]),
                                              NULL, 0, 0, &enc[i], &err), 0);
        ep[i] = &enc[i];
    }
    int H = eng_model_get_info(mb)->hidden;
    float *hb = malloc(sizeof(float) * 64 * H), *hn = malloc(sizeof(float) * 64 * H);
    assert_int_equal(eng_run_hidden(ctx, mb, ep, 3, hb, &err), 0);
    assert_int_equal(eng_run_hidden(ctx, mn, ep, 3, hn, &err), 0);
    int ntok = enc[0].n + enc[1].n + enc[2].n;
    assert_true(memcmp(hb, hn, sizeof(float) * (size_t)ntok * H) == 0);
    /* Served logits = the head's logits on the cached [CLS] vectors. */
    float served[6], head[6], base_logits[6];
    assert_int_equal(eng_run_classify(ctx, mn, ep, 3, NULL, served, &err), 0);
    assert_int_equal(eng_run_classify(ctx, mb, ep, 3, NULL, base_logits, &err), 0);
    eng_train_opts eo;
    eng_train_opts_default(&eo);
    const char *labs[2] = {"bad", "good"};
    eo.num_labels = 2, eo.labels = labs, eo.head_only = 1, eo.threads = 1;
    eng_trainer *t;
    assert_int_equal(eng_trainer_new(out, &eo, &t, &err), 0);
    float feats[3 * 64];
    assert_true(eng_trainer_hidden(t) == H && H <= 64);
    assert_int_equal(eng_trainer_features(t, ep, 3, feats, &err), 0);
    for (int i = 0; i < 3; i++) /* the [CLS] row of the served encoder */
        assert_true(tu_max_abs_diff(feats + (size_t)i * H,
                                    hn + (size_t)(i == 0 ? 0 : i == 1 ? enc[0].n
                                                                      : enc[0].n + enc[1].n) * H,
                                    (size_t)H) < 1e-5f);
    assert_int_equal(eng_trainer_head_logits(t, feats, 3, head, &err), 0);
    assert_true(tu_max_abs_diff(served, head, 6) < 1e-5f);
    assert_true(tu_max_abs_diff(served, base_logits, 6) > 1e-3f); /* the head changed */
    assert_true(served[1] > served[0] && served[2] > served[3]); /* good, bad */
    eng_trainer_free(t);
    for (int i = 0; i < 3; i++)
        eng_encoding_free(&enc[i]);
    free(hb);
    free(hn);
    eng_ctx_free(ctx);
    eng_model_unref(mb);
    eng_model_unref(mn);
}

/* DistilBERT's head (pre_classifier + ReLU + classifier) through the same API on the
 * tiny distilbert_cls: the loss falls on a small set, the saved folder serves the
 * head's logits, and its encoder is the base's. */
static void test_head_only_distilbert(void **s)
{
    (void)s;
    char base[4096], out[300];
    snprintf(base, sizeof base, "%s/tests/fixtures/models/distilbert_cls", tu_root());
    snprintf(out, sizeof out, "%s/dhead", tmpdir);
    eng_train_opts eo;
    eng_train_opts_default(&eo);
    const char *labs[2] = {"no", "yes"};
    eo.num_labels = 2, eo.labels = labs, eo.head_only = 1, eo.threads = 1, eo.lr = 1e-2f;
    eo.dropout = 0, eo.total_steps = 300, eo.schedule = ENG_LR_CONSTANT;
    eng_trainer *t;
    eng_error err;
    if (eng_trainer_new(base, &eo, &t, &err))
        fail_msg("%s", err.msg);
    const char *texts[6] = {"yes indeed", "no way", "sure thing yes", "never no",
                            "absolutely yes", "no no no"};
    int32_t lab[6] = {1, 0, 1, 0, 1, 0};
    eng_encoding enc[6];
    const eng_encoding *ep[6];
    for (int i = 0; i < 6; i++) {
        eng_encoding_init(&enc[i]);
        assert_int_equal(eng_tokenizer_encode(eng_trainer_tokenizer(t), texts[i],
                                              strlen(texts[i]), NULL, 0, 0, &enc[i], &err), 0);
        ep[i] = &enc[i];
    }
    int H = eng_trainer_hidden(t);
    float *f = malloc(sizeof(float) * 6 * H);
    assert_non_null(f);
    assert_int_equal(eng_trainer_features(t, ep, 6, f, &err), 0);
    float first = 0, last = 0;
    for (int k = 0; k < 300; k++) {
        float loss;
        assert_int_equal(eng_trainer_head_backward(t, f, 6, lab, NULL, 1.0f, &loss, &err), 0);
        assert_int_equal(eng_trainer_step(t, NULL, &err), 0);
        if (k == 0)
            first = loss;
        last = loss;
    }
    printf("    head-only distilbert: loss %.4f -> %.4f\n", first, last);
    assert_true(last < 0.5f * first);
    float head[12], served[12], via_trainer[12];
    assert_int_equal(eng_trainer_head_logits(t, f, 6, head, &err), 0);
    assert_int_equal(eng_trainer_logits(t, ep, 6, via_trainer, &err), 0);
    assert_true(tu_max_abs_diff(head, via_trainer, 12) < 1e-5f);
    assert_int_equal(eng_trainer_save(t, out, NULL, 0, 0, &err), 0);
    eng_model *mb, *mn;
    eng_ctx *ctx;
    eng_ctx_opts co = {.threads = 1};
    assert_int_equal(eng_model_load(base, &mb, &err), 0);
    assert_int_equal(eng_model_load(out, &mn, &err), 0);
    assert_int_equal(eng_ctx_new(&co, &ctx, &err), 0);
    assert_int_equal(eng_run_classify(ctx, mn, ep, 6, NULL, served, &err), 0);
    assert_true(tu_max_abs_diff(head, served, 12) < 1e-5f);
    int ntok = 0;
    for (int i = 0; i < 6; i++)
        ntok += enc[i].n;
    float *hb = malloc(sizeof(float) * (size_t)ntok * H), *hn = malloc(sizeof(float) * (size_t)ntok * H);
    assert_int_equal(eng_run_hidden(ctx, mb, ep, 6, hb, &err), 0);
    assert_int_equal(eng_run_hidden(ctx, mn, ep, 6, hn, &err), 0);
    assert_true(memcmp(hb, hn, sizeof(float) * (size_t)ntok * H) == 0);
    free(hb);
    free(hn);
    free(f);
    for (int i = 0; i < 6; i++)
        eng_encoding_free(&enc[i]);
    eng_ctx_free(ctx);
    eng_model_unref(mb);
    eng_model_unref(mn);
    eng_trainer_free(t);
}

/* The mix: each epoch sees every feedback training item plus base_ratio times as
 * many base items; the holdout is a seeded 20 %; feedback relabels base rows. */
static void test_mix_and_holdout(void **s)
{
    (void)s;
    write_rows(tu_path("%s/train.jsonl", tmpdir), 40, 11, "positive", "negative", 0);
    write_rows(tu_path("%s/dev.jsonl", tmpdir), 10, 12, "positive", "negative", 0);
    write_rows(tu_path("%s/fb.jsonl", tmpdir), 20, 13, "positive", "negative", 1);
    /* Two base rows relabelled by the feedback (same text), one unknown label. */
    FILE *f = fopen(tu_path("%s/fb2.jsonl", tmpdir), "w");
    assert_non_null(f);
    char *train = tu_read_file(tu_path("%s/train.jsonl", tmpdir), NULL);
    cJSON *row = cJSON_Parse(train); /* the first row */
    assert_non_null(row);
    fprintf(f, "{\"time\": 5000, \"text\": \"%s\", \"label\": \"positive\"}\n",
            cJSON_GetObjectItem(row, "text")->valuestring);
    fprintf(f, "{\"time\": 5001, \"text\": \"something new\", \"label\": \"sideways\"}\n");
    cJSON_Delete(row);
    free(train);
    fclose(f);
    char base[4096], tr[300], dev[300], fb[300], fb2[300];
    snprintf(base, sizeof base, "%s/tests/fixtures/train/tiny_st_base", tu_root());
    snprintf(tr, sizeof tr, "%s/train.jsonl", tmpdir);
    snprintf(dev, sizeof dev, "%s/dev.jsonl", tmpdir);
    snprintf(fb, sizeof fb, "%s/fb.jsonl", tmpdir);
    snprintf(fb2, sizeof fb2, "%s/fb2.jsonl", tmpdir);
    const char *paths[2] = {fb, fb2};
    static const struct { double ratio; int per_epoch; } cases[] = {
        {1.0, 17}, {2.0, 34}, {0.0, 0}, {-1.0, 39}};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        char out[300];
        snprintf(out, sizeof out, "%s/mix%zu", tmpdir, k);
        trn_opts o;
        trn_opts_default(&o);
        o.base = base, o.train = tr, o.dev = dev, o.out = out;
        o.feedback = paths, o.n_feedback = 2;
        o.base_ratio = cases[k].ratio;
        o.epochs = 2, o.batch_size = 4, o.max_length = 32, o.threads = 1;
        o.progress = TRN_PROGRESS_NONE;
        o.labels = "negative,positive";
        o.log = devnull();
        trn_result r;
        eng_error err;
        if (trn_finetune(&o, &r, &err))
            fail_msg("%s", err.msg);
        /* 21 known feedback items (20 + the relabel): round(0.2 * 21) = 4 held aside. */
        assert_int_equal(r.feedback_holdout, 4);
        assert_int_equal(r.feedback_train, 17);
        assert_true(r.feedback_until == 5001);
        int epoch_n = 17 + cases[k].per_epoch;
        assert_int_equal(r.steps, 2 * ((epoch_n + 3) / 4));
        char *rec = tu_read_file(tu_path("%s/nlpd_train.json", out), NULL);
        cJSON *j = cJSON_Parse(rec);
        cJSON *fbj = cJSON_GetObjectItem(j, "feedback");
        assert_non_null(fbj);
        assert_int_equal(cJSON_GetObjectItem(fbj, "base_items_per_epoch")->valueint,
                         cases[k].per_epoch);
        assert_int_equal(cJSON_GetObjectItem(fbj, "base_items_relabelled")->valueint, 1);
        assert_int_equal(cJSON_GetObjectItem(fbj, "unknown_labels")->valueint, 1);
        cJSON_Delete(j);
        free(rec);
    }
    /* The holdout is seeded: the same seed holds the same items aside. Fraction 0
     * holds nothing aside. */
    char out[300];
    snprintf(out, sizeof out, "%s/nohold", tmpdir);
    trn_opts o;
    trn_opts_default(&o);
    o.base = base, o.train = tr, o.dev = dev, o.out = out;
    o.feedback = paths, o.n_feedback = 1;
    o.feedback_holdout = 0;
    o.epochs = 1, o.batch_size = 8, o.max_length = 32, o.threads = 1;
    o.progress = TRN_PROGRESS_NONE;
    o.log = devnull();
    trn_result r;
    eng_error err;
    if (trn_finetune(&o, &r, &err))
        fail_msg("%s", err.msg);
    assert_int_equal(r.feedback_holdout, 0);
    assert_int_equal(r.feedback_train, 20);
}

/* The gate's rule: not worse on dev by more than max_dev_drop points, strictly
 * better on the held-aside feedback; without feedback strictly better on dev. */
static void test_gate_rule(void **s)
{
    (void)s;
    trn_result r;
    memset(&r, 0, sizeof r);
    r.has_old = 1, r.feedback_holdout = 10;
    r.dev_old = 0.900, r.dev_new = 0.896, r.fb_old = 0.5, r.fb_new = 0.8;
    assert_int_equal(trn_gate_decide(&r, 1, 0.5), 1);  /* 0.4 points: allowed */
    r.dev_new = 0.894;
    assert_int_equal(trn_gate_decide(&r, 1, 0.5), 0);  /* 0.6 points: refused */
    assert_non_null(strstr(r.reason, "worse on dev"));
    assert_int_equal(trn_gate_decide(&r, 1, 1.0), 1);  /* configurable */
    r.dev_new = 0.95, r.fb_new = 0.5;
    assert_int_equal(trn_gate_decide(&r, 1, 0.5), 0);  /* equal on feedback: refused */
    assert_non_null(strstr(r.reason, "not better on the 10 held-aside"));
    r.feedback_holdout = 0, r.fb_new = 1.0;
    assert_int_equal(trn_gate_decide(&r, 1, 0.5), 0);  /* nothing held aside */
    assert_int_equal(trn_gate_decide(&r, 0, 0.5), 1);  /* no feedback: dev 0.90 -> 0.95 */
    r.dev_new = 0.9;
    assert_int_equal(trn_gate_decide(&r, 0, 0.5), 0);
    r.has_old = 0;
    assert_int_equal(trn_gate_decide(&r, 1, 0.5), 1);  /* the first version */
}

TEST_GROUP(train_feedback)
{
    static const struct CMUnitTest t[] = {
        cmocka_unit_test_setup_teardown(test_reader, setup, teardown),
        cmocka_unit_test_setup_teardown(test_feedback_read_cache, setup, teardown),
        cmocka_unit_test_setup_teardown(test_head_only, setup, teardown),
        cmocka_unit_test_setup_teardown(test_head_only_distilbert, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mix_and_holdout, setup, teardown),
        cmocka_unit_test(test_gate_rule),
    };
    TEST_GROUP_RETURN(t);
}
