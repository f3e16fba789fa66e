/* batcher.c - per-model dynamic batching (batcher.h, DESIGN §1, §4).
 *
 * One mutex guards the queue (a doubly linked FIFO of jobs). Workers sleep on
 * `work` (CLOCK_MONOTONIC condvar); submit signals it.
 *
 * When a worker sees queued jobs it forms a batch at once if
 *   - the queued jobs already fill a batch (max_batch_size sequences, or
 *     max_batch_tokens counting each job's padding to its own longest
 *     sequence; counted over every type and version, so a mix may start a
 *     smaller batch early, which costs throughput, never correctness), or
 *   - the oldest job has waited max_delay_us already (under load this is the
 *     usual case: jobs queued during the previous batch go straight in), or
 *   - the batcher is stopping (drain runs the queue down without waiting);
 * otherwise, if more requests are on their way (opts.arriving > 0: read by the server,
 * not yet submitted; always, when the count is not given), it waits until
 * oldest.enqueued + max_delay_us or the next submit, whichever comes first. A lone
 * request thus runs at once, and a job never waits for batch-mates longer than
 * max_delay_us (set it to 0 for no waiting at all).
 *
 * Batch formation (under the lock, O(scanned queue prefix) + O(W log W)):
 *   1. scan the queue from the oldest job; jobs whose deadline passed are
 *      unlinked (EXPIRED, completed after unlocking); up to W = window jobs
 *      that may share a batch with the oldest live job (same type and model,
 *      and the type's batchable) become candidates;
 *   2. the oldest candidate is always in the batch (FIFO fairness: no job
 *      starves under a stream of shorter ones); alone when it exceeds the
 *      budget or max_batch_size by itself;
 *   3. the others are taken shortest first (sorted by their longest sequence,
 *      ties by age) while sequences <= max_batch_size and
 *      sequences x longest sequence <= max_batch_tokens (padding counted), so
 *      the batch holds as many sequences as the budget allows with the least
 *      padding. The batch runs in that length order.
 * After unlocking, jobs whose client went away (CANCELLED) or whose deadline
 * has now passed (EXPIRED) are completed without compute.
 *
 * The engine packs sequences without padding and computes each one
 * independently, so a text's output does not depend on its batch-mates (the
 * unit tests check this bitwise).
 */
#include "batcher.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct cand {
    srv_job *job;
    int age; /* position in FIFO order among the candidates (tie-break) */
} cand;

typedef struct worker {
    srv_batcher *b;
    pthread_t thread;
    int started;
    eng_ctx *ctx;
    cand *cands;              /* window candidates, then the batch (sorted) */
    srv_job **batch;          /* jobs to compute after the drop checks */
    srv_scratch enc;          /* the batch's encodings, concatenated (const eng_encoding *) */
    srv_scratch scratch;      /* the type's output for the whole batch */
    srv_peaks ctx_peaks;      /* ctx's activation memory per recent batch (srv_ctx_trim) */
    int faulted;              /* (under b->mu) ctx reported a device fault: fault says what;
                               * cleared once a recreated context runs a batch */
    char fault[200];
    int attempts;             /* (under b->mu) context recreations since the fault */
    int recovering;           /* (under b->mu) ctx is a recreated one, not yet proven */
    int gave_up;              /* (under b->mu) recover_attempts used up, or sticky */
    int sticky;               /* (under b->mu) the fault is sticky: no recreation can help */
    char recover_err[200];    /* (under b->mu) why the last recreation failed, or "" */
    int64_t next_try_ns;      /* (worker thread) no recreation before this */
    const char *be_name;      /* the backend kind and device of the contexts */
    int be_dev;
} worker;

struct srv_batcher {
    srv_batch_opts o;
    int window; /* candidates considered per batch */

    pthread_mutex_t mu;
    pthread_cond_t work;    /* queue changed or stopping: workers re-check */
    pthread_cond_t drained; /* the queue became empty (stop with drain waits) */
    srv_job *head, *tail;
    int q_jobs, q_seqs;
    int64_t q_tok;       /* sum over jobs of cost.tokens (at least n x max_len): a lower
                          * bound of their padded cost as one batch */
    int accepting;       /* submit allowed */
    int draining;        /* stopping with drain: form batches without delay */
    int quit;            /* workers exit after their current batch */
    int stop_called;

    int nworkers;
    worker *w;

    /* Recent compute speed per job type (under mu): ns per unit of batch work
     * (max(sequences x longest, sum of cost.tokens)), an exponential average. */
    struct {
        const srv_job_type *type;
        double ns_per_work;
        int samples;
    } rate[8];
};

