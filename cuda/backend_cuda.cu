/* backend_cuda.cu - the CUDA backend's glue: registry entry, device memory, copies,
 * the ops tables, and error handling. Each backend instance (one per worker) owns a
 * stream and a cuBLAS handle on its device; the engine's per-context arena is one
 * device allocation of that instance. A CUDA error marks the instance unhealthy: every
 * later op is skipped and synchronize/upload/download return ENG_EBACKEND with the
 * first error kept as the reason; nothing aborts. A sticky error (cu_error_sticky) also
 * breaks every other instance in the process: fault_sticky says so. Ops not implemented here are NULL
 * in the tables ("not supported"). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cu_common.cuh"

#ifdef NLPD_CUDA_EMU
#define CU_REG_SYMBOL eng_cuda_emu_backend_reg
#define CU_REG_NAME "cuda-emu"
#else
#define CU_REG_SYMBOL eng_cuda_backend_reg
#define CU_REG_NAME "cuda"
#endif

namespace CU_NS {

int cu_error_sticky(cudaError_t rc)
{
    /* The errors the CUDA runtime documents as leaving the process in an inconsistent
     * state ("to continue using CUDA, the process must be terminated and relaunched"),
     * and uncorrectable ECC / NVLink errors. Newer codes by number: older toolkits
     * lack their names. */
    switch ((int)rc) {
    case cudaErrorECCUncorrectable:
    case cudaErrorNvlinkUncorrectable:
    case 226: /* cudaErrorContained: a hardware error contained by the GPU */
    case cudaErrorIllegalAddress:
    case cudaErrorLaunchTimeout:
    case cudaErrorAssert:
    case cudaErrorHardwareStackError:
    case cudaErrorIllegalInstruction:
    case cudaErrorMisalignedAddress:
    case cudaErrorInvalidAddressSpace:
    case cudaErrorInvalidPc:
    case cudaErrorLaunchFailure:
    case 721: /* cudaErrorTensorMemoryLeak */
    case 810: /* cudaErrorMpsClientTerminated */
    case 911: /* cudaErrorExternalDevice */
        return 1;
    default:
        return 0;
    }
}

/* Records a fault: the first one, or a sticky one after a fault that was not. */
static void record(cu_backend *cb, int sticky, const char *what, const char *detail)
{
    if (!cb->healthy && (cb->sticky || !sticky))
        return;
    cb->healthy = 0;
    cb->sticky = sticky;
    snprintf(cb->why, sizeof cb->why, "%s: %s", what, detail);
}

int cu_check(cu_backend *cb, cudaError_t rc, const char *what)
{
    if (rc == cudaSuccess)
        return 0;
    record(cb, cu_error_sticky(rc), what, cudaGetErrorString(rc));
    return 1;
}

int cu_check_blas(cu_backend *cb, cublasStatus_t rc, const char *what)
{
    if (rc == CUBLAS_STATUS_SUCCESS)
        return 0;
    /* cuBLAS reports a kernel that faulted as EXECUTION_FAILED; a sticky error stays
     * the runtime's last error, which says what it was */
    cudaError_t last = cudaPeekAtLastError();
    char detail[160];
    if (cu_error_sticky(last))
        snprintf(detail, sizeof detail, "cuBLAS status %d: %s", (int)rc,
                 cudaGetErrorString(last));
    else
        snprintf(detail, sizeof detail, "cuBLAS status %d", (int)rc);
    record(cb, cu_error_sticky(last), what, detail);
    return 1;
}

/* The calling thread works on cb's device (workers may share a thread pool). */
static int enter(cu_backend *cb)
{
    return cb->healthy && !cu_check(cb, cudaSetDevice(cb->base.device), "cudaSetDevice");
}

/* ---------------------------------------------------------- pinned staging */

/* Waits for the stream, then hands the finished downloads to their callers; the whole
 * buffer is free again. -1 after a device error (the downloads are then lost). */
static int pin_drain(cu_backend *cb, const char *what)
{
    int rc = cu_check(cb, cudaStreamSynchronize(cb->stream), what) ? -1 : 0;
    for (int i = 0; i < cb->npend && rc == 0; i++)
        memcpy(cb->pend[i].dst, cb->pinned + cb->pend[i].off, cb->pend[i].bytes);
    cb->npend = 0;
    cb->pinned_used = 0;
    return rc;
}

