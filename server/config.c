/* config.c - the configuration key table, JSON loading and validation. */
#include "config.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "api.h" /* srv_lang_code_valid */

typedef enum { K_STR, K_OPTSTR, K_INT, K_ENUM, K_BOOL } key_kind;

/* One configuration key. name is the dotted path inside its object
 * ("limits.max_texts"); def is the default as text (NULL: none). */
typedef struct conf_key {
    const char *name;
    key_kind kind;
    size_t off;
    const char *def;
    long long min, max;
    const char *choices; /* K_ENUM: "a|b|c" */
    int required;
    const char *doc;
} conf_key;

#define TOP(f) offsetof(srv_config, f)
#define MOD(f) offsetof(srv_model_conf, f)

static const conf_key top_keys[] = {
    {"listen", K_STR, TOP(listen), "127.0.0.1:8080", 0, 0, NULL, 0,
     "Address to listen on, HOST:PORT or [IPV6]:PORT. Port 0 picks a free port (logged)."},
    {"threads", K_INT, TOP(threads), "1", 1, 64, NULL, 0,
     "libuv pool threads that parse JSON, validate, tokenise and render responses off the "
     "loop thread. They work in short bursts; keep threads + the model compute threads "
     "within the cores (see models[].batching.threads)."},
    {"log.level", K_ENUM, TOP(log_level), "info", 0, 0, "debug|info|warn|error", 0,
     "Lowest level logged to stderr; info logs one line per request."},
    {"log.format", K_ENUM, TOP(log_format), "text", 0, 0, "text|json", 0,
     "text: 'TIME LEVEL [request-id] message'; json: one JSON object per line."},
    {"limits.max_body_bytes", K_INT, TOP(max_body_bytes), "1048576", 256, 1073741824, NULL, 0,
     "Largest request body; larger bodies get 413 payload_too_large (checked against "
     "Content-Length before reading, and while reading)."},
    {"limits.max_texts", K_INT, TOP(max_texts), "64", 1, 65536, NULL, 0,
     "Most texts (or QA items) in one request; more get 413 too_many_texts."},
    {"limits.max_text_bytes", K_INT, TOP(max_text_bytes), "16384", 1, 16777216, NULL, 0,
     "Longest text, question or context in bytes; longer get 413 text_too_long. Texts "
     "within this limit but over the model's max_seq_len tokens are truncated."},
    {"limits.max_connections", K_INT, TOP(max_connections), "1024", 1, 1000000, NULL, 0,
     "Concurrent client connections accepted."},
    {"limits.connection_timeout_s", K_INT, TOP(connection_timeout_s), "60", 0, 86400, NULL, 0,
     "Idle connections are closed after this many seconds (0: never)."},
    {"limits.max_header_bytes", K_INT, TOP(max_header_bytes), "16384", 1024, 1048576, NULL, 0,
     "Largest request line + header block; larger get 431 headers_too_large (JSON). A new "
     "connection's first request is checked before libmicrohttpd reads it; its per-connection "
     "memory is twice this plus 16 KiB, so a later request on a kept-alive connection that is "
     "far over is refused by libmicrohttpd itself (a short HTML answer)."},
    {"limits.max_connections_per_client", K_INT, TOP(max_conns_per_client), "256", 0, 1000000,
     NULL, 0,
     "Concurrent connections from one client address; more are answered 429 "
     "too_many_connections (JSON) and closed at once. Behind a proxy every connection comes "
     "from the proxy's address: size this above its upstream keep-alive pool. 0: no limit."},
    {"limits.request_timeout_ms", K_INT, TOP(request_timeout_ms), "30000", 0, 3600000, NULL, 0,
     "A request must arrive completely (headers and body) within this time of the connection "
     "opening or of the previous response on it, however slowly its bytes trickle in: a late "
     "body gets 408 request_timeout, a connection without a complete header block is closed. "
     "0: no limit (only limits.connection_timeout_s, an idle timeout)."},
    {"limits.max_in_flight", K_INT, TOP(max_in_flight), "1024", 1, 1000000, NULL, 0,
     "Inference requests admitted at once over all models, from the arrival of their headers "
     "until they are answered (reading, parsing, queued, computing, rendering). More get 429 "
     "queue_full with Retry-After, decided from the headers before the body is read."},
    {"auth.api_key_file", K_OPTSTR, TOP(api_key_file), NULL, 0, 0, NULL, 0,
     "File of hex SHA-256 hashes of the accepted API keys, one per line ('#' comments). "
     "When set, /v1/* needs 'Authorization: Bearer KEY' or 'X-API-Key: KEY'; /healthz, "
     "/readyz and /metrics stay open. null: no authentication."},
    {"auth.admin_key_file", K_OPTSTR, TOP(admin_key_file), NULL, 0, 0, NULL, 0,
     "File of hex SHA-256 hashes of the admin API keys (same format as api_key_file). The "
     "admin API (/v1/models/{name}/versions, /v1/admin/...) needs one of these keys; a "
     "data-plane key gets 403. null: the admin API is open when no api_key_file is set "
     "either, and refused (403) when one is."},
    {"drain_timeout_ms", K_INT, TOP(drain_timeout_ms), "10000", 0, 3600000, NULL, 0,
     "On SIGTERM/SIGINT, how long in-flight requests may take to finish before exit."},
    {"signing.public_key_file", K_OPTSTR, TOP(public_key_file), NULL, 0, 0, NULL, 0,
     "ECDSA P-256 public key (PEM) that repository versions must be signed with (OpenSSF "
     "model-signing bundle, model.sig). null: versions are still checked against the "
     "file digests their bundle lists, but need no signature. models[].signing."
     "public_key_file overrides it per model."},
    {"reload.rescan_interval_s", K_INT, TOP(rescan_interval_s), "10", 0, 86400, NULL, 0,
     "How often every model repository (and fixed model folder) is rescanned for changes, "
     "for file systems that deliver no inotify events (NFS, Kubernetes volumes). 0: only "
     "on inotify events, SIGHUP and POST /v1/admin/models/{name}/reload."},
    {"reload.debounce_ms", K_INT, TOP(debounce_ms), "200", 0, 60000, NULL, 0,
     "A burst of file events within this window causes one rescan."},
    {"reload.memory_factor_pct", K_INT, TOP(memory_factor_pct), "200", 0, 10000, NULL, 0,
     "Before loading a new version beside the serving one, MemAvailable (and the cgroup's "
     "memory.max headroom) must be at least this percentage of the version's file sizes "
     "(weights are read and packed); otherwise the version is rejected with that reason. "
     "0: no check."},
    {"feedback.dir", K_OPTSTR, TOP(feedback_dir), NULL, 0, 0, NULL, 0,
     "Folder POST /v1/feedback appends labelled items to: DIR/<model>/<instance>.jsonl, "
     "instance = <hostname>-<pid>-<start unix s> (replicas may share DIR). The answer (202) "
     "comes once the items are synced to disk. Created when missing; an unwritable folder or "
     "a full disk gets 503 feedback_unavailable. null: the endpoint answers 404 "
     "feedback_not_configured."},
    {"feedback.max_items", K_INT, TOP(feedback_max_items), "256", 1, 65536, NULL, 0,
     "Most items in one feedback request; more get 413 too_many_items. Each text is bounded "
     "by limits.max_text_bytes, the body by limits.max_body_bytes."},
    {"feedback.recent.enabled", K_BOOL, TOP(recent_enabled), "false", 0, 0, NULL, 0,
     "Remember the texts of recent successful /v1/sentiment and /v1/classify requests by "
     "request id (X-Request-Id), in memory, so that feedback can name an answer by "
     "{\"request_id\", \"index\"} instead of repeating its text. This retains user text: off "
     "unless enabled. Needs feedback.dir."},
    {"feedback.recent.max_requests", K_INT, TOP(recent_max_requests), "10000", 1, 10000000,
     NULL, 0, "Most requests remembered; the oldest are forgotten first."},
    {"feedback.recent.max_bytes", K_INT, TOP(recent_max_bytes), "67108864", 4096, 2147483647,
     NULL, 0, "Most bytes of remembered texts (plus 128 bytes per request); the oldest are "
     "forgotten first. A request larger than this alone is not remembered."},
    {"feedback.recent.max_age_s", K_INT, TOP(recent_max_age_s), "600", 1, 604800, NULL, 0,
     "Requests are forgotten this many seconds after they were answered; feedback naming them "
     "later gets 404 request_not_found."},
};