int64_t srv_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static struct timespec to_ts(int64_t ns)
{
    struct timespec ts = {.tv_sec = ns / 1000000000, .tv_nsec = ns % 1000000000};
    return ts;
}

void srv_batch_opts_default(srv_batch_opts *o)
{
    memset(o, 0, sizeof *o);
    o->max_batch_tokens = 8192;
    o->max_batch_size = 64;
    o->max_delay_us = 2000;
    o->queue_capacity = 1024;
    o->workers = 1;
    o->threads_per_worker = 0;
    o->backend = "cpu";
    o->recover_attempts = 5;
    o->recover_backoff_ms = 200;
}

/* ------------------------------------------------------------------ queue */

static void q_unlink(srv_batcher *b, srv_job *j)
{
    if (j->prev)
        j->prev->next = j->next;
    else
        b->head = j->next;
    if (j->next)
        j->next->prev = j->prev;
    else
        b->tail = j->prev;
    j->next = j->prev = NULL;
    b->q_jobs--;
    b->q_seqs -= j->n;
    b->q_tok -= j->cost.tokens;
}

/* Finish a job that leaves without compute. */
static void finish(srv_job *j, srv_job_status st, int64_t t)
{
    j->status = st;
    if (!j->started_ns)
        j->started_ns = t;
    j->finished_ns = t;
    j->complete(j, j->arg);
}

/* Complete a list linked through next (read before complete: the job may be freed). */
static void finish_list(srv_job *j, srv_job_status st)
{
    int64_t t = srv_now_ns();
    while (j) {
        srv_job *next = j->next;
        j->next = NULL;
        finish(j, st, t);
        j = next;
    }
}

int srv_batcher_submit(srv_batcher *b, srv_job *job)
{
    if (!b || !job || job->n < 1 || !job->enc || !job->complete || !job->type ||
        !job->type->run || !job->model)
        return ENG_EINVAL;
    int max_len = 0;
    for (int i = 0; i < job->n; i++)
        max_len = job->enc[i].n > max_len ? job->enc[i].n : max_len;
    job->max_len = max_len;
    memset(&job->cost, 0, sizeof job->cost);
    if (job->type->cost)
        job->type->cost(job, &job->cost);
    if (job->cost.tokens < (int64_t)job->n * max_len)
        job->cost.tokens = (int64_t)job->n * max_len;
    if (job->cost.bytes < 0)
        job->cost.bytes = 0;
    if (b->o.max_job_bytes > 0 && job->cost.bytes > b->o.max_job_bytes)
        return SRV_ETOOCOSTLY;
    job->status = SRV_JOB_PENDING;
    job->error_code = 0;
    job->error[0] = 0;
    job->out = NULL;
    job->out_len = 0;
    job->started_ns = job->finished_ns = 0;
    job->batch_size = job->batch_tokens = 0;
    job->next = job->prev = NULL;

    pthread_mutex_lock(&b->mu);
    if (!b->accepting) {
        pthread_mutex_unlock(&b->mu);
        return SRV_ESTOPPED;
    }
    /* A job larger than the whole queue is still accepted into an empty queue,
     * or it could never run. */
    if (b->q_seqs > 0 && b->q_seqs + job->n > b->o.queue_capacity) {
        pthread_mutex_unlock(&b->mu);
        return SRV_EQUEUE_FULL;
    }
    job->enqueued_ns = srv_now_ns();
    job->prev = b->tail;
    if (b->tail)
        b->tail->next = job;
    else
        b->head = job;
    b->tail = job;
    b->q_jobs++;
    b->q_seqs += job->n;
    b->q_tok += job->cost.tokens;
    pthread_cond_signal(&b->work);
    pthread_mutex_unlock(&b->mu);
    return 0;
}

int srv_batcher_queued_sequences(srv_batcher *b)
{
    pthread_mutex_lock(&b->mu);
    int n = b->q_seqs;
    pthread_mutex_unlock(&b->mu);
    return n;
}

int srv_batcher_queued_jobs(srv_batcher *b)
{
    pthread_mutex_lock(&b->mu);
    int n = b->q_jobs;
    pthread_mutex_unlock(&b->mu);
    return n;
}

/* -------------------------------------------------------- batch formation */

static int cand_cmp(const void *pa, const void *pb)
{
    const cand *a = pa, *b = pb;
    if (a->job->max_len != b->job->max_len)
        return a->job->max_len < b->job->max_len ? -1 : 1;
    return (a->age > b->age) - (a->age < b->age);
}

/* May job j join a batch led by job first? Same type and model version (one
 * engine call runs one model), and whatever the type requires. */
