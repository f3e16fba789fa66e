/* test_server_batcher.c - the dynamic batcher and model slot (server/batcher.h,
 * server/model_slot.h) on the tiny fixture models: results equal direct engine
 * calls bitwise whatever the batch (see expect_same), batch formation (budget with padding, size,
 * length order, FIFO), max_delay, deadlines, cancellation, queue bound, stop
 * with and without drain, hot swap and per-job failure isolation.
 *
 * Deterministic batching uses a "gate" job: its client_gone() callback (called
 * on the worker before compute) blocks until the test releases it, so every job
 * submitted meanwhile is queued together. All waits are on conditions, bounded. */
#include "test_util.h"

#include <math.h>
#include <stdatomic.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <dirent.h>
#include <unistd.h>

#include "batcher.h"
#include "buf.h"
#include "server.h"
#include "config.h"
#include "handlers.h"
#include "model_slot.h"
#include "nlpd_engine.h"

#define WAIT_S 20 /* bound on every wait; reaching it fails the test */
#define MAXE 4    /* encodings per test job */

/* ---------------------------------------------------------------- helpers */

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

typedef struct tctx {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
    srv_job *order[512]; /* completion order */
    int nb;              /* on_batch records */
    int b_seqs[512], b_tok[512];
    int gate_entered, gate_released;
    eng_model *m; /* the model new jobs run on */
} tctx;

typedef struct tjob {
    srv_job job;
    tctx *t;
    int gone;
    int is_gate;
    int completions;
    int tag;
    eng_translate_opts topts; /* translate jobs: their search */
    eng_encoding enc[MAXE];
} tjob;

static void tctx_init(tctx *t)
{
    memset(t, 0, sizeof *t);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->cv, &ca);
    pthread_condattr_destroy(&ca);
}

static void tctx_close(tctx *t)
{
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->cv);
}

/* Wait (bounded) until *v >= want under t->mu; 1 if reached. */
static int wait_for(tctx *t, const int *v, int want)
{
    int64_t until = mono_ns() + (int64_t)WAIT_S * 1000000000;
    struct timespec ts = {.tv_sec = until / 1000000000, .tv_nsec = until % 1000000000};
    pthread_mutex_lock(&t->mu);
    while (*v < want && pthread_cond_timedwait(&t->cv, &t->mu, &ts) == 0)
        ;
    int ok = *v >= want;
    pthread_mutex_unlock(&t->mu);
    return ok;
}

static void on_complete(srv_job *job, void *arg)
{
    tjob *j = arg;
    tctx *t = j->t;
    pthread_mutex_lock(&t->mu);
    j->completions++;
    if (t->done < 512)
        t->order[t->done] = job;
    t->done++;
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
}

static int client_gone(void *arg)
{
    tjob *j = arg;
    if (!j->is_gate)
        return j->gone;
    tctx *t = j->t;
    pthread_mutex_lock(&t->mu);
    t->gate_entered = 1;
    pthread_cond_broadcast(&t->cv);
    int64_t until = mono_ns() + (int64_t)WAIT_S * 1000000000;
    struct timespec ts = {.tv_sec = until / 1000000000, .tv_nsec = until % 1000000000};
    while (!t->gate_released && pthread_cond_timedwait(&t->cv, &t->mu, &ts) == 0)
        ;
    pthread_mutex_unlock(&t->mu);
    return 0;
}

static void gate_release(tctx *t)
{
    pthread_mutex_lock(&t->mu);
    t->gate_released = 1;
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
}

static void on_batch(void *arg, int seqs, int tokens, int64_t ns)
{
    (void)ns;
    tctx *t = arg;
    pthread_mutex_lock(&t->mu);
    if (t->nb < 512) {
        t->b_seqs[t->nb] = seqs;
        t->b_tok[t->nb] = tokens;
    }
    t->nb++;
    pthread_mutex_unlock(&t->mu);
}

/* [CLS] len-2 word ids [SEP], ids derived from seed. */
static void make_enc(eng_encoding *e, int len, int seed)
{
    eng_encoding_init(e);
    assert_int_equal(eng_encoding_push(e, 101, 0, -1, 0, 0), 0);
    for (int i = 0; i < len - 2; i++)
        assert_int_equal(eng_encoding_push(e, 1000 + (seed * 7919 + i * 131) % 28000, 0, 0, 0, 0),
                         0);
    assert_int_equal(eng_encoding_push(e, 102, 0, -1, 0, 0), 0);
}

static tjob *job_new(tctx *t, const srv_job_type *kind, int n, const int *lens, int seed)
{
    tjob *j = calloc(1, sizeof *j);
    assert_non_null(j);
    j->t = t;
    for (int i = 0; i < n; i++)
        make_enc(&j->enc[i], lens[i], seed * 10 + i);
    j->job.type = kind;
    j->job.model = t->m;
    j->job.n = n;
    j->job.enc = j->enc;
    j->job.client_gone = client_gone;
    j->job.complete = on_complete;
    j->job.arg = j;
    return j;
}

static tjob *job1(tctx *t, const srv_job_type *kind, int len, int seed)
{
    return job_new(t, kind, 1, &len, seed);
}

static void job_free(tjob *j)
{
    if (!j)
        return;
    srv_job_free_output(&j->job);
    for (int i = 0; i < MAXE; i++)
        eng_encoding_free(&j->enc[i]);
    free(j);
}

static eng_model *load(const char *name)
{
    eng_model *m = NULL;
    eng_error err = {0};
    int rc = eng_model_load(tu_path("%s/tests/fixtures/models/%s", tu_root(), name), &m, &err);
    if (rc)
        fail_msg("load %s: %s", name, err.msg);
    return m;
}

static const srv_job_type *kind_of(const eng_model *m)
{
    eng_task t = eng_model_get_info(m)->task;
    return t == ENG_TASK_CLASSIFY    ? &srv_job_classify
           : t == ENG_TASK_EMBED     ? &srv_job_embed
           : t == ENG_TASK_TRANSLATE ? &srv_job_translate
                                     : &srv_job_qa;
}

/* The job's expected out, each encoding run alone (layout as in batcher.h). */
static float *direct(eng_ctx *ctx, eng_model *m, const srv_job *job, size_t *len)
{
    const eng_model_info *info = eng_model_get_info(m);
    size_t ntok = 0;
    for (int i = 0; i < job->n; i++)
        ntok += (size_t)job->enc[i].n;
    size_t per = job->type == &srv_job_classify ? (size_t)info->num_labels : (size_t)info->hidden;
    *len = job->type == &srv_job_qa ? 2 * ntok : per * (size_t)job->n;
    float *out = malloc(*len * sizeof(float));
    assert_non_null(out);
    size_t off = 0;
    for (int i = 0; i < job->n; i++) {
        const eng_encoding *e = &job->enc[i];
        eng_error err = {0};
        int rc;
        if (job->type == &srv_job_classify)
            rc = eng_run_classify(ctx, m, &e, 1, out + i * per, NULL, &err);
        else if (job->type == &srv_job_embed)
            rc = eng_run_embed(ctx, m, &e, 1, out + i * per, &err);
        else
            rc = eng_run_qa_logits(ctx, m, &e, 1, out + off, out + ntok + off, &err);
        if (rc)
            fail_msg("direct run: %s", err.msg);
        off += (size_t)e->n;
    }
    return out;
}

/* Batching invariance, EXACT: the engine packs sequences without padding and
 * every CPU op computes a row (GEMM: one fixed summation order per element, a
 * function of K only; attention, norms, pooling: per sequence) independently of
 * its batch-mates, the row count and the thread split, so a job's result must be
 * bitwise the one of the job run alone (memcmp). A slicing mistake in the
 * batcher, or an M-dependent kernel choice in the backend, fails here. */
static float g_max_abs;       /* largest |diff| seen (0 when all were equal) */
static long g_bitwise, g_cmp; /* results equal bitwise / compared */

/* The job ran OK and its out equals the direct run bit for bit. */
static void expect_same(eng_ctx *ctx, eng_model *m, const srv_job *job)
{
    if (job->status != SRV_JOB_OK)
        fail_msg("job status %d (%s)", job->status, job->error);
    size_t len;
    float *want = direct(ctx, m, job, &len);
    assert_int_equal(job->out_len, len);
    float a = tu_max_abs_diff(job->out, want, len);
    int same = memcmp(job->out, want, len * sizeof(float)) == 0;
    g_cmp++;
    g_bitwise += same;
    g_max_abs = a > g_max_abs ? a : g_max_abs;
    if (!same)
        fail_msg("batched result differs from the direct run (max |diff| %g): batching must "
                 "be bitwise invisible", (double)a);
    free(want);
}

static eng_ctx *ctx_new(int threads)
{
    eng_ctx *ctx = NULL;
    eng_ctx_opts co = {.backend = "cpu", .threads = threads};
    assert_int_equal(eng_ctx_new(&co, &ctx, NULL), 0);
    return ctx;
}

typedef struct fixture {
    tctx t;
    srv_batcher *b;
    eng_model *m; /* the model jobs run on (and direct runs use) */
    eng_ctx *ctx;
    char mdir[64]; /* Marian: the linked model folder to remove ("" otherwise) */
} fixture;

static void fx_open(fixture *f, const char *model, srv_batch_opts *o)
{
    memset(f, 0, sizeof *f);
    tctx_init(&f->t);
    f->m = load(model);
    f->t.m = f->m;
    o->on_batch = on_batch;
    o->on_batch_arg = &f->t;
    if (o->threads_per_worker <= 0)
        o->threads_per_worker = 1;
    eng_error err = {0};
    int rc = srv_batcher_new(o, &f->b, &err);
    if (rc)
        fail_msg("batcher: %s", err.msg);
    f->ctx = ctx_new(1);
}

static void fx_close(fixture *f)
{
    srv_batcher_free(f->b);
    eng_model_unref(f->m);
    eng_ctx_free(f->ctx);
    tctx_close(&f->t);
    if (f->mdir[0]) {
        DIR *d = opendir(f->mdir);
        for (struct dirent *e; d && (e = readdir(d));)
            if (e->d_name[0] != '.')
                unlinkat(dirfd(d), e->d_name, 0);
        if (d)
            closedir(d);
        rmdir(f->mdir);
    }
}

