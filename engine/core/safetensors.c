/* safetensors.c - mmap'd safetensors reader with strict validation. */
#include "core/safetensors.h"

#include <stdint.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cJSON.h>

#include "core/util.h"

/* Refuse absurd headers before allocating for them (real ones are < 1 MB). */
#define ST_MAX_HEADER (100u << 20)

static const struct {
    const char *name;
    eng_st_dtype dt;
    size_t size;
} dtypes[] = {
    {"F32", ENG_ST_F32, 4}, {"F16", ENG_ST_F16, 2}, {"BF16", ENG_ST_BF16, 2},
    {"F64", ENG_ST_F64, 8}, {"I64", ENG_ST_I64, 8}, {"I32", ENG_ST_I32, 4},
    {"I16", ENG_ST_I16, 2}, {"I8", ENG_ST_I8, 1},   {"U8", ENG_ST_U8, 1},
    {"BOOL", ENG_ST_BOOL, 1},
};

size_t eng_st_dtype_size(eng_st_dtype dt)
{
    for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++)
        if (dtypes[i].dt == dt)
            return dtypes[i].size;
    return 0;
}

static eng_st_dtype dtype_parse(const char *s)
{
    for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++)
        if (strcmp(dtypes[i].name, s) == 0)
            return dtypes[i].dt;
    return ENG_ST_UNKNOWN;
}

/* A JSON number that is an exact non-negative integer below 2^53. */
static int json_uint(const cJSON *j, int64_t *out)
{
    if (!cJSON_IsNumber(j))
        return -1;
    double d = j->valuedouble;
    if (!(d >= 0 && d <= 9007199254740992.0) || d != (double)(int64_t)d)
        return -1;
    *out = (int64_t)d;
    return 0;
}

static int parse_tensor(const eng_safetensors *st, const cJSON *entry, size_t data_len,
                        eng_st_tensor *t, const char *base, eng_error *err)
{
    const char *p = st->path, *name = entry->string;
    if (!cJSON_IsObject(entry))
        return eng_fail(err, ENG_EFORMAT, "%s: tensor '%s': entry is not an object", p, name);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(entry, "dtype");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(entry, "shape");
    const cJSON *offs = cJSON_GetObjectItemCaseSensitive(entry, "data_offsets");
    if (!cJSON_IsString(dt))
        return eng_fail(err, ENG_EFORMAT, "%s: tensor '%s': missing string 'dtype'", p, name);
    if (!cJSON_IsArray(shape))
        return eng_fail(err, ENG_EFORMAT, "%s: tensor '%s': missing array 'shape'", p, name);
    if (!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2)
        return eng_fail(err, ENG_EFORMAT, "%s: tensor '%s': 'data_offsets' must be [begin, end]",
                        p, name);
    t->name = strdup(name);
    if (!t->name)
        return eng_fail(err, ENG_ENOMEM, "%s: out of memory", p);
    snprintf(t->dtype_name, sizeof t->dtype_name, "%s", dt->valuestring);
    t->dtype = dtype_parse(dt->valuestring);
    t->ndim = cJSON_GetArraySize(shape);
    if (t->ndim > ENG_ST_MAX_DIMS)
        return eng_fail(err, ENG_EFORMAT, "%s: tensor '%s': %d dimensions (max %d)", p, name,
                        t->ndim, ENG_ST_MAX_DIMS);
    int64_t numel = 1;
    for (int i = 0; i < t->ndim; i++) {
        int64_t d;
        if (json_uint(cJSON_GetArrayItem(shape, i), &d) != 0)
            return eng_fail(err, ENG_EFORMAT, "%s: tensor '%s': shape[%d] is not a size", p,
                            name, i);
        t->shape[i] = d;
        if (d != 0 && numel > INT64_MAX / 16 / d)
            return eng_fail(err, ENG_EFORMAT, "%s: tensor '%s': shape too large", p, name);
        numel *= d;
    }
    t->numel = numel;
    int64_t begin, end;
    if (json_uint(cJSON_GetArrayItem(offs, 0), &begin) != 0 ||
        json_uint(cJSON_GetArrayItem(offs, 1), &end) != 0 || end < begin)
        return eng_fail(err, ENG_EFORMAT, "%s: tensor '%s': invalid data_offsets", p, name);
    if ((uint64_t)end > data_len)
        return eng_fail(err, ENG_EFORMAT,
                        "%s: tensor '%s': data [%lld, %lld) beyond the end of the data "
                        "(%zu bytes; file truncated?)",
                        p, name, (long long)begin, (long long)end, data_len);
    size_t esz = eng_st_dtype_size(t->dtype);
    if (esz && (uint64_t)(end - begin) != (uint64_t)numel * esz)
        return eng_fail(err, ENG_EFORMAT,
                        "%s: tensor '%s': %lld bytes of data for %lld %s elements (expected %lld)",
                        p, name, (long long)(end - begin), (long long)numel, t->dtype_name,
                        (long long)(numel * (int64_t)esz));
    t->data = base + begin;
    t->nbytes = (size_t)(end - begin);
    return ENG_OK;
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp((*(const eng_st_tensor *const *)a)->name, (*(const eng_st_tensor *const *)b)->name);
}

