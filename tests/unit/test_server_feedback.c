/* test_server_feedback.c - POST /v1/feedback's parts without HTTP: the
 * recent-request store (server/recent.h: bounds in entries, bytes and age,
 * replacement, indexes, concurrent use), the feedback log writer
 * (server/feedback_log.h: lines appended in order, group commit, a failed
 * write cut off again, a torn tail never followed by new lines) and the
 * request parser (srv_api_parse_feedback). */
#include "test_util.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api.h"
#include "feedback_log.h"
#include "recent.h"

/* ------------------------------------------------------------ recent store */

static int put1(srv_recent *s, const char *id, int model, const char *text, int64_t t)
{
    size_t len = strlen(text);
    return srv_recent_put(s, id, model, 1, &text, &len, t);
}

/* The text of id (index i) at time t, or NULL; *rc the get's result. */
static char *get(srv_recent *s, const char *id, int i, int64_t t, int *rc)
{
    char *text = NULL;
    size_t len = 0;
    int model = -1, n = 0;
    *rc = srv_recent_get(s, id, i, t, &text, &len, &model, &n);
    if (*rc == 0)
        assert_int_equal(strlen(text), len);
    return text;
}

static void expect_text(srv_recent *s, const char *id, int i, int64_t t, const char *want)
{
    int rc;
    char *got = get(s, id, i, t, &rc);
    if (!want) {
        assert_int_equal(rc, -1);
        return;
    }
    assert_int_equal(rc, 0);
    assert_string_equal(got, want);
    free(got);
}

static void test_recent_roundtrip(void **state)
{
    (void)state;
    srv_recent *s = srv_recent_new(8, 1 << 20, 1000);
    assert_non_null(s);
    const char *texts[] = {"first text", "second", "third: \xc3\xa9t\xc3\xa9"};
    size_t lens[] = {strlen(texts[0]), strlen(texts[1]), strlen(texts[2])};
    assert_int_equal(srv_recent_put(s, "req-1", 3, 3, texts, lens, 100), 0);
    for (int i = 0; i < 3; i++)
        expect_text(s, "req-1", i, 200, texts[i]);
    char *text = NULL;
    size_t len;
    int model = -1, n = 0;
    assert_int_equal(srv_recent_get(s, "req-1", 3, 200, &text, &len, &model, &n), -2);
    assert_int_equal(n, 3);
    assert_int_equal(model, 3);
    assert_int_equal(srv_recent_get(s, "req-1", -1, 200, &text, &len, &model, &n), -2);
    expect_text(s, "req-2", 0, 200, NULL);
    expect_text(s, "", 0, 200, NULL);
    /* The same id again: the newer request wins. */
    assert_int_equal(put1(s, "req-1", 4, "replaced", 300), 0);
    expect_text(s, "req-1", 0, 300, "replaced");
    int entries;
    size_t bytes;
    srv_recent_stats(s, 300, &entries, &bytes);
    assert_int_equal(entries, 1);
    assert_int_equal(bytes, SRV_RECENT_ENTRY_OVERHEAD + strlen("req-1") + sizeof(size_t) + 8);
    assert_int_equal(srv_recent_put(s, "", 0, 1, texts, lens, 300), -1);
    srv_recent_free(s);
    srv_recent_free(NULL);
    assert_null(srv_recent_new(0, 100, 100));
    assert_null(srv_recent_new(1, 0, 100));
    assert_null(srv_recent_new(1, 100, 0));
}

static void test_recent_count_bound(void **state)
{
    (void)state;
    srv_recent *s = srv_recent_new(100, 1 << 30, 1000000);
    char id[32], text[32];
    for (int i = 0; i < 1000; i++) {
        snprintf(id, sizeof id, "id-%d", i);
        snprintf(text, sizeof text, "text %d", i);
        assert_int_equal(put1(s, id, 0, text, i), 0);
    }
    int entries;
    size_t bytes;
    srv_recent_stats(s, 1000, &entries, &bytes);
    assert_int_equal(entries, 100);
    /* The newest 100 stay, the oldest went first. */
    expect_text(s, "id-899", 0, 1000, NULL);
    expect_text(s, "id-900", 0, 1000, "text 900");
    expect_text(s, "id-999", 0, 1000, "text 999");
    srv_recent_free(s);
}