static const conf_key model_keys[] = {
    {"name", K_STR, MOD(name), NULL, 0, 0, NULL, 1,
     "Name clients use in \"model\" and /v1/models/{name}; letters, digits, '.', '_', '-'."},
    {"path", K_OPTSTR, MOD(path), NULL, 0, 0, NULL, 0,
     "Hugging Face model folder (config.json, model.safetensors, tokenizer). Relative "
     "paths are relative to the working directory. A missing folder stops start-up. "
     "Exactly one of path and repository."},
    {"repository", K_OPTSTR, MOD(repository), NULL, 0, 0, NULL, 0,
     "Model repository folder: DIR/<version>/ holds a Hugging Face folder signed in the "
     "OpenSSF model-signing format (model.sig, written last). The newest valid version is "
     "served, unless one is pinned (DIR/PIN); new versions are verified, loaded, warmed up "
     "and swapped in without dropping a request. Created if missing; the model is not "
     "ready until it has a version. Exactly one of path and repository."},
    {"signing.public_key_file", K_OPTSTR, MOD(public_key_file), NULL, 0, 0, NULL, 0,
     "This model's repository signing key (PEM); null: the top-level "
     "signing.public_key_file."},
    {"task", K_ENUM, MOD(task_name), NULL, 0, 0, "embed|sentiment|classify|qa|translate", 1,
     "Endpoint served: embed (/v1/embed), sentiment (/v1/sentiment), classify "
     "(/v1/classify), qa (/v1/qa), translate (/v1/translate: a MarianMTModel folder)."},
    {"version", K_OPTSTR, MOD(version), NULL, 0, 0, NULL, 0,
     "Version reported in responses. null: first 12 hex digits of SHA-256 over "
     "config.json + model.safetensors."},
    {"backend", K_ENUM, MOD(backend), "cpu", 0, 0,
     "cpu|cuda|cuda:0|cuda:1|cuda:2|cuda:3|cuda:4|cuda:5|cuda:6|cuda:7", 0,
     "Compute backend: the CPU, or a CUDA GPU (cuda = cuda:0) in a build with CUDA."},
    {"precision", K_ENUM, MOD(precision), "fp32", 0, 0, "fp32|bf16|int8|fp16", 0,
     "Weights of the linear layers. On the CPU: fp32 (bitwise the reference), bf16 (fp32 "
     "accumulation; AVX-512 BF16 when the CPU has it) or int8 (per-channel weights, per-row "
     "activations; AVX-512 VNNI, else AVX2). On CUDA: fp32, fp16 or bf16 (cuBLAS with 16-bit "
     "inputs and fp32 accumulation; every task, translation included; the weights are "
     "converted on the GPU once per model version). fp16 on the CPU and int8 on CUDA stop start-up. Layer norms, "
     "softmax and the residual stream stay fp32. /v1/models reports the kernel each model "
     "runs on."},
    {"timeout_ms", K_INT, MOD(timeout_ms), "10000", 1, 3600000, NULL, 0,
     "Default request deadline; a request still queued after it gets 504."},
    {"max_timeout_ms", K_INT, MOD(max_timeout_ms), "60000", 1, 3600000, NULL, 0,
     "Largest \"timeout_ms\" a request may ask for (larger: 422 invalid_field)."},
    {"batching.max_batch_tokens", K_INT, MOD(max_batch_tokens), "8192", 1, 16777216, NULL, 0,
     "Token budget per batch, padding counted (sequences x longest sequence)."},
    {"batching.max_batch_size", K_INT, MOD(max_batch_size), "64", 1, 65536, NULL, 0,
     "Most sequences per batch."},
    {"batching.max_delay_us", K_INT, MOD(max_delay_us), "2000", 0, 10000000, NULL, 0,
     "How long a free worker waits for more requests to fill a batch."},
    {"batching.always_delay", K_BOOL, MOD(always_delay), "false", 0, 0, NULL, 0,
     "Wait max_delay_us for batch-mates even when no other request is on its way (by "
     "default a free worker waits only while requests are being read or parsed, so a lone "
     "request runs at once). For tests that hold requests in the queue."},
    {"batching.queue_capacity", K_INT, MOD(queue_capacity), "1024", 1, 16777216, NULL, 0,
     "Queued sequences before requests get 429 queue_full."},
    {"batching.max_job_mib", K_INT, MOD(max_job_mib), "1024", 1, 1048576, NULL, 0,
     "Largest estimated working memory of one request, in MiB; larger requests get 413 "
     "request_too_large before any work. translate: texts x beam_size x (KV cache for "
     "max_length + source tokens, both directions of attention, all decoder layers) plus "
     "logits; /v1/models shows the estimate per text at the model's maxima. qa: the windows "
     "of all items share the window tokens this allows at the least cost per token "
     "(qa_max_tokens in /v1/models); the item that would pass it is refused before its "
     "windows are built."},
    {"batching.max_batch_mib", K_INT, MOD(max_batch_mib), "2048", 1, 1048576, NULL, 0,
     "Largest estimated working memory of one batch, in MiB: requests join a batch while the "
     "sum stays within (the oldest queued request always runs)."},
    {"batching.max_in_flight", K_INT, MOD(max_in_flight), "0", 0, 16777216, NULL, 0,
     "Requests for this model admitted at once (arrival to answer); more get 429 queue_full "
     "with Retry-After. Checked from the headers when the endpoint has only this model, else "
     "as soon as the body names the model (before tokenising). 0: queue_capacity + "
     "workers x max_batch_size (what can be queued plus what can be computing)."},
    {"batching.workers", K_INT, MOD(workers), "1", 1, 256, NULL, 0,
     "Worker threads running batches for this model."},
    {"batching.threads", K_INT, MOD(threads), "0", 0, 1024, NULL, 0,
     "CPU threads per worker. 0: online cores / workers. workers x threads must not "
     "exceed the online cores; over all models the sum may (idle workers sleep; models "
     "busy at the same time share the cores, and start-up logs a warning)."},
    {"batching.recover_attempts", K_INT, MOD(recover_attempts), "5", 1, 100, NULL, 0,
     "GPU backends: after a device fault (a CUDA error) each of this model's workers "
     "recreates its engine context (stream, cuBLAS handle, activation arena; the weights stay "
     "on the device) at once, then - should recreating fail or the new context fault again - "
     "after recover_backoff_ms, at most this many times in all; meanwhile and after the last "
     "failed attempt its requests fail (500) and /readyz is 503 device_fault. A sticky "
     "error (one that breaks the whole process's CUDA context: an illegal address, a launch "
     "failure, an uncorrectable ECC error, ...) makes no attempt: /healthz turns 503 and nlpd "
     "drains and exits with status 3 to be restarted. No effect on the CPU."},
    {"batching.recover_backoff_ms", K_INT, MOD(recover_backoff_ms), "200", 10, 30000, NULL, 0,
     "GPU backends: the wait before the second context recreation after a device fault; it "
     "doubles for each later one, up to 30 s."},
    {"translation.source_lang", K_OPTSTR, MOD(source_lang), NULL, 0, 0, NULL, 0,
     "translate: source language code requests name in \"source\" (e.g. \"en\"). null: "
     "tokenizer_config.json's source_lang."},
    {"translation.target_lang", K_OPTSTR, MOD(target_lang), NULL, 0, 0, NULL, 0,
     "translate: target language code requests name in \"target\" (e.g. \"pt\"). null: "
     "tokenizer_config.json's target_lang. A multi-target model also accepts as \"target\" "
     "every code xx of its vocabulary's >>xx<< tokens (the token is prepended to each text)."},
    {"translation.target_token", K_OPTSTR, MOD(target_token), NULL, 0, 0, NULL, 0,
     "translate: the >>xx<< token prepended to each text translated into target_lang (and when "
     "a request names the model without a target), for multi-target models whose default "
     "target needs one, e.g. \">>por<<\". null: none (a >>xx<< token whose xx equals "
     "target_lang is still used)."},
    {"translation.max_beam_size", K_INT, MOD(max_beam_size), "8", 1, 64, NULL, 0,
     "translate: largest \"beam_size\" a request may ask for (larger: 422). Also caps the "
     "default, generation_config.json's num_beams."},
    {"translation.max_length", K_INT, MOD(max_length), "512", 2, 4096, NULL, 0,
     "translate: largest \"max_length\" (output tokens + 1, as transformers counts) a request "
     "may ask for (larger: 422). Also caps the default, generation_config.json's max_length."},
};

