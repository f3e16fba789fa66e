/* test_main.c - runs every cmocka group listed in groups.def and prints the
 * closing line "N passed, N failed" for CI. NLPD_TEST_GROUP=name runs one group. */
#include "test_util.h"

#include "nlpd_engine.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Weak, so a test binary built from a subset of the test files skips the rest. */
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

TEST_GROUP(harness)
{
    static const struct CMUnitTest t[] = {cmocka_unit_test(test_harness_paths)};
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
    size_t passed = 0, failed = 0;
    for (size_t i = 0; i < sizeof groups / sizeof groups[0]; i++) {
        if (only && *only && strcmp(only, groups[i].name) != 0)
            continue;
        if (!groups[i].get) {
            printf("[ SKIPPED  ] group %s: not linked into this binary\n", groups[i].name);
            continue;
        }
        size_t n = 0;
        const struct CMUnitTest *t = groups[i].get(&n);
        int f = _cmocka_run_group_tests(groups[i].name, t, n, NULL, NULL);
        failed += (size_t)f;
        passed += n - (size_t)f;
    }
    fflush(stderr);
    printf("unit: %zu passed, %zu failed\n", passed, failed);
    return failed ? 1 : 0;
}
