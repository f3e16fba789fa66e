/* publish.c - the last step of a run (run.h): save the model folder, evaluate
 * the served version and the new one side by side (the gate), publish a signed
 * version into the repository with the version's metadata. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cJSON.h>

#include "nlpd_repo.h"
#include "repo_cmd.h"
#include "run.h"

/* dir + "/" + name into buf; -1 when it does not fit. */
static int snprintf_path(char *buf, size_t cap, const char *dir, const char *name)
{
    int w = snprintf(buf, cap, "%s/%s", dir, name);
    return w < 0 || (size_t)w >= cap ? -1 : 0;
}

/* ---------------------------------------------------------------- gate */

int trn_gate_decide(trn_result *r, int has_feedback, double max_dev_drop)
{
    double drop = 100.0 * (r->dev_old - r->dev_new);
    if (!r->has_old) {
        snprintf(r->reason, sizeof r->reason, "the repository serves no version yet: the first "
                 "one is published (dev accuracy %.2f %%)", 100 * r->dev_new);
        return 1;
    }
    if (drop > max_dev_drop + 1e-9) {
        snprintf(r->reason, sizeof r->reason, "worse on dev: accuracy %.2f %% -> %.2f %% (a "
                 "drop of %.2f points; --max-dev-drop %g)", 100 * r->dev_old, 100 * r->dev_new,
                 drop, max_dev_drop);
        return 0;
    }
    if (has_feedback) {
        if (r->feedback_holdout < 1) {
            snprintf(r->reason, sizeof r->reason, "no held-aside feedback to compare on (too "
                     "few items for --feedback-holdout)");
            return 0;
        }
        if (!(r->fb_new > r->fb_old)) {
            snprintf(r->reason, sizeof r->reason, "not better on the %d held-aside feedback "
                     "items: accuracy %.2f %% -> %.2f %%", r->feedback_holdout, 100 * r->fb_old,
                     100 * r->fb_new);
            return 0;
        }
        snprintf(r->reason, sizeof r->reason, "better on the %d held-aside feedback items "
                 "(%.2f %% -> %.2f %%) and dev %.2f %% -> %.2f %% (allowed drop %g points)",
                 r->feedback_holdout, 100 * r->fb_old, 100 * r->fb_new, 100 * r->dev_old,
                 100 * r->dev_new, max_dev_drop);
        return 1;
    }
    if (!(r->dev_new > r->dev_old)) {
        snprintf(r->reason, sizeof r->reason, "without feedback the new version must be better "
                 "on dev: accuracy %.2f %% -> %.2f %%", 100 * r->dev_old, 100 * r->dev_new);
        return 0;
    }
    snprintf(r->reason, sizeof r->reason, "better on dev: accuracy %.2f %% -> %.2f %%",
             100 * r->dev_old, 100 * r->dev_new);
    return 1;
}

/* Accuracy of a model folder on the examples of d, through the inference path the
 * daemon serves with (eng_model_load, its own tokenizer, eng_run_classify); labels
 * matched by name. Inputs its tokenizer refuses count as wrong. */
static int folder_accuracy(run *r, const char *dir, const trn_dataset *d, double *acc,
                           eng_error *err)
{
    *acc = 0;
    if (!d->n)
        return ENG_OK;
    eng_model *m = NULL;
    eng_ctx *ctx = NULL;
    float *logits = NULL;
    int *map = NULL, *gold = NULL, rc, n = 0, correct = 0;
    eng_encoding *enc = NULL;
    const eng_encoding **ptr = NULL;
    eng_ctx_opts co = {.backend = NULL, .threads = r->o->threads};
    if ((rc = eng_model_load(dir, &m, err)))
        return rc;
    const eng_model_info *info = eng_model_get_info(m);
    if (info->task != ENG_TASK_CLASSIFY || info->multi_label) {
        rc = eng_fail(err, ENG_EUNSUPPORTED, "%s: the gate compares single-label classifiers",
                      dir);
        goto done;
    }
    int L = info->num_labels, batch = r->o->eval_batch;
    int maxlen = r->oo.max_length < info->max_seq_len ? r->oo.max_length : info->max_seq_len;
    if ((rc = eng_ctx_new(&co, &ctx, err)))
        goto done;
    logits = malloc(sizeof *logits * (size_t)batch * L);
    map = malloc(sizeof *map * (size_t)L);
    enc = calloc((size_t)d->n, sizeof *enc);
    ptr = calloc((size_t)d->n, sizeof *ptr);
    gold = calloc((size_t)d->n, sizeof *gold);
    if (!logits || !map || !enc || !ptr || !gold) {
        rc = eng_fail(err, ENG_ENOMEM, "out of memory");
        goto done;
    }
    for (int c = 0; c < L; c++)
        map[c] = trn_labels_find(&r->labels, info->labels[c]);
    for (int i = 0; i < d->n; i++) {
        const trn_example *x = &d->ex[i];
        eng_encoding_init(&enc[n]);
        if (eng_tokenizer_encode(eng_model_tokenizer(m), x->text, strlen(x->text), x->pair,
                                 x->pair ? strlen(x->pair) : 0, maxlen, &enc[n], NULL)) {
            eng_encoding_free(&enc[n]);
            continue;
        }
        ptr[n] = &enc[n];
        gold[n++] = x->label;
    }
    for (int i = 0; i < n; i += batch) {
        int nb = n - i < batch ? n - i : batch;
        if ((rc = eng_run_classify(ctx, m, ptr + i, nb, NULL, logits, err)))
            goto done;
        for (int k = 0; k < nb; k++) {
            int best = 0;
            for (int c = 1; c < L; c++)
                if (logits[(size_t)k * L + c] > logits[(size_t)k * L + best])
                    best = c;
            correct += map[best] == gold[i + k];
        }
    }
    *acc = (double)correct / d->n;
done:
    for (int i = 0; enc && i < n; i++)
        eng_encoding_free(&enc[i]);
    free(enc);
    free(ptr);
    free(gold);
    free(logits);
    free(map);
    eng_ctx_free(ctx);
    if (m)
        eng_model_unref(m);
    return rc;
}

