// AVX-VNNI kernels (Alder Lake and later Intel cores, Zen 5): the 256-bit VEX-encoded dpbusd /
// dpwssd fuse maddubs + madd + add, and dpbusd's int32 sums of u8·s8 products cannot saturate.
#if defined(__x86_64__) || defined(__i386__)

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c,avxvnni"))), apply_to = function)
#elif defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,avxvnni")
#endif

#define CQX(name) name##_avxvnni
#define CQX_ISA "avx-vnni"
#define CQX_VNNI 1
#define CQX_DPBUSD(acc, u, s) _mm256_dpbusd_avx_epi32(acc, u, s)
#define CQX_DPWSSD(acc, a, b) _mm256_dpwssd_avx_epi32(acc, a, b)
#include "cq_x86_kernels.h"

#if defined(__clang__)
#pragma clang attribute pop
#elif defined(__GNUC__)
#pragma GCC pop_options
#endif

#else
// Another architecture: ISO C wants at least one declaration in a translation unit.
typedef int cq_avxvnni_not_built;
#endif
