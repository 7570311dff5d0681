// x86 kernels, written once and compiled three times (cq_x86_avx2.c, cq_x86_avxvnni.c,
// cq_x86_avx512vnni.c) under a target pragma each: the includer defines
//   CQX(name)   the name with its ISA suffix
//   CQX_ISA     the name cq_kernel_isa reports
//   CQX_VNNI    0: maddubs + madd pairs (AVX2); 1: dpbusd/dpwssd through CQX_DPBUSD/CQX_DPWSSD
// Every kernel runs four rows per pass so one activation load feeds four weight rows, and
// keeps a block's integer dot exact (as the reference) before any float is involved.
#include "cq_internal.h"

#include <immintrin.h>

#define CQX_INLINE static inline __attribute__((always_inline))

// ---- Integer dot primitives -------------------------------------------------------------------

/// acc + Σ (4 adjacent u8·s8 products) per int32 lane. The AVX2 form goes through int16 pair
/// sums, which saturate above 32767: callers keep u ≤ 128 and |s| ≤ 127 (2·128·127 = 32512).
CQX_INLINE __m256i dot_us8(__m256i acc, __m256i u, __m256i s) {
#if CQX_VNNI
    return CQX_DPBUSD(acc, u, s);
#else
    __m256i pairs = _mm256_maddubs_epi16(u, s);
    return _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
#endif
}

/// acc + Σ (2 adjacent s16·s16 products) per int32 lane.
CQX_INLINE __m256i dot_s16(__m256i acc, __m256i a, __m256i b) {
#if CQX_VNNI
    return CQX_DPWSSD(acc, a, b);
#else
    return _mm256_add_epi32(acc, _mm256_madd_epi16(a, b));
#endif
}

CQX_INLINE float hsum_ps(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

CQX_INLINE int32_t hsum_epi32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm_cvtsi128_si32(s);
}

/// The f16 at p, converted and broadcast to 8 lanes. Loading it with a broadcast matters: the
/// scalar route (_cvtsh_ss, or _mm_cvtsi32_si128 + cvtph) becomes vpinsrw into whatever register
/// clang has at hand — an accumulator — and chains every block of the loop to the last fma.
CQX_INLINE __m256 f16_bcast(const uint8_t *p) {
    return _mm256_cvtph_ps(_mm_set1_epi16((short)cq_load_u16(p)));
}

CQX_INLINE __m256 bf16_bcast(uint16_t h) {
    return _mm256_castsi256_ps(_mm256_set1_epi32((int)((uint32_t)h << 16)));
}

/// Software prefetch `ahead` bytes ahead in a row's stream (about 4000 weights: far enough to
/// cover DRAM latency at one core's bandwidth, near enough to stay in L1). Past the row's end the
/// stream continues where this row's counterpart in the next pass of R rows begins, since the
/// rows of a pass are read side by side; the hardware prefetchers alone restart R − 1 of the
/// streams every pass and leave a core at a third of the bandwidth it can draw.
CQX_INLINE void prefetch_row(const uint8_t *row, size_t pos, size_t row_bytes, int R, size_t ahead) {
    size_t at = pos + ahead;
    _mm_prefetch((const char *)cq_prefetch_address(row, at < row_bytes ? at : (size_t)(R - 1) * row_bytes + at), _MM_HINT_T0);
}

CQX_INLINE void finish_rows(float *y, int32_t r, const __m256 *acc, int R, int accumulate) {
    for (int i = 0; i < R; i++) {
        float v = hsum_ps(acc[i]);
        y[r + i] = accumulate ? y[r + i] + v : v;
    }
}

#define ROWS_DRIVER(kernel, view)                                                                      \
    int32_t r = r0;                                                                                    \
    for (; r + 4 <= r1; r += 4) kernel(w, &view, y, r, 4, accumulate);                                 \
    for (; r < r1; r++) kernel(w, &view, y, r, 1, accumulate);

CQX_INLINE __m256i load256(const void *p) { return _mm256_loadu_si256((const __m256i *)p); }

/// Two blocks' worth of a 32-value activation rearranged for two-block steps: the first halves
/// of blocks b and b + 1 side by side, then their second halves.
CQX_INLINE void act_pair(const int8_t *q, __m256i *first, __m256i *second) {
    __m256i x0 = load256(q), x1 = load256(q + 32);
    *first = _mm256_permute2x128_si256(x0, x1, 0x20);
    *second = _mm256_permute2x128_si256(x0, x1, 0x31);
}

/// A per-block float pair as [v0 ×4 | v1 ×4], the lane layout of a two-block step's int32 dots.
CQX_INLINE __m256 pair_ps(float v0, float v1) { return _mm256_set_m128(_mm_set1_ps(v1), _mm_set1_ps(v0)); }