/* -------------------------------------------------------------- publishing */

/* The version's metadata (nlpd-version.json): base version, both scores, feedback. */
static char *version_metadata(const run *r, int64_t base_until)
{
    const trn_result *res = r->res;
    cJSON *j = cJSON_CreateObject();
    if (!j)
        return NULL;
    char src[4300];
    snprintf(src, sizeof src, "nlpd-train %s from %s", r->o->head_only ? "head-only" : "fine-tune",
             r->base);
    cJSON_AddStringToObject(j, "trainer", "nlpd-train " ENG_VERSION);
    cJSON_AddStringToObject(j, "source", src); /* else the work folder's path, soon gone */
    cJSON_AddStringToObject(j, "base", r->base);
    if (res->base_version[0])
        cJSON_AddStringToObject(j, "base_version", res->base_version);
    else
        cJSON_AddNullToObject(j, "base_version");
    cJSON_AddStringToObject(j, "mode", r->o->head_only ? "head-only" : "full");
    cJSON *sc = cJSON_AddObjectToObject(j, "scores");
    cJSON *dev = sc ? cJSON_AddObjectToObject(sc, "dev") : NULL;
    if (dev) {
        if (res->has_old)
            cJSON_AddNumberToObject(dev, "old", res->dev_old);
        else
            cJSON_AddNullToObject(dev, "old");
        cJSON_AddNumberToObject(dev, "new", res->dev_new);
        cJSON_AddNumberToObject(dev, "n", r->dev.n);
        cJSON_AddStringToObject(dev, "metric", "accuracy");
    }
    if (sc && r->o->n_feedback) {
        cJSON *f = cJSON_AddObjectToObject(sc, "feedback");
        if (f) {
            if (res->has_old)
                cJSON_AddNumberToObject(f, "old", res->fb_old);
            else
                cJSON_AddNullToObject(f, "old");
            cJSON_AddNumberToObject(f, "new", res->fb_new);
            cJSON_AddNumberToObject(f, "n", res->feedback_holdout);
            cJSON_AddStringToObject(f, "metric", "accuracy");
        }
    }
    int64_t until = res->feedback_until > base_until ? res->feedback_until : base_until;
    cJSON_AddNumberToObject(j, "feedback_until", (double)until);
    cJSON_AddNumberToObject(j, "feedback_items", res->feedback_train);
    cJSON_AddNumberToObject(j, "feedback_holdout", res->feedback_holdout);
    cJSON_AddStringToObject(j, "gate", res->reason);
    char *s = cJSON_Print(j);
    cJSON_Delete(j);
    return s;
}

/* feedback_until of a version folder's metadata (0 when absent). */
int64_t trn_version_feedback_until(const char *version_dir)
{
    char *json = NULL;
    eng_error e;
    if (eng_repo_read_metadata(version_dir, &json, &e) || !json)
        return 0;
    cJSON *j = cJSON_Parse(json);
    free(json);
    const cJSON *u = cJSON_GetObjectItemCaseSensitive(j, "feedback_until");
    int64_t v = cJSON_IsNumber(u) ? (int64_t)u->valuedouble : 0;
    cJSON_Delete(j);
    return v;
}

/* The version o->repository serves (the gate's "old"): 1 with dir filled, 0 when the
 * repository has no complete version yet. */
static int served_version(run *r, char *ver, size_t vcap, char *dir, size_t dcap,
                          eng_error *err)
{
    const char *repo = r->o->repository;
    eng_repo_entry *list = NULL;
    int n = 0, complete = 0;
    struct stat st;
    if (stat(repo, &st) != 0)
        return 0;
    int rc = eng_repo_list(repo, &list, &n, err);
    if (rc)
        return rc;
    for (int i = 0; i < n; i++)
        complete += list[i].has_sig;
    free(list);
    if (!complete)
        return 0;
    if ((rc = eng_repo_current(repo, r->o->public_key, ver, vcap, err)))
        return rc; /* versions exist but none verifies: do not publish blindly */
    if (snprintf_path(dir, dcap, repo, ver))
        return eng_fail(err, ENG_EINVAL, "%s: path too long", repo);
    return 1;
}

