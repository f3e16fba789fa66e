/* test_util.h - shared helpers for the cmocka unit tests. */
#ifndef NLPD_TEST_UTIL_H
#define NLPD_TEST_UTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

/* A test group: each tests/unit/test_*.c defines one with TEST_GROUP(name)
 * and lists it in tests/unit/groups.def. */
#define TEST_GROUP(name) \
    const struct CMUnitTest *name##_group(size_t *n)
#define TEST_GROUP_RETURN(arr) \
    do { *n = sizeof(arr) / sizeof((arr)[0]); return (arr); } while (0)

/* Paths: the repository root (NLPD_ROOT or "."), shared data (NLPD_SHARED or
 * "<root>/../shared"). Results point to a static buffer per call slot. */
const char *tu_root(void);
const char *tu_shared(void);
/* snprintf into a rotating static buffer: tu_path("%s/tests/fixtures/x", tu_root()). */
const char *tu_path(const char *fmt, ...);
/* 1 if the path exists. */
int tu_exists(const char *path);
/* Read a whole file (NUL-terminated); NULL on failure. Caller frees. */
char *tu_read_file(const char *path, size_t *len);
/* The backends whole-model tests run on: "cpu" first, then every other kind with a
 * device ("cuda-emu", the emulated CUDA backend, in the unit-test binary; "cuda" on a
 * GPU machine). Returns how many (<= cap). */
int tu_model_backends(const char **names, int cap);
/* max |a[i] - b[i]| */
float tu_max_abs_diff(const float *a, const float *b, size_t n);

/* Skips are counted and printed ("unit: N passed, N failed, N skipped"); a test
 * must never pass by skipping. skip() is redefined to count. */
extern int tu_skipped;
#undef skip
#define skip() do { tu_skipped++; _skip(__FILE__, __LINE__); } while (0)

/* A REQUIRED resource (fixture, model from `make models`, tokenizer or data in
 * ../shared): when `path` does not exist the test FAILS, naming it and how to get
 * it. Only NLPD_TEST_ALLOW_SKIP=1 (a developer's partial checkout; never make test
 * or CI, which scripts/run_tests.sh enforces) turns this into a counted skip. */
#define tu_require(path, how) tu_require_((path), (how), __FILE__, __LINE__)
void tu_require_(const char *path, const char *how, const char *file, int line);
/* An OPTIONAL resource: a counted skip, with the reason printed, when absent. */
#define tu_optional(path, how) tu_optional_((path), (how), __FILE__, __LINE__)
void tu_optional_(const char *path, const char *how, const char *file, int line);

#endif