/// Two f16 scales as [f0 ×4 | f1 ×4]. (Through one vmovd of both: converting them one at a time
/// invites clang's vpinsrw into a live register, a false dependency on the previous fma.)
CQX_INLINE __m256 f16_pair(const uint8_t *p0, const uint8_t *p1) {
    uint32_t both = (uint32_t)cq_load_u16(p0) | (uint32_t)cq_load_u16(p1) << 16;
    __m256 f = _mm256_castps128_ps256(_mm_cvtph_ps(_mm_cvtsi32_si128((int)both)));
    return _mm256_permutevar8x32_ps(f, _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1));
}

/// Two blocks' nibbles (16 bytes each, anywhere) → low nibbles [b0 | b1], high nibbles [b0 | b1].
CQX_INLINE void nibbles_pair(const uint8_t *p0, const uint8_t *p1, __m256i *lo, __m256i *hi) {
    __m256i q = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(const void *)p0)),
                                        _mm_loadu_si128((const __m128i *)(const void *)p1), 1);
    *lo = _mm256_and_si256(q, _mm256_set1_epi8(0x0F));
    *hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), _mm256_set1_epi8(0x0F));
}

/// Unsigned weights u (≤ 15) against two signed halves: Σ per int32 lane, [b0 ×4 | b1 ×4].
/// AVX2 adds the two int16 pair sums first (≤ 2·2·15·127 = 7620, no saturation).
CQX_INLINE __m256i dot_u4_pair(__m256i start, __m256i lo, __m256i xlo, __m256i hi, __m256i xhi) {
#if CQX_VNNI
    return CQX_DPBUSD(CQX_DPBUSD(start, lo, xlo), hi, xhi);
#else
    __m256i pairs = _mm256_add_epi16(_mm256_maddubs_epi16(lo, xlo), _mm256_maddubs_epi16(hi, xhi));
    return _mm256_add_epi32(start, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
#endif
}

// ---- 32-value ggml types ----------------------------------------------------------------------
// Each kernel takes two blocks per step: one pair of activation loads and permutes serves four
// rows, and one scale vector [block b ×4 | block b + 1 ×4] serves both blocks of a row. An odd
// last block runs alone with lanes 4–7 of its step zeroed.

/// Q8_0: |w| as the unsigned operand, w's sign moved onto the activation. Each block scales
/// its own int32x8 (folding two blocks' dots with vphaddd first is slower: three uops on AMD).
CQX_INLINE void q8_0_rows(const cq_matrix *w, const cq_act32 *a, float *y, int32_t r, int R, int accumulate) {
    const uint8_t *row[4];
    __m256 acc[4];
    for (int i = 0; i < R; i++) {
        row[i] = w->data + (size_t)(r + i) * w->row_bytes;
        acc[i] = _mm256_setzero_ps();
    }
    int32_t nb = w->cols / 32;
    for (int32_t b = 0; b < nb; b++) {
        __m256i x = load256(a->q + 32 * b);
        __m256 dx = _mm256_set1_ps(a->d[b]);
        for (int i = 0; i < R; i++) {
            const uint8_t *blk = row[i] + (size_t)b * Q8_0_BYTES;
            prefetch_row(row[i], (size_t)b * Q8_0_BYTES, w->row_bytes, R, 4096);
            __m256i q = load256(blk + 2);
            __m256i dot = dot_us8(_mm256_setzero_si256(), _mm256_sign_epi8(q, q), _mm256_sign_epi8(x, q));
            acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_mul_ps(f16_bcast(blk), dx), acc[i]);
        }
    }
    finish_rows(y, r, acc, R, accumulate);
}

