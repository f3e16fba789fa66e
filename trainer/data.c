/* data.c - reading labelled text (see data.h).
 *
 * CSV follows RFC 4180 (quoted fields may hold commas, doubled quotes and line
 * breaks; a record's line is the line it starts on). TSV is tab-separated
 * without quoting, as GLUE's files are. JSONL is one JSON object per line.
 * Every problem with a row is reported as "FILE:LINE: reason"; nothing is
 * dropped silently. */
#include "data.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

/* ------------------------------------------------------------------ labels */

int trn_labels_find(const trn_labels *l, const char *name)
{
    for (int i = 0; i < l->n; i++)
        if (strcmp(l->name[i], name) == 0)
            return i;
    return -1;
}

int trn_labels_add(trn_labels *l, const char *name)
{
    int id = trn_labels_find(l, name);
    if (id >= 0)
        return id;
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 16;
        char **p = realloc(l->name, (size_t)cap * sizeof *p);
        if (!p)
            return -1;
        l->name = p;
        l->cap = cap;
    }
    if (!(l->name[l->n] = strdup(name)))
        return -1;
    return l->n++;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

void trn_labels_sort(trn_labels *l)
{
    if (l->n > 1)
        qsort(l->name, (size_t)l->n, sizeof *l->name, cmp_str);
}

void trn_labels_free(trn_labels *l)
{
    for (int i = 0; i < l->n; i++)
        free(l->name[i]);
    free(l->name);
    memset(l, 0, sizeof *l);
}

char **trn_label_map_parse(const char *spec, int *n)
{
    *n = 0;
    if (!spec || !*spec)
        return NULL;
    char *s = strdup(spec);
    if (!s)
        return NULL;
    int cap = 1;
    for (const char *p = spec; *p; p++)
        cap += *p == ',';
    char **map = calloc((size_t)cap * 2, sizeof *map);
    int ok = map != NULL;
    char *save = NULL;
    for (char *tok = strtok_r(s, ",", &save); ok && tok; tok = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(tok, '=');
        if (!eq || eq == tok || !eq[1]) {
            ok = 0;
            break;
        }
        *eq = 0;
        map[2 * *n] = strdup(tok);
        map[2 * *n + 1] = strdup(eq + 1);
        (*n)++;
        ok = map[2 * *n - 2] && map[2 * *n - 1];
    }
    free(s);
    if (!ok || *n == 0) {
        trn_label_map_free(map, *n);
        *n = 0;
        return NULL;
    }
    return map;
}

void trn_label_map_free(char **map, int n)
{
    for (int i = 0; map && i < 2 * n; i++)
        free(map[i]);
    free(map);
}

uint64_t trn_rand(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* ----------------------------------------------------------------- loading */

typedef struct loader {
    const trn_data_opts *o;
    trn_labels *labels;
    trn_dataset *d;
    eng_error *err;
    char **map;
    int nmap;
    FILE *log;
} loader;

/* Reports a bad row; returns 0 to go on (skip) or ENG_EFORMAT to stop. */
static int bad_row(loader *L, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int bad_row(loader *L, int line, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (L->o->bad_rows == TRN_BAD_SKIP) {
        fprintf(L->log, "%s:%d: %s (row skipped)\n", L->d->path, line, msg);
        L->d->bad++;
        return 0;
    }
    return eng_fail(L->err, ENG_EFORMAT, "%s:%d: %s (use --on-bad-row skip to leave such rows out)",
                    L->d->path, line, msg);
}

static const char *map_label(const loader *L, const char *name)
{
    for (int i = 0; i < L->nmap; i++)
        if (strcmp(L->map[2 * i], name) == 0)
            return L->map[2 * i + 1];
    return name;
}

/* Label name -> id (adding it unless the set is fixed); -1 unknown, -2 no memory. */
static int label_id(loader *L, const char *raw)
{
    const char *name = map_label(L, raw);
    if (L->labels->fixed)
        return trn_labels_find(L->labels, name);
    int id = trn_labels_add(L->labels, name);
    return id < 0 ? -2 : id;
}

static void trim(char *s)
{
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1]))
        s[--n] = 0;
    size_t i = 0;
    while (s[i] && isspace((unsigned char)s[i]))
        i++;
    if (i)
        memmove(s, s + i, n - i + 1);
}