#define NKEYS(t) (sizeof(t) / sizeof((t)[0]))

static void set_err(char *err, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t cap, const char *fmt, ...)
{
    if (!err || !cap)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, cap, fmt, ap);
    va_end(ap);
}

const char *srv_task_name(srv_task t)
{
    static const char *const names[] = {"embed", "sentiment", "classify", "qa", "translate"};
    return (unsigned)t < 5 ? names[t] : "?";
}

static int choice_index(const char *choices, const char *v)
{
    size_t vl = strlen(v);
    int i = 0;
    for (const char *p = choices; *p; i++) {
        const char *e = strchr(p, '|');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        if (l == vl && strncmp(p, v, l) == 0)
            return i;
        if (!e)
            break;
        p = e + 1;
    }
    return -1;
}

/* Store a value given as text (defaults, command line) or as JSON (file). */
static int key_apply(const conf_key *k, void *base, const cJSON *jv, const char *text,
                     const char *where, char *err, size_t cap)
{
    char *sp = NULL;
    char **sfield = (char **)((char *)base + k->off);
    int *ifield = (int *)((char *)base + k->off);

    switch (k->kind) {
    case K_STR:
    case K_OPTSTR:
    case K_ENUM:
        if (jv) {
            if (k->kind == K_OPTSTR && cJSON_IsNull(jv)) {
                text = NULL;
            } else if (!cJSON_IsString(jv)) {
                set_err(err, cap, "%s: must be a string%s", where,
                        k->kind == K_OPTSTR ? " or null" : "");
                return -1;
            } else {
                text = jv->valuestring;
            }
        }
        if (k->kind == K_OPTSTR && text && (!*text || strcmp(text, "null") == 0))
            text = NULL;
        if (k->kind != K_OPTSTR && (!text || !*text)) {
            set_err(err, cap, "%s: must not be empty", where);
            return -1;
        }
        if (k->kind == K_ENUM && choice_index(k->choices, text) < 0) {
            set_err(err, cap, "%s: must be one of %s, got \"%s\"", where, k->choices, text);
            return -1;
        }
        if (text && !(sp = strdup(text))) {
            set_err(err, cap, "%s: out of memory", where);
            return -1;
        }
        free(*sfield);
        *sfield = sp;
        return 0;
    case K_BOOL: {
        int v;
        if (jv) {
            if (!cJSON_IsBool(jv)) {
                set_err(err, cap, "%s: must be true or false", where);
                return -1;
            }
            v = cJSON_IsTrue(jv);
        } else if (text && (strcmp(text, "true") == 0 || strcmp(text, "1") == 0)) {
            v = 1;
        } else if (text && (strcmp(text, "false") == 0 || strcmp(text, "0") == 0)) {
            v = 0;
        } else {
            set_err(err, cap, "%s: must be true or false, got \"%s\"", where, text ? text : "");
            return -1;
        }
        *ifield = v;
        return 0;
    }
    case K_INT: {
        double d;
        if (jv) {
            if (!cJSON_IsNumber(jv)) {
                set_err(err, cap, "%s: must be an integer in [%lld, %lld]", where, k->min, k->max);
                return -1;
            }
            d = jv->valuedouble;
        } else {
            char *end;
            errno = 0;
            long long v = text ? strtoll(text, &end, 10) : 0;
            if (!text || !*text || *end || errno) {
                set_err(err, cap, "%s: must be an integer in [%lld, %lld], got \"%s\"", where,
                        k->min, k->max, text ? text : "");
                return -1;
            }
            d = (double)v;
        }
        if (!isfinite(d) || d != floor(d) || d < (double)k->min || d > (double)k->max) {
            set_err(err, cap, "%s: must be an integer in [%lld, %lld], got %g", where, k->min,
                    k->max, d);
            return -1;
        }
        *ifield = (int)d;
        return 0;
    }
    }
    return -1;
}