/// Q4_0: nibbles stay unsigned (no sign trick); Σ(q − 8)·x = Σq·x − 8·Σx, the −8·Σx of each
/// block spread as −2·Σx over its 4 lanes (the accumulator's starting value, so VNNI pays nothing).
CQX_INLINE void q4_0_rows(const cq_matrix *w, const cq_act32 *a, float *y, int32_t r, int R, int accumulate) {
    const uint8_t *row[4];
    __m256 acc[4];
    for (int i = 0; i < R; i++) {
        row[i] = w->data + (size_t)(r + i) * w->row_bytes;
        acc[i] = _mm256_setzero_ps();
    }
    int32_t nb = w->cols / 32;
    for (int32_t b = 0; b < nb; b += 2) {
        int two = b + 1 < nb;
        __m256i xlo, xhi;
        if (two) act_pair(a->q + 32 * b, &xlo, &xhi);
        else {
            xlo = _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(const void *)(a->q + 32 * b)));
            xhi = _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(const void *)(a->q + 32 * b + 16)));
            xlo = _mm256_inserti128_si256(xlo, _mm_setzero_si128(), 1);
            xhi = _mm256_inserti128_si256(xhi, _mm_setzero_si128(), 1);
        }
        __m256i start = _mm256_setr_epi32(-2 * a->s[b], -2 * a->s[b], -2 * a->s[b], -2 * a->s[b],
                                          two ? -2 * a->s[b + 1] : 0, two ? -2 * a->s[b + 1] : 0,
                                          two ? -2 * a->s[b + 1] : 0, two ? -2 * a->s[b + 1] : 0);
        __m256 dx = pair_ps(a->d[b], two ? a->d[b + 1] : 0.0f);
        for (int i = 0; i < R; i++) {
            const uint8_t *b0 = row[i] + (size_t)b * Q4_0_BYTES, *b1 = two ? b0 + Q4_0_BYTES : b0;
            prefetch_row(row[i], (size_t)b * Q4_0_BYTES, w->row_bytes, R, 2048);
            __m256i lo, hi;
            nibbles_pair(b0 + 2, b1 + 2, &lo, &hi);
            __m256i dot = dot_u4_pair(start, lo, xlo, hi, xhi);
            acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_mul_ps(f16_pair(b0, b1), dx), acc[i]);
        }
    }
    finish_rows(y, r, acc, R, accumulate);
}

/// IQ4_NL: the 16-entry book looked up with one byte shuffle. AVX2 multiplies the signed values
/// by the sign trick; VNNI shifts the book by +128 into u8 (1…241) and takes 128·Σx back out
/// (32·Σx per lane) through the accumulator's starting value.
CQX_INLINE void iq4_nl_rows(const cq_matrix *w, const cq_act32 *a, float *y, int32_t r, int R, int accumulate) {
    const uint8_t *row[4];
    __m256 acc[4];
    for (int i = 0; i < R; i++) {
        row[i] = w->data + (size_t)(r + i) * w->row_bytes;
        acc[i] = _mm256_setzero_ps();
    }
    __m128i book128 = _mm_loadu_si128((const __m128i *)(const void *)cq_iq4nl_values);
#if CQX_VNNI
    book128 = _mm_xor_si128(book128, _mm_set1_epi8((char)0x80));
#endif
    const __m256i book = _mm256_broadcastsi128_si256(book128);
    int32_t nb = w->cols / 32;
    for (int32_t b = 0; b < nb; b += 2) {
        int two = b + 1 < nb;
        __m256i xlo, xhi;
        if (two) act_pair(a->q + 32 * b, &xlo, &xhi);
        else {
            xlo = _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(const void *)(a->q + 32 * b)));
            xhi = _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(const void *)(a->q + 32 * b + 16)));
            xlo = _mm256_inserti128_si256(xlo, _mm_setzero_si128(), 1);
            xhi = _mm256_inserti128_si256(xhi, _mm_setzero_si128(), 1);
        }
#if CQX_VNNI
        int32_t s0 = -32 * a->s[b], s1 = two ? -32 * a->s[b + 1] : 0;
        __m256i start = _mm256_setr_epi32(s0, s0, s0, s0, s1, s1, s1, s1);
#endif
        __m256 dx = pair_ps(a->d[b], two ? a->d[b + 1] : 0.0f);
        for (int i = 0; i < R; i++) {
            const uint8_t *b0 = row[i] + (size_t)b * Q4_0_BYTES, *b1 = two ? b0 + Q4_0_BYTES : b0;
            prefetch_row(row[i], (size_t)b * Q4_0_BYTES, w->row_bytes, R, 2048);
            __m256i lo, hi;
            nibbles_pair(b0 + 2, b1 + 2, &lo, &hi);
            lo = _mm256_shuffle_epi8(book, lo);
            hi = _mm256_shuffle_epi8(book, hi);
#if CQX_VNNI
            __m256i dot = CQX_DPBUSD(CQX_DPBUSD(start, lo, xlo), hi, xhi);
#else
            __m256i dot = dot_us8(dot_us8(_mm256_setzero_si256(), _mm256_sign_epi8(lo, lo), _mm256_sign_epi8(xlo, lo)),
                                  _mm256_sign_epi8(hi, hi), _mm256_sign_epi8(xhi, hi));
#endif
            acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_mul_ps(f16_pair(b0, b1), dx), acc[i]);
        }
    }
    finish_rows(y, r, acc, R, accumulate);
}

// ---- MLX affine ------------------------------------------------------------------------------

