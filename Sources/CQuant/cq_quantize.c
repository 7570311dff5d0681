// Offline quantizers: f32 rows → ggml blocks, and MLX's affine quantization. Bit-exactness with
// ggml (and gguf-py, whose Q8_0/Q4_0 are the same formulas in numpy) and with MLX depends on
// evaluating the same f32 operations in the same order, unfused: every sum below runs
// left to right over the block, every a·b·c is (a·b)·c, and nothing may be contracted to an fma.
#include "cq_internal.h"

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

/// ggml's nearest_int: round half to even (the default rounding mode), exact for |v| < 2^22.
static inline int nearest_even(float v) { return (int)rintf(v); }

static inline int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

static inline void store_f16(uint8_t *p, float v) {
    uint16_t h = cq_f32_to_f16(v);
    memcpy(p, &h, 2);
}

/// The value of largest magnitude (the first one, on ties) and that magnitude.
static inline float signed_absmax(const float *x, int n, float *amax_out) {
    float amax = 0.0f, max = 0.0f;
    for (int i = 0; i < n; i++) {
        if (fabsf(x[i]) > amax) {
            amax = fabsf(x[i]);
            max = x[i];
        }
    }
    *amax_out = amax;
    return max;
}

// ---- Q8_0 and Q4_0: round to nearest on the absmax grid ---------------------------------------

static void quantize_q8_0_block(const float *x, uint8_t *blk) {
    float amax = 0.0f;
    for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[j]));
    float d = amax / 127.0f;
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    store_f16(blk, d);
    for (int j = 0; j < 32; j++) blk[2 + j] = (uint8_t)(int8_t)cq_round_away(x[j] * id);
}

/// The signed extreme maps to code 0 (value −8·d), so the 16 levels reach it exactly and the
/// opposite side gets the remaining 7: +8.5 then truncation is round-half-up on the shifted grid.
static void quantize_q4_0_block(const float *x, uint8_t *blk) {
    float amax;
    float max = signed_absmax(x, 32, &amax);
    float d = max / -8.0f;
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    store_f16(blk, d);
    for (int j = 0; j < 16; j++) {
        float lo = x[j] * id, hi = x[j + 16] * id;
        int qlo = (int8_t)(lo + 8.5f), qhi = (int8_t)(hi + 8.5f);
        blk[2 + j] = (uint8_t)((qlo > 15 ? 15 : qlo) | (qhi > 15 ? 15 : qhi) << 4);
    }
}

// ---- IQ4_NL: a non-linear 16-level book, scale chosen by weighted least squares ---------------

/// The index of the book entry nearest to v (ties go to the upper entry, as ggml's search does).
static int iq4nl_nearest(float v) {
    const int8_t *t = cq_iq4nl_values;
    if (v <= t[0]) return 0;
    if (v >= t[15]) return 15;
    int lo = 0, hi = 15;  // invariant: t[lo] <= v < t[hi]
    while (hi - lo > 1) {
        int mid = (lo + hi) / 2;
        if (v < t[mid]) hi = mid;
        else lo = mid;
    }
    return v - t[hi - 1] < t[hi] - v ? hi - 1 : hi;
}

/// For the codes v ↦ nearest(inv·v), the weighted sums Σ w·q·x and Σ w·q² (w = x²) whose ratio
/// is the least-squares scale for those codes.
static void iq4nl_fit(const float *x, float inv, float *sqx, float *sq2) {
    float a = 0.0f, b = 0.0f;
    for (int j = 0; j < 32; j++) {
        float q = (float)cq_iq4nl_values[iq4nl_nearest(inv * x[j])];
        float w = x[j] * x[j];
        a += w * q * x[j];
        b += w * q * q;
    }
    *sqx = a;
    *sq2 = b;
}

