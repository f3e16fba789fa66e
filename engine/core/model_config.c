/* model_config.c - config.json parsing for the BERT family. */
#include "core/model_config.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "core/util.h"

static const struct {
    const char *arch;
    eng_family family;
    eng_task task;
} archs[] = {
    {"BertModel", ENG_FAMILY_BERT, ENG_TASK_EMBED},
    {"BertForSequenceClassification", ENG_FAMILY_BERT, ENG_TASK_CLASSIFY},
    {"BertForQuestionAnswering", ENG_FAMILY_BERT, ENG_TASK_QA},
    {"DistilBertModel", ENG_FAMILY_DISTILBERT, ENG_TASK_EMBED},
    {"DistilBertForSequenceClassification", ENG_FAMILY_DISTILBERT, ENG_TASK_CLASSIFY},
    {"DistilBertForQuestionAnswering", ENG_FAMILY_DISTILBERT, ENG_TASK_QA},
};

static const struct {
    const char *name;
    eng_act act;
} acts[] = {
    {"gelu", ENG_ACT_GELU},
    {"gelu_new", ENG_ACT_GELU_TANH},
    {"gelu_pytorch_tanh", ENG_ACT_GELU_TANH},
    {"relu", ENG_ACT_RELU},
};

/* Reads an integer key into *out; a missing key keeps *out (the default). */
static int get_int(const cJSON *root, const char *key, int lo, int hi, int *out,
                   const char *path, eng_error *err)
{
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!j)
        return ENG_OK;
    /* range first: casting a double outside long long (3e31, NaN) is undefined */
    if (!cJSON_IsNumber(j) || !(j->valuedouble >= lo && j->valuedouble <= hi) ||
        j->valuedouble != (double)(long long)j->valuedouble)
        return eng_fail(err, ENG_EFORMAT, "%s: '%s' must be an integer in [%d, %d]", path, key,
                        lo, hi);
    *out = (int)j->valuedouble;
    return ENG_OK;
}

static int require_int(const cJSON *root, const char *key, int lo, int hi, int *out,
                       const char *path, eng_error *err)
{
    if (!cJSON_GetObjectItemCaseSensitive(root, key))
        return eng_fail(err, ENG_EFORMAT, "%s: missing key '%s'", path, key);
    return get_int(root, key, lo, hi, out, path, err);
}

static const char *get_str(const cJSON *root, const char *key)
{
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(root, key);
    return cJSON_IsString(j) ? j->valuestring : NULL;
}

static int parse_act(const char *name, eng_act *act, const char *path, const char *key,
                     eng_error *err)
{
    for (size_t i = 0; i < sizeof acts / sizeof acts[0]; i++)
        if (strcmp(acts[i].name, name) == 0) {
            *act = acts[i].act;
            return ENG_OK;
        }
    return eng_fail(err, ENG_EUNSUPPORTED, "%s: %s '%s' is not supported (gelu, gelu_new, "
                    "gelu_pytorch_tanh, relu)", path, key, name);
}

static int parse_bert(const cJSON *root, eng_model_config *c, const char *path, eng_error *err)
{
    int rc;
    if ((rc = require_int(root, "hidden_size", 1, 1 << 16, &c->hidden, path, err)) ||
        (rc = require_int(root, "num_hidden_layers", 1, 1024, &c->layers, path, err)) ||
        (rc = require_int(root, "num_attention_heads", 1, 1024, &c->heads, path, err)) ||
        (rc = require_int(root, "intermediate_size", 1, 1 << 20, &c->intermediate, path, err)))
        return rc;
    c->vocab = 30522;
    c->max_positions = 512;
    c->type_vocab = 2;
    if ((rc = get_int(root, "vocab_size", 1, INT_MAX / 2, &c->vocab, path, err)) ||
        (rc = get_int(root, "max_position_embeddings", 2, 1 << 20, &c->max_positions, path,
                      err)) ||
        (rc = get_int(root, "type_vocab_size", 1, 1 << 16, &c->type_vocab, path, err)))
        return rc;
    const char *pet = get_str(root, "position_embedding_type");
    if (pet && strcmp(pet, "absolute") != 0)
        return eng_fail(err, ENG_EUNSUPPORTED, "%s: position_embedding_type '%s' is not "
                        "supported (only 'absolute')", path, pet);
    const cJSON *eps = cJSON_GetObjectItemCaseSensitive(root, "layer_norm_eps");
    c->ln_eps = cJSON_IsNumber(eps) ? (float)eps->valuedouble : 1e-12f;
    const char *act = get_str(root, "hidden_act");
    return parse_act(act ? act : "gelu", &c->act, path, "hidden_act", err);
}

