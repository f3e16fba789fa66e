/* cpu_kernels_avx512.c - the CPU kernels compiled for AVX-512 (F, BW, DQ, VL),
 * chosen at run time on CPUs that have them (the rest of the build stays baseline). */
#if defined(__x86_64__)
#include <math.h>
#include <stdint.h>
#include <string.h>

#pragma GCC target("avx,avx2,fma,f16c,avx512f,avx512bw,avx512dq,avx512vl")
#define CPU_SIMD_AVX512 1
#define KN_NAME "avx512"
#include "cpu/cpu_kernels_impl.h"
#else
typedef int eng_cpu_kernels_avx512_unused; /* not an x86-64 build */
#endif
