/* batcher.h - per-model dynamic batching (DESIGN §1, §4).
 *
 * Requests become jobs: a job carries the encodings of one HTTP request
 * (one per text, or one per QA window) and the model version they were
 * encoded for. A batcher owns a bounded queue and worker thread(s), each with
 * its own eng_ctx. A free worker takes what is queued at once; otherwise it
 * waits up to max_delay_us for more. A batch is formed from whole jobs of one
 * job type and one model version, shortest sequences first, under a token
 * budget that counts padding (batch size x longest sequence, so a GPU backend
 * can use the same policy) and max_batch_size sequences. A job larger than the
 * budget runs alone. Jobs whose deadline passed or whose client went away are
 * completed without compute.
 *
 * The batcher knows no task: a job's type (srv_job_type, defined by each
 * handler) says which model task it needs, which jobs may share a batch, how a
 * batch runs and what its output looks like. It knows no model version either:
 * each job names the eng_model it runs on (the version current when it was
 * encoded), so a hot swap never changes a job in flight, and jobs of two
 * versions never share a batch.
 *
 * Refinements since the first contract: private field srv_job.prev (O(1)
 * unlink); submit returns ENG_EINVAL for a malformed job (programmer error); a
 * job bigger than queue_capacity is accepted into an empty queue; max_delay_us
 * is counted from the oldest queued job's enqueue time (batcher.c explains the
 * policy); on_batch is called before the batch's jobs are completed.
 */
#ifndef NLPD_SRV_BATCHER_H
#define NLPD_SRV_BATCHER_H

#include <stddef.h>
#include <stdatomic.h>
#include <stdint.h>

#include "nlpd_engine.h"

typedef enum srv_job_status {
    SRV_JOB_PENDING = 0,
    SRV_JOB_OK,
    SRV_JOB_EXPIRED,   /* deadline passed while queued, would pass before the batch ends
                          (estimated from recent batches), or passed between steps -> 504 */
    SRV_JOB_CANCELLED, /* client went away; nobody reads the result */
    SRV_JOB_FAILED,    /* engine error (message in error) -> 500, or 422 for input errors */
    SRV_JOB_SHUTDOWN,  /* batcher stopped before the job ran -> 503 */
} srv_job_status;

typedef struct srv_job srv_job;

/* CLOCK_MONOTONIC in ns: the clock of deadline_ns and the job timestamps. */
int64_t srv_now_ns(void);

/* A worker's reusable buffer (a batch's whole output, its encodings). It
 * grows to what a batch needs and shrinks after an unusually large batch:
 * srv_scratch_trim, called once per batch, remembers the largest request of
 * each of the last SRV_SCRATCH_WINDOW batches and gives memory back when the
 * capacity is over 4x the largest of them (and over SRV_SCRATCH_KEEP bytes). */
enum { SRV_SCRATCH_WINDOW = 8, SRV_SCRATCH_KEEP = 1 << 16 };

/* The peaks of the last SRV_SCRATCH_WINDOW batches (a ring). */
typedef struct srv_peaks {
    size_t recent[SRV_SCRATCH_WINDOW];
    int n_recent, next;
} srv_peaks;

/* Records one batch's peak; returns the largest recent one. */
size_t srv_peaks_push(srv_peaks *pk, size_t peak);
/* 1 when holding cap bytes is unusual for a need of need bytes (the rule above). */
int srv_peaks_shrink_due(size_t cap, size_t need);

typedef struct srv_scratch {
    void *p;
    size_t cap;
    size_t peak;     /* largest srv_scratch_get since the last trim */
    srv_peaks peaks; /* of the last batches */
} srv_scratch;

/* At least bytes of s (contents kept when it grows), or NULL when out of
 * memory. Valid until the next srv_scratch_get or srv_scratch_trim. */
void *srv_scratch_get(srv_scratch *s, size_t bytes);
/* End of a batch: record its peak; shrink s (to a power of two >= 4 KiB that
 * holds the recent peaks) when it is far above what recent batches used. */
void srv_scratch_trim(srv_scratch *s);
/* End of a batch on ctx: the same rule for the engine context's activation memory
 * (arena and backend scratch, eng_ctx_get_stats), shrunk with eng_ctx_trim. */
