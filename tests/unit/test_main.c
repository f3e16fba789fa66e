/* test_main.c - runs every cmocka group listed in groups.def and prints the
 * closing line "unit: N passed, N failed, N skipped" for CI. NLPD_TEST_GROUP=name
 * runs one group (a name that is no group fails). A group listed but not linked
 * fails, and so does a TEST_GROUP in tests/unit that groups.def does not list. */
#include "test_util.h"

#include "nlpd_engine.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <fnmatch.h>
#include <dirent.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* Weak, so that a group missing from the link is reported (as a failure), not a
 * link error that hides the others. */
#define GROUP(name) const struct CMUnitTest *name##_group(size_t *n) __attribute__((weak));
#include "groups.def"
#undef GROUP

static const struct {
    const char *name;
    const struct CMUnitTest *(*get)(size_t *n);
} groups[] = {
#define GROUP(name) {#name, name##_group},
#include "groups.def"
#undef GROUP
};

const char *tu_root(void)
{
    const char *r = getenv("NLPD_ROOT");
    return r && *r ? r : ".";
}

const char *tu_shared(void)
{
    const char *s = getenv("NLPD_SHARED");
    return s && *s ? s : tu_path("%s/../shared", tu_root());
}

const char *tu_path(const char *fmt, ...)
{
    static char bufs[8][4096];
    static int slot;
    char *b = bufs[slot++ % 8];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b, sizeof bufs[0], fmt, ap);
    va_end(ap);
    return b;
}

int tu_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

char *tu_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = sz >= 0 ? malloc((size_t)sz + 1) : NULL;
    if (buf && fread(buf, 1, (size_t)sz, f) != (size_t)sz) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf) {
        buf[sz] = 0;
        if (len)
            *len = (size_t)sz;
    }
    return buf;
}

int tu_skipped;

static void _fail_msg_required(const char *path, const char *how, const char *file, int line)
{
    print_error("%s:%d: required %s is missing (%s); a required resource never skips "
                   "(NLPD_TEST_ALLOW_SKIP=1 only for a partial checkout)\n", file, line, path,
                   how);
    _fail(file, line);
}

static int allow_skip(void)
{
    const char *a = getenv("NLPD_TEST_ALLOW_SKIP");
    return a && strcmp(a, "1") == 0;
}

void tu_require_(const char *path, const char *how, const char *file, int line)
{
    if (tu_exists(path))
        return;
    if (allow_skip()) {
        printf("[ SKIPPED  ] %s:%d: required %s is missing (%s); NLPD_TEST_ALLOW_SKIP=1\n", file,
               line, path, how);
        tu_skipped++;
        _skip(file, line);
    }
    _fail_msg_required(path, how, file, line);
}

void tu_optional_(const char *path, const char *how, const char *file, int line)
{
    if (tu_exists(path))
        return;
    printf("[ SKIPPED  ] %s:%d: optional %s is missing (%s)\n", file, line, path, how);
    tu_skipped++;
    _skip(file, line);
}

int tu_model_backends(const char **names, int cap)
{
    return eng_backend_kinds(names, cap);
}

float tu_max_abs_diff(const float *a, const float *b, size_t n)
{
    float m = 0;
    for (size_t i = 0; i < n; i++) {
        float d = fabsf(a[i] - b[i]);
        if (d > m || d != d)
            m = d != d ? INFINITY : d;
    }
    return m;
}

/* The harness checks itself: paths resolve and the diff helper sees NaN. */
static void test_harness_paths(void **state)
{
    (void)state;
    assert_true(tu_exists(tu_path("%s/tests/unit/groups.def", tu_root())));
    float a[2] = {1, NAN}, b[2] = {1, 1};
    assert_true(isinf(tu_max_abs_diff(a, b, 2)));
}

static int group_listed(const char *name)
{
    for (size_t i = 0; i < sizeof groups / sizeof groups[0]; i++)
        if (strcmp(groups[i].name, name) == 0)
            return 1;
    return 0;
}

/* Every TEST_GROUP(name) in tests/unit/test_*.c is listed in groups.def (an
 * unlisted group would never run and never be missed). */