int trn_step_publish(run *r, eng_error *err)
{
    const trn_opts *o = r->o;
    trn_result *res = r->res;
    int rc;
    char *meta = NULL, saved[4200];
    if (trn_run_interrupted(r)) {
        rc = eng_fail(err, ENG_EINVAL, "interrupted before publishing: nothing was written");
        goto done;
    }
    /* The folder: --out, or a work folder inside the repository (ignored by readers:
     * its name starts with '.') that is removed once the version is published. */
    if (o->out) {
        snprintf(saved, sizeof saved, "%s", o->out);
    } else {
        if (mkdir(o->repository, 0755) != 0 && errno != EEXIST) {
            rc = eng_fail(err, ENG_EIO, "%s: %s", o->repository, strerror(errno));
            goto done;
        }
        if (snprintf(r->work, sizeof r->work, "%s/.nlpd-train-%ld-XXXXXX", o->repository,
                     (long)getpid()) >= (int)sizeof r->work || !mkdtemp(r->work)) {
            rc = eng_fail(err, ENG_EIO, "%s: cannot make a work folder: %s", o->repository,
                          strerror(errno));
            r->work[0] = 0;
            goto done;
        }
        snprintf(saved, sizeof saved, "%s/model", r->work);
    }
    eng_file_out extra[2] = {{"eval_results.json", r->metrics_json, strlen(r->metrics_json)},
                             {"nlpd_train.json", r->record, strlen(r->record)}};
    if ((rc = eng_trainer_save(r->t, saved, extra, 2, o->force, err))) {
        if (strstr(err->msg, "kept at")) /* finished but not put in place: keep it */
            r->keep_work = 1;
        goto done;
    }
    fprintf(r->log, "saved: %s\n", saved);
    if (!o->repository)
        goto done;

    /* The gate: the served version and the new one, same data, same inference path. */
    char ver[ENG_REPO_NAME_MAX + 1] = "", old[4096] = "";
    int has = served_version(r, ver, sizeof ver, old, sizeof old, err);
    if (has < 0) {
        rc = has;
        goto kept;
    }
    res->gated = 1;
    res->has_old = has;
    if (has) {
        fprintf(r->log, "gate: evaluating the served version %s and the new model on %d dev "
                "and %d held-aside feedback items\n", ver, r->dev.n, r->fbhold.n);
        if ((rc = folder_accuracy(r, old, &r->dev, &res->dev_old, err)) ||
            (rc = folder_accuracy(r, old, &r->fbhold, &res->fb_old, err)))
            goto kept;
    }
    if ((rc = folder_accuracy(r, saved, &r->dev, &res->dev_new, err)) ||
        (rc = folder_accuracy(r, saved, &r->fbhold, &res->fb_new, err)))
        goto kept;
    int pass = trn_gate_decide(res, o->n_feedback > 0, o->max_dev_drop);
    fprintf(r->log, "gate: %s: %s\n", pass ? "publish" : "refused", res->reason);
    if (!pass) {
        rc = TRN_REFUSED;
        goto done;
    }
    if (trn_run_interrupted(r)) {
        rc = eng_fail(err, ENG_EINVAL, "interrupted before publishing: nothing was published");
        goto done;
    }
    if (!(meta = version_metadata(r, has ? trn_version_feedback_until(old) : 0))) {
        rc = eng_fail(err, ENG_ENOMEM, "out of memory");
        goto kept;
    }
    if ((rc = eng_repo_publish(saved, o->repository, o->key, meta, res->version,
                               sizeof res->version, err)))
        goto kept;
    fprintf(r->log, "published: %s/%s\n", o->repository, res->version);
    if (o->keep > 0) {
        /* Retention; a failure here does not undo the publish, it is reported. */
        eng_error pe;
        if (trn_prune(o->repository, o->keep, o->public_key, res->pruned, sizeof res->pruned,
                      &pe))
            snprintf(res->prune_error, sizeof res->prune_error, "%s", pe.msg);
        if (res->pruned[0])
            fprintf(r->log, "pruned: %s (keeping %d)\n", res->pruned, o->keep);
        if (res->prune_error[0])
            fprintf(r->log, "prune failed: %s\n", res->prune_error);
    }
    goto done;
kept:
    /* Trained and saved, but not published: the model stays where it is. */
    if (r->work[0]) {
        r->keep_work = 1;
        size_t l = strlen(err->msg);
        snprintf(err->msg + l, sizeof err->msg - l, " (the trained model is kept at %s)", saved);
    }
done:
    free(meta);
    return rc;
}

