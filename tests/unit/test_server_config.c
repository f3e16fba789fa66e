/* test_server_config.c - the configuration table (server/config.h): defaults,
 * loading, unknown keys and bad values named in the message, command-line
 * overrides, cross-key validation, the documentation printer and the shipped
 * config/nlpd.json. */
#include "test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "batcher.h" /* srv_batch_opts_default */
#include "config.h"

static const char *const MODEL =
    "{\"name\":\"m\",\"path\":\"tests/fixtures/models/bert_st\",\"task\":\"embed\"}";

/* Load json into a fresh config; returns rc, err has the message. */
static int load(srv_config *c, const char *json, char *err, size_t cap)
{
    assert_int_equal(srv_config_init(c), 0);
    return srv_config_load_string(c, json, strlen(json), "test.json", err, cap);
}

/* Expect loading json to fail with a message containing `key`. */
static void expect_bad(const char *json, const char *key)
{
    srv_config c;
    char err[512] = "";
    int rc = load(&c, json, err, sizeof err);
    if (rc != -1 || !strstr(err, key))
        fail_msg("config %s: want an error naming %s, got rc %d \"%s\"", json, key, rc, err);
    assert_non_null(strstr(err, "test.json"));
    srv_config_free(&c);
}

static void test_defaults(void **state)
{
    (void)state;
    srv_config c;
    assert_int_equal(srv_config_init(&c), 0);
    assert_string_equal(c.listen, "127.0.0.1:8080");
    assert_int_equal(c.threads, 1);
    assert_string_equal(c.log_level, "info");
    assert_string_equal(c.log_format, "text");
    assert_int_equal(c.max_body_bytes, 1048576);
    assert_int_equal(c.max_texts, 64);
    assert_int_equal(c.max_text_bytes, 16384);
    assert_null(c.api_key_file);
    assert_int_equal(c.drain_timeout_ms, 10000);
    assert_int_equal(c.n_models, 0);
    srv_config_free(&c);
}

static void test_load_full(void **state)
{
    (void)state;
    srv_config c;
    char err[512] = "";
    const char *json =
        "{\"listen\":\"0.0.0.0:9000\",\"threads\":2,"
        "\"log\":{\"level\":\"debug\",\"format\":\"json\"},"
        "\"limits\":{\"max_body_bytes\":2048,\"max_texts\":3,\"max_text_bytes\":100},"
        "\"auth\":{\"api_key_file\":\"/etc/nlpd/keys\"},\"drain_timeout_ms\":500,"
        "\"models\":[{\"name\":\"a\",\"path\":\"p\",\"task\":\"qa\",\"version\":\"v1\","
        "\"timeout_ms\":100,\"max_timeout_ms\":200,\"batching\":{\"max_batch_tokens\":512,"
        "\"max_batch_size\":8,\"max_delay_us\":0,\"queue_capacity\":16,\"workers\":2,"
        "\"threads\":1}},{\"name\":\"b\",\"path\":\"q\",\"task\":\"sentiment\"}]}";
    assert_int_equal(load(&c, json, err, sizeof err), 0);
    assert_string_equal(c.listen, "0.0.0.0:9000");
    assert_int_equal(c.threads, 2);
    assert_string_equal(c.log_level, "debug");
    assert_string_equal(c.log_format, "json");
    assert_int_equal(c.max_body_bytes, 2048);
    assert_int_equal(c.max_texts, 3);
    assert_string_equal(c.api_key_file, "/etc/nlpd/keys");
    assert_int_equal(c.drain_timeout_ms, 500);
    assert_int_equal(c.n_models, 2);
    assert_string_equal(c.models[0].version, "v1");
    assert_int_equal(c.models[0].max_batch_tokens, 512);
    assert_int_equal(c.models[0].max_delay_us, 0);
    assert_int_equal(c.models[0].workers, 2);
    /* defaults of a model given only its required keys */
    assert_null(c.models[1].version);
    assert_string_equal(c.models[1].backend, "cpu");
    assert_int_equal(c.models[1].timeout_ms, 10000);
    assert_int_equal(c.models[1].max_timeout_ms, 60000);
    assert_int_equal(c.models[1].max_batch_tokens, 8192);
    assert_int_equal(c.models[1].max_batch_size, 64);
    assert_int_equal(c.models[1].max_delay_us, 2000);
    assert_int_equal(c.models[1].queue_capacity, 1024);
    assert_int_equal(c.models[1].workers, 1);
    assert_int_equal(c.models[1].threads, 0);

    assert_int_equal(srv_config_validate(&c, 4, err, sizeof err), 0);
    assert_int_equal(c.models[0].task, SRV_TASK_QA);
    assert_int_equal(c.models[1].task, SRV_TASK_SENTIMENT);
    assert_int_equal(c.models[1].threads, 4); /* auto: cores / workers */
    assert_int_equal(srv_config_compute_threads(&c), 2 * 1 + 4);
    srv_config_free(&c);
}

