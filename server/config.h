/* config.h - the daemon's configuration (DESIGN §4).
 *
 * One JSON file (--config) whose every key is described by one table in
 * config.c (name, type, default, range, doc), as redis does; `nlpd
 * --print-config-doc` prints that table. Unknown keys and bad values are
 * refused with a message naming the key. Command-line flags override the file
 * through srv_config_set().
 */
#ifndef NLPD_SRV_CONFIG_H
#define NLPD_SRV_CONFIG_H

#include <stddef.h>
#include <stdio.h>

typedef enum srv_task {
    SRV_TASK_EMBED = 0,
    SRV_TASK_SENTIMENT,
    SRV_TASK_CLASSIFY,
    SRV_TASK_QA,
    SRV_TASK_TRANSLATE,
} srv_task;

const char *srv_task_name(srv_task t); /* "embed", "sentiment", ... */

/* One served model (an element of "models"). Strings are owned (malloc'd). */
typedef struct srv_model_conf {
    char *name;
    char *path;             /* a fixed model folder, or NULL when repository is set */
    char *repository;       /* a model repository folder (nlpd_repo.h), or NULL */
    char *public_key_file;  /* repository signing key; NULL: the top-level one */
    char *task_name;
    srv_task task;          /* parsed from task_name by srv_config_validate */
    char *version;          /* NULL: derived from the folder's content */
    char *backend;
    char *precision; /* "fp32" | "bf16" | "int8" | "fp16" */
    int timeout_ms;
    int max_timeout_ms;
    int max_batch_tokens;
    int max_batch_size;
    int max_delay_us;
    int always_delay; /* wait max_delay_us even for a lone request */
    int queue_capacity;
    int max_in_flight;      /* requests admitted at once; 0 = derived (srv_model_max_in_flight) */
    int max_job_mib;        /* a request's estimated working memory (translate: KV cache) */
    int max_batch_mib;      /* a batch's estimated working memory */
    int workers;
    int threads;            /* per worker; 0 = auto, resolved by srv_config_validate */
    int recover_attempts;   /* device faults: context recreations (srv_batch_opts) */
    int recover_backoff_ms; /* ... the wait before the second, doubling (at most 30 s) */
    /* task translate ("translation" section); strings NULL: from the model folder */
    char *source_lang;      /* overrides tokenizer_config.json's source_lang */
    char *target_lang;      /* overrides tokenizer_config.json's target_lang */
    char *target_token;     /* ">>xx<<" prepended to texts translated into target_lang */
    int max_beam_size;      /* largest "beam_size" a request may ask for */
    int max_length;         /* largest "max_length" a request may ask for */
} srv_model_conf;

typedef struct srv_config {
    char *listen;           /* HOST:PORT */
    int threads;            /* libuv pool: parsing, tokenising, rendering */
    char *log_level;
    char *log_format;
    int max_body_bytes;
    int max_texts;
    int max_text_bytes;
    int max_connections;
    int connection_timeout_s;
    int max_header_bytes;     /* request line + headers */
    int max_conns_per_client; /* 0: no limit */
    int request_timeout_ms;   /* whole request arrival; 0: none */
    int max_in_flight;        /* inference requests admitted at once, all models */
    char *api_key_file;     /* NULL: no authentication */
    char *admin_key_file;   /* NULL: admin API open without api_key_file, else refused */
    char *public_key_file;  /* signing key of repository versions; NULL: digests only */
    int rescan_interval_s;  /* periodic rescan of repositories (0: never) */
    int debounce_ms;        /* file events within this window cause one rescan */
    int memory_factor_pct;  /* memory check before loading a version beside the current */
    int drain_timeout_ms;
    /* POST /v1/feedback (feedback.*) */
    char *feedback_dir;     /* NULL: the endpoint answers 404 feedback_not_configured */
    int feedback_max_items;
    int recent_enabled;     /* remember recent requests' texts by request id */
    int recent_max_requests;
    int recent_max_bytes;
    int recent_max_age_s;
    srv_model_conf *models;
    int n_models;
} srv_config;

/* Fill c with every default. Always succeeds unless out of memory (-1). */
int srv_config_init(srv_config *c);
void srv_config_free(srv_config *c);

/* Merge a JSON document into c (keys present replace their defaults;
 * "models" replaces the list). origin names the source in messages.
 * 0, or -1 with a message naming the key in err. */
int srv_config_load_string(srv_config *c, const char *json, size_t len, const char *origin,
                           char *err, size_t cap);
int srv_config_load_file(srv_config *c, const char *path, char *err, size_t cap);

/* Set one top-level key from text, e.g. ("listen", "0.0.0.0:9000") or
 * ("limits.max_texts", "16") - what command-line flags use. 0 or -1 + err. */
int srv_config_set(srv_config *c, const char *key, const char *value, char *err, size_t cap);

/* Cross-key checks run once everything is merged: at least one model, unique
 * names, known tasks, listen address, timeouts, translation keys (language
 * codes, a ">>xx<<" target_token, only on translate models), and the thread budget: one
 * model's workers x threads must not exceed `cores` (threads = 0 becomes
 * cores / workers), nor the pool's `threads`. Several models may together
 * exceed the cores (their workers sleep while idle; models busy at the same
 * time share the cores): srv_config_compute_threads tells, main warns.
 * 0 or -1 + err. */
int srv_config_validate(srv_config *c, int cores, char *err, size_t cap);

/* A model's bound on requests in flight (batching.max_in_flight, or derived). */
int srv_model_conf_max_in_flight(const srv_model_conf *m);

/* Sum over models of workers x threads (after srv_config_validate). */
int srv_config_compute_threads(const srv_config *c);

/* "HOST:PORT" or "[V6]:PORT" -> host (without brackets) and port 0..65535. */
int srv_listen_parse(const char *s, char *host, size_t cap, int *port);

/* Print the key table: one entry per key with type, default, range and doc. */
void srv_config_print_doc(FILE *f);

#endif
