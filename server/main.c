/* main.c - nlpd: command line, start-up, signals and drain (DESIGN §4).
 *
 * Start-up: config (file, then flags) -> logging -> API keys -> model folders
 * checked -> listen -> models loaded, versioned and warmed up off the loop
 * -> ready. SIGTERM/SIGINT: not ready at once, stop accepting, let in-flight
 * requests finish (bounded by drain_timeout_ms), exit 0; a signal during
 * model loading stops it after the model being loaded; a second signal exits
 * at once with status 1, even while a batch runs (a plain signal handler, not
 * the loop's). A sticky device fault (a GPU's CUDA context lost) drains the same
 * way and exits with status 3, for the supervisor to restart nlpd. */
#include <errno.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <malloc.h>

#include "feedback.h"
#include "http.h"
#include "log.h"
#include "reload.h"
#include "server.h"

#define NLPD_VERSION "0.1.0"

typedef struct app {
    srv_server s;
    uv_loop_t loop;
    uv_signal_t sigterm, sigint, sighup;
    uv_timer_t drain_timer;
    uv_async_t sticky_async; /* a worker hit a sticky device fault (any thread) */
    uv_work_t load_work;
    int load_rc;
    int loading;
    int finish_pending;   /* finish once loading ends */
    int finish_graceful;
    int finished;
    int64_t drain_started;
} app;

static void usage(FILE *f)
{
    fprintf(f,
        "usage: nlpd [--config FILE] [options]\n"
        "\n"
        "Serve NLP models over HTTP (README.md: API; config/README.md: configuration).\n"
        "\n"
        "  --config FILE           JSON configuration (keys: nlpd --print-config-doc)\n"
        "  --listen HOST:PORT      listen address (overrides \"listen\"; port 0: any free port)\n"
        "  --log-level LEVEL       debug|info|warn|error (overrides \"log.level\")\n"
        "  --log-format FORMAT     text|json (overrides \"log.format\")\n"
        "  --threads N             libuv pool threads (overrides \"threads\")\n"
        "  --api-key-file FILE     file of SHA-256 key hashes (overrides \"auth.api_key_file\")\n"
        "  --drain-timeout-ms N    overrides \"drain_timeout_ms\"\n"
        "  --set KEY=VALUE         set any top-level key, e.g. --set limits.max_texts=16\n"
        "  --check-config          validate the configuration and model folders, then exit\n"
        "  --print-config-doc      print every configuration key with its default and exit\n"
        "  --print-routes          print every route (METHOD PATH) and exit\n"
        "  --help, --version\n"
        "\n"
        "Signals: SIGTERM/SIGINT drain and exit 0 (a second one exits at once, status 1);\n"
        "SIGHUP checks every model's source (repository or folder) for a new version.\n"
        "Exit status: 0 ok, 1 start-up or model loading failed, 2 bad usage or configuration,\n"
        "3 a GPU's CUDA context was lost (a sticky CUDA error: nlpd drained and exited for its\n"
        "supervisor to restart it).\n");
}

/* ------------------------------------------------------------ lifecycle */

static void close_cb(uv_handle_t *h)
{
    (void)h;
}

/* A second SIGTERM/SIGINT, in whatever thread and whatever the loop thread is
 * doing (joining a worker in the middle of a batch, waiting for the loader):
 * exit at once. Async-signal-safe: write(2) and _exit(2) only. */
static void on_second_signal(int signum)
{
    static const char msg[] = "nlpd: signal received again: exiting without waiting\n";
    (void)signum;
    ssize_t w = write(STDERR_FILENO, msg, sizeof msg - 1);
    (void)w;
    _exit(1);
}

/* Replace libuv's handlers (which only wake the loop) by on_second_signal. */
static void exit_on_next_signal(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_second_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
}

static void finish(app *a, int graceful)
{
    if (a->finished)
        return;
    if (a->loading) { /* the loader still owns the models: finish when it ends */
        a->finish_pending = 1;
        a->finish_graceful = graceful;
        return;
    }
    a->finished = 1;
    srv_server *s = &a->s;
    atomic_store(&s->ready, 0);
    atomic_store(&s->draining, 1);
    /* The reloader first (a load in progress ends; queued admin requests are
     * answered), then the batchers (their completions are freed with the
     * connections), then every connection, then our own handles: the loop
     * then ends. */
    srv_reload_stop(s->reload);
    srv_models_stop(s, graceful, srv_now_ns() + 1000000000);
    srv_feedback_stop(s); /* answers what it queued: before the connections go */
    if (s->http)
        srv_http_stop(s->http);
    uv_timer_stop(&a->drain_timer);
    uv_close((uv_handle_t *)&a->drain_timer, close_cb);
    uv_close((uv_handle_t *)&a->sigterm, close_cb);
    uv_close((uv_handle_t *)&a->sigint, close_cb);
    uv_close((uv_handle_t *)&a->sighup, close_cb);
    uv_close((uv_handle_t *)&a->sticky_async, close_cb); /* the workers are gone */
    if (a->drain_started)
        exit_on_next_signal(); /* closing the watchers restored the default action */
    srv_log(SRV_LOG_INFO, NULL, "stopped");
}