/* Submit a gate job and wait until the worker holds it. */
static tjob *gate_hold(fixture *f)
{
    tjob *g = job1(&f->t, kind_of(f->m), 3, 999);
    g->is_gate = 1;
    assert_int_equal(srv_batcher_submit(f->b, &g->job), 0);
    assert_true(wait_for(&f->t, &f->t.gate_entered, 1));
    return g;
}

static void submit_ok(fixture *f, tjob *j) { assert_int_equal(srv_batcher_submit(f->b, &j->job), 0); }

static void submit_all(fixture *f, tjob **jobs, int n)
{
    for (int i = 0; i < n; i++)
        submit_ok(f, jobs[i]);
}

static void free_all(tjob **jobs, int n)
{
    for (int i = 0; i < n; i++)
        job_free(jobs[i]);
}

/* ------------------------------------------------------------------ tests */

static void test_model_slot(void **state)
{
    (void)state;
    eng_model *a = load("bert_cls"), *b = load("bert_cls_f16");
    srv_model_slot *s = srv_model_slot_new("sentiment");
    assert_non_null(s);
    assert_string_equal(srv_model_slot_name(s), "sentiment");
    assert_null(srv_model_slot_acquire(s)); /* nothing loaded yet */
    srv_version *va = srv_version_new(a, "2024-01"), *vb = srv_version_new(b, "2024-02");
    assert_non_null(va);
    assert_non_null(vb);
    srv_model_slot_swap(s, va);
    srv_version *r = srv_model_slot_acquire(s);
    assert_ptr_equal(r, va);
    assert_ptr_equal(r->model, a);
    assert_string_equal(r->name, "2024-01");
    srv_model_slot_swap(s, vb);
    srv_version *r2 = srv_model_slot_acquire(s);
    assert_ptr_equal(r2, vb);
    assert_string_equal(r2->name, "2024-02");
    /* va stays alive on our reference after the swap dropped the slot's */
    assert_int_equal(r->info->task, ENG_TASK_CLASSIFY);
    assert_int_equal(atomic_load(&r->refs), 1);
    srv_version_unref(r); /* frees va and model a */
    srv_version_unref(r2);
    srv_model_slot_free(s);
}

/* One job with three real texts per task: same as direct engine calls. */
static void test_single_job_matches_direct(void **state)
{
    (void)state;
    const char *models[] = {"bert_cls", "bert_st", "bert_qa"};
    const char *texts[] = {"I loved it", "The service was terrible and slow.",
                           "Where is the café in Montréal?"};
    for (int k = 0; k < 3; k++) {
        srv_batch_opts o;
        srv_batch_opts_default(&o);
        fixture f;
        fx_open(&f, models[k], &o);
        tjob *j = calloc(1, sizeof *j);
        j->t = &f.t;
        const eng_tokenizer *tok = eng_model_tokenizer(f.m);
        for (int i = 0; i < 3; i++) {
            eng_encoding_init(&j->enc[i]);
            if (k == 2)
                assert_int_equal(eng_tokenizer_encode(tok, texts[i], strlen(texts[i]), texts[0],
                                                      strlen(texts[0]), 0, &j->enc[i], NULL),
                                 0);
            else
                assert_int_equal(eng_tokenizer_encode(tok, texts[i], strlen(texts[i]), NULL, 0,
                                                      0, &j->enc[i], NULL),
                                 0);
        }
        j->job.type = kind_of(f.m);
        j->job.model = f.m;
        j->job.n = 3;
        j->job.enc = j->enc;
        j->job.complete = on_complete;
        j->job.arg = j;
        submit_ok(&f, j);
        assert_true(wait_for(&f.t, &f.t.done, 1));
        expect_same(f.ctx, f.m, &j->job);
        assert_int_equal(j->job.batch_size, 3);
        assert_true(j->job.enqueued_ns <= j->job.started_ns);
        assert_true(j->job.started_ns <= j->job.finished_ns);
        assert_int_equal(j->completions, 1);
        job_free(j);
        fx_close(&f);
    }
}

typedef struct submitter {
    fixture *f;
    tjob **jobs;
    int from, to;
} submitter;

static void *submit_range(void *arg)
{
    submitter *s = arg;
    for (int i = s->from; i < s->to; i++)
        if (srv_batcher_submit(s->f->b, &s->jobs[i]->job) != 0)
            s->jobs[i]->completions = -1000; /* flagged; the test fails */
    return NULL;
}

/* 64 jobs of varied lengths from 4 threads, 2 workers: each result equals the
 * job run alone bitwise (see expect_same) for every task; batches did form. */
static void test_concurrent_invariance(void **state)
{
    (void)state;
    const char *models[] = {"bert_cls", "bert_st", "bert_qa"};
    enum { N = 64 };
    for (int k = 0; k < 3; k++) {
        srv_batch_opts o;
        srv_batch_opts_default(&o);
        o.workers = k == 2 ? 1 : 2; /* QA: one worker whose context has 2 threads */
        o.threads_per_worker = k == 2 ? 2 : 1;
        o.max_batch_tokens = 1024;
        o.max_delay_us = 5000;
        fixture f;
        fx_open(&f, models[k], &o);
        tjob *jobs[N];
        for (int i = 0; i < N; i++) {
            int n = 1 + i % 3, lens[3];
            for (int s = 0; s < n; s++)
                lens[s] = 3 + (i * 37 + s * 11) % 120;
            jobs[i] = job_new(&f.t, kind_of(f.m), n, lens, i);
        }
        pthread_t th[4];
        submitter sub[4];
        for (int t = 0; t < 4; t++) {
            sub[t] = (submitter){&f, jobs, t * N / 4, (t + 1) * N / 4};
            assert_int_equal(pthread_create(&th[t], NULL, submit_range, &sub[t]), 0);
        }
        for (int t = 0; t < 4; t++)
            pthread_join(th[t], NULL);
        assert_true(wait_for(&f.t, &f.t.done, N));
        int batched = 0;
        for (int i = 0; i < N; i++) {
            assert_int_equal(jobs[i]->completions, 1);
            expect_same(f.ctx, f.m, &jobs[i]->job);
            batched |= jobs[i]->job.batch_size > jobs[i]->job.n;
        }
        assert_true(batched);
        for (int b = 0; b < f.t.nb && b < 512; b++)
            assert_true(f.t.b_tok[b] <= o.max_batch_tokens);
        free_all(jobs, N);
        fx_close(&f);
    }
}

/* Budget 64 tokens with padding: the oldest job always goes, the others
 * shortest first while sequences x longest fits; batches run in length order. */
static void test_budget_padding_and_order(void **state)
{
    (void)state;
    srv_batch_opts o;
    srv_batch_opts_default(&o);
    o.max_batch_tokens = 64;
    o.max_delay_us = 0;
    fixture f;
    fx_open(&f, "bert_cls", &o);
    tjob *g = gate_hold(&f);
    const int lens[] = {30, 5, 20, 6, 7, 31, 8};
    enum { N = 7 };
    tjob *jobs[N];
    for (int i = 0; i < N; i++) {
        jobs[i] = job1(&f.t, &srv_job_classify, lens[i], i);
        submit_ok(&f, jobs[i]);
    }
    assert_int_equal(srv_batcher_queued_jobs(f.b), N);
    assert_int_equal(srv_batcher_queued_sequences(f.b), N);
    gate_release(&f.t);
    assert_true(wait_for(&f.t, &f.t.done, N + 1));
    /* Expected batches: {5,30} (2x30=60), {6,7,20} (3x20=60), {8,31} (2x31=62). */
    const int order[] = {5, 30, 6, 7, 20, 8, 31};
    const int bsize[] = {2, 2, 3, 3, 3, 2, 2};
    const int btok[] = {60, 60, 60, 60, 60, 62, 62};
    for (int i = 0; i < N; i++) {
        srv_job *j = f.t.order[i + 1];
        assert_int_equal(j->status, SRV_JOB_OK);
        assert_int_equal(j->max_len, order[i]);
        assert_int_equal(j->batch_size, bsize[i]);
        assert_int_equal(j->batch_tokens, btok[i]);
    }
    assert_int_equal(f.t.nb, 4); /* the gate's batch, then three */
    assert_int_equal(f.t.b_seqs[1], 2);
    assert_int_equal(f.t.b_tok[1], 60);
    assert_int_equal(f.t.b_seqs[2], 3);
    assert_int_equal(f.t.b_tok[3], 62);
    for (int i = 0; i < N; i++)
        expect_same(f.ctx, f.m, &jobs[i]->job);
    free_all(jobs, N);
    job_free(g);
    fx_close(&f);
}

/* max_batch_size 3: no batch has more; a 4-sequence job runs alone; a job
 * longer than the whole token budget runs alone too (never starves). */
static void test_max_batch_size_and_oversize(void **state)
{
    (void)state;
    srv_batch_opts o;
    srv_batch_opts_default(&o);
    o.max_batch_size = 3;
    o.max_batch_tokens = 100;
    o.max_delay_us = 0;
    fixture f;
    fx_open(&f, "bert_cls", &o);
    tjob *g = gate_hold(&f);
    enum { N = 12 };
    tjob *jobs[N];
    for (int i = 0; i < 10; i++)
        jobs[i] = job1(&f.t, &srv_job_classify, 4 + i, i);
    const int four[4] = {5, 5, 5, 5};
    jobs[10] = job_new(&f.t, &srv_job_classify, 4, four, 10);
    jobs[11] = job1(&f.t, &srv_job_classify, 120, 11);       /* 120 tokens > budget 100 */
    submit_all(&f, jobs, N);
    gate_release(&f.t);
    assert_true(wait_for(&f.t, &f.t.done, N + 1));
    for (int i = 0; i < 10; i++) {
        assert_true(jobs[i]->job.batch_size <= 3);
        assert_true(jobs[i]->job.batch_tokens <= 100);
    }
    assert_int_equal(jobs[10]->job.batch_size, 4); /* alone */
    assert_int_equal(jobs[11]->job.status, SRV_JOB_OK);
    assert_int_equal(jobs[11]->job.batch_size, 1);
    assert_int_equal(jobs[11]->job.batch_tokens, 120);
    for (int i = 0; i < N; i++) {
        expect_same(f.ctx, f.m, &jobs[i]->job);
        job_free(jobs[i]);
    }
    job_free(g);
    fx_close(&f);
}