static void test_recent_byte_bound(void **state)
{
    (void)state;
    size_t per = SRV_RECENT_ENTRY_OVERHEAD + 4 + sizeof(size_t) + 1000; /* "id-N" + 1000 bytes */
    srv_recent *s = srv_recent_new(1000, 5 * per, 1000000);
    char *big = malloc(1001);
    memset(big, 'x', 1000);
    big[1000] = 0;
    char id[16];
    for (int i = 0; i < 9; i++) {
        snprintf(id, sizeof id, "id-%d", i);
        big[0] = (char)('0' + i);
        assert_int_equal(put1(s, id, 0, big, i), 0);
        int entries;
        size_t bytes;
        srv_recent_stats(s, i, &entries, &bytes);
        assert_true(bytes <= 5 * per);
        assert_int_equal(entries, i < 5 ? i + 1 : 5);
    }
    expect_text(s, "id-3", 0, 10, NULL);
    int rc;
    char *got = get(s, "id-4", 0, 10, &rc);
    assert_int_equal(rc, 0);
    assert_int_equal(got[0], '4');
    free(got);
    /* One entry larger than the whole store is refused and evicts nothing. */
    char *huge = malloc(6 * per + 1);
    memset(huge, 'y', 6 * per);
    huge[6 * per] = 0;
    assert_int_equal(put1(s, "huge", 0, huge, 11), 1);
    expect_text(s, "huge", 0, 11, NULL);
    int entries;
    size_t bytes;
    srv_recent_stats(s, 11, &entries, &bytes);
    assert_int_equal(entries, 5);
    free(huge);
    free(big);
    srv_recent_free(s);
}

static void test_recent_expiry(void **state)
{
    (void)state;
    srv_recent *s = srv_recent_new(100, 1 << 20, 1000);
    assert_int_equal(put1(s, "a", 0, "text a", 0), 0);
    assert_int_equal(put1(s, "b", 0, "text b", 500), 0);
    expect_text(s, "a", 0, 999, "text a");
    expect_text(s, "a", 0, 1000, NULL); /* max_age reached: gone */
    expect_text(s, "b", 0, 1000, "text b");
    int entries;
    size_t bytes;
    srv_recent_stats(s, 1000, &entries, &bytes);
    assert_int_equal(entries, 1);
    srv_recent_stats(s, 1500, &entries, &bytes);
    assert_int_equal(entries, 0);
    assert_int_equal(bytes, 0);
    /* An entry stored behind a younger head still expires by its own age. */
    assert_int_equal(put1(s, "young", 0, "y", 2000), 0);
    assert_int_equal(put1(s, "old", 0, "o", 1200), 0);
    expect_text(s, "old", 0, 2300, NULL);
    expect_text(s, "young", 0, 2300, "y");
    srv_recent_free(s);
}

typedef struct hammer_arg {
    srv_recent *s;
    int id;
} hammer_arg;

static void *hammer(void *p)
{
    hammer_arg *a = p;
    char id[32], text[32];
    for (int i = 0; i < 20000; i++) {
        snprintf(id, sizeof id, "t%d-%d", a->id, i % 300);
        snprintf(text, sizeof text, "t%d text %d", a->id, i % 300);
        if (put1(a->s, id, a->id, text, i) != 0)
            return (void *)1;
        char *got = NULL;
        size_t len;
        int model, n;
        int rc = srv_recent_get(a->s, id, 0, i, &got, &len, &model, &n);
        /* Another thread may have evicted it; if present, it is ours, whole. */
        if (rc == 0 && (strcmp(got, text) != 0 || model != a->id))
            rc = -9;
        free(got);
        if (rc != 0 && rc != -1)
            return (void *)1;
    }
    return NULL;
}

