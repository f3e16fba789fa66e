/* finetune.c - one nlpd-train run (see finetune.h): load and tokenize the data
 * (and the feedback), train with the engine's training API (the whole model, or
 * the head on a frozen encoder), evaluate on the dev set, save the model folder
 * with the metrics inside it and, with a repository, gate and publish it. The
 * steps are listed above `struct run`. */
#include "finetune.h"

#include <errno.h>
#include <ftw.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cJSON.h>

#include "nlpd_repo.h"
#include "run.h"

/* dir + "/" + name into buf; -1 when it does not fit. */
static int path_join(char *buf, size_t cap, const char *dir, const char *name)
{
    int w = snprintf(buf, cap, "%s/%s", dir, name);
    return w < 0 || (size_t)w >= cap ? -1 : 0;
}

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
    o->feedback_holdout = 0.2;
    o->base_ratio = 1.0;
    o->max_dev_drop = 0.5;
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

/* Tokenizes every example of d, appending to e; texts the tokenizer refuses
 * (invalid UTF-8) are bad rows. An empty result is an error. */
static int encode_all(const eng_tokenizer *tok, trn_dataset *d, const trn_opts *o, encoded *e,
                      FILE *log, eng_error *err)
{
    size_t n = (size_t)e->n + (size_t)d->n + 1;
    void *p1 = realloc(e->enc, n * sizeof *e->enc), *p2 = NULL, *p3 = NULL, *p4 = NULL;
    if (p1)
        e->enc = p1;
    if (p1 && (p2 = realloc(e->ptr, n * sizeof *e->ptr)))
        e->ptr = p2;
    if (p2 && (p3 = realloc(e->label, n * sizeof *e->label)))
        e->label = p3;
    if (p3 && (p4 = realloc(e->bits, n * sizeof *e->bits)))
        e->bits = p4;
    if (!p4)
        return eng_fail(err, ENG_ENOMEM, "out of memory");
    int before = e->n;
    for (int i = 0; i < d->n; i++) {
        const trn_example *x = &d->ex[i];
        eng_encoding *enc = &e->enc[e->n];
        eng_encoding_init(enc);
        eng_error te = {0};
        int rc = eng_tokenizer_encode(tok, x->text, strlen(x->text), x->pair,
                                      x->pair ? strlen(x->pair) : 0, o->max_length, enc, &te);
        if (rc) {
            eng_encoding_free(enc);
            if (rc == ENG_ENOMEM)
                return eng_fail(err, rc, "out of memory");
            if (o->data.bad_rows == TRN_BAD_SKIP) {
                fprintf(log, "%s:%d: %s (row skipped)\n", d->path, x->line, te.msg);
                d->bad++;
                continue;
            }
            return eng_fail(err, ENG_EFORMAT, "%s:%d: %s (use --on-bad-row skip to leave such rows "
                            "out)", d->path, x->line, te.msg);
        }
        e->truncated += enc->truncated > 0;
        e->tokens += enc->n;
        e->label[e->n] = x->label;
        e->bits[e->n] = x->labels;
        e->n++;
    }
    for (int i = 0; i < e->n; i++) /* the array may have moved */
        e->ptr[i] = &e->enc[i];
    if (d->n && e->n == before)
        return eng_fail(err, ENG_EFORMAT, "%s: no usable examples", d->path);
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

/* --------------------------------------------------------------- the run
 * trn_finetune is a sequence of steps over one `run` (run.h), each owning a part:
 *   step_data         labels, base training data, dev data, feedback (+ held-aside part)
 *   step_model        the trainer on the base folder; tokenized data; head-only features
 *   step_schedule     epoch composition (the feedback mix), optimizer steps, warmup
 *   step_loop         the epochs
 *   step_evaluate     the final dev evaluation and the run's record
 *   trn_step_publish  save the folder (--out, or a work folder), gate, publish (publish.c)
 * run_close frees whatever the steps made. */

static int rm_entry(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
    (void)sb;
    (void)ftw;
    return type == FTW_DP ? rmdir(path) : unlink(path);
}

void trn_rm_tree(const char *path)
{
    if (path[0] && access(path, F_OK) == 0)
        nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void run_close(run *r)
{
    trn_metrics_free(&r->m);
    cJSON_Delete(r->history);
    free(r->blab);
    free(r->btgt);
    free(r->order);
    free(r->base_perm);
    free(r->ftr);
    free(r->fdev);
    free(r->fbatch);
    encoded_free(&r->etr);
    encoded_free(&r->edev);
    eng_trainer_free(r->t);
    trn_dataset_free(&r->train);
    trn_dataset_free(&r->dev);
    trn_dataset_free(&r->fbtrain);
    trn_dataset_free(&r->fbhold);
    trn_feedback_free(&r->fb);
    trn_labels_free(&r->labels);
    free(r->metrics_json);
    free(r->record);
    if (r->work[0] && !r->keep_work)
        trn_rm_tree(r->work);
}

int trn_run_interrupted(const run *r)
{
    return r->o->stop && *r->o->stop;
}

/* ------------------------------------------------------------------ data */

/* The labels of a *ForSequenceClassification folder (config.json id2label), fixed. */
static int labels_from_model(const char *dir, trn_labels *l, int *found, eng_error *err)
{
    *found = 0;
    char path[4200], *text = NULL;
    size_t len;
    if (path_join(path, sizeof path, dir, "config.json"))
        return eng_fail(err, ENG_EINVAL, "%s: path too long", dir);
    int rc = eng_read_file(path, &text, &len, err);
    if (rc)
        return rc;
    cJSON *c = cJSON_Parse(text);
    free(text);
    if (!cJSON_IsObject(c)) {
        cJSON_Delete(c);
        return eng_fail(err, ENG_EFORMAT, "%s: not a JSON object", path);
    }
    const cJSON *arch = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(c, "architectures"), 0);
    const cJSON *id2 = cJSON_GetObjectItemCaseSensitive(c, "id2label");
    if (cJSON_IsString(arch) && strstr(arch->valuestring, "ForSequenceClassification") &&
        cJSON_IsObject(id2)) {
        int n = cJSON_GetArraySize(id2);
        for (int i = 0; i < n && !rc; i++) {
            char key[24];
            snprintf(key, sizeof key, "%d", i);
            const cJSON *x = cJSON_GetObjectItemCaseSensitive(id2, key);
            if (!cJSON_IsString(x))
                rc = eng_fail(err, ENG_EFORMAT, "%s/config.json: id2label has no label %d", dir, i);
            else if (trn_labels_add(l, x->valuestring) < 0)
                rc = eng_fail(err, ENG_ENOMEM, "out of memory");
        }
        if (!rc && l->n) {
            l->fixed = 1;
            *found = 1;
        }
    }
    cJSON_Delete(c);
    return rc;
}

/* The base folder: --base, or the version --from-repository serves. */
static int resolve_base(run *r, eng_error *err)
{
    const trn_opts *o = r->o;
    if (!o->from_repository) {
        snprintf(r->base, sizeof r->base, "%s", o->base);
        return ENG_OK;
    }
    char ver[ENG_REPO_NAME_MAX + 1];
    int rc = eng_repo_current(o->from_repository, o->public_key, ver, sizeof ver, err);
    if (rc)
        return rc;
    snprintf(r->res->base_version, sizeof r->res->base_version, "%s", ver);
    if (path_join(r->base, sizeof r->base, o->from_repository, ver))
        return eng_fail(err, ENG_EINVAL, "%s: path too long", o->from_repository);
    fprintf(r->log, "base: %s (the version %s serves)\n", r->base, o->from_repository);
    return ENG_OK;
}

/* A feedback item as a training example (label by name; -1: not a label of the model). */
static int fb_example(const run *r, const trn_fb_item *it, trn_dataset *d, eng_error *err)
{
    int id = trn_labels_find(&r->labels, it->label);
    if (id < 0)
        return 1;
    if (d->n == d->cap) {
        int cap = d->cap ? 2 * d->cap : 64;
        trn_example *p = realloc(d->ex, sizeof *p * (size_t)cap);
        if (!p)
            return eng_fail(err, ENG_ENOMEM, "out of memory");
        d->ex = p;
        d->cap = cap;
    }
    trn_example *x = &d->ex[d->n];
    memset(x, 0, sizeof *x);
    if (!(x->text = strdup(it->text)))
        return eng_fail(err, ENG_ENOMEM, "out of memory");
    x->label = id;
    x->labels = 1ULL << (id < 64 ? id : 63);
    x->line = d->n + 1;
    d->n++;
    return ENG_OK;
}

/* Reads the feedback, keeps the newest label per text, turns items into examples
 * (unknown labels skipped and counted), holds a seeded fraction aside and drops the
 * base training items whose text the feedback relabels. */
static int load_feedback(run *r, eng_error *err)
{
    const trn_opts *o = r->o;
    int rc = trn_feedback_read(o->feedback, o->n_feedback, 0, NULL, r->log, &r->fb, err);
    if (rc)
        return rc;
    trn_feedback_dedupe(&r->fb);
    r->res->feedback_until = r->fb.max_time;
    if (!(r->fbtrain.path = strdup("feedback")) || !(r->fbhold.path = strdup("feedback")))
        return eng_fail(err, ENG_ENOMEM, "out of memory");
    /* Shuffle (seeded), then the first `hold` known items are held aside. */
    int n = r->fb.n, *idx = malloc(sizeof *idx * (size_t)(n ? n : 1));
    if (!idx)
        return eng_fail(err, ENG_ENOMEM, "out of memory");
    for (int i = 0; i < n; i++)
        idx[i] = i;
    uint64_t st = o->seed ^ 0x686f6c646f7574ULL; /* "holdout" */
    for (int i = n - 1; i > 0; i--) {
        int j = (int)(trn_rand(&st) % (uint64_t)(i + 1)), t = idx[i];
        idx[i] = idx[j];
        idx[j] = t;
    }
    int known = 0;
    for (int i = 0; i < n; i++)
        known += trn_labels_find(&r->labels, r->fb.it[i].label) >= 0;
    int hold = (int)llround(o->feedback_holdout * known);
    if (o->feedback_holdout > 0 && known >= 2 && hold < 1)
        hold = 1;
    if (hold > known - 1)
        hold = known > 1 ? known - 1 : 0;
    for (int i = 0; i < n && !rc; i++) {
        const trn_fb_item *it = &r->fb.it[idx[i]];
        rc = fb_example(r, it, r->fbhold.n < hold ? &r->fbhold : &r->fbtrain, err);
        if (rc == 1) {
            r->fb_unknown++;
            fprintf(r->log, "feedback: unknown label '%s' (the model's labels are fixed), "
                    "item skipped: %.60s\n", it->label, it->text);
            rc = ENG_OK;
        }
    }
    free(idx);
    if (rc)
        return rc;
    /* The feedback is newer than the base data: its label wins for the same text. */
    int w = 0;
    for (int i = 0; i < r->train.n; i++) {
        trn_example *x = &r->train.ex[i];
        if (!x->pair && trn_feedback_find(&r->fb, x->text) >= 0 &&
            trn_labels_find(&r->labels, r->fb.it[trn_feedback_find(&r->fb, x->text)].label) >= 0) {
            free(x->text);
            r->base_relabelled++;
            continue;
        }
        r->train.ex[w++] = *x;
    }
    r->train.n = w;
    r->res->feedback_train = r->fbtrain.n;
    r->res->feedback_holdout = r->fbhold.n;
    fprintf(r->log, "feedback: %d items from %d logs (%d torn last lines and %d bad lines "
            "skipped, %d older labels replaced by newer ones, %d unknown labels skipped); "
            "%d for training, %d held aside (--feedback-holdout %g); %d base items relabelled\n",
            r->fb.n, r->fb.files, r->fb.torn, r->fb.bad, r->fb.duplicates, r->fb_unknown,
            r->fbtrain.n, r->fbhold.n, o->feedback_holdout, r->base_relabelled);
    if (!r->fbtrain.n)
        return eng_fail(err, ENG_EINVAL, "no usable feedback to train on (%d items read)",
                        r->fb.n);
    return ENG_OK;
}

static int step_data(run *r, eng_error *err)
{
    const trn_opts *o = r->o;
    int rc;
    if ((rc = resolve_base(r, err)))
        return rc;
    if (o->labels) {
        if ((rc = labels_from_spec(o->labels, &r->labels, err)))
            return rc;
    } else if (o->from_repository) { /* the served version's labels, in its order */
        int found;
        if ((rc = labels_from_model(r->base, &r->labels, &found, err)))
            return rc;
    }
    trn_data_opts dopts = o->data;
    dopts.log = r->log;
    if (o->train) {
        if ((rc = trn_dataset_load(o->train, &dopts, &r->labels, &r->train, err)))
            return rc;
    } else if (!o->n_feedback) {
        return eng_fail(err, ENG_EINVAL, "no training data: --train or --feedback");
    }
    if (!r->labels.fixed) {
        if ((rc = sort_labels(&r->labels, &r->train, o->data.multi_label, err)))
            return rc;
        r->labels.fixed = 1;
    }
    if (r->labels.n < (o->data.multi_label ? 1 : 2))
        return eng_fail(err, ENG_EFORMAT, "%s: only %d label(s) (%s); a classifier needs at "
                        "least 2", o->train ? o->train : r->base, r->labels.n,
                        r->labels.n ? r->labels.name[0] : "none");
    if (o->data.multi_label && r->labels.n > 64)
        return eng_fail(err, ENG_EUNSUPPORTED, "multi-label training supports up to 64 labels, "
                        "the data has %d", r->labels.n);
    if (o->dev) {
        if ((rc = trn_dataset_load(o->dev, &dopts, &r->labels, &r->dev, err)))
            return rc;
    } else if (!o->train) {
        return eng_fail(err, ENG_EINVAL, "without --train, --dev is needed");
    } else if ((rc = trn_dataset_split(&r->train, o->dev_split, o->seed, &r->dev, err))) {
        return rc;
    }
    if (o->n_feedback) {
        if (o->data.multi_label)
            return eng_fail(err, ENG_EUNSUPPORTED, "--feedback trains single-label models");
        if ((rc = load_feedback(r, err)))
            return rc;
    }
    fprintf(r->log, "data: %d training examples%s, %d dev examples (%s), %d labels%s\n",
            r->train.n, r->train.bad ? " (bad rows skipped, see above)" : "", r->dev.n,
            o->dev ? o->dev : "seeded split of the training file", r->labels.n,
            o->data.multi_label ? " (multi-label)" : "");
    return ENG_OK;
}

/* ----------------------------------------------------------------- model */

/* Head-only: the encoder's [CLS] vectors of e, computed once by the inference engine
 * (the forward nlpd serves with, pre-packed weights on every core: several times the
 * trainer's forward, and the vectors the published head will see). */
static int features(run *r, eng_ctx *ctx, eng_model *m, const encoded *e, float **out,
                    eng_error *err)
{
    if (!(*out = malloc(sizeof(float) * (size_t)(e->n ? e->n : 1) * r->H)))
        return eng_fail(err, ENG_ENOMEM, "out of memory");
    int batch = r->o->eval_batch, rc = ENG_OK;
    float *hidden = NULL;
    size_t cap = 0;
    for (int i = 0; i < e->n && !rc; i += batch) {
        if (trn_run_interrupted(r)) {
            rc = eng_fail(err, ENG_EINVAL, "interrupted while encoding: nothing was published");
            break;
        }
        int nb = e->n - i < batch ? e->n - i : batch;
        size_t tokens = 0;
        for (int b = 0; b < nb; b++)
            tokens += (size_t)e->ptr[i + b]->n;
        if (tokens > cap) {
            free(hidden);
            cap = tokens;
            if (!(hidden = malloc(sizeof(float) * cap * (size_t)r->H))) {
                rc = eng_fail(err, ENG_ENOMEM, "out of memory");
                break;
            }
        }
        if ((rc = eng_run_hidden(ctx, m, e->ptr + i, nb, hidden, err)))
            break;
        size_t off = 0; /* packed: sequence b starts at the sum of the lengths before it */
        for (int b = 0; b < nb; b++) {
            memcpy(*out + (size_t)(i + b) * r->H, hidden + off * (size_t)r->H,
                   sizeof(float) * (size_t)r->H);
            off += (size_t)e->ptr[i + b]->n;
        }
    }
    free(hidden);
    return rc;
}

static int head_only_features(run *r, eng_error *err)
{
    eng_model *m = NULL;
    eng_ctx *ctx = NULL;
    int rc = eng_model_load(r->base, &m, err);
    if (!rc)
        rc = eng_ctx_new(&(eng_ctx_opts){.threads = r->o->threads}, &ctx, err);
    if (!rc && eng_model_get_info(m)->hidden != r->H)
        rc = eng_fail(err, ENG_EFORMAT, "%s: the encoder's hidden size differs from the "
                      "trainer's", r->base);
    if (!rc)
        rc = features(r, ctx, m, &r->etr, &r->ftr, err);
    if (!rc)
        rc = features(r, ctx, m, &r->edev, &r->fdev, err);
    eng_ctx_free(ctx);
    eng_model_unref(m);
    return rc;
}

static int step_model(run *r, eng_error *err)
{
    const trn_opts *o = r->o;
    eng_train_opts *eo = &r->eo;
    int rc;
    eng_train_opts_default(eo);
    eo->num_labels = r->labels.n;
    eo->labels = (const char *const *)r->labels.name;
    eo->multi_label = o->data.multi_label;
    eo->lr = o->lr;
    eo->weight_decay = o->weight_decay;
    eo->max_grad_norm = o->max_grad_norm;
    eo->schedule = o->schedule;
    eo->dropout = o->dropout;
    eo->seed = o->seed;
    eo->threads = o->threads;
    eo->head_only = o->head_only;
    if ((rc = eng_trainer_new(r->base, eo, &r->t, err)))
        return rc;
    r->oo = *o;
    if (o->max_length > eng_trainer_max_seq_len(r->t)) {
        fprintf(r->log, "note: --max-length %d exceeds the model's %d; using %d\n", o->max_length,
                eng_trainer_max_seq_len(r->t), eng_trainer_max_seq_len(r->t));
        r->oo.max_length = eng_trainer_max_seq_len(r->t);
    }
    const eng_tokenizer *tok = eng_trainer_tokenizer(r->t);
    if ((r->train.n && (rc = encode_all(tok, &r->train, &r->oo, &r->etr, r->log, err))))
        return rc;
    r->n_base = r->etr.n;
    trn_opts fo = r->oo; /* a feedback text the tokenizer refuses is skipped, never fatal */
    fo.data.bad_rows = TRN_BAD_SKIP;
    if ((r->fbtrain.n && (rc = encode_all(tok, &r->fbtrain, &fo, &r->etr, r->log, err))) ||
        (rc = encode_all(tok, &r->dev, &r->oo, &r->edev, r->log, err)))
        return rc;
    if (!r->etr.n)
        return eng_fail(err, ENG_EFORMAT, "no usable training examples");
    if (r->etr.truncated)
        fprintf(r->log, "note: %d training inputs were cut to %d tokens\n", r->etr.truncated,
                r->oo.max_length);
    if (o->head_only) {
        r->H = eng_trainer_hidden(r->t);
        double t0 = now_s();
        if ((rc = head_only_features(r, err)))
            return rc;
        char d[32];
        fmt_dur(d, sizeof d, now_s() - t0);
        fprintf(r->log, "head-only: encoded %d training and %d dev inputs once in %s (frozen "
                "encoder; the head trains on their [CLS] vectors)\n", r->etr.n, r->edev.n, d);
    }
    return ENG_OK;
}

/* -------------------------------------------------------------- schedule */

static int step_schedule(run *r, eng_error *err)
{
    const trn_opts *o = r->o;
    int nfb = r->etr.n - r->n_base;
    /* The mix: every epoch sees all feedback items plus base_ratio times as many base
     * items (a fresh seeded sample each epoch); without feedback, all base items. */
    r->base_per_epoch = r->n_base;
    if (nfb && o->base_ratio >= 0) {
        double k = o->base_ratio * nfb;
        r->base_per_epoch = k < r->n_base ? (int)llround(k) : r->n_base;
    }
    r->epoch_n = r->base_per_epoch + nfb;
    r->per_step = o->batch_size * o->accum;
    r->steps_per_epoch = (r->epoch_n + r->per_step - 1) / r->per_step;
    r->total = r->steps_per_epoch * o->epochs;
    if (o->max_steps > 0 && o->max_steps < r->total)
        r->total = o->max_steps;
    r->warm = o->warmup_steps >= 0 ? o->warmup_steps : (long)ceil(o->warmup_ratio * r->total);
    /* The trainer was made before the data's size was known: set the schedule now. */
    r->eo.total_steps = r->total;
    r->eo.warmup_steps = r->warm;
    int rc = eng_trainer_set_schedule(r->t, r->total, r->warm, err);
    if (rc)
        return rc;
    if (nfb)
        fprintf(r->log, "mix: each epoch sees the %d feedback items and %d of the %d base items "
                "(--base-ratio %g)\n", nfb, r->base_per_epoch, r->n_base, o->base_ratio);
    fprintf(r->log, "model: %s, %zu parameters%s; %ld steps (%ld per epoch, batch %d x %d), "
            "warmup %ld, lr %g, %s decay\n", r->base, eng_trainer_num_params(r->t),
            o->head_only ? " (head only: encoder frozen)" : "", r->total, r->steps_per_epoch,
            o->batch_size, o->accum, r->warm, (double)o->lr,
            o->schedule == ENG_LR_COSINE ? "cosine" : o->schedule == ENG_LR_CONSTANT ? "no"
                                                                                      : "linear");
    r->blab = malloc(sizeof *r->blab * (size_t)o->batch_size);
    r->btgt = malloc(sizeof *r->btgt * (size_t)o->batch_size * r->labels.n);
    r->order = malloc(sizeof *r->order * (size_t)(r->etr.n + 1));
    r->base_perm = malloc(sizeof *r->base_perm * (size_t)(r->n_base + 1));
    r->fbatch = o->head_only ? malloc(sizeof(float) * (size_t)o->batch_size * r->H) : NULL;
    if (!r->blab || !r->btgt || !r->order || !r->base_perm || (o->head_only && !r->fbatch))
        return eng_fail(err, ENG_ENOMEM, "out of memory");
    for (int i = 0; i < r->etr.n; i++)
        r->order[i] = i;
    for (int i = 0; i < r->n_base; i++)
        r->base_perm[i] = i;
    return ENG_OK;
}

/* ------------------------------------------------------------------ loop */

static void shuffle(int *a, int n, uint64_t *rng)
{
    for (int i = n - 1; i > 0; i--) {
        int j = (int)(trn_rand(rng) % (uint64_t)(i + 1));
        int tmp = a[i];
        a[i] = a[j];
        a[j] = tmp;
    }
}

/* order[0, epoch_n): this epoch's items. */
static void compose_epoch(run *r, uint64_t *rng)
{
    if (r->epoch_n == r->etr.n && r->base_per_epoch == r->n_base) {
        shuffle(r->order, r->etr.n, rng); /* everything, as without feedback */
        return;
    }
    shuffle(r->base_perm, r->n_base, rng);
    int k = 0;
    for (int i = 0; i < r->base_per_epoch; i++)
        r->order[k++] = r->base_perm[i];
    for (int i = r->n_base; i < r->etr.n; i++)
        r->order[k++] = i;
    shuffle(r->order, k, rng);
}

/* Logits of the whole set e (features f in head-only mode). */
static int logits_of(run *r, const encoded *e, const float *f, float *logits, eng_error *err)
{
    int L = r->labels.n, batch = r->o->eval_batch;
    for (int i = 0; i < e->n; i += batch) {
        int nb = e->n - i < batch ? e->n - i : batch;
        int rc = f ? eng_trainer_head_logits(r->t, f + (size_t)i * r->H, nb,
                                             logits + (size_t)i * L, err)
                   : eng_trainer_logits(r->t, e->ptr + i, nb, logits + (size_t)i * L, err);
        if (rc)
            return rc;
    }
    return ENG_OK;
}

static int evaluate(run *r, trn_metrics *m, eng_error *err)
{
    int L = r->labels.n;
    float *logits = malloc(sizeof(float) * (size_t)r->edev.n * L);
    if (!logits)
        return eng_fail(err, ENG_ENOMEM, "out of memory");
    int rc = logits_of(r, &r->edev, r->o->head_only ? r->fdev : NULL, logits, err);
    if (!rc && trn_metrics_compute(m, logits, r->edev.n, L, r->o->data.multi_label,
                                   r->edev.label, r->edev.bits))
        rc = eng_fail(err, ENG_ENOMEM, "out of memory");
    free(logits);
    return rc;
}

/* One micro-batch: items order[b0, b0 + nb). */
static int micro_batch(run *r, int b0, int nb, int in_step, double *step_loss, eng_error *err)
{
    const trn_opts *o = r->o;
    int L = r->labels.n;
    const eng_encoding *batch[512];
    const eng_encoding **bp = batch;
    if (!o->head_only && nb > 512 && !(bp = malloc(sizeof *bp * (size_t)nb)))
        return eng_fail(err, ENG_ENOMEM, "out of memory");
    for (int k = 0; k < nb; k++) {
        int ix = r->order[b0 + k];
        if (o->head_only)
            memcpy(r->fbatch + (size_t)k * r->H, r->ftr + (size_t)ix * r->H,
                   sizeof(float) * (size_t)r->H);
        else
            bp[k] = r->etr.ptr[ix];
        r->blab[k] = r->etr.label[ix];
        for (int c = 0; c < L; c++)
            r->btgt[(size_t)k * L + c] = (float)((r->etr.bits[ix] >> c) & 1);
    }
    float loss;
    const int32_t *lab = o->data.multi_label ? NULL : r->blab;
    const float *tgt = o->data.multi_label ? r->btgt : NULL;
    /* Each micro-batch's mean loss weighs in by its share of the step. */
    float share = (float)nb / (float)in_step;
    int rc = o->head_only
                 ? eng_trainer_head_backward(r->t, r->fbatch, nb, lab, tgt, share, &loss, err)
                 : eng_trainer_backward(r->t, bp, nb, lab, tgt, share, &loss, err);
    if (bp != batch)
        free((void *)bp);
    if (!rc)
        *step_loss += loss * nb / in_step;
    return rc;
}

static int step_loop(run *r, eng_error *err)
{
    const trn_opts *o = r->o;
    progress pg = {.f = r->log, .t0 = now_s(), .total = r->total};
    int tty = isatty(fileno(r->log));
    pg.bar = o->progress == TRN_PROGRESS_BAR || (o->progress == TRN_PROGRESS_AUTO && tty);
    pg.lines = !pg.bar && o->progress != TRN_PROGRESS_NONE;
    pg.log_every = r->steps_per_epoch / 10 > 0 ? r->steps_per_epoch / 10 : 1;
    uint64_t rng = o->seed ^ 0x73687566666c65ULL; /* "shuffle" */
    double ema = -1;
    long tenth = r->total / 10 > 0 ? r->total / 10 : 1;
    int rc;
    for (int ep = 1; ep <= o->epochs && r->step < r->total; ep++) {
        compose_epoch(r, &rng);
        double t_ep = now_s(), ep_loss = 0;
        long ep_batches = 0;
        for (long s = 0; s < r->steps_per_epoch && r->step < r->total; s++) {
            if (trn_run_interrupted(r)) {
                progress_break(&pg);
                return eng_fail(err, ENG_EINVAL, "interrupted at step %ld of %ld: nothing was "
                                "published", r->step, r->total);
            }
            double t0 = now_s(), step_loss = 0;
            long first = s * r->per_step;
            int in_step = (int)(r->epoch_n - first < r->per_step ? r->epoch_n - first
                                                                   : r->per_step);
            for (int b0 = (int)first; b0 < first + in_step; b0 += o->batch_size) {
                int nb = (int)(first + in_step - b0 < o->batch_size ? first + in_step - b0
                                                                     : o->batch_size);
                if ((rc = micro_batch(r, b0, nb, in_step, &step_loss, err)))
                    return rc;
            }
            eng_step_info info;
            if ((rc = eng_trainer_step(r->t, &info, err)))
                return rc;
            r->step++;
            r->examples += in_step;
            r->t_train += now_s() - t0;
            ep_loss += step_loss;
            ep_batches++;
            ema = ema < 0 ? step_loss : 0.95 * ema + 0.05 * step_loss;
            if (r->step <= tenth)
                r->first_sum += step_loss, r->first_n++;
            if (r->step > r->total - tenth)
                r->last_sum += step_loss, r->last_n++;
            progress_draw(&pg, ep, o->epochs, r->step, ema,
                          r->examples / (r->t_train > 0 ? r->t_train : 1), r->step == r->total);
        }
        cJSON *eh = cJSON_CreateObject();
        if (!eh || !cJSON_AddItemToArray(r->history, eh)) {
            cJSON_Delete(eh);
            return eng_fail(err, ENG_ENOMEM, "out of memory");
        }
        cJSON_AddNumberToObject(eh, "epoch", ep);
        cJSON_AddNumberToObject(eh, "train_loss", ep_batches ? ep_loss / ep_batches : 0);
        cJSON_AddNumberToObject(eh, "seconds", now_s() - t_ep);
        /* The last epoch's figures come from the final evaluation. */
        if (o->eval_each_epoch && ep < o->epochs && r->step < r->total) {
            trn_metrics em;
            if ((rc = evaluate(r, &em, err)))
                return rc;
            progress_break(&pg);
            fprintf(r->log, "epoch %d: train loss %.4f, dev accuracy %.2f %%, macro-F1 %.2f %%, "
                    "dev loss %.4f\n", ep, ep_batches ? ep_loss / ep_batches : 0,
                    100 * em.accuracy, 100 * em.macro_f1, em.loss);
            cJSON_AddNumberToObject(eh, "dev_accuracy", em.accuracy);
            cJSON_AddNumberToObject(eh, "dev_macro_f1", em.macro_f1);
            cJSON_AddNumberToObject(eh, "dev_loss", em.loss);
            trn_metrics_free(&em);
        }
    }
    progress_break(&pg);
    return ENG_OK;
}

/* ------------------------------------------------------------ evaluation */

static char *run_record(const run *rn)
{
    const trn_opts *o = rn->o;
    const trn_result *r = rn->res;
    const eng_train_opts *eo = &rn->eo;
    cJSON *j = cJSON_CreateObject();
    if (!j)
        return NULL;
    cJSON_AddStringToObject(j, "trainer", "nlpd-train " ENG_VERSION);
    if (o->command)
        cJSON_AddStringToObject(j, "command", o->command);
    cJSON_AddStringToObject(j, "base_model", rn->base);
    if (r->base_version[0])
        cJSON_AddStringToObject(j, "base_version", r->base_version);
    cJSON_AddStringToObject(j, "mode", o->head_only ? "head-only" : "full");
    cJSON_AddStringToObject(j, "train_file", o->train ? o->train : "");
    cJSON_AddStringToObject(j, "dev_file", o->dev ? o->dev : "");
    if (!o->dev)
        cJSON_AddNumberToObject(j, "dev_split", o->dev_split);
    cJSON_AddNumberToObject(j, "train_examples", r->train_examples);
    cJSON_AddNumberToObject(j, "dev_examples", r->dev_examples);
    cJSON_AddNumberToObject(j, "train_examples_truncated", rn->etr.truncated);
    if (o->n_feedback) {
        cJSON *f = cJSON_AddObjectToObject(j, "feedback");
        cJSON *paths = f ? cJSON_AddArrayToObject(f, "paths") : NULL;
        for (int i = 0; paths && i < o->n_feedback; i++)
            cJSON_AddItemToArray(paths, cJSON_CreateString(o->feedback[i]));
        if (f) {
            cJSON_AddNumberToObject(f, "items", rn->fb.n);
            cJSON_AddNumberToObject(f, "train", r->feedback_train);
            cJSON_AddNumberToObject(f, "holdout", r->feedback_holdout);
            cJSON_AddNumberToObject(f, "torn_lines", rn->fb.torn);
            cJSON_AddNumberToObject(f, "bad_lines", rn->fb.bad);
            cJSON_AddNumberToObject(f, "duplicates", rn->fb.duplicates);
            cJSON_AddNumberToObject(f, "unknown_labels", rn->fb_unknown);
            cJSON_AddNumberToObject(f, "base_items_relabelled", rn->base_relabelled);
            cJSON_AddNumberToObject(f, "base_items_per_epoch", rn->base_per_epoch);
            cJSON_AddNumberToObject(f, "until", (double)r->feedback_until);
        }
    }
    cJSON *lab = cJSON_AddArrayToObject(j, "labels");
    for (int i = 0; lab && i < rn->labels.n; i++)
        cJSON_AddItemToArray(lab, cJSON_CreateString(rn->labels.name[i]));
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
        cJSON_AddBoolToObject(h, "head_only", o->head_only);
    }
    cJSON_AddNumberToObject(j, "steps", (double)r->steps);
    cJSON_AddNumberToObject(j, "train_seconds", r->train_seconds);
    cJSON_AddNumberToObject(j, "train_examples_per_second", r->examples_per_second);
    cJSON_AddNumberToObject(j, "threads", o->threads);
    cJSON_AddItemToObject(j, "epochs", cJSON_Duplicate(rn->history, 1));
    char *s = cJSON_Print(j);
    cJSON_Delete(j);
    return s;
}

