/* data.h - labelled text data for nlpd-train: JSONL, CSV and TSV files with named
 * columns, labels by name, bad rows reported as FILE:LINE and skipped or fatal. */
#ifndef NLPD_TRN_DATA_H
#define NLPD_TRN_DATA_H

#include <stdint.h>
#include <stdio.h>

#include "nlpd_engine.h"

typedef enum trn_format { TRN_FMT_AUTO = 0, TRN_FMT_JSONL, TRN_FMT_CSV, TRN_FMT_TSV } trn_format;

typedef enum trn_bad_rows {
    TRN_BAD_FAIL = 0, /* the first bad row stops loading (after reporting it) */
    TRN_BAD_SKIP,     /* every bad row is reported and left out; counted */
} trn_bad_rows;

/* The label set: names in id order. Grows while not `fixed`. */
typedef struct trn_labels {
    char **name;
    int n, cap;
    int fixed; /* unknown names are bad rows */
} trn_labels;

/* Adds name (copied) unless present; returns its id, or -1 (out of memory). */
int trn_labels_add(trn_labels *l, const char *name);
/* id of name, or -1. */
int trn_labels_find(const trn_labels *l, const char *name);
/* Sorts the names (byte order); remaps nothing: call before any example refers to ids. */
void trn_labels_sort(trn_labels *l);
void trn_labels_free(trn_labels *l);

typedef struct trn_example {
    char *text;
    char *pair;      /* second segment or NULL */
    int label;       /* single-label: class id */
    uint64_t labels; /* multi-label: bit per class (up to 64 classes) */
    int line;        /* line of the row in its file (1-based; the header is line 1 in CSV) */
} trn_example;

typedef struct trn_dataset {
    char *path;
    trn_example *ex;
    int n, cap;
    int bad;    /* rows reported and skipped */
} trn_dataset;

typedef struct trn_data_opts {
    trn_format format;
    const char *text_col;  /* NULL: text, sentence, sentence1, utterance, query, content */
    const char *pair_col;  /* NULL: none (sentence2 when the text column is sentence1) */
    const char *label_col; /* NULL: label, labels, category, intent, class, target */
    const char *label_map; /* "from=to,from=to": rename labels as read (NULL: none) */
    int multi_label;       /* label: JSON list, or names separated by '|' in CSV/TSV */
    trn_bad_rows bad_rows;
    FILE *log;             /* where bad rows are reported (stderr when NULL) */
} trn_data_opts;

/* Reads path into out. Labels are looked up in (or, unless fixed, added to) labels.
 * 0, or a negative ENG_E* code with err naming the file (and line). A file without
 * any usable example is an error. */
int trn_dataset_load(const char *path, const trn_data_opts *o, trn_labels *labels,
                     trn_dataset *out, eng_error *err);
void trn_dataset_free(trn_dataset *d);

/* Moves a seeded, label-stratified fraction of d into dev (frac in (0, 1)). Each label
 * with >= 2 examples gives round(frac * count) (at least 1) of them. */
int trn_dataset_split(trn_dataset *d, double frac, uint64_t seed, trn_dataset *dev,
                      eng_error *err);

/* Parses a "from=to,..." label map; NULL on a malformed map. Entries come in pairs:
 * map[2i] -> map[2i+1], *n pairs. Free with trn_label_map_free. */
char **trn_label_map_parse(const char *spec, int *n);
void trn_label_map_free(char **map, int n);

/* splitmix64 step, shared by shuffles. */
uint64_t trn_rand(uint64_t *state);

#endif
