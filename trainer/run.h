/* run.h - the state of one nlpd-train run, shared by its steps (finetune.c: data,
 * model, schedule, loop, evaluation; publish.c: saving, the gate, publishing).
 * Internal to trainer/. */
#ifndef NLPD_TRN_RUN_H
#define NLPD_TRN_RUN_H

#include <stdint.h>
#include <stdio.h>

#include <cJSON.h>

#include "data.h"
#include "feedback.h"
#include "finetune.h"
#include "metrics.h"
#include "nlpd_engine.h"

/* Tokenized examples (bad rows left out): enc[i] / ptr[i] with label[i] or bits[i]. */
typedef struct encoded {
    eng_encoding *enc;
    const eng_encoding **ptr;
    int *label;
    uint64_t *bits;
    int n;
    long tokens;
    int truncated;
} encoded;

/* One run (the steps are listed in finetune.c above run_close). Each step fills
 * its part; run_close frees whatever was made. */
typedef struct run {
    const trn_opts *o;
    trn_opts oo;             /* o with the max length the model allows */
    FILE *log;
    trn_result *res;
    char base[4096];         /* the base model folder */
    trn_labels labels;
    trn_dataset train, dev;  /* --train (may be empty with feedback) and dev data */
    trn_feedback fb;         /* feedback items, deduplicated */
    trn_dataset fbtrain, fbhold; /* feedback as examples: trained on / held aside */
    int fb_unknown, base_relabelled;
    encoded etr, edev;       /* etr: [0, n_base) base items, then feedback items */
    int n_base;
    eng_trainer *t;
    eng_train_opts eo;
    int H;                   /* head-only: feature size */
    float *ftr, *fdev, *fbatch; /* head-only: cached features of etr and edev, a batch */
    /* schedule */
    int per_step, epoch_n, base_per_epoch;
    long steps_per_epoch, total, warm;
    int *order, *base_perm;
    int32_t *blab;
    float *btgt;
    /* loop */
    cJSON *history;
    long step, examples;
    double t_train, first_sum, last_sum;
    long first_n, last_n;
    trn_metrics m;
    char *metrics_json;      /* eval_results.json (step_evaluate) */
    char *record;            /* nlpd_train.json (step_evaluate) */
    char work[4096];         /* a work folder holding the model until it is published */
    int keep_work;           /* the model in it could not be published: keep it */
} run;

/* 1 when the run was asked to stop (SIGINT/SIGTERM). */
int trn_run_interrupted(const run *r);
/* rm -rf path (nothing when absent). */
void trn_rm_tree(const char *path);
/* The publishing step (publish.c): save the folder (--out, or a work folder in the
 * repository), and with a repository gate and publish it. 0, TRN_REFUSED, or a
 * negative ENG_E* code (a saved but unpublished model is kept; err says where). */
int trn_step_publish(run *r, eng_error *err);

#endif
