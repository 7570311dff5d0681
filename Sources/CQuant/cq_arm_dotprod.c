// aarch64 kernels with the dot-product extension (ARMv8.2+: Neoverse, Cortex-A55/A76 and later,
// Apple M1+, Graviton 2+): sdot sums four int8 products per lane in one instruction. Chosen at
// run time when getauxval(AT_HWCAP) has HWCAP_ASIMDDP.
#if defined(__aarch64__)

// The headers first, so the target region covers only this file's own functions.
#include "cq_internal.h"
#include <arm_neon.h>

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("dotprod"))), apply_to = function)
#elif defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("arch=armv8.2-a+dotprod")
#endif

#define CQA(name) name##_neon_dotprod
#define CQA_ISA "neon-dotprod"
#define CQA_DOT 1
#include "cq_arm_kernels.h"

#if defined(__clang__)
#pragma clang attribute pop
#elif defined(__GNUC__)
#pragma GCC pop_options
#endif

#else
// Another architecture: ISO C wants at least one declaration in a translation unit.
typedef int cq_dotprod_not_built;
#endif