/// Tries the grid that puts the extreme on the book's −127 end and 7 neighbours either side,
/// keeps the scale of least weighted error (maximal Σqx²/Σq², since error = Σwx² − (Σqx)²/Σq²),
/// then requantizes against that scale.
static void quantize_iq4_nl_block(const float *x, uint8_t *blk) {
    float amax;
    float max = signed_absmax(x, 32, &amax);
    float d = 0.0f;
    if (amax >= 1e-15f) {
        float first = -max / (float)cq_iq4nl_values[0];
        float sqx, sq2;
        iq4nl_fit(x, 1.0f / first, &sqx, &sq2);
        d = sq2 > 0.0f ? sqx / sq2 : 0.0f;
        float best = d * sqx;
        for (int t = -7; t <= 7; t++) {
            iq4nl_fit(x, (float)(t + cq_iq4nl_values[0]) / max, &sqx, &sq2);
            if (sq2 > 0.0f && sqx * sqx > best * sq2) {
                d = sqx / sq2;
                best = d * sqx;
            }
        }
    }
    store_f16(blk, d);
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    for (int j = 0; j < 16; j++)
        blk[2 + j] = (uint8_t)(iq4nl_nearest(id * x[j]) | iq4nl_nearest(id * x[j + 16]) << 4);
}

// ---- Q4_K: affine sub-blocks (scale, min) found by weighted least squares ---------------------

/// Sub-block fit x ≈ scale·l + offset over levels l ∈ [0, 15] with weights w: starts from the
/// plain min/max grid, then for 21 stretched grids refits (scale, offset) by weighted least
/// squares over the rounded levels and keeps the fit of least weighted squared error. The
/// offset is kept ≤ 0 (a sub-block's min is stored as a non-negative number to subtract).
/// Writes the levels to L and returns the scale; *neg_min = −offset ≥ 0.
static float fit_affine_levels(const float *x, const float *w, uint8_t *L, float *neg_min) {
    enum { N = 32, NMAX = 15, STEPS = 20 };
    float lo = x[0], hi = x[0];
    float sw = w[0], swx = w[0] * x[0];
    for (int i = 1; i < N; i++) {
        if (x[i] < lo) lo = x[i];
        if (x[i] > hi) hi = x[i];
        sw += w[i];
        swx += w[i] * x[i];
    }
    if (lo > 0.0f) lo = 0.0f;
    if (hi == lo) {
        memset(L, 0, N);
        *neg_min = -lo;
        return 0.0f;
    }
    float inv = (float)NMAX / (hi - lo);
    float scale = 1.0f / inv, offset = lo;
    float best = 0.0f;
    for (int i = 0; i < N; i++) {
        L[i] = (uint8_t)clampi(nearest_even(inv * (x[i] - lo)), 0, NMAX);
        float e = scale * (float)L[i] + lo - x[i];
        best += w[i] * (e * e);
    }
    uint8_t trial[N];
    // Each grid is laid from the best offset found so far (not from the initial min), as ggml
    // does: later grids refine around the improved fit.
    for (int step = 0; step <= STEPS; step++) {
        inv = (-1.0f + 0.1f * (float)step + (float)NMAX) / (hi - offset);
        float sl = 0.0f, sl2 = 0.0f, sxl = 0.0f;
        for (int i = 0; i < N; i++) {
            int l = clampi(nearest_even(inv * (x[i] - offset)), 0, NMAX);
            trial[i] = (uint8_t)l;
            sl += w[i] * (float)l;
            sl2 += w[i] * (float)l * (float)l;
            sxl += w[i] * (float)l * x[i];
        }
        float det = sw * sl2 - sl * sl;
        if (!(det > 0.0f)) continue;
        float s = (sw * sxl - swx * sl) / det;
        float m = (sl2 * swx - sl * sxl) / det;
        if (m > 0.0f) {
            m = 0.0f;
            s = sxl / sl2;
        }
        float err = 0.0f;
        for (int i = 0; i < N; i++) {
            float e = s * (float)trial[i] + m - x[i];
            err += w[i] * (e * e);
        }
        if (err < best) {
            memcpy(L, trial, N);
            best = err;
            scale = s;
            offset = m;
        }
    }
    *neg_min = -offset;
    return scale;
}