/* Adds one example; takes ownership of text/pair. label_names: one name, or
 * several (multi-label) separated by sep. Returns 0, or an error to stop. */
static int add_example(loader *L, int line, char *text, char *pair, const char *label_field,
                       char sep)
{
    int rc = 0;
    trn_example e = {.text = text, .pair = pair, .line = line};
    char *lab = strdup(label_field ? label_field : "");
    if (!lab) {
        rc = eng_fail(L->err, ENG_ENOMEM, "out of memory");
        goto out;
    }
    trim(lab);
    if (!text || !*text) {
        rc = bad_row(L, line, "empty text");
        goto out;
    }
    if (!*lab && !L->o->multi_label) {
        rc = bad_row(L, line, "empty label");
        goto out;
    }
    if (L->o->multi_label) {
        char *save = NULL, sepstr[2] = {sep, 0};
        for (char *t = strtok_r(lab, sepstr, &save); t; t = strtok_r(NULL, sepstr, &save)) {
            trim(t);
            if (!*t)
                continue;
            int id = label_id(L, t);
            if (id == -2) {
                rc = eng_fail(L->err, ENG_ENOMEM, "out of memory");
                goto out;
            }
            if (id < 0 || id >= 64) {
                rc = bad_row(L, line, id < 0 ? "unknown label '%s'" : "label '%s' is past the "
                             "64 labels multi-label training supports", t);
                goto out;
            }
            e.labels |= 1ULL << id;
        }
    } else {
        int id = label_id(L, lab);
        if (id == -2) {
            rc = eng_fail(L->err, ENG_ENOMEM, "out of memory");
            goto out;
        }
        if (id < 0) {
            rc = bad_row(L, line, "unknown label '%s' (not among the %s labels)", lab,
                         L->labels->n ? "known" : "given");
            goto out;
        }
        e.label = id;
    }
    if (L->d->n == L->d->cap) {
        int cap = L->d->cap ? 2 * L->d->cap : 1024;
        trn_example *p = realloc(L->d->ex, (size_t)cap * sizeof *p);
        if (!p) {
            rc = eng_fail(L->err, ENG_ENOMEM, "out of memory");
            goto out;
        }
        L->d->ex = p;
        L->d->cap = cap;
    }
    L->d->ex[L->d->n++] = e;
    free(lab);
    return 0;
out:
    free(lab);
    free(text);
    free(pair);
    return rc;
}

/* --------------------------------------------------------------- JSONL */

static const char *const text_keys[] = {"text", "sentence", "sentence1", "utterance", "query",
                                        "content", NULL};
static const char *const label_keys[] = {"label", "labels", "category", "intent", "class",
                                         "target", NULL};

static const cJSON *json_field(const cJSON *o, const char *want, const char *const *auto_keys,
                               const char **used)
{
    if (want) {
        *used = want;
        return cJSON_GetObjectItemCaseSensitive(o, want);
    }
    for (int i = 0; auto_keys[i]; i++) {
        const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, auto_keys[i]);
        if (j) {
            *used = auto_keys[i];
            return j;
        }
    }
    *used = auto_keys[0];
    return NULL;
}

/* A label value as text: strings as they are, integers as digits. */
static int json_label_text(const cJSON *j, char *buf, size_t cap)
{
    if (cJSON_IsString(j)) {
        snprintf(buf, cap, "%s", j->valuestring);
        return 0;
    }
    if (cJSON_IsNumber(j) && j->valuedouble > -9.2e18 && j->valuedouble < 9.2e18 &&
        j->valuedouble == (double)(long long)j->valuedouble) { /* range first: no UB cast */
        snprintf(buf, cap, "%lld", (long long)j->valuedouble);
        return 0;
    }
    if (cJSON_IsBool(j)) {
        snprintf(buf, cap, "%s", cJSON_IsTrue(j) ? "true" : "false");
        return 0;
    }
    return -1;
}