/* FIFO fairness: under a queue of many short jobs the long old one is in the
 * very next batch (it is the oldest), not left behind. */
static void test_oldest_goes_first(void **state)
{
    (void)state;
    srv_batch_opts o;
    srv_batch_opts_default(&o);
    o.max_batch_tokens = 40;
    o.max_delay_us = 0;
    fixture f;
    fx_open(&f, "bert_cls", &o);
    tjob *g = gate_hold(&f);
    enum { N = 20 };
    tjob *jobs[N];
    jobs[0] = job1(&f.t, &srv_job_classify, 30, 0);
    for (int i = 1; i < N; i++)
        jobs[i] = job1(&f.t, &srv_job_classify, 4, i);
    submit_all(&f, jobs, N);
    gate_release(&f.t);
    assert_true(wait_for(&f.t, &f.t.done, N + 1));
    /* First batch after the gate: the 30-token job (alone: 2 x 30 > 40). */
    assert_ptr_equal(f.t.order[1], &jobs[0]->job);
    assert_int_equal(jobs[0]->job.batch_size, 1);
    free_all(jobs, N);
    job_free(g);
    fx_close(&f);
}

/* A lone job is not held longer than max_delay_us; with max_delay 0 at once. */
static void test_lone_job_prompt(void **state)
{
    (void)state;
    const int delays[] = {0, 1000};
    for (int k = 0; k < 2; k++) {
        srv_batch_opts o;
        srv_batch_opts_default(&o);
        o.max_delay_us = delays[k];
        fixture f;
        fx_open(&f, "bert_cls", &o);
        tjob *j = job1(&f.t, &srv_job_classify, 8, 1);
        submit_ok(&f, j);
        assert_true(wait_for(&f.t, &f.t.done, 1));
        assert_int_equal(j->job.status, SRV_JOB_OK);
        int64_t waited = j->job.started_ns - j->job.enqueued_ns;
        /* the delay plus scheduling slack on a loaded 2-core machine */
        assert_true(waited < (int64_t)delays[k] * 1000 + 200 * 1000000LL);
        job_free(j);
        fx_close(&f);
    }
}

/* Jobs arriving within max_delay of the first are batched together; the batch
 * starts no earlier than the delay (the queue did not fill a batch). */
static void test_delay_collects_batch(void **state)
{
    (void)state;
    srv_batch_opts o;
    srv_batch_opts_default(&o);
    o.max_delay_us = 300 * 1000;
    fixture f;
    fx_open(&f, "bert_cls", &o);
    enum { N = 5 };
    tjob *jobs[N];
    for (int i = 0; i < N; i++)
        jobs[i] = job1(&f.t, &srv_job_classify, 5 + i, i);
    submit_all(&f, jobs, N);
    assert_true(wait_for(&f.t, &f.t.done, N));
    int64_t first = jobs[0]->job.enqueued_ns;
    if (jobs[N - 1]->job.enqueued_ns - first < 250 * 1000000LL) { /* submits were quick */
        assert_int_equal(f.t.nb, 1);
        assert_int_equal(f.t.b_seqs[0], N);
        assert_true(jobs[0]->job.started_ns - first >= 300 * 1000000LL);
    }
    for (int i = 0; i < N; i++) {
        expect_same(f.ctx, f.m, &jobs[i]->job);
        job_free(jobs[i]);
    }
    fx_close(&f);
}

/* With the server's "arriving" count: a lone job (nothing else on its way) runs at once
 * despite a 60 s max_delay; while a request is on its way the worker waits for it, and
 * the submit that brings the count back to 0 starts the batch with both jobs. */
static void test_arriving_count(void **state)
{
    (void)state;
    atomic_int arriving;
    atomic_init(&arriving, 0);
    srv_batch_opts o;
    srv_batch_opts_default(&o);
    o.max_delay_us = 60 * 1000 * 1000;
    o.arriving = &arriving;
    fixture f;
    fx_open(&f, "bert_cls", &o);
    tjob *a = job1(&f.t, &srv_job_classify, 8, 1);
    submit_ok(&f, a);
    assert_true(wait_for(&f.t, &f.t.done, 1));
    assert_true(a->job.started_ns - a->job.enqueued_ns < 200 * 1000000LL);
    /* one more is being parsed: the next job waits for it */
    atomic_store(&arriving, 1);
    tjob *b = job1(&f.t, &srv_job_classify, 7, 2), *c = job1(&f.t, &srv_job_classify, 6, 3);
    submit_ok(&f, b);
    struct timespec ts = {0, 150 * 1000000};
    nanosleep(&ts, NULL);
    pthread_mutex_lock(&f.t.mu);
    int done = f.t.done;
    pthread_mutex_unlock(&f.t.mu);
    assert_int_equal(done, 1); /* b still waits */
    atomic_store(&arriving, 0); /* as the server does just before it submits */
    submit_ok(&f, c);
    assert_true(wait_for(&f.t, &f.t.done, 3));
    assert_int_equal(f.t.nb, 2);
    assert_int_equal(f.t.b_seqs[1], 2);
    assert_true(c->job.started_ns - c->job.enqueued_ns < 200 * 1000000LL);
    job_free(a);
    job_free(b);
    job_free(c);
    fx_close(&f);
}

/* A queue that already fills a batch (max_batch_size) runs at once, without
 * the (here 60 s) delay. */
static void test_full_batch_no_wait(void **state)
{
    (void)state;
    srv_batch_opts o;
    srv_batch_opts_default(&o);
    o.max_delay_us = 60 * 1000 * 1000;
    o.max_batch_size = 4;
    fixture f;
    fx_open(&f, "bert_cls", &o);
    tjob *jobs[4];
    for (int i = 0; i < 4; i++) {
        jobs[i] = job1(&f.t, &srv_job_classify, 6, i);
        submit_ok(&f, jobs[i]);
    }
    assert_true(wait_for(&f.t, &f.t.done, 4));
    assert_int_equal(f.t.b_seqs[0], 4);
    free_all(jobs, 4);
    fx_close(&f);
}

/* Deadline passed while queued: EXPIRED, no compute, no model reference. */
static void test_deadline_expired(void **state)
{
    (void)state;
    srv_batch_opts o;
    srv_batch_opts_default(&o);
    o.max_delay_us = 0;
    fixture f;
    fx_open(&f, "bert_cls", &o);
    tjob *g = gate_hold(&f);
    tjob *late = job1(&f.t, &srv_job_classify, 6, 1), *past = job1(&f.t, &srv_job_classify, 6, 2);
    tjob *ok = job1(&f.t, &srv_job_classify, 6, 3);
    late->job.deadline_ns = mono_ns() + 20 * 1000000LL;
    past->job.deadline_ns = mono_ns() - 1;
    ok->job.deadline_ns = mono_ns() + 60 * 1000000000LL;
    submit_ok(&f, late);
    submit_ok(&f, past);
    submit_ok(&f, ok);
    while (mono_ns() < late->job.deadline_ns) { /* wait for the condition: deadline passed */
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    gate_release(&f.t);
    assert_true(wait_for(&f.t, &f.t.done, 4));
    assert_int_equal(late->job.status, SRV_JOB_EXPIRED);
    assert_int_equal(past->job.status, SRV_JOB_EXPIRED);
    assert_null(late->job.out);
    assert_int_equal(ok->job.status, SRV_JOB_OK);
    assert_int_equal(ok->job.batch_size, 1); /* the expired ones were not computed */
    assert_int_equal(f.t.nb, 2);             /* gate + ok */
    job_free(late);
    job_free(past);
    job_free(ok);
    job_free(g);
    fx_close(&f);
}

/* client_gone: CANCELLED without compute; the batch-mate still runs. */
static void test_client_gone(void **state)
{
    (void)state;
    srv_batch_opts o;
    srv_batch_opts_default(&o);
    o.max_delay_us = 0;
    fixture f;
    fx_open(&f, "bert_cls", &o);
    tjob *g = gate_hold(&f);
    tjob *gone = job1(&f.t, &srv_job_classify, 6, 1), *ok = job1(&f.t, &srv_job_classify, 7, 2);
    gone->gone = 1;
    submit_ok(&f, gone);
    submit_ok(&f, ok);
    gate_release(&f.t);
    assert_true(wait_for(&f.t, &f.t.done, 3));
    assert_int_equal(gone->job.status, SRV_JOB_CANCELLED);
    assert_null(gone->job.out);
    assert_int_equal(ok->job.status, SRV_JOB_OK);
    assert_int_equal(ok->job.batch_size, 1);
    assert_int_equal(f.t.nb, 2);
    expect_same(f.ctx, f.m, &ok->job);
    job_free(gone);
    job_free(ok);
    job_free(g);
    fx_close(&f);
}

/* queue_capacity 4 sequences: the 5th is refused (never completed), the
 * queued ones run. */
static void test_queue_full(void **state)
{
    (void)state;
    srv_batch_opts o;
    srv_batch_opts_default(&o);
    o.max_delay_us = 0;
    o.queue_capacity = 4;
    fixture f;
    fx_open(&f, "bert_cls", &o);
    tjob *g = gate_hold(&f);
    const int lens[2] = {5, 6};
    tjob *a = job_new(&f.t, &srv_job_classify, 2, lens, 1), *b = job_new(&f.t, &srv_job_classify, 2, lens, 2);
    tjob *c = job1(&f.t, &srv_job_classify, 6, 3);
    submit_ok(&f, a);
    submit_ok(&f, b);
    assert_int_equal(srv_batcher_submit(f.b, &c->job), SRV_EQUEUE_FULL);
    assert_int_equal(srv_batcher_queued_sequences(f.b), 4);
    assert_int_equal(srv_batcher_queued_jobs(f.b), 2);
    gate_release(&f.t);
    assert_true(wait_for(&f.t, &f.t.done, 3));
    assert_int_equal(srv_batcher_queued_sequences(f.b), 0);
    assert_int_equal(c->completions, 0);
    assert_int_equal(a->job.status, SRV_JOB_OK);
    assert_int_equal(b->job.status, SRV_JOB_OK);
    /* room again */
    submit_ok(&f, c);
    assert_true(wait_for(&f.t, &f.t.done, 4));
    assert_int_equal(c->job.status, SRV_JOB_OK);
    job_free(a);
    job_free(b);
    job_free(c);
    job_free(g);
    fx_close(&f);
}

/* Stop with drain runs every queued job (without waiting for the 60 s delay);
 * submit after stop is refused. */
static void test_stop_drain(void **state)
{
    (void)state;
    srv_batch_opts o;
    srv_batch_opts_default(&o);
    o.max_delay_us = 60 * 1000 * 1000;
    fixture f;
    fx_open(&f, "bert_cls", &o);
    enum { N = 10 };
    tjob *jobs[N];
    for (int i = 0; i < N; i++) {
        jobs[i] = job1(&f.t, &srv_job_classify, 4 + 3 * i, i);
        submit_ok(&f, jobs[i]);
    }
    srv_batcher_stop(f.b, 1, 0);
    assert_int_equal(f.t.done, N);
    for (int i = 0; i < N; i++) {
        assert_int_equal(jobs[i]->completions, 1);
        expect_same(f.ctx, f.m, &jobs[i]->job);
    }
    tjob *late = job1(&f.t, &srv_job_classify, 5, 99);
    assert_int_equal(srv_batcher_submit(f.b, &late->job), SRV_ESTOPPED);
    srv_batcher_stop(f.b, 1, 0); /* again: nothing happens */
    assert_int_equal(late->completions, 0);
    free_all(jobs, N);
    job_free(late);
    fx_close(&f);
}

static void *stop_thread(void *arg)
{
    srv_batcher_stop(arg, 0, 0);
    return NULL;
}

/* Stop without drain: queued jobs complete with SHUTDOWN at once (while a
 * batch is still in flight), the in-flight one finishes normally. */
static void test_stop_no_drain(void **state)
{
    (void)state;
    srv_batch_opts o;
    srv_batch_opts_default(&o);
    o.max_delay_us = 0;
    fixture f;
    fx_open(&f, "bert_cls", &o);
    tjob *g = gate_hold(&f);
    enum { N = 10 };
    tjob *jobs[N];
    for (int i = 0; i < N; i++) {
        jobs[i] = job1(&f.t, &srv_job_classify, 5, i);
        submit_ok(&f, jobs[i]);
    }
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, stop_thread, f.b), 0);
    assert_true(wait_for(&f.t, &f.t.done, N)); /* the queued ones, gate still held */
    for (int i = 0; i < N; i++) {
        assert_int_equal(jobs[i]->job.status, SRV_JOB_SHUTDOWN);
        assert_null(jobs[i]->job.out);
    }
    gate_release(&f.t);
    pthread_join(th, NULL);
    assert_int_equal(f.t.done, N + 1);
    assert_int_equal(g->job.status, SRV_JOB_OK);
    tjob *late = job1(&f.t, &srv_job_classify, 5, 99);
    assert_int_equal(srv_batcher_submit(f.b, &late->job), SRV_ESTOPPED);
    free_all(jobs, N);
    job_free(late);
    job_free(g);
    fx_close(&f);
}