static int batchable(const srv_job *first, const srv_job *j)
{
    return j->type == first->type && j->model == first->model &&
           (!j->type->batchable || j->type->batchable(first, j));
}

/* Under the lock: take a batch out of the queue into w->cands[0..*nsel),
 * sorted by length; expired jobs go to *expired. */
static int form_batch(srv_batcher *b, worker *w, srv_job **expired, int64_t t)
{
    int k = 0;
    srv_job *j = b->head, *lead = NULL;
    while (j && k < b->window) {
        srv_job *next = j->next;
        if (j->deadline_ns && t >= j->deadline_ns) {
            q_unlink(b, j);
            j->next = *expired;
            *expired = j;
        } else if (!lead || batchable(lead, j)) {
            lead = lead ? lead : j;
            w->cands[k].job = j;
            w->cands[k].age = k;
            k++;
        }
        j = next;
    }
    if (k == 0)
        return 0;

    const int64_t budget = b->o.max_batch_tokens, max_bytes = b->o.max_batch_bytes;
    const int max_bs = b->o.max_batch_size;
    srv_job *oldest = w->cands[0].job;
    int nsel = 1, seqs = oldest->n, longest = oldest->max_len;
    /* A batch's tokens: padding counted (sequences x longest), or the sum of
     * its jobs' costs when larger (decode steps); its bytes: the sum. */
    int64_t cost_tok = oldest->cost.tokens, bytes = oldest->cost.bytes;
    if (seqs < max_bs && (int64_t)seqs * longest < budget && cost_tok < budget && k > 1 &&
        (max_bytes <= 0 || bytes < max_bytes)) {
        qsort(w->cands + 1, (size_t)(k - 1), sizeof *w->cands, cand_cmp);
        for (int i = 1; i < k && seqs < max_bs; i++) {
            srv_job *c = w->cands[i].job;
            int s = seqs + c->n, l = c->max_len > longest ? c->max_len : longest;
            int64_t ct = cost_tok + c->cost.tokens, by = bytes + c->cost.bytes;
            if (s > max_bs || (int64_t)s * l > budget || ct > budget ||
                (max_bytes > 0 && by > max_bytes))
                continue; /* a later, shorter-in-count job may still fit */
            w->cands[nsel++] = w->cands[i];
            seqs = s;
            longest = l;
            cost_tok = ct;
            bytes = by;
        }
    }
    /* The selected jobs are in length order except the oldest (first): put it
     * in its place (insertion, O(nsel)). */
    cand first = w->cands[0];
    int pos = 1;
    while (pos < nsel && cand_cmp(&w->cands[pos], &first) < 0) {
        w->cands[pos - 1] = w->cands[pos];
        pos++;
    }
    w->cands[pos - 1] = first;
    for (int i = 0; i < nsel; i++)
        q_unlink(b, w->cands[i].job);
    return nsel;
}

/* Under the lock: does the queue hold a full batch? */
static int queue_fills_batch(const srv_batcher *b)
{
    return b->q_seqs >= b->o.max_batch_size || b->q_tok >= b->o.max_batch_tokens;
}

/* ---------------------------------------------------------------- compute */

void *srv_scratch_get(srv_scratch *s, size_t bytes)
{
    if (bytes > s->peak)
        s->peak = bytes;
    if (bytes <= s->cap)
        return s->p;
    size_t n = s->cap ? s->cap : 4096;
    while (n < bytes)
        n *= 2;
    void *p = realloc(s->p, n);
    if (!p)
        return NULL;
    s->p = p;
    s->cap = n;
    return p;
}

size_t srv_peaks_push(srv_peaks *pk, size_t peak)
{
    pk->recent[pk->next] = peak;
    pk->next = (pk->next + 1) % SRV_SCRATCH_WINDOW;
    if (pk->n_recent < SRV_SCRATCH_WINDOW)
        pk->n_recent++;
    size_t need = 0;
    for (int i = 0; i < pk->n_recent; i++)
        need = pk->recent[i] > need ? pk->recent[i] : need;
    return need;
}

int srv_peaks_shrink_due(size_t cap, size_t need)
{
    return cap > SRV_SCRATCH_KEEP && cap / 4 > need;
}

void srv_scratch_trim(srv_scratch *s)
{
    size_t need = srv_peaks_push(&s->peaks, s->peak);
    s->peak = 0;
    if (!s->p || !srv_peaks_shrink_due(s->cap, need))
        return;
    size_t n = 4096;
    while (n < need)
        n *= 2;
    if (n < s->cap) {
        void *p = realloc(s->p, n);
        if (p) { /* a failed shrink keeps the larger block */
            s->p = p;
            s->cap = n;
        }
    }
}