static void on_idle(void *arg)
{
    app *a = arg;
    srv_log(SRV_LOG_INFO, NULL, "drained in %.0f ms", (double)(srv_now_ns() - a->drain_started) / 1e6);
    finish(a, 1);
}

static void on_drain_timeout(uv_timer_t *t)
{
    app *a = t->data;
    srv_log(SRV_LOG_WARN, NULL, "drain timeout (%d ms): %d request(s) still in flight are cut off",
            a->s.cfg->drain_timeout_ms, a->s.in_flight);
    finish(a, 0);
}

/* Not ready at once, stop accepting, let in-flight requests finish (bounded), then exit
 * with s->exit_code. why: what started it, for the log. */
static void start_drain(app *a, const char *why)
{
    srv_server *s = &a->s;
    /* From now on the next signal is not the loop's to handle: the loop thread
     * may block while batches finish. */
    exit_on_next_signal();
    if (atomic_load(&s->draining))
        return; /* already stopping (start-up failed) */
    atomic_store(&s->draining, 1);
    atomic_store(&s->ready, 0);
    a->drain_started = srv_now_ns();
    srv_log(SRV_LOG_INFO, NULL, "%s: draining %d in-flight request(s) (up to %d ms)",
            why, s->in_flight, s->cfg->drain_timeout_ms);
    srv_http_quiesce(s->http);
    srv_http_on_idle(s->http, on_idle, a);
    uv_timer_start(&a->drain_timer, on_drain_timeout, (uint64_t)s->cfg->drain_timeout_ms, 0);
    if (s->in_flight == 0)
        on_idle(a);
}

static void on_signal(uv_signal_t *h, int signum)
{
    start_drain(h->data, strsignal(signum));
}

/* A worker's device hit a sticky CUDA error: the GPU cannot be used again by this
 * process, whatever its workers do, and /healthz fails. Drain and exit with status 3,
 * so that systemd (Restart=on-failure), Docker or compose (a restart policy) and
 * Kubernetes restart nlpd without waiting for a liveness probe. */
static void on_sticky_async(uv_async_t *h)
{
    app *a = h->data;
    srv_server *s = &a->s;
    if (a->finished || atomic_load(&s->draining))
        return;
    for (int i = 0; i < s->n_models; i++) {
        srv_batcher_fault_info fi;
        if (s->models[i].batcher && srv_batcher_fault(s->models[i].batcher, &fi) && fi.sticky)
            srv_log(SRV_LOG_ERROR, NULL, "model %s: backend %s:%d (worker %d) failed: %s; a "
                    "sticky CUDA error: the process must be restarted, exiting with status 3",
                    s->models[i].conf->name, fi.backend, fi.device, fi.worker, fi.error);
    }
    s->exit_code = 3;
    start_drain(a, "sticky device fault");
}

/* srv_server.on_sticky_fault: any thread. */
static void notify_sticky(srv_server *s)
{
    _Static_assert(offsetof(app, s) == 0, "srv_server is app's first member");
    app *a = (app *)s;
    uv_async_send(&a->sticky_async);
}

/* SIGHUP: check every model's source now (a new version, a changed pin). */
static void on_sighup(uv_signal_t *h, int signum)
{
    (void)signum;
    app *a = h->data;
    srv_log(SRV_LOG_INFO, NULL, "SIGHUP: checking every model's source for new versions");
    srv_reload_request(a->s.reload, -1);
}

static void load_work(uv_work_t *w)
{
    app *a = w->data;
    a->load_rc = srv_models_load(&a->s);
}