static int cmp_offset(const void *a, const void *b)
{
    const char *x = (*(const eng_st_tensor *const *)a)->data;
    const char *y = (*(const eng_st_tensor *const *)b)->data;
    return x < y ? -1 : x > y;
}

static int parse_header(eng_safetensors *st, const char *json, size_t json_len,
                        const char *base, size_t data_len, eng_error *err)
{
    cJSON *root = cJSON_ParseWithLength(json, json_len);
    if (!root)
        return eng_fail(err, ENG_EFORMAT, "%s: header is not valid JSON", st->path);
    int rc = ENG_OK;
    if (!cJSON_IsObject(root)) {
        rc = eng_fail(err, ENG_EFORMAT, "%s: header is not a JSON object", st->path);
        goto done;
    }
    int n = 0;
    for (const cJSON *e = root->child; e; e = e->next)
        n += strcmp(e->string, "__metadata__") != 0;
    st->tensors = calloc(n ? (size_t)n : 1, sizeof *st->tensors);
    if (!st->tensors) {
        rc = eng_fail(err, ENG_ENOMEM, "%s: out of memory", st->path);
        goto done;
    }
    for (const cJSON *e = root->child; e; e = e->next) {
        if (strcmp(e->string, "__metadata__") == 0)
            continue;
        rc = parse_tensor(st, e, data_len, &st->tensors[st->count], base, err);
        st->count++; /* counted even on failure so close() frees its name */
        if (rc)
            goto done;
    }
    /* One sort by name (duplicates become neighbours; lookups binary search)
     * and one by offset (overlaps become neighbours): O(n log n), not O(n^2). */
    st->by_name = malloc(sizeof *st->by_name * (n ? (size_t)n : 1));
    const eng_st_tensor **by_off = malloc(sizeof *by_off * (n ? (size_t)n : 1));
    if (!st->by_name || !by_off) {
        free(by_off);
        rc = eng_fail(err, ENG_ENOMEM, "%s: out of memory", st->path);
        goto done;
    }
    for (int i = 0; i < st->count; i++)
        st->by_name[i] = by_off[i] = &st->tensors[i];
    qsort(st->by_name, (size_t)st->count, sizeof *st->by_name, cmp_name);
    qsort(by_off, (size_t)st->count, sizeof *by_off, cmp_offset);
    for (int i = 1; i < st->count && !rc; i++)
        if (strcmp(st->by_name[i - 1]->name, st->by_name[i]->name) == 0)
            rc = eng_fail(err, ENG_EFORMAT, "%s: tensor '%s' appears twice", st->path,
                          st->by_name[i]->name);
    const eng_st_tensor *prev = NULL;
    for (int i = 0; i < st->count && !rc; i++) {
        const eng_st_tensor *t = by_off[i];
        if (t->nbytes == 0)
            continue;
        if (prev && (const char *)t->data < (const char *)prev->data + prev->nbytes)
            rc = eng_fail(err, ENG_EFORMAT, "%s: tensors '%s' and '%s' overlap in the data block",
                          st->path, prev->name, t->name);
        prev = t;
    }
    free(by_off);
done:
    cJSON_Delete(root);
    return rc;
}

