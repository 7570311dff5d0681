// AVX512-VNNI kernels (Ice Lake / Sapphire Rapids servers, Zen 4 and 5): the EVEX dpbusd /
// dpwssd at 256 bits (AVX512VL), with 32 vector registers for the four-row passes.
#if defined(__x86_64__) || defined(__i386__)

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni"))), \
                             apply_to = function)
#elif defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")
#endif

#define CQX(name) name##_avx512vnni
#define CQX_ISA "avx512-vnni"
#define CQX_VNNI 1
#define CQX_DPBUSD(acc, u, s) _mm256_dpbusd_epi32(acc, u, s)
#define CQX_DPWSSD(acc, a, b) _mm256_dpwssd_epi32(acc, a, b)
#include "cq_x86_kernels.h"

#if defined(__clang__)
#pragma clang attribute pop
#elif defined(__GNUC__)
#pragma GCC pop_options
#endif

#else
// Another architecture: ISO C wants at least one declaration in a translation unit.
typedef int cq_avx512vnni_not_built;
#endif