/// Σ_g bias_g·Σx̂_g for one row: eight bf16 biases widened per step.
CQX_INLINE __m256 mlx_bias_terms(const uint16_t *bias, const float *xsum, int32_t ng, __m256 acc) {
    int32_t g = 0;
    for (; g + 8 <= ng; g += 8) {
        __m128i h = _mm_loadu_si128((const __m128i *)(const void *)(bias + g));
        __m256 bf = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
        acc = _mm256_fmadd_ps(bf, _mm256_loadu_ps(xsum + g), acc);
    }
    float tail = 0.0f;
    for (; g < ng; g++) tail += cq_bf16_to_f32(bias[g]) * xsum[g];
    return _mm256_add_ps(acc, _mm256_setr_ps(tail, 0, 0, 0, 0, 0, 0, 0));
}

/// The scale and bias streams of an MLX row advance at 1/8 (Q4, group 32) or less of the codes'
/// pace: one prefetch of each per 32 blocks, a few hundred bytes ahead.
CQX_INLINE void mlx_prefetch_params(const uint16_t *sc, const uint16_t *bi, int32_t b, int32_t per_group, int32_t ng,
                                    int R) {
    if ((b & 31) != 0) return;
    size_t pos = 2 * (size_t)(b / per_group), bytes = 2 * (size_t)ng;
    prefetch_row((const uint8_t *)sc, pos, bytes, R, 256);
    prefetch_row((const uint8_t *)bi, pos, bytes, R, 256);
}

CQX_INLINE const float *mlx_group_sums(const cq_act32 *a, int32_t group) {
    return group == 32 ? a->xs : group == 64 ? a->xs64 : a->xs128;
}

/// The bf16 scales of blocks b and b + 1 of a row as [s(b) ×4 | s(b+1) ×4]. Group 32: two
/// adjacent bf16 in one u32, each moved to the top half of its lanes; larger groups share one.
CQX_INLINE __m256 mlx_scale_pair(const uint16_t *sc, int32_t b, int32_t per_group, int two) {
    if (per_group == 1 && two) {
        uint32_t both;
        memcpy(&both, sc + b, 4);
        __m256i v = _mm256_sllv_epi32(_mm256_set1_epi32((int)both), _mm256_setr_epi32(16, 16, 16, 16, 0, 0, 0, 0));
        return _mm256_castsi256_ps(_mm256_and_si256(v, _mm256_set1_epi32((int)0xFFFF0000u)));
    }
    return bf16_bcast(sc[b / per_group]);
}

/// MLX-Q4: 32 contiguous bytes of codes are two blocks; low nibbles are the even elements of
/// both, high nibbles the odd ones, matching the pair-split activation after act_pair.
CQX_INLINE void mlx_q4_rows(const cq_matrix *w, const cq_act32 *a, float *y, int32_t r, int R, int accumulate) {
    const uint8_t *row[4];
    const uint16_t *sc[4];
    __m256 acc[4];
    int32_t ng = w->cols / w->group, per_group = w->group / 32;
    for (int i = 0; i < R; i++) {
        row[i] = w->data + (size_t)(r + i) * w->row_bytes;
        sc[i] = w->scales + (size_t)(r + i) * ng;
        acc[i] = _mm256_setzero_ps();
    }
    int32_t nb = w->cols / 32;
    for (int32_t b = 0; b < nb; b += 2) {
        int two = b + 1 < nb;
        __m256i xlo, xhi;
        if (two) act_pair(a->q + 32 * b, &xlo, &xhi);
        else {
            xlo = _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(const void *)(a->q + 32 * b)));
            xhi = _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(const void *)(a->q + 32 * b + 16)));
            xlo = _mm256_inserti128_si256(xlo, _mm_setzero_si128(), 1);
            xhi = _mm256_inserti128_si256(xhi, _mm_setzero_si128(), 1);
        }
        __m256 dx = pair_ps(a->d[b], two ? a->d[b + 1] : 0.0f);
        for (int i = 0; i < R; i++) {
            const uint8_t *c = row[i] + 16 * (size_t)b;
            prefetch_row(row[i], 16 * (size_t)b, w->row_bytes, R, 2048);
            mlx_prefetch_params(sc[i], w->biases + (size_t)(r + i) * ng, b, per_group, ng, R);
            __m256i lo, hi;
            nibbles_pair(c, two ? c + 16 : c, &lo, &hi);
            __m256i dot = dot_u4_pair(_mm256_setzero_si256(), lo, xlo, hi, xhi);
            __m256 d = _mm256_mul_ps(mlx_scale_pair(sc[i], b, per_group, two), dx);
            acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), d, acc[i]);
        }
    }
    const float *xsum = mlx_group_sums(a, w->group);
    for (int i = 0; i < R; i++) acc[i] = mlx_bias_terms(w->biases + (size_t)(r + i) * ng, xsum, ng, acc[i]);
    finish_rows(y, r, acc, R, accumulate);
}

