/* cpu_kernels_avx2.c - the CPU kernels compiled for AVX2 + FMA, chosen at run
 * time on CPUs that have them (the rest of the build stays baseline). */
#if defined(__x86_64__)
#include <math.h>
#include <stdint.h>
#include <string.h>

#pragma GCC target("avx,avx2,fma,f16c")
#define CPU_SIMD_AVX2 1
#define KN_NAME "avx2"
#include "cpu/cpu_kernels_impl.h"
#else
typedef int eng_cpu_kernels_avx2_unused; /* not an x86-64 build */
#endif