/* A region of `bytes` (<= CU_PIN_MAX) of the pinned buffer for one transfer: after what
 * is in use, or (draining first) from the start of a buffer grown to hold it. */
static char *pin_take(cu_backend *cb, size_t bytes, const char *what)
{
    size_t off = (cb->pinned_used + 63) / 64 * 64;
    if (cb->pinned && off + bytes <= cb->pinned_cap) {
        cb->pinned_used = off + bytes;
        return cb->pinned + off;
    }
    if (cb->pinned && pin_drain(cb, what))
        return nullptr;
    if (bytes > cb->pinned_cap) {
        size_t cap = cb->pinned_cap ? cb->pinned_cap : CU_PIN_INITIAL;
        while (cap < bytes)
            cap *= 2;
        cap = cap > CU_PIN_MAX ? CU_PIN_MAX : cap;
        if (cb->pinned)
            cudaFreeHost(cb->pinned);
        cb->pinned = nullptr;
        cb->pinned_cap = 0;
        if (cu_check(cb, cudaMallocHost((void **)&cb->pinned, cap), "cudaMallocHost (staging)"))
            return nullptr;
        cb->pinned_cap = cap;
    }
    cb->pinned_used = bytes;
    return cb->pinned;
}

static int pin_upload(cu_backend *cb, void *dst, const void *src, size_t bytes, const char *what)
{
    for (size_t done = 0; done < bytes;) {
        size_t n = bytes - done < CU_PIN_MAX ? bytes - done : CU_PIN_MAX;
        char *p = pin_take(cb, n, what);
        if (!p)
            return -1;
        memcpy(p, (const char *)src + done, n);
        if (cu_check(cb, cudaMemcpyAsync((char *)dst + done, p, n, cudaMemcpyHostToDevice,
                                         cb->stream), what))
            return -1;
        done += n;
    }
    return 0;
}

static int pin_download(cu_backend *cb, void *dst, const void *src, size_t bytes, const char *what)
{
    for (size_t done = 0; done < bytes;) {
        size_t n = bytes - done < CU_PIN_MAX ? bytes - done : CU_PIN_MAX;
        char *p = pin_take(cb, n, what);
        if (!p)
            return -1;
        if (cb->npend == cb->pend_cap) {
            int cap = cb->pend_cap ? 2 * cb->pend_cap : 16;
            cu_pending *q = (cu_pending *)realloc(cb->pend, sizeof *q * (size_t)cap);
            if (!q) {
                cu_check(cb, cudaErrorMemoryAllocation, "download (host memory)");
                return -1;
            }
            cb->pend = q;
            cb->pend_cap = cap;
        }
        if (cu_check(cb, cudaMemcpyAsync(p, (const char *)src + done, n, cudaMemcpyDeviceToHost,
                                         cb->stream), what))
            return -1;
        cb->pend[cb->npend++] = {(char *)dst + done, (size_t)(p - cb->pinned), n};
        done += n;
    }
    return 0;
}

int cu_fetch_i32(cu_backend *cb, int32_t *host, const int32_t *dev, int n)
{
    return pin_download(cb, host, dev, sizeof(int32_t) * (size_t)n, "offsets download") ||
                   pin_drain(cb, "offsets download")
               ? -1
               : 0;
}

/* ------------------------------------------------------------------ memory */

static void *cu_alloc(eng_backend *be, size_t bytes)
{
    cu_backend *cb = cu_of(be);
    void *p = nullptr;
    if (!enter(cb))
        return nullptr;
    cudaError_t rc = cudaMalloc(&p, bytes ? bytes : 256);
    if (rc == cudaErrorMemoryAllocation) {
        cudaGetLastError(); /* out of memory is not sticky: the device stays healthy */
        return nullptr;
    }
    return cu_check(cb, rc, "cudaMalloc") ? nullptr : p;
}

/* Frees even when unhealthy: a non-sticky fault leaves the memory usable, and after a
 * sticky one both calls fail (the memory went with the context), which is harmless. */