/// MLX-Q8: codes 0…255. VNNI takes them unsigned as they are; AVX2 flips them to q − 128 (xor
/// 0x80) so the pair sums cannot saturate, and adds 128·Σx back (16·Σx per lane).
CQX_INLINE void mlx_q8_rows(const cq_matrix *w, const cq_act32 *a, float *y, int32_t r, int R, int accumulate) {
    const uint8_t *row[4];
    const uint16_t *sc[4];
    __m256 acc[4];
    int32_t ng = w->cols / w->group, per_group = w->group / 32;
    for (int i = 0; i < R; i++) {
        row[i] = w->data + (size_t)(r + i) * w->row_bytes;
        sc[i] = w->scales + (size_t)(r + i) * ng;
        acc[i] = _mm256_setzero_ps();
    }
    int32_t nb = w->cols / 32;
    for (int32_t b = 0; b < nb; b++) {
        __m256i x = load256(a->q + 32 * b);
        __m256 dx = _mm256_set1_ps(a->d[b]);
#if !CQX_VNNI
        __m256i back = _mm256_set1_epi32(16 * a->s[b]);
#endif
        for (int i = 0; i < R; i++) {
            const uint8_t *c = row[i] + 32 * (size_t)b;
            if ((b & 1) == 0) prefetch_row(row[i], 32 * (size_t)b, w->row_bytes, R, 4096);
            mlx_prefetch_params(sc[i], w->biases + (size_t)(r + i) * ng, b, per_group, ng, R);
            __m256i q = load256(c);
#if CQX_VNNI
            __m256i dot = dot_us8(_mm256_setzero_si256(), q, x);
#else
            __m256i f = _mm256_xor_si256(q, _mm256_set1_epi8((char)0x80));
            __m256i dot = dot_us8(back, _mm256_sign_epi8(f, f), _mm256_sign_epi8(x, f));
#endif
            __m256 d = _mm256_mul_ps(bf16_bcast(sc[i][b / per_group]), dx);
            acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), d, acc[i]);
        }
    }
    const float *xsum = mlx_group_sums(a, w->group);
    for (int i = 0; i < R; i++) acc[i] = mlx_bias_terms(w->biases + (size_t)(r + i) * ng, xsum, ng, acc[i]);
    finish_rows(y, r, acc, R, accumulate);
}

// ---- K types ----------------------------------------------------------------------------------

/// The 8 six-bit scales and 8 mins of a Q4_K block, bytewise in two u64 (byte j = sub-block j):
/// bytes 0–3 hold scales 0–3 and 4–7 mins 0–3 in their low six bits; bytes 8–11 hold the low
/// nibbles of scales (low) and mins (high) 4–7, whose top two bits are the spare bits 6–7 of
/// bytes 0–3 (scales) and 4–7 (mins).
CQX_INLINE void q4k_scales_mins(const uint8_t *s, uint64_t *scales, uint64_t *mins) {
    uint32_t lo_s, lo_m, hi;
    memcpy(&lo_s, s, 4);
    memcpy(&lo_m, s + 4, 4);
    memcpy(&hi, s + 8, 4);
    uint32_t sc_hi = (hi & 0x0F0F0F0Fu) | ((lo_s >> 2) & 0x30303030u);
    uint32_t m_hi = ((hi >> 4) & 0x0F0F0F0Fu) | ((lo_m >> 2) & 0x30303030u);
    *scales = (uint64_t)(lo_s & 0x3F3F3F3Fu) | (uint64_t)sc_hi << 32;
    *mins = (uint64_t)(lo_m & 0x3F3F3F3Fu) | (uint64_t)m_hi << 32;
}

