// The public entry points: type facts, validation, and the runtime dispatch. The kernel table is
// the only mutable global: chosen once under pthread_once, then read with one atomic load per
// call, so threads already inside a matvec keep a consistent table when a test switches ISA.
#include "cq_internal.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif
#elif defined(__aarch64__) && defined(__APPLE__)
#include <sys/sysctl.h>
#endif

int cq_block_values(cq_type type) {
    switch (type) {
    case CQ_F32: case CQ_F16: case CQ_BF16: return 1;
    case CQ_Q8_0: case CQ_Q4_0: case CQ_IQ4_NL: case CQ_MLX_Q4: case CQ_MLX_Q8: return 32;
    case CQ_Q4_K: case CQ_Q6_K: return 256;
    }
    return 0;
}

size_t cq_row_bytes(cq_type type, int32_t cols) {
    int block = cq_block_values(type);
    if (block == 0 || cols <= 0 || cols % block != 0) return 0;
    size_t n = (size_t)cols;
    switch (type) {
    case CQ_F32: return 4 * n;
    case CQ_F16: case CQ_BF16: return 2 * n;
    case CQ_Q8_0: return n / 32 * Q8_0_BYTES;
    case CQ_Q4_0: case CQ_IQ4_NL: return n / 32 * Q4_0_BYTES;
    case CQ_Q4_K: return n / 256 * Q4_K_BYTES;
    case CQ_Q6_K: return n / 256 * Q6_K_BYTES;
    case CQ_MLX_Q4: return n / 2;
    case CQ_MLX_Q8: return n;
    }
    return 0;
}

int cq_valid_cols(cq_type type, int32_t cols, int32_t group) {
    if (cq_row_bytes(type, cols) == 0) return 0;
    if (cq_is_mlx(type)) return (group == 32 || group == 64 || group == 128) && cols % group == 0;
    return 1;
}

const char *cq_type_name(cq_type type) {
    switch (type) {
    case CQ_F32: return "F32";
    case CQ_F16: return "F16";
    case CQ_BF16: return "BF16";
    case CQ_Q8_0: return "Q8_0";
    case CQ_Q4_0: return "Q4_0";
    case CQ_IQ4_NL: return "IQ4_NL";
    case CQ_Q4_K: return "Q4_K";
    case CQ_Q6_K: return "Q6_K";
    case CQ_MLX_Q4: return "MLX-Q4";
    case CQ_MLX_Q8: return "MLX-Q8";
    }
    return "unknown";
}

static size_t round64(size_t n) { return (n + 63) & ~(size_t)63; }

size_t cq_activation_bytes(cq_type type, int32_t cols) {
    if (cols <= 0) return 0;
    size_t n = (size_t)cols;
    if (cq_is_quantized32(type) && n % 32 == 0) {
        size_t nb = n / 32;
        return round64(n + 4 * (3 * nb + nb / 2 + nb / 4));
    }
    if (cq_is_k_type(type) && n % 256 == 0) return round64(n + 4 * (n / 256) + 2 * (n / 16));
    return 0;
}

int cq_check_matrix(const cq_matrix *w) {
    if (w == NULL || w->data == NULL || w->rows < 0) return -1;
    if (!cq_is_quantized32(w->type) && !cq_is_k_type(w->type)) return -1;
    if (!cq_valid_cols(w->type, w->cols, w->group)) return -1;
    if (w->row_bytes != cq_row_bytes(w->type, w->cols)) return -1;
    if (cq_is_mlx(w->type) && (w->scales == NULL || w->biases == NULL)) return -1;
    return 0;
}

static void fail(const char *what, cq_type type, int32_t cols) {
    fprintf(stderr, "CQuant: %s: type %s (%d), cols %d\n", what, cq_type_name(type), (int)type, (int)cols);
    abort();
}

// ---- Dispatch ---------------------------------------------------------------------------------

static const cq_kernels *candidates[8];
static int candidate_count;
static pthread_once_t probe_once = PTHREAD_ONCE_INIT;
static _Atomic(const cq_kernels *) active;