/// Packs sub-block j's 6-bit scale and min into the 12 scale bytes (the inverse of the decoder
/// in cq_reference.c: bytes 0–3 scales 0–3, 4–7 mins 0–3, 8–11 the low nibbles of 4–7, with
/// their top two bits in the spare bits of bytes 0–7).
static void q4k_pack_scale_min(uint8_t *s, int j, unsigned sc, unsigned m) {
    if (j < 4) {
        s[j] = (uint8_t)sc;
        s[j + 4] = (uint8_t)m;
    } else {
        s[j + 4] = (uint8_t)((sc & 0x0F) | (m & 0x0F) << 4);
        s[j - 4] |= (uint8_t)((sc >> 4) << 6);
        s[j] |= (uint8_t)((m >> 4) << 6);
    }
}

static void quantize_q4_k_block(const float *x, uint8_t *blk) {
    uint8_t L[256];
    float scale[8], neg_min[8], w[32];
    float max_scale = 0.0f, max_min = 0.0f;
    for (int j = 0; j < 8; j++) {
        const float *xj = x + 32 * j;
        // Weights favour large values (their error costs more) on top of the sub-block's RMS.
        float s2 = 0.0f;
        for (int l = 0; l < 32; l++) s2 += xj[l] * xj[l];
        float rms = sqrtf(s2 / 32.0f);
        for (int l = 0; l < 32; l++) w[l] = rms + fabsf(xj[l]);
        scale[j] = fit_affine_levels(xj, w, L + 32 * j, &neg_min[j]);
        if (scale[j] > max_scale) max_scale = scale[j];
        if (neg_min[j] > max_min) max_min = neg_min[j];
    }
    float to_scale6 = max_scale > 0.0f ? 63.0f / max_scale : 0.0f;
    float to_min6 = max_min > 0.0f ? 63.0f / max_min : 0.0f;
    uint8_t *s = blk + Q4_K_OFF_SCALES;
    memset(s, 0, 12);
    for (int j = 0; j < 8; j++) {
        // The uint8 conversion first, then the cap: a (pathological) negative scale wraps and
        // caps at 63, as ggml's does.
        uint8_t sc = (uint8_t)nearest_even(to_scale6 * scale[j]);
        uint8_t m = (uint8_t)nearest_even(to_min6 * neg_min[j]);
        q4k_pack_scale_min(s, j, sc < 63 ? sc : 63, m < 63 ? m : 63);
    }
    store_f16(blk, max_scale / 63.0f);
    store_f16(blk + 2, max_min / 63.0f);
    // Requantize every value against the scales as stored (f16 super-scales times 6-bit ones).
    float d = cq_f16_to_f32(cq_load_u16(blk)), dmin = cq_f16_to_f32(cq_load_u16(blk + 2));
    for (int j = 0; j < 8; j++) {
        int sc, m;
        if (j < 4) {
            sc = s[j] & 63;
            m = s[j + 4] & 63;
        } else {
            sc = (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4);
            m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
        }
        float ds = d * (float)sc;
        if (ds == 0.0f) continue;
        float dm = dmin * (float)m;
        for (int l = 0; l < 32; l++) L[32 * j + l] = (uint8_t)clampi(nearest_even((x[32 * j + l] + dm) / ds), 0, 15);
    }
    uint8_t *qs = blk + Q4_K_OFF_QS;
    for (int c = 0; c < 4; c++)
        for (int l = 0; l < 32; l++) qs[32 * c + l] = (uint8_t)(L[64 * c + l] | L[64 * c + 32 + l] << 4);
}

// ---- Q6_K: symmetric sub-blocks of 16, scale by weighted least squares ------------------------