/// Q4_K: per super-block, Σ_j sc_j·(q·x) in int32 (maddubs of the unsigned nibbles, then the
/// sub-block's scale as the int16 multiplier), and Σ_j m_j·Σx(j) from the activation's 16-value
/// sums; both scaled once per super-block.
CQX_INLINE void q4_k_rows(const cq_matrix *w, const cq_actk *a, float *y, int32_t r, int R, int accumulate) {
    const uint8_t *row[4];
    __m256 acc[4];
    for (int i = 0; i < R; i++) {
        row[i] = w->data + (size_t)(r + i) * w->row_bytes;
        acc[i] = _mm256_setzero_ps();
    }
    const __m256i low4 = _mm256_set1_epi8(0x0F);
    int32_t ns = w->cols / 256;
    for (int32_t sb = 0; sb < ns; sb++) {
        const int8_t *qx = a->q + 256 * sb;
        __m256i bsums = _mm256_loadu_si256((const __m256i *)(const void *)(a->bsums + 16 * sb));
        __m256 dx = _mm256_set1_ps(a->d[sb]);
        for (int i = 0; i < R; i++) {
            const uint8_t *blk = row[i] + (size_t)sb * Q4_K_BYTES;
            for (int l = 0; l < Q4_K_BYTES; l += 64) prefetch_row(row[i], (size_t)sb * Q4_K_BYTES + l, w->row_bytes, R, 2048);
            uint64_t scales, mins;
            q4k_scales_mins(blk + Q4_K_OFF_SCALES, &scales, &mins);
            // Each min twice, as int16, against the two 16-value sums of its sub-block.
            __m128i m8 = _mm_cvtsi64_si128((long long)mins);
            __m256i m16 = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m8, m8));
            __m256i imin = _mm256_madd_epi16(bsums, m16);
            // Each scale as an int16 pair in one int32, broadcast per sub-block.
            __m256i sc32 = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)scales));
            sc32 = _mm256_or_si256(sc32, _mm256_slli_epi32(sc32, 16));
            int32_t scale_pairs[8];
            _mm256_storeu_si256((__m256i *)(void *)scale_pairs, sc32);
            __m256i isum = _mm256_setzero_si256();
            const uint8_t *qs = blk + Q4_K_OFF_QS;
            for (int c = 0; c < 4; c++) {
                __m256i q = _mm256_loadu_si256((const __m256i *)(const void *)(qs + 32 * c));
                __m256i lo = _mm256_and_si256(q, low4);
                __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), low4);
                __m256i x0 = _mm256_loadu_si256((const __m256i *)(const void *)(qx + 64 * c));
                __m256i x1 = _mm256_loadu_si256((const __m256i *)(const void *)(qx + 64 * c + 32));
                isum = dot_s16(isum, _mm256_maddubs_epi16(lo, x0), _mm256_set1_epi32(scale_pairs[2 * c]));
                isum = dot_s16(isum, _mm256_maddubs_epi16(hi, x1), _mm256_set1_epi32(scale_pairs[2 * c + 1]));
            }
            __m256 d = _mm256_mul_ps(f16_bcast(blk), dx);
            __m256 dmin = _mm256_mul_ps(f16_bcast(blk + 2), dx);
            acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), d, acc[i]);
            acc[i] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(imin), dmin, acc[i]);
        }
    }
    finish_rows(y, r, acc, R, accumulate);
}

/// Q6_K: 6-bit codes assembled from ql (low 4 bits) and qh (2 bits), taken unsigned (0…63) by
/// maddubs; the −32 offset comes back once per super-block as −32·Σ_i sc_i·Σx(i).
CQX_INLINE void q6_k_rows(const cq_matrix *w, const cq_actk *a, float *y, int32_t r, int R, int accumulate) {
    const uint8_t *row[4];
    __m256 acc[4];
    for (int i = 0; i < R; i++) {
        row[i] = w->data + (size_t)(r + i) * w->row_bytes;
        acc[i] = _mm256_setzero_ps();
    }
    const __m256i low4 = _mm256_set1_epi8(0x0F), bits45 = _mm256_set1_epi8(0x30);
    int32_t ns = w->cols / 256;
    for (int32_t sb = 0; sb < ns; sb++) {
        const int8_t *qx = a->q + 256 * sb;
        __m256i bsums = _mm256_loadu_si256((const __m256i *)(const void *)(a->bsums + 16 * sb));
        __m256 dx = _mm256_set1_ps(a->d[sb]);
        for (int i = 0; i < R; i++) {
            const uint8_t *blk = row[i] + (size_t)sb * Q6_K_BYTES;
            for (int l = 0; l < Q6_K_BYTES; l += 64) prefetch_row(row[i], (size_t)sb * Q6_K_BYTES + l, w->row_bytes, R, 3072);
            __m128i sc8 = _mm_loadu_si128((const __m128i *)(const void *)(blk + Q6_K_OFF_SCALES));
            __m256i sc16 = _mm256_cvtepi8_epi16(sc8);
            __m256i isum = _mm256_slli_epi32(_mm256_madd_epi16(bsums, sc16), 5);
            isum = _mm256_sub_epi32(_mm256_setzero_si256(), isum);
            // Scales as int16 pairs in int32: [sc_2p ×8 | sc_2p+1 ×8] per 32 values.
            __m256i lo32 = _mm256_cvtepi8_epi32(sc8), hi32 = _mm256_cvtepi8_epi32(_mm_srli_si128(sc8, 8));
            lo32 = _mm256_or_si256(_mm256_and_si256(lo32, _mm256_set1_epi32(0xFFFF)), _mm256_slli_epi32(lo32, 16));
            hi32 = _mm256_or_si256(_mm256_and_si256(hi32, _mm256_set1_epi32(0xFFFF)), _mm256_slli_epi32(hi32, 16));
            int32_t pairs[16];
            _mm256_storeu_si256((__m256i *)(void *)pairs, lo32);
            _mm256_storeu_si256((__m256i *)(void *)(pairs + 8), hi32);
            for (int h = 0; h < 2; h++) {
                const uint8_t *ql = blk + 64 * h, *qhp = blk + Q6_K_OFF_QH + 32 * h;
                __m256i qh = _mm256_loadu_si256((const __m256i *)(const void *)qhp);
                __m256i l0 = _mm256_loadu_si256((const __m256i *)(const void *)ql);
                __m256i l1 = _mm256_loadu_si256((const __m256i *)(const void *)(ql + 32));
                __m256i q[4];
                q[0] = _mm256_or_si256(_mm256_and_si256(l0, low4), _mm256_and_si256(_mm256_slli_epi16(qh, 4), bits45));
                q[1] = _mm256_or_si256(_mm256_and_si256(l1, low4), _mm256_and_si256(_mm256_slli_epi16(qh, 2), bits45));
                q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), low4), _mm256_and_si256(qh, bits45));
                q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), low4),
                                       _mm256_and_si256(_mm256_srli_epi16(qh, 2), bits45));
                for (int k = 0; k < 4; k++) {
                    __m256i x = _mm256_loadu_si256((const __m256i *)(const void *)(qx + 128 * h + 32 * k));
                    int p = 8 * h + 2 * k;
                    __m256i s = _mm256_set_m128i(_mm_set1_epi32(pairs[p + 1]), _mm_set1_epi32(pairs[p]));
                    isum = dot_s16(isum, _mm256_maddubs_epi16(q[k], x), s);
                }
            }
            __m256 d = _mm256_mul_ps(f16_bcast(blk + Q6_K_OFF_D), dx);
            acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), d, acc[i]);
        }
    }
    finish_rows(y, r, acc, R, accumulate);
}