typedef struct stop_args {
    srv_batcher *b;
    int drain;
    int64_t deadline;
} stop_args;

static void *stop_thread_args(void *arg)
{
    stop_args *a = arg;
    srv_batcher_stop(a->b, a->drain, a->deadline);
    return NULL;
}

/* Drain bounded by a deadline: while the worker is busy past the deadline,
 * what is still queued gets SHUTDOWN; nothing is lost. */
static void test_stop_drain_deadline(void **state)
{
    (void)state;
    srv_batch_opts o;
    srv_batch_opts_default(&o);
    o.max_delay_us = 0;
    fixture f;
    fx_open(&f, "bert_cls", &o);
    tjob *g = gate_hold(&f);
    tjob *j = job1(&f.t, &srv_job_classify, 5, 1);
    submit_ok(&f, j);
    stop_args a = {f.b, 1, mono_ns() + 50 * 1000000LL};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, stop_thread_args, &a), 0);
    assert_true(wait_for(&f.t, &f.t.done, 1)); /* j, flushed at the deadline */
    assert_int_equal(j->job.status, SRV_JOB_SHUTDOWN);
    assert_true(mono_ns() >= a.deadline);
    gate_release(&f.t);
    pthread_join(th, NULL);
    assert_int_equal(g->job.status, SRV_JOB_OK);
    assert_int_equal(f.t.done, 2);
    job_free(j);
    job_free(g);
    fx_close(&f);
}

/* Hot swap: each job runs on the model version it names, and jobs of two
 * versions never share a batch, even when queued together. */
static void test_model_swap(void **state)
{
    (void)state;
    srv_batch_opts o;
    srv_batch_opts_default(&o);
    o.max_delay_us = 0;
    fixture f;
    fx_open(&f, "bert_cls", &o);
    eng_model *m2 = load("bert_cls_f16");
    tjob *g = gate_hold(&f);
    tjob *a = job1(&f.t, &srv_job_classify, 9, 1), *b = job1(&f.t, &srv_job_classify, 9, 1);
    tjob *c = job1(&f.t, &srv_job_classify, 9, 2);
    b->job.model = m2;
    submit_ok(&f, a);
    submit_ok(&f, b);
    submit_ok(&f, c);
    gate_release(&f.t);
    assert_true(wait_for(&f.t, &f.t.done, 4));
    expect_same(f.ctx, f.m, &a->job);
    expect_same(f.ctx, m2, &b->job);
    expect_same(f.ctx, f.m, &c->job);
    assert_int_equal(a->job.batch_size, 2); /* a and c: version 1 */
    assert_int_equal(c->job.batch_size, 2);
    assert_int_equal(b->job.batch_size, 1); /* b alone: version 2 */
    job_free(a);
    job_free(b);
    job_free(c);
    job_free(g);
    eng_model_unref(m2);
    fx_close(&f);
}

/* A job with a token id outside the vocabulary fails alone (422-style
 * ENG_EINVAL); its batch-mates get their results. */
static void test_bad_job_isolated(void **state)
{
    (void)state;
    srv_batch_opts o;
    srv_batch_opts_default(&o);
    o.max_delay_us = 0;
    fixture f;
    fx_open(&f, "bert_cls", &o);
    tjob *g = gate_hold(&f);
    tjob *jobs[4];
    for (int i = 0; i < 4; i++)
        jobs[i] = job1(&f.t, &srv_job_classify, 6 + i, i);
    jobs[2]->enc[0].ids[2] = 999999;
    submit_all(&f, jobs, 4);
    gate_release(&f.t);
    assert_true(wait_for(&f.t, &f.t.done, 5));
    assert_int_equal(jobs[2]->job.status, SRV_JOB_FAILED);
    assert_int_equal(jobs[2]->job.error_code, ENG_EINVAL);
    assert_non_null(strstr(jobs[2]->job.error, "vocabulary"));
    assert_null(jobs[2]->job.out);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(jobs[i]->completions, 1);
        if (i != 2)
            expect_same(f.ctx, f.m, &jobs[i]->job);
    }
    free_all(jobs, 4);
    job_free(g);
    fx_close(&f);
}

/* A job of the wrong kind for the model fails with ENG_EINVAL, no crash. */
static void test_wrong_task(void **state)
{
    (void)state;
    srv_batch_opts o;
    srv_batch_opts_default(&o);
    o.max_delay_us = 0;
    fixture f;
    fx_open(&f, "bert_st", &o);
    tjob *j = job1(&f.t, &srv_job_qa, 6, 1);
    submit_ok(&f, j);
    assert_true(wait_for(&f.t, &f.t.done, 1));
    assert_int_equal(j->job.status, SRV_JOB_FAILED);
    assert_int_equal(j->job.error_code, ENG_EINVAL);
    assert_null(j->job.out);
    tjob *bad = job1(&f.t, &srv_job_embed, 6, 1);
    bad->job.n = 0;
    assert_int_equal(srv_batcher_submit(f.b, &bad->job), ENG_EINVAL);
    job_free(j);
    job_free(bad);
    fx_close(&f);
}

/* ------------------------------------------------------------ translation */

/* A runnable Marian folder in f->mdir: tests/fixtures/marian/<model> plus the
 * shared OPUS-MT tokenizer files (not in the repository), linked. 0; the
 * tokenizer files are required (the test fails without them). */
static int marian_dir(fixture *f, const char *model)
{
    static const char *const files[] = {"config.json", "generation_config.json",
                                        "model.safetensors", "source.spm", "target.spm",
                                        "vocab.json", "tokenizer_config.json",
                                        "special_tokens_map.json"};
    char tok[4096], src[4200], dst[200];
    snprintf(tok, sizeof tok, "%s/tokenizers/opus-mt-tc-big-en-pt", tu_shared());
    tu_require(tu_path("%s/source.spm", tok), "the shared OPUS-MT tokenizer, NLPD_SHARED");
    snprintf(f->mdir, sizeof f->mdir, "/tmp/nlpd_batcher_mt_XXXXXX");
    assert_non_null(mkdtemp(f->mdir));
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        if (i < 3)
            snprintf(src, sizeof src, "%s/tests/fixtures/marian/%s/%s", tu_root(), model, files[i]);
        else
            snprintf(src, sizeof src, "%s/%s", tok, files[i]);
        char *abs = realpath(src, NULL);
        if (!abs)
            fail_msg("missing %s", src);
        snprintf(dst, sizeof dst, "%s/%s", f->mdir, files[i]);
        assert_int_equal(symlink(abs, dst), 0);
        free(abs);
    }
    return 0;
}

/* fx_open for a Marian fixture model; 0, or -1 (nothing opened) without the
 * shared tokenizer. */
static int fx_open_marian(fixture *f, const char *model, srv_batch_opts *o)
{
    memset(f, 0, sizeof *f);
    if (marian_dir(f, model))
        return -1;
    tctx_init(&f->t);
    eng_error err = {0};
    if (eng_model_load(f->mdir, &f->m, &err))
        fail_msg("load %s: %s", model, err.msg);
    f->t.m = f->m;
    o->on_batch = on_batch;
    o->on_batch_arg = &f->t;
    if (o->threads_per_worker <= 0)
        o->threads_per_worker = 1;
    if (srv_batcher_new(o, &f->b, &err))
        fail_msg("batcher: %s", err.msg);
    f->ctx = ctx_new(1);
    return 0;
}

typedef struct mt_case {
    const char *text;
    const cJSON *greedy, *beam; /* generate() goldens: num_beams 1, the folder's (4) */
} mt_case;