static int apply_defaults(const conf_key *tab, size_t n, void *base)
{
    for (size_t i = 0; i < n; i++)
        if (tab[i].def && key_apply(&tab[i], base, NULL, tab[i].def, tab[i].name, NULL, 0))
            return -1;
    return 0;
}

static const conf_key *find_key(const conf_key *tab, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(tab[i].name, name) == 0)
            return &tab[i];
    return NULL;
}

/* Is `name` a section ("limits") of some key ("limits.max_texts")? */
static int is_section(const conf_key *tab, size_t n, const char *name)
{
    size_t l = strlen(name);
    for (size_t i = 0; i < n; i++)
        if (strncmp(tab[i].name, name, l) == 0 && tab[i].name[l] == '.')
            return 1;
    return 0;
}

static void model_conf_free(srv_model_conf *m)
{
    free(m->name);
    free(m->path);
    free(m->repository);
    free(m->public_key_file);
    free(m->task_name);
    free(m->version);
    free(m->backend);
    free(m->precision);
    free(m->source_lang);
    free(m->target_lang);
    free(m->target_token);
    memset(m, 0, sizeof *m);
}

static int parse_models(srv_config *c, const cJSON *arr, char *err, size_t cap);

/* Walk the members of obj against tab. prefix: the section path inside the
 * table ("" or "limits."); shown: what messages call the object ("" or "models[2]."). */