static int load_jsonl(loader *L, FILE *f)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int lineno = 0, rc = 0;
    while (!rc && (len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        char *p = line;
        while (*p && isspace((unsigned char)*p))
            p++;
        if (!*p)
            continue; /* blank lines are not rows */
        cJSON *o = cJSON_Parse(p);
        if (!cJSON_IsObject(o)) {
            cJSON_Delete(o);
            rc = bad_row(L, lineno, "not a JSON object");
            continue;
        }
        const char *tk, *pk = NULL, *lk;
        const cJSON *t = json_field(o, L->o->text_col, text_keys, &tk);
        const cJSON *pr = NULL;
        if (L->o->pair_col)
            pr = cJSON_GetObjectItemCaseSensitive(o, pk = L->o->pair_col);
        else if (strcmp(tk, "sentence1") == 0)
            pr = cJSON_GetObjectItemCaseSensitive(o, pk = "sentence2");
        const cJSON *lab = json_field(o, L->o->label_col, label_keys, &lk);
        char lbuf[1024] = "";
        if (!cJSON_IsString(t))
            rc = bad_row(L, lineno, t ? "field '%s' is not a string" : "no field '%s'", tk);
        else if (pk && L->o->pair_col && !cJSON_IsString(pr))
            rc = bad_row(L, lineno, pr ? "field '%s' is not a string" : "no field '%s'", pk);
        else if (!lab)
            rc = bad_row(L, lineno, "no label field '%s'", lk);
        else if (cJSON_IsArray(lab)) {
            if (!L->o->multi_label)
                rc = bad_row(L, lineno, "label '%s' is a list (use --multi-label)", lk);
            else {
                size_t w = 0;
                const cJSON *x;
                cJSON_ArrayForEach(x, lab) {
                    char one[256];
                    if (json_label_text(x, one, sizeof one) != 0 || strchr(one, '\x1f')) {
                        w = (size_t)-1;
                        break;
                    }
                    w += (size_t)snprintf(lbuf + w, sizeof lbuf - w, "%s\x1f", one);
                    if (w >= sizeof lbuf) {
                        w = (size_t)-1;
                        break;
                    }
                }
                if (w == (size_t)-1)
                    rc = bad_row(L, lineno, "label list '%s' holds something other than names",
                                 lk);
                else
                    rc = add_example(L, lineno, strdup(t->valuestring),
                                     pr && cJSON_IsString(pr) ? strdup(pr->valuestring) : NULL,
                                     lbuf, '\x1f');
                cJSON_Delete(o);
                continue;
            }
        } else if (json_label_text(lab, lbuf, sizeof lbuf) != 0)
            rc = bad_row(L, lineno, "label '%s' is neither a string nor an integer", lk);
        else {
            char *text = strdup(t->valuestring);
            char *pair = pr && cJSON_IsString(pr) ? strdup(pr->valuestring) : NULL;
            if (!text || (pr && cJSON_IsString(pr) && !pair))
                rc = eng_fail(L->err, ENG_ENOMEM, "out of memory");
            else
                rc = add_example(L, lineno, text, pair, lbuf, L->o->multi_label ? '|' : 0);
        }
        cJSON_Delete(o);
    }
    free(line);
    return rc;
}

/* ------------------------------------------------------------ CSV / TSV */

typedef struct record {
    char **f;
    int n, cap;
    int line;  /* first line */
    int bad;   /* unterminated quote etc. */
} record;

typedef struct sbuf {
    char *s;
    size_t n, cap;
} sbuf;