static cJSON *mt_golden(const char *model)
{
    char *txt = tu_read_file(tu_path("%s/tests/fixtures/marian/%s/golden.json", tu_root(), model),
                             NULL);
    assert_non_null(txt);
    cJSON *g = cJSON_Parse(txt);
    free(txt);
    assert_non_null(g);
    return g;
}

/* Up to max cases with non-empty texts from the golden. */
static int mt_cases(const cJSON *g, mt_case *c, int max)
{
    int n = 0;
    const cJSON *x;
    cJSON_ArrayForEach(x, cJSON_GetObjectItem(g, "cases"))
    {
        const char *t = cJSON_GetObjectItem(x, "text")->valuestring;
        if (n == max || !*t)
            continue;
        c[n++] = (mt_case){t, cJSON_GetObjectItem(x, "greedy"), cJSON_GetObjectItem(x, "beam")};
    }
    return n;
}

static tjob *mt_job(fixture *f, const char *const *texts, int n, int beam, int max_length)
{
    assert_true(n <= MAXE);
    tjob *j = calloc(1, sizeof *j);
    assert_non_null(j);
    j->t = &f->t;
    for (int i = 0; i < n; i++) {
        eng_encoding_init(&j->enc[i]);
        eng_error err = {0};
        if (eng_translate_encode(f->m, texts[i], strlen(texts[i]), 0, &j->enc[i], &err))
            fail_msg("encode: %s", err.msg);
    }
    j->job.type = &srv_job_translate;
    j->job.model = f->m;
    j->job.n = n;
    j->job.enc = j->enc;
    eng_translate_opts_default(&j->topts);
    j->topts.beam_size = beam;
    j->topts.max_length = max_length;
    j->job.opts = &j->topts;
    j->job.client_gone = client_gone;
    j->job.complete = on_complete;
    j->job.arg = j;
    return j;
}

static int ids_are(const cJSON *want, const eng_translation *t)
{
    if (cJSON_GetArraySize(want) != t->n_ids)
        return 0;
    for (int i = 0; i < t->n_ids; i++)
        if (cJSON_GetArrayItem(want, i)->valueint != t->ids[i])
            return 0;
    return 1;
}

/* The translate job ran OK and each text's ids and score equal
 * eng_translate_ids on that text alone (score bitwise). */
static void expect_same_translation(fixture *f, const srv_job *job)
{
    if (job->status != SRV_JOB_OK)
        fail_msg("job status %d (%s)", job->status, job->error);
    assert_non_null(job->out);
    assert_int_equal(job->out_len, job->n);
    for (int i = 0; i < job->n; i++) {
        const eng_encoding *e = &job->enc[i];
        eng_translation want = {0};
        eng_error err = {0};
        if (eng_translate_ids(f->ctx, f->m, &e, 1, job->opts, &want, &err))
            fail_msg("direct translate: %s", err.msg);
        const eng_translation *got = (const eng_translation *)job->out + i;
        g_cmp++;
        int same = got->n_ids == want.n_ids && got->src_tokens == want.src_tokens &&
                   memcmp(got->ids, want.ids, (size_t)want.n_ids * sizeof *want.ids) == 0 &&
                   memcmp(&got->score, &want.score, sizeof want.score) == 0;
        g_bitwise += same;
        if (!same)
            fail_msg("text %d: batched translation differs from the direct run (%d vs %d ids, "
                     "score %g vs %g)", i, got->n_ids, want.n_ids, (double)got->score,
                     (double)want.score);
        assert_null(got->text);
        eng_translation_free(&want);
    }
}

/* Translate jobs of 1-3 texts, greedy and beam 4, queued together behind a
 * gate: every text's ids equal the committed generate() goldens and the direct
 * run alone (bitwise), batches formed, and greedy and beam jobs never shared
 * one. */
static void test_translate_jobs(void **state)
{
    (void)state;
    srv_batch_opts o;
    srv_batch_opts_default(&o);
    o.max_delay_us = 0;
    fixture f;
    assert_int_equal(fx_open_marian(&f, "marian_a", &o), 0);
    cJSON *g = mt_golden("marian_a");
    mt_case c[12];
    int nc = mt_cases(g, c, 12);
    assert_int_equal(nc, 12);
    tjob *gate = gate_hold(&f);
    /* 8 jobs over the 12 texts: beams 1 and 4 interleaved, 1-3 texts each. */
    enum { N = 8 };
    tjob *jobs[N];
    int first[N];
    for (int i = 0, t = 0; i < N; i++) {
        int n = 1 + i % 3;
        const char *texts[3];
        first[i] = t;
        for (int k = 0; k < n; k++)
            texts[k] = c[(t + k) % nc].text;
        t = (t + n) % nc;
        jobs[i] = mt_job(&f, texts, n, i % 2 ? 4 : 1, 40);
        submit_ok(&f, jobs[i]);
    }
    gate_release(&f.t);
    assert_true(wait_for(&f.t, &f.t.done, N + 1));
    int batched = 0;
    for (int i = 0; i < N; i++) {
        srv_job *j = &jobs[i]->job;
        assert_int_equal(jobs[i]->completions, 1);
        expect_same_translation(&f, j);
        for (int k = 0; k < j->n; k++) {
            const mt_case *mc = &c[(first[i] + k) % nc];
            if (!ids_are(i % 2 ? mc->beam : mc->greedy, (const eng_translation *)j->out + k))
                fail_msg("job %d text %d (%s): ids differ from the generate() golden", i, k,
                         mc->text);
        }
        /* Each option set formed one batch of its own: 1+3+2+1 = 7 greedy
         * texts (jobs 0, 2, 4, 6), 2+1+3+2 = 8 beam texts (1, 3, 5, 7). */
        assert_int_equal(j->batch_size, i % 2 ? 8 : 7);
        batched |= j->batch_size > j->n;
    }
    assert_true(batched);
    assert_int_equal(f.t.nb, 3); /* the gate's batch, then one per option set */

    /* A job of the same options, alone, equals its text inside the batch. */
    const char *t0 = c[first[1]].text;
    tjob *alone = mt_job(&f, &t0, 1, 4, 40);
    submit_ok(&f, alone);
    assert_true(wait_for(&f.t, &f.t.done, N + 2));
    assert_int_equal(alone->job.batch_size, 1);
    const eng_translation *a = alone->job.out, *b = jobs[1]->job.out;
    assert_int_equal(a->n_ids, b->n_ids);
    assert_memory_equal(a->ids, b->ids, (size_t)a->n_ids * sizeof *a->ids);
    assert_memory_equal(&a->score, &b->score, sizeof a->score);

    job_free(alone);
    free_all(jobs, N);
    job_free(gate);
    cJSON_Delete(g);
    fx_close(&f);
}

/* May translate jobs with these search options share a batch? */
static int srv_translate_opts_equal(const eng_translate_opts *a, const eng_translate_opts *b)
{
    srv_job ja = {.type = &srv_job_translate, .opts = a};
    srv_job jb = {.type = &srv_job_translate, .opts = b};
    return srv_job_translate.batchable(&ja, &jb);
}

/* Options differing only in max_length or length_penalty keep jobs apart too;
 * equal options (NaN penalties included) batch together. */
static void test_translate_opts_grouping(void **state)
{
    (void)state;
    eng_translate_opts a, b;
    eng_translate_opts_default(&a);
    eng_translate_opts_default(&b);
    assert_true(srv_translate_opts_equal(&a, &b));
    b.target_lang_token = ">>por<<"; /* ignored: sources are already encoded */
    assert_true(srv_translate_opts_equal(&a, &b));
    b.max_length = 9;
    assert_false(srv_translate_opts_equal(&a, &b));
    b = a;
    b.length_penalty = 1.0f;
    assert_false(srv_translate_opts_equal(&a, &b));
    b = a;
    b.beam_size = 2;
    assert_false(srv_translate_opts_equal(&a, &b));

    srv_batch_opts o;
    srv_batch_opts_default(&o);
    o.max_delay_us = 0;
    fixture f;
    assert_int_equal(fx_open_marian(&f, "marian_b", &o), 0);
    tjob *gate = gate_hold(&f);
    const char *t1 = "Hello world!", *t2 = "The cat sat on the mat.";
    tjob *jobs[4] = {mt_job(&f, &t1, 1, 1, 24), mt_job(&f, &t2, 1, 1, 9),
                     mt_job(&f, &t2, 1, 1, 24), mt_job(&f, &t1, 1, 1, 9)};
    submit_all(&f, jobs, 4);
    gate_release(&f.t);
    assert_true(wait_for(&f.t, &f.t.done, 5));
    for (int i = 0; i < 4; i++) {
        assert_int_equal(jobs[i]->job.batch_size, 2); /* {0, 2} and {1, 3} */
        expect_same_translation(&f, &jobs[i]->job);
    }
    assert_int_equal(f.t.nb, 3);
    free_all(jobs, 4);
    job_free(gate);
    fx_close(&f);
}

/* Prints the group's tally of batched results against the direct runs. */
static void test_report_invariance(void **state)
{
    (void)state;
    print_message("batching invariance: %ld of %ld job results bitwise equal to the direct "
                  "run (max |diff| %g)\n", g_bitwise, g_cmp, (double)g_max_abs);
    assert_true(g_bitwise == g_cmp);
}

/* Item 3 of the hardening issue: a worker's buffers give memory back after an
 * unusually large batch instead of keeping the high-water mark. */
