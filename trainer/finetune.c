/* finetune.c - one nlpd-train run (see finetune.h): load and tokenize the data,
 * train with the engine's training API, evaluate on the dev set, publish the
 * model folder with the metrics inside it. */
#include "finetune.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cJSON.h>

#include "metrics.h"

void trn_opts_default(trn_opts *o)
{
    memset(o, 0, sizeof *o);
    o->epochs = 3;
    o->lr = 5e-5f;
    o->batch_size = 32;
    o->accum = 1;
    o->max_length = 128;
    o->seed = 42;
    o->warmup_ratio = 0.1f;
    o->warmup_steps = -1;
    o->schedule = ENG_LR_LINEAR;
    o->weight_decay = 0.01f;
    o->max_grad_norm = 1.0f;
    o->dropout = -1;
    o->dev_split = 0.1;
    o->eval_batch = 64;
    o->eval_each_epoch = 1;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void fmt_dur(char *buf, size_t cap, double s)
{
    if (!(s >= 0) || s > 1e7)
        snprintf(buf, cap, "--");
    else if (s < 60)
        snprintf(buf, cap, "%.0fs", s);
    else if (s < 3600)
        snprintf(buf, cap, "%dm%02ds", (int)s / 60, (int)s % 60);
    else
        snprintf(buf, cap, "%dh%02dm", (int)s / 3600, ((int)s % 3600) / 60);
}

/* ------------------------------------------------------------------ labels */

/* "--labels a,b,c" or "@file" (a JSON list, or one name per line) -> fixed set. */
static int labels_from_spec(const char *spec, trn_labels *l, eng_error *err)
{
    char *text = NULL;
    if (spec[0] == '@') {
        size_t n;
        int rc = eng_read_file(spec + 1, &text, &n, err);
        if (rc == ENG_EIO)
            return eng_fail(err, ENG_EIO, "%s: cannot read the label list", spec + 1);
        if (rc)
            return rc;
        if (!n) {
            free(text);
            return eng_fail(err, ENG_EFORMAT, "%s: empty label list", spec + 1);
        }
        cJSON *j = cJSON_Parse(text);
        if (cJSON_IsArray(j)) {
            const cJSON *x;
            cJSON_ArrayForEach(x, j) {
                if (!cJSON_IsString(x) || trn_labels_add(l, x->valuestring) < 0) {
                    cJSON_Delete(j);
                    free(text);
                    return eng_fail(err, ENG_EFORMAT, "%s: a label list must hold strings",
                                    spec + 1);
                }
            }
            cJSON_Delete(j);
            free(text);
            l->fixed = 1;
            return l->n ? ENG_OK : eng_fail(err, ENG_EFORMAT, "%s: empty label list", spec + 1);
        }
        cJSON_Delete(j);
        for (char *s = text; *s; s++)
            if (*s == '\n' || *s == '\r')
                *s = ',';
    } else if (!(text = strdup(spec))) {
        return eng_fail(err, ENG_ENOMEM, "out of memory");
    }
    char *save = NULL;
    for (char *t = strtok_r(text, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        while (*t == ' ')
            t++;
        size_t n = strlen(t);
        while (n && t[n - 1] == ' ')
            t[--n] = 0;
        if (*t && trn_labels_add(l, t) < 0) {
            free(text);
            return eng_fail(err, ENG_ENOMEM, "out of memory");
        }
    }
    free(text);
    l->fixed = 1;
    return l->n ? ENG_OK : eng_fail(err, ENG_EINVAL, "--labels names no labels");
}

/* Sorts labels collected from the data and renumbers the examples. */
static int sort_labels(trn_labels *l, trn_dataset *d, int multi, eng_error *err)
{
    char **old = malloc(sizeof *old * (size_t)l->n);
    int *map = malloc(sizeof *map * (size_t)l->n);
    if (!old || !map) {
        free(old);
        free(map);
        return eng_fail(err, ENG_ENOMEM, "out of memory");
    }
    memcpy(old, l->name, sizeof *old * (size_t)l->n);
    trn_labels_sort(l);
    for (int i = 0; i < l->n; i++)
        map[i] = trn_labels_find(l, old[i]);
    for (int i = 0; i < d->n; i++) {
        if (multi) {
            uint64_t b = 0;
            for (int c = 0; c < l->n && c < 64; c++)
                if ((d->ex[i].labels >> c) & 1)
                    b |= 1ULL << map[c];
            d->ex[i].labels = b;
        } else {
            d->ex[i].label = map[d->ex[i].label];
        }
    }
    free(old);
    free(map);
    return ENG_OK;
}

/* ---------------------------------------------------------------- encoding */

typedef struct encoded {
    eng_encoding *enc;
    const eng_encoding **ptr;
    int *label;
    uint64_t *bits;
    int n;
    long tokens;
    int truncated;
} encoded;

static void encoded_free(encoded *e)
{
    for (int i = 0; e->enc && i < e->n; i++)
        eng_encoding_free(&e->enc[i]);
    free(e->enc);
    free(e->ptr);
    free(e->label);
    free(e->bits);
    memset(e, 0, sizeof *e);
}

/* Tokenizes every example; texts the tokenizer refuses (invalid UTF-8) are bad rows. */
static int encode_all(const eng_tokenizer *tok, trn_dataset *d, const trn_opts *o, encoded *e,
                      FILE *log, eng_error *err)
{
    memset(e, 0, sizeof *e);
    size_t n = (size_t)d->n;
    e->enc = calloc(n, sizeof *e->enc);
    e->ptr = calloc(n, sizeof *e->ptr);
    e->label = calloc(n, sizeof *e->label);
    e->bits = calloc(n, sizeof *e->bits);
    if (!e->enc || !e->ptr || !e->label || !e->bits) {
        encoded_free(e);
        return eng_fail(err, ENG_ENOMEM, "out of memory");
    }
    for (int i = 0; i < d->n; i++) {
        const trn_example *x = &d->ex[i];
        eng_encoding *enc = &e->enc[e->n];
        eng_encoding_init(enc);
        eng_error te = {0};
        int rc = eng_tokenizer_encode(tok, x->text, strlen(x->text), x->pair,
                                      x->pair ? strlen(x->pair) : 0, o->max_length, enc, &te);
        if (rc) {
            eng_encoding_free(enc);
            if (rc == ENG_ENOMEM) {
                encoded_free(e);
                return eng_fail(err, rc, "out of memory");
            }
            if (o->data.bad_rows == TRN_BAD_SKIP) {
                fprintf(log, "%s:%d: %s (row skipped)\n", d->path, x->line, te.msg);
                d->bad++;
                continue;
            }
            encoded_free(e);
            return eng_fail(err, ENG_EFORMAT, "%s:%d: %s (use --on-bad-row skip to leave such rows "
                            "out)", d->path, x->line, te.msg);
        }
        e->truncated += enc->truncated > 0;
        e->tokens += enc->n;
        e->label[e->n] = x->label;
        e->bits[e->n] = x->labels;
        e->ptr[e->n] = enc;
        e->n++;
    }
    if (!e->n) {
        encoded_free(e);
        return eng_fail(err, ENG_EFORMAT, "%s: no usable examples", d->path);
    }
    return ENG_OK;
}

/* ------------------------------------------------------------------ progress */

typedef struct progress {
    int bar;    /* redraw a line on the terminal */
    int lines;  /* print plain lines */
    FILE *f;
    double t0, last_draw;
    long total, log_every;
    int width;
} progress;

static void progress_draw(progress *p, int epoch, int epochs, long step, double loss,
                          double ex_per_s, int final)
{
    double now = now_s();
    double el = now - p->t0, eta = step > 0 ? el / step * (p->total - step) : -1;
    char es[32], ts[32];
    fmt_dur(es, sizeof es, eta);
    fmt_dur(ts, sizeof ts, el);
    if (p->bar) {
        if (!final && now - p->last_draw < 0.2)
            return;
        p->last_draw = now;
        int w = 24, fill = p->total ? (int)((double)w * step / p->total) : 0;
        char bar[64];
        for (int i = 0; i < w; i++)
            bar[i] = i < fill ? '=' : (i == fill ? '>' : ' ');
        bar[w] = 0;
        fprintf(p->f, "\r\033[K[%s] epoch %d/%d  step %ld/%ld  loss %.4f  %.1f ex/s  ETA %s",
                bar, epoch, epochs, step, p->total, loss, ex_per_s, es);
        if (final)
            fputc('\n', p->f);
        fflush(p->f);
        return;
    }
    if (p->lines && (final || step % p->log_every == 0))
        fprintf(p->f, "train: epoch %d/%d step %ld/%ld loss %.4f %.1f ex/s elapsed %s ETA %s\n",
                epoch, epochs, step, p->total, loss, ex_per_s, ts, es);
}

/* Clears the bar line before another message. */
static void progress_break(progress *p)
{
    if (p->bar) {
        fputs("\r\033[K", p->f);
        fflush(p->f);
    }
}

/* -------------------------------------------------------------------- eval */

static int evaluate(eng_trainer *t, const encoded *e, int L, int multi, int batch,
                    trn_metrics *m, eng_error *err)
{
    float *logits = malloc(sizeof(float) * (size_t)e->n * L);
    if (!logits)
        return eng_fail(err, ENG_ENOMEM, "out of memory");
    for (int i = 0; i < e->n; i += batch) {
        int nb = e->n - i < batch ? e->n - i : batch;
        int rc = eng_trainer_logits(t, e->ptr + i, nb, logits + (size_t)i * L, err);
        if (rc) {
            free(logits);
            return rc;
        }
    }
    int rc = trn_metrics_compute(m, logits, e->n, L, multi, e->label, e->bits);
    free(logits);
    return rc ? eng_fail(err, ENG_ENOMEM, "out of memory") : ENG_OK;
}

/* -------------------------------------------------------------------- save */

static char *run_record(const trn_opts *o, const trn_result *r, const trn_labels *labels,
                        cJSON *history, const eng_train_opts *eo, int truncated_train)
{
    cJSON *j = cJSON_CreateObject();
    if (!j)
        return NULL;
    cJSON_AddStringToObject(j, "trainer", "nlpd-train " ENG_VERSION);
    if (o->command)
        cJSON_AddStringToObject(j, "command", o->command);
    cJSON_AddStringToObject(j, "base_model", o->base);
    cJSON_AddStringToObject(j, "train_file", o->train);
    cJSON_AddStringToObject(j, "dev_file", o->dev ? o->dev : "");
    if (!o->dev)
        cJSON_AddNumberToObject(j, "dev_split", o->dev_split);
    cJSON_AddNumberToObject(j, "train_examples", r->train_examples);
    cJSON_AddNumberToObject(j, "dev_examples", r->dev_examples);
    cJSON_AddNumberToObject(j, "train_examples_truncated", truncated_train);
    cJSON *lab = cJSON_AddArrayToObject(j, "labels");
    for (int i = 0; lab && i < labels->n; i++)
        cJSON_AddItemToArray(lab, cJSON_CreateString(labels->name[i]));
    cJSON *h = cJSON_AddObjectToObject(j, "hyperparameters");
    if (h) {
        cJSON_AddNumberToObject(h, "epochs", o->epochs);
        cJSON_AddNumberToObject(h, "learning_rate", o->lr);
        cJSON_AddNumberToObject(h, "batch_size", o->batch_size);
        cJSON_AddNumberToObject(h, "gradient_accumulation", o->accum);
        cJSON_AddNumberToObject(h, "max_length", o->max_length);
        cJSON_AddNumberToObject(h, "seed", (double)o->seed);
        cJSON_AddNumberToObject(h, "warmup_steps", (double)eo->warmup_steps);
        cJSON_AddNumberToObject(h, "total_steps", (double)eo->total_steps);
        cJSON_AddStringToObject(h, "schedule", o->schedule == ENG_LR_COSINE ? "cosine"
                                : o->schedule == ENG_LR_CONSTANT ? "constant" : "linear");
        cJSON_AddNumberToObject(h, "weight_decay", o->weight_decay);
        cJSON_AddNumberToObject(h, "max_grad_norm", o->max_grad_norm);
        if (o->dropout >= 0)
            cJSON_AddNumberToObject(h, "dropout", o->dropout);
        cJSON_AddBoolToObject(h, "multi_label", o->data.multi_label);
    }
    cJSON_AddNumberToObject(j, "steps", (double)r->steps);
    cJSON_AddNumberToObject(j, "train_seconds", r->train_seconds);
    cJSON_AddNumberToObject(j, "train_examples_per_second", r->examples_per_second);
    cJSON_AddNumberToObject(j, "threads", o->threads);
    cJSON_AddItemToObject(j, "epochs", cJSON_Duplicate(history, 1));
    char *s = cJSON_Print(j);
    cJSON_Delete(j);
    return s;
}

/* ------------------------------------------------------------------- run */

int trn_finetune(const trn_opts *o, trn_result *res, eng_error *err)
{
    FILE *log = o->log ? o->log : stderr;
    trn_labels labels = {0};
    trn_dataset train = {0}, dev = {0};
    encoded etr = {0}, edev = {0};
    eng_trainer *t = NULL;
    trn_metrics m = {0};
    int32_t *blab = NULL;
    float *btgt = NULL;
    int *order = NULL;
    cJSON *history = cJSON_CreateArray();
    char *metrics_json = NULL, *record = NULL;
    int rc = ENG_OK;
    memset(res, 0, sizeof *res);
    memset(err, 0, sizeof *err);
    if (o->epochs < 1 || o->batch_size < 1 || o->accum < 1 || o->max_length < 3 ||
        o->eval_batch < 1)
        return eng_fail(err, ENG_EINVAL, "epochs, batch size, accumulation and eval batch must be "
                        ">= 1 and max length >= 3");
    if (!history)
        return eng_fail(err, ENG_ENOMEM, "out of memory");
    if (!o->force && access(o->out, F_OK) == 0) { /* found out now, not after training */
        cJSON_Delete(history);
        return eng_fail(err, ENG_EINVAL, "%s already exists (--force replaces it)", o->out);
    }
    if (o->labels && (rc = labels_from_spec(o->labels, &labels, err)))
        goto done;

    /* data */
    trn_data_opts dopts = o->data;
    dopts.log = log;
    if ((rc = trn_dataset_load(o->train, &dopts, &labels, &train, err)))
        goto done;
    if (!labels.fixed) {
        if ((rc = sort_labels(&labels, &train, o->data.multi_label, err)))
            goto done;
        labels.fixed = 1;
    }
    if (labels.n < (o->data.multi_label ? 1 : 2)) {
        rc = eng_fail(err, ENG_EFORMAT, "%s: only %d label(s) (%s); a classifier needs at least 2",
                      o->train, labels.n, labels.n ? labels.name[0] : "none");
        goto done;
    }
    if (o->data.multi_label && labels.n > 64) {
        rc = eng_fail(err, ENG_EUNSUPPORTED, "multi-label training supports up to 64 labels, the "
                      "data has %d", labels.n);
        goto done;
    }
    if (o->dev) {
        if ((rc = trn_dataset_load(o->dev, &dopts, &labels, &dev, err)))
            goto done;
    } else if ((rc = trn_dataset_split(&train, o->dev_split, o->seed, &dev, err))) {
        goto done;
    }
    fprintf(log, "data: %d training examples%s, %d dev examples (%s), %d labels%s\n", train.n,
            train.bad ? " (bad rows skipped, see above)" : "", dev.n,
            o->dev ? o->dev : "seeded split of the training file", labels.n,
            o->data.multi_label ? " (multi-label)" : "");

    /* model */
    eng_train_opts eo;
    eng_train_opts_default(&eo);
    eo.num_labels = labels.n;
    eo.labels = (const char *const *)labels.name;
    eo.multi_label = o->data.multi_label;
    eo.lr = o->lr;
    eo.weight_decay = o->weight_decay;
    eo.max_grad_norm = o->max_grad_norm;
    eo.schedule = o->schedule;
    eo.dropout = o->dropout;
    eo.seed = o->seed;
    eo.threads = o->threads;
    if ((rc = eng_trainer_new(o->base, &eo, &t, err)))
        goto done;
    int maxlen = o->max_length;
    if (maxlen > eng_trainer_max_seq_len(t)) {
        fprintf(log, "note: --max-length %d exceeds the model's %d; using %d\n", maxlen,
                eng_trainer_max_seq_len(t), eng_trainer_max_seq_len(t));
        maxlen = eng_trainer_max_seq_len(t);
    }
    trn_opts oo = *o;
    oo.max_length = maxlen;
    if ((rc = encode_all(eng_trainer_tokenizer(t), &train, &oo, &etr, log, err)) ||
        (rc = encode_all(eng_trainer_tokenizer(t), &dev, &oo, &edev, log, err)))
        goto done;
    if (etr.truncated)
        fprintf(log, "note: %d training inputs were cut to %d tokens\n", etr.truncated, maxlen);

    /* schedule */
    int per_step = o->batch_size * o->accum;
    long steps_per_epoch = (etr.n + per_step - 1) / per_step;
    long total = steps_per_epoch * o->epochs;
    if (o->max_steps > 0 && o->max_steps < total)
        total = o->max_steps;
    long warm = o->warmup_steps >= 0 ? o->warmup_steps : (long)ceil(o->warmup_ratio * total);
    /* The trainer was made before the data's size was known: set the schedule now. */
    eo.total_steps = total;
    eo.warmup_steps = warm;
    if ((rc = eng_trainer_set_schedule(t, total, warm, err)))
        goto done;
    fprintf(log, "model: %s, %zu parameters; %ld steps (%ld per epoch, batch %d x %d), "
            "warmup %ld, lr %g, %s decay\n", o->base, eng_trainer_num_params(t), total,
            steps_per_epoch, o->batch_size, o->accum, warm, (double)o->lr,
            o->schedule == ENG_LR_COSINE ? "cosine" : o->schedule == ENG_LR_CONSTANT ? "no"
                                                                                      : "linear");

    blab = malloc(sizeof *blab * (size_t)o->batch_size);
    btgt = malloc(sizeof *btgt * (size_t)o->batch_size * labels.n);
    order = malloc(sizeof *order * (size_t)etr.n);
    if (!blab || !btgt || !order) {
        rc = eng_fail(err, ENG_ENOMEM, "out of memory");
        goto done;
    }
    for (int i = 0; i < etr.n; i++)
        order[i] = i;

    progress pg = {.f = log, .t0 = now_s(), .total = total};
    int tty = isatty(fileno(log));
    pg.bar = o->progress == TRN_PROGRESS_BAR || (o->progress == TRN_PROGRESS_AUTO && tty);
    pg.lines = !pg.bar && o->progress != TRN_PROGRESS_NONE;
    pg.log_every = steps_per_epoch / 10 > 0 ? steps_per_epoch / 10 : 1;

    uint64_t rng = o->seed ^ 0x73687566666c65ULL; /* "shuffle" */
    long step = 0, examples = 0;
    double ema = -1, t_train = 0, first_sum = 0, last_sum = 0;
    long first_n = 0, last_n = 0, tenth = total / 10 > 0 ? total / 10 : 1;
    for (int ep = 1; ep <= o->epochs && step < total; ep++) {
        for (int i = etr.n - 1; i > 0; i--) {
            int j = (int)(trn_rand(&rng) % (uint64_t)(i + 1));
            int tmp = order[i];
            order[i] = order[j];
            order[j] = tmp;
        }
        double t_ep = now_s(), ep_loss = 0;
        long ep_batches = 0;
        for (long s = 0; s < steps_per_epoch && step < total; s++) {
            if (o->stop && *o->stop) {
                progress_break(&pg);
                rc = eng_fail(err, ENG_EINVAL, "interrupted at step %ld of %ld: nothing was "
                              "published", step, total);
                goto done;
            }
            double t0 = now_s();
            long first = s * per_step;
            int in_step = (int)(etr.n - first < per_step ? etr.n - first : per_step);
            int micro = (in_step + o->batch_size - 1) / o->batch_size;
            double step_loss = 0;
            for (int a = 0; a < micro; a++) {
                int b0 = (int)first + a * o->batch_size;
                int nb = etr.n - b0 < o->batch_size ? etr.n - b0 : o->batch_size;
                const eng_encoding *batch[512];
                const eng_encoding **bp = nb <= 512 ? batch : malloc(sizeof *bp * (size_t)nb);
                if (!bp) {
                    rc = eng_fail(err, ENG_ENOMEM, "out of memory");
                    goto done;
                }
                for (int k = 0; k < nb; k++) {
                    int ix = order[b0 + k];
                    bp[k] = etr.ptr[ix];
                    blab[k] = etr.label[ix];
                    for (int c = 0; c < labels.n; c++)
                        btgt[(size_t)k * labels.n + c] = (float)((etr.bits[ix] >> c) & 1);
                }
                float loss;
                /* Each micro-batch's mean loss weighs in by its share of the step. */
                rc = eng_trainer_backward(t, bp, nb, o->data.multi_label ? NULL : blab,
                                          o->data.multi_label ? btgt : NULL,
                                          (float)nb / (float)in_step, &loss, err);
                if (bp != batch)
                    free((void *)bp);
                if (rc)
                    goto done;
                step_loss += loss * nb / in_step;
            }
            eng_step_info info;
            if ((rc = eng_trainer_step(t, &info, err)))
                goto done;
            step++;
            examples += in_step;
            t_train += now_s() - t0;
            ep_loss += step_loss;
            ep_batches++;
            ema = ema < 0 ? step_loss : 0.95 * ema + 0.05 * step_loss;
            if (step <= tenth)
                first_sum += step_loss, first_n++;
            if (step > total - tenth)
                last_sum += step_loss, last_n++;
            progress_draw(&pg, ep, o->epochs, step, ema, examples / (t_train > 0 ? t_train : 1),
                          step == total);
        }
        cJSON *eh = cJSON_CreateObject();
        cJSON_AddNumberToObject(eh, "epoch", ep);
        cJSON_AddNumberToObject(eh, "train_loss", ep_batches ? ep_loss / ep_batches : 0);
        cJSON_AddNumberToObject(eh, "seconds", now_s() - t_ep);
        /* The last epoch's figures come from the final evaluation below. */
        if (o->eval_each_epoch && ep < o->epochs && step < total) {
            trn_metrics em;
            if ((rc = evaluate(t, &edev, labels.n, o->data.multi_label, o->eval_batch, &em,
                               err))) {
                cJSON_Delete(eh);
                goto done;
            }
            progress_break(&pg);
            fprintf(log, "epoch %d: train loss %.4f, dev accuracy %.2f %%, macro-F1 %.2f %%, "
                    "dev loss %.4f\n", ep, ep_batches ? ep_loss / ep_batches : 0,
                    100 * em.accuracy, 100 * em.macro_f1, em.loss);
            cJSON_AddNumberToObject(eh, "dev_accuracy", em.accuracy);
            cJSON_AddNumberToObject(eh, "dev_macro_f1", em.macro_f1);
            cJSON_AddNumberToObject(eh, "dev_loss", em.loss);
            trn_metrics_free(&em);
        }
        cJSON_AddItemToArray(history, eh);
    }

    /* final evaluation and publishing */
    if ((rc = evaluate(t, &edev, labels.n, o->data.multi_label, o->eval_batch, &m, err)))
        goto done;
    cJSON *last = cJSON_GetArrayItem(history, cJSON_GetArraySize(history) - 1);
    if (last) {
        cJSON_AddNumberToObject(last, "dev_accuracy", m.accuracy);
        cJSON_AddNumberToObject(last, "dev_macro_f1", m.macro_f1);
        cJSON_AddNumberToObject(last, "dev_loss", m.loss);
        progress_break(&pg);
        fprintf(log, "epoch %d: train loss %.4f, dev accuracy %.2f %%, macro-F1 %.2f %%, "
                "dev loss %.4f\n", cJSON_GetObjectItem(last, "epoch")->valueint,
                cJSON_GetObjectItem(last, "train_loss")->valuedouble, 100 * m.accuracy,
                100 * m.macro_f1, m.loss);
    }
    res->accuracy = m.accuracy;
    res->macro_f1 = m.macro_f1;
    res->dev_loss = m.loss;
    res->first_loss = first_n ? first_sum / first_n : 0;
    res->last_loss = last_n ? last_sum / last_n : 0;
    res->train_seconds = t_train;
    res->examples_per_second = t_train > 0 ? examples / t_train : 0;
    res->steps = step;
    res->train_examples = etr.n;
    res->dev_examples = edev.n;
    res->labels = labels.n;
    char tsec[32];
    fmt_dur(tsec, sizeof tsec, t_train);
    fprintf(log, "dev evaluation (%s):\n", o->dev ? o->dev : "split of the training file");
    trn_metrics_print(&m, (const char *const *)labels.name, log);
    fprintf(log, "training: %ld steps, %ld examples in %s (%.1f examples/s)\n", step, examples,
            tsec, res->examples_per_second);
    metrics_json = trn_metrics_json(&m, (const char *const *)labels.name, "dev");
    record = run_record(o, res, &labels, history, &eo, etr.truncated);
    if (!metrics_json || !record) {
        rc = eng_fail(err, ENG_ENOMEM, "out of memory");
        goto done;
    }
    if (o->stop && *o->stop) {
        rc = eng_fail(err, ENG_EINVAL, "interrupted before publishing: nothing was written");
        goto done;
    }
    eng_file_out extra[2] = {{"eval_results.json", metrics_json, strlen(metrics_json)},
                             {"nlpd_train.json", record, strlen(record)}};
    if ((rc = eng_trainer_save(t, o->out, extra, 2, o->force, err)))
        goto done;
    fprintf(log, "saved: %s\n", o->out);
done:
    trn_metrics_free(&m);
    free(metrics_json);
    free(record);
    cJSON_Delete(history);
    free(blab);
    free(btgt);
    free(order);
    encoded_free(&etr);
    encoded_free(&edev);
    eng_trainer_free(t);
    trn_dataset_free(&train);
    trn_dataset_free(&dev);
    trn_labels_free(&labels);
    return rc;
}