static int walk(const conf_key *tab, size_t ntab, void *base, const cJSON *obj,
                const char *prefix, const char *shown, srv_config *top, char *err, size_t cap)
{
    for (const cJSON *ch = obj->child; ch; ch = ch->next) {
        char name[256], where[320];
        snprintf(name, sizeof name, "%s%s", prefix, ch->string ? ch->string : "");
        snprintf(where, sizeof where, "%s%s", shown, name);
        for (const cJSON *p = obj->child; p != ch; p = p->next)
            if (p->string && ch->string && strcmp(p->string, ch->string) == 0) {
                set_err(err, cap, "%s: duplicate key", where);
                return -1;
            }
        const conf_key *k = find_key(tab, ntab, name);
        if (k) {
            if (key_apply(k, base, ch, NULL, where, err, cap))
                return -1;
        } else if (top && strcmp(name, "models") == 0) {
            if (parse_models(top, ch, err, cap))
                return -1;
        } else if (is_section(tab, ntab, name)) {
            if (!cJSON_IsObject(ch)) {
                set_err(err, cap, "%s: must be an object", where);
                return -1;
            }
            char sub[260];
            snprintf(sub, sizeof sub, "%s.", name);
            if (walk(tab, ntab, base, ch, sub, shown, top, err, cap))
                return -1;
        } else {
            set_err(err, cap, "%s: unknown key (nlpd --print-config-doc lists the keys)", where);
            return -1;
        }
    }
    return 0;
}