static void cu_free(eng_backend *be, void *p)
{
    cu_backend *cb = cu_of(be);
    if (!p)
        return;
    cudaSetDevice(cb->base.device);
    cu_check(cb, cudaFree(p), "cudaFree");
}

static int cu_upload(eng_backend *be, void *dst, const void *src, size_t bytes)
{
    cu_backend *cb = cu_of(be);
    if (!enter(cb))
        return ENG_EBACKEND;
    if (!bytes)
        return ENG_OK;
    return pin_upload(cb, dst, src, bytes, "upload") ? ENG_EBACKEND : ENG_OK;
}

static int cu_download(eng_backend *be, void *dst, const void *src, size_t bytes)
{
    cu_backend *cb = cu_of(be);
    if (!enter(cb))
        return ENG_EBACKEND;
    if (!bytes)
        return ENG_OK;
    return pin_download(cb, dst, src, bytes, "download") ? ENG_EBACKEND : ENG_OK;
}

static int cu_synchronize(eng_backend *be)
{
    cu_backend *cb = cu_of(be);
    if (!enter(cb))
        return ENG_EBACKEND;
    return pin_drain(cb, "synchronize") ? ENG_EBACKEND : ENG_OK;
}

static void *cu_weights_upload(eng_backend *be, const void *host, size_t bytes)
{
    cu_backend *cb = cu_of(be);
    void *p = cu_alloc(be, bytes);
    if (!p)
        return nullptr;
    if (cu_check(cb, cudaMemcpy(p, host, bytes, cudaMemcpyHostToDevice), "weights upload")) {
        cudaFree(p);
        return nullptr;
    }
    return p;
}

static void cu_weights_free(int device, void *view)
{
    if (!view)
        return;
    cudaSetDevice(device); /* as cu_free: tried even after a fault */
    cudaFree(view);
}

/* ------------------------------------------------------------- lifecycle */

static void cu_destroy(eng_backend *be)
{
    cu_backend *cb = cu_of(be);
    if (!cb)
        return;
    cudaSetDevice(cb->base.device);
    if (cb->blas)
        cublasDestroy(cb->blas);
    if (cb->stream)
        cudaStreamDestroy(cb->stream);
    if (cb->pinned)
        cudaFreeHost(cb->pinned);
    free(cb->pend);
    if (cb->scratch)
        cudaFree(cb->scratch);
    if (cb->scores)
        cudaFree(cb->scores);
    free(cb);
}

/* Device scratch kept between calls: linear_forward's 16-bit activations and the
 * attention scores (the pinned staging buffer is host memory, at most CU_PIN_MAX). */
static size_t cu_scratch_bytes(eng_backend *be, size_t *peak)
{
    cu_backend *cb = cu_of(be);
    if (peak)
        *peak = cb->scratch_peak + cb->scores_peak;
    return cb->scratch_cap + cb->scores_cap;
}

/* Between runs: frees the scores, then the 16-bit activations, until at most keep bytes
 * are held (they grow back on demand). cudaFree waits for the device. */
static void cu_scratch_trim(eng_backend *be, size_t keep)
{
    cu_backend *cb = cu_of(be);
    if (cudaSetDevice(cb->base.device) == cudaSuccess) {
        if (cb->scratch_cap + cb->scores_cap > keep && cb->scores) {
            cudaFree(cb->scores);
            cb->scores = nullptr;
            cb->scores_cap = 0;
        }
        if (cb->scratch_cap > keep && cb->scratch) {
            cudaFree(cb->scratch);
            cb->scratch = nullptr;
            cb->scratch_cap = 0;
        }
    }
    cb->scratch_peak = cb->scores_peak = 0;
}

static const char *cu_health(const eng_backend *be)
{
    const cu_backend *cb = (const cu_backend *)be;
    return cb->healthy ? nullptr : cb->why;
}

static int cu_fault_sticky(const eng_backend *be)
{
    const cu_backend *cb = (const cu_backend *)be;
    return !cb->healthy && cb->sticky;
}

