/* cpu_pool.c - persistent worker threads for the CPU backend (see cpu_pool.h).
 *
 * Hand-off: the caller publishes the task and bumps `gen`; workers notice the
 * new generation by spinning (for SPIN_NS) or, once asleep, by a broadcast on
 * `wake`. Dekker-style seq_cst ordering of gen/sleepers guarantees a sleeping
 * worker is always woken: either the worker sees the new gen before waiting, or
 * the caller sees it registered as a sleeper and broadcasts under the mutex.
 */
#include "cpu/cpu_pool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#define SPIN_NS 50000 /* how long an idle thread spins before it sleeps */

struct eng_cpu_pool {
    int n; /* threads, the caller included */
    pthread_t *th;
    pthread_mutex_t mu;     /* guards the sleeping paths and stop */
    pthread_cond_t wake;    /* workers wait here for a new generation */
    pthread_cond_t done;    /* the caller waits here for pending == 0 */
    pthread_mutex_t run_mu; /* one task at a time */
    atomic_uint gen;
    atomic_int pending;  /* workers still busy with the current generation */
    atomic_int sleepers; /* workers registered as (about to be) waiting on wake */
    eng_cpu_task_fn fn;  /* the task, written before gen is bumped */
    void *arg;
    int ntask;
    int stop;
};

typedef struct worker_arg {
    eng_cpu_pool *p;
    int tid;
} worker_arg;

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Waits until gen differs from seen; returns the new generation. */
static unsigned wait_gen(eng_cpu_pool *p, unsigned seen)
{
    long long t0 = now_ns();
    for (int i = 0;; i++) {
        unsigned g = atomic_load(&p->gen);
        if (g != seen)
            return g;
        if ((i & 63) == 63 && now_ns() - t0 > SPIN_NS)
            break;
        cpu_relax();
    }
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add(&p->sleepers, 1);
    unsigned g;
    while ((g = atomic_load(&p->gen)) == seen)
        pthread_cond_wait(&p->wake, &p->mu);
    atomic_fetch_sub(&p->sleepers, 1);
    pthread_mutex_unlock(&p->mu);
    return g;
}

static void *worker_main(void *v)
{
    worker_arg wa = *(worker_arg *)v;
    free(v);
    eng_cpu_pool *p = wa.p;
    unsigned seen = 0;
    for (;;) {
        seen = wait_gen(p, seen);
        if (p->stop)
            return NULL;
        if (wa.tid < p->ntask)
            p->fn(p->arg, wa.tid, p->ntask);
        if (atomic_fetch_sub(&p->pending, 1) == 1) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_signal(&p->done);
            pthread_mutex_unlock(&p->mu);
        }
    }
}

/* Bumps the generation and wakes sleeping workers. */
static void publish(eng_cpu_pool *p)
{
    atomic_store(&p->pending, p->n - 1);
    atomic_fetch_add(&p->gen, 1);
    if (atomic_load(&p->sleepers) > 0) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->wake);
        pthread_mutex_unlock(&p->mu);
    }
}

static void wait_done(eng_cpu_pool *p)
{
    long long t0 = now_ns();
    for (int i = 0; atomic_load(&p->pending) != 0; i++) {
        if ((i & 63) == 63 && now_ns() - t0 > SPIN_NS) {
            pthread_mutex_lock(&p->mu);
            while (atomic_load(&p->pending) != 0)
                pthread_cond_wait(&p->done, &p->mu);
            pthread_mutex_unlock(&p->mu);
            return;
        }
        cpu_relax();
    }
}

static void stop_workers(eng_cpu_pool *p, int started)
{
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    atomic_fetch_add(&p->gen, 1);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < started; i++)
        pthread_join(p->th[i], NULL);
}

eng_cpu_pool *eng_cpu_pool_new(int nthreads)
{
    eng_cpu_pool *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->n = nthreads < 1 ? 1 : nthreads;
    p->th = calloc((size_t)p->n, sizeof *p->th);
    if (!p->th)
        goto fail_th;
    pthread_mutex_init(&p->mu, NULL);
    pthread_mutex_init(&p->run_mu, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->done, NULL);
    atomic_init(&p->gen, 0);
    atomic_init(&p->pending, 0);
    atomic_init(&p->sleepers, 0);
    int started = 0;
    for (; started < p->n - 1; started++) {
        worker_arg *wa = malloc(sizeof *wa);
        if (!wa)
            goto fail_start;
        wa->p = p;
        wa->tid = started + 1;
        if (pthread_create(&p->th[started], NULL, worker_main, wa) != 0) {
            free(wa);
            goto fail_start;
        }
    }
    return p;

fail_start:
    stop_workers(p, started);
    pthread_cond_destroy(&p->done);
    pthread_cond_destroy(&p->wake);
    pthread_mutex_destroy(&p->run_mu);
    pthread_mutex_destroy(&p->mu);
    free(p->th);
fail_th:
    free(p);
    return NULL;
}

void eng_cpu_pool_free(eng_cpu_pool *p)
{
    if (!p)
        return;
    stop_workers(p, p->n - 1);
    pthread_cond_destroy(&p->done);
    pthread_cond_destroy(&p->wake);
    pthread_mutex_destroy(&p->run_mu);
    pthread_mutex_destroy(&p->mu);
    free(p->th);
    free(p);
}

int eng_cpu_pool_size(const eng_cpu_pool *p)
{
    return p->n;
}

void eng_cpu_pool_run(eng_cpu_pool *p, eng_cpu_task_fn fn, void *arg, int nthreads)
{
    if (nthreads > p->n)
        nthreads = p->n;
    if (nthreads <= 1) {
        fn(arg, 0, 1);
        return;
    }
    pthread_mutex_lock(&p->run_mu);
    p->fn = fn;
    p->arg = arg;
    p->ntask = nthreads;
    publish(p);
    fn(arg, 0, nthreads);
    wait_done(p);
    pthread_mutex_unlock(&p->run_mu);
}