static int parse_models(srv_config *c, const cJSON *arr, char *err, size_t cap)
{
    if (!cJSON_IsArray(arr)) {
        set_err(err, cap, "models: must be a list of model objects");
        return -1;
    }
    int n = cJSON_GetArraySize(arr);
    srv_model_conf *ms = calloc(n ? (size_t)n : 1, sizeof *ms);
    if (!ms) {
        set_err(err, cap, "models: out of memory");
        return -1;
    }
    int i = 0;
    for (const cJSON *e = arr->child; e; e = e->next, i++) {
        char shown[32];
        snprintf(shown, sizeof shown, "models[%d].", i);
        if (!cJSON_IsObject(e)) {
            set_err(err, cap, "models[%d]: must be an object", i);
            goto fail;
        }
        if (apply_defaults(model_keys, NKEYS(model_keys), &ms[i]) ||
            walk(model_keys, NKEYS(model_keys), &ms[i], e, "", shown, NULL, err, cap))
            goto fail;
        for (size_t k = 0; k < NKEYS(model_keys); k++) {
            const conf_key *mk = &model_keys[k];
            if (mk->required && !*(char **)((char *)&ms[i] + mk->off)) {
                set_err(err, cap, "models[%d].%s: required", i, mk->name);
                goto fail;
            }
        }
        if (!ms[i].path == !ms[i].repository) {
            set_err(err, cap, "models[%d].path: give exactly one of \"path\" (a model folder) "
                    "and \"repository\" (a folder of signed versions)", i);
            goto fail;
        }
    }
    for (int j = 0; j < c->n_models; j++)
        model_conf_free(&c->models[j]);
    free(c->models);
    c->models = ms;
    c->n_models = n;
    return 0;
fail:
    for (int j = 0; j < n; j++)
        model_conf_free(&ms[j]);
    free(ms);
    return -1;
}

int srv_config_init(srv_config *c)
{
    memset(c, 0, sizeof *c);
    return apply_defaults(top_keys, NKEYS(top_keys), c);
}

void srv_config_free(srv_config *c)
{
    for (size_t i = 0; i < NKEYS(top_keys); i++)
        if (top_keys[i].kind != K_INT && top_keys[i].kind != K_BOOL)
            free(*(char **)((char *)c + top_keys[i].off));
    for (int j = 0; j < c->n_models; j++)
        model_conf_free(&c->models[j]);
    free(c->models);
    memset(c, 0, sizeof *c);
}

