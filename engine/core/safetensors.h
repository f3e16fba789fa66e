/* safetensors.h - read-only, mmap'd access to a .safetensors file.
 * Format: u64 little-endian header length N, N bytes of JSON
 * {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}},
 * then the data block; offsets are relative to the data block. */
#ifndef NLPD_SAFETENSORS_H
#define NLPD_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "nlpd_engine.h"

#define ENG_ST_MAX_DIMS 8

typedef enum eng_st_dtype {
    ENG_ST_UNKNOWN = 0,
    ENG_ST_F32, ENG_ST_F16, ENG_ST_BF16, ENG_ST_F64,
    ENG_ST_I64, ENG_ST_I32, ENG_ST_I16, ENG_ST_I8, ENG_ST_U8, ENG_ST_BOOL,
} eng_st_dtype;

typedef struct eng_st_tensor {
    char *name;
    eng_st_dtype dtype;
    char dtype_name[16];
    int ndim;
    int64_t shape[ENG_ST_MAX_DIMS];
    int64_t numel;
    const void *data; /* inside the mapping; NOT necessarily aligned */
    size_t nbytes;
} eng_st_tensor;

typedef struct eng_safetensors {
    char *path;
    void *map;
    size_t map_len;
    eng_st_tensor *tensors; /* in header order */
    int count;
    const eng_st_tensor **by_name; /* sorted by name (eng_st_find: binary search); NULL in a
                                      set built by hand: eng_st_find scans, first match wins */
} eng_safetensors;

/* Open and validate a file: a regular file (a FIFO is refused without blocking),
 * header bounds, JSON, dtypes, shapes vs byte sizes, offsets inside the data
 * block, no two tensors with one name or overlapping data (so the tensors'
 * bytes add up to at most the file's). Errors name the file and the tensor.
 * Cost O(header log header). */
int eng_st_open(const char *path, eng_safetensors **out, eng_error *err);
void eng_st_close(eng_safetensors *st);

/* Tensor by name, or NULL (O(log count); O(count) without by_name). */
const eng_st_tensor *eng_st_find(const eng_safetensors *st, const char *name);

/* Bytes per element of a dtype (0 for unknown). */
size_t eng_st_dtype_size(eng_st_dtype dt);

/* Convert a floating tensor (F32/F16/BF16/F64) to fp32 into dst[numel], then drop the
 * tensor's pages of the file mapping from memory (read back from the file if touched
 * again). ENG_EUNSUPPORTED for other dtypes. */
int eng_st_to_f32(const eng_st_tensor *t, float *dst);

/* fp16 / bf16 bit patterns to float (exact). */
float eng_f16_to_f32(uint16_t h);
float eng_bf16_to_f32(uint16_t b);

#endif
