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

/// Values per block (32 or 256; 1 for F32/F16/BF16; the group for MLX types is the matrix's).
int cq_block_values(cq_type type);
/// Bytes of one row of `cols` values (cols must be a multiple of the block size); 0 if invalid.
size_t cq_row_bytes(cq_type type, int32_t cols);
/// Whether `cols` is valid for `type` (a positive multiple of its block, or of `group` for MLX).
int cq_valid_cols(cq_type type, int32_t cols, int32_t group);
/// "Q8_0", "Q4_K", "MLX-Q4", …
const char *cq_type_name(cq_type type);

/// The activation a matrix of `type` multiplies: x[cols] quantized once per matvec, shared by
/// every thread. Bytes needed for `cols` values (a multiple of 32, or of 256 for K types).
size_t cq_activation_bytes(cq_type type, int32_t cols);
/// Quantizes x[cols] into `act` (cq_activation_bytes(type, cols) bytes, 64-byte aligned):
/// blocks of 32 (d = absmax/127, q = round(x/d), plus Σq) for the 32-value types, in the
/// element order the weight type's kernel needs; Q8_K blocks of 256 (with 16-value sums) for
/// the K types.
void cq_quantize_activation(cq_type type, const float *x, int32_t cols, void *act);

/// y[r] (+)= Σ_c W[r,c]·x[c] for r in [row_begin, row_end), x given as its quantized activation.
/// The fastest kernel this CPU supports (chosen once, see cq_kernel_isa).
void cq_matvec_rows(const cq_matrix *w, const void *act, float *y, int32_t row_begin, int32_t row_end, int accumulate);
/// The same, by the portable scalar code (the naive reference the fast kernels are tested against).
void cq_matvec_rows_reference(const cq_matrix *w, const void *act, float *y, int32_t row_begin, int32_t row_end,
                              int accumulate);

/// Row r of W widened to f32 (embedding lookups, tests, offline paths).
void cq_dequantize_row(const cq_matrix *w, int32_t row, float *out);

/// Quantizes src[rows, cols] (f32, row-major) into dst (rows·cq_row_bytes bytes) as ggml's
/// reference quantizers do (Q8_0, Q4_0 and IQ4_NL bit-exact with ggml/gguf-py; K types with
/// ggml's error-minimising scale search). Returns 0, or −1 for an unsupported type or cols.
int cq_quantize_rows(cq_type type, const float *src, int32_t rows, int32_t cols, void *dst);

/// The instruction set the dispatched kernels use: "avx512-vnni", "avx-vnni", "avx2", "neon-dotprod",
/// "neon", "scalar".
const char *cq_kernel_isa(void);
/// Tests and benchmarks: 1 forces the scalar kernels for cq_matvec_rows, 0 restores dispatch.
void cq_force_scalar(int enabled);

#ifdef __cplusplus
}
#endif
#endif
