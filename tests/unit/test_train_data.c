/* test_train_data.c - nlpd-train's data loading: JSONL/CSV/TSV with named columns,
 * labels by name and label maps, bad rows reported as FILE:LINE and skipped or
 * fatal, unknown labels, empty files, the seeded stratified dev split; and the
 * metrics (accuracy, macro-F1, confusion). */
#include "test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data.h"
#include "metrics.h"

static char dir[256];

static int setup(void **s)
{
    (void)s;
    snprintf(dir, sizeof dir, "/tmp/nlpd_train_data_XXXXXX");
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **s)
{
    (void)s;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static const char *write_file(const char *name, const char *content)
{
    const char *p = tu_path("%s/%s", dir, name);
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    fputs(content, f);
    fclose(f);
    return p;
}

/* Loads with bad rows skipped; the report goes to *report (caller frees). */
static int load(const char *path, trn_data_opts *o, trn_labels *l, trn_dataset *d,
                char **report, eng_error *err)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *log = open_memstream(&buf, &len);
    o->log = log;
    int rc = trn_dataset_load(path, o, l, d, err);
    fclose(log);
    if (report)
        *report = buf;
    else
        free(buf);
    return rc;
}

static void test_jsonl(void **s)
{
    (void)s;
    const char *p = write_file("a.jsonl",
                               "{\"text\": \"good\", \"label\": \"pos\"}\n"
                               "\n"
                               "{\"text\": \"bad\", \"label\": \"neg\", \"extra\": 1}\n"
                               "{\"sentence\": \"ignored: text wins\", \"text\": \"meh\", \"label\": 1}\n");
    trn_data_opts o = {.label_map = "pos=positive,neg=negative"};
    trn_labels l = {0};
    trn_dataset d;
    eng_error err;
    assert_int_equal(load(p, &o, &l, &d, NULL, &err), 0);
    assert_int_equal(d.n, 3);
    assert_string_equal(d.ex[0].text, "good");
    assert_int_equal(d.ex[0].line, 1);
    assert_int_equal(d.ex[1].line, 3);
    assert_int_equal(l.n, 3);
    assert_string_equal(l.name[d.ex[0].label], "positive");
    assert_string_equal(l.name[d.ex[1].label], "negative");
    assert_string_equal(l.name[d.ex[2].label], "1"); /* integer labels become names */
    trn_dataset_free(&d);
    trn_labels_free(&l);
}

static void test_jsonl_bad_rows(void **s)
{
    (void)s;
    const char *p = write_file("bad.jsonl",
                               "{\"text\": \"fine\", \"label\": \"a\"}\n"
                               "{\"text\": \"no label\"}\n"
                               "not json\n"
                               "{\"text\": \"\", \"label\": \"a\"}\n"
                               "{\"text\": 5, \"label\": \"a\"}\n"
                               "{\"text\": \"fine too\", \"label\": \"b\"}\n");
    trn_data_opts o = {.bad_rows = TRN_BAD_FAIL};
    trn_labels l = {0};
    trn_dataset d;
    eng_error err;
    /* fatal: the first bad row stops loading, named by file and line */
    assert_int_equal(load(p, &o, &l, &d, NULL, &err), ENG_EFORMAT);
    assert_non_null(strstr(err.msg, "bad.jsonl:2:"));
    assert_non_null(strstr(err.msg, "no label field"));
    trn_labels_free(&l);
    /* skip: every bad row is reported with its line, the rest is kept */
    o.bad_rows = TRN_BAD_SKIP;
    char *rep;
    assert_int_equal(load(p, &o, &l, &d, &rep, &err), 0);
    assert_int_equal(d.n, 2);
    assert_int_equal(d.bad, 4);
    assert_non_null(strstr(rep, "bad.jsonl:2: no label field"));
    assert_non_null(strstr(rep, "bad.jsonl:3: not a JSON object"));
    assert_non_null(strstr(rep, "bad.jsonl:4: empty text"));
    assert_non_null(strstr(rep, "bad.jsonl:5: field 'text' is not a string"));
    free(rep);
    trn_dataset_free(&d);
    trn_labels_free(&l);
}

static void test_unknown_labels(void **s)
{
    (void)s;
    const char *p = write_file("u.csv", "text,label\nhello,x\nworld,z\n");
    trn_labels l = {0};
    assert_true(trn_labels_add(&l, "x") >= 0);
    assert_true(trn_labels_add(&l, "y") >= 0);
    l.fixed = 1;
    trn_data_opts o = {0};
    trn_dataset d;
    eng_error err;
    assert_int_equal(load(p, &o, &l, &d, NULL, &err), ENG_EFORMAT);
    assert_non_null(strstr(err.msg, "u.csv:3: unknown label 'z'"));
    o.bad_rows = TRN_BAD_SKIP;
    char *rep;
    assert_int_equal(load(p, &o, &l, &d, &rep, &err), 0);
    assert_int_equal(d.n, 1);
    assert_non_null(strstr(rep, "u.csv:3: unknown label 'z'"));
    assert_int_equal(l.n, 2); /* a fixed set does not grow */
    free(rep);
    trn_dataset_free(&d);
    trn_labels_free(&l);
}