static void test_unknown_and_bad(void **state)
{
    (void)state;
    expect_bad("{\"bogus\":1}", "bogus");
    expect_bad("{\"limits\":{\"max_bodybytes\":1}}", "limits.max_bodybytes");
    expect_bad("{\"log\":{\"level\":\"loud\"}}", "log.level");
    expect_bad("{\"log\":{\"format\":\"xml\"}}", "log.format");
    expect_bad("{\"log\":\"info\"}", "log");
    expect_bad("{\"threads\":\"2\"}", "threads");
    expect_bad("{\"threads\":0}", "threads");
    expect_bad("{\"threads\":1.5}", "threads");
    expect_bad("{\"drain_timeout_ms\":-1}", "drain_timeout_ms");
    expect_bad("{\"limits\":{\"max_texts\":0}}", "limits.max_texts");
    expect_bad("{\"listen\":\"\"}", "listen");
    expect_bad("{\"listen\":5}", "listen");
    expect_bad("{\"auth\":{\"api_key_file\":3}}", "auth.api_key_file");
    expect_bad("{\"threads\":1,\"threads\":2}", "threads");
    expect_bad("{\"models\":{}}", "models");
    expect_bad("{\"models\":[1]}", "models[0]");
    expect_bad("{\"models\":[{\"name\":\"m\",\"task\":\"embed\"}]}", "models[0].path");
    expect_bad("{\"models\":[{\"name\":\"m\",\"path\":\"p\"}]}", "models[0].task");
    /* a model is a fixed folder or a repository, never both */
    expect_bad("{\"models\":[{\"name\":\"m\",\"path\":\"p\",\"repository\":\"r\","
               "\"task\":\"qa\"}]}", "models[0].path");
    expect_bad("{\"reload\":{\"rescan_interval_s\":-1}}", "reload.rescan_interval_s");
    expect_bad("{\"signing\":{\"public_key_file\":1}}", "signing.public_key_file");
    expect_bad("{\"models\":[{\"name\":\"m\",\"path\":\"p\",\"task\":\"summarize\"}]}",
               "models[0].task");
    expect_bad("{\"models\":[{\"name\":\"m\",\"path\":\"p\",\"task\":\"qa\",\"colour\":1}]}",
               "models[0].colour");
    expect_bad("{\"models\":[{\"name\":\"m\",\"path\":\"p\",\"task\":\"qa\"},"
               "{\"name\":\"n\",\"path\":\"p\",\"task\":\"qa\",\"batching\":{\"workerz\":1}}]}",
               "models[1].batching.workerz");
    expect_bad("{\"models\":[{\"name\":\"m\",\"path\":\"p\",\"task\":\"qa\","
               "\"batching\":{\"max_batch_size\":0}}]}", "models[0].batching.max_batch_size");
    expect_bad("{\"listen\":", "invalid JSON");
    expect_bad("[]", "top level");
}