// ---- Entry points -----------------------------------------------------------------------------

static void CQX(q8_0)(const cq_matrix *w, const void *act, float *y, int32_t r0, int32_t r1, int accumulate) {
    cq_act32 a = cq_act32_view(act, w->cols);
    ROWS_DRIVER(q8_0_rows, a)
}
static void CQX(q4_0)(const cq_matrix *w, const void *act, float *y, int32_t r0, int32_t r1, int accumulate) {
    cq_act32 a = cq_act32_view(act, w->cols);
    ROWS_DRIVER(q4_0_rows, a)
}
static void CQX(iq4_nl)(const cq_matrix *w, const void *act, float *y, int32_t r0, int32_t r1, int accumulate) {
    cq_act32 a = cq_act32_view(act, w->cols);
    ROWS_DRIVER(iq4_nl_rows, a)
}
static void CQX(mlx_q4)(const cq_matrix *w, const void *act, float *y, int32_t r0, int32_t r1, int accumulate) {
    cq_act32 a = cq_act32_view(act, w->cols);
    ROWS_DRIVER(mlx_q4_rows, a)
}
static void CQX(mlx_q8)(const cq_matrix *w, const void *act, float *y, int32_t r0, int32_t r1, int accumulate) {
    cq_act32 a = cq_act32_view(act, w->cols);
    ROWS_DRIVER(mlx_q8_rows, a)
}
static void CQX(q4_k)(const cq_matrix *w, const void *act, float *y, int32_t r0, int32_t r1, int accumulate) {
    cq_actk a = cq_actk_view(act, w->cols);
    ROWS_DRIVER(q4_k_rows, a)
}
static void CQX(q6_k)(const cq_matrix *w, const void *act, float *y, int32_t r0, int32_t r1, int accumulate) {
    cq_actk a = cq_actk_view(act, w->cols);
    ROWS_DRIVER(q6_k_rows, a)
}

// ---- Activation quantizers (bit-exact with cq_act32_scalar / cq_actk_scalar) -----------------

/// roundf(v): truncate, then step one away from zero where the dropped fraction is ≥ ½ (exact:
/// v − trunc(v) has no rounding error).
CQX_INLINE __m256 round_away(__m256 v) {
    __m256 t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    __m256 sign = _mm256_and_ps(v, _mm256_set1_ps(-0.0f));
    __m256 frac = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), _mm256_sub_ps(v, t));
    __m256 step = _mm256_and_ps(_mm256_cmp_ps(frac, _mm256_set1_ps(0.5f), _CMP_GE_OQ), _mm256_set1_ps(1.0f));
    return _mm256_add_ps(t, _mm256_or_ps(step, sign));
}