void srv_ctx_trim(eng_ctx *ctx, srv_peaks *pk)
{
    eng_ctx_stats st;
    eng_ctx_get_stats(ctx, &st);
    size_t need = srv_peaks_push(pk, st.peak_bytes);
    /* Trimming to SIZE_MAX frees nothing: it only starts the next batch's peak. */
    eng_ctx_trim(ctx, srv_peaks_shrink_due(st.reserved_bytes, need) ? need : SIZE_MAX);
}

void srv_scratch_free(srv_scratch *s)
{
    free(s->p);
    memset(s, 0, sizeof *s);
}

void srv_job_free_output(srv_job *j)
{
    if (j->out) {
        if (j->type && j->type->free_out)
            j->type->free_out(j);
        else
            free(j->out);
    }
    j->out = NULL;
    j->out_len = 0;
}

static void set_error(srv_job *j, int code, const char *msg)
{
    j->status = SRV_JOB_FAILED;
    j->error_code = code;
    const char *m = msg && *msg ? msg : eng_strerror(code);
    size_t len = strnlen(m, sizeof j->error - 1); /* long engine messages are cut */
    memcpy(j->error, m, len);
    j->error[len] = 0;
}

int srv_jobs_late(srv_job *const *jobs, int n)
{
    int64_t t = srv_now_ns();
    for (int i = 0; i < n; i++)
        if (!jobs[i]->deadline_ns || t < jobs[i]->deadline_ns)
            return 0;
    return n > 0;
}

/* The work a batch of jobs[0..n) does, in token units (padding counted). */
static int64_t batch_work(srv_job *const *jobs, int n)
{
    int64_t seqs = 0, longest = 0, cost = 0;
    for (int i = 0; i < n; i++) {
        seqs += jobs[i]->n;
        longest = jobs[i]->max_len > longest ? jobs[i]->max_len : longest;
        cost += jobs[i]->cost.tokens;
    }
    return seqs * longest > cost ? seqs * longest : cost;
}

/* Record that a batch of `work` units of type took ns. */
static void rate_note(srv_batcher *b, const srv_job_type *type, int64_t work, int64_t ns)
{
    if (work <= 0 || ns <= 0)
        return;
    double v = (double)ns / (double)work;
    pthread_mutex_lock(&b->mu);
    int slot = -1, n = (int)(sizeof b->rate / sizeof *b->rate);
    for (int i = 0; i < n && slot < 0; i++)
        if (b->rate[i].type == type || !b->rate[i].type)
            slot = i;
    if (slot < 0)
        slot = n - 1; /* more types than slots: the last one is shared */
    if (b->rate[slot].type != type) {
        b->rate[slot].type = type;
        b->rate[slot].samples = 0;
    }
    b->rate[slot].ns_per_work =
        b->rate[slot].samples ? 0.7 * b->rate[slot].ns_per_work + 0.3 * v : v;
    b->rate[slot].samples++;
    pthread_mutex_unlock(&b->mu);
}

/* Estimated ns for `work` units of type, or -1 when too few batches were seen. */
static int64_t rate_estimate(srv_batcher *b, const srv_job_type *type, int64_t work)
{
    int64_t est = -1;
    pthread_mutex_lock(&b->mu);
    for (size_t i = 0; i < sizeof b->rate / sizeof *b->rate; i++)
        if (b->rate[i].type == type && b->rate[i].samples >= 2)
            est = (int64_t)(b->rate[i].ns_per_work * (double)work);
    pthread_mutex_unlock(&b->mu);
    return est;
}

/* Run jobs[0..n) as one batch on their model and fill their results
 * (status OK or FAILED); does not complete them. Returns 1, leaving the jobs
 * untouched, when the engine refused an input of a multi-job batch
 * (ENG_EINVAL/ETOOLONG): the caller then runs the jobs one by one so only the
 * bad one fails. */
