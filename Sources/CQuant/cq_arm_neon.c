// Baseline aarch64 NEON kernels (every ARMv8-A core): int8 products through vmull_s8 and
// pairwise widening adds.
#if defined(__aarch64__)

#define CQA(name) name##_neon
#define CQA_ISA "neon"
#define CQA_DOT 0
#include "cq_arm_kernels.h"

#else
// Another architecture: ISO C wants at least one declaration in a translation unit.
typedef int cq_neon_not_built;
#endif
