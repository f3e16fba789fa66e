/* cpu_kernels_scalar.c - the CPU kernels for the baseline ISA (any x86-64-v2 or
 * other CPU); the reference the vector paths are tested against. */
#define CPU_SIMD_SCALAR 1
#define KN_NAME "scalar"
#include "cpu/cpu_kernels_impl.h"
