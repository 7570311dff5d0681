// The portable scalar code: activation quantizers (the bit pattern every SIMD quantizer must
// reproduce), the naive matvec kernels the fast ones are tested against, and the dequantizers.
// Every block term is written in one canonical float form (documented per type); the SIMD
// kernels evaluate the same integer dots and the same per-block products, only summed in
// another order.
#include "cq_internal.h"

// Compilers may contract a·b + c into an fma where the target has one (aarch64 always; gcc does
// by default): that would change bits against gguf-py's and MLX's unfused numpy/C arithmetic.
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

const int8_t cq_iq4nl_values[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

// ---- Activation quantizers --------------------------------------------------------------------

/// One block of `len` values: d = absmax/127, q = roundf(x/d) (as 1/d times x, like ggml), Σq.
/// A non-finite value poisons the block (d = NaN, q = 0) instead of producing silent garbage.
static float quantize_block(const float *x, int len, int8_t *q, const uint8_t *order, int32_t *sum) {
    float amax = 0.0f;
    int finite = 1;
    for (int j = 0; j < len; j++) {
        float a = fabsf(x[j]);
        finite &= a <= 3.4028235e38f;  // false for ±Inf and NaN
        amax = a > amax ? a : amax;
    }
    if (!finite) {
        memset(q, 0, (size_t)len);
        *sum = 0;
        return NAN;
    }
    float d = amax / 127.0f;
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    int32_t s = 0;
    for (int j = 0; j < len; j++) {
        int v = cq_round_away(x[order ? order[j] : j] * id);
        q[j] = (int8_t)v;
        s += v;
    }
    *sum = s;
    return d;
}

static const uint8_t pair_split_order[32] = {
    0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30,
    1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31,
};

void cq_act32_group_sums(void *act, int32_t n) {
    cq_act32 a = cq_act32_view(act, n);
    float *xs64 = (float *)a.xs64, *xs128 = (float *)a.xs128;
    int32_t nb = n / 32;
    for (int32_t g = 0; g < nb / 2; g++) xs64[g] = a.xs[2 * g] + a.xs[2 * g + 1];
    for (int32_t g = 0; g < nb / 4; g++) xs128[g] = xs64[2 * g] + xs64[2 * g + 1];
}

static void act32(const float *x, int32_t n, void *act, const uint8_t *order) {
    cq_act32 a = cq_act32_view(act, n);
    int8_t *q = (int8_t *)a.q;
    float *d = (float *)a.d, *xs = (float *)a.xs;
    int32_t *s = (int32_t *)a.s;
    for (int32_t b = 0; b < n / 32; b++) {
        d[b] = quantize_block(x + 32 * b, 32, q + 32 * b, order, &s[b]);
        xs[b] = d[b] * (float)s[b];
    }
    cq_act32_group_sums(act, n);
}

void cq_act32_scalar(const float *x, int32_t n, void *act) { act32(x, n, act, NULL); }
void cq_act32_pairsplit_scalar(const float *x, int32_t n, void *act) { act32(x, n, act, pair_split_order); }

void cq_actk_scalar(const float *x, int32_t n, void *act) {
    cq_actk a = cq_actk_view(act, n);
    int8_t *q = (int8_t *)a.q;
    float *d = (float *)a.d;
    int16_t *bsums = (int16_t *)a.bsums;
    for (int32_t sb = 0; sb < n / 256; sb++) {
        int32_t unused;
        d[sb] = quantize_block(x + 256 * sb, 256, q + 256 * sb, NULL, &unused);
        for (int i = 0; i < 16; i++) {
            int32_t s = 0;
            for (int j = 0; j < 16; j++) s += q[256 * sb + 16 * i + j];
            bsums[16 * sb + i] = (int16_t)s;
        }
    }
}

// ---- Reference kernels ------------------------------------------------------------------------

static inline void store(float *y, int32_t r, float v, int accumulate) { y[r] = accumulate ? y[r] + v : v; }

/// Σ over blocks of (d_w·d_x)·Σ q_w·q_x.
static void ref_q8_0(const cq_matrix *w, const void *act, float *y, int32_t r0, int32_t r1, int accumulate) {
    cq_act32 a = cq_act32_view(act, w->cols);
    int32_t nb = w->cols / 32;
    for (int32_t r = r0; r < r1; r++) {
        const uint8_t *row = w->data + (size_t)r * w->row_bytes;
        float sum = 0.0f;
        for (int32_t b = 0; b < nb; b++) {
            const uint8_t *blk = row + (size_t)b * Q8_0_BYTES;
            const int8_t *qw = (const int8_t *)(blk + 2);
            const int8_t *qx = a.q + 32 * b;
            int32_t dot = 0;
            for (int j = 0; j < 32; j++) dot += qw[j] * qx[j];
            sum += (cq_f16_to_f32(cq_load_u16(blk)) * a.d[b]) * (float)dot;
        }
        store(y, r, sum, accumulate);
    }
}

/// Σ over blocks of (d_w·d_x)·Σ (q_w − 8)·q_x; byte j holds elements j and j + 16.
static void ref_q4_0(const cq_matrix *w, const void *act, float *y, int32_t r0, int32_t r1, int accumulate) {
    cq_act32 a = cq_act32_view(act, w->cols);
    int32_t nb = w->cols / 32;
    for (int32_t r = r0; r < r1; r++) {
        const uint8_t *row = w->data + (size_t)r * w->row_bytes;
        float sum = 0.0f;
        for (int32_t b = 0; b < nb; b++) {
            const uint8_t *blk = row + (size_t)b * Q4_0_BYTES;
            const int8_t *qx = a.q + 32 * b;
            int32_t dot = 0;
            for (int j = 0; j < 16; j++) {
                dot += ((blk[2 + j] & 0x0F) - 8) * qx[j];
                dot += ((blk[2 + j] >> 4) - 8) * qx[j + 16];
            }
            sum += (cq_f16_to_f32(cq_load_u16(blk)) * a.d[b]) * (float)dot;
        }
        store(y, r, sum, accumulate);
    }
}

/// As Q4_0 with the codes looked up in IQ4_NL's table.
static void ref_iq4_nl(const cq_matrix *w, const void *act, float *y, int32_t r0, int32_t r1, int accumulate) {
    cq_act32 a = cq_act32_view(act, w->cols);
    int32_t nb = w->cols / 32;
    for (int32_t r = r0; r < r1; r++) {
        const uint8_t *row = w->data + (size_t)r * w->row_bytes;
        float sum = 0.0f;
        for (int32_t b = 0; b < nb; b++) {
            const uint8_t *blk = row + (size_t)b * Q4_0_BYTES;
            const int8_t *qx = a.q + 32 * b;
            int32_t dot = 0;
            for (int j = 0; j < 16; j++) {
                dot += cq_iq4nl_values[blk[2 + j] & 0x0F] * qx[j];
                dot += cq_iq4nl_values[blk[2 + j] >> 4] * qx[j + 16];
            }
            sum += (cq_f16_to_f32(cq_load_u16(blk)) * a.d[b]) * (float)dot;
        }
        store(y, r, sum, accumulate);
    }
}

/// The six-bit scale and min of sub-block j (0…7) of a Q4_K block's 12 scale bytes.
static inline void q4k_scale_min(const uint8_t *s, int j, int *sc, int *m) {
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4);
        *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

/// Per super-block: (d·d_x)·Σ_j sc_j·Σ q·q_x − (dmin·d_x)·Σ_j m_j·Σq_x(j), the mins through the
/// activation's 16-value sums. Per 64 values, 32 bytes: low nibbles = first 32, high = next 32.
static void ref_q4_k(const cq_matrix *w, const void *act, float *y, int32_t r0, int32_t r1, int accumulate) {
    cq_actk a = cq_actk_view(act, w->cols);
    int32_t ns = w->cols / 256;
    for (int32_t r = r0; r < r1; r++) {
        const uint8_t *row = w->data + (size_t)r * w->row_bytes;
        float sum = 0.0f;
        for (int32_t sb = 0; sb < ns; sb++) {
            const uint8_t *blk = row + (size_t)sb * Q4_K_BYTES;
            const uint8_t *qs = blk + Q4_K_OFF_QS;
            const int8_t *qx = a.q + 256 * sb;
            const int16_t *bs = a.bsums + 16 * sb;
            int32_t isum = 0, imin = 0;
            for (int j = 0; j < 8; j++) {
                int sc, m;
                q4k_scale_min(blk + Q4_K_OFF_SCALES, j, &sc, &m);
                const uint8_t *qj = qs + 32 * (j / 2);
                int shift = 4 * (j & 1);
                int32_t dot = 0;
                for (int l = 0; l < 32; l++) dot += ((qj[l] >> shift) & 0x0F) * qx[32 * j + l];
                isum += sc * dot;
                imin += m * (bs[2 * j] + bs[2 * j + 1]);
            }
            float dx = a.d[sb];
            sum += (cq_f16_to_f32(cq_load_u16(blk)) * dx) * (float)isum;
            sum -= (cq_f16_to_f32(cq_load_u16(blk + 2)) * dx) * (float)imin;
        }
        store(y, r, sum, accumulate);
    }
}

/// The 6-bit code of element e (0…255) of a Q6_K block, 0…63 (the value is code − 32).
static inline int q6k_code(const uint8_t *blk, int e) {
    int half = e / 128, i = e % 128, l = i % 32, quarter = i / 32;
    const uint8_t *ql = blk + 64 * half, *qh = blk + Q6_K_OFF_QH + 32 * half;
    int low = quarter & 1 ? ql[l + 32] : ql[l];
    low = quarter & 2 ? low >> 4 : low & 0x0F;
    int high = (qh[l] >> (2 * quarter)) & 3;
    return low | (high << 4);
}

/// Per super-block: (d·d_x)·Σ_i sc_i·(Σ q·q_x − 32·Σq_x(i)) over its 16 sub-blocks of 16.
static void ref_q6_k(const cq_matrix *w, const void *act, float *y, int32_t r0, int32_t r1, int accumulate) {
    cq_actk a = cq_actk_view(act, w->cols);
    int32_t ns = w->cols / 256;
    for (int32_t r = r0; r < r1; r++) {
        const uint8_t *row = w->data + (size_t)r * w->row_bytes;
        float sum = 0.0f;
        for (int32_t sb = 0; sb < ns; sb++) {
            const uint8_t *blk = row + (size_t)sb * Q6_K_BYTES;
            const int8_t *scales = (const int8_t *)(blk + Q6_K_OFF_SCALES);
            const int8_t *qx = a.q + 256 * sb;
            const int16_t *bs = a.bsums + 16 * sb;
            int32_t isum = 0;
            for (int i = 0; i < 16; i++) {
                int32_t dot = 0;
                for (int j = 0; j < 16; j++) dot += q6k_code(blk, 16 * i + j) * qx[16 * i + j];
                isum += scales[i] * (dot - 32 * bs[i]);
            }
            sum += (cq_f16_to_f32(cq_load_u16(blk + Q6_K_OFF_D)) * a.d[sb]) * (float)isum;
        }
        store(y, r, sum, accumulate);
    }
}

/// The activation's Σx̂ over MLX group g of `group` values.
static inline float mlx_group_sum(const cq_act32 *a, int32_t group, int32_t g) {
    return group == 32 ? a->xs[g] : group == 64 ? a->xs64[g] : a->xs128[g];
}

/// Per 32-value block b of group g: (scale_g·d_x)·Σ q·q_x (q unsigned), plus per group
/// bias_g·Σx̂_g. MLX-Q4 codes: byte k = element 2k | element 2k+1 << 4, against the pair-split
/// activation; MLX-Q8: byte k = element k.
static void ref_mlx(const cq_matrix *w, const void *act, float *y, int32_t r0, int32_t r1, int accumulate, int bits) {
    cq_act32 a = cq_act32_view(act, w->cols);
    int32_t nb = w->cols / 32, ng = w->cols / w->group, per_group = w->group / 32;
    for (int32_t r = r0; r < r1; r++) {
        const uint8_t *row = w->data + (size_t)r * w->row_bytes;
        const uint16_t *sc = w->scales + (size_t)r * ng, *bi = w->biases + (size_t)r * ng;
        float sum = 0.0f;
        for (int32_t b = 0; b < nb; b++) {
            const int8_t *qx = a.q + 32 * b;
            int32_t dot = 0;
            if (bits == 4) {
                const uint8_t *c = row + 16 * (size_t)b;
                for (int k = 0; k < 16; k++) dot += (c[k] & 0x0F) * qx[k] + (c[k] >> 4) * qx[16 + k];
            } else {
                const uint8_t *c = row + 32 * (size_t)b;
                for (int k = 0; k < 32; k++) dot += c[k] * qx[k];
            }
            sum += (cq_bf16_to_f32(sc[b / per_group]) * a.d[b]) * (float)dot;
        }
        for (int32_t g = 0; g < ng; g++) sum += cq_bf16_to_f32(bi[g]) * mlx_group_sum(&a, w->group, g);
        store(y, r, sum, accumulate);
    }
}

static void ref_mlx_q4(const cq_matrix *w, const void *act, float *y, int32_t r0, int32_t r1, int accumulate) {
    ref_mlx(w, act, y, r0, r1, accumulate, 4);
}

static void ref_mlx_q8(const cq_matrix *w, const void *act, float *y, int32_t r0, int32_t r1, int accumulate) {
    ref_mlx(w, act, y, r0, r1, accumulate, 8);
}

const cq_kernels cq_kernels_scalar = {
    .isa = "scalar",
    .q8_0 = ref_q8_0, .q4_0 = ref_q4_0, .iq4_nl = ref_iq4_nl, .q4_k = ref_q4_k, .q6_k = ref_q6_k,
    .mlx_q4 = ref_mlx_q4, .mlx_q8 = ref_mlx_q8,
    .act32 = cq_act32_scalar, .act32_pairsplit = cq_act32_pairsplit_scalar, .actk = cq_actk_scalar,
};

// ---- Dequantization ---------------------------------------------------------------------------
// Each formula is gguf-py's (numpy, f32, unfused): the same products in the same order give the
// same bits.

void cq_dequantize_row(const cq_matrix *w, int32_t row, float *out) {
    const uint8_t *p = w->data + (size_t)row * w->row_bytes;
    int32_t n = w->cols;
    switch (w->type) {
    case CQ_F32:
        memcpy(out, p, 4 * (size_t)n);
        return;
    case CQ_F16:
        for (int32_t i = 0; i < n; i++) out[i] = cq_f16_to_f32(cq_load_u16(p + 2 * i));
        return;
    case CQ_BF16:
        for (int32_t i = 0; i < n; i++) out[i] = cq_bf16_to_f32(cq_load_u16(p + 2 * i));
        return;
    case CQ_Q8_0:
        for (int32_t b = 0; b < n / 32; b++, p += Q8_0_BYTES) {
            float d = cq_f16_to_f32(cq_load_u16(p));
            for (int j = 0; j < 32; j++) out[32 * b + j] = (float)(int8_t)p[2 + j] * d;
        }
        return;
    case CQ_Q4_0:
    case CQ_IQ4_NL:
        for (int32_t b = 0; b < n / 32; b++, p += Q4_0_BYTES) {
            float d = cq_f16_to_f32(cq_load_u16(p));
            for (int j = 0; j < 16; j++) {
                int lo = p[2 + j] & 0x0F, hi = p[2 + j] >> 4;
                if (w->type == CQ_Q4_0) {
                    out[32 * b + j] = d * (float)(lo - 8);
                    out[32 * b + 16 + j] = d * (float)(hi - 8);
                } else {
                    out[32 * b + j] = d * (float)cq_iq4nl_values[lo];
                    out[32 * b + 16 + j] = d * (float)cq_iq4nl_values[hi];
                }
            }
        }
        return;
    case CQ_Q4_K:
        for (int32_t sb = 0; sb < n / 256; sb++, p += Q4_K_BYTES) {
            float d = cq_f16_to_f32(cq_load_u16(p)), dmin = cq_f16_to_f32(cq_load_u16(p + 2));
            for (int j = 0; j < 8; j++) {
                int sc, m;
                q4k_scale_min(p + Q4_K_OFF_SCALES, j, &sc, &m);
                float ds = d * (float)sc, dm = dmin * (float)m;
                const uint8_t *qj = p + Q4_K_OFF_QS + 32 * (j / 2);
                int shift = 4 * (j & 1);
                for (int l = 0; l < 32; l++) out[256 * sb + 32 * j + l] = ds * (float)((qj[l] >> shift) & 0x0F) - dm;
            }
        }
        return;
    case CQ_Q6_K:
        for (int32_t sb = 0; sb < n / 256; sb++, p += Q6_K_BYTES) {
            float d = cq_f16_to_f32(cq_load_u16(p + Q6_K_OFF_D));
            const int8_t *scales = (const int8_t *)(p + Q6_K_OFF_SCALES);
            for (int e = 0; e < 256; e++) out[256 * sb + e] = (d * (float)scales[e / 16]) * (float)(q6k_code(p, e) - 32);
        }
        return;
    case CQ_MLX_Q4:
    case CQ_MLX_Q8: {
        int32_t ng = n / w->group;
        const uint16_t *sc = w->scales + (size_t)row * ng, *bi = w->biases + (size_t)row * ng;
        for (int32_t i = 0; i < n; i++) {
            int q = w->type == CQ_MLX_Q4 ? (p[i / 2] >> (4 * (i & 1))) & 0x0F : p[i];
            out[i] = cq_bf16_to_f32(sc[i / w->group]) * (float)q + cq_bf16_to_f32(bi[i / w->group]);
        }
        return;
    }
    }
}

void cq_dequantize_activation_checked(cq_type type, const void *act, int32_t cols, float *out) {
    if (cq_is_k_type(type)) {
        cq_actk a = cq_actk_view(act, cols);
        for (int32_t i = 0; i < cols; i++) out[i] = a.d[i / 256] * (float)a.q[i];
        return;
    }
    cq_act32 a = cq_act32_view(act, cols);
    for (int32_t b = 0; b < cols / 32; b++) {
        for (int j = 0; j < 32; j++) {
            int e = type == CQ_MLX_Q4 ? pair_split_order[j] : j;
            out[32 * b + e] = a.d[b] * (float)a.q[32 * b + j];
        }
    }
}
