// aarch64 kernels, written once and compiled twice (cq_arm_neon.c: baseline NEON;
// cq_arm_dotprod.c: under target dotprod, ARMv8.2+). The includer defines
//   CQA(name)   the name with its ISA suffix
//   CQA_ISA     the name cq_kernel_isa reports
//   CQA_DOT     1: sdot (vdotq_s32); 0: vmull_s8 + pairwise widening adds
// NEON multiplies signed by signed, so unlike x86 every code is made signed first (q − 8,
// q − 32, the IQ4_NL book, MLX-Q8's q − 128) and no Σx corrections are needed except MLX's.
// Each kernel runs four rows per pass; a block's integer dot is exact as in the reference.
#include "cq_internal.h"

#include <arm_neon.h>

#define CQA_INLINE static inline __attribute__((always_inline))

/// acc + Σ a·b, four products per int32 lane (which four differs between the two forms; callers
/// only ever sum all lanes of one block or sub-block).
CQA_INLINE int32x4_t dot16(int32x4_t acc, int8x16_t a, int8x16_t b) {
#if CQA_DOT
    return vdotq_s32(acc, a, b);
#else
    acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(a), vget_low_s8(b)));
    return vpadalq_s16(acc, vmull_high_s8(a, b));
#endif
}

CQA_INLINE float f16_at(const uint8_t *p) {
    return vgetq_lane_f32(vcvt_f32_f16(vreinterpret_f16_u16(vdup_n_u16(cq_load_u16(p)))), 0);
}

CQA_INLINE int8x16_t load16(const void *p) { return vld1q_s8((const int8_t *)p); }

CQA_INLINE void prefetch(const uint8_t *row, size_t pos, size_t row_bytes, int R, size_t ahead) {
    // As on x86: past the row's end, the stream continues into this row's counterpart of the next pass.
    size_t at = pos + ahead;
    __builtin_prefetch(cq_prefetch_address(row, at < row_bytes ? at : (size_t)(R - 1) * row_bytes + at));
}

CQA_INLINE void finish_rows(float *y, int32_t r, const float32x4_t *acc, int R, int accumulate) {
    for (int i = 0; i < R; i++) {
        float v = vaddvq_f32(acc[i]);
        y[r + i] = accumulate ? y[r + i] + v : v;
    }
}

#define ROWS_DRIVER(kernel, view)                                                                      \
    int32_t r = r0;                                                                                    \
    for (; r + 4 <= r1; r += 4) kernel(w, &view, y, r, 4, accumulate);                                 \
    for (; r < r1; r++) kernel(w, &view, y, r, 1, accumulate);

#define ROWS_SETUP(acc_type)                                                                           \
    const uint8_t *row[4];                                                                             \
    acc_type acc[4];                                                                                   \
    for (int i = 0; i < R; i++) {                                                                      \
        row[i] = w->data + (size_t)(r + i) * w->row_bytes;                                             \
        acc[i] = vdupq_n_f32(0.0f);                                                                    \
    }

// ---- 32-value ggml types ----------------------------------------------------------------------

CQA_INLINE void q8_0_rows(const cq_matrix *w, const cq_act32 *a, float *y, int32_t r, int R, int accumulate) {
    ROWS_SETUP(float32x4_t)
    for (int32_t b = 0; b < w->cols / 32; b++) {
        int8x16_t x0 = load16(a->q + 32 * b), x1 = load16(a->q + 32 * b + 16);
        for (int i = 0; i < R; i++) {
            const uint8_t *blk = row[i] + (size_t)b * Q8_0_BYTES;
            prefetch(row[i], (size_t)b * Q8_0_BYTES, w->row_bytes, R, 4096);
            int32x4_t dot = dot16(dot16(vdupq_n_s32(0), load16(blk + 2), x0), load16(blk + 18), x1);
            acc[i] = vfmaq_n_f32(acc[i], vcvtq_f32_s32(dot), f16_at(blk) * a->d[b]);
        }
    }
    finish_rows(y, r, acc, R, accumulate);
}