void srv_ctx_trim(eng_ctx *ctx, srv_peaks *pk);
void srv_scratch_free(srv_scratch *s);

/* A job's estimated cost, for admission and batch formation. */
typedef struct srv_job_cost {
    int64_t tokens; /* counted against max_batch_tokens (the default: n x longest sequence,
                       padding counted); a generating job counts its decode steps too */
    int64_t bytes;  /* working memory while it runs (KV cache, logits); 0: not estimated */
} srv_job_cost;

/* What a job computes and how (one per handler: classify, embed, qa, translate). */
typedef struct srv_job_type {
    const char *name;  /* for messages */
    eng_task task;     /* the model task its jobs need */
    /* Optional: may job b share a batch led by job a (same type and model)?
     * NULL: always. */
    int (*batchable)(const srv_job *a, const srv_job *b);
    /* Compute jobs[0..n) as one batch on m: enc holds their encodings in job
     * order (seqs in all). Fill each job's out / out_len (layout per type).
     * 0, or ENG_E* with err filled and no job holding output. */
    int (*run)(eng_ctx *ctx, eng_model *m, srv_job *const *jobs, int n,
               const eng_encoding *const *enc, int seqs, srv_scratch *scratch, eng_error *err);
    /* Free a job's out (NULL: free(out)). */
    void (*free_out)(srv_job *j);
    /* Optional: estimate job j's cost from its encodings, opts and model
     * (fields left 0 take the defaults). Called by submit. */
    void (*cost)(const srv_job *j, srv_job_cost *c);
} srv_job_type;

struct srv_job {
    /* --- set by the submitter --- */
    const srv_job_type *type;
    const void *opts;           /* type-specific options (e.g. a translate search), owned by
                                   the submitter; compared by type->batchable */
    eng_model *model;           /* the version to run on; the submitter holds a reference
                                   until complete */
    int n;                      /* number of encodings (>= 1) */
    const eng_encoding *enc;    /* n encodings, owned by the submitter, unchanged until complete */
    int64_t deadline_ns;        /* CLOCK_MONOTONIC ns; 0 = none */
    /* Optional: returns nonzero when the client has gone (checked before compute). */
    int (*client_gone)(void *arg);
    /* Called exactly once, on a batcher thread (or in srv_batcher_stop), when the
     * job leaves the batcher with a final status. It must not block; typically it
     * pushes the job to a completion queue and calls uv_async_send. */
    void (*complete)(srv_job *job, void *arg);
    void *arg;

    /* --- set by the batcher before complete() --- */
    srv_job_status status;
    int error_code;             /* ENG_E* when FAILED */
    char error[256];
    void *out;                  /* OK: the type's output, malloc'd; srv_job_free_output frees */
    size_t out_len;             /* in the type's units (floats, results) */
    int64_t enqueued_ns, started_ns, finished_ns; /* CLOCK_MONOTONIC */
    srv_job_cost cost;          /* set by submit (type->cost, or the defaults) */
    int batch_size;             /* sequences in the batch that ran it */
    int batch_tokens;           /* batch size x longest sequence (padding counted) */

    /* --- private to the batcher --- */
    srv_job *next, *prev;
    int max_len;
};