static int sb_put(sbuf *b, char c)
{
    if (b->n + 1 >= b->cap) {
        size_t cap = b->cap ? 2 * b->cap : 256;
        char *p = realloc(b->s, cap);
        if (!p)
            return -1;
        b->s = p;
        b->cap = cap;
    }
    b->s[b->n++] = c;
    b->s[b->n] = 0;
    return 0;
}

static int rec_push(record *r, sbuf *b)
{
    if (r->n == r->cap) {
        int cap = r->cap ? 2 * r->cap : 8;
        char **p = realloc(r->f, (size_t)cap * sizeof *p);
        if (!p)
            return -1;
        r->f = p;
        r->cap = cap;
    }
    char *s = strdup(b->s ? b->s : "");
    if (!s)
        return -1;
    r->f[r->n++] = s;
    b->n = 0;
    if (b->s)
        b->s[0] = 0;
    return 0;
}

static void rec_clear(record *r)
{
    for (int i = 0; i < r->n; i++)
        free(r->f[i]);
    r->n = 0;
    r->bad = 0;
}

/* Reads one record; 1 read, 0 end of file, -1 out of memory. *lineno counts lines. */
static int read_record(FILE *f, char delim, int quoting, record *r, int *lineno)
{
    sbuf b = {0};
    rec_clear(r);
    int c = fgetc(f);
    if (c == EOF)
        return 0;
    r->line = ++*lineno;
    int inq = 0, at_start = 1, rc = 1;
    for (;; c = fgetc(f)) {
        if (c == EOF) {
            if (inq)
                r->bad = 1; /* unterminated quoted field */
            break;
        }
        if (inq) {
            if (c == '"') {
                int d = fgetc(f);
                if (d == '"') {
                    if (sb_put(&b, '"'))
                        goto oom;
                    continue;
                }
                inq = 0;
                if (d == EOF)
                    break;
                c = d; /* fall through to the unquoted handling of d */
            } else {
                if (c == '\n')
                    ++*lineno;
                if (sb_put(&b, (char)c))
                    goto oom;
                continue;
            }
        }
        if (c == '"' && quoting && at_start) {
            inq = 1;
            at_start = 0;
            continue;
        }
        if (c == delim) {
            if (rec_push(r, &b))
                goto oom;
            at_start = 1;
            continue;
        }
        if (c == '\n')
            break;
        if (c == '\r') {
            int d = fgetc(f);
            if (d != '\n' && d != EOF)
                ungetc(d, f);
            break;
        }
        at_start = 0;
        if (sb_put(&b, (char)c))
            goto oom;
    }
    if (rec_push(r, &b))
        goto oom;
    free(b.s);
    return rc;
oom:
    free(b.s);
    return -1;
}

static int find_col(const record *hdr, const char *want, const char *const *auto_keys,
                    const char **used)
{
    for (int k = 0; want ? k < 1 : auto_keys[k] != NULL; k++) {
        const char *name = want ? want : auto_keys[k];
        for (int i = 0; i < hdr->n; i++)
            if (strcmp(hdr->f[i], name) == 0) {
                *used = name;
                return i;
            }
    }
    *used = want ? want : auto_keys[0];
    return -1;
}

