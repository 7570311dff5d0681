#ifndef DUPLEX_CQ_INTERNAL_H
#define DUPLEX_CQ_INTERNAL_H
// Shared by the CQuant sources only: byte layouts, half-precision conversions, the activation
// layout, the kernel table the dispatcher fills.
#include "cquant.h"

#include <math.h>
#include <string.h>

// Byte sizes of the ggml blocks (ggml-common.h). Blocks are read through byte offsets and
// memcpy, never through struct pointers: GGUF only promises 32-byte alignment of a tensor, and a
// caller may hand rows at any even address.
enum {
    QK32 = 32,
    QK_K = 256,
    Q8_0_BYTES = 34,   // f16 d | int8 q[32]
    Q4_0_BYTES = 18,   // f16 d | 16 B nibbles
    Q4_K_BYTES = 144,  // f16 d | f16 dmin | 12 B scales | 128 B nibbles
    Q6_K_BYTES = 210,  // 128 B ql | 64 B qh | int8 scales[16] | f16 d
    Q4_K_OFF_SCALES = 4,
    Q4_K_OFF_QS = 16,
    Q6_K_OFF_QH = 128,
    Q6_K_OFF_SCALES = 192,
    Q6_K_OFF_D = 208,
};

/// IQ4_NL's non-linear code book (ggml's kvalues_iq4nl): sorted, code i → value.
extern const int8_t cq_iq4nl_values[16];

static inline uint16_t cq_load_u16(const uint8_t *p) {
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}

static inline float cq_f16_to_f32(uint16_t h) {
    // Exact for every f16, subnormals included: rebias normals by bit arithmetic, and let one
    // float multiply renormalise subnormals (2^-24 · mantissa is exact in f32).
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1F;
    uint32_t man = h & 0x3FF;
    uint32_t bits;
    if (exp == 0x1F) {
        bits = sign | 0x7F800000u | (man << 13);
    } else if (exp != 0) {
        bits = sign | ((exp + 112) << 23) | (man << 13);
    } else {
        float f = (float)man * 0x1p-24f;
        memcpy(&bits, &f, 4);
        bits |= sign;
    }
    float out;
    memcpy(&out, &bits, 4);
    return out;
}

/// Round-to-nearest-even f32 → f16 (what numpy's astype(float16) and F16C's vcvtps2ph do), so a
/// quantizer's stored scale has the same bits as gguf-py's.
static inline uint16_t cq_f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    uint32_t ax = x & 0x7FFFFFFFu;
    if (ax > 0x7F800000u) return sign | 0x7E00;              // NaN → quiet NaN
    if (ax >= 0x477FF000u) return sign | 0x7C00;             // ≥ 65520 rounds to infinity
    if (ax >= 0x38800000u) {                                 // normal f16 range (≥ 2^-14)
        uint32_t r = ax + 0xFFFu + ((ax >> 13) & 1u);        // round half to even at bit 13
        return sign | (uint16_t)((r - 0x38000000u) >> 13);
    }
    if (ax < 0x33000000u) return sign;                       // below 2^-25: rounds to zero
    // Subnormal f16: value = m · 2^-24 with m = round(ax · 2^24), ties to even.
    uint32_t e = ax >> 23;
    uint32_t man = (ax & 0x7FFFFFu) | 0x800000u;
    uint32_t shift = 126 - e;                                // 14 … 24
    uint32_t q = man >> shift;
    uint32_t rem = man & ((1u << shift) - 1);
    uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1))) q++;
    return sign | (uint16_t)q;
}

static inline float cq_bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float out;
    memcpy(&out, &bits, 4);
    return out;
}

static inline uint16_t cq_f32_to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)((x >> 16) | 0x40);
    return (uint16_t)((x + 0x7FFFu + ((x >> 16) & 1u)) >> 16);
}