static void test_csv_quoting(void **s)
{
    (void)s;
    const char *p = write_file("q.csv",
                               "\xEF\xBB\xBFsentence,label\r\n"
                               "\"A stirring, funny film\",pos\r\n"
                               "\"He said \"\"no\"\"\nand left\",neg\r\n"
                               "plain,pos\r\n"
                               "too,many,fields\r\n"
                               "\"unterminated,neg\n");
    trn_data_opts o = {.bad_rows = TRN_BAD_SKIP};
    trn_labels l = {0};
    trn_dataset d;
    eng_error err;
    char *rep;
    assert_int_equal(load(p, &o, &l, &d, &rep, &err), 0);
    assert_int_equal(d.n, 3);
    assert_string_equal(d.ex[0].text, "A stirring, funny film");
    assert_string_equal(d.ex[1].text, "He said \"no\"\nand left");
    assert_int_equal(d.ex[1].line, 3);
    assert_int_equal(d.ex[2].line, 5); /* the quoted line break counts */
    assert_non_null(strstr(rep, "q.csv:6: 3 fields, the header has 2"));
    assert_non_null(strstr(rep, "q.csv:7: unterminated quoted field"));
    free(rep);
    trn_dataset_free(&d);
    trn_labels_free(&l);
}

static void test_tsv_and_columns(void **s)
{
    (void)s;
    const char *p = write_file("t.tsv", "id\tutt\tintent\n1\t\"quoted\" text\tbook\n2\tcancel it\tcancel\n");
    trn_data_opts o = {.text_col = "utt", .label_col = "intent"};
    trn_labels l = {0};
    trn_dataset d;
    eng_error err;
    assert_int_equal(load(p, &o, &l, &d, NULL, &err), 0);
    assert_int_equal(d.n, 2);
    assert_string_equal(d.ex[0].text, "\"quoted\" text"); /* TSV: no quoting */
    trn_dataset_free(&d);
    trn_labels_free(&l);
    o.label_col = "missing";
    assert_int_equal(load(p, &o, &l, &d, NULL, &err), ENG_EFORMAT);
    assert_non_null(strstr(err.msg, "no label column 'missing'"));
    trn_labels_free(&l);
}

static void test_empty_files(void **s)
{
    (void)s;
    trn_data_opts o = {.bad_rows = TRN_BAD_SKIP};
    trn_labels l = {0};
    trn_dataset d;
    eng_error err;
    assert_int_equal(load(write_file("e.csv", ""), &o, &l, &d, NULL, &err), ENG_EFORMAT);
    assert_non_null(strstr(err.msg, "empty"));
    assert_int_equal(load(write_file("h.csv", "text,label\n"), &o, &l, &d, NULL, &err),
                     ENG_EFORMAT);
    assert_non_null(strstr(err.msg, "no usable examples"));
    assert_int_equal(load(write_file("e.jsonl", "\n\n"), &o, &l, &d, NULL, &err), ENG_EFORMAT);
    assert_int_equal(load(write_file("allbad.jsonl", "{}\n"), &o, &l, &d, NULL, &err),
                     ENG_EFORMAT);
    assert_non_null(strstr(err.msg, "every row was bad"));
    assert_int_equal(load(tu_path("%s/absent.csv", dir), &o, &l, &d, NULL, &err), ENG_EIO);
    assert_int_equal(load(write_file("x.txt", "a"), &o, &l, &d, NULL, &err), ENG_EINVAL);
    assert_non_null(strstr(err.msg, "unknown format"));
    trn_labels_free(&l);
}

static void test_multi_label(void **s)
{
    (void)s;
    const char *p = write_file("m.jsonl", "{\"text\": \"a\", \"labels\": [\"x\", \"y\"]}\n"
                                          "{\"text\": \"b\", \"labels\": []}\n");
    trn_data_opts o = {.multi_label = 1};
    trn_labels l = {0};
    trn_dataset d;
    eng_error err;
    assert_int_equal(load(p, &o, &l, &d, NULL, &err), 0);
    assert_int_equal(d.n, 2);
    assert_int_equal(d.ex[0].labels, 3);
    assert_int_equal(d.ex[1].labels, 0);
    trn_dataset_free(&d);
    trn_labels_free(&l);
    o.multi_label = 0; /* a list without --multi-label is a bad row */
    assert_int_equal(load(p, &o, &l, &d, NULL, &err), ENG_EFORMAT);
    assert_non_null(strstr(err.msg, "m.jsonl:1:"));
    trn_labels_free(&l);
}

