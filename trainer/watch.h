/* watch.h - `nlpd-train watch`, the sidecar (DESIGN §5, README "Watch"): follows a
 * model repository and the feedback logs; when enough new feedback has arrived
 * since the served version, fine-tunes from that version, gates, signs and
 * publishes, then waits again. */
#ifndef NLPD_TRN_WATCH_H
#define NLPD_TRN_WATCH_H

#include <signal.h>
#include <stdio.h>

#include "finetune.h"

typedef struct trn_watch_opts {
    trn_opts train;   /* the training run; repository and feedback set, out NULL */
    int min_new;      /* feedback items newer than the served version's (10) */
    double interval;  /* seconds between checks (60) */
    int low_priority; /* nice 10 and SCHED_BATCH (1) */
    int max_runs;     /* stop after this many training runs (0: no limit; for tests) */
    int verbose;      /* also log each run's own lines (data, model, evaluation) */
} trn_watch_opts;

void trn_watch_opts_default(trn_watch_opts *w);

/* Runs until *w->train.stop (SIGTERM): a training run in progress is abandoned
 * (nothing published, its work folder removed). Logs one line per event to log.
 * 0 on a clean stop; a negative ENG_E* code when it cannot start. */
int trn_watch(const trn_watch_opts *w, FILE *log, eng_error *err);

/* `nlpd-train watch ...` (main.c). */
int trn_watch_main(int argc, char **argv);

#endif
