/* watch.c - the sidecar loop (watch.h). */
#include "watch.h"

#include <errno.h>
#include <sched.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "feedback.h"
#include "nlpd_repo.h"


void trn_watch_opts_default(trn_watch_opts *w)
{
    memset(w, 0, sizeof *w);
    trn_opts_default(&w->train);
    w->train.threads = 1; /* a sidecar: leave the cores to the daemon unless told */
    w->train.keep = 5;    /* bounded disk: each publish is a full model copy */
    w->min_new = 10;
    w->interval = 60;
    w->low_priority = 1;
}

static int stopped(const trn_watch_opts *w)
{
    return w->train.stop && *w->train.stop;
}

/* Sleeps s seconds, waking early when stopped (checks every 100 ms at most). */
static void nap(const trn_watch_opts *w, double s)
{
    struct timespec now, end;
    clock_gettime(CLOCK_MONOTONIC, &end);
    end.tv_sec += (time_t)s;
    end.tv_nsec += (long)((s - (double)(time_t)s) * 1e9);
    if (end.tv_nsec >= 1000000000L) {
        end.tv_sec++;
        end.tv_nsec -= 1000000000L;
    }
    while (!stopped(w)) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        double left = (double)(end.tv_sec - now.tv_sec) + (end.tv_nsec - now.tv_nsec) * 1e-9;
        if (left <= 0)
            break;
        if (left > 0.1)
            left = 0.1;
        struct timespec ts = {0, (long)(left * 1e9)};
        nanosleep(&ts, NULL); /* EINTR (the signal) ends it early */
    }
}

static void stamp(FILE *log, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* One plain line per event: "watch: <UTC time> <text>". */
static void stamp(FILE *log, const char *fmt, ...)
{
    char ts[32];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", &tm);
    fprintf(log, "watch: %s ", ts);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(log, fmt, ap);
    va_end(ap);
    fputc('\n', log);
    fflush(log);
}

static void lower_priority(FILE *log)
{
    struct sched_param sp = {0};
    int batch = sched_setscheduler(0, SCHED_BATCH, &sp) == 0;
    errno = 0;
    int nice_ok = setpriority(PRIO_PROCESS, 0, 10) == 0;
    stamp(log, "low priority: %s, %s", batch ? "SCHED_BATCH" : "SCHED_BATCH unavailable",
          nice_ok ? "nice 10" : "nice unchanged");
}

int trn_watch(const trn_watch_opts *w, FILE *log, eng_error *err)
{
    const trn_opts *o = &w->train;
    if (!o->repository || !o->n_feedback)
        return eng_fail(err, ENG_EINVAL, "watch needs --repository and --feedback");
    if (w->min_new < 1 || !(w->interval > 0))
        return eng_fail(err, ENG_EINVAL, "--min-new must be >= 1 and --interval > 0");
    if (w->low_priority)
        lower_priority(log);
    stamp(log, "following %s and %d feedback path(s): training when %d new items arrived "
          "(checked every %g s, %s)", o->repository, o->n_feedback, w->min_new, w->interval,
          o->head_only ? "head-only" : "full fine-tune");
    int64_t tried_until = 0; /* feedback up to here was tried and refused: not new */
    long last_count = -1;
    char last_ver[ENG_REPO_NAME_MAX + 1] = "";
    int runs = 0;
    trn_fb_cache seen = {0}; /* logs with nothing new are not read at every check */
    FILE *quiet = w->verbose ? NULL : fopen("/dev/null", "w");
    if (!w->verbose && !quiet)
        return eng_fail(err, ENG_EIO, "/dev/null: cannot open");
    while (!stopped(w) && (!w->max_runs || runs < w->max_runs)) {
        char ver[ENG_REPO_NAME_MAX + 1], dir[4096];
        eng_error e = {0};
        if (eng_repo_current(o->repository, o->public_key, ver, sizeof ver, &e)) {
            if (strcmp(last_ver, "-") != 0)
                stamp(log, "no version to start from: %s", e.msg);
            snprintf(last_ver, sizeof last_ver, "-");
            nap(w, w->interval);
            continue;
        }
        if (snprintf(dir, sizeof dir, "%s/%s", o->repository, ver) >= (int)sizeof dir)
        {
            if (quiet)
                fclose(quiet);
            trn_fb_cache_free(&seen);
            return eng_fail(err, ENG_EINVAL, "%s: path too long", o->repository);
        }
        int64_t since = trn_version_feedback_until(dir);
        if (tried_until > since)
            since = tried_until;
        trn_feedback fb = {0};
        int rc = trn_feedback_read(o->feedback, o->n_feedback, since, &seen, NULL, &fb, &e);
        long count = rc ? -1 : fb.n;
        int64_t newest = fb.max_time;
        trn_feedback_free(&fb);
        if (rc) {
            if (last_count != -2)
                stamp(log, "cannot read the feedback: %s", e.msg);
            last_count = -2;
            nap(w, w->interval);
            continue;
        }
        if (count != last_count || strcmp(ver, last_ver) != 0)
            stamp(log, "serving %s; %ld new feedback items since %lld (need %d)", ver, count,
                  (long long)since, w->min_new);
        last_count = count;
        snprintf(last_ver, sizeof last_ver, "%s", ver);
        if (count < w->min_new) {
            nap(w, w->interval);
            continue;
        }
        stamp(log, "training from %s (%s) on the feedback", ver,
              o->head_only ? "head-only" : "full fine-tune");
        trn_opts run = *o;
        run.from_repository = o->repository;
        run.base = NULL;
        if (!w->verbose)
            run.log = quiet; /* the run's details; the outcome is one line below */
        trn_result res;
        runs++;
        rc = trn_finetune(&run, &res, &e);
        if (rc == 0) {
            stamp(log, "published %s from %s: %s", res.version, ver, res.reason);
            if (res.pruned[0])
                stamp(log, "pruned %s (--keep %d)", res.pruned, o->keep);
            if (res.prune_error[0])
                stamp(log, "prune failed (the new version stands): %s", res.prune_error);
        } else if (rc == TRN_REFUSED) {
            tried_until = res.feedback_until > newest ? res.feedback_until : newest;
            stamp(log, "refused (the served %s stays): %s; waiting for %d newer items", ver,
                  res.reason, w->min_new);
        } else if (stopped(w)) {
            stamp(log, "stopped during training: nothing published (%s)", e.msg);
            break;
        } else {
            tried_until = newest; /* retried once newer feedback arrives */
            stamp(log, "training failed (the served %s stays): %s", ver, e.msg);
        }
        last_count = -1;
        nap(w, w->interval);
    }
    stamp(log, "stopped");
    trn_fb_cache_free(&seen);
    if (quiet)
        fclose(quiet);
    return ENG_OK;
}