static void test_scratch_shrinks(void **state)
{
    (void)state;
    srv_scratch s = {0};
    char *p = srv_scratch_get(&s, 64u << 20);
    assert_non_null(p);
    memset(p, 7, 64u << 20);
    srv_scratch_trim(&s);
    assert_true(s.cap >= (64u << 20)); /* the big batch is recent: kept */
    /* Normal batches: still kept until the big one leaves the window... */
    for (int i = 0; i < SRV_SCRATCH_WINDOW - 1; i++) {
        assert_non_null(srv_scratch_get(&s, 3000));
        srv_scratch_trim(&s);
        assert_true(s.cap >= (64u << 20));
    }
    /* ...then shrunk to what recent batches used. */
    p = srv_scratch_get(&s, 3000);
    assert_non_null(p);
    memset(p, 1, 3000);
    srv_scratch_trim(&s);
    assert_int_equal(s.cap, 4096);
    /* Within 4x of the recent peaks, or under SRV_SCRATCH_KEEP: not reallocated. */
    assert_non_null(srv_scratch_get(&s, 1u << 20));
    srv_scratch_trim(&s);
    for (int i = 0; i < SRV_SCRATCH_WINDOW; i++) {
        assert_non_null(srv_scratch_get(&s, 300u << 10));
        srv_scratch_trim(&s);
    }
    assert_int_equal(s.cap, 1u << 20);
    for (int i = 0; i < SRV_SCRATCH_WINDOW; i++) {
        assert_non_null(srv_scratch_get(&s, 100));
        srv_scratch_trim(&s);
    }
    assert_int_equal(s.cap, 4096);
    srv_scratch_free(&s);
    assert_null(s.p);
    srv_scratch_trim(&s); /* on an empty scratch: nothing to do */
    assert_int_equal(s.cap, 0);
}

/* The engine context's activation memory follows the same rule (srv_ctx_trim, which
 * each worker calls after each batch): kept while a big batch is recent, then given
 * back, with the outputs unchanged. */
static void test_ctx_shrinks(void **state)
{
    (void)state;
    enum { BIG = 128 };
    eng_model *m = load("bert_base");
    eng_ctx *ctx;
    eng_error err = {0};
    assert_int_equal(eng_ctx_new(&(eng_ctx_opts){.threads = 1}, &ctx, &err), ENG_OK);
    static const char text[] = "one big batch should not pin its memory for ever";
    eng_encoding enc;
    eng_encoding_init(&enc);
    if (eng_tokenizer_encode(eng_model_tokenizer(m), text, sizeof text - 1, NULL, 0, 64, &enc,
                             &err))
        fail_msg("tokenize: %s", err.msg);
    const eng_encoding *ptrs[BIG];
    for (int i = 0; i < BIG; i++)
        ptrs[i] = &enc;
    size_t H = (size_t)eng_model_get_info(m)->hidden;
    float *big = malloc(sizeof(float) * H * BIG), *one = malloc(sizeof(float) * H);
    assert_non_null(big);
    assert_non_null(one);
    srv_peaks pk = {0};
    eng_ctx_stats big_st, st;
    assert_int_equal(eng_run_embed(ctx, m, ptrs, BIG, big, &err), 0);
    srv_ctx_trim(ctx, &pk);
    eng_ctx_get_stats(ctx, &big_st);
    assert_true(big_st.reserved_bytes > 4 * SRV_SCRATCH_KEEP);
    for (int i = 0; i < SRV_SCRATCH_WINDOW - 1; i++) {
        assert_int_equal(eng_run_embed(ctx, m, ptrs, 1, one, &err), 0);
        srv_ctx_trim(ctx, &pk);
        eng_ctx_get_stats(ctx, &st);
        assert_int_equal(st.reserved_bytes, big_st.reserved_bytes); /* still recent: kept */
    }
    assert_int_equal(eng_run_embed(ctx, m, ptrs, 1, one, &err), 0);
    srv_ctx_trim(ctx, &pk);
    eng_ctx_get_stats(ctx, &st);
    assert_true(st.reserved_bytes * 4 < big_st.reserved_bytes);
    memset(one, 0, sizeof(float) * H);
    assert_int_equal(eng_run_embed(ctx, m, ptrs, 1, one, &err), 0);
    assert_memory_equal(one, big, sizeof(float) * H);
    free(big);
    free(one);
    eng_encoding_free(&enc);
    eng_ctx_free(ctx);
    eng_model_unref(m);
}

/* Item 2 of the hardening issue: jobs are admitted and batched by their
 * estimated cost (srv_job_type.cost), not only by their source tokens. */
static void costly_cost(const srv_job *j, srv_job_cost *c)
{
    c->bytes = 1000 * (int64_t)j->max_len;
    c->tokens = 0; /* the default: n x longest */
}

static void test_cost_admission_and_batches(void **state)
{
    (void)state;
    static srv_job_type costly;
    costly = srv_job_classify;
    costly.cost = costly_cost;
    srv_batch_opts o;
    srv_batch_opts_default(&o);
    o.max_delay_us = 0;
    o.max_job_bytes = 20000;
    o.max_batch_bytes = 25000;
    fixture f;
    fx_open(&f, "bert_cls", &o);
    /* Over max_job_bytes: refused at submit, nothing completed, the estimate said. */
    tjob *big = job1(&f.t, &costly, 30, 99);
    assert_int_equal(srv_batcher_submit(f.b, &big->job), SRV_ETOOCOSTLY);
    assert_int_equal(big->job.cost.bytes, 30000);
    assert_int_equal(big->completions, 0);
    tjob *g = gate_hold(&f);
    const int lens[] = {5, 6, 7, 8, 9, 10};
    enum { N = 6 };
    tjob *jobs[N];
    for (int i = 0; i < N; i++) {
        jobs[i] = job1(&f.t, &costly, lens[i], i);
        submit_ok(&f, jobs[i]);
    }
    gate_release(&f.t);
    assert_true(wait_for(&f.t, &f.t.done, N + 1));
    /* Batches within 25000 estimated bytes: {5,6,7} (18000), {8,9} (17000), {10}. */
    const int bsize[] = {3, 3, 3, 2, 2, 1};
    for (int i = 0; i < N; i++) {
        assert_int_equal(jobs[i]->job.status, SRV_JOB_OK);
        assert_int_equal(jobs[i]->job.batch_size, bsize[i]);
    }
    free_all(jobs, N);
    job_free(big);
    job_free(g);
    fx_close(&f);
}

/* The translate estimate: a big Marian (6 layers, 1024 wide, 57k vocabulary)
 * at the config's maxima (beam_size 8, max_length 512, 512 source tokens)
 * needs ~400 MiB per text, so the default batching.max_job_mib (1024) admits
 * two such texts, never the default limits.max_texts (64) of them (26 GB). */
static void test_translate_cost_estimate(void **state)
{
    (void)state;
    eng_model_info info = {.layers = 6, .hidden = 1024, .vocab = 57000};
    srv_job_cost c;
    srv_translate_text_cost(&info, 8, 512, 512, &c);
    assert_true(c.bytes == (int64_t)8 * 6 * 2 * 1024 * 1024 * 4 + (int64_t)8 * 57000 * 8 +
                               (int64_t)512 * 1024 * 16);
    assert_int_equal(c.tokens, 512 + 512);
    srv_config cfg;
    assert_int_equal(srv_config_init(&cfg), 0);
    char err[256];
    const char *doc = "{\"models\":[{\"name\":\"mt\",\"path\":\"/x\",\"task\":\"translate\"}]}";
    assert_int_equal(srv_config_load_string(&cfg, doc, strlen(doc), "test", err, sizeof err), 0);
    const srv_model_conf *m = &cfg.models[0];
    int64_t limit = (int64_t)m->max_job_mib << 20;
    assert_true(2 * c.bytes <= limit);
    assert_true((int64_t)cfg.max_texts * c.bytes > limit);
    /* A greedy search of a short text is far below. */
    srv_translate_text_cost(&info, 1, 64, 20, &c);
    assert_true(c.bytes < (16 << 20));
    srv_config_free(&cfg);
}

/* Item 4 of the hardening issue: deadlines cover compute. */
static atomic_int g_slow_runs;

static int slow_run(eng_ctx *ctx, eng_model *m, srv_job *const *jobs, int n,
                    const eng_encoding *const *enc, int seqs, srv_scratch *sc, eng_error *err)
{
    atomic_fetch_add(&g_slow_runs, 1);
    struct timespec ts = {0, 20 * 1000000}; /* the compute time being simulated */
    nanosleep(&ts, NULL);
    return srv_job_classify.run(ctx, m, jobs, n, enc, seqs, sc, err);
}

/* A batch that would end after its members' deadlines (estimated from the
 * type's recent batches) is not started: 504 without compute. */
static void test_deadline_covers_compute(void **state)
{
    (void)state;
    static srv_job_type slow;
    slow = srv_job_classify;
    slow.run = slow_run;
    srv_batch_opts o;
    srv_batch_opts_default(&o);
    o.max_delay_us = 0;
    fixture f;
    fx_open(&f, "bert_cls", &o);
    tjob *warm[3];
    for (int i = 0; i < 3; i++) { /* the speed: ~20 ms for 10 tokens */
        warm[i] = job1(&f.t, &slow, 10, i);
        submit_ok(&f, warm[i]);
        assert_true(wait_for(&f.t, &f.t.done, i + 1));
        assert_int_equal(warm[i]->job.status, SRV_JOB_OK);
    }
    int runs = atomic_load(&g_slow_runs);
    tjob *late = job1(&f.t, &slow, 10, 7);
    late->job.deadline_ns = srv_now_ns() + 5 * 1000000; /* less than half of ~20 ms */
    submit_ok(&f, late);
    assert_true(wait_for(&f.t, &f.t.done, 4));
    assert_int_equal(late->job.status, SRV_JOB_EXPIRED);
    assert_int_equal(atomic_load(&g_slow_runs), runs); /* never computed */
    tjob *fine = job1(&f.t, &slow, 10, 8);
    fine->job.deadline_ns = srv_now_ns() + 30 * 1000000000LL;
    submit_ok(&f, fine);
    assert_true(wait_for(&f.t, &f.t.done, 5));
    assert_int_equal(fine->job.status, SRV_JOB_OK);
    for (int i = 0; i < 3; i++)
        job_free(warm[i]);
    job_free(late);
    job_free(fine);
    fx_close(&f);
}

typedef struct qa_big {
    srv_job job;
    eng_encoding enc[320];
    tctx *t;
} qa_big;

static void qa_big_done(srv_job *job, void *arg)
{
    (void)job;
    tctx *t = arg;
    pthread_mutex_lock(&t->mu);
    t->done++;
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
}

/* A long QA job (320 windows, computed in chunks) stops between chunks once
 * its deadline passed: EXPIRED after it started, not a late answer. */