static int parse_distilbert(const cJSON *root, eng_model_config *c, const char *path,
                            eng_error *err)
{
    int rc;
    c->hidden = 768, c->layers = 6, c->heads = 12, c->intermediate = 3072;
    c->vocab = 30522, c->max_positions = 512;
    if ((rc = get_int(root, "dim", 1, 1 << 16, &c->hidden, path, err)) ||
        (rc = get_int(root, "n_layers", 1, 1024, &c->layers, path, err)) ||
        (rc = get_int(root, "n_heads", 1, 1024, &c->heads, path, err)) ||
        (rc = get_int(root, "hidden_dim", 1, 1 << 20, &c->intermediate, path, err)) ||
        (rc = get_int(root, "vocab_size", 1, INT_MAX / 2, &c->vocab, path, err)) ||
        (rc = get_int(root, "max_position_embeddings", 2, 1 << 20, &c->max_positions, path,
                      err)))
        return rc;
    c->type_vocab = 0;
    c->ln_eps = 1e-12f; /* fixed in DistilBERT's modelling code */
    const char *act = get_str(root, "activation");
    return parse_act(act ? act : "gelu", &c->act, path, "activation", err);
}

/* id2label {"0": "neg", ...}; missing names become LABEL_i as in transformers. */
static int parse_labels(const cJSON *root, eng_model_config *c, const char *path,
                        eng_error *err)
{
    const cJSON *id2label = cJSON_GetObjectItemCaseSensitive(root, "id2label");
    int n = 2;
    if (cJSON_IsObject(id2label) && cJSON_GetArraySize(id2label) > 0)
        n = cJSON_GetArraySize(id2label);
    int rc = get_int(root, "num_labels", 1, 1 << 20, &n, path, err);
    if (rc)
        return rc;
    c->labels = calloc((size_t)n, sizeof *c->labels);
    if (!c->labels)
        return eng_fail(err, ENG_ENOMEM, "%s: out of memory", path);
    c->num_labels = n;
    for (const cJSON *e = id2label ? id2label->child : NULL; e; e = e->next) {
        char *end;
        long id = strtol(e->string, &end, 10);
        if (*e->string == 0 || *end || id < 0 || id >= n || !cJSON_IsString(e))
            return eng_fail(err, ENG_EFORMAT, "%s: id2label entry '%s' is not an id in "
                            "[0, %d) with a string label", path, e->string, n);
        free(c->labels[id]);
        if (!(c->labels[id] = strdup(e->valuestring)))
            return eng_fail(err, ENG_ENOMEM, "%s: out of memory", path);
    }
    for (int i = 0; i < n; i++) {
        if (c->labels[i])
            continue;
        char buf[32];
        snprintf(buf, sizeof buf, "LABEL_%d", i);
        if (!(c->labels[i] = strdup(buf)))
            return eng_fail(err, ENG_ENOMEM, "%s: out of memory", path);
    }
    const char *pt = get_str(root, "problem_type");
    c->multi_label = pt && strcmp(pt, "multi_label_classification") == 0;
    return ENG_OK;
}

int eng_model_config_load(const char *dir, eng_model_config *c, eng_error *err)
{
    char path[4096];
    int rc;
    memset(c, 0, sizeof *c);
    cJSON *root = eng_read_json(dir, "config.json", 0, &rc, err);
    if (!root)
        return rc;
    eng_path_join(path, sizeof path, dir, "config.json"); /* fits: eng_read_json joined it */
    const cJSON *arch = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(root, "architectures"), 0);
    const char *mt = get_str(root, "model_type");
    if (!cJSON_IsString(arch)) {
        rc = eng_fail(err, ENG_EFORMAT, "%s: missing 'architectures' (a list naming the model "
                      "class)", path);
        goto done;
    }
    size_t i;
    for (i = 0; i < sizeof archs / sizeof archs[0]; i++)
        if (strcmp(archs[i].arch, arch->valuestring) == 0)
            break;
    if (i == sizeof archs / sizeof archs[0]) {
        rc = eng_fail(err, ENG_EUNSUPPORTED, "%s: architecture '%s' is not supported (BERT or "
                      "DistilBERT: *Model, *ForSequenceClassification, *ForQuestionAnswering)",
                      path, arch->valuestring);
        goto done;
    }
    snprintf(c->architecture, sizeof c->architecture, "%s", archs[i].arch);
    c->family = archs[i].family;
    c->task = archs[i].task;
    snprintf(c->model_type, sizeof c->model_type, "%s",
             c->family == ENG_FAMILY_BERT ? "bert" : "distilbert");
    if (mt && strcmp(mt, c->model_type) != 0) {
        rc = eng_fail(err, ENG_EFORMAT, "%s: model_type '%s' does not match architecture '%s'",
                      path, mt, c->architecture);
        goto done;
    }
    rc = c->family == ENG_FAMILY_BERT ? parse_bert(root, c, path, err)
                                      : parse_distilbert(root, c, path, err);
    if (rc)
        goto done;
    if (c->hidden % c->heads) {
        rc = eng_fail(err, ENG_EFORMAT, "%s: hidden size %d is not a multiple of the %d heads",
                      path, c->hidden, c->heads);
        goto done;
    }
    if (c->task == ENG_TASK_CLASSIFY)
        rc = parse_labels(root, c, path, err);
    else if (c->task == ENG_TASK_QA)
        c->num_labels = 2;
done:
    cJSON_Delete(root);
    if (rc)
        eng_model_config_free(c);
    return rc;
}

void eng_model_config_free(eng_model_config *c)
{
    for (int i = 0; c->labels && i < c->num_labels; i++)
        free(c->labels[i]);
    free(c->labels);
    c->labels = NULL;
    c->num_labels = 0;
}