static void after_load(uv_work_t *w, int status)
{
    (void)status;
    app *a = w->data;
    srv_server *s = &a->s;
    a->loading = 0;
    if (a->load_rc == SRV_MODELS_LOAD_STOPPED) {
        srv_log(SRV_LOG_INFO, NULL, "model loading stopped by a signal");
    } else if (a->load_rc) {
        srv_log(SRV_LOG_ERROR, NULL, "start-up failed: a model could not be loaded (see above)");
        s->exit_code = 1;
        finish(a, 0);
        return;
    }
    if (a->finish_pending) {
        finish(a, a->finish_graceful);
        return;
    }
    if (srv_reload_start(s->reload)) {
        s->exit_code = 1;
        finish(a, 0);
        return;
    }
    if (!atomic_load(&s->draining)) {
        atomic_store(&s->ready, 1);
        srv_log(SRV_LOG_INFO, NULL, "started: %d model(s) configured", s->n_models);
    }
}

/* ------------------------------------------------------------ start-up */

typedef struct override {
    const char *key, *value;
} override;

int main(int argc, char **argv)
{
    const char *config_path = NULL;
    override ov[64];
    int n_ov = 0, check_only = 0;
    static char set_keys[64][128];
    char err[1024];

    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        static const struct { const char *flag, *key; } flags[] = {
            {"--listen", "listen"},           {"--log-level", "log.level"},
            {"--log-format", "log.format"},   {"--threads", "threads"},
            {"--api-key-file", "auth.api_key_file"}, {"--drain-timeout-ms", "drain_timeout_ms"},
        };
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (strcmp(arg, "--version") == 0) {
            printf("nlpd %s (engine %s)\n", NLPD_VERSION, ENG_VERSION);
            return 0;
        }
        if (strcmp(arg, "--print-config-doc") == 0) {
            srv_config_print_doc(stdout);
            return 0;
        }
        if (strcmp(arg, "--print-routes") == 0) {
            srv_routes_print(stdout);
            return 0;
        }
        if (strcmp(arg, "--check-config") == 0) {
            check_only = 1;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "nlpd: %s: unknown option or missing value (see --help)\n", arg);
            return 2;
        }
        if (strcmp(arg, "--config") == 0) {
            config_path = argv[++i];
            continue;
        }
        if (n_ov >= 64) {
            fprintf(stderr, "nlpd: too many options\n");
            return 2;
        }
        if (strcmp(arg, "--set") == 0) {
            const char *kv = argv[++i], *eq = strchr(kv, '=');
            if (!eq || eq == kv || (size_t)(eq - kv) >= sizeof set_keys[0]) {
                fprintf(stderr, "nlpd: --set expects KEY=VALUE, got \"%s\"\n", kv);
                return 2;
            }
            memcpy(set_keys[n_ov], kv, (size_t)(eq - kv));
            set_keys[n_ov][eq - kv] = 0;
            ov[n_ov].key = set_keys[n_ov];
            ov[n_ov++].value = eq + 1;
            continue;
        }
        size_t f = 0;
        while (f < sizeof flags / sizeof *flags && strcmp(arg, flags[f].flag) != 0)
            f++;
        if (f == sizeof flags / sizeof *flags) {
            fprintf(stderr, "nlpd: unknown option %s (see --help)\n", arg);
            return 2;
        }
        ov[n_ov].key = flags[f].key;
        ov[n_ov++].value = argv[++i];
    }

    app *a = calloc(1, sizeof *a);
    srv_config *cfg = calloc(1, sizeof *cfg);
    if (!a || !cfg || srv_config_init(cfg)) {
        fprintf(stderr, "nlpd: out of memory\n");
        return 1;
    }
    int rc = 2;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    if (config_path && srv_config_load_file(cfg, config_path, err, sizeof err))
        goto fail_config;
    for (int i = 0; i < n_ov; i++)
        if (srv_config_set(cfg, ov[i].key, ov[i].value, err, sizeof err))
            goto fail_config;
    if (srv_config_validate(cfg, cores > 0 ? (int)cores : 1, err, sizeof err))
        goto fail_config;

    srv_log_level lvl = SRV_LOG_INFO;
    srv_log_level_parse(cfg->log_level, &lvl);
    srv_log_setup(lvl, strcmp(cfg->log_format, "json") == 0);
    signal(SIGPIPE, SIG_IGN);
    /* A fixed mmap threshold: the large blocks of a model version (packed
     * weights) are mapped and go back to the system when the version is
     * freed, so repeated hot swaps do not grow the heap (glibc's dynamic
     * threshold would move such blocks into the arenas after the first free). */
    mallopt(M_MMAP_THRESHOLD, 1 << 20);

    int compute = srv_config_compute_threads(cfg);
    if (compute > cores)
        srv_log(SRV_LOG_WARN, NULL,
                "models use %d compute threads on %ld cores: models busy at the same time "
                "share the cores", compute, cores);
    srv_server *s = &a->s;
    s->cfg = cfg;
    s->exit_code = 0;
    s->limits.max_body_bytes = (size_t)cfg->max_body_bytes;
    s->limits.max_texts = cfg->max_texts;
    s->limits.max_text_bytes = (size_t)cfg->max_text_bytes;
    rc = 1;
    if (cfg->api_key_file) {
        if (srv_auth_load(cfg->api_key_file, &s->auth, err, sizeof err)) {
            fprintf(stderr, "nlpd: auth.api_key_file: %s\n", err);
            goto fail_server;
        }
    }
    if (cfg->admin_key_file) {
        if (srv_auth_load(cfg->admin_key_file, &s->admin_auth, err, sizeof err)) {
            fprintf(stderr, "nlpd: auth.admin_key_file: %s\n", err);
            goto fail_server;
        }
    }
    if (srv_models_init(s, err, sizeof err)) {
        fprintf(stderr, "nlpd: %s\n", err);
        goto fail_server;
    }
    if (!(s->reload = srv_reload_new(s))) {
        fprintf(stderr, "nlpd: out of memory\n");
        goto fail_server;
    }
    if (check_only) {
        printf("nlpd: configuration ok (%d model(s), listen %s)\n", cfg->n_models, cfg->listen);
        rc = 0;
        goto fail_server;
    }
    const char *names[256];
    for (int i = 0; i < cfg->n_models && i < 256; i++)
        names[i] = cfg->models[i].name;
    if (!(s->metrics = srv_metrics_new(cfg->n_models, names))) {
        fprintf(stderr, "nlpd: out of memory\n");
        goto fail_server;
    }
    if (srv_feedback_init(s, err, sizeof err)) {
        fprintf(stderr, "nlpd: %s\n", err);
        goto fail_server;
    }

    /* libuv reads the pool size once, at its first use. */
    char pool[16];
    snprintf(pool, sizeof pool, "%d", cfg->threads);
    setenv("UV_THREADPOOL_SIZE", pool, 1);
    if (uv_loop_init(&a->loop)) {
        fprintf(stderr, "nlpd: cannot create the event loop\n");
        goto fail_server;
    }
    s->loop = &a->loop;

    char host[256];
    int port = 0;
    srv_listen_parse(cfg->listen, host, sizeof host, &port);
    if (!srv_http_start(s, host, port, err, sizeof err)) {
        fprintf(stderr, "nlpd: %s\n", err);
        goto fail_loop;
    }
    int ipv6 = strchr(host, ':') != NULL;
    srv_log(SRV_LOG_INFO, NULL, "nlpd %s listening on http://%s%s%s:%d (pool threads %d, %ld cores%s)",
            NLPD_VERSION, ipv6 ? "[" : "", host, ipv6 ? "]" : "", srv_http_port(s->http),
            cfg->threads, cores, s->auth ? ", API keys required" : "");

    uv_signal_init(&a->loop, &a->sigterm);
    uv_signal_init(&a->loop, &a->sigint);
    uv_signal_init(&a->loop, &a->sighup);
    uv_timer_init(&a->loop, &a->drain_timer);
    uv_async_init(&a->loop, &a->sticky_async, on_sticky_async);
    a->sigterm.data = a->sigint.data = a->sighup.data = a->drain_timer.data = a;
    a->sticky_async.data = a;
    s->on_sticky_fault = notify_sticky;
    uv_signal_start(&a->sigterm, on_signal, SIGTERM);
    uv_signal_start(&a->sigint, on_signal, SIGINT);
    uv_signal_start(&a->sighup, on_sighup, SIGHUP);

    a->load_work.data = a;
    a->loading = 1;
    if (uv_queue_work(&a->loop, &a->load_work, load_work, after_load)) {
        a->loading = 0;
        s->exit_code = 1;
        finish(a, 0);
    }
    uv_run(&a->loop, UV_RUN_DEFAULT);
    rc = s->exit_code;
    srv_log(SRV_LOG_INFO, NULL, "exit %d", rc);

    srv_http_free(s->http);
fail_loop:
    if (s->loop)
        uv_loop_close(&a->loop);
fail_server:
    srv_reload_free(s->reload);
    srv_feedback_free(s);
    srv_models_free(s);
    srv_metrics_free(s->metrics);
    srv_auth_free(s->auth);
    srv_auth_free(s->admin_auth);
    srv_config_free(cfg);
    free(cfg);
    free(a);
    return rc;
fail_config:
    fprintf(stderr, "nlpd: config: %s\n", err);
    srv_config_free(cfg);
    free(cfg);
    free(a);
    return rc;
}