typedef struct srv_batch_opts {
    int max_batch_tokens;   /* token budget per batch, padding counted (default 8192) */
    int max_batch_size;     /* sequences per batch (default 64) */
    int max_delay_us;       /* how long a free worker waits to fill a batch, counted from the
                               oldest queued job's arrival (default 2000; 0: never waits) */
    int queue_capacity;     /* queued sequences before submit refuses (default 1024) */
    int64_t max_job_bytes;  /* submit refuses a job whose cost.bytes is larger (SRV_ETOOCOSTLY);
                               0: no limit */
    int64_t max_batch_bytes;/* jobs join a batch while their cost.bytes sum stays within
                               (the oldest always runs); 0: no limit */
    int workers;            /* worker threads (default 1) */
    int threads_per_worker; /* CPU threads each worker's eng_ctx uses (default: cores / workers) */
    const char *backend;    /* "cpu" (default) */
    /* After a device fault a worker recreates its engine context (a new stream, cuBLAS
     * handle and arena; the model's weights stay on the device): at once, then, should
     * recreating fail or the new context fault again, after recover_backoff_ms doubling
     * each time (at most 30 s), at most recover_attempts times in all (defaults 5 and
     * 200; 0 attempts: never). The worker counts as faulted until a recreated context has
     * run a batch with a result; meanwhile, and after the last attempt, its batches fail.
     * A sticky fault (eng_ctx_fault_sticky: the process's CUDA context is lost) makes no
     * attempt: the worker fails its batches until the process is restarted, and
     * on_sticky_fault (optional) is called on its thread, once per worker. */
    int recover_attempts;
    int recover_backoff_ms;
    void (*on_sticky_fault)(void *arg);
    void *on_sticky_fault_arg;
    /* Optional: requests on their way to a submit (srv_server.arriving). When set, a free
     * worker waits for batch-mates only while it is > 0: a lone request runs at once. */
    atomic_int *arriving;
    /* Optional observer, called on the worker thread after each computed batch,
     * before its jobs are completed (metrics). */
    void (*on_batch)(void *arg, int sequences, int tokens_with_padding, int64_t compute_ns);
    void *on_batch_arg;
} srv_batch_opts;

void srv_batch_opts_default(srv_batch_opts *o);

/* Free a finished job's output (type->free_out); leaves it NULL. Safe on a
 * job that produced nothing. */
void srv_job_free_output(srv_job *job);

typedef struct srv_batcher srv_batcher;

/* Start the workers. ENG_E* (with err) when a context cannot be made. */
int srv_batcher_new(const srv_batch_opts *o, srv_batcher **out, eng_error *err);

/* Queue a job. 0, or SRV_EQUEUE_FULL (queue_capacity reached: 429) or
 * SRV_ESTOPPED (batcher stopping: 503), SRV_ETOOCOSTLY (its estimated bytes
 * exceed max_job_bytes: 413; job->cost says how much), or ENG_EINVAL (n < 1,
 * no enc, no complete, no type or no model). On error complete() is NOT
 * called. The batcher owns the job from a successful submit until complete(). */
enum { SRV_EQUEUE_FULL = -100, SRV_ESTOPPED = -101, SRV_ETOOCOSTLY = -102 };

/* A type's run may stop between steps (QA window chunks, decode steps) and
 * return SRV_EDEADLINE, without output, once srv_jobs_late says every job's
 * deadline has passed: the jobs then end EXPIRED (504). */
enum { SRV_EDEADLINE = -103 };
int srv_jobs_late(srv_job *const *jobs, int n);
int srv_batcher_submit(srv_batcher *b, srv_job *job);

/* Sequences and jobs queued now (for metrics and Retry-After). */
int srv_batcher_queued_sequences(srv_batcher *b);
int srv_batcher_queued_jobs(srv_batcher *b);

/* A worker whose engine context stopped on a device fault (a CUDA error: it then fails
 * every run) and has not yet run a batch on a recreated context: the first such worker
 * (the first with a sticky fault, if any), its backend kind and device, the fault, and
 * where its recovery stands. */
typedef struct srv_batcher_fault_info {
    int worker;
    int device;
    char backend[32];
    char error[200];
    int attempts;     /* context recreations tried since the fault */
    int max_attempts; /* srv_batch_opts.recover_attempts */
    int recovering;   /* a recreated context waits for its first batch */
    int gave_up;      /* every attempt used: the worker fails its batches until restart */
    int sticky;       /* a sticky fault: no attempt is made; the process must restart */
    char recovery[300]; /* the above in words */
} srv_batcher_fault_info;

/* 1 (and *out) when a worker has faulted, else 0. Any thread. */
int srv_batcher_fault(srv_batcher *b, srv_batcher_fault_info *out);

/* Stop accepting; when drain, run what is queued (until deadline_ns, 0 = no
 * limit), else complete queued jobs with SRV_JOB_SHUTDOWN; join the workers.
 * Batches already computing finish normally. Call from one non-worker thread;
 * later calls do nothing. */
void srv_batcher_stop(srv_batcher *b, int drain, int64_t deadline_ns);
void srv_batcher_free(srv_batcher *b); /* stops (without drain) if still running */

#endif
