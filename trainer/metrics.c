/* metrics.c - accuracy, macro-F1, confusion summary (see metrics.h). */
#include "metrics.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

int trn_metrics_compute(trn_metrics *m, const float *logits, int n, int L, int multi_label,
                        const int *gold, const uint64_t *gold_bits)
{
    memset(m, 0, sizeof *m);
    m->L = L;
    m->n = n;
    m->multi_label = multi_label;
    m->tp = calloc((size_t)L, sizeof *m->tp);
    m->fp = calloc((size_t)L, sizeof *m->fp);
    m->fn = calloc((size_t)L, sizeof *m->fn);
    if (!multi_label)
        m->confusion = calloc((size_t)L * L, sizeof *m->confusion);
    if (!m->tp || !m->fp || !m->fn || (!multi_label && !m->confusion)) {
        trn_metrics_free(m);
        return -1;
    }
    double loss = 0;
    int correct = 0;
    for (int i = 0; i < n; i++) {
        const float *z = logits + (size_t)i * L;
        if (multi_label) {
            int all = 1;
            for (int c = 0; c < L; c++) {
                int g = (int)((gold_bits[i] >> c) & 1), p = z[c] > 0;
                double x = z[c];
                loss += (x > 0 ? x : 0) - x * g + log1p(exp(-fabs(x)));
                m->tp[c] += g && p;
                m->fp[c] += !g && p;
                m->fn[c] += g && !p;
                all &= g == p;
            }
            correct += all;
            continue;
        }
        int best = 0;
        double mx = z[0], sum = 0;
        for (int c = 1; c < L; c++)
            if (z[c] > z[best])
                best = c;
        mx = z[best];
        for (int c = 0; c < L; c++)
            sum += exp((double)z[c] - mx);
        loss += mx + log(sum) - z[gold[i]];
        m->confusion[(size_t)gold[i] * L + best]++;
        if (best == gold[i]) {
            correct++;
            m->tp[best]++;
        } else {
            m->fp[best]++;
            m->fn[gold[i]]++;
        }
    }
    m->accuracy = n ? (double)correct / n : 0;
    m->loss = n ? loss / ((double)n * (multi_label ? L : 1)) : 0;
    double f1sum = 0;
    int counted = 0;
    int64_t TP = 0, FP = 0, FN = 0;
    for (int c = 0; c < L; c++) {
        TP += m->tp[c], FP += m->fp[c], FN += m->fn[c];
        if (m->tp[c] + m->fp[c] + m->fn[c] == 0)
            continue; /* neither in the gold labels nor predicted */
        f1sum += 2.0 * m->tp[c] / (2.0 * m->tp[c] + m->fp[c] + m->fn[c]);
        counted++;
    }
    m->macro_f1 = counted ? f1sum / counted : 0;
    m->micro_f1 = multi_label ? (TP ? 2.0 * TP / (2.0 * TP + FP + FN) : 0) : m->accuracy;
    return 0;
}

void trn_metrics_free(trn_metrics *m)
{
    free(m->confusion);
    free(m->tp);
    free(m->fp);
    free(m->fn);
    memset(m, 0, sizeof *m);
}

static double prec(const trn_metrics *m, int c)
{
    return m->tp[c] + m->fp[c] ? (double)m->tp[c] / (double)(m->tp[c] + m->fp[c]) : 0;
}
static double rec(const trn_metrics *m, int c)
{
    return m->tp[c] + m->fn[c] ? (double)m->tp[c] / (double)(m->tp[c] + m->fn[c]) : 0;
}
static double f1(const trn_metrics *m, int c)
{
    int64_t d = 2 * m->tp[c] + m->fp[c] + m->fn[c];
    return d ? 2.0 * (double)m->tp[c] / (double)d : 0;
}

typedef struct cell {
    int g, p;
    int64_t count;
} cell;

static int cmp_cell(const void *a, const void *b)
{
    const cell *x = a, *y = b;
    if (x->count != y->count)
        return x->count < y->count ? 1 : -1;
    return x->g != y->g ? x->g - y->g : x->p - y->p;
}

/* The k largest off-diagonal confusion cells; *nk their count. Caller frees. */
static cell *top_confusions(const trn_metrics *m, int k, int *nk)
{
    *nk = 0;
    if (!m->confusion)
        return NULL;
    int L = m->L, cnt = 0;
    for (int i = 0; i < L * L; i++)
        cnt += i / L != i % L && m->confusion[i] > 0;
    cell *c = malloc(sizeof *c * (size_t)(cnt ? cnt : 1));
    if (!c)
        return NULL;
    for (int i = 0, j = 0; i < L * L; i++)
        if (i / L != i % L && m->confusion[i] > 0)
            c[j++] = (cell){i / L, i % L, m->confusion[i]};
    qsort(c, (size_t)cnt, sizeof *c, cmp_cell);
    *nk = cnt < k ? cnt : k;
    return c;
}