static void test_recent_concurrent(void **state)
{
    (void)state;
    srv_recent *s = srv_recent_new(500, 1 << 20, 1000000);
    pthread_t t[4];
    hammer_arg a[4];
    for (int i = 0; i < 4; i++) {
        a[i] = (hammer_arg){s, i};
        assert_int_equal(pthread_create(&t[i], NULL, hammer, &a[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        void *rv;
        pthread_join(t[i], &rv);
        assert_null(rv);
    }
    int entries;
    size_t bytes;
    srv_recent_stats(s, 0, &entries, &bytes);
    assert_true(entries <= 500 && entries > 0);
    srv_recent_free(s);
}

/* ------------------------------------------------------------ feedback log */

typedef struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int pending;
} waiter;

static void on_done(srv_fblog_entry *e, void *arg)
{
    (void)e;
    waiter *w = arg;
    pthread_mutex_lock(&w->mu);
    w->pending--;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static void wait_all(waiter *w)
{
    pthread_mutex_lock(&w->mu);
    while (w->pending > 0)
        pthread_cond_wait(&w->cv, &w->mu);
    pthread_mutex_unlock(&w->mu);
}

static void submit(srv_fblog *l, waiter *w, srv_fblog_entry *e, int model, const char *data)
{
    memset(e, 0, sizeof *e);
    e->model = model;
    e->data = data;
    e->len = strlen(data);
    e->done = on_done;
    e->arg = w;
    pthread_mutex_lock(&w->mu);
    w->pending++;
    pthread_mutex_unlock(&w->mu);
    assert_int_equal(srv_fblog_submit(l, e), 0);
}

static char *tmp_dir(void)
{
    char *d = strdup("/tmp/nlpd-fblog-XXXXXX");
    assert_non_null(mkdtemp(d));
    return d;
}

static void rm_rf(const char *d)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", d);
    assert_int_equal(system(cmd), 0);
}

static void test_log_appends(void **state)
{
    (void)state;
    char *dir = tmp_dir();
    char sub[256], err[256];
    snprintf(sub, sizeof sub, "%s/not/yet", dir); /* created on start */
    const char *names[] = {"m0", "m1"};
    srv_fblog *l = srv_fblog_new(sub, "host-1-2", 2, names, NULL, err, sizeof err);
    assert_non_null(l);
    waiter w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};
    srv_fblog_entry e[64];
    char lines[64][32];
    for (int i = 0; i < 64; i++) {
        snprintf(lines[i], sizeof lines[i], "{\"i\": %d}\n", i);
        submit(l, &w, &e[i], i % 2, lines[i]);
    }
    wait_all(&w);
    for (int i = 0; i < 64; i++)
        assert_int_equal(e[i].err, 0);
    /* Each model's lines in its file, in order; fewer syncs than entries are fine,
     * more than one per entry and model are not. */
    assert_true(srv_fblog_fsyncs(l) >= 2 && srv_fblog_fsyncs(l) <= 64);
    for (int m = 0; m < 2; m++) {
        char path[512], want[2048] = "";
        srv_fblog_path(l, m, path, sizeof path);
        assert_non_null(strstr(path, "/host-1-2.jsonl"));
        for (int i = m; i < 64; i += 2)
            strcat(want, lines[i]);
        char *got = tu_read_file(path, NULL);
        assert_non_null(got);
        assert_string_equal(got, want);
        free(got);
    }
    srv_fblog_stop(l);
    srv_fblog_entry late = {.model = 0, .data = "x\n", .len = 2, .done = on_done, .arg = &w};
    assert_int_equal(srv_fblog_submit(l, &late), -1);
    srv_fblog_free(l);
    rm_rf(dir);
    free(dir);
}

/* A write over RLIMIT_FSIZE fails with EFBIG part-way: it is cut off again,
 * the file ends with a complete line, and later writes that fit succeed. */
static void test_log_failed_write_rolled_back(void **state)
{
    (void)state;
    char *dir = tmp_dir();
    char err[256];
    const char *names[] = {"m"};
    srv_fblog *l = srv_fblog_new(dir, "inst", 1, names, NULL, err, sizeof err);
    assert_non_null(l);
    waiter w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};
    srv_fblog_entry a, b, c;
    char small[] = "{\"a\": 1}\n";
    char *big = malloc(9000);
    memset(big, 'b', 8998);
    big[8998] = '\n';
    big[8999] = 0;
    submit(l, &w, &a, 0, small);
    wait_all(&w);
    assert_int_equal(a.err, 0);

    struct rlimit old, lim;
    getrlimit(RLIMIT_FSIZE, &old);
    lim = old;
    lim.rlim_cur = 4096;
    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    submit(l, &w, &b, 0, big);
    wait_all(&w);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
    signal(SIGXFSZ, prev);
    assert_int_equal(b.err, EFBIG);

    char path[512];
    srv_fblog_path(l, 0, path, sizeof path);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_size, strlen(small)); /* the partial 4 KiB are gone */

    submit(l, &w, &c, 0, small);
    wait_all(&w);
    assert_int_equal(c.err, 0);
    char *got = tu_read_file(path, NULL);
    char want[64];
    snprintf(want, sizeof want, "%s%s", small, small);
    assert_string_equal(got, want);
    free(got);
    free(big);
    srv_fblog_free(l);
    rm_rf(dir);
    free(dir);
}