// ---- Activation layouts (see cquant.h) -------------------------------------------------------
// 32-value types, n = cols, nb = n/32, all offsets from the 64-byte aligned base:
//   int8  q[n]             block b at q + 32b (pair-split order for MLX-Q4, natural otherwise)
//   float d[nb]            at n
//   int32 s[nb]            at n + 4nb          Σq of the block
//   float xs[nb]           at n + 8nb          d·Σq: the block's Σx̂ (bias terms of MLX types)
//   float xs64[nb/2]       at n + 12nb         Σx̂ over 64-value groups (MLX group 64)
//   float xs128[nb/4]      after xs64          Σx̂ over 128-value groups (MLX group 128)
// K types, ns = n/256:
//   int8  q[n]             natural order
//   float d[ns]            at n
//   int16 bsums[n/16]      at n + 4ns          Σq of each 16 values
typedef struct {
    const int8_t *q;
    const float *d;
    const int32_t *s;
    const float *xs;     // per 32-value block
    const float *xs64;
    const float *xs128;
} cq_act32;

typedef struct {
    const int8_t *q;
    const float *d;
    const int16_t *bsums;
} cq_actk;

static inline cq_act32 cq_act32_view(const void *act, int32_t n) {
    const uint8_t *p = (const uint8_t *)act;
    size_t nb = (size_t)n / 32;
    cq_act32 a;
    a.q = (const int8_t *)p;
    a.d = (const float *)(const void *)(p + n);
    a.s = (const int32_t *)(const void *)(p + n + 4 * nb);
    a.xs = (const float *)(const void *)(p + n + 8 * nb);
    a.xs64 = (const float *)(const void *)(p + n + 12 * nb);
    a.xs128 = a.xs64 + nb / 2;
    return a;
}

static inline cq_actk cq_actk_view(const void *act, int32_t n) {
    const uint8_t *p = (const uint8_t *)act;
    size_t ns = (size_t)n / 256;
    cq_actk a;
    a.q = (const int8_t *)p;
    a.d = (const float *)(const void *)(p + n);
    a.bsums = (const int16_t *)(const void *)(p + n + 4 * ns);
    return a;
}

/// p + offset for a prefetch, through integers: the address may lie past the matrix (the next
/// pass of a stream that has none), which a pointer may not even point to, but a prefetch may.
static inline const void *cq_prefetch_address(const uint8_t *p, size_t offset) {
    return (const void *)((uintptr_t)p + offset);
}

static inline int cq_is_k_type(cq_type t) { return t == CQ_Q4_K || t == CQ_Q6_K; }
static inline int cq_is_mlx(cq_type t) { return t == CQ_MLX_Q4 || t == CQ_MLX_Q8; }
static inline int cq_is_quantized32(cq_type t) {
    return t == CQ_Q8_0 || t == CQ_Q4_0 || t == CQ_IQ4_NL || cq_is_mlx(t);
}

// ---- Kernels ---------------------------------------------------------------------------------
/// Computes y[r] (+)= row r · x for r in [r0, r1). w, act, y are validated by the caller.
typedef void (*cq_rows_fn)(const cq_matrix *w, const void *act, float *y, int32_t r0, int32_t r1, int accumulate);
/// Quantizes x[n] into the 32-value or K activation layout.
typedef void (*cq_act_fn)(const float *x, int32_t n, void *act);

typedef struct {
    const char *isa;
    cq_rows_fn q8_0, q4_0, iq4_nl, q4_k, q6_k, mlx_q4, mlx_q8;
    cq_act_fn act32, act32_pairsplit, actk;
} cq_kernels;

extern const cq_kernels cq_kernels_scalar;

#if defined(__x86_64__) || defined(__i386__)
extern const cq_kernels cq_kernels_avx2;
extern const cq_kernels cq_kernels_avxvnni;
extern const cq_kernels cq_kernels_avx512vnni;
#endif
#if defined(__aarch64__)
extern const cq_kernels cq_kernels_neon;
extern const cq_kernels cq_kernels_neon_dotprod;
#endif

/// The scalar activation quantizers (also the reference the SIMD ones match bit for bit).
void cq_act32_scalar(const float *x, int32_t n, void *act);
void cq_act32_pairsplit_scalar(const float *x, int32_t n, void *act);
void cq_actk_scalar(const float *x, int32_t n, void *act);
/// cq_dequantize_activation once its arguments are known valid.
void cq_dequantize_activation_checked(cq_type type, const void *act, int32_t cols, float *out);
/// Fills the group sums (xs64, xs128) from xs: shared by every activation quantizer, in one order.
void cq_act32_group_sums(void *act, int32_t n);

/// Rounds half away from zero, like C's roundf and gguf-py's np_roundf.
static inline int cq_round_away(float v) { return (int)roundf(v); }

#endif
