/* test_checkpoint.c - eng_ckpt (white-box: the renameat2 test seam): a failure at
 * the very end of publishing a folder - the folder appeared meanwhile, the file
 * system lacks RENAME_EXCHANGE / RENAME_NOREPLACE - keeps the finished folder
 * under a name the error gives and leaves the existing folder alone. */
#include "test_util.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/util.h" /* eng_ckpt_renameat2 */
#include "nlpd_engine.h"

static char tmpdir[256];

static int setup(void **s)
{
    (void)s;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/nlpd_ckpt_XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **s)
{
    (void)s;
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static int no_rename2(int a, const char *b, int c, const char *d, unsigned e)
{
    (void)a, (void)b, (void)c, (void)d, (void)e;
    errno = EINVAL; /* what a file system without RENAME_EXCHANGE/NOREPLACE says */
    return -1;
}

/* The name of the one entry of dir that contains `part`, or "". */
static const char *find_entry(const char *dir, const char *part)
{
    static char name[512];
    name[0] = 0;
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d)))
        if (strstr(e->d_name, part))
            snprintf(name, sizeof name, "%s", e->d_name);
    closedir(d);
    return name;
}

static void test_commit_keeps_model(void **s)
{
    (void)s;
    char out[300];
    snprintf(out, sizeof out, "%s/model", tmpdir);
    eng_ckpt *c;
    eng_error err;
    /* 1. The output folder appears (empty) while the model is written: it is not
     * replaced, and the finished model is kept under a name err gives. */
    assert_int_equal(eng_ckpt_begin(out, &c, &err), 0);
    assert_int_equal(eng_ckpt_write(c, "weights.bin", "trained", 7, &err), 0);
    assert_int_equal(mkdir(out, 0755), 0);
    assert_int_not_equal(eng_ckpt_commit(c, 0, &err), 0);
    assert_non_null(strstr(err.msg, "kept at"));
    const char *kept = find_entry(tmpdir, "model.unpublished-");
    assert_true(kept[0]);
    assert_non_null(strstr(err.msg, kept));
    char *t = tu_read_file(tu_path("%s/%s/weights.bin", tmpdir, kept), NULL);
    assert_non_null(t);
    assert_string_equal(t, "trained");
    free(t);
    assert_false(tu_exists(tu_path("%s/weights.bin", out))); /* the new folder left alone */
    assert_true(find_entry(tmpdir, ".tmp-")[0] == 0);
    /* 2. --force on a file system without RENAME_EXCHANGE: the old folder stays, the
     * new model is kept and named. */
    write_file(tu_path("%s/old.txt", out), "old");
    assert_int_equal(eng_ckpt_begin(out, &c, &err), 0);
    assert_int_equal(eng_ckpt_write(c, "weights.bin", "second", 6, &err), 0);
    int (*saved)(int, const char *, int, const char *, unsigned) = eng_ckpt_renameat2;
    eng_ckpt_renameat2 = no_rename2;
    int rc = eng_ckpt_commit(c, 1, &err);
    eng_ckpt_renameat2 = saved;
    assert_int_not_equal(rc, 0);
    assert_non_null(strstr(err.msg, "RENAME_EXCHANGE"));
    assert_non_null(strstr(err.msg, "kept at"));
    assert_true(tu_exists(tu_path("%s/old.txt", out)));
    const char *kept2 = strstr(err.msg, "kept at ") + strlen("kept at ");
    char path[600];
    snprintf(path, sizeof path, "%s", kept2);
    t = tu_read_file(tu_path("%s/weights.bin", path), NULL);
    assert_non_null(t);
    assert_string_equal(t, "second");
    free(t);
    /* 3. Without RENAME_NOREPLACE the plain path still refuses an existing folder. */
    char out2[300];
    snprintf(out2, sizeof out2, "%s/other", tmpdir);
    assert_int_equal(eng_ckpt_begin(out2, &c, &err), 0);
    assert_int_equal(eng_ckpt_write(c, "a", "x", 1, &err), 0);
    eng_ckpt_renameat2 = no_rename2;
    rc = eng_ckpt_commit(c, 0, &err);
    eng_ckpt_renameat2 = saved;
    assert_int_equal(rc, 0);
    assert_true(tu_exists(tu_path("%s/a", out2)));
}

TEST_GROUP(checkpoint)
{
    static const struct CMUnitTest t[] = {
        cmocka_unit_test_setup_teardown(test_commit_keeps_model, setup, teardown),
    };
    TEST_GROUP_RETURN(t);
}