/// Q4_0 and IQ4_NL: byte j holds elements j (low nibble) and j + 16 (high), made signed by
/// subtracting 8 or by the book lookup.
CQA_INLINE void q4_rows(const cq_matrix *w, const cq_act32 *a, float *y, int32_t r, int R, int accumulate, int book) {
    ROWS_SETUP(float32x4_t)
    const int8x16_t values = load16(cq_iq4nl_values);
    const uint8x16_t low4 = vdupq_n_u8(0x0F);
    for (int32_t b = 0; b < w->cols / 32; b++) {
        int8x16_t x0 = load16(a->q + 32 * b), x1 = load16(a->q + 32 * b + 16);
        for (int i = 0; i < R; i++) {
            const uint8_t *blk = row[i] + (size_t)b * Q4_0_BYTES;
            prefetch(row[i], (size_t)b * Q4_0_BYTES, w->row_bytes, R, 2048);
            uint8x16_t q = vld1q_u8(blk + 2);
            uint8x16_t lo = vandq_u8(q, low4), hi = vshrq_n_u8(q, 4);
            int8x16_t wl, wh;
            if (book) {
                wl = vqtbl1q_s8(values, lo);
                wh = vqtbl1q_s8(values, hi);
            } else {
                wl = vsubq_s8(vreinterpretq_s8_u8(lo), vdupq_n_s8(8));
                wh = vsubq_s8(vreinterpretq_s8_u8(hi), vdupq_n_s8(8));
            }
            int32x4_t dot = dot16(dot16(vdupq_n_s32(0), wl, x0), wh, x1);
            acc[i] = vfmaq_n_f32(acc[i], vcvtq_f32_s32(dot), f16_at(blk) * a->d[b]);
        }
    }
    finish_rows(y, r, acc, R, accumulate);
}

CQA_INLINE void q4_0_rows(const cq_matrix *w, const cq_act32 *a, float *y, int32_t r, int R, int accumulate) {
    q4_rows(w, a, y, r, R, accumulate, 0);
}

CQA_INLINE void iq4_nl_rows(const cq_matrix *w, const cq_act32 *a, float *y, int32_t r, int R, int accumulate) {
    q4_rows(w, a, y, r, R, accumulate, 1);
}

// ---- MLX affine ------------------------------------------------------------------------------

CQA_INLINE const float *mlx_group_sums(const cq_act32 *a, int32_t group) {
    return group == 32 ? a->xs : group == 64 ? a->xs64 : a->xs128;
}

/// Σ_g bias_g·Σx̂_g, four bf16 biases widened per step.
CQA_INLINE float32x4_t mlx_bias_terms(const uint16_t *bias, const float *xsum, int32_t ng, float32x4_t acc) {
    int32_t g = 0;
    for (; g + 4 <= ng; g += 4) {
        float32x4_t bf = vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(bias + g), 16));
        acc = vfmaq_f32(acc, bf, vld1q_f32(xsum + g));
    }
    float tail = 0.0f;
    for (; g < ng; g++) tail += cq_bf16_to_f32(bias[g]) * xsum[g];
    return vsetq_lane_f32(vgetq_lane_f32(acc, 0) + tail, acc, 0);
}

/// MLX-Q4 (pair-split activation: the low nibbles are the block's even elements, the high ones
/// its odd elements) and MLX-Q8 (codes − 128, signed, and 128·Σx back per block).
CQA_INLINE void mlx_rows(const cq_matrix *w, const cq_act32 *a, float *y, int32_t r, int R, int accumulate, int bits) {
    ROWS_SETUP(float32x4_t)
    const uint16_t *sc[4];
    int32_t ng = w->cols / w->group, per_group = w->group / 32;
    for (int i = 0; i < R; i++) sc[i] = w->scales + (size_t)(r + i) * ng;
    for (int32_t b = 0; b < w->cols / 32; b++) {
        int8x16_t x0 = load16(a->q + 32 * b), x1 = load16(a->q + 32 * b + 16);
        int32x4_t start = bits == 8 ? vdupq_n_s32(32 * a->s[b]) : vdupq_n_s32(0);
        for (int i = 0; i < R; i++) {
            int32x4_t dot;
            if (bits == 4) {
                const uint8_t *c = row[i] + 16 * (size_t)b;
                prefetch(row[i], 16 * (size_t)b, w->row_bytes, R, 2048);
                uint8x16_t q = vld1q_u8(c);
                dot = dot16(dot16(start, vreinterpretq_s8_u8(vandq_u8(q, vdupq_n_u8(0x0F))), x0),
                            vreinterpretq_s8_u8(vshrq_n_u8(q, 4)), x1);
            } else {
                const uint8_t *c = row[i] + 32 * (size_t)b;
                prefetch(row[i], 32 * (size_t)b, w->row_bytes, R, 4096);
                int8x16_t q0 = vreinterpretq_s8_u8(veorq_u8(vld1q_u8(c), vdupq_n_u8(0x80)));
                int8x16_t q1 = vreinterpretq_s8_u8(veorq_u8(vld1q_u8(c + 16), vdupq_n_u8(0x80)));
                dot = dot16(dot16(start, q0, x0), q1, x1);
            }
            acc[i] = vfmaq_n_f32(acc[i], vcvtq_f32_s32(dot), cq_bf16_to_f32(sc[i][b / per_group]) * a->d[b]);
        }
    }
    const float *xsum = mlx_group_sums(a, w->group);
    for (int i = 0; i < R; i++) acc[i] = mlx_bias_terms(w->biases + (size_t)(r + i) * ng, xsum, ng, acc[i]);
    finish_rows(y, r, acc, R, accumulate);
}

