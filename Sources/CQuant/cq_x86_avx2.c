// AVX2 + FMA + F16C kernels (every x86-64 CPU since Haswell / Zen 1): maddubs + madd pairs.
#if defined(__x86_64__) || defined(__i386__)

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#elif defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#endif

#define CQX(name) name##_avx2
#define CQX_ISA "avx2"
#define CQX_VNNI 0
#include "cq_x86_kernels.h"

#if defined(__clang__)
#pragma clang attribute pop
#elif defined(__GNUC__)
#pragma GCC pop_options
#endif

#else
// Another architecture: ISO C wants at least one declaration in a translation unit.
typedef int cq_avx2_not_built;
#endif