/* A file of our instance name that ends in a torn line (a process that had
 * our pid in the same second died mid-write) is never appended to. */
static void test_log_torn_tail_not_extended(void **state)
{
    (void)state;
    char *dir = tmp_dir();
    char err[256], path[512];
    snprintf(path, sizeof path, "%s/m", dir);
    assert_int_equal(mkdir(path, 0750), 0);
    snprintf(path, sizeof path, "%s/m/inst.jsonl", dir);
    FILE *f = fopen(path, "w");
    fputs("{\"ok\": 1}\n{\"torn", f);
    fclose(f);
    const char *names[] = {"m"};
    srv_fblog *l = srv_fblog_new(dir, "inst", 1, names, NULL, err, sizeof err);
    waiter w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};
    srv_fblog_entry a;
    submit(l, &w, &a, 0, "{\"new\": 1}\n");
    wait_all(&w);
    assert_int_equal(a.err, 0);
    char now[512];
    srv_fblog_path(l, 0, now, sizeof now);
    assert_string_not_equal(now, path);
    assert_non_null(strstr(now, "/inst.1.jsonl"));
    char *old = tu_read_file(path, NULL), *fresh = tu_read_file(now, NULL);
    assert_string_equal(old, "{\"ok\": 1}\n{\"torn");
    assert_string_equal(fresh, "{\"new\": 1}\n");
    free(old);
    free(fresh);
    srv_fblog_free(l);
    rm_rf(dir);
    free(dir);
}

/* An unwritable folder (a file where the model folder should be): every
 * entry fails with the errno, nothing is written, the log keeps working for
 * other models. */
static void test_log_unwritable(void **state)
{
    (void)state;
    char *dir = tmp_dir();
    char err[256], path[512];
    snprintf(path, sizeof path, "%s/bad", dir);
    FILE *f = fopen(path, "w");
    fclose(f);
    const char *names[] = {"bad", "good"};
    srv_fblog *l = srv_fblog_new(dir, "inst", 2, names, NULL, err, sizeof err);
    waiter w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};
    srv_fblog_entry a, b;
    submit(l, &w, &a, 0, "{\"a\": 1}\n");
    submit(l, &w, &b, 1, "{\"b\": 1}\n");
    wait_all(&w);
    assert_int_equal(a.err, ENOTDIR);
    assert_int_equal(b.err, 0);
    srv_fblog_free(l);
    rm_rf(dir);
    free(dir);
}

/* ------------------------------------------------------------ parsing */

static const srv_api_limits LIM = {.max_body_bytes = 1 << 16, .max_texts = 4,
                                   .max_text_bytes = 16};

static int parse_fb(const char *body, srv_api_feedback *fb, srv_api_error *e)
{
    return srv_api_parse_feedback(body, strlen(body), &LIM, 3, fb, e);
}

static void expect_fb_err(const char *body, int status, const char *code)
{
    srv_api_feedback fb;
    srv_api_error e = {0};
    if (parse_fb(body, &fb, &e) == 0)
        fail_msg("accepted: %s", body);
    if (e.status != status || strcmp(e.code, code) != 0)
        fail_msg("%s: got %d %s (%s), want %d %s", body, e.status, e.code, e.message, status, code);
    assert_null(fb.items);
}