static int run_batch(srv_batcher *b, worker *w, srv_job **jobs, int n, eng_error *err)
{
    const srv_job_type *type = jobs[0]->type;
    eng_model *m = jobs[0]->model;
    const eng_model_info *info = eng_model_get_info(m);
    int seqs = 0, longest = 0;
    for (int i = 0; i < n; i++) {
        seqs += jobs[i]->n;
        longest = jobs[i]->max_len > longest ? jobs[i]->max_len : longest;
    }
    int rc = 0;
    const eng_encoding **enc = NULL;
    err->code = 0;
    err->msg[0] = 0;
    if (type->task != info->task) {
        rc = ENG_EINVAL;
        snprintf(err->msg, sizeof err->msg, "the model does its task '%s', not '%s'",
                 eng_task_name(info->task), eng_task_name(type->task));
    } else if (!(enc = srv_scratch_get(&w->enc, (size_t)seqs * sizeof *enc))) {
        rc = ENG_ENOMEM;
        snprintf(err->msg, sizeof err->msg, "out of memory for a batch of %d sequences", seqs);
    }

    int64_t t0 = srv_now_ns();
    if (!rc) {
        int e = 0;
        for (int i = 0; i < n; i++)
            for (int s = 0; s < jobs[i]->n; s++)
                enc[e++] = &jobs[i]->enc[s];
        rc = type->run(w->ctx, m, jobs, n, enc, seqs, &w->scratch, err);
    }
    int64_t t1 = srv_now_ns();

    /* A bad input fails the whole engine call: the caller isolates it. */
    if (rc && n > 1 && (rc == ENG_EINVAL || rc == ENG_ETOOLONG) && type->task == info->task)
        return 1;

    int batch_tokens = seqs * longest;
    if (!rc)
        rate_note(b, type, batch_work(jobs, n), t1 - t0);
    if (b->o.on_batch && !rc)
        b->o.on_batch(b->o.on_batch_arg, seqs, batch_tokens, t1 - t0);
    for (int i = 0; i < n; i++) {
        srv_job *j = jobs[i];
        j->started_ns = t0;
        j->finished_ns = t1;
        j->batch_size = seqs;
        j->batch_tokens = batch_tokens;
        if (rc == SRV_EDEADLINE)
            j->status = SRV_JOB_EXPIRED; /* stopped between steps */
        else if (rc)
            set_error(j, rc, err->msg);
        else
            j->status = SRV_JOB_OK;
    }
    return 0;
}

/* ------------------------------------------------------- device faults */

/* Replaces w's faulted context (worker thread): the attempt is counted, the next one
 * is not tried before the backoff has passed, and after recover_attempts the worker
 * gives up. w->ctx is NULL when the attempt failed. */
static void recreate_ctx(srv_batcher *b, worker *w)
{
    int max = b->o.recover_attempts;
    pthread_mutex_lock(&b->mu);
    if (w->gave_up || w->attempts >= max) {
        w->gave_up = 1;
        pthread_mutex_unlock(&b->mu);
        eng_ctx_free(w->ctx);
        w->ctx = NULL;
        return;
    }
    int k = ++w->attempts;
    w->recovering = 0;
    pthread_mutex_unlock(&b->mu);

    eng_ctx_free(w->ctx);
    w->ctx = NULL;
    eng_ctx_opts co = {.backend = b->o.backend, .threads = b->o.threads_per_worker};
    eng_error e = {0};
    int rc = eng_ctx_new(&co, &w->ctx, &e);
    int64_t backoff = (int64_t)b->o.recover_backoff_ms * 1000000;
    for (int i = 1; i < k && backoff < 30 * (int64_t)1000000000; i++)
        backoff *= 2;
    if (backoff > 30 * (int64_t)1000000000)
        backoff = 30 * (int64_t)1000000000;
    w->next_try_ns = srv_now_ns() + backoff;

    pthread_mutex_lock(&b->mu);
    if (rc) {
        w->ctx = NULL;
        snprintf(w->recover_err, sizeof w->recover_err, "%.199s",
                 e.msg[0] ? e.msg : eng_strerror(rc));
        w->gave_up = k >= max;
    } else {
        w->recover_err[0] = 0;
        w->recovering = 1;
    }
    pthread_mutex_unlock(&b->mu);
}

/* After a batch (worker thread): a new fault is recorded and the context replaced (at
 * once the first time, later after the backoff); a recreated context that ran the batch
 * with a result clears the fault. */