static void test_set_overrides(void **state)
{
    (void)state;
    srv_config c;
    char err[512];
    assert_int_equal(srv_config_init(&c), 0);
    assert_int_equal(srv_config_set(&c, "listen", "[::1]:9001", err, sizeof err), 0);
    assert_string_equal(c.listen, "[::1]:9001");
    assert_int_equal(srv_config_set(&c, "limits.max_texts", "16", err, sizeof err), 0);
    assert_int_equal(c.max_texts, 16);
    assert_int_equal(srv_config_set(&c, "log.format", "json", err, sizeof err), 0);
    assert_int_equal(srv_config_set(&c, "auth.api_key_file", "/k", err, sizeof err), 0);
    assert_string_equal(c.api_key_file, "/k");
    assert_int_equal(srv_config_set(&c, "auth.api_key_file", "", err, sizeof err), 0);
    assert_null(c.api_key_file);

    assert_int_equal(srv_config_set(&c, "limits.max_texts", "16x", err, sizeof err), -1);
    assert_non_null(strstr(err, "limits.max_texts"));
    assert_int_equal(srv_config_set(&c, "threads", "99999", err, sizeof err), -1);
    assert_non_null(strstr(err, "threads"));
    assert_int_equal(srv_config_set(&c, "log.level", "chatty", err, sizeof err), -1);
    assert_int_equal(srv_config_set(&c, "nope", "1", err, sizeof err), -1);
    assert_non_null(strstr(err, "nope"));
    assert_int_equal(srv_config_set(&c, "models", "[]", err, sizeof err), -1);

    /* a later file keeps values it does not mention */
    assert_int_equal(srv_config_load_string(&c, "{\"threads\":2}", 13, "f", err, sizeof err), 0);
    assert_int_equal(c.max_texts, 16);
    srv_config_free(&c);
}

static void expect_invalid(const char *json, int cores, const char *key)
{
    srv_config c;
    char err[512] = "";
    assert_int_equal(load(&c, json, err, sizeof err), 0);
    int rc = srv_config_validate(&c, cores, err, sizeof err);
    if (rc != -1 || !strstr(err, key))
        fail_msg("config %s: want validation error naming %s, got rc %d \"%s\"", json, key, rc, err);
    srv_config_free(&c);
}

static void test_validate(void **state)
{
    (void)state;
    char json[1024];
    expect_invalid("{}", 2, "models");
    snprintf(json, sizeof json, "{\"listen\":\"localhost\",\"models\":[%s]}", MODEL);
    expect_invalid(json, 2, "listen");
    snprintf(json, sizeof json, "{\"listen\":\"h:99999\",\"models\":[%s]}", MODEL);
    expect_invalid(json, 2, "listen");
    snprintf(json, sizeof json, "{\"models\":[%s,%s]}", MODEL, MODEL);
    expect_invalid(json, 2, "models[1].name");
    expect_invalid("{\"models\":[{\"name\":\"a b\",\"path\":\"p\",\"task\":\"qa\"}]}", 2,
                   "models[0].name");
    /* a repository model is versioned by its folder names */
    expect_invalid("{\"models\":[{\"name\":\"r\",\"repository\":\"d\",\"task\":\"qa\","
                   "\"version\":\"1\"}]}", 2, "models[0].version");
    /* translation keys: only on translate models, well-formed */
    expect_invalid("{\"models\":[{\"name\":\"t\",\"path\":\"p\",\"task\":\"qa\",\"translation\":"
                   "{\"source_lang\":\"en\"}}]}", 2, "models[0].translation.source_lang");
    expect_invalid("{\"models\":[{\"name\":\"t\",\"path\":\"p\",\"task\":\"translate\","
                   "\"translation\":{\"target_lang\":\"p t\"}}]}", 2,
                   "models[0].translation.target_lang");
    expect_invalid("{\"models\":[{\"name\":\"t\",\"path\":\"p\",\"task\":\"translate\","
                   "\"translation\":{\"target_token\":\"por\"}}]}", 2,
                   "models[0].translation.target_token");
    expect_bad("{\"models\":[{\"name\":\"t\",\"path\":\"p\",\"task\":\"translate\","
               "\"translation\":{\"max_beam_size\":65}}]}", "models[0].translation.max_beam_size");
    expect_invalid("{\"models\":[{\"name\":\"t\",\"path\":\"p\",\"task\":\"qa\",\"timeout_ms\":500,"
                   "\"max_timeout_ms\":100}]}", 2, "models[0].timeout_ms");
    expect_invalid("{\"models\":[{\"name\":\"t\",\"path\":\"p\",\"task\":\"qa\",\"batching\":"
                   "{\"workers\":2,\"threads\":2}}]}", 2, "models[0].batching.threads");
    expect_invalid("{\"models\":[{\"name\":\"t\",\"path\":\"p\",\"task\":\"qa\",\"batching\":"
                   "{\"workers\":3}}]}", 2, "models[0].batching.threads");
    snprintf(json, sizeof json, "{\"threads\":4,\"models\":[%s]}", MODEL);
    expect_invalid(json, 2, "threads");

    /* auto threads: an even share per worker */
    srv_config c;
    char err[512];
    assert_int_equal(load(&c, "{\"models\":[{\"name\":\"t\",\"path\":\"p\",\"task\":\"qa\","
                              "\"batching\":{\"workers\":2}}]}", err, sizeof err), 0);
    assert_int_equal(srv_config_validate(&c, 8, err, sizeof err), 0);
    assert_int_equal(c.models[0].threads, 4);
    srv_config_free(&c);
}