static void test_parse_feedback(void **state)
{
    (void)state;
    srv_api_feedback fb;
    srv_api_error e;
    assert_int_equal(parse_fb("{\"model\":\"m\",\"items\":[{\"text\":\"a\",\"label\":\"x\"},"
                              "{\"request_id\":\"r1\",\"index\":2,\"label\":\"y\"}]}", &fb, &e), 0);
    assert_string_equal(fb.model, "m");
    assert_int_equal(fb.n, 2);
    assert_int_equal(fb.list, 1);
    assert_string_equal(fb.items[0].text, "a");
    assert_null(fb.items[0].request_id);
    assert_string_equal(fb.items[0].label, "x");
    assert_string_equal(fb.items[1].request_id, "r1");
    assert_int_equal(fb.items[1].index, 2);
    assert_null(fb.items[1].text);
    srv_api_feedback_free(&fb);
    assert_int_equal(parse_fb("{\"request_id\":\"r\",\"model\":\"m\",\"label\":\"y\"}", &fb, &e), 0);
    assert_int_equal(fb.n, 1);
    assert_int_equal(fb.list, 0);
    assert_int_equal(fb.items[0].index, -1);
    srv_api_feedback_free(&fb);

    expect_fb_err("{\"items\":[{\"text\":\"a\",\"label\":\"x\"}]}", 422, "invalid_field");
    expect_fb_err("{\"model\":1,\"text\":\"a\",\"label\":\"x\"}", 422, "invalid_field");
    expect_fb_err("{\"model\":\"m\",\"text\":\"a\"}", 422, "invalid_field");
    expect_fb_err("{\"model\":\"m\",\"text\":\"a\",\"label\":3}", 422, "invalid_field");
    expect_fb_err("{\"model\":\"m\",\"text\":\"a\",\"label\":\"\"}", 422, "invalid_field");
    expect_fb_err("{\"model\":\"m\",\"text\":\"\",\"label\":\"x\"}", 422, "invalid_field");
    expect_fb_err("{\"model\":\"m\",\"text\":[\"a\"],\"label\":\"x\"}", 422, "invalid_field");
    expect_fb_err("{\"model\":\"m\",\"text\":\"a\",\"request_id\":\"r\",\"label\":\"x\"}", 422,
                  "invalid_field");
    expect_fb_err("{\"model\":\"m\",\"text\":\"a\",\"index\":0,\"label\":\"x\"}", 422,
                  "invalid_field");
    expect_fb_err("{\"model\":\"m\",\"request_id\":\"r\",\"index\":-1,\"label\":\"x\"}", 422,
                  "invalid_field");
    expect_fb_err("{\"model\":\"m\",\"request_id\":\"r\",\"index\":1.5,\"label\":\"x\"}", 422,
                  "invalid_field");
    expect_fb_err("{\"model\":\"m\",\"request_id\":\"\",\"label\":\"x\"}", 422, "invalid_field");
    expect_fb_err("{\"model\":\"m\",\"text\":\"a\",\"label\":\"x\",\"extra\":1}", 422,
                  "invalid_field");
    expect_fb_err("{\"model\":\"m\",\"items\":[{\"text\":\"a\",\"label\":\"x\"}],\"label\":\"x\"}",
                  422, "invalid_field");
    expect_fb_err("{\"model\":\"m\",\"items\":[{\"text\":\"a\",\"label\":\"x\"}],\"extra\":1}",
                  422, "invalid_field");
    expect_fb_err("{\"model\":\"m\",\"items\":[]}", 422, "invalid_field");
    expect_fb_err("{\"model\":\"m\",\"items\":{}}", 422, "invalid_field");
    expect_fb_err("{\"model\":\"m\",\"items\":[1]}", 422, "invalid_field");
    expect_fb_err("{\"model\":\"m\",\"items\":[{\"text\":\"a\",\"label\":\"x\",\"score\":1}]}", 422,
                  "invalid_field");
    expect_fb_err("{\"model\":\"m\",\"items\":[{\"text\":\"a\",\"label\":\"x\"},{\"text\":\"a\","
                  "\"label\":\"x\"},{\"text\":\"a\",\"label\":\"x\"},{\"text\":\"a\","
                  "\"label\":\"x\"}]}", 413, "too_many_items");
    expect_fb_err("{\"model\":\"m\",\"text\":\"01234567890123456\",\"label\":\"x\"}", 413,
                  "text_too_long");
    expect_fb_err("{\"model\":\"m\",\"model\":\"m\",\"text\":\"a\",\"label\":\"x\"}", 422,
                  "invalid_field");
    expect_fb_err("{\"model\":\"m\",\"text\":\"a\\u0000b\",\"label\":\"x\"}", 422, "invalid_field");
    expect_fb_err("{\"model\":\"m\",\"text\":\"a\",\"label\":\"x\"", 400, "malformed_json");
    expect_fb_err("[]", 422, "invalid_field");
    expect_fb_err("", 400, "malformed_json");
}

TEST_GROUP(server_feedback)
{
    static const struct CMUnitTest t[] = {
        cmocka_unit_test(test_recent_roundtrip),    cmocka_unit_test(test_recent_count_bound),
        cmocka_unit_test(test_recent_byte_bound),   cmocka_unit_test(test_recent_expiry),
        cmocka_unit_test(test_recent_concurrent),   cmocka_unit_test(test_log_appends),
        cmocka_unit_test(test_log_failed_write_rolled_back),
        cmocka_unit_test(test_log_torn_tail_not_extended),
        cmocka_unit_test(test_log_unwritable),      cmocka_unit_test(test_parse_feedback),
    };
    TEST_GROUP_RETURN(t);
}
