#ifndef DUPLEX_CQUANT_H
#define DUPLEX_CQUANT_H
// Quantized weights for batch-1 inference: block layouts of ggml (GGUF) and MLX's affine
// quantization, the activation quantizer, integer-dot matrix×vector kernels (with runtime CPU
// dispatch), dequantizers and quantizers. No threads, no allocation: the caller (Swift's
// ParallelMatvec) splits rows over its worker pool and owns every buffer.
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Weight formats. The ggml ones carry ggml's type ids (the numbers GGUF files store).
typedef enum {
    CQ_F32 = 0,
    CQ_F16 = 1,
    CQ_Q4_0 = 2,    // 32 values: f16 d; 16 B nibbles (byte j = e[j] | e[j+16] << 4); w = d·(q − 8)
    CQ_Q8_0 = 8,    // 32 values: f16 d; int8 q[32]; w = d·q
    CQ_Q4_K = 12,   // 256 values: f16 d, f16 dmin, 12 B 6-bit scales/mins, 128 B nibbles
    CQ_Q6_K = 14,   // 256 values: ql[128], qh[64], int8 scales[16], f16 d
    CQ_IQ4_NL = 20, // 32 values: f16 d; nibbles as Q4_0 index kvalues_iq4nl; w = d·table[q]
    CQ_BF16 = 30,
    /// MLX affine quantization (not ggml types; never written to GGUF): codes packed little-end
    /// first into uint32 words along the row, bf16 scale and bias per `group` values of a row,
    /// w = scale·q + bias, q unsigned.
    CQ_MLX_Q4 = 1004,
    CQ_MLX_Q8 = 1008,
} cq_type;

/// A quantized matrix [rows, cols], row-major. ggml types: row r is `row_bytes` bytes at
/// `data + r·row_bytes` (blocks contiguous). MLX types: `data` holds the packed codes
/// (row_bytes = cols·bits/8), `scales` and `biases` are bf16 [rows, cols/group].
typedef struct {
    cq_type type;
    int32_t rows;
    int32_t cols;
    size_t row_bytes;
    const uint8_t *data;
    const uint16_t *scales;  // MLX only (else NULL)
    const uint16_t *biases;  // MLX only (else NULL)
    int32_t group;           // MLX only: 32, 64 or 128 (else 0)
} cq_matrix;

/// Values per block: 32 or 256 for the ggml types, 1 for F32/F16/BF16, 32 for the MLX types
/// (their activation block; a matrix's own group, 32, 64 or 128, is in cq_matrix.group).
int cq_block_values(cq_type type);
/// Bytes of one row of `cols` values (cols must be a multiple of the block size); 0 if invalid.
size_t cq_row_bytes(cq_type type, int32_t cols);
/// Whether `cols` is valid for `type` (a positive multiple of its block, or of `group` for MLX).
int cq_valid_cols(cq_type type, int32_t cols, int32_t group);
/// "Q8_0", "Q4_K", "MLX-Q4", …
const char *cq_type_name(cq_type type);

/// The activation a matrix of `type` multiplies: x[cols] quantized once per matvec, shared by
/// every thread. Bytes needed for `cols` values (a multiple of 32, or of 256 for K types); 0 for
/// F32/F16/BF16 or invalid cols.
size_t cq_activation_bytes(cq_type type, int32_t cols);
/// Quantizes x[cols] into `act` (cq_activation_bytes(type, cols) bytes, 64-byte aligned):
/// blocks of 32 (d = absmax/127, q = round(x/d), plus Σq) for the 32-value types, in the
/// element order the weight type's kernel needs; Q8_K blocks of 256 (with 16-value sums) for
/// the K types.
///
/// Layout (structure of arrays, so kernels load 32 codes and 8 scales at a time; offsets in bytes
/// from `act`, n = cols, nb = n/32, ns = n/256; rounding is ggml's quantize_row_q8_0_ref: d in
/// f32, q = roundf(x·(1/d)), half away from zero):
///   Q8_0, Q4_0, IQ4_NL, MLX-Q4, MLX-Q8:   int8 q[n] at 0 | f32 d[nb] at n | int32 Σq[nb] at n+4nb
///     | f32 d·Σq[nb] at n+8nb | f32 sums of 64-value groups [nb/2] at n+12nb | of 128-value
///     groups [nb/4] after them. Block b's codes are q[32b … 32b+31]: x[32b+j] at j, except for
///     MLX-Q4, whose codes sit pair-split (x[32b+2k] at k, x[32b+2k+1] at 16+k) to match MLX's
///     nibble order (byte k = element 2k | element 2k+1 << 4) without moving any weight bits.
///   Q4_K, Q6_K:   int8 q[n] at 0 (natural order) | f32 d[ns] at n | int16 Σq of each 16 [n/16]
///     at n+4ns.
/// So an activation is tied to its weight type: quantize it with the matrix's own type (MLX-Q4
/// and MLX-Q8 differ in order). A block holding NaN or ±Inf gets d = NaN and q = 0, so every
/// output it reaches is NaN rather than a finite wrong number. Aborts (a programmer error) on a
/// type without an activation or on invalid cols.
void cq_quantize_activation(cq_type type, const float *x, int32_t cols, void *act);
/// The values an activation stands for, x̂[c] = d·q, back in natural element order (tests).
void cq_dequantize_activation(cq_type type, const void *act, int32_t cols, float *out);