static void test_qa_stops_between_steps(void **state)
{
    (void)state;
    int stopped = 0;
    for (int attempt = 0; attempt < 12 && !stopped; attempt++) {
        srv_batch_opts o;
        srv_batch_opts_default(&o);
        o.max_delay_us = 0;
        o.max_batch_tokens = 1 << 20;
        o.max_batch_size = 4096;
        fixture f; /* a fresh batcher each time: no speed estimate yet */
        fx_open(&f, "bert_qa", &o);
        qa_big *q = calloc(1, sizeof *q);
        assert_non_null(q);
        for (int i = 0; i < 320; i++)
            make_enc(&q->enc[i], 120, i);
        q->job.type = &srv_job_qa;
        q->job.model = f.m;
        q->job.n = 320;
        q->job.enc = q->enc;
        q->job.complete = qa_big_done;
        q->job.arg = &f.t;
        /* Long enough to start, too short for 5 chunks of 64 windows. */
        int64_t margin = (int64_t)(1 + attempt) * 1000000;
        q->job.deadline_ns = srv_now_ns() + margin;
        assert_int_equal(srv_batcher_submit(f.b, &q->job), 0);
        assert_true(wait_for(&f.t, &f.t.done, 1));
        /* Started (a batch ran it) and expired: stopped between chunks. */
        if (q->job.status == SRV_JOB_EXPIRED && q->job.batch_size == 320)
            stopped = 1;
        print_message("margin %.1f ms: status %d, batch %d, %.1f ms of compute\n",
                      (double)margin / 1e6, (int)q->job.status, q->job.batch_size,
                      (double)(q->job.finished_ns - q->job.started_ns) / 1e6);
        srv_job_free_output(&q->job);
        for (int i = 0; i < 320; i++)
            eng_encoding_free(&q->enc[i]);
        free(q);
        fx_close(&f);
    }
    assert_true(stopped);
}

/* A long translate job stops between decode steps once its deadline passed
 * (eng_translate_opts.should_stop): EXPIRED after it started. */
static void test_translate_stops_between_steps(void **state)
{
    (void)state;
    int stopped = 0;
    for (int attempt = 0; attempt < 12 && !stopped; attempt++) {
        srv_batch_opts o;
        srv_batch_opts_default(&o);
        o.max_delay_us = 0;
        fixture f;
        if (fx_open_marian(&f, "marian_a", &o))
            fail_msg("the shared OPUS-MT tokenizer is missing");
        const char *texts[4] = {"The cat sat on the mat.", "Hello world!",
                                "A much longer sentence about nothing in particular.",
                                "Good morning, how are you?"};
        tjob *j = mt_job(&f, texts, 4, 4, 256);
        int64_t margin = (int64_t)(1 + attempt) * 500000;
        j->job.deadline_ns = srv_now_ns() + margin;
        submit_ok(&f, j);
        assert_true(wait_for(&f.t, &f.t.done, 1));
        if (j->job.status == SRV_JOB_EXPIRED && j->job.batch_size == 4)
            stopped = 1;
        print_message("margin %.1f ms: status %d, batch %d, %.1f ms of compute\n",
                      (double)margin / 1e6, (int)j->job.status, j->job.batch_size,
                      (double)(j->job.finished_ns - j->job.started_ns) / 1e6);
        assert_null(j->job.out); /* an expired job holds no output */
        job_free(j);
        fx_close(&f);
    }
    assert_true(stopped);
}

void tu_cuda_emu_fail_after(int n) __attribute__((weak)); /* tests/cuda_emu/ */

/* A worker whose device faults (an injected CUDA error on the emulated CUDA backend):
 * its job fails, the batcher names the worker, backend, device and error, and /readyz
 * turns 503 with a body naming the model, the backend and the device. */
/* A server of one ready model on batcher b: the fields /readyz and /healthz read. */
typedef struct one_model {
    srv_model_conf mc;
    srv_model sm;
    srv_server srv;
} one_model;

static srv_server *one_model_server(one_model *m, srv_batcher *b)
{
    memset(m, 0, sizeof *m);
    m->mc.name = "sentiment";
    m->mc.backend = "cuda";
    m->sm.conf = &m->mc;
    m->sm.batcher = b;
    atomic_init(&m->sm.status, SRV_MODEL_READY);
    m->srv.models = &m->sm;
    m->srv.n_models = 1;
    atomic_init(&m->srv.ready, 1);
    atomic_init(&m->srv.draining, 0);
    return &m->srv;
}

static void test_device_fault_readyz(void **state)
{
    (void)state;
    assert_non_null(tu_cuda_emu_fail_after);
    srv_batch_opts o;
    srv_batch_opts_default(&o);
    o.backend = "cuda-emu";
    o.max_delay_us = 0;
    fixture f;
    fx_open(&f, "bert_cls", &o);
    srv_batcher_fault_info fi;
    tjob *a = job1(&f.t, &srv_job_classify, 6, 1);
    submit_ok(&f, a);
    assert_true(wait_for(&f.t, &f.t.done, 1));
    assert_int_equal(a->job.status, SRV_JOB_OK);
    assert_int_equal(srv_batcher_fault(f.b, &fi), 0);

    one_model om;
    srv_server *srv = one_model_server(&om, f.b);
    srv_buf b;
    const char *code = NULL;
    srv_buf_init(&b);
    assert_int_equal(srv_readyz_render(srv, &b, &code), 200);
    free(srv_buf_take(&b, NULL));

    tu_cuda_emu_fail_after(3);
    tjob *j = job1(&f.t, &srv_job_classify, 6, 2);
    submit_ok(&f, j);
    assert_true(wait_for(&f.t, &f.t.done, 2));
    tu_cuda_emu_fail_after(0);
    assert_int_equal(j->job.status, SRV_JOB_FAILED);
    assert_int_equal(j->job.error_code, ENG_EBACKEND);
    assert_int_equal(srv_batcher_fault(f.b, &fi), 1);
    assert_string_equal(fi.backend, "cuda-emu");
    assert_int_equal(fi.device, 0);
    assert_int_equal(fi.worker, 0);
    assert_non_null(strstr(fi.error, "injected"));

    srv_buf_init(&b);
    assert_int_equal(srv_readyz_render(srv, &b, &code), 503);
    assert_string_equal(code, "device_fault");
    char *body = srv_buf_take(&b, NULL);
    print_message("  /readyz: %s", body);
    cJSON *js = cJSON_Parse(body);
    assert_non_null(js);
    assert_string_equal(cJSON_GetObjectItem(js, "status")->valuestring, "unhealthy");
    cJSON *e = cJSON_GetObjectItem(js, "error");
    assert_string_equal(cJSON_GetObjectItem(e, "code")->valuestring, "device_fault");
    const char *msg = cJSON_GetObjectItem(e, "message")->valuestring;
    assert_non_null(strstr(msg, "model sentiment: backend cuda-emu:0 (worker 0) failed: "));
    assert_non_null(strstr(msg, "injected"));
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(js, "models"), "sentiment")
                            ->valuestring, "unhealthy");
    cJSON *f0 = cJSON_GetArrayItem(cJSON_GetObjectItem(js, "faults"), 0);
    assert_non_null(f0);
    assert_string_equal(cJSON_GetObjectItem(f0, "model")->valuestring, "sentiment");
    assert_string_equal(cJSON_GetObjectItem(f0, "backend")->valuestring, "cuda-emu");
    assert_int_equal(cJSON_GetObjectItem(f0, "device")->valueint, 0);
    /* the worker recreated its context at once; not ready until it has run a batch */
    assert_int_equal(fi.attempts, 1);
    assert_int_equal(fi.max_attempts, 5);
    assert_true(fi.recovering && !fi.gave_up);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(f0, "recovering")));
    assert_int_equal(cJSON_GetObjectItem(f0, "attempts")->valueint, 1);
    assert_non_null(strstr(msg, "context recreated (attempt 1 of 5)"));
    cJSON_Delete(js);
    free(body);

    /* the recreated context runs the next batch: ready again, the same result */
    tjob *k = job1(&f.t, &srv_job_classify, 6, 1);
    submit_ok(&f, k);
    assert_true(wait_for(&f.t, &f.t.done, 3));
    assert_int_equal(k->job.status, SRV_JOB_OK);
    assert_memory_equal(k->job.out, a->job.out, k->job.out_len * sizeof(float));
    assert_int_equal(srv_batcher_fault(f.b, &fi), 0);
    srv_buf_init(&b);
    assert_int_equal(srv_readyz_render(srv, &b, &code), 200);
    free(srv_buf_take(&b, NULL));
    job_free(a);
    job_free(j);
    job_free(k);
    fx_close(&f);
}

/* A device that stays broken: recreating the context fails; the next attempt waits for
 * the backoff (meanwhile batches fail at once, naming the fault), and after
 * recover_attempts the worker gives up (/readyz says so) even once the device works.
 * With attempts left, a device that works again is used again once the backoff passed. */
static void test_device_fault_recovery(void **state)
{
    (void)state;
    assert_non_null(tu_cuda_emu_fail_after);
    for (int give_up = 1; give_up >= 0; give_up--) {
        srv_batch_opts o;
        srv_batch_opts_default(&o);
        o.backend = "cuda-emu";
        o.max_delay_us = 0;
        o.recover_attempts = give_up ? 2 : 3;
        o.recover_backoff_ms = give_up ? 1000 : 100;
        fixture f;
        fx_open(&f, "bert_cls", &o);
        srv_batcher_fault_info fi;
        tjob *jobs[5] = {0};
        int done = 0;
#define RUN_JOB(i, want)                                                                \
    do {                                                                                \
        jobs[i] = job1(&f.t, &srv_job_classify, 6, 1);                                  \
        submit_ok(&f, jobs[i]);                                                         \
        assert_true(wait_for(&f.t, &f.t.done, ++done));                                 \
        assert_int_equal(jobs[i]->job.status, want);                                    \
    } while (0)
        RUN_JOB(0, SRV_JOB_OK);
        tu_cuda_emu_fail_after(-1);
        RUN_JOB(1, SRV_JOB_FAILED); /* the fault; recreating at once fails too */
        assert_int_equal(srv_batcher_fault(f.b, &fi), 1);
        assert_int_equal(fi.attempts, 1);
        assert_true(!fi.recovering && !fi.gave_up);
        assert_non_null(strstr(fi.recovery, "attempt 1 of"));
        print_message("  after the fault: %s (%s)\n", fi.error, fi.recovery);
        if (give_up) {
            RUN_JOB(2, SRV_JOB_FAILED); /* within the backoff: no attempt */
            assert_non_null(strstr(jobs[2]->job.error, "being recreated"));
            assert_int_equal(srv_batcher_fault(f.b, &fi), 1);
            assert_int_equal(fi.attempts, 1);
            usleep(1100 * 1000);
            RUN_JOB(3, SRV_JOB_FAILED); /* attempt 2 of 2 fails: given up */
            assert_int_equal(srv_batcher_fault(f.b, &fi), 1);
            assert_true(fi.gave_up && fi.attempts == 2);
            assert_non_null(strstr(fi.recovery, "gave up after 2 context recreations"));
            print_message("  %s\n", fi.recovery);
            tu_cuda_emu_fail_after(0);
            usleep(150 * 1000);
            RUN_JOB(4, SRV_JOB_FAILED); /* no attempt left, though the device works */
            assert_non_null(strstr(jobs[4]->job.error, "no attempt left"));
            assert_int_equal(srv_batcher_fault(f.b, &fi), 1);
        } else {
            tu_cuda_emu_fail_after(0);
            usleep(150 * 1000);
            RUN_JOB(2, SRV_JOB_OK); /* attempt 2 works and runs the batch */
            assert_memory_equal(jobs[2]->job.out, jobs[0]->job.out,
                                jobs[0]->job.out_len * sizeof(float));
            assert_int_equal(srv_batcher_fault(f.b, &fi), 0);
        }
#undef RUN_JOB
        for (int i = 0; i < 5; i++)
            if (jobs[i])
                job_free(jobs[i]);
        fx_close(&f);
    }
}