int eng_st_open(const char *path, eng_safetensors **out, eng_error *err)
{
    int rc;
    *out = NULL;
    eng_safetensors *st = calloc(1, sizeof *st);
    if (!st || !(st->path = strdup(path))) {
        free(st);
        return eng_fail(err, ENG_ENOMEM, "%s: out of memory", path);
    }
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC); /* a FIFO must not block */
    if (fd < 0) {
        rc = eng_fail(err, ENG_EIO, "%s: %s", path, strerror(errno));
        goto fail_close;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        rc = eng_fail(err, ENG_EIO, "%s: not a regular file", path);
        goto fail_fd;
    }
    if (sb.st_size < 8) {
        rc = eng_fail(err, ENG_EFORMAT, "%s: %lld bytes, too short for a safetensors header",
                      path, (long long)sb.st_size);
        goto fail_fd;
    }
    st->map_len = (size_t)sb.st_size;
    st->map = mmap(NULL, st->map_len, PROT_READ, MAP_PRIVATE, fd, 0);
    if (st->map == MAP_FAILED) {
        st->map = NULL;
        rc = eng_fail(err, ENG_EIO, "%s: mmap: %s", path, strerror(errno));
        goto fail_fd;
    }
    close(fd);
    fd = -1;
    const unsigned char *b = st->map;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | b[i];
    if (hlen > ST_MAX_HEADER || hlen > st->map_len - 8) {
        rc = eng_fail(err, ENG_EFORMAT,
                      "%s: header length %llu exceeds the file (%zu bytes) or the %u-byte limit",
                      path, (unsigned long long)hlen, st->map_len, ST_MAX_HEADER);
        goto fail_close;
    }
    rc = parse_header(st, (const char *)b + 8, (size_t)hlen, (const char *)b + 8 + hlen,
                      st->map_len - 8 - (size_t)hlen, err);
    if (rc)
        goto fail_close;
    *out = st;
    return ENG_OK;
fail_fd:
    if (fd >= 0)
        close(fd);
fail_close:
    eng_st_close(st);
    return rc;
}

void eng_st_close(eng_safetensors *st)
{
    if (!st)
        return;
    for (int i = 0; i < st->count; i++)
        free(st->tensors[i].name);
    free(st->tensors);
    free(st->by_name);
    if (st->map)
        munmap(st->map, st->map_len);
    free(st->path);
    free(st);
}

const eng_st_tensor *eng_st_find(const eng_safetensors *st, const char *name)
{
    if (!st->by_name) { /* a set built by hand (the trainer's): in order, first match */
        for (int i = 0; i < st->count; i++)
            if (st->tensors[i].name && strcmp(st->tensors[i].name, name) == 0)
                return &st->tensors[i];
        return NULL;
    }
    int lo = 0, hi = st->count;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        int c = strcmp(st->by_name[mid]->name, name);
        if (c == 0)
            return st->by_name[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

float eng_bf16_to_f32(uint16_t b)
{
    uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

float eng_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff, u;
    if (exp == 0x1f) {
        u = sign | 0x7f800000u | (man << 13); /* inf / nan */
    } else if (exp != 0) {
        u = sign | ((exp + 112) << 23) | (man << 13);
    } else if (man == 0) {
        u = sign;
    } else { /* subnormal: normalise */
        int e = -1;
        do {
            e++;
            man <<= 1;
        } while (!(man & 0x400));
        u = sign | ((uint32_t)(112 - e) << 23) | ((man & 0x3ff) << 13);
    }
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* The mapping's whole pages inside t are dropped from memory (a read-only private file
 * mapping: touched again, they are read back from the file), so that loading a model
 * does not hold the file and its converted copy at once. */
static void release_pages(const eng_st_tensor *t)
{
    uintptr_t a = ((uintptr_t)t->data + 4095) & ~(uintptr_t)4095;
    uintptr_t e = ((uintptr_t)t->data + t->nbytes) & ~(uintptr_t)4095;
    if (e > a)
        madvise((void *)a, e - a, MADV_DONTNEED);
}

static int to_f32(const eng_st_tensor *t, float *dst)
{
    const unsigned char *s = t->data;
    switch (t->dtype) {
    case ENG_ST_F32:
        memcpy(dst, s, t->nbytes);
        return ENG_OK;
    case ENG_ST_F64:
        for (int64_t i = 0; i < t->numel; i++) {
            double d;
            memcpy(&d, s + 8 * i, 8);
            dst[i] = (float)d;
        }
        return ENG_OK;
    case ENG_ST_F16:
    case ENG_ST_BF16:
        for (int64_t i = 0; i < t->numel; i++) {
            uint16_t h = (uint16_t)(s[2 * i] | s[2 * i + 1] << 8);
            dst[i] = t->dtype == ENG_ST_F16 ? eng_f16_to_f32(h) : eng_bf16_to_f32(h);
        }
        return ENG_OK;
    default:
        return ENG_EUNSUPPORTED;
    }
}

int eng_st_to_f32(const eng_st_tensor *t, float *dst)
{
    int rc = to_f32(t, dst);
    if (rc == ENG_OK)
        release_pages(t);
    return rc;
}