int srv_config_load_string(srv_config *c, const char *json, size_t len, const char *origin,
                           char *err, size_t cap)
{
    const char *ep = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(json, len, &ep, 0);
    if (!root) {
        size_t off = ep && ep >= json ? (size_t)(ep - json) : 0, line = 1;
        for (size_t i = 0; i < off && i < len; i++)
            line += json[i] == '\n';
        set_err(err, cap, "%s: invalid JSON near line %zu", origin, line);
        return -1;
    }
    int rc = -1;
    char msg[400];
    if (!cJSON_IsObject(root)) {
        set_err(err, cap, "%s: the top level must be an object", origin);
    } else if (walk(top_keys, NKEYS(top_keys), c, root, "", "", c, msg, sizeof msg) == 0) {
        rc = 0;
    } else {
        set_err(err, cap, "%s: %s", origin, msg);
    }
    cJSON_Delete(root);
    return rc;
}

int srv_config_load_file(srv_config *c, const char *path, char *err, size_t cap)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        set_err(err, cap, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    char *buf = NULL;
    size_t len = 0, alloc = 0;
    int rc = -1;
    for (;;) {
        if (len + 4096 > alloc) {
            char *nb = realloc(buf, alloc = alloc * 2 + 8192);
            if (!nb) {
                set_err(err, cap, "%s: out of memory", path);
                goto done;
            }
            buf = nb;
        }
        size_t r = fread(buf + len, 1, alloc - len, f);
        len += r;
        if (r == 0)
            break;
        if (len > (64u << 20)) {
            set_err(err, cap, "%s: larger than 64 MiB", path);
            goto done;
        }
    }
    if (ferror(f)) {
        set_err(err, cap, "%s: read error", path);
        goto done;
    }
    rc = srv_config_load_string(c, buf, len, path, err, cap);
done:
    free(buf);
    fclose(f);
    return rc;
}

int srv_config_set(srv_config *c, const char *key, const char *value, char *err, size_t cap)
{
    const conf_key *k = find_key(top_keys, NKEYS(top_keys), key);
    if (!k) {
        set_err(err, cap, "%s: unknown key (settable: top-level scalar keys)", key);
        return -1;
    }
    return key_apply(k, c, NULL, value, key, err, cap);
}

int srv_listen_parse(const char *s, char *host, size_t cap, int *port)
{
    if (!s || !*s)
        return -1;
    const char *colon, *h = s;
    size_t hl;
    if (*s == '[') {
        const char *rb = strchr(s, ']');
        if (!rb || rb[1] != ':')
            return -1;
        h = s + 1;
        hl = (size_t)(rb - h);
        colon = rb + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon || memchr(s, ':', (size_t)(colon - s)))
            return -1;
        hl = (size_t)(colon - s);
    }
    if (hl == 0 || hl >= cap)
        return -1;
    const char *p = colon + 1;
    if (!*p || strlen(p) > 5)
        return -1;
    long v = 0;
    for (; *p; p++) {
        if (!isdigit((unsigned char)*p))
            return -1;
        v = v * 10 + (*p - '0');
    }
    if (v > 65535)
        return -1;
    memcpy(host, h, hl);
    host[hl] = 0;
    *port = (int)v;
    return 0;
}

static int valid_name(const char *s)
{
    if (!*s || strlen(s) > 64)
        return 0;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '.' && *s != '_' && *s != '-')
            return 0;
    return 1;
}

/* ">>" CODE "<<" with a language code inside. */
static int lang_token(const char *s)
{
    size_t n = strlen(s);
    char code[32];
    if (n < 5 || n - 4 >= sizeof code || strncmp(s, ">>", 2) != 0 || strcmp(s + n - 2, "<<") != 0)
        return 0;
    memcpy(code, s + 2, n - 4);
    code[n - 4] = 0;
    return srv_lang_code_valid(code);
}

static int check_translation(const srv_model_conf *m, int i, char *err, size_t cap)
{
    const char *const names[] = {"source_lang", "target_lang", "target_token"};
    const char *const vals[] = {m->source_lang, m->target_lang, m->target_token};
    for (int k = 0; k < 3; k++) {
        if (!vals[k])
            continue;
        if (m->task != SRV_TASK_TRANSLATE) {
            set_err(err, cap, "models[%d].translation.%s: only for task translate", i, names[k]);
            return -1;
        }
        if (k < 2 ? !srv_lang_code_valid(vals[k]) : !lang_token(vals[k])) {
            set_err(err, cap, "models[%d].translation.%s: \"%s\" is not %s", i, names[k], vals[k],
                    k < 2 ? "a language code (1-31 letters, digits, '_', '-')"
                          : "a >>xx<< language token");
            return -1;
        }
    }
    return 0;
}