static void test_split(void **s)
{
    (void)s;
    char *content = malloc(200000);
    size_t w = (size_t)sprintf(content, "text,label\n");
    for (int i = 0; i < 1000; i++) /* labels a: 700, b: 250, c: 50 */
        w += (size_t)sprintf(content + w, "text %d,%s\n", i, i % 20 < 14 ? "a" : i % 20 < 19 ? "b" : "c");
    const char *p = write_file("s.csv", content);
    free(content);
    trn_data_opts o = {0};
    trn_labels l = {0};
    trn_dataset d, dev, d2, dev2;
    eng_error err;
    assert_int_equal(load(p, &o, &l, &d, NULL, &err), 0);
    assert_int_equal(trn_dataset_split(&d, 0.1, 42, &dev, &err), 0);
    assert_int_equal(d.n + dev.n, 1000);
    int per[3] = {0};
    for (int i = 0; i < dev.n; i++)
        per[dev.ex[i].label]++;
    assert_int_equal(per[trn_labels_find(&l, "a")], 70); /* stratified: 10 % of each */
    assert_int_equal(per[trn_labels_find(&l, "b")], 25);
    assert_int_equal(per[trn_labels_find(&l, "c")], 5);
    /* the same seed gives the same split; another seed another one */
    assert_int_equal(load(p, &o, &l, &d2, NULL, &err), 0);
    assert_int_equal(trn_dataset_split(&d2, 0.1, 42, &dev2, &err), 0);
    int same = 1;
    for (int i = 0; i < dev.n; i++)
        same &= strcmp(dev.ex[i].text, dev2.ex[i].text) == 0;
    assert_true(same);
    trn_dataset_free(&d2);
    trn_dataset_free(&dev2);
    assert_int_equal(load(p, &o, &l, &d2, NULL, &err), 0);
    assert_int_equal(trn_dataset_split(&d2, 0.1, 43, &dev2, &err), 0);
    same = 1;
    for (int i = 0; i < dev.n; i++)
        same &= strcmp(dev.ex[i].text, dev2.ex[i].text) == 0;
    assert_false(same);
    /* no example is in both */
    for (int i = 0; i < dev.n; i++)
        for (int j = 0; j < d.n; j++)
            assert_true(strcmp(dev.ex[i].text, d.ex[j].text) != 0);
    trn_dataset_free(&d), trn_dataset_free(&dev), trn_dataset_free(&d2), trn_dataset_free(&dev2);
    trn_labels_free(&l);
}

static void test_label_map_parse(void **s)
{
    (void)s;
    int n;
    char **m = trn_label_map_parse("pos=positive,neg=negative", &n);
    assert_non_null(m);
    assert_int_equal(n, 2);
    assert_string_equal(m[2], "neg");
    assert_string_equal(m[3], "negative");
    trn_label_map_free(m, n);
    assert_null(trn_label_map_parse("pos", &n));
    assert_null(trn_label_map_parse("=x", &n));
    assert_null(trn_label_map_parse("a=", &n));
}

static void test_metrics(void **s)
{
    (void)s;
    /* gold 0 0 1 1 2, predicted 0 1 1 1 0 */
    float logits[15] = {5, 0, 0, 0, 5, 0, 0, 5, 0, 0, 5, 0, 5, 0, 0};
    int gold[5] = {0, 0, 1, 1, 2};
    trn_metrics m;
    assert_int_equal(trn_metrics_compute(&m, logits, 5, 3, 0, gold, NULL), 0);
    assert_true(fabs(m.accuracy - 0.6) < 1e-12);
    /* F1: class 0 = 2*1/(2+1+1) = 0.5; class 1 = 2*2/(4+1+0) = 0.8; class 2 = 0 */
    assert_true(fabs(m.macro_f1 - (0.5 + 0.8 + 0.0) / 3) < 1e-12);
    assert_int_equal(m.confusion[0 * 3 + 1], 1);
    assert_int_equal(m.confusion[2 * 3 + 0], 1);
    const char *names[3] = {"a", "b", "c"};
    char *js = trn_metrics_json(&m, names, "dev");
    assert_non_null(strstr(js, "\"top_confusions\""));
    free(js);
    trn_metrics_free(&m);
}

TEST_GROUP(train_data)
{
    static const struct CMUnitTest t[] = {
        cmocka_unit_test_setup_teardown(test_jsonl, setup, teardown),
        cmocka_unit_test_setup_teardown(test_jsonl_bad_rows, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_labels, setup, teardown),
        cmocka_unit_test_setup_teardown(test_csv_quoting, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tsv_and_columns, setup, teardown),
        cmocka_unit_test_setup_teardown(test_empty_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_multi_label, setup, teardown),
        cmocka_unit_test_setup_teardown(test_split, setup, teardown),
        cmocka_unit_test(test_label_map_parse),
        cmocka_unit_test(test_metrics),
    };
    TEST_GROUP_RETURN(t);
}