CQA_INLINE void mlx_q4_rows(const cq_matrix *w, const cq_act32 *a, float *y, int32_t r, int R, int accumulate) {
    mlx_rows(w, a, y, r, R, accumulate, 4);
}

CQA_INLINE void mlx_q8_rows(const cq_matrix *w, const cq_act32 *a, float *y, int32_t r, int R, int accumulate) {
    mlx_rows(w, a, y, r, R, accumulate, 8);
}

// ---- K types ----------------------------------------------------------------------------------

/// Q4_K: per 32-value sub-block an integer dot times its 6-bit scale, summed in int32 over the
/// super-block; the mins once per super-block against the activation's 16-value sums.
CQA_INLINE void q4_k_rows(const cq_matrix *w, const cq_actk *a, float *y, int32_t r, int R, int accumulate) {
    ROWS_SETUP(float32x4_t)
    const uint8x16_t low4 = vdupq_n_u8(0x0F);
    for (int32_t sb = 0; sb < w->cols / 256; sb++) {
        const int8_t *qx = a->q + 256 * sb;
        // Σx of each 32-value sub-block, from the pairs of 16-value sums.
        int16x8_t bs0 = vld1q_s16(a->bsums + 16 * sb), bs1 = vld1q_s16(a->bsums + 16 * sb + 8);
        int32x4_t sub0 = vpaddlq_s16(bs0), sub1 = vpaddlq_s16(bs1);  // lanes: sub-blocks 0–3, 4–7
        float dx = a->d[sb];
        for (int i = 0; i < R; i++) {
            const uint8_t *blk = row[i] + (size_t)sb * Q4_K_BYTES;
            for (int l = 0; l < Q4_K_BYTES; l += 64) prefetch(row[i], (size_t)sb * Q4_K_BYTES + (size_t)l, w->row_bytes, R, 2048);
            const uint8_t *s = blk + Q4_K_OFF_SCALES;
            int sc[8], m[8];
            for (int j = 0; j < 8; j++) {
                sc[j] = j < 4 ? s[j] & 63 : (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4);
                m[j] = j < 4 ? s[j + 4] & 63 : (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
            }
            int32x4_t m0 = {m[0], m[1], m[2], m[3]}, m1 = {m[4], m[5], m[6], m[7]};
            int32_t imin = vaddvq_s32(vmlaq_s32(vmulq_s32(sub0, m0), sub1, m1));
            int32x4_t isum = vdupq_n_s32(0);
            const uint8_t *qs = blk + Q4_K_OFF_QS;
            for (int c = 0; c < 4; c++) {
                uint8x16_t q0 = vld1q_u8(qs + 32 * c), q1 = vld1q_u8(qs + 32 * c + 16);
                const int8_t *xc = qx + 64 * c;
                int32x4_t lo = dot16(dot16(vdupq_n_s32(0), vreinterpretq_s8_u8(vandq_u8(q0, low4)), load16(xc)),
                                     vreinterpretq_s8_u8(vandq_u8(q1, low4)), load16(xc + 16));
                int32x4_t hi = dot16(dot16(vdupq_n_s32(0), vreinterpretq_s8_u8(vshrq_n_u8(q0, 4)), load16(xc + 32)),
                                     vreinterpretq_s8_u8(vshrq_n_u8(q1, 4)), load16(xc + 48));
                isum = vmlaq_n_s32(isum, lo, sc[2 * c]);
                isum = vmlaq_n_s32(isum, hi, sc[2 * c + 1]);
            }
            acc[i] = vfmaq_n_f32(acc[i], vcvtq_f32_s32(isum), f16_at(blk) * dx);
            acc[i] = vsetq_lane_f32(vgetq_lane_f32(acc[i], 0) - (f16_at(blk + 2) * dx) * (float)imin, acc[i], 0);
        }
    }
    finish_rows(y, r, acc, R, accumulate);
}

/// Q6_K: codes from ql (low 4 bits) and qh (2 bits), minus 32, one 16-value sub-block per
/// vector, each dot times its int8 scale.
CQA_INLINE void q6_k_rows(const cq_matrix *w, const cq_actk *a, float *y, int32_t r, int R, int accumulate) {
    ROWS_SETUP(float32x4_t)
    const uint8x16_t low4 = vdupq_n_u8(0x0F), two = vdupq_n_u8(0x03);
    const int8x16_t offset = vdupq_n_s8(32);
    for (int32_t sb = 0; sb < w->cols / 256; sb++) {
        const int8_t *qx = a->q + 256 * sb;
        float dx = a->d[sb];
        for (int i = 0; i < R; i++) {
            const uint8_t *blk = row[i] + (size_t)sb * Q6_K_BYTES;
            for (int l = 0; l < Q6_K_BYTES; l += 64) prefetch(row[i], (size_t)sb * Q6_K_BYTES + (size_t)l, w->row_bytes, R, 3072);
            const int8_t *scales = (const int8_t *)(blk + Q6_K_OFF_SCALES);
            int32x4_t isum = vdupq_n_s32(0);
            for (int h = 0; h < 2; h++) {
                const uint8_t *ql = blk + 64 * h, *qh = blk + Q6_K_OFF_QH + 32 * h;
                for (int part = 0; part < 2; part++) {  // l in [16·part, 16·part + 16)
                    uint8x16_t l0 = vld1q_u8(ql + 16 * part), l1 = vld1q_u8(ql + 32 + 16 * part);
                    uint8x16_t hb = vld1q_u8(qh + 16 * part);
                    uint8x16_t q[4];
                    q[0] = vorrq_u8(vandq_u8(l0, low4), vshlq_n_u8(vandq_u8(hb, two), 4));
                    q[1] = vorrq_u8(vandq_u8(l1, low4), vshlq_n_u8(vandq_u8(vshrq_n_u8(hb, 2), two), 4));
                    q[2] = vorrq_u8(vshrq_n_u8(l0, 4), vshlq_n_u8(vandq_u8(vshrq_n_u8(hb, 4), two), 4));
                    q[3] = vorrq_u8(vshrq_n_u8(l1, 4), vshlq_n_u8(vshrq_n_u8(hb, 6), 4));
                    for (int k = 0; k < 4; k++) {
                        int e = 128 * h + 32 * k + 16 * part;  // first element of this sub-block
                        int32x4_t d = dot16(vdupq_n_s32(0), vsubq_s8(vreinterpretq_s8_u8(q[k]), offset), load16(qx + e));
                        isum = vmlaq_n_s32(isum, d, scales[e / 16]);
                    }
                }
            }
            acc[i] = vfmaq_n_f32(acc[i], vcvtq_f32_s32(isum), f16_at(blk + Q6_K_OFF_D) * dx);
        }
    }
    finish_rows(y, r, acc, R, accumulate);
}

// ---- Entry points -----------------------------------------------------------------------------

#define ENTRY32(name)                                                                                  \
    static void CQA(name)(const cq_matrix *w, const void *act, float *y, int32_t r0, int32_t r1, int accumulate) { \
        cq_act32 a = cq_act32_view(act, w->cols);                                                      \
        ROWS_DRIVER(name##_rows, a)                                                                    \
    }
#define ENTRYK(name)                                                                                   \
    static void CQA(name)(const cq_matrix *w, const void *act, float *y, int32_t r0, int32_t r1, int accumulate) { \
        cq_actk a = cq_actk_view(act, w->cols);                                                        \
        ROWS_DRIVER(name##_rows, a)                                                                    \
    }
ENTRY32(q8_0)
ENTRY32(q4_0)
ENTRY32(iq4_nl)
ENTRY32(mlx_q4)
ENTRY32(mlx_q8)
ENTRYK(q4_k)
ENTRYK(q6_k)

// ---- Activation quantizers (bit-exact with the scalar ones: FRINTA is roundf) ----------------

/// Quantizes `n` values (a multiple of 16) at x into q with one scale: returns d (NaN, codes 0,
/// for a non-finite block) and Σq.
CQA_INLINE float quantize_values(const float *x, int n, int8_t *q, int32_t *sum) {
    float32x4_t amax = vdupq_n_f32(0.0f);
    uint32x4_t finite = vdupq_n_u32(0xFFFFFFFFu);
    for (int k = 0; k < n; k += 4) {
        float32x4_t v = vabsq_f32(vld1q_f32(x + k));
        finite = vandq_u32(finite, vcleq_f32(v, vdupq_n_f32(3.4028235e38f)));
        amax = vmaxq_f32(amax, v);
    }
    if (vminvq_u32(finite) == 0) {
        memset(q, 0, (size_t)n);
        *sum = 0;
        return NAN;
    }
    float d = vmaxvq_f32(amax) / 127.0f;
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    int32x4_t total = vdupq_n_s32(0);
    for (int k = 0; k < n; k += 16) {
        int32x4_t i0 = vcvtq_s32_f32(vrndaq_f32(vmulq_n_f32(vld1q_f32(x + k), id)));
        int32x4_t i1 = vcvtq_s32_f32(vrndaq_f32(vmulq_n_f32(vld1q_f32(x + k + 4), id)));
        int32x4_t i2 = vcvtq_s32_f32(vrndaq_f32(vmulq_n_f32(vld1q_f32(x + k + 8), id)));
        int32x4_t i3 = vcvtq_s32_f32(vrndaq_f32(vmulq_n_f32(vld1q_f32(x + k + 12), id)));
        total = vaddq_s32(total, vaddq_s32(vaddq_s32(i0, i1), vaddq_s32(i2, i3)));
        int16x8_t h0 = vcombine_s16(vmovn_s32(i0), vmovn_s32(i1)), h1 = vcombine_s16(vmovn_s32(i2), vmovn_s32(i3));
        vst1q_s8(q + k, vcombine_s8(vmovn_s16(h0), vmovn_s16(h1)));
    }
    *sum = vaddvq_s32(total);
    return d;
}

static void CQA(act32)(const float *x, int32_t n, void *act) {
    cq_act32 a = cq_act32_view(act, n);
    for (int32_t b = 0; b < n / 32; b++) {
        float *d = (float *)a.d + b, *xs = (float *)a.xs + b;
        int32_t *s = (int32_t *)a.s + b;
        *d = quantize_values(x + 32 * b, 32, (int8_t *)a.q + 32 * b, s);
        *xs = *d * (float)*s;
    }
    cq_act32_group_sums(act, n);
}

static void CQA(act32_pairsplit)(const float *x, int32_t n, void *act) {
    CQA(act32)(x, n, act);
    int8_t *q = (int8_t *)act;
    for (int32_t b = 0; b < n / 32; b++) {
        int8x16x2_t v = vld2q_s8(q + 32 * b);  // de-interleaves: val[0] even elements, val[1] odd
        vst1q_s8(q + 32 * b, v.val[0]);
        vst1q_s8(q + 32 * b + 16, v.val[1]);
    }
}

static void CQA(actk)(const float *x, int32_t n, void *act) {
    cq_actk a = cq_actk_view(act, n);
    for (int32_t sb = 0; sb < n / 256; sb++) {
        int32_t unused;
        int8_t *q = (int8_t *)a.q + 256 * sb;
        ((float *)a.d)[sb] = quantize_values(x + 256 * sb, 256, q, &unused);
        for (int i = 0; i < 16; i++) ((int16_t *)a.bsums)[16 * sb + i] = (int16_t)vaddlvq_s8(load16(q + 16 * i));
    }
}

const cq_kernels CQA(cq_kernels) = {
    .isa = CQA_ISA,
    .q8_0 = CQA(q8_0), .q4_0 = CQA(q4_0), .iq4_nl = CQA(iq4_nl), .q4_k = CQA(q4_k), .q6_k = CQA(q6_k),
    .mlx_q4 = CQA(mlx_q4), .mlx_q8 = CQA(mlx_q8),
    .act32 = CQA(act32), .act32_pairsplit = CQA(act32_pairsplit), .actk = CQA(actk),
};
