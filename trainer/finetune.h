/* finetune.h - nlpd-train's fine-tuning run: data -> training loop -> evaluation
 * -> published model folder. main.c parses the command line into trn_opts. */
#ifndef NLPD_TRN_FINETUNE_H
#define NLPD_TRN_FINETUNE_H

#include <signal.h>
#include <stdint.h>
#include <stdio.h>

#include "data.h"
#include "nlpd_engine.h"

typedef enum trn_progress {
    TRN_PROGRESS_AUTO = 0, /* a bar on a terminal, plain lines otherwise */
    TRN_PROGRESS_BAR,
    TRN_PROGRESS_LINES,
    TRN_PROGRESS_NONE,
} trn_progress;

typedef struct trn_opts {
    const char *base;        /* base model folder */
    const char *train;       /* training file */
    const char *dev;         /* dev file, or NULL: split dev_split off the training file */
    const char *out;         /* output model folder */
    int epochs;              /* 3 */
    float lr;                /* 5e-5 */
    int batch_size;          /* 32 */
    int accum;               /* micro-batches per optimizer step (1) */
    int max_length;          /* tokens per input, specials included (128) */
    uint64_t seed;           /* 42 */
    float warmup_ratio;      /* of the optimizer steps (0.1), unless warmup_steps >= 0 */
    long warmup_steps;       /* -1: from warmup_ratio */
    eng_lr_schedule schedule;
    float weight_decay;      /* 0.01 */
    float max_grad_norm;     /* 1.0 */
    float dropout;           /* -1: the base config's */
    int threads;             /* 0: all cores */
    double dev_split;        /* 0.1 */
    const char *labels;      /* "a,b,c" or "@file" (JSON list or one per line); NULL: from data */
    trn_data_opts data;
    int force;               /* replace an existing output folder */
    trn_progress progress;
    int eval_batch;          /* 64 */
    long max_steps;          /* stop after this many optimizer steps (0: no limit) */
    int eval_each_epoch;     /* evaluate the dev set after every epoch (1) */
    int head_only;           /* train the head on a frozen encoder (cached [CLS] vectors) */
    /* feedback (feedback.h) */
    const char *const *feedback; /* logs or folders of logs */
    int n_feedback;
    double feedback_holdout; /* seeded fraction of the feedback held aside for the gate (0.2) */
    double base_ratio;       /* base training items per feedback item in each epoch (1);
                                < 0: all of them */
    /* model repository (nlpd_repo.h) */
    const char *from_repository; /* base = the version this repository serves */
    const char *public_key;  /* verifies versions (NULL: digests only) */
    const char *repository;  /* publish here when the gate passes */
    const char *key;         /* signs the published version (NULL: digest-only bundle) */
    double max_dev_drop;     /* gate: largest dev accuracy drop allowed, in points (0.5) */
    int keep;                /* after a publish, prune the repository to this many valid
                                versions (eng_repo_prune); 0: keep every version */
    const char *command;     /* the command line, recorded in the output folder */
    volatile sig_atomic_t *stop; /* set asynchronously (SIGINT): stop without publishing */
    FILE *log;               /* progress and reports (stderr when NULL) */
} trn_opts;

void trn_opts_default(trn_opts *o);

typedef struct trn_result {
    double accuracy, macro_f1, dev_loss; /* final dev evaluation */
    double first_loss, last_loss;        /* mean training loss of the first/last 10 % of steps */
    double train_seconds;                /* training loop (no loading, eval, saving) */
    double examples_per_second;          /* training examples (forward + backward + step) */
    long steps;
    int train_examples, dev_examples, labels;
    /* feedback */
    int feedback_train, feedback_holdout; /* items trained on / held aside */
    int64_t feedback_until;               /* newest feedback time used (unix ms; 0: none) */
    /* gate (with o->repository) */
    int gated;               /* the gate ran */
    int has_old;             /* the repository served a version to compare with */
    double dev_old, dev_new; /* dev accuracy of the served and the new version */
    double fb_old, fb_new;   /* accuracy on the held-aside feedback */
    char base_version[128];  /* the version started from (from_repository) or "" */
    char version[128];       /* the version published, or "" */
    char reason[512];        /* why the gate published or refused */
    char pruned[512];        /* versions pruned after the publish ("v000001,v000002") */
    char prune_error[512];   /* the prune after a publish failed (the publish stands) */
} trn_result;

#define TRN_REFUSED 1 /* trn_finetune: trained, but the gate refused to publish */

/* Runs one fine-tuning job: data, schedule, training loop, evaluation, publishing.
 * 0 when the model was saved at o->out and/or published into o->repository;
 * TRN_REFUSED when the gate kept the served version (res->reason says why); a
 * negative ENG_E* code with err filled otherwise (ENG_EINVAL with "interrupted"
 * when *stop). */
int trn_finetune(const trn_opts *o, trn_result *res, eng_error *err);

/* feedback_until (unix ms) in a version folder's nlpd-version.json; 0 when absent. */
int64_t trn_version_feedback_until(const char *version_dir);

/* The gate (README "Gate"): fills r->reason; 1 publish, 0 refuse. has_feedback:
 * feedback was given (then r->feedback_holdout items were held aside). */
int trn_gate_decide(trn_result *r, int has_feedback, double max_dev_drop);

#endif
