/* cpu_pool.h - the CPU backend's small persistent thread pool (internal).
 *
 * A pool of n threads counts the caller as thread 0 and keeps n - 1 workers.
 * Idle workers spin briefly (ops of a forward pass follow each other within
 * microseconds), then sleep on a condition variable so that they do not take
 * cores from other work. One task runs at a time; eng_cpu_pool_run serialises
 * concurrent callers.
 */
#ifndef NLPD_CPU_POOL_H
#define NLPD_CPU_POOL_H

typedef struct eng_cpu_pool eng_cpu_pool;

/* fn(arg, tid, nthreads) runs once for each tid in [0, nthreads). */
typedef void (*eng_cpu_task_fn)(void *arg, int tid, int nthreads);

/* A pool of nthreads >= 1 threads (the caller included). NULL on failure. */
eng_cpu_pool *eng_cpu_pool_new(int nthreads);
/* Joins the workers. NULL is a no-op. */
void eng_cpu_pool_free(eng_cpu_pool *p);
int eng_cpu_pool_size(const eng_cpu_pool *p);
/* Runs fn on min(nthreads, size) threads, the caller as tid 0, and returns when
 * all are done. */
void eng_cpu_pool_run(eng_cpu_pool *p, eng_cpu_task_fn fn, void *arg, int nthreads);

#endif /* NLPD_CPU_POOL_H */