static int load_delimited(loader *L, FILE *f, char delim)
{
    int quoting = delim == ',';
    record hdr = {0}, r = {0};
    int lineno = 0, rc = 0, got;
    got = read_record(f, delim, quoting, &hdr, &lineno);
    if (got < 0) {
        rc = eng_fail(L->err, ENG_ENOMEM, "out of memory");
        goto done;
    }
    if (got == 0) {
        rc = eng_fail(L->err, ENG_EFORMAT, "%s: the file is empty (expected a header row naming "
                      "the columns)", L->d->path);
        goto done;
    }
    if (hdr.n > 0 && strncmp(hdr.f[0], "\xEF\xBB\xBF", 3) == 0) /* UTF-8 BOM */
        memmove(hdr.f[0], hdr.f[0] + 3, strlen(hdr.f[0]) - 2);
    for (int i = 0; i < hdr.n; i++)
        trim(hdr.f[i]);
    const char *tk, *lk, *pk = NULL;
    int tc = find_col(&hdr, L->o->text_col, text_keys, &tk);
    int lc = find_col(&hdr, L->o->label_col, label_keys, &lk);
    int pc = -1;
    if (L->o->pair_col) {
        static const char *const none[] = {NULL};
        pc = find_col(&hdr, L->o->pair_col, none, &pk);
        if (pc < 0) {
            rc = eng_fail(L->err, ENG_EFORMAT, "%s:1: no column '%s' in the header", L->d->path,
                          L->o->pair_col);
            goto done;
        }
    } else if (tc >= 0 && strcmp(tk, "sentence1") == 0) {
        static const char *const s2[] = {"sentence2", NULL};
        pc = find_col(&hdr, NULL, s2, &pk);
    }
    if (tc < 0 || lc < 0) {
        rc = eng_fail(L->err, ENG_EFORMAT, "%s:1: no %s column '%s' in the header (columns: %d; "
                      "name them with --%s-column)", L->d->path, tc < 0 ? "text" : "label",
                      tc < 0 ? tk : lk, hdr.n, tc < 0 ? "text" : "label");
        goto done;
    }
    while (!rc && (got = read_record(f, delim, quoting, &r, &lineno)) > 0) {
        if (r.n == 1 && r.f[0][0] == 0)
            continue; /* blank line */
        if (r.bad) {
            rc = bad_row(L, r.line, "unterminated quoted field");
            continue;
        }
        if (r.n != hdr.n) {
            rc = bad_row(L, r.line, "%d fields, the header has %d", r.n, hdr.n);
            continue;
        }
        char *text = strdup(r.f[tc]);
        char *pair = pc >= 0 ? strdup(r.f[pc]) : NULL;
        if (!text || (pc >= 0 && !pair)) {
            free(text);
            free(pair);
            rc = eng_fail(L->err, ENG_ENOMEM, "out of memory");
            break;
        }
        rc = add_example(L, r.line, text, pair, r.f[lc], '|');
    }
    if (got < 0)
        rc = eng_fail(L->err, ENG_ENOMEM, "out of memory");
done:
    rec_clear(&hdr);
    rec_clear(&r);
    free(hdr.f);
    free(r.f);
    return rc;
}

/* ------------------------------------------------------------------- API */

static trn_format guess_format(const char *path)
{
    const char *dot = strrchr(path, '.');
    if (dot && (strcasecmp(dot, ".jsonl") == 0 || strcasecmp(dot, ".json") == 0 ||
                strcasecmp(dot, ".ndjson") == 0))
        return TRN_FMT_JSONL;
    if (dot && (strcasecmp(dot, ".tsv") == 0 || strcasecmp(dot, ".tab") == 0))
        return TRN_FMT_TSV;
    if (dot && strcasecmp(dot, ".csv") == 0)
        return TRN_FMT_CSV;
    return TRN_FMT_AUTO;
}

