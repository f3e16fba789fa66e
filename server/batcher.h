/* batcher.h - per-model dynamic batching (DESIGN §1, §4).
 *
 * Requests become jobs: a job carries the encodings of one HTTP request
 * (one per text, or one per QA window) for one served model. A batcher owns a
 * bounded queue and worker thread(s), each with its own eng_ctx. A free worker
 * takes what is queued at once; otherwise it waits up to max_delay_us for more.
 * A batch is formed from whole jobs, shortest sequences first, under a token
 * budget that counts padding (batch size x longest sequence, so a GPU backend
 * can use the same policy) and max_batch_size sequences. A job larger than the
 * budget runs alone. Jobs whose deadline passed or whose client went away are
 * completed without compute. Each batch takes one reference to the slot's
 * current model version, so a hot swap never changes a batch in flight.
 *
 * Refinements since the first contract (names and semantics unchanged):
 * private field srv_job.prev (O(1) unlink); submit returns ENG_EINVAL for a
 * malformed job (programmer error); a job bigger than queue_capacity is
 * accepted into an empty queue; max_delay_us is counted from the oldest queued
 * job's enqueue time (batcher.c explains the policy); on_batch is called
 * before the batch's jobs are completed.
 *
 * Translation (SRV_JOB_TRANSLATE): a job carries the source encodings of
 * eng_translate_encode and its search options (srv_job.translate); only jobs
 * with equal options share a batch (srv_translate_opts_equal). The token
 * budget counts source tokens with padding like the other kinds; the cost of
 * decoding (output length x beams) is not counted. Results are per text in
 * srv_job.translations (ids and score; the submitter detokenises).
 */
#ifndef NLPD_SRV_BATCHER_H
#define NLPD_SRV_BATCHER_H

#include <stdint.h>

#include "model_slot.h"
#include "nlpd_engine.h"

typedef enum srv_job_kind {
    SRV_JOB_CLASSIFY = 0, /* out: probs [n, num_labels] (softmax or sigmoid) */
    SRV_JOB_EMBED,        /* out: embeddings [n, hidden] */
    SRV_JOB_QA,           /* out: start logits then end logits, each packed [sum of enc[i].n] */
    SRV_JOB_TRANSLATE,    /* translations: n results (out stays NULL) */
    SRV_JOB_KIND_COUNT
} srv_job_kind;

typedef enum srv_job_status {
    SRV_JOB_PENDING = 0,
    SRV_JOB_OK,
    SRV_JOB_EXPIRED,   /* deadline passed while queued -> 504 */
    SRV_JOB_CANCELLED, /* client went away; nobody reads the result */
    SRV_JOB_FAILED,    /* engine error (message in error) -> 500, or 422 for input errors */
    SRV_JOB_SHUTDOWN,  /* batcher stopped before the job ran -> 503 */
} srv_job_status;

typedef struct srv_job srv_job;

/* CLOCK_MONOTONIC in ns: the clock of deadline_ns and the job timestamps. */
int64_t srv_now_ns(void);

struct srv_job {
    /* --- set by the submitter --- */
    srv_job_kind kind;
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
    /* SRV_JOB_TRANSLATE: search options, resolved by the submitter (explicit
     * beam_size and max_length, so equal searches batch together);
     * target_lang_token is ignored (the sources are already encoded). */
    eng_translate_opts translate;

    /* --- set by the batcher before complete() --- */
    srv_job_status status;
    int error_code;             /* ENG_E* when FAILED */
    char error[256];
    float *out;                 /* malloc'd by the batcher (layout per kind); submitter frees */
    size_t out_len;             /* floats in out */
    /* SRV_JOB_TRANSLATE: n results in encoding order (ids, n_ids, score,
     * src_tokens, truncated; text NULL), malloc'd by the batcher; free with
     * srv_job_free_output. */
    eng_translation *translations;
    eng_model *model;           /* the version that ran it (a reference; submitter unrefs), or NULL */
    char version[64];           /* that version's name */
    int64_t enqueued_ns, started_ns, finished_ns; /* CLOCK_MONOTONIC */
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
    int workers;            /* worker threads (default 1) */
    int threads_per_worker; /* CPU threads each worker's eng_ctx uses (default: cores / workers) */
    const char *backend;    /* "cpu" (default) */
    /* Optional observer, called on the worker thread after each computed batch,
     * before its jobs are completed (metrics). */
    void (*on_batch)(void *arg, int sequences, int tokens_with_padding, int64_t compute_ns);
    void *on_batch_arg;
} srv_batch_opts;

void srv_batch_opts_default(srv_batch_opts *o);

/* 1 when two translate jobs with these options may share a batch. */
int srv_translate_opts_equal(const eng_translate_opts *a, const eng_translate_opts *b);

/* Free a finished job's results (out, translations) and drop its model
 * reference; leaves them NULL. Safe on a job that produced nothing. */
void srv_job_free_output(srv_job *job);

typedef struct srv_batcher srv_batcher;

/* Start the workers for a slot. ENG_E* (with err) when a context cannot be made. */
int srv_batcher_new(srv_model_slot *slot, const srv_batch_opts *o, srv_batcher **out,
                    eng_error *err);

/* Queue a job. 0, or SRV_EQUEUE_FULL (queue_capacity reached: 429) or
 * SRV_ESTOPPED (batcher stopping: 503), or ENG_EINVAL (n < 1, no enc, no
 * complete). On error complete() is NOT called. The batcher owns the job from a
 * successful submit until complete(). */
enum { SRV_EQUEUE_FULL = -100, SRV_ESTOPPED = -101 };
int srv_batcher_submit(srv_batcher *b, srv_job *job);

/* Sequences and jobs queued now (for metrics and Retry-After). */
int srv_batcher_queued_sequences(srv_batcher *b);
int srv_batcher_queued_jobs(srv_batcher *b);

/* Stop accepting; when drain, run what is queued (until deadline_ns, 0 = no
 * limit), else complete queued jobs with SRV_JOB_SHUTDOWN; join the workers.
 * Batches already computing finish normally. Call from one non-worker thread;
 * later calls do nothing. */
void srv_batcher_stop(srv_batcher *b, int drain, int64_t deadline_ns);
void srv_batcher_free(srv_batcher *b); /* stops (without drain) if still running */

#endif
