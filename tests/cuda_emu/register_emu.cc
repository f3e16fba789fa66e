/* register_emu.cc - TEST CODE ONLY: registers the emulated CUDA backend ("cuda-emu":
 * the cuda/ sources built against tests/cuda_emu/cuda_emu.h) with the engine's backend
 * registry, so that test_backend_ops and the whole-model tests run it like any other
 * backend. Called by test_main.c before any test. */
#include "backend/backend.h"

extern "C" const eng_backend_reg eng_cuda_emu_backend_reg; /* cuda/backend_cuda.cu */

extern "C" void tu_register_backends(void)
{
    eng_backend_register(&eng_cuda_emu_backend_reg);
}

#include "cuda_emu.h"

/* Fault injection for tests: the n-th emulated CUDA call from now fails with an error
 * that is not sticky (0: off, and the end of a sticky one; -1: every call until reset). */
extern "C" void tu_cuda_emu_fail_after(int n)
{
    cuemu::fail_after(n);
}

/* The n-th emulated CUDA call from now fails with the sticky CUDA error `code`, and every
 * later call too (the process's CUDA context is lost), until tu_cuda_emu_fail_after(0). */
extern "C" void tu_cuda_emu_fail_sticky_after(int n, int code)
{
    cuemu::fail_sticky_after(n, code);
}

/* Device memory allocated now (bytes). */
extern "C" size_t tu_cuda_emu_device_bytes(void)
{
    return cuemu::device_bytes();
}

/* cuBLAS calls so far (a strided-batched call counts once). */
extern "C" long long tu_cuda_emu_blas_calls(void)
{
    return cuemu::blas_calls();
}

/* Pinned host memory allocated now (bytes), and async copies from/to pageable memory. */
extern "C" size_t tu_cuda_emu_pinned_bytes(void)
{
    return cuemu::pinned_bytes();
}

extern "C" long long tu_cuda_emu_pageable_copies(void)
{
    return cuemu::pageable_async_copies();
}