static void probe(void) {
    int n = 0;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
    if (avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni"))
        candidates[n++] = &cq_kernels_avx512vnni;
    if (avx2 && __builtin_cpu_supports("avxvnni")) candidates[n++] = &cq_kernels_avxvnni;
    if (avx2) candidates[n++] = &cq_kernels_avx2;
#elif defined(__aarch64__)
#if defined(__linux__)
    if (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) candidates[n++] = &cq_kernels_neon_dotprod;
#elif defined(__APPLE__)
    // Every Apple Silicon core has it; macOS 12+ says so here (not built or run on macOS yet).
    int dotprod = 0;
    size_t size = sizeof dotprod;
    if (sysctlbyname("hw.optional.arm.FEAT_DotProd", &dotprod, &size, NULL, 0) == 0 && dotprod)
        candidates[n++] = &cq_kernels_neon_dotprod;
#endif
    candidates[n++] = &cq_kernels_neon;
#endif
    candidates[n++] = &cq_kernels_scalar;
    candidate_count = n;
    atomic_store(&active, candidates[0]);
}

static const cq_kernels *kernels(void) {
    pthread_once(&probe_once, probe);
    return atomic_load_explicit(&active, memory_order_acquire);
}

const char *cq_kernel_isa(void) { return kernels()->isa; }

void cq_force_scalar(int enabled) {
    pthread_once(&probe_once, probe);
    atomic_store(&active, enabled ? &cq_kernels_scalar : candidates[0]);
}

int cq_available_isas(const char **names, int capacity) {
    pthread_once(&probe_once, probe);
    for (int i = 0; i < candidate_count && i < capacity; i++) names[i] = candidates[i]->isa;
    return candidate_count;
}

int cq_set_isa(const char *isa) {
    pthread_once(&probe_once, probe);
    if (isa == NULL) {
        atomic_store(&active, candidates[0]);
        return 0;
    }
    for (int i = 0; i < candidate_count; i++) {
        if (strcmp(candidates[i]->isa, isa) == 0) {
            atomic_store(&active, candidates[i]);
            return 0;
        }
    }
    return -1;
}

static cq_rows_fn rows_fn(const cq_kernels *k, cq_type type) {
    switch (type) {
    case CQ_Q8_0: return k->q8_0;
    case CQ_Q4_0: return k->q4_0;
    case CQ_IQ4_NL: return k->iq4_nl;
    case CQ_Q4_K: return k->q4_k;
    case CQ_Q6_K: return k->q6_k;
    case CQ_MLX_Q4: return k->mlx_q4;
    case CQ_MLX_Q8: return k->mlx_q8;
    default: return NULL;
    }
}

static void matvec(const cq_kernels *k, const cq_matrix *w, const void *act, float *y, int32_t r0, int32_t r1,
                   int accumulate) {
    if (cq_check_matrix(w) != 0) fail("cq_matvec_rows: invalid matrix", w ? w->type : CQ_F32, w ? w->cols : 0);
    if (r0 < 0 || r1 > w->rows || r0 > r1) fail("cq_matvec_rows: row range outside the matrix", w->type, w->cols);
    if (r0 == r1) return;
    rows_fn(k, w->type)(w, act, y, r0, r1, accumulate);
}

void cq_matvec_rows(const cq_matrix *w, const void *act, float *y, int32_t row_begin, int32_t row_end, int accumulate) {
    matvec(kernels(), w, act, y, row_begin, row_end, accumulate);
}

void cq_matvec_rows_reference(const cq_matrix *w, const void *act, float *y, int32_t row_begin, int32_t row_end,
                              int accumulate) {
    matvec(&cq_kernels_scalar, w, act, y, row_begin, row_end, accumulate);
}

void cq_quantize_activation(cq_type type, const float *x, int32_t cols, void *act) {
    if (cq_activation_bytes(type, cols) == 0) fail("cq_quantize_activation: no activation for", type, cols);
    const cq_kernels *k = kernels();
    // The padding too, so an activation's bytes are a function of x alone.
    size_t used = cq_is_k_type(type) ? (size_t)cols + 4 * (size_t)(cols / 256) + 2 * (size_t)(cols / 16)
                                     : (size_t)cols + 4 * (3 * (size_t)(cols / 32) + (size_t)(cols / 64) + (size_t)(cols / 128));
    memset((uint8_t *)act + used, 0, cq_activation_bytes(type, cols) - used);
    if (cq_is_k_type(type)) k->actk(x, cols, act);
    else if (type == CQ_MLX_Q4) k->act32_pairsplit(x, cols, act);
    else k->act32(x, cols, act);
}

void cq_dequantize_activation(cq_type type, const void *act, int32_t cols, float *out) {
    if (cq_activation_bytes(type, cols) == 0) fail("cq_dequantize_activation: no activation for", type, cols);
    cq_dequantize_activation_checked(type, act, cols, out);
}