static void test_harness_groups_listed(void **state)
{
    (void)state;
    char dir[4096]; /* not a tu_path slot: the loop below reuses them */
    snprintf(dir, sizeof dir, "%s/tests/unit", tu_root());
    DIR *d = opendir(dir);
    assert_non_null(d);
    int files = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        size_t l = strlen(e->d_name);
        if (strncmp(e->d_name, "test_", 5) != 0 || l < 3 || strcmp(e->d_name + l - 2, ".c") != 0)
            continue;
        char *text = tu_read_file(tu_path("%s/%s", dir, e->d_name), NULL);
        assert_non_null(text);
        files++;
        for (const char *p = text; (p = strstr(p, "\nTEST_GROUP(")) != NULL; p++) {
            const char *b = p + 12, *end = strchr(b, ')');
            assert_non_null(end);
            char name[128];
            snprintf(name, sizeof name, "%.*s", (int)(end - b), b);
            if (!group_listed(name)) {
                free(text);
                closedir(d);
                fail_msg("%s defines TEST_GROUP(%s), which groups.def does not list", e->d_name,
                         name);
            }
        }
        free(text);
    }
    closedir(d);
    assert_true(files > 10);
}

/* tu_require fails (does not skip) on a missing path. */
static void require_missing(void **state)
{
    (void)state;
    tu_require("/nonexistent/nlpd/required", "a test of the harness");
}

static void test_harness_require_fails(void **state)
{
    (void)state;
    if (allow_skip())
        return; /* the developer asked for skips; nothing to check */
    /* In a child process: cmocka's state is global, a group cannot run inside a test. */
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        const struct CMUnitTest t[] = {cmocka_unit_test(require_missing)};
        /* quiet: its expected "FAILED" lines would only confuse a reader of the log */
        if (!freopen("/dev/null", "w", stdout) || !freopen("/dev/null", "w", stderr))
            _exit(2);
        int f = _cmocka_run_group_tests("harness_require", t, 1, NULL, NULL);
        fflush(stdout);
        _exit(f == 1 && tu_skipped == 0 ? 0 : 1);
    }
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
}

TEST_GROUP(harness)
{
    static const struct CMUnitTest t[] = {cmocka_unit_test(test_harness_paths),
                                          cmocka_unit_test(test_harness_groups_listed),
                                          cmocka_unit_test(test_harness_require_fails)};
    TEST_GROUP_RETURN(t);
}

/* Test-only backends (tests/cuda_emu/register_emu.cc): weak, absent when not linked. */
void tu_register_backends(void) __attribute__((weak));

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0); /* keep our lines in order with cmocka's */
    if (tu_register_backends)
        tu_register_backends();
    const char *only = getenv("NLPD_TEST_GROUP");
    /* NLPD_TEST_FILTER: only the tests whose names match (cmocka's pattern: * and ?) */
    const char *filter = getenv("NLPD_TEST_FILTER");
    if (filter && *filter)
        cmocka_set_test_filter(filter);
    size_t passed = 0, failed = 0, skipped = 0, ran = 0;
    for (size_t i = 0; i < sizeof groups / sizeof groups[0]; i++) {
        if (only && *only && strcmp(only, groups[i].name) != 0)
            continue;
        ran++;
        if (!groups[i].get) {
            printf("[  FAILED  ] group %s: listed in groups.def but not linked into this binary\n",
                   groups[i].name);
            failed++;
            continue;
        }
        size_t n = 0;
        const struct CMUnitTest *t = groups[i].get(&n);
        int s0 = tu_skipped;
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        int f = _cmocka_run_group_tests(groups[i].name, t, n, NULL, NULL);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        /* the suite has a time budget (README): each group says what it costs */
        printf("group %s: %.1f s\n", groups[i].name,
               (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec));
        size_t s = (size_t)(tu_skipped - s0);
        if (filter && *filter) { /* count only the tests the filter ran */
            size_t m = 0;
            for (size_t k = 0; k < n; k++)
                m += fnmatch(filter, t[k].name, 0) == 0;
            n = m;
        }
        failed += (size_t)f;
        skipped += s;
        passed += n - (size_t)f - s;
    }
    if (only && *only && !ran) {
        printf("[  FAILED  ] NLPD_TEST_GROUP=%s: no such group (tests/unit/groups.def)\n", only);
        failed++;
    }
    fflush(stderr);
    printf("unit: %zu passed, %zu failed, %zu skipped\n", passed, failed, skipped);
    return failed ? 1 : 0;
}