int trn_dataset_load(const char *path, const trn_data_opts *o, trn_labels *labels,
                     trn_dataset *out, eng_error *err)
{
    memset(out, 0, sizeof *out);
    trn_format fmt = o->format ? o->format : guess_format(path);
    if (fmt == TRN_FMT_AUTO)
        return eng_fail(err, ENG_EINVAL, "%s: unknown format (name it .jsonl, .csv or .tsv, or use "
                        "--format)", path);
    if (!(out->path = strdup(path)))
        return eng_fail(err, ENG_ENOMEM, "out of memory");
    loader L = {.o = o, .labels = labels, .d = out, .err = err, .log = o->log ? o->log : stderr};
    if (o->label_map && !(L.map = trn_label_map_parse(o->label_map, &L.nmap))) {
        trn_dataset_free(out);
        return eng_fail(err, ENG_EINVAL, "label map '%s' is malformed (expected from=to,from=to)",
                        o->label_map);
    }
    FILE *f = fopen(path, "rb");
    int rc;
    if (!f) {
        rc = eng_fail(err, ENG_EIO, "%s: %s", path, strerror(errno));
    } else {
        rc = fmt == TRN_FMT_JSONL ? load_jsonl(&L, f)
                                  : load_delimited(&L, f, fmt == TRN_FMT_TSV ? '\t' : ',');
        if (!rc && ferror(f))
            rc = eng_fail(err, ENG_EIO, "%s: read error", path);
        fclose(f);
    }
    if (!rc && out->n == 0)
        rc = eng_fail(err, ENG_EFORMAT, "%s: no usable examples%s", path,
                      out->bad ? " (every row was bad)" : " (the file has no rows)");
    trn_label_map_free(L.map, L.nmap);
    if (rc)
        trn_dataset_free(out);
    return rc;
}

void trn_dataset_free(trn_dataset *d)
{
    for (int i = 0; i < d->n; i++) {
        free(d->ex[i].text);
        free(d->ex[i].pair);
    }
    free(d->ex);
    free(d->path);
    memset(d, 0, sizeof *d);
}

int trn_dataset_split(trn_dataset *d, double frac, uint64_t seed, trn_dataset *dev,
                      eng_error *err)
{
    memset(dev, 0, sizeof *dev);
    if (!(frac > 0 && frac < 1))
        return eng_fail(err, ENG_EINVAL, "the dev fraction %g must be in (0, 1)", frac);
    int maxl = 0;
    for (int i = 0; i < d->n; i++)
        maxl = d->ex[i].label + 1 > maxl ? d->ex[i].label + 1 : maxl;
    int *idx = malloc(sizeof *idx * (size_t)(d->n ? d->n : 1));
    char *to_dev = calloc((size_t)(d->n ? d->n : 1), 1);
    trn_example *keep = malloc(sizeof *keep * (size_t)(d->n ? d->n : 1));
    dev->ex = malloc(sizeof *dev->ex * (size_t)(d->n ? d->n : 1));
    dev->path = d->path ? strdup(d->path) : NULL;
    if (!idx || !to_dev || !keep || !dev->ex || !dev->path) {
        free(idx);
        free(to_dev);
        free(keep);
        trn_dataset_free(dev);
        return eng_fail(err, ENG_ENOMEM, "out of memory");
    }
    uint64_t st = seed ^ 0x73706c6974ULL; /* "split" */
    /* Per label: shuffle its examples (in file order first) and take the head. */
    for (int lab = 0; lab < maxl; lab++) {
        int m = 0;
        for (int i = 0; i < d->n; i++)
            if (d->ex[i].label == lab)
                idx[m++] = i;
        for (int i = m - 1; i > 0; i--) {
            int j = (int)(trn_rand(&st) % (uint64_t)(i + 1));
            int tmp = idx[i];
            idx[i] = idx[j];
            idx[j] = tmp;
        }
        int take = m >= 2 ? (int)(frac * m + 0.5) : 0;
        if (m >= 2 && take < 1)
            take = 1;
        if (take >= m)
            take = m - 1;
        for (int i = 0; i < take; i++)
            to_dev[idx[i]] = 1;
    }
    int nk = 0;
    for (int i = 0; i < d->n; i++) {
        if (to_dev[i])
            dev->ex[dev->n++] = d->ex[i];
        else
            keep[nk++] = d->ex[i];
    }
    memcpy(d->ex, keep, sizeof *keep * (size_t)nk);
    d->n = nk;
    dev->cap = dev->n;
    free(idx);
    free(to_dev);
    free(keep);
    if (dev->n == 0)
        return eng_fail(err, ENG_EINVAL, "%s: too few examples per label for a dev split",
                        d->path ? d->path : "training data");
    return ENG_OK;
}