static int step_evaluate(run *r, eng_error *err)
{
    const trn_opts *o = r->o;
    trn_result *res = r->res;
    int rc = evaluate(r, &r->m, err);
    if (rc)
        return rc;
    cJSON *last = cJSON_GetArrayItem(r->history, cJSON_GetArraySize(r->history) - 1);
    if (last) {
        cJSON_AddNumberToObject(last, "dev_accuracy", r->m.accuracy);
        cJSON_AddNumberToObject(last, "dev_macro_f1", r->m.macro_f1);
        cJSON_AddNumberToObject(last, "dev_loss", r->m.loss);
        fprintf(r->log, "epoch %d: train loss %.4f, dev accuracy %.2f %%, macro-F1 %.2f %%, "
                "dev loss %.4f\n", cJSON_GetObjectItem(last, "epoch")->valueint,
                cJSON_GetObjectItem(last, "train_loss")->valuedouble, 100 * r->m.accuracy,
                100 * r->m.macro_f1, r->m.loss);
    }
    res->accuracy = r->m.accuracy;
    res->macro_f1 = r->m.macro_f1;
    res->dev_loss = r->m.loss;
    res->first_loss = r->first_n ? r->first_sum / r->first_n : 0;
    res->last_loss = r->last_n ? r->last_sum / r->last_n : 0;
    res->train_seconds = r->t_train;
    res->examples_per_second = r->t_train > 0 ? r->examples / r->t_train : 0;
    res->steps = r->step;
    res->train_examples = r->etr.n;
    res->dev_examples = r->edev.n;
    res->labels = r->labels.n;
    char tsec[32];
    fmt_dur(tsec, sizeof tsec, r->t_train);
    fprintf(r->log, "dev evaluation (%s):\n", o->dev ? o->dev : "split of the training file");
    trn_metrics_print(&r->m, (const char *const *)r->labels.name, r->log);
    fprintf(r->log, "training: %ld steps, %ld examples in %s (%.1f examples/s)\n", r->step,
            r->examples, tsec, res->examples_per_second);
    r->metrics_json = trn_metrics_json(&r->m, (const char *const *)r->labels.name, "dev");
    r->record = run_record(r);
    if (!r->metrics_json || !r->record)
        return eng_fail(err, ENG_ENOMEM, "out of memory");
    return ENG_OK;
}