/* A translate model with its "translation" keys, and their defaults. */
static void test_translation_keys(void **state)
{
    (void)state;
    srv_config c;
    char err[512] = "";
    const char *json =
        "{\"models\":[{\"name\":\"mt\",\"path\":\"p\",\"task\":\"translate\",\"translation\":"
        "{\"source_lang\":\"en\",\"target_lang\":\"pt_BR\",\"target_token\":\">>por<<\","
        "\"max_beam_size\":4,\"max_length\":128}},{\"name\":\"mt2\",\"path\":\"q\","
        "\"task\":\"translate\"}]}";
    assert_int_equal(load(&c, json, err, sizeof err), 0);
    assert_int_equal(srv_config_validate(&c, 2, err, sizeof err), 0);
    assert_int_equal(c.models[0].task, SRV_TASK_TRANSLATE);
    assert_string_equal(c.models[0].source_lang, "en");
    assert_string_equal(c.models[0].target_lang, "pt_BR");
    assert_string_equal(c.models[0].target_token, ">>por<<");
    assert_int_equal(c.models[0].max_beam_size, 4);
    assert_int_equal(c.models[0].max_length, 128);
    assert_null(c.models[1].source_lang);
    assert_null(c.models[1].target_lang);
    assert_null(c.models[1].target_token);
    assert_int_equal(c.models[1].max_beam_size, 8);
    assert_int_equal(c.models[1].max_length, 512);
    srv_config_free(&c);
}

/* models[].batching.recover_*: the batcher's device-fault retry settings, per model,
 * with their defaults (srv_batch_opts_default's) and ranges. */