/// Σ w·x·l and Σ w·l² (w = x²) for the levels l = clamp(nearest(inv·x), −32, 31); with L,
/// also stores them (offset by 32, as the block holds them).
static void symmetric_fit(const float *x, float inv, float *sxl, float *sl2, uint8_t *L) {
    float a = 0.0f, b = 0.0f;
    for (int i = 0; i < 16; i++) {
        int li = clampi(nearest_even(inv * x[i]), -32, 31);
        float l = (float)li, w = x[i] * x[i];
        a += w * x[i] * l;
        b += w * l * l;
        if (L) L[i] = (uint8_t)(li + 32);
    }
    *sxl = a;
    *sl2 = b;
}

/// The scale of 16 values on the levels −32…31: the grid putting the extreme at −32, and 18
/// grids stretched by ±0.1…0.9 levels, each refit by least squares (w = x²); the best fit wins
/// (largest (Σwxl)²/Σwl², i.e. least weighted squared error). Writes the winning levels to L.
static float fit_symmetric_levels(const float *x, uint8_t *L) {
    float amax;
    float max = signed_absmax(x, 16, &amax);
    if (amax < 1e-15f) {
        memset(L, 0, 16);
        return 0.0f;
    }
    float sxl, sl2;
    symmetric_fit(x, -32.0f / max, &sxl, &sl2, L);
    float scale = sl2 != 0.0f ? sxl / sl2 : 0.0f;
    float best = scale * sxl;
    for (int t = -9; t <= 9; t++) {
        if (t == 0) continue;
        float inv = -(32.0f + 0.1f * (float)t) / max;
        symmetric_fit(x, inv, &sxl, &sl2, NULL);
        if (sl2 > 0.0f && sxl * sxl > best * sl2) {
            symmetric_fit(x, inv, &sxl, &sl2, L);
            scale = sxl / sl2;
            best = scale * sxl;
        }
    }
    return scale;
}

static void quantize_q6_k_block(const float *x, uint8_t *blk) {
    float scale[16];
    uint8_t L[256];
    float max_abs = 0.0f, max_scale = 0.0f;
    for (int i = 0; i < 16; i++) {
        scale[i] = fit_symmetric_levels(x + 16 * i, L + 16 * i);
        if (fabsf(scale[i]) > max_abs) {
            max_abs = fabsf(scale[i]);
            max_scale = scale[i];
        }
    }
    memset(blk, 0, Q6_K_BYTES);
    if (max_abs < 1e-15f) return;  // all zero: d = 0 and every byte 0
    // The largest sub-scale maps to −128 so its sign is the one with the extra level.
    float inv = -128.0f / max_scale;
    store_f16(blk + Q6_K_OFF_D, 1.0f / inv);
    int8_t *sc = (int8_t *)(blk + Q6_K_OFF_SCALES);
    for (int i = 0; i < 16; i++) {
        int v = nearest_even(inv * scale[i]);
        sc[i] = (int8_t)(v < 127 ? v : 127);
    }
    // Requantize against the stored scales; a sub-block whose scale rounded to 0 keeps its
    // search levels (they dequantize to 0 anyway).
    float d = cq_f16_to_f32(cq_load_u16(blk + Q6_K_OFF_D));
    for (int i = 0; i < 16; i++) {
        float ds = d * (float)sc[i];
        if (ds == 0.0f) continue;
        for (int j = 0; j < 16; j++) L[16 * i + j] = (uint8_t)(clampi(nearest_even(x[16 * i + j] / ds), -32, 31) + 32);
    }
    uint8_t *ql = blk, *qh = blk + Q6_K_OFF_QH;
    for (int half = 0; half < 2; half++) {
        const uint8_t *Lh = L + 128 * half;
        for (int l = 0; l < 32; l++) {
            ql[64 * half + l] = (uint8_t)((Lh[l] & 0x0F) | (Lh[l + 64] & 0x0F) << 4);
            ql[64 * half + l + 32] = (uint8_t)((Lh[l + 32] & 0x0F) | (Lh[l + 96] & 0x0F) << 4);
            qh[32 * half + l] = (uint8_t)((Lh[l] >> 4) | (Lh[l + 32] >> 4) << 2 | (Lh[l + 64] >> 4) << 4 | (Lh[l + 96] >> 4) << 6);
        }
    }
}