static void check_fault(srv_batcher *b, worker *w, srv_job *const *jobs, int n)
{
    const char *why = w->ctx ? eng_ctx_fault(w->ctx) : NULL;
    if (why) {
        int sticky = eng_ctx_fault_sticky(w->ctx);
        pthread_mutex_lock(&b->mu);
        snprintf(w->fault, sizeof w->fault, "%s", why);
        w->faulted = 1;
        w->recovering = 0;
        if (sticky) /* the process's CUDA context is lost: no attempt */
            w->sticky = w->gave_up = 1;
        pthread_mutex_unlock(&b->mu);
        if (sticky) {
            eng_ctx_free(w->ctx);
            w->ctx = NULL;
            if (b->o.on_sticky_fault)
                b->o.on_sticky_fault(b->o.on_sticky_fault_arg);
        } else if (srv_now_ns() >= w->next_try_ns) {
            recreate_ctx(b, w);
        } else { /* wait for the backoff: no context meanwhile */
            eng_ctx_free(w->ctx);
            w->ctx = NULL;
        }
        return;
    }
    int ok = 0;
    for (int i = 0; i < n && !ok; i++)
        ok = jobs[i]->status == SRV_JOB_OK;
    pthread_mutex_lock(&b->mu);
    if (w->recovering && ok) {
        w->faulted = w->recovering = w->attempts = w->gave_up = 0;
        w->fault[0] = w->recover_err[0] = 0;
        w->next_try_ns = 0;
    }
    pthread_mutex_unlock(&b->mu);
}

/* Fails a batch that has no context to run on (its device faulted; the context is
 * being recreated, or every attempt failed). */
static void fail_no_ctx(srv_batcher *b, worker *w, srv_job *const *jobs, int n)
{
    char msg[600];
    pthread_mutex_lock(&b->mu);
    snprintf(msg, sizeof msg, "backend %.31s:%d faulted (%.199s); %s%.199s", w->be_name, w->be_dev,
             w->fault, w->sticky   ? "a sticky error: the process must be restarted"
                       : w->gave_up ? "recreating its context failed, no attempt left: "
                                    : "its context is being recreated",
             w->gave_up && !w->sticky ? w->recover_err : "");
    pthread_mutex_unlock(&b->mu);
    int64_t t = srv_now_ns();
    for (int i = 0; i < n; i++) {
        jobs[i]->started_ns = jobs[i]->finished_ns = t;
        set_error(jobs[i], ENG_EBACKEND, msg);
    }
}

/* Outside the lock: drop, compute and complete the batch in w->cands[0..nsel). */
static void process(srv_batcher *b, worker *w, int nsel)
{
    int64_t t = srv_now_ns();
    int n = 0;
    for (int i = 0; i < nsel; i++) {
        srv_job *j = w->cands[i].job;
        if (j->deadline_ns && t >= j->deadline_ns)
            finish(j, SRV_JOB_EXPIRED, t);
        else if (j->client_gone && j->client_gone(j->arg))
            finish(j, SRV_JOB_CANCELLED, t);
        else
            w->batch[n++] = j;
    }
    if (!n)
        return;
    /* A batch that would end after every member's deadline is not started:
     * from the recent speed of this job type, even at twice that speed. */
    int64_t est = rate_estimate(b, w->batch[0]->type, batch_work(w->batch, n));
    int late = est > 0;
    for (int i = 0; late && i < n; i++)
        late = w->batch[i]->deadline_ns && t + est / 2 > w->batch[i]->deadline_ns;
    if (late) {
        for (int i = 0; i < n; i++)
            finish(w->batch[i], SRV_JOB_EXPIRED, t);
        return;
    }

    eng_error err = {0};
    /* A faulted context was dropped: a new one once the backoff has passed */
    if (!w->ctx && srv_now_ns() >= w->next_try_ns)
        recreate_ctx(b, w);
    if (!w->ctx) {
        fail_no_ctx(b, w, w->batch, n);
    } else {
        if (run_batch(b, w, w->batch, n, &err)) {
            for (int i = 0; i < n; i++)
                run_batch(b, w, &w->batch[i], 1, &err);
        }
        /* A device fault (the context then fails every run): kept for /readyz, and the
         * context replaced. Read here, on the worker's thread, the only one that uses
         * the context. */
        check_fault(b, w, w->batch, n);
    }
    for (int i = 0; i < n; i++)
        w->batch[i]->complete(w->batch[i], w->batch[i]->arg);
    /* After an unusually large batch, give the memory back. */
    srv_scratch_trim(&w->scratch);
    srv_scratch_trim(&w->enc);
    if (w->ctx) /* none while a faulted one waits to be recreated */
        srv_ctx_trim(w->ctx, &w->ctx_peaks);
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    srv_batcher *b = w->b;
    pthread_mutex_lock(&b->mu);
    for (;;) {
        if (b->quit)
            break;
        if (!b->head) {
            if (b->draining)
                break; /* stop with drain: the queue is run down */
            pthread_cond_wait(&b->work, &b->mu);
            continue;
        }
        int64_t t = srv_now_ns();
        if (!b->draining && !queue_fills_batch(b) &&
            (!b->o.arriving || atomic_load_explicit(b->o.arriving, memory_order_acquire) > 0)) {
            int64_t until = b->head->enqueued_ns + (int64_t)b->o.max_delay_us * 1000;
            if (t < until) {
                struct timespec ts = to_ts(until);
                pthread_cond_timedwait(&b->work, &b->mu, &ts);
                continue;
            }
        }
        srv_job *expired = NULL;
        int nsel = form_batch(b, w, &expired, t);
        if (!b->head)
            pthread_cond_broadcast(&b->drained);
        else
            pthread_cond_signal(&b->work); /* another free worker takes the rest */
        pthread_mutex_unlock(&b->mu);

        finish_list(expired, SRV_JOB_EXPIRED);
        if (nsel)
            process(b, w, nsel);

        pthread_mutex_lock(&b->mu);
    }
    pthread_mutex_unlock(&b->mu);
    return NULL;
}