static void test_recover_keys(void **state)
{
    (void)state;
    srv_config c;
    char err[512] = "";
    const char *json =
        "{\"models\":[{\"name\":\"a\",\"path\":\"p\",\"task\":\"qa\",\"backend\":\"cuda\","
        "\"batching\":{\"recover_attempts\":2,\"recover_backoff_ms\":1500}},"
        "{\"name\":\"b\",\"path\":\"q\",\"task\":\"qa\"}]}";
    assert_int_equal(load(&c, json, err, sizeof err), 0);
    assert_int_equal(srv_config_validate(&c, 2, err, sizeof err), 0);
    assert_int_equal(c.models[0].recover_attempts, 2);
    assert_int_equal(c.models[0].recover_backoff_ms, 1500);
    srv_batch_opts d;
    srv_batch_opts_default(&d);
    assert_int_equal(c.models[1].recover_attempts, d.recover_attempts);
    assert_int_equal(c.models[1].recover_backoff_ms, d.recover_backoff_ms);
    srv_config_free(&c);

    static const char *const bad[][2] = {
        {"\"recover_attempts\":0", "models[0].batching.recover_attempts: must be an integer in "
                                   "[1, 100], got 0"},
        {"\"recover_attempts\":101", "models[0].batching.recover_attempts"},
        {"\"recover_attempts\":1.5", "models[0].batching.recover_attempts"},
        {"\"recover_attempts\":\"5\"", "models[0].batching.recover_attempts"},
        {"\"recover_backoff_ms\":9", "models[0].batching.recover_backoff_ms: must be an integer "
                                     "in [10, 30000], got 9"},
        {"\"recover_backoff_ms\":30001", "models[0].batching.recover_backoff_ms"},
        {"\"recover_backoff_ms\":-200", "models[0].batching.recover_backoff_ms"},
        {"\"recover_backoff_ms\":null", "models[0].batching.recover_backoff_ms"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char j[512];
        snprintf(j, sizeof j, "{\"models\":[{\"name\":\"m\",\"path\":\"p\",\"task\":\"qa\","
                 "\"batching\":{%s}}]}", bad[i][0]);
        expect_bad(j, bad[i][1]);
    }
    /* at the top level they are no key: they belong to a model */
    expect_bad("{\"batching\":{\"recover_attempts\":3}}", "batching");
}

static void test_listen_parse(void **state)
{
    (void)state;
    char host[64];
    int port = -1;
    assert_int_equal(srv_listen_parse("127.0.0.1:8080", host, sizeof host, &port), 0);
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(port, 8080);
    assert_int_equal(srv_listen_parse("[::1]:0", host, sizeof host, &port), 0);
    assert_string_equal(host, "::1");
    assert_int_equal(port, 0);
    assert_int_equal(srv_listen_parse("localhost:65535", host, sizeof host, &port), 0);
    assert_int_equal(srv_listen_parse("localhost:65536", host, sizeof host, &port), -1);
    assert_int_equal(srv_listen_parse(":80", host, sizeof host, &port), -1);
    assert_int_equal(srv_listen_parse("h:", host, sizeof host, &port), -1);
    assert_int_equal(srv_listen_parse("h:8a", host, sizeof host, &port), -1);
    assert_int_equal(srv_listen_parse("::1:80", host, sizeof host, &port), -1);
    assert_int_equal(srv_listen_parse("[::1]80", host, sizeof host, &port), -1);
    assert_int_equal(srv_listen_parse(NULL, host, sizeof host, &port), -1);
}

static void test_print_doc(void **state)
{
    (void)state;
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    srv_config_print_doc(f);
    fclose(f);
    static const char *const keys[] = {
        "listen", "threads", "log.level", "log.format", "limits.max_body_bytes",
        "limits.max_texts", "limits.max_text_bytes", "auth.api_key_file", "drain_timeout_ms",
        "models[].name", "models[].path", "models[].task", "models[].version",
        "models[].timeout_ms", "models[].max_timeout_ms", "models[].batching.max_batch_tokens",
        "models[].batching.max_batch_size", "models[].batching.max_delay_us",
        "models[].batching.queue_capacity", "models[].batching.workers",
        "models[].batching.threads", "models[].batching.recover_attempts  (integer, 1..100, "
        "default 5)", "models[].batching.recover_backoff_ms  (integer, 10..30000, default 200)"};
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++)
        if (!strstr(text, keys[i]))
            fail_msg("--print-config-doc does not document %s", keys[i]);
    assert_non_null(strstr(text, "default \"127.0.0.1:8080\""));
    free(text);
}

/* The shipped configs load and validate on a 2-core machine. */
static void test_shipped_config(void **state)
{
    (void)state;
    srv_config c;
    char err[512] = "";
    assert_int_equal(srv_config_init(&c), 0);
    int rc = srv_config_load_file(&c, tu_path("%s/config/nlpd.json", tu_root()), err, sizeof err);
    if (rc)
        fail_msg("config/nlpd.json: %s", err);
    assert_int_equal(srv_config_validate(&c, 2, err, sizeof err), 0);
    assert_string_equal(c.listen, "127.0.0.1:8080");
    assert_true(c.n_models >= 1);
    assert_int_equal(c.models[0].task, SRV_TASK_EMBED);
    srv_config_free(&c);

    assert_int_equal(srv_config_init(&c), 0);
    rc = srv_config_load_file(&c, tu_path("%s/config/examples/all-tasks.json", tu_root()), err,
                              sizeof err);
    if (rc || srv_config_validate(&c, 2, err, sizeof err))
        fail_msg("config/examples/all-tasks.json: %s", err);
    srv_config_free(&c);

    assert_int_equal(srv_config_init(&c), 0);
    assert_int_equal(srv_config_load_file(&c, "/nonexistent/nlpd.json", err, sizeof err), -1);
    assert_non_null(strstr(err, "/nonexistent/nlpd.json"));
    srv_config_free(&c);
}

TEST_GROUP(server_config)
{
    static const struct CMUnitTest t[] = {
        cmocka_unit_test(test_defaults),      cmocka_unit_test(test_load_full),
        cmocka_unit_test(test_unknown_and_bad), cmocka_unit_test(test_set_overrides),
        cmocka_unit_test(test_validate),      cmocka_unit_test(test_translation_keys),
        cmocka_unit_test(test_recover_keys),  cmocka_unit_test(test_listen_parse),
        cmocka_unit_test(test_print_doc),     cmocka_unit_test(test_shipped_config),
    };
    TEST_GROUP_RETURN(t);
}