void tu_cuda_emu_fail_sticky_after(int n, int code) __attribute__((weak)); /* tests/cuda_emu/ */

static void count_sticky(void *arg)
{
    atomic_fetch_add((atomic_int *)arg, 1);
}

/* body's JSON, after checking it parses. */
static cJSON *take_json(srv_buf *b)
{
    char *body = srv_buf_take(b, NULL);
    assert_non_null(body);
    print_message("  %s", body);
    cJSON *js = cJSON_Parse(body);
    free(body);
    assert_non_null(js);
    return js;
}

/* A sticky CUDA error (an illegal address: the process's CUDA context is lost): the
 * worker makes no context recreation at all, not even once the device would work again;
 * its batches fail at once saying a restart is needed; the server is told (once);
 * /readyz is 503 device_fault with the fault marked sticky, and /healthz (liveness),
 * 200 before, turns 503 with the reason. */
static void test_device_fault_sticky(void **state)
{
    (void)state;
    assert_non_null(tu_cuda_emu_fail_sticky_after);
    atomic_int told;
    atomic_init(&told, 0);
    srv_batch_opts o;
    srv_batch_opts_default(&o);
    o.backend = "cuda-emu";
    o.max_delay_us = 0;
    o.on_sticky_fault = count_sticky;
    o.on_sticky_fault_arg = &told;
    fixture f;
    fx_open(&f, "bert_cls", &o);
    one_model om;
    srv_server *srv = one_model_server(&om, f.b);
    srv_buf b;
    const char *code = "x";

    tjob *jobs[3];
    jobs[0] = job1(&f.t, &srv_job_classify, 6, 1);
    submit_ok(&f, jobs[0]);
    assert_true(wait_for(&f.t, &f.t.done, 1));
    assert_int_equal(jobs[0]->job.status, SRV_JOB_OK);
    srv_buf_init(&b);
    assert_int_equal(srv_healthz_render(srv, &b, &code), 200);
    assert_null(code);
    cJSON_Delete(take_json(&b));

    tu_cuda_emu_fail_sticky_after(3, 700 /* cudaErrorIllegalAddress */);
    jobs[1] = job1(&f.t, &srv_job_classify, 6, 2);
    submit_ok(&f, jobs[1]);
    assert_true(wait_for(&f.t, &f.t.done, 2));
    assert_int_equal(jobs[1]->job.status, SRV_JOB_FAILED);
    assert_int_equal(jobs[1]->job.error_code, ENG_EBACKEND);
    srv_batcher_fault_info fi;
    assert_int_equal(srv_batcher_fault(f.b, &fi), 1);
    assert_true(fi.sticky && fi.gave_up && !fi.recovering);
    assert_int_equal(fi.attempts, 0);
    assert_non_null(strstr(fi.error, "illegal memory access"));
    assert_non_null(strstr(fi.recovery, "the process must be restarted"));
    assert_int_equal(atomic_load(&told), 1);

    /* the emulated device works again (a real one would not): still no attempt */
    tu_cuda_emu_fail_after(0);
    jobs[2] = job1(&f.t, &srv_job_classify, 6, 1);
    submit_ok(&f, jobs[2]);
    assert_true(wait_for(&f.t, &f.t.done, 3));
    assert_int_equal(jobs[2]->job.status, SRV_JOB_FAILED);
    assert_non_null(strstr(jobs[2]->job.error, "a sticky error: the process must be restarted"));
    assert_int_equal(srv_batcher_fault(f.b, &fi), 1);
    assert_int_equal(fi.attempts, 0);
    assert_int_equal(atomic_load(&told), 1);

    srv_buf_init(&b);
    assert_int_equal(srv_readyz_render(srv, &b, &code), 503);
    assert_string_equal(code, "device_fault");
    cJSON *js = take_json(&b);
    cJSON *e = cJSON_GetObjectItem(js, "error");
    assert_string_equal(cJSON_GetObjectItem(e, "code")->valuestring, "device_fault");
    const char *msg = cJSON_GetObjectItem(e, "message")->valuestring;
    assert_non_null(strstr(msg, "model sentiment: backend cuda-emu:0 (worker 0) failed: "));
    assert_non_null(strstr(msg, "sticky CUDA error"));
    assert_non_null(strstr(msg, "the process must be restarted"));
    cJSON *f0 = cJSON_GetArrayItem(cJSON_GetObjectItem(js, "faults"), 0);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(f0, "sticky")));
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(f0, "gave_up")));
    assert_int_equal(cJSON_GetObjectItem(f0, "attempts")->valueint, 0);
    cJSON_Delete(js);

    srv_buf_init(&b);
    assert_int_equal(srv_healthz_render(srv, &b, &code), 503);
    assert_string_equal(code, "device_fault");
    js = take_json(&b);
    assert_string_equal(cJSON_GetObjectItem(js, "status")->valuestring, "unhealthy");
    e = cJSON_GetObjectItem(js, "error");
    assert_string_equal(cJSON_GetObjectItem(e, "code")->valuestring, "device_fault");
    msg = cJSON_GetObjectItem(e, "message")->valuestring;
    assert_non_null(strstr(msg, "model sentiment: backend cuda-emu:0"));
    assert_non_null(strstr(msg, "illegal memory access"));
    assert_non_null(strstr(msg, "the process must be restarted"));
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(js, "restart")));
    cJSON_Delete(js);

    for (int i = 0; i < 3; i++)
        job_free(jobs[i]);
    fx_close(&f);
}

/* A fault that is not sticky leaves liveness alone (/healthz 200: recreating the context
 * may cure it; /readyz reports it). */
static void test_device_fault_healthz_transient(void **state)
{
    (void)state;
    assert_non_null(tu_cuda_emu_fail_after);
    srv_batch_opts o;
    srv_batch_opts_default(&o);
    o.backend = "cuda-emu";
    o.max_delay_us = 0;
    o.recover_attempts = 1;
    fixture f;
    fx_open(&f, "bert_cls", &o);
    one_model om;
    srv_server *srv = one_model_server(&om, f.b);
    tu_cuda_emu_fail_after(-1); /* broken for good: the one attempt fails, given up */
    tjob *j = job1(&f.t, &srv_job_classify, 6, 1);
    submit_ok(&f, j);
    assert_true(wait_for(&f.t, &f.t.done, 1));
    tu_cuda_emu_fail_after(0);
    srv_batcher_fault_info fi;
    assert_int_equal(srv_batcher_fault(f.b, &fi), 1);
    assert_true(fi.gave_up && !fi.sticky);
    srv_buf b;
    const char *code = "x";
    srv_buf_init(&b);
    assert_int_equal(srv_healthz_render(srv, &b, &code), 200);
    assert_null(code);
    cJSON_Delete(take_json(&b));
    job_free(j);
    fx_close(&f);
}

TEST_GROUP(server_batcher)
{
    static const struct CMUnitTest t[] = {
        cmocka_unit_test(test_model_slot),
        cmocka_unit_test(test_device_fault_readyz),
        cmocka_unit_test(test_device_fault_recovery),
        cmocka_unit_test(test_device_fault_sticky),
        cmocka_unit_test(test_device_fault_healthz_transient),
        cmocka_unit_test(test_single_job_matches_direct),
        cmocka_unit_test(test_concurrent_invariance),
        cmocka_unit_test(test_budget_padding_and_order),
        cmocka_unit_test(test_max_batch_size_and_oversize),
        cmocka_unit_test(test_oldest_goes_first),
        cmocka_unit_test(test_lone_job_prompt),
        cmocka_unit_test(test_delay_collects_batch),
        cmocka_unit_test(test_arriving_count),
        cmocka_unit_test(test_full_batch_no_wait),
        cmocka_unit_test(test_deadline_expired),
        cmocka_unit_test(test_client_gone),
        cmocka_unit_test(test_queue_full),
        cmocka_unit_test(test_stop_drain),
        cmocka_unit_test(test_stop_no_drain),
        cmocka_unit_test(test_stop_drain_deadline),
        cmocka_unit_test(test_model_swap),
        cmocka_unit_test(test_bad_job_isolated),
        cmocka_unit_test(test_wrong_task),
        cmocka_unit_test(test_translate_jobs),
        cmocka_unit_test(test_translate_opts_grouping),
        cmocka_unit_test(test_report_invariance),
        cmocka_unit_test(test_scratch_shrinks),
        cmocka_unit_test(test_ctx_shrinks),
        cmocka_unit_test(test_cost_admission_and_batches),
        cmocka_unit_test(test_translate_cost_estimate),
        cmocka_unit_test(test_deadline_covers_compute),
        cmocka_unit_test(test_qa_stops_between_steps),
        cmocka_unit_test(test_translate_stops_between_steps),
    };
    TEST_GROUP_RETURN(t);
}