int srv_batcher_fault(srv_batcher *b, srv_batcher_fault_info *out)
{
    pthread_mutex_lock(&b->mu);
    int first = -1; /* a sticky fault first: it is the one that needs a restart */
    for (int i = 0; i < b->nworkers; i++)
        if (b->w[i].faulted && (first < 0 || (b->w[i].sticky && !b->w[first].sticky)))
            first = i;
    if (first >= 0) {
        const worker *w = &b->w[first];
        out->worker = first;
        out->device = w->be_dev;
        snprintf(out->backend, sizeof out->backend, "%s", w->be_name);
        snprintf(out->error, sizeof out->error, "%s", w->fault);
        out->attempts = w->attempts;
        out->max_attempts = b->o.recover_attempts;
        out->recovering = w->recovering;
        out->gave_up = w->gave_up;
        out->sticky = w->sticky;
        if (w->sticky)
            snprintf(out->recovery, sizeof out->recovery, "a sticky CUDA error: it broke the "
                     "process's CUDA context, which no new context can use; the process must "
                     "be restarted");
        else if (w->gave_up)
            snprintf(out->recovery, sizeof out->recovery, "gave up after %d context "
                     "recreation%s%s%s; restart nlpd", w->attempts, w->attempts == 1 ? "" : "s",
                     w->recover_err[0] ? ": " : "", w->recover_err);
        else if (w->recovering)
            snprintf(out->recovery, sizeof out->recovery, "context recreated (attempt %d of "
                     "%d), ready again once it has run a batch", w->attempts,
                     b->o.recover_attempts);
        else if (w->attempts)
            snprintf(out->recovery, sizeof out->recovery, "recreating the context: attempt %d "
                     "of %d failed: %s", w->attempts, b->o.recover_attempts, w->recover_err);
        else
            snprintf(out->recovery, sizeof out->recovery, "the context will be recreated");
    }
    pthread_mutex_unlock(&b->mu);
    return first >= 0;
}

/* ------------------------------------------------------------- lifecycle */

int srv_batcher_new(const srv_batch_opts *opts, srv_batcher **out, eng_error *err)
{
    eng_error dummy;
    if (!err)
        err = &dummy;
    err->code = 0;
    err->msg[0] = 0;
    *out = NULL;
    srv_batch_opts d;
    srv_batch_opts_default(&d);
    srv_batch_opts o = opts ? *opts : d;
    if (o.max_batch_tokens <= 0)
        o.max_batch_tokens = d.max_batch_tokens;
    if (o.max_batch_size <= 0)
        o.max_batch_size = d.max_batch_size;
    if (o.max_delay_us < 0)
        o.max_delay_us = 0;
    if (o.queue_capacity <= 0)
        o.queue_capacity = d.queue_capacity;
    if (o.workers <= 0)
        o.workers = d.workers;
    if (!o.backend)
        o.backend = d.backend;
    if (o.recover_attempts < 0)
        o.recover_attempts = 0;
    if (o.recover_backoff_ms < 0)
        o.recover_backoff_ms = 0;
    if (o.threads_per_worker <= 0) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        o.threads_per_worker = cores > o.workers ? (int)(cores / o.workers) : 1;
    }

    int rc = ENG_ENOMEM;
    srv_batcher *b = calloc(1, sizeof *b);
    if (!b)
        goto fail;
    b->o = o;
    /* Enough candidates to choose similar lengths from, bounded so forming a
     * batch stays cheap whatever the queue length. */
    b->window = 4 * o.max_batch_size;
    if (b->window > o.queue_capacity)
        b->window = o.queue_capacity;
    if (b->window < 1)
        b->window = 1;
    b->accepting = 1;
    b->nworkers = o.workers;

    pthread_condattr_t ca;
    if (pthread_condattr_init(&ca))
        goto fail_b;
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    int ok = pthread_cond_init(&b->work, &ca) == 0;
    if (ok && pthread_cond_init(&b->drained, &ca) != 0) {
        pthread_cond_destroy(&b->work);
        ok = 0;
    }
    pthread_condattr_destroy(&ca);
    if (!ok)
        goto fail_b;
    if (pthread_mutex_init(&b->mu, NULL))
        goto fail_cond;
    if (!(b->w = calloc((size_t)o.workers, sizeof *b->w)))
        goto fail_mu;

    int nw;
    for (nw = 0; nw < o.workers; nw++) {
        worker *w = &b->w[nw];
        w->b = b;
        w->cands = malloc((size_t)b->window * sizeof *w->cands);
        w->batch = malloc((size_t)b->window * sizeof *w->batch);
        if (!w->cands || !w->batch) {
            rc = ENG_ENOMEM;
            snprintf(err->msg, sizeof err->msg, "batcher: out of memory");
            goto fail_workers;
        }
        eng_ctx_opts co = {.backend = o.backend, .threads = o.threads_per_worker};
        if ((rc = eng_ctx_new(&co, &w->ctx, err)))
            goto fail_workers;
        w->be_name = eng_ctx_backend_name(w->ctx); /* the ops table's: static */
        w->be_dev = eng_ctx_device(w->ctx);
    }
    for (nw = 0; nw < o.workers; nw++) {
        if (pthread_create(&b->w[nw].thread, NULL, worker_main, &b->w[nw])) {
            rc = ENG_ENOMEM;
            snprintf(err->msg, sizeof err->msg, "batcher: cannot start worker thread %d", nw);
            goto fail_threads;
        }
        b->w[nw].started = 1;
    }
    *out = b;
    return 0;

