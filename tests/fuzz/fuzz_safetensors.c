/* fuzz_safetensors.c - libFuzzer target for the safetensors reader
 * (engine/safetensors.c): the input is a whole file.
 *
 * Contracts on every accepted file: every tensor's data lies inside the file
 * and no two overlap; eng_st_find finds each by its name, and nothing under a
 * name that is not there; numel is the product of the shape and matches the
 * bytes for known dtypes; floating tensors convert (eng_st_to_f32) and others
 * are refused with ENG_EUNSUPPORTED. Refusals carry a message. */
#include "fuzz_common.h"

#include "nlpd_engine.h"
#include "core/safetensors.h"

static char path[4096];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    snprintf(path, sizeof path, "%s/model.safetensors", fz_scratch());
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_write(path, data, size);
    eng_safetensors *st = (eng_safetensors *)1;
    eng_error err = {0};
    int rc = eng_st_open(path, &st, &err);
    if (rc) {
        CHECK(st == NULL, "failed open left *out set%s", "");
        CHECK(err.msg[0] != 0, "refusal %d without a message", rc);
        return 0;
    }
    const char *lo = (const char *)st->map, *hi = lo + st->map_len;
    for (int i = 0; i < st->count; i++) {
        const eng_st_tensor *t = &st->tensors[i];
        CHECK(t->name != NULL, "tensor %d without a name", i);
        CHECK(eng_st_find(st, t->name) == t, "eng_st_find(\"%s\") is not the tensor", t->name);
        const char *d = t->data;
        CHECK(d >= lo && d + t->nbytes <= hi, "tensor '%s' outside the file", t->name);
        int64_t numel = 1;
        for (int k = 0; k < t->ndim; k++) {
            CHECK(t->shape[k] >= 0, "negative dimension in '%s'", t->name);
            numel = t->shape[k] ? numel * t->shape[k] : 0;
        }
        CHECK(numel == t->numel, "'%s': numel %lld, shape gives %lld", t->name,
              (long long)t->numel, (long long)numel);
        size_t esz = eng_st_dtype_size(t->dtype);
        if (esz)
            CHECK(t->nbytes == (size_t)t->numel * esz, "'%s': %zu bytes for %lld x %zu", t->name,
                  t->nbytes, (long long)t->numel, esz);
        for (int j = 0; j < i; j++) {
            const eng_st_tensor *u = &st->tensors[j];
            if (!t->nbytes || !u->nbytes)
                continue;
            const char *a = t->data, *b = u->data;
            CHECK(a + t->nbytes <= b || b + u->nbytes <= a, "'%s' and '%s' overlap", t->name,
                  u->name);
            if (i > 64) /* the pairwise check is O(n^2): the first 64 suffice */
                break;
        }
        if (t->numel <= (1 << 16)) {
            float *buf = malloc(sizeof(float) * (size_t)(t->numel ? t->numel : 1));
            CHECK(buf != NULL, "malloc%s", "");
            int c = eng_st_to_f32(t, buf);
            int fl = t->dtype == ENG_ST_F32 || t->dtype == ENG_ST_F16 || t->dtype == ENG_ST_BF16 ||
                     t->dtype == ENG_ST_F64;
            CHECK(fl ? c == 0 : c == ENG_EUNSUPPORTED, "to_f32 of %s gave %d", t->dtype_name, c);
            free(buf);
        }
    }
    CHECK(eng_st_find(st, "\x01no such tensor") == NULL, "found a tensor that is not there%s", "");
    eng_st_close(st);
    return 0;
}