/// Whether `w` describes a matrix the kernels accept: a quantized type (not F32/F16/BF16), rows ≥ 0,
/// valid cols (and group for MLX), row_bytes equal to cq_row_bytes, data (and MLX scales/biases)
/// present. 0 if so, −1 if not. Loaders call it once; the kernels trust their input.
int cq_check_matrix(const cq_matrix *w);

/// y[r] (+)= Σ_c W[r,c]·x[c] for r in [row_begin, row_end), x given as its quantized activation.
/// The fastest kernel this CPU supports (chosen once, see cq_kernel_isa). `y` is indexed by the
/// absolute row (y[row_begin] … y[row_end − 1]). Thread-safe; no allocation. F32/F16/BF16
/// matrices are not handled here (Swift's kernels do those): passing one, or a matrix that fails
/// cq_check_matrix, aborts with a message.
///
/// The fast kernels compute each block's integer dot exactly as the reference does and differ
/// from it only in the order the per-block float terms are summed (SIMD lanes, several rows per
/// pass): expect |fast − reference| ≤ ~1e-6 · Σ_c |W[r,c]·x̂[c]|, and bit-equality whenever every
/// partial sum is exact in f32.
void cq_matvec_rows(const cq_matrix *w, const void *act, float *y, int32_t row_begin, int32_t row_end, int accumulate);
/// The same, by the portable scalar code (the naive reference the fast kernels are tested against).
void cq_matvec_rows_reference(const cq_matrix *w, const void *act, float *y, int32_t row_begin, int32_t row_end,
                              int accumulate);

/// Row r of W widened to f32 (embedding lookups, tests, offline paths).
void cq_dequantize_row(const cq_matrix *w, int32_t row, float *out);

/// Quantizes src[rows, cols] (f32, row-major) into dst (rows·cq_row_bytes bytes) as ggml's
/// reference quantizers do (Q8_0, Q4_0 and IQ4_NL bit-exact with ggml/gguf-py; K types with
/// ggml's error-minimising scale search). Returns 0, or −1 for an unsupported type or cols.
/// "What ggml writes" means ggml_quantize_chunk without an importance matrix, i.e. what
/// llama-quantize stores: quantize_row_q8_0_ref / q4_0_ref (gguf-py's Q8_0 and Q4_0 are the same
/// bits), IQ4_NL's scale search with its 7 tries each side, q4_K_ref and q6_K_ref. All five are
/// byte-identical to ggml's C (tools/cquant_vs_ggml.sh; Q8_0 and Q4_0 also to gguf-py in the
/// test fixtures), given the same unfused f32 arithmetic (this file is built without fp contraction).
/// Returns −2, writing nothing, if src holds a NaN or ±Inf (checked before any row is written).
/// Rows are independent: a caller parallelises by handing each thread src + r·cols and
/// dst + r·cq_row_bytes(type, cols). Supports Q8_0, Q4_0, IQ4_NL, Q4_K, Q6_K.
int cq_quantize_rows(cq_type type, const float *src, int32_t rows, int32_t cols, void *dst);

/// MLX's affine quantization of src[rows, cols] as mx.quantize does it (bits 4 or 8, group 32, 64
/// or 128; min/max per group, the larger-magnitude edge exact, 0 representable): codes packed as
/// MLX stores them (rows·cols·bits/8 bytes), bf16 scales and biases [rows, cols/group]. Returns 0,
/// −1 for invalid bits/group/cols, −2 (writing nothing) for a NaN or ±Inf in src.
int cq_quantize_rows_mlx(int bits, int32_t group, const float *src, int32_t rows, int32_t cols,
                         void *codes, uint16_t *scales, uint16_t *biases);

/// The instruction set the dispatched kernels use: "avx512-vnni", "avx-vnni", "avx2", "neon-dotprod",
/// "neon", "scalar".
const char *cq_kernel_isa(void);
/// Tests and benchmarks: 1 forces the scalar kernels for cq_matvec_rows (and the scalar activation
/// quantizer, which writes the same bytes as every SIMD one), 0 restores dispatch.
void cq_force_scalar(int enabled);
/// The instruction sets this CPU (and this build) can run, fastest first, "scalar" last: writes
/// up to `capacity` names and returns how many there are.
int cq_available_isas(const char **names, int capacity);
/// Tests and benchmarks: selects one of cq_available_isas for cq_matvec_rows and
/// cq_quantize_activation (NULL restores the automatic choice). 0, or −1 if this CPU cannot run it.
int cq_set_isa(const char *isa);

#ifdef __cplusplus
}
#endif
#endif