fail_threads:
    pthread_mutex_lock(&b->mu);
    b->quit = 1;
    pthread_cond_broadcast(&b->work);
    pthread_mutex_unlock(&b->mu);
    for (int i = 0; i < o.workers; i++)
        if (b->w[i].started)
            pthread_join(b->w[i].thread, NULL);
fail_workers:
    for (int i = 0; i < o.workers; i++) {
        eng_ctx_free(b->w[i].ctx);
        free(b->w[i].cands);
        free(b->w[i].batch);
    }
    free(b->w);
fail_mu:
    pthread_mutex_destroy(&b->mu);
fail_cond:
    pthread_cond_destroy(&b->work);
    pthread_cond_destroy(&b->drained);
fail_b:
    free(b);
fail:
    if (!err->msg[0])
        snprintf(err->msg, sizeof err->msg, "batcher: out of memory");
    err->code = rc;
    return rc;
}

void srv_batcher_stop(srv_batcher *b, int drain, int64_t deadline_ns)
{
    pthread_mutex_lock(&b->mu);
    if (b->stop_called) {
        pthread_mutex_unlock(&b->mu);
        return;
    }
    b->stop_called = 1;
    b->accepting = 0;
    if (drain) {
        b->draining = 1;
        pthread_cond_broadcast(&b->work);
        while (b->head) {
            if (!deadline_ns) {
                pthread_cond_wait(&b->drained, &b->mu);
                continue;
            }
            if (srv_now_ns() >= deadline_ns)
                break;
            struct timespec ts = to_ts(deadline_ns);
            pthread_cond_timedwait(&b->drained, &b->mu, &ts);
        }
    }
    /* Whatever is still queued leaves with SHUTDOWN; batches in flight finish. */
    srv_job *rest = b->head;
    b->head = b->tail = NULL;
    b->q_jobs = b->q_seqs = 0;
    b->q_tok = 0;
    b->quit = 1;
    pthread_cond_broadcast(&b->work);
    pthread_mutex_unlock(&b->mu);

    finish_list(rest, SRV_JOB_SHUTDOWN);
    for (int i = 0; i < b->nworkers; i++) {
        if (b->w[i].started) {
            pthread_join(b->w[i].thread, NULL);
            b->w[i].started = 0;
        }
    }
}

void srv_batcher_free(srv_batcher *b)
{
    if (!b)
        return;
    srv_batcher_stop(b, 0, 0);
    for (int i = 0; i < b->nworkers; i++) {
        worker *w = &b->w[i];
        eng_ctx_free(w->ctx);
        free(w->cands);
        free(w->batch);
        srv_scratch_free(&w->enc);
        srv_scratch_free(&w->scratch);
    }
    free(b->w);
    pthread_mutex_destroy(&b->mu);
    pthread_cond_destroy(&b->work);
    pthread_cond_destroy(&b->drained);
    free(b);
}