// ---- Entry points -----------------------------------------------------------------------------

static int all_finite(const float *src, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!(fabsf(src[i]) <= 3.4028235e38f)) return 0;
    return 1;
}

int cq_quantize_rows(cq_type type, const float *src, int32_t rows, int32_t cols, void *dst) {
    void (*block)(const float *, uint8_t *);
    int values, bytes;
    switch (type) {
    case CQ_Q8_0: block = quantize_q8_0_block; values = 32; bytes = Q8_0_BYTES; break;
    case CQ_Q4_0: block = quantize_q4_0_block; values = 32; bytes = Q4_0_BYTES; break;
    case CQ_IQ4_NL: block = quantize_iq4_nl_block; values = 32; bytes = Q4_0_BYTES; break;
    case CQ_Q4_K: block = quantize_q4_k_block; values = 256; bytes = Q4_K_BYTES; break;
    case CQ_Q6_K: block = quantize_q6_k_block; values = 256; bytes = Q6_K_BYTES; break;
    default: return -1;
    }
    if (rows < 0 || cols <= 0 || cols % values != 0) return -1;
    size_t n = (size_t)rows * (size_t)cols;
    if (!all_finite(src, n)) return -2;
    uint8_t *out = (uint8_t *)dst;
    for (size_t b = 0; b < n / (size_t)values; b++) block(src + b * (size_t)values, out + b * (size_t)bytes);
    return 0;
}

/// One MLX group: the range [min, max] spread over 2^bits − 1 steps, oriented so that the
/// extreme of larger magnitude is the bias (exact) and, when the steps allow, the scale is
/// nudged so that value is a whole number of steps from 0 (0 then dequantizes exactly).
static void quantize_mlx_group(const float *x, int32_t group, int bits, uint8_t *codes, uint16_t *scale_out,
                               uint16_t *bias_out) {
    float top = (float)((1 << bits) - 1);
    float lo = INFINITY, hi = -INFINITY;
    for (int32_t j = 0; j < group; j++) {
        hi = fmaxf(hi, x[j]);
        lo = fminf(lo, x[j]);
    }
    int low_edge = fabsf(lo) > fabsf(hi);
    float scale = fmaxf((hi - lo) / top, 1e-7f);
    if (!low_edge) scale = -scale;
    float edge = low_edge ? lo : hi;
    float q0 = rintf(edge / scale);
    float bias = 0.0f;
    if (q0 != 0.0f) {
        scale = edge / q0;
        bias = edge;
    }
    for (int32_t j = 0; j < group; j++) {
        float q = fminf(fmaxf(rintf((x[j] - bias) / scale), 0.0f), top);
        if (bits == 8) codes[j] = (uint8_t)q;
        else if (j % 2 == 0) codes[j / 2] = (uint8_t)q;
        else codes[j / 2] |= (uint8_t)((uint8_t)q << 4);
    }
    *scale_out = cq_f32_to_bf16(scale);
    *bias_out = cq_f32_to_bf16(bias);
}

int cq_quantize_rows_mlx(int bits, int32_t group, const float *src, int32_t rows, int32_t cols, void *codes,
                         uint16_t *scales, uint16_t *biases) {
    cq_type type = bits == 4 ? CQ_MLX_Q4 : bits == 8 ? CQ_MLX_Q8 : CQ_F32;
    if (!cq_is_mlx(type) || rows < 0 || !cq_valid_cols(type, cols, group)) return -1;
    size_t n = (size_t)rows * (size_t)cols;
    if (!all_finite(src, n)) return -2;
    uint8_t *out = (uint8_t *)codes;
    size_t group_bytes = (size_t)group * (size_t)bits / 8;
    for (size_t g = 0; g < n / (size_t)group; g++)
        quantize_mlx_group(src + g * (size_t)group, group, bits, out + g * group_bytes, scales + g, biases + g);
    return 0;
}
