/* metrics.h - classification metrics for nlpd-train's evaluation. */
#ifndef NLPD_TRN_METRICS_H
#define NLPD_TRN_METRICS_H

#include <stdint.h>
#include <stdio.h>

typedef struct trn_metrics {
    int L;           /* classes */
    int n;           /* examples */
    int multi_label;
    double accuracy; /* single-label: correct / n; multi-label: exact-set match */
    double macro_f1; /* mean F1 over classes that occur in the gold labels or predictions */
    double micro_f1; /* multi-label: over all (example, label) decisions; else = accuracy */
    double loss;     /* mean loss (CE or BCE) */
    int64_t *confusion; /* single-label: [gold * L + predicted] */
    int64_t *tp, *fp, *fn; /* per class */
} trn_metrics;

/* Metrics of logits[n * L] against gold labels (single-label: gold[n] ids;
 * multi-label: gold_bits[n] bit sets, threshold 0 on the logits). 0 or -1 (memory). */
int trn_metrics_compute(trn_metrics *m, const float *logits, int n, int L, int multi_label,
                        const int *gold, const uint64_t *gold_bits);
void trn_metrics_free(trn_metrics *m);

/* A JSON object (malloc'd string) with accuracy, macro_f1, loss, per-class
 * precision/recall/f1/support, the confusion matrix and its largest off-diagonal
 * cells; NULL on failure. */
char *trn_metrics_json(const trn_metrics *m, const char *const *labels, const char *split);

/* A human-readable summary: the figures, the weakest classes and the top confusions. */
void trn_metrics_print(const trn_metrics *m, const char *const *labels, FILE *f);

#endif
