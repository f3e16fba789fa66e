/* cuda_emu.cc - TEST CODE ONLY: the CUDA emulation of cuda_emu.h (execution model on
 * ucontext coroutines, runtime memory and copies with bounds checks, cuBLAS GEMMs on
 * CBLAS). */
#include "cuda_emu.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__)
#define EMU_FAST_SWITCH 1 /* a minimal register switch: ucontext's costs a syscall */
#else
#include <ucontext.h>
#define EMU_FAST_SWITCH 0
#endif

#include <map>
#include <mutex>
#include <vector>

#include <cblas.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#define EMU_ASAN 1
#else
#define EMU_ASAN 0
#endif

namespace cuemu {

namespace api {
uint3 threadIdx, blockIdx, blockDim, gridDim;
} // namespace api

using namespace api;

void fatal(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "cuda_emu: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    abort();
}

/* ------------------------------------------------------------ scheduler */

enum { ST_READY, ST_BARRIER, ST_SHFL, ST_DONE };
enum { STACK_BYTES = 256 * 1024, MAX_THREADS = 1024 };

static std::recursive_mutex launch_mu; /* one launch at a time: __shared__ is static */
#if EMU_FAST_SWITCH
/* emu_switch(save, to): saves the callee-saved registers, MXCSR and the x87 control
 * word on the current stack, stores the stack pointer in *save, and resumes the
 * context whose stack pointer is `to`. */
extern "C" void emu_switch(void **save, void *to);
__asm__(".text\n"
        ".globl emu_switch\n"
        ".type emu_switch,@function\n"
        "emu_switch:\n"
        "  pushq %rbp\n  pushq %rbx\n  pushq %r12\n  pushq %r13\n  pushq %r14\n  pushq %r15\n"
        "  subq $8, %rsp\n  stmxcsr (%rsp)\n  fnstcw 4(%rsp)\n"
        "  movq %rsp, (%rdi)\n"
        "  movq %rsi, %rsp\n"
        "  ldmxcsr (%rsp)\n  fldcw 4(%rsp)\n  addq $8, %rsp\n"
        "  popq %r15\n  popq %r14\n  popq %r13\n  popq %r12\n  popq %rbx\n  popq %rbp\n"
        "  ret\n"
        ".size emu_switch,.-emu_switch\n");
typedef void *emu_ctx; /* a saved stack pointer */
#else
typedef ucontext_t emu_ctx;
#endif
static emu_ctx sched_ctx;
static std::vector<emu_ctx> ctx;
/* fiber stacks, kept for later launches: a plain global array (no destructor at exit,
 * so they stay reachable for the leak checker) */
static char *stacks[MAX_THREADS];
static int n_stacks;
static std::vector<int> status;
static std::vector<float> xchg;
static std::vector<int> xchg_i;
static int cur = -1, sync_mode, nthreads;
static int shfl_phase; /* which half of xchg the next shuffle uses */
static const std::function<void()> *cur_body;
static std::vector<char> dyn;
static long long n_launches, n_blas;
#if EMU_ASAN
static const void *sched_bottom;
static size_t sched_size;
#endif

/* Saves the running context in *from and resumes *to. */
static inline void ctx_swap(emu_ctx *from, emu_ctx *to)
{
#if EMU_FAST_SWITCH
    emu_switch(from, *to);
#else
    swapcontext(from, to);
#endif
}

static void to_sched(void)
{
#if EMU_ASAN
    void *fs = nullptr;
    __sanitizer_start_switch_fiber(&fs, sched_bottom, sched_size);
    ctx_swap(&ctx[cur], &sched_ctx);
    __sanitizer_finish_switch_fiber(fs, &sched_bottom, &sched_size);
#else
    ctx_swap(&ctx[cur], &sched_ctx);
#endif
}

static void fiber_entry(void)
{
#if EMU_ASAN
    __sanitizer_finish_switch_fiber(nullptr, &sched_bottom, &sched_size);
#endif
    (*cur_body)();
    status[cur] = ST_DONE;
#if EMU_ASAN
    __sanitizer_start_switch_fiber(nullptr, sched_bottom, sched_size);
#endif
    ctx_swap(&ctx[cur], &sched_ctx); /* never resumed */
    fatal("a finished thread was resumed");
}

static void resume(int t)
{
    cur = t;
    threadIdx.x = (unsigned)t % blockDim.x;
    threadIdx.y = (unsigned)t / blockDim.x % blockDim.y;
    threadIdx.z = (unsigned)t / (blockDim.x * blockDim.y);
#if EMU_ASAN
    void *fs = nullptr;
    __sanitizer_start_switch_fiber(&fs, stacks[t], STACK_BYTES);
    ctx_swap(&sched_ctx, &ctx[t]);
    __sanitizer_finish_switch_fiber(fs, nullptr, nullptr);
#else
    ctx_swap(&sched_ctx, &ctx[t]);
#endif
    cur = -1;
}

static void run_block_sync(void)
{
    for (int t = 0; t < nthreads; t++) {
#if EMU_FAST_SWITCH
        /* a frame emu_switch "returns" from into fiber_entry, as if it had been called
         * (16-byte alignment + 8 at entry); fiber_entry never returns */
        uintptr_t top = ((uintptr_t)stacks[t] + STACK_BYTES) & ~(uintptr_t)15;
        uint64_t *sp = (uint64_t *)top;
        *--sp = 0;                          /* fiber_entry's return address: none */
        *--sp = (uint64_t)(uintptr_t)fiber_entry;
        for (int r = 0; r < 6; r++)
            *--sp = 0;                      /* rbp rbx r12 r13 r14 r15 */
        uint32_t csr;
        uint16_t cw;
        __asm__ volatile("stmxcsr %0" : "=m"(csr));
        __asm__ volatile("fnstcw %0" : "=m"(cw));
        *--sp = (uint64_t)csr | (uint64_t)cw << 32;
        ctx[t] = (void *)sp;
#else
        getcontext(&ctx[t]);
        ctx[t].uc_stack.ss_sp = stacks[t];
        ctx[t].uc_stack.ss_size = STACK_BYTES;
        ctx[t].uc_link = nullptr;
        makecontext(&ctx[t], fiber_entry, 0);
#endif
        status[t] = ST_READY;
    }
    for (;;) {
        for (int t = 0; t < nthreads; t++)
            if (status[t] == ST_READY)
                resume(t);
        int done = 0, bar = 0, shfl = 0;
        for (int t = 0; t < nthreads; t++) {
            done += status[t] == ST_DONE;
            bar += status[t] == ST_BARRIER;
            shfl += status[t] == ST_SHFL;
        }
        if (done == nthreads)
            return;
        if (done || (bar && shfl))
            fatal("divergent barrier in block (%u,%u,%u): %d threads done, %d at "
                  "__syncthreads, %d at a shuffle (every thread of a block must reach each "
                  "barrier and shuffle)", blockIdx.x, blockIdx.y, blockIdx.z, done, bar, shfl);
        for (int t = 0; t < nthreads; t++)
            status[t] = ST_READY;
    }
}

void launch(dim3 grid, dim3 block, size_t shmem, cudaStream_t stream, int sync,
            const std::function<void()> &body)
{
    (void)stream;
    std::lock_guard<std::recursive_mutex> lock(launch_mu);
    if (cur >= 0)
        fatal("kernel launched from a kernel");
    int n = (int)(block.x * block.y * block.z);
    if (n < 1 || n > MAX_THREADS || grid.x < 1 || grid.y < 1 || grid.z < 1 || grid.y > 65535 ||
        grid.z > 65535)
        fatal("invalid launch: grid (%u,%u,%u) block (%u,%u,%u)", grid.x, grid.y, grid.z,
              block.x, block.y, block.z);
    if (sync && block.x % 32)
        fatal("a kernel with barriers/shuffles needs blockDim.x a multiple of 32 here (%u)",
              block.x);
    n_launches++;
    dyn.assign(shmem ? shmem : 1, (char)0xff); /* NaN bytes: uninitialised shared memory */
    gridDim = {grid.x, grid.y, grid.z};
    blockDim = {block.x, block.y, block.z};
    nthreads = n;
    sync_mode = sync;
    cur_body = &body;
    if (sync) {
        while (n_stacks < n)
            if (!(stacks[n_stacks++] = (char *)malloc(STACK_BYTES)))
                fatal("out of memory for %d thread stacks", n);
        ctx.resize((size_t)n);
        status.resize((size_t)n);
        xchg.resize(2 * (size_t)n);
        xchg_i.resize(2 * (size_t)n);
        shfl_phase = 0;
    }
    for (unsigned z = 0; z < grid.z; z++)
        for (unsigned y = 0; y < grid.y; y++)
            for (unsigned x = 0; x < grid.x; x++) {
                blockIdx.x = x, blockIdx.y = y, blockIdx.z = z;
                if (sync) {
                    run_block_sync();
                    continue;
                }
                for (int t = 0; t < n; t++) {
                    threadIdx.x = (unsigned)t % block.x;
                    threadIdx.y = (unsigned)t / block.x % block.y;
                    threadIdx.z = (unsigned)t / (block.x * block.y);
                    cur = -2; /* flat */
                    body();
                    cur = -1;
                }
            }
    cur_body = nullptr;
}

void *dyn_shared(void) { return dyn.data(); }

static void wait_all(int kind)
{
    if (cur == -2)
        fatal("__syncthreads or a shuffle in a kernel launched with CU_LAUNCH_FLAT");
    if (cur < 0)
        fatal("__syncthreads or a shuffle outside a kernel");
    status[cur] = kind;
    to_sched();
}

void barrier(void) { wait_all(ST_BARRIER); }

static int partner(int lane_of)
{
    int t = cur, base = t & ~31;
    return base + (lane_of & 31);
}

/* A shuffle is one rendezvous: each thread writes its value into this shuffle's
 * buffer, all wait, each reads its partner's. Consecutive shuffles alternate between
 * two buffers, so a thread's next write cannot clobber a value still to be read (a
 * thread runs from one rendezvous to the next without yielding). */
float shfl_xor(float v, int lane_mask)
{
    if (cur < 0)
        wait_all(ST_SHFL); /* fails */
    int me = cur, ph = shfl_phase;
    xchg[(size_t)ph * nthreads + me] = v;
    wait_all(ST_SHFL);
    if (me == 0)
        shfl_phase ^= 1;
    return xchg[(size_t)ph * nthreads + partner((me & 31) ^ lane_mask)];
}

float shfl_down(float v, int delta)
{
    if (cur < 0)
        wait_all(ST_SHFL);
    int me = cur, ph = shfl_phase, src = (me & 31) + delta;
    xchg[(size_t)ph * nthreads + me] = v;
    wait_all(ST_SHFL);
    if (me == 0)
        shfl_phase ^= 1;
    return src < 32 ? xchg[(size_t)ph * nthreads + partner(src)] : v;
}

int shfl_xor_i(int v, int lane_mask)
{
    if (cur < 0)
        wait_all(ST_SHFL);
    int me = cur, ph = shfl_phase;
    xchg_i[(size_t)ph * nthreads + me] = v;
    wait_all(ST_SHFL);
    if (me == 0)
        shfl_phase ^= 1;
    return xchg_i[(size_t)ph * nthreads + partner((me & 31) ^ lane_mask)];
}

long long launches(void) { return n_launches; }
long long blas_calls(void) { return n_blas; }

/* --------------------------------------------------------------- memory */

static std::mutex mem_mu;
static std::map<uintptr_t, size_t> allocs; /* device allocations: base -> bytes */
static std::map<uintptr_t, size_t> pinned; /* cudaMallocHost: base -> bytes */
static long long n_pageable;
static int fail_countdown;
static api::cudaError_t sticky_code; /* the injected fault is this sticky error (0: not) */
static api::cudaError_t poisoned;    /* a sticky error happened: every call returns it */

void fail_after(int n)
{
    fail_countdown = n;
    sticky_code = poisoned = api::cudaSuccess;
}

void fail_sticky_after(int n, int code)
{
    fail_countdown = n;
    sticky_code = (api::cudaError_t)code;
    poisoned = api::cudaSuccess;
}

size_t pinned_bytes(void)
{
    std::lock_guard<std::mutex> lock(mem_mu);
    size_t n = 0;
    for (const auto &a : pinned)
        n += a.second;
    return n;
}

long long pageable_async_copies(void)
{
    std::lock_guard<std::mutex> lock(mem_mu);
    return n_pageable;
}

size_t device_bytes(void)
{
    std::lock_guard<std::mutex> lock(mem_mu);
    size_t n = 0;
    for (const auto &a : allocs)
        n += a.second;
    return n;
}

/* What a plain injected fault returns (one that a new context cures; not sticky). */
static const api::cudaError_t TRANSIENT = api::cudaErrorUnknown;

/* The error a runtime call returns by fault injection (cudaSuccess: none): the call's own
 * (`transient`) for a plain injected fault; a sticky one is returned by every later call
 * too, as a real device does after, e.g., an illegal address. */
static api::cudaError_t injected(api::cudaError_t transient)
{
    if (poisoned)
        return poisoned;
    /* fail_countdown < 0: a device that stays broken, every call fails */
    int hit = fail_countdown < 0 || (fail_countdown > 0 && --fail_countdown == 0);
    if (!hit)
        return api::cudaSuccess;
    if (sticky_code)
        return poisoned = sticky_code;
    return transient;
}

/* 1 if [p, p + bytes) lies inside one device allocation. */
static int in_device(const void *p, size_t bytes)
{
    std::lock_guard<std::mutex> lock(mem_mu);
    uintptr_t a = (uintptr_t)p;
    auto it = allocs.upper_bound(a);
    if (it == allocs.begin())
        return 0;
    --it;
    return a >= it->first && a + bytes <= it->first + it->second;
}

static int is_device(const void *p) { return in_device(p, 1); }

/* 1 if [p, p + bytes) lies inside one pinned host allocation. */
static int in_pinned(const void *p, size_t bytes)
{
    std::lock_guard<std::mutex> lock(mem_mu);
    uintptr_t a = (uintptr_t)p;
    auto it = pinned.upper_bound(a);
    if (it == pinned.begin())
        return 0;
    --it;
    return a >= it->first && a + bytes <= it->first + it->second;
}

} // namespace cuemu