char *trn_metrics_json(const trn_metrics *m, const char *const *labels, const char *split)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    cJSON_AddStringToObject(o, "split", split);
    cJSON_AddNumberToObject(o, "examples", m->n);
    cJSON_AddNumberToObject(o, "accuracy", m->accuracy);
    cJSON_AddNumberToObject(o, "macro_f1", m->macro_f1);
    if (m->multi_label)
        cJSON_AddNumberToObject(o, "micro_f1", m->micro_f1);
    cJSON_AddNumberToObject(o, "loss", m->loss);
    cJSON *per = cJSON_AddObjectToObject(o, "per_label");
    for (int c = 0; per && c < m->L; c++) {
        cJSON *x = cJSON_AddObjectToObject(per, labels[c]);
        if (!x)
            continue;
        cJSON_AddNumberToObject(x, "precision", prec(m, c));
        cJSON_AddNumberToObject(x, "recall", rec(m, c));
        cJSON_AddNumberToObject(x, "f1", f1(m, c));
        cJSON_AddNumberToObject(x, "support", (double)(m->tp[c] + m->fn[c]));
    }
    if (m->confusion) {
        cJSON *cm = cJSON_AddObjectToObject(o, "confusion");
        cJSON *lab = cm ? cJSON_AddArrayToObject(cm, "labels") : NULL;
        cJSON *rows = cm ? cJSON_AddArrayToObject(cm, "matrix") : NULL;
        if (cm)
            cJSON_AddStringToObject(cm, "layout", "matrix[gold][predicted]");
        for (int g = 0; lab && rows && g < m->L; g++) {
            cJSON_AddItemToArray(lab, cJSON_CreateString(labels[g]));
            cJSON *r = cJSON_CreateArray();
            for (int p = 0; r && p < m->L; p++)
                cJSON_AddItemToArray(r, cJSON_CreateNumber((double)m->confusion[(size_t)g * m->L + p]));
            cJSON_AddItemToArray(rows, r);
        }
        int nk;
        cell *top = top_confusions(m, 10, &nk);
        cJSON *tc = cJSON_AddArrayToObject(o, "top_confusions");
        for (int i = 0; tc && top && i < nk; i++) {
            cJSON *x = cJSON_CreateObject();
            cJSON_AddStringToObject(x, "gold", labels[top[i].g]);
            cJSON_AddStringToObject(x, "predicted", labels[top[i].p]);
            cJSON_AddNumberToObject(x, "count", (double)top[i].count);
            cJSON_AddItemToArray(tc, x);
        }
        free(top);
    }
    char *s = cJSON_Print(o);
    cJSON_Delete(o);
    return s;
}

void trn_metrics_print(const trn_metrics *m, const char *const *labels, FILE *f)
{
    fprintf(f, "  accuracy %.2f %%  macro-F1 %.2f %%%s  loss %.4f  (%d examples, %d labels)\n",
            100 * m->accuracy, 100 * m->macro_f1, m->multi_label ? " (threshold 0.5)" : "",
            m->loss, m->n, m->L);
    /* Weakest classes by F1 (those with support), at most 5. */
    int shown = 0;
    char *done = calloc((size_t)m->L, 1);
    for (int k = 0; done && k < 5 && m->L > 2; k++) {
        int worst = -1;
        for (int c = 0; c < m->L; c++)
            if (!done[c] && m->tp[c] + m->fn[c] > 0 && (worst < 0 || f1(m, c) < f1(m, worst)))
                worst = c;
        if (worst < 0 || f1(m, worst) >= 0.999)
            break;
        done[worst] = 1;
        fprintf(f, "%s %s (F1 %.2f, P %.2f, R %.2f, n=%lld)", shown++ ? "," : "  weakest:",
                labels[worst], f1(m, worst), prec(m, worst), rec(m, worst),
                (long long)(m->tp[worst] + m->fn[worst]));
    }
    if (shown)
        fputc('\n', f);
    free(done);
    if (m->L == 2 && m->confusion) {
        fprintf(f, "  confusion (gold -> predicted): %s->%s %lld, %s->%s %lld, %s->%s %lld, "
                "%s->%s %lld\n", labels[0], labels[0], (long long)m->confusion[0], labels[0],
                labels[1], (long long)m->confusion[1], labels[1], labels[0],
                (long long)m->confusion[2], labels[1], labels[1], (long long)m->confusion[3]);
        return;
    }
    int nk;
    cell *top = top_confusions(m, 5, &nk);
    for (int i = 0; top && i < nk; i++)
        fprintf(f, "%s %s -> %s (%lld)", i ? "," : "  top confusions:", labels[top[i].g],
                labels[top[i].p], (long long)top[i].count);
    if (nk)
        fputc('\n', f);
    free(top);
}