/* ------------------------------------------------------------------- run */

int trn_finetune(const trn_opts *o, trn_result *res, eng_error *err)
{
    memset(res, 0, sizeof *res);
    memset(err, 0, sizeof *err);
    if (o->epochs < 1 || o->batch_size < 1 || o->accum < 1 || o->max_length < 3 ||
        o->eval_batch < 1)
        return eng_fail(err, ENG_EINVAL, "epochs, batch size, accumulation and eval batch must be "
                        ">= 1 and max length >= 3");
    if (!(o->base || o->from_repository) || !(o->out || o->repository))
        return eng_fail(err, ENG_EINVAL, "a base (--base or --from-repository) and a destination "
                        "(--out or --repository) are needed");
    if (o->out && !o->force && access(o->out, F_OK) == 0) /* found out now, not after training */
        return eng_fail(err, ENG_EINVAL, "%s already exists (--force replaces it)", o->out);
    if (o->repository && o->data.multi_label)
        return eng_fail(err, ENG_EUNSUPPORTED, "the gate compares single-label classifiers: "
                        "--repository with --multi-label is not supported");
    run r = {.o = o, .log = o->log ? o->log : stderr, .res = res};
    int rc;
    if (!(r.history = cJSON_CreateArray()))
        return eng_fail(err, ENG_ENOMEM, "out of memory");
    if (!(rc = step_data(&r, err)) && !(rc = step_model(&r, err)) &&
        !(rc = step_schedule(&r, err)) && !(rc = step_loop(&r, err)) &&
        !(rc = step_evaluate(&r, err)))
        rc = trn_step_publish(&r, err);
    run_close(&r);
    return rc;
}