int srv_config_validate(srv_config *c, int cores, char *err, size_t cap)
{
    char host[256];
    int port;
    if (srv_listen_parse(c->listen, host, sizeof host, &port)) {
        set_err(err, cap, "listen: expected HOST:PORT (e.g. 127.0.0.1:8080), got \"%s\"",
                c->listen ? c->listen : "");
        return -1;
    }
    if (c->n_models < 1) {
        set_err(err, cap, "models: at least one model must be configured");
        return -1;
    }
    if (cores < 1)
        cores = 1;
    for (int i = 0; i < c->n_models; i++) {
        srv_model_conf *m = &c->models[i];
        if (!valid_name(m->name)) {
            set_err(err, cap, "models[%d].name: \"%s\": use 1-64 letters, digits, '.', '_', '-'",
                    i, m->name);
            return -1;
        }
        for (int j = 0; j < i; j++)
            if (strcmp(c->models[j].name, m->name) == 0) {
                set_err(err, cap, "models[%d].name: \"%s\" is already used by models[%d]", i,
                        m->name, j);
                return -1;
            }
        if (m->repository && m->version) {
            set_err(err, cap, "models[%d].version: a repository model is versioned by its "
                    "repository's folder names", i);
            return -1;
        }
        m->task = (srv_task)choice_index("embed|sentiment|classify|qa|translate", m->task_name);
        if (check_translation(m, i, err, cap))
            return -1;
        if (m->timeout_ms > m->max_timeout_ms) {
            set_err(err, cap, "models[%d].timeout_ms: %d is above max_timeout_ms (%d)", i,
                    m->timeout_ms, m->max_timeout_ms);
            return -1;
        }
    }
    for (int i = 0; i < c->n_models; i++) {
        srv_model_conf *m = &c->models[i];
        if (m->threads == 0)
            m->threads = cores / m->workers > 0 ? cores / m->workers : 1;
        if ((long)m->workers * m->threads > cores) {
            set_err(err, cap,
                    "models[%d].batching.threads: workers x threads is %ld, more than the %d "
                    "online cores (threads are a budget; lower workers or threads)",
                    i, (long)m->workers * m->threads, cores);
            return -1;
        }
    }
    if (c->recent_enabled && !c->feedback_dir) {
        set_err(err, cap, "feedback.recent.enabled: needs feedback.dir (remembered requests "
                          "are only used by POST /v1/feedback)");
        return -1;
    }
    if (c->threads > cores) {
        set_err(err, cap, "threads: %d pool threads is more than the %d online cores",
                c->threads, cores);
        return -1;
    }
    return 0;
}

static void print_keys(FILE *f, const conf_key *tab, size_t n, const char *prefix)
{
    for (size_t i = 0; i < n; i++) {
        const conf_key *k = &tab[i];
        const char *type = k->kind == K_INT ? "integer" : k->kind == K_ENUM ? "enum"
                           : k->kind == K_BOOL ? "boolean"
                           : k->kind == K_OPTSTR ? "string|null" : "string";
        fprintf(f, "%s%s  (%s", prefix, k->name, type);
        if (k->kind == K_INT)
            fprintf(f, ", %lld..%lld", k->min, k->max);
        if (k->kind == K_ENUM)
            fprintf(f, ": %s", k->choices);
        if (k->required)
            fprintf(f, ", required");
        else if (k->def)
            fprintf(f, k->kind == K_INT || k->kind == K_BOOL ? ", default %s" : ", default \"%s\"",
                    k->def);
        else
            fprintf(f, ", default null");
        fprintf(f, ")\n    %s\n", k->doc);
    }
}

void srv_config_print_doc(FILE *f)
{
    fprintf(f, "nlpd configuration keys (JSON; dotted names are nested objects, e.g.\n"
               "\"limits\": {\"max_texts\": 64}). Unknown keys are refused.\n\n");
    print_keys(f, top_keys, NKEYS(top_keys), "");
    fprintf(f, "models  (list of objects, at least one)\n"
               "    The served models; each element has the keys models[].*:\n");
    print_keys(f, model_keys, NKEYS(model_keys), "models[].");
}

int srv_model_conf_max_in_flight(const srv_model_conf *m)
{
    if (m->max_in_flight > 0)
        return m->max_in_flight;
    long long n = (long long)m->queue_capacity + (long long)m->workers * m->max_batch_size;
    return n > 16777216 ? 16777216 : (int)n;
}

int srv_config_compute_threads(const srv_config *c)
{
    int n = 0;
    for (int i = 0; i < c->n_models; i++)
        n += c->models[i].workers * c->models[i].threads;
    return n;
}