static const eng_backend_ops *build_ops(void)
{
    static eng_backend_core_ops core;
    static eng_backend_gen_ops gen;
    static eng_backend_train_ops train;
    static eng_backend_ops ops;
    core.gemm = cu_gemm;
    core.bias_act = cu_bias_act;
    core.add_layernorm = cu_add_layernorm;
    core.embed = cu_embed;
    core.attention = cu_attention;
    core.mean_pool = cu_mean_pool;
    core.gather_rows = cu_gather_rows;
    /* pack_weight / gemm_prepacked / free_packed: none (cuBLAS takes the layout) */
    core.linear_pack = cu_linear_pack; /* fp16 / bf16 weights (linear.cu) */
    core.linear_forward = cu_linear_forward;
    core.linear_unpack = cu_linear_unpack;
    core.linear_info = cu_linear_info;
    core.linear_free = cu_linear_free;
    gen.embed_scaled = cu_embed_scaled;
    gen.attention_kv = cu_attention_kv;
    gen.copy_rows = cu_copy_rows;
    gen.log_softmax = cu_log_softmax;
    gen.topk = cu_topk;
    gen.bias_silu = cu_bias_silu;
    /* training: only the GEMM so far; every other training op is not supported */
    train.gemm_ex = cu_gemm_ex;
    ops.name = CU_REG_NAME;
    ops.destroy = cu_destroy;
    ops.alloc = cu_alloc;
    ops.free = cu_free;
    ops.upload = cu_upload;
    ops.download = cu_download;
    ops.synchronize = cu_synchronize;
    ops.zero = cu_zero;
    ops.weights_upload = cu_weights_upload;
    ops.weights_free = cu_weights_free;
    ops.health = cu_health;
    ops.fault_sticky = cu_fault_sticky;
    ops.scratch_bytes = cu_scratch_bytes;
    ops.scratch_trim = cu_scratch_trim;
    ops.core = &core;
    ops.gen = &gen;
    ops.train = &train;
    return &ops;
}

static const eng_backend_ops *ops_table(void)
{
    static const eng_backend_ops *ops = build_ops(); /* thread-safe initialisation */
    return ops;
}

static int cu_device_count(void)
{
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError(); /* no driver / no device: clear the error */
        return 0;
    }
    return n;
}

static int cu_create(int device, int threads, eng_backend **out, eng_error *err)
{
    (void)threads; /* the host side of a launch is one thread */
    *out = nullptr;
    const eng_backend_ops *ops = ops_table();
    int n = cu_device_count();
    if (device < 0 || device >= n)
        return eng_fail(err, ENG_EUNSUPPORTED, "%s:%d: no such CUDA device (%d present)",
                        CU_REG_NAME, device, n);
    cudaError_t rc = cudaSetDevice(device);
    if (rc != cudaSuccess)
        return eng_fail(err, ENG_EBACKEND, "%s:%d: %s", CU_REG_NAME, device, cudaGetErrorString(rc));
    cu_backend *cb = (cu_backend *)calloc(1, sizeof *cb);
    if (!cb)
        return eng_fail(err, ENG_ENOMEM, "out of memory");
    cb->base.ops = ops;
    cb->base.threads = 1;
    cb->base.device = device;
    cb->healthy = 1;
    if ((rc = cudaStreamCreate(&cb->stream)) != cudaSuccess) {
        free(cb);
        return eng_fail(err, ENG_EBACKEND, "%s:%d: stream: %s", CU_REG_NAME, device,
                        cudaGetErrorString(rc));
    }
    cublasStatus_t st = cublasCreate(&cb->blas);
    if (st == CUBLAS_STATUS_SUCCESS)
        st = cublasSetStream(cb->blas, cb->stream);
    if (st != CUBLAS_STATUS_SUCCESS) {
        cu_destroy(&cb->base);
        return eng_fail(err, ENG_EBACKEND, "%s:%d: cuBLAS initialisation failed (status %d)",
                        CU_REG_NAME, device, (int)st);
    }
    *out = &cb->base;
    return ENG_OK;
}

} /* namespace CU_NS */

/* The registry entry (backend/registry.c lists it when built with CUDA; tests register
 * the emulated one). */
extern "C" const eng_backend_reg CU_REG_SYMBOL = {CU_REG_NAME, CU_NS::cu_device_count,
                                                  CU_NS::cu_create};
