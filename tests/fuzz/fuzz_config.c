/* fuzz_config.c - libFuzzer target for the daemon's configuration parser
 * (server/config.c: srv_config_load_string, srv_config_validate), linked from the
 * server library unchanged.
 *
 * Input: byte 0 selects the core count given to validate (1..16) and whether a
 * second document is merged; the rest is the JSON (split at the first 0xff for
 * the second document). Contracts: a refusal has a NUL-terminated, non-empty
 * message; an accepted and validated config has at least one model, each with a
 * name, path and task, positive limits, and a thread budget within the cores;
 * freeing is idempotent. */
#include "fuzz_common.h"

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int cores = 1 + (data[0] & 15), twice = data[0] >> 7;
    const char *json = (const char *)data + 1;
    size_t len = size - 1, len2 = 0;
    const char *json2 = NULL;
    if (twice) {
        const char *ff = memchr(json, 0xff, len);
        if (ff) {
            json2 = ff + 1;
            len2 = len - (size_t)(ff - json) - 1;
            len = (size_t)(ff - json);
        }
    }
    srv_config c;
    if (srv_config_init(&c) != 0)
        return 0;
    char err[512];
    memset(err, 0x5a, sizeof err);
    int rc = srv_config_load_string(&c, json, len, "fuzz", err, sizeof err);
    if (!rc && json2) {
        memset(err, 0x5a, sizeof err);
        rc = srv_config_load_string(&c, json2, len2, "fuzz2", err, sizeof err);
    }
    if (rc) {
        CHECK(rc == -1, "load returned %d", rc);
        CHECK(memchr(err, 0, sizeof err) && err[0], "refusal without a message%s", "");
    } else {
        memset(err, 0x5a, sizeof err);
        rc = srv_config_validate(&c, cores, err, sizeof err);
        if (rc) {
            CHECK(rc == -1, "validate returned %d", rc);
            CHECK(memchr(err, 0, sizeof err) && err[0], "validate refused without a message%s", "");
        } else {
            CHECK(c.n_models >= 1, "validated with %d models", c.n_models);
            CHECK(c.listen && *c.listen, "no listen address%s", "");
            CHECK(c.max_body_bytes > 0 && c.max_texts > 0 && c.max_text_bytes > 0,
                  "limits %d %d %d", c.max_body_bytes, c.max_texts, c.max_text_bytes);
            for (int i = 0; i < c.n_models; i++) {
                const srv_model_conf *m = &c.models[i];
                CHECK(m->name && *m->name && m->path && *m->path, "model %d unnamed", i);
                CHECK((int)m->task >= SRV_TASK_EMBED && m->task <= SRV_TASK_TRANSLATE,
                      "model %d task %d", i, (int)m->task);
                CHECK(m->workers >= 1 && m->threads >= 1, "model %s: %d workers x %d threads",
                      m->name, m->workers, m->threads);
                CHECK(m->workers * m->threads <= cores, "model %s: %d x %d threads on %d cores",
                      m->name, m->workers, m->threads, cores);
                CHECK(m->max_batch_size >= 1 && m->queue_capacity >= 1,
                      "model %s: batch %d, queue %d", m->name, m->max_batch_size,
                      m->queue_capacity);
                for (int j = 0; j < i && j < 64; j++)
                    CHECK(strcmp(c.models[j].name, m->name) != 0, "two models named %s", m->name);
            }
            CHECK(srv_config_compute_threads(&c) >= c.n_models, "thread total%s", "");
        }
    }
    srv_config_free(&c);
    srv_config_free(&c);
    return 0;
}