/* A download into pinned memory waiting for the stream's synchronisation. */
struct emu_pending {
    void *dst;
    std::vector<char> bytes;
};

struct cuemu::stream_s {
    std::vector<emu_pending> pending;
};

namespace cuemu {
namespace api {

cudaError_t cudaGetDeviceCount(int *n)
{
    *n = 1;
    return cudaSuccess;
}

cudaError_t cudaSetDevice(int dev)
{
    if (poisoned) /* not a counted call: fault injection counts the same either way */
        return poisoned;
    return dev == 0 ? cudaSuccess : cudaErrorInvalidDevice;
}

cudaError_t cudaMalloc(void **p, size_t bytes)
{
    *p = nullptr;
    if (cudaError_t e = injected(cudaErrorMemoryAllocation))
        return e;
    size_t n = bytes ? bytes : 1;
    void *m = aligned_alloc(256, (n + 255) / 256 * 256);
    if (!m)
        return cudaErrorMemoryAllocation;
    std::lock_guard<std::mutex> lock(mem_mu);
    allocs[(uintptr_t)m] = n;
    *p = m;
    return cudaSuccess;
}

cudaError_t cudaFree(void *p)
{
    if (!p)
        return cudaSuccess;
    std::lock_guard<std::mutex> lock(mem_mu);
    auto it = allocs.find((uintptr_t)p);
    if (it == allocs.end()) {
        fprintf(stderr, "cuda_emu: cudaFree of %p, not a device allocation\n", p);
        return cudaErrorInvalidValue;
    }
    allocs.erase(it);
    free(p);
    return cudaSuccess;
}

cudaError_t cudaMallocHost(void **p, size_t bytes)
{
    size_t n = bytes ? bytes : 1;
    *p = malloc(n);
    if (!*p)
        return cudaErrorMemoryAllocation;
    std::lock_guard<std::mutex> lock(mem_mu);
    pinned[(uintptr_t)*p] = n;
    return cudaSuccess;
}

cudaError_t cudaFreeHost(void *p)
{
    if (!p)
        return cudaSuccess;
    std::lock_guard<std::mutex> lock(mem_mu);
    auto it = pinned.find((uintptr_t)p);
    if (it == pinned.end()) {
        fprintf(stderr, "cuda_emu: cudaFreeHost of %p, not a cudaMallocHost allocation\n", p);
        return cudaErrorInvalidValue;
    }
    pinned.erase(it);
    free(p);
    return cudaSuccess;
}

static cudaError_t memcpy_any(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind,
                              cudaStream_t s, int async)
{
    if (cudaError_t e = injected(TRANSIENT))
        return e;
    if (!bytes)
        return cudaSuccess;
    int dd = in_device(dst, bytes), sd = in_device(src, bytes);
    int ok = kind == cudaMemcpyHostToDevice   ? dd && !is_device(src)
             : kind == cudaMemcpyDeviceToHost ? sd && !is_device(dst)
             : kind == cudaMemcpyDeviceToDevice && dd && sd;
    if (!ok) {
        fprintf(stderr, "cuda_emu: cudaMemcpy kind %d of %zu bytes %p -> %p: the device side "
                "is not (inside) a device allocation, or the host side is device memory\n",
                (int)kind, bytes, src, dst);
        return cudaErrorInvalidValue;
    }
    const void *host = kind == cudaMemcpyHostToDevice ? src
                       : kind == cudaMemcpyDeviceToHost ? (const void *)dst : nullptr;
    int pin = host && in_pinned(host, bytes);
    if (async && host && !pin) {
        std::lock_guard<std::mutex> lock(mem_mu);
        n_pageable++;
    }
    if (async && s && pin && kind == cudaMemcpyDeviceToHost) {
        /* read now, delivered at the stream's synchronisation */
        s->pending.push_back({dst, std::vector<char>((const char *)src, (const char *)src + bytes)});
        return cudaSuccess;
    }
    memmove(dst, src, bytes);
    return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t s)
{
    return memcpy_any(dst, src, bytes, kind, s, 1);
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind)
{
    return memcpy_any(dst, src, bytes, kind, nullptr, 0);
}

cudaError_t cudaMemsetAsync(void *p, int value, size_t bytes, cudaStream_t s)
{
    (void)s;
    if (cudaError_t e = injected(TRANSIENT))
        return e;
    if (bytes && !in_device(p, bytes)) {
        fprintf(stderr, "cuda_emu: cudaMemset of %zu bytes at %p outside device memory\n",
                bytes, p);
        return cudaErrorInvalidValue;
    }
    memset(p, value, bytes);
    return cudaSuccess;
}

cudaError_t cudaStreamCreate(cudaStream_t *s)
{
    if (cudaError_t e = injected(TRANSIENT))
        return e;
    *s = new stream_s();
    return cudaSuccess;
}

cudaError_t cudaStreamDestroy(cudaStream_t s)
{
    delete s;
    return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t s)
{
    if (cudaError_t e = injected(TRANSIENT)) {
        if (s)
            s->pending.clear(); /* a faulted stream delivers nothing */
        return e;
    }
    if (s) {
        for (auto &p : s->pending)
            memcpy(p.dst, p.bytes.data(), p.bytes.size());
        s->pending.clear();
    }
    return cudaSuccess;
}

cudaError_t cudaGetLastError(void)
{
    return injected(TRANSIENT);
}

cudaError_t cudaPeekAtLastError(void)
{
    return poisoned; /* not a counted call; only a sticky error outlives its call */
}

const char *cudaGetErrorString(cudaError_t e)
{
    switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorECCUncorrectable: return "uncorrectable ECC error encountered (injected)";
    case cudaErrorNvlinkUncorrectable: return "uncorrectable NVLink error detected during the "
                                              "execution (injected)";
    case cudaErrorIllegalAddress: return "an illegal memory access was encountered (injected)";
    case cudaErrorLaunchOutOfResources: return "too many resources requested for launch";
    case cudaErrorLaunchTimeout: return "the launch timed out and was terminated (injected)";
    case cudaErrorAssert: return "device-side assert triggered (injected)";
    case cudaErrorHardwareStackError: return "hardware stack error (injected)";
    case cudaErrorIllegalInstruction: return "an illegal instruction was encountered (injected)";
    case cudaErrorMisalignedAddress: return "misaligned address (injected)";
    case cudaErrorInvalidAddressSpace: return "operation not supported on global/shared address "
                                              "space (injected)";
    case cudaErrorInvalidPc: return "invalid program counter (injected)";
    case cudaErrorLaunchFailure: return "unspecified launch failure (injected)";
    case cudaErrorUnknown: return "unknown error (injected)";
    }
    return "unrecognized error code (injected)";
}

/* ---------------------------------------------------------------- cuBLAS */

struct blas_s {
    cudaStream_t stream;
};

cublasStatus_t cublasCreate(cublasHandle_t *h)
{
    *h = new blas_s();
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasDestroy(cublasHandle_t h)
{
    delete h;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetStream(cublasHandle_t h, cudaStream_t s)
{
    h->stream = s;
    return CUBLAS_STATUS_SUCCESS;
}

/* Elements spanned by a column-major rows x cols matrix with leading dimension ld. */
static size_t span(int rows, int cols, int ld)
{
    if (rows == 0 || cols == 0)
        return 0;
    return (size_t)(cols - 1) * (size_t)ld + (size_t)rows;
}

static size_t dt_size(cudaDataType t) { return t == CUDA_R_32F ? 4 : 2; }

/* Supported as cuBLAS documents for CUBLAS_COMPUTE_32F: fp32 in, fp32 out; fp16 or
 * bf16 in (both operands the same type), fp32 out. */
static cublasStatus_t check_gemm(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                                 cudaDataType at, int lda, cudaDataType bt, int ldb,
                                 cudaDataType ct, int ldc, cublasComputeType_t compute)
{
    if (compute != CUBLAS_COMPUTE_32F || ct != CUDA_R_32F || at != bt ||
        (at != CUDA_R_32F && at != CUDA_R_16F && at != CUDA_R_16BF))
        return CUBLAS_STATUS_NOT_SUPPORTED;
    if ((ta != CUBLAS_OP_N && ta != CUBLAS_OP_T) || (tb != CUBLAS_OP_N && tb != CUBLAS_OP_T))
        return CUBLAS_STATUS_INVALID_VALUE;
    int arows = ta == CUBLAS_OP_N ? m : k, brows = tb == CUBLAS_OP_N ? k : n;
    if (m < 0 || n < 0 || k < 0 || lda < (arows > 1 ? arows : 1) ||
        ldb < (brows > 1 ? brows : 1) || ldc < (m > 1 ? m : 1))
        return CUBLAS_STATUS_INVALID_VALUE;
    return CUBLAS_STATUS_SUCCESS;
}

/* IEEE binary16 / bfloat16 bits -> float (written independently of cuda/linear.cu's
 * conversions, so that a wrong encoding there shows). */
static float half_value(uint16_t h)
{
    int e = (h >> 10) & 0x1f, m = h & 0x3ff;
    float v = e == 0    ? ldexpf((float)m, -24)
              : e == 31 ? (m ? NAN : INFINITY)
                        : ldexpf((float)(m + 1024), e - 25);
    return (h & 0x8000) ? -v : v;
}

static float bf16_value(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* n elements of type t at p as floats (a host copy; fp32 is copied too). */
static std::vector<float> widen(const void *p, cudaDataType t, size_t n)
{
    std::vector<float> v(n);
    const uint16_t *h = (const uint16_t *)p;
    for (size_t i = 0; i < n; i++)
        v[i] = t == CUDA_R_32F ? ((const float *)p)[i]
               : t == CUDA_R_16F ? half_value(h[i]) : bf16_value(h[i]);
    return v;
}

static cublasStatus_t gemm_one(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                               float alpha, const void *A, int lda, const void *B, int ldb,
                               cudaDataType ab, float beta, float *C, int ldc)
{
    int arows = ta == CUBLAS_OP_N ? m : k, acols = ta == CUBLAS_OP_N ? k : m;
    int brows = tb == CUBLAS_OP_N ? k : n, bcols = tb == CUBLAS_OP_N ? n : k;
    size_t as = span(arows, acols, lda), bs = span(brows, bcols, ldb), cs = span(m, n, ldc);
    size_t es = dt_size(ab);
    if ((as && !in_device(A, as * es)) || (bs && !in_device(B, bs * es)) ||
        (cs && !in_device(C, cs * sizeof(float)))) {
        fprintf(stderr, "cuda_emu: cublasGemmEx: an operand is not (inside) device memory "
                "(m %d n %d k %d, lda %d ldb %d ldc %d)\n", m, n, k, lda, ldb, ldc);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    if (m == 0 || n == 0)
        return CUBLAS_STATUS_SUCCESS;
    if (k == 0 || alpha == 0.0f) { /* C = beta C; C is not read when beta == 0 */
        for (int j = 0; j < n; j++)
            for (int i = 0; i < m; i++) {
                float *c = &C[(size_t)j * ldc + i];
                *c = beta == 0.0f ? 0.0f : beta * *c;
            }
        return CUBLAS_STATUS_SUCCESS;
    }
    std::vector<float> wa, wb; /* 16-bit operands read as their values, then fp32 math */
    const float *fa = (const float *)A, *fb = (const float *)B;
    if (ab != CUDA_R_32F) {
        wa = widen(A, ab, as);
        wb = widen(B, ab, bs);
        fa = wa.data();
        fb = wb.data();
    }
    cblas_sgemm(CblasColMajor, ta == CUBLAS_OP_N ? CblasNoTrans : CblasTrans,
                tb == CUBLAS_OP_N ? CblasNoTrans : CblasTrans, m, n, k, alpha, fa, lda, fb, ldb,
                beta, C, ldc);
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m,
                            int n, int k, const void *alpha, const void *A, cudaDataType at,
                            int lda, const void *B, cudaDataType bt, int ldb, const void *beta,
                            void *C, cudaDataType ct, int ldc, cublasComputeType_t compute,
                            cublasGemmAlgo_t algo)
{
    (void)algo;
    if (!h)
        return CUBLAS_STATUS_NOT_INITIALIZED;
    if (injected(TRANSIENT))
        return CUBLAS_STATUS_EXECUTION_FAILED;
    cublasStatus_t st = check_gemm(ta, tb, m, n, k, at, lda, bt, ldb, ct, ldc, compute);
    if (st)
        return st;
    n_blas++;
    return gemm_one(ta, tb, m, n, k, *(const float *)alpha, A, lda, B, ldb, at,
                    *(const float *)beta, (float *)C, ldc);
}

cublasStatus_t cublasGemmStridedBatchedEx(cublasHandle_t h, cublasOperation_t ta,
                                          cublasOperation_t tb, int m, int n, int k,
                                          const void *alpha, const void *A, cudaDataType at,
                                          int lda, long long sa, const void *B, cudaDataType bt,
                                          int ldb, long long sb, const void *beta, void *C,
                                          cudaDataType ct, int ldc, long long sc, int batch,
                                          cublasComputeType_t compute, cublasGemmAlgo_t algo)
{
    (void)algo;
    if (!h)
        return CUBLAS_STATUS_NOT_INITIALIZED;
    if (injected(TRANSIENT))
        return CUBLAS_STATUS_EXECUTION_FAILED;
    cublasStatus_t st = check_gemm(ta, tb, m, n, k, at, lda, bt, ldb, ct, ldc, compute);
    if (st || batch < 0)
        return st ? st : CUBLAS_STATUS_INVALID_VALUE;
    n_blas++;
    for (int i = 0; i < batch && !st; i++)
        st = gemm_one(ta, tb, m, n, k, *(const float *)alpha,
                      (const char *)A + (size_t)(i * sa) * dt_size(at), lda,
                      (const char *)B + (size_t)(i * sb) * dt_size(at), ldb, at,
                      *(const float *)beta, (float *)C + i * sc, ldc);
    return st;
}

} // namespace api
} // namespace cuemu