/// Quantizes `groups` × 32 values at x: returns d (NaN for a non-finite block) and writes the
/// 32·groups codes in natural order, and Σq.
CQX_INLINE float quantize_values(const float *x, int groups, int8_t *q, int32_t *sum) {
    __m256 amax = _mm256_setzero_ps(), bad = _mm256_setzero_ps();
    const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
    for (int k = 0; k < 4 * groups; k++) {
        __m256 v = _mm256_and_ps(_mm256_loadu_ps(x + 8 * k), abs_mask);
        bad = _mm256_or_ps(bad, _mm256_cmp_ps(v, _mm256_set1_ps(3.4028235e38f), _CMP_NLE_UQ));
        amax = _mm256_max_ps(amax, v);
    }
    if (_mm256_movemask_ps(bad)) {
        memset(q, 0, 32 * (size_t)groups);
        *sum = 0;
        return NAN;
    }
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    float d = _mm_cvtss_f32(m) / 127.0f;
    __m256 id = _mm256_set1_ps(d != 0.0f ? 1.0f / d : 0.0f);
    __m256i total = _mm256_setzero_si256();
    for (int g = 0; g < groups; g++) {
        __m256i i0 = _mm256_cvtps_epi32(round_away(_mm256_mul_ps(_mm256_loadu_ps(x + 32 * g), id)));
        __m256i i1 = _mm256_cvtps_epi32(round_away(_mm256_mul_ps(_mm256_loadu_ps(x + 32 * g + 8), id)));
        __m256i i2 = _mm256_cvtps_epi32(round_away(_mm256_mul_ps(_mm256_loadu_ps(x + 32 * g + 16), id)));
        __m256i i3 = _mm256_cvtps_epi32(round_away(_mm256_mul_ps(_mm256_loadu_ps(x + 32 * g + 24), id)));
        total = _mm256_add_epi32(total, _mm256_add_epi32(_mm256_add_epi32(i0, i1), _mm256_add_epi32(i2, i3)));
        // packs work per 128-bit lane: undo their interleave with one dword permutation.
        __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3));
        p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256((__m256i *)(void *)(q + 32 * g), p);
    }
    *sum = hsum_epi32(total);
    return d;
}

static void CQX(act32)(const float *x, int32_t n, void *act) {
    cq_act32 a = cq_act32_view(act, n);
    for (int32_t b = 0; b < n / 32; b++) {
        float *d = (float *)a.d + b, *xs = (float *)a.xs + b;
        int32_t *s = (int32_t *)a.s + b;
        *d = quantize_values(x + 32 * b, 1, (int8_t *)a.q + 32 * b, s);
        *xs = *d * (float)*s;
    }
    cq_act32_group_sums(act, n);
}

static void CQX(act32_pairsplit)(const float *x, int32_t n, void *act) {
    CQX(act32)(x, n, act);
    // Even elements of the block first, then odd ones: within each 16 bytes gather evens and
    // odds, then order the four 8-byte pieces as [even lo, even hi, odd lo, odd hi].
    const __m256i split = _mm256_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15,
                                           0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
    int8_t *q = (int8_t *)act;
    for (int32_t b = 0; b < n / 32; b++) {
        __m256i v = _mm256_loadu_si256((const __m256i *)(const void *)(q + 32 * b));
        v = _mm256_permute4x64_epi64(_mm256_shuffle_epi8(v, split), _MM_SHUFFLE(3, 1, 2, 0));
        _mm256_storeu_si256((__m256i *)(void *)(q + 32 * b), v);
    }
}

static void CQX(actk)(const float *x, int32_t n, void *act) {
    cq_actk a = cq_actk_view(act, n);
    for (int32_t sb = 0; sb < n / 256; sb++) {
        int32_t unused;
        int8_t *q = (int8_t *)a.q + 256 * sb;
        ((float *)a.d)[sb] = quantize_values(x + 256 * sb, 8, q, &unused);
        // Σ of each 16 codes: bias them to unsigned, sum 8 at a time against zero, unbias.
        for (int g = 0; g < 8; g++) {
            __m256i v = _mm256_loadu_si256((const __m256i *)(const void *)(q + 32 * g));
            __m256i s8 = _mm256_sad_epu8(_mm256_xor_si256(v, _mm256_set1_epi8((char)0x80)), _mm256_setzero_si256());
            int64_t e[4];
            _mm256_storeu_si256((__m256i *)(void *)e, s8);
            int16_t *bs = (int16_t *)a.bsums + 16 * sb + 2 * g;
            bs[0] = (int16_t)(e[0] + e[1] - 2048);
            bs[1] = (int16_t)(e[2] + e[3] - 2048);
        }
    }
}

const cq_kernels CQX(cq_kernels) = {
    .isa = CQX_ISA,
    .q8_0 = CQX(q8_0), .q4_0 = CQX(q4_0), .iq4_nl = CQX(iq4_nl), .q4_k = CQX(q4_k), .q6_k = CQX(q6_k),
    .mlx_q4 = CQX(mlx_q4), .mlx_q8 = CQX(mlx_q8),
    .act32 = CQX(act32), .act32_pairsplit = CQX(act32_pairsplit), .actk = CQX(actk),
};
