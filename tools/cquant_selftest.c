// CQuant's kernels against its scalar reference, in plain C, so they can run where Swift does
// not (an arm64 build under qemu-user: tools/cquant_arm64.sh) and be timed without SwiftPM.
//
//   cquant_selftest [test]          every ISA this CPU runs vs the reference, every type
//   cquant_selftest bench [secs]    G weights/s per type and ISA, one thread (cache and DRAM)
//
// Build (what tools/cquant_arm64.sh does natively): cc -O2 -std=c11 -ffp-contract=off
//   -I Sources/CQuant/include Sources/CQuant/*.c tools/cquant_selftest.c -lm -lpthread
#define _POSIX_C_SOURCE 200809L
#include "cquant.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

// ---- Random data ------------------------------------------------------------------------------

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static uint64_t next_u64(void) {
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static float uniform(void) { return (float)(next_u64() >> 40) * 0x1p-24f; }

/// ±[0.5, 1.5)·scale: a scale that is never tiny, of either sign.
static float signed_scale(float scale) { return (next_u64() & 1 ? 1.0f : -1.0f) * (0.5f + uniform()) * scale; }

static float gaussian(void) {
    float u = uniform() + 0x1p-25f, v = uniform();
    return sqrtf(-2.0f * logf(u)) * cosf(6.2831853f * v);
}

/// For test scales only: |f| within f16's normal range (truncates the mantissa).
static uint16_t to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t e = (x >> 23) & 0xFF;
    return (uint16_t)(((x >> 16) & 0x8000) | ((e - 112) << 10) | ((x >> 13) & 0x3FF));
}

static uint16_t to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    return (uint16_t)(x >> 16);
}

static void put16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }

typedef struct {
    cq_matrix m;
    uint8_t *data;
    uint16_t *scales, *biases;
} matrix;

/// Random bytes everywhere (every code pattern), scales of a sensible size. `exact` draws
/// scales and codes small enough that every partial sum of the matvec is an exact f32 integer.
static matrix random_matrix(cq_type type, int32_t rows, int32_t cols, int32_t group, int exact) {
    matrix t;
    memset(&t, 0, sizeof t);
    size_t rb = cq_row_bytes(type, cols);
    t.data = malloc(rb * (size_t)rows);  // exact size: ASan catches any over-read
    for (size_t i = 0; i < rb * (size_t)rows; i++) t.data[i] = (uint8_t)next_u64();
    t.m.type = type;
    t.m.rows = rows;
    t.m.cols = cols;
    t.m.row_bytes = rb;
    t.m.data = t.data;
    size_t nblocks = rb * (size_t)rows;
    switch (type) {
    case CQ_Q8_0:
        for (size_t b = 0; b < nblocks / 34; b++) {
            uint8_t *p = t.data + 34 * b;
            put16(p, exact ? 0x3C00 : to_f16(signed_scale(0.01f)));
            if (exact)
                for (int j = 0; j < 32; j++) p[2 + j] = (uint8_t)(int8_t)((int)(next_u64() % 7) - 3);
        }
        break;
    case CQ_Q4_0:
    case CQ_IQ4_NL:
        for (size_t b = 0; b < nblocks / 18; b++) put16(t.data + 18 * b, exact ? 0x3C00 : to_f16(signed_scale(0.01f)));
        break;
    case CQ_Q4_K:
        for (size_t b = 0; b < nblocks / 144; b++) {
            uint8_t *p = t.data + 144 * b;
            put16(p, exact ? 0x3C00 : to_f16(fabsf(signed_scale(0.001f))));
            put16(p + 2, exact ? 0x3C00 : to_f16(fabsf(signed_scale(0.001f))));
            if (exact)  // scales and mins 0 or 1: every bit of the 12 bytes that is set is a 1
                for (int j = 0; j < 12; j++) p[4 + j] &= 0x01;
        }
        break;
    case CQ_Q6_K:
        for (size_t b = 0; b < nblocks / 210; b++) {
            uint8_t *p = t.data + 210 * b;
            put16(p + 208, exact ? 0x3C00 : to_f16(signed_scale(0.001f)));
            if (exact)
                for (int j = 0; j < 16; j++) p[192 + j] = (uint8_t)(int8_t)((int)(next_u64() % 3) - 1);
        }
        break;
    case CQ_MLX_Q4:
    case CQ_MLX_Q8: {
        size_t ng = (size_t)rows * (size_t)(cols / group);
        t.scales = malloc(2 * ng);
        t.biases = malloc(2 * ng);
        for (size_t g = 0; g < ng; g++) {
            t.scales[g] = exact ? 0x3F80 : to_bf16(fabsf(signed_scale(0.01f)));
            t.biases[g] = exact ? (next_u64() & 1 ? 0x3F80 : 0xBF80) : to_bf16(signed_scale(0.05f));
        }
        if (exact && type == CQ_MLX_Q8)
            for (size_t i = 0; i < rb * (size_t)rows; i++) t.data[i] &= 0x07;
        t.m.scales = t.scales;
        t.m.biases = t.biases;
        t.m.group = group;
        break;
    }
    default:
        break;
    }
    return t;
}

static void free_matrix(matrix *t) {
    free(t->data);
    free(t->scales);
    free(t->biases);
}

/// x: gaussian; for `exact`, integers with one ±127 per activation block (so d = 1 exactly) and
/// the rest in [−15, 15].
static void random_x(float *x, int32_t cols, int block, int exact) {
    for (int32_t c = 0; c < cols; c++) x[c] = exact ? (float)((int)(next_u64() % 31) - 15) : gaussian();
    if (exact)
        for (int32_t b = 0; b < cols / block; b++) x[b * block + (int32_t)(next_u64() % (uint64_t)block)] = next_u64() & 1 ? 127.0f : -127.0f;
}

static void *aligned(size_t n) {
    void *p = NULL;
    if (posix_memalign(&p, 64, n ? n : 64) != 0) abort();
    return p;
}

// ---- Tests ------------------------------------------------------------------------------------

static int failures = 0;

#define CHECK(cond, ...)                                   \
    do {                                                   \
        if (!(cond)) {                                     \
            failures++;                                    \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
            fprintf(stderr, __VA_ARGS__);                  \
            fprintf(stderr, "\n");                         \
        }                                                  \
    } while (0)

/// Every available ISA against the reference on one shape; returns the largest error seen,
/// relative to Σ|ŵ·x̂| of the row (the scale of float rounding differences).
static double compare(cq_type type, int32_t rows, int32_t cols, int32_t group, int exact) {
    int block = cq_block_values(type) == 256 ? 256 : 32;
    matrix t = random_matrix(type, rows, cols, group, exact);
    float *x = malloc(4 * (size_t)cols), *xh = malloc(4 * (size_t)cols), *wr = malloc(4 * (size_t)cols);
    random_x(x, cols, block, exact);
    const char *isas[8];
    int n = cq_available_isas(isas, 8);
    void *act = aligned(cq_activation_bytes(type, cols)), *act_ref = aligned(cq_activation_bytes(type, cols));
    cq_set_isa("scalar");
    cq_quantize_activation(type, x, cols, act_ref);
    cq_dequantize_activation(type, act_ref, cols, xh);
    float *ref = malloc(4 * (size_t)rows), *out = malloc(4 * (size_t)rows);
    double *mag = malloc(sizeof(double) * (size_t)rows);
    for (int32_t r = 0; r < rows; r++) {
        cq_dequantize_row(&t.m, r, wr);
        double s = 0, m = 0;
        for (int32_t c = 0; c < cols; c++) {
            s += (double)wr[c] * xh[c];
            m += fabs((double)wr[c] * xh[c]);
        }
        mag[r] = m;
        ref[r] = 0;
        cq_matvec_rows_reference(&t.m, act_ref, ref, r, r + 1, 0);
        // The reference against f64 arithmetic on the dequantized values.
        CHECK(fabs(ref[r] - s) <= 1e-5 * m + 1e-30, "%s %dx%d ref row %d: %g vs f64 %g (Σ|.| %g)", cq_type_name(type), rows,
              cols, r, ref[r], s, m);
    }
    double worst = 0;
    for (int i = 0; i < n; i++) {
        cq_set_isa(isas[i]);
        cq_quantize_activation(type, x, cols, act);
        CHECK(memcmp(act, act_ref, cq_activation_bytes(type, cols)) == 0, "%s activation of %s differs from scalar",
              isas[i], cq_type_name(type));
        // A row range that starts inside the matrix, then accumulate over it.
        int32_t r0 = rows > 2 ? 1 : 0;
        for (int32_t r = 0; r < rows; r++) out[r] = -7.0f;
        cq_matvec_rows(&t.m, act, out, r0, rows, 0);
        for (int32_t r = 0; r < r0; r++) CHECK(out[r] == -7.0f, "%s wrote outside its rows", isas[i]);
        for (int32_t r = r0; r < rows; r++) {
            double e = fabs((double)out[r] - ref[r]) / (mag[r] + 1e-30);
            if (exact) CHECK(out[r] == ref[r], "%s %s %dx%d g%d exact row %d: %.9g vs %.9g", isas[i], cq_type_name(type),
                             rows, cols, group, r, out[r], ref[r]);
            if (e > worst) worst = e;
        }
        float before = out[rows - 1];
        cq_matvec_rows(&t.m, act, out, rows - 1, rows, 1);
        CHECK(fabsf(out[rows - 1] - 2 * before) <= 1e-6f * fabsf(before) + 1e-30f, "%s accumulate", isas[i]);
    }
    cq_set_isa(NULL);
    CHECK(worst <= 1e-5, "%s %dx%d g%d: fast vs reference %g of Σ|w·x|", cq_type_name(type), rows, cols, group, worst);
    free(x); free(xh); free(wr); free(act); free(act_ref); free(ref); free(out); free(mag);
    free_matrix(&t);
    return worst;
}

static void test_kernels(void) {
    static const cq_type types[] = {CQ_Q8_0, CQ_Q4_0, CQ_IQ4_NL, CQ_Q4_K, CQ_Q6_K, CQ_MLX_Q4, CQ_MLX_Q8};
    static const int32_t rows_list[] = {1, 3, 4, 5, 17};
    for (size_t t = 0; t < sizeof types / sizeof *types; t++) {
        cq_type type = types[t];
        int k = cq_block_values(type) == 256;
        const int32_t cols32[] = {32, 96, 256, 1024, 4128}, colsk[] = {256, 768, 4096, 4352};
        const int32_t *cols = k ? colsk : cols32;
        int ncols = k ? 4 : 5;
        double worst = 0;
        for (int g = 0; g < (cq_type_name(type)[0] == 'M' ? 3 : 1); g++) {
            int32_t group = cq_type_name(type)[0] == 'M' ? 32 << g : 0;
            for (size_t ri = 0; ri < sizeof rows_list / sizeof *rows_list; ri++)
                for (int ci = 0; ci < ncols; ci++) {
                    if (group && cols[ci] % group) continue;
                    double e = compare(type, rows_list[ri], cols[ci], group, 0);
                    if (e > worst) worst = e;
                    compare(type, rows_list[ri], cols[ci], group, 1);
                }
        }
        printf("%-7s fast vs reference: worst %.2e of Σ|w·x| (exact cases bit-equal)\n", cq_type_name(type), worst);
    }
}

static void test_quantizers(void) {
    static const cq_type types[] = {CQ_Q8_0, CQ_Q4_0, CQ_IQ4_NL, CQ_Q4_K, CQ_Q6_K};
    const int32_t rows = 8, cols = 1024;
    float *src = malloc(4 * (size_t)rows * cols), *back = malloc(4 * (size_t)cols);
    for (int32_t i = 0; i < rows * cols; i++) src[i] = gaussian() * (1.0f + (float)(i / cols));
    for (size_t t = 0; t < sizeof types / sizeof *types; t++) {
        size_t rb = cq_row_bytes(types[t], cols);
        uint8_t *dst = malloc(rb * rows);
        CHECK(cq_quantize_rows(types[t], src, rows, cols, dst) == 0, "quantize %s", cq_type_name(types[t]));
        cq_matrix m = {types[t], rows, cols, rb, dst, NULL, NULL, 0};
        double err = 0, ref = 0;
        for (int32_t r = 0; r < rows; r++) {
            cq_dequantize_row(&m, r, back);
            for (int32_t c = 0; c < cols; c++) {
                double d = back[c] - src[r * cols + c];
                err += d * d;
                ref += (double)src[r * cols + c] * src[r * cols + c];
            }
        }
        uint64_t hash = 0xCBF29CE484222325ull;  // FNV-1a of the blocks: equal across machines
        for (size_t i = 0; i < rb * rows; i++) hash = (hash ^ dst[i]) * 0x100000001B3ull;
        printf("%-7s quantize → dequantize: relative RMS error %.4f, blocks %016llx\n", cq_type_name(types[t]),
               sqrt(err / ref), (unsigned long long)hash);
        float saved = src[5];
        src[5] = NAN;
        CHECK(cq_quantize_rows(types[t], src, rows, cols, dst) == -2, "NaN refused");
        src[5] = INFINITY;
        CHECK(cq_quantize_rows(types[t], src, rows, cols, dst) == -2, "Inf refused");
        src[5] = saved;
        CHECK(cq_quantize_rows(types[t], src, rows, cols + 16, dst) == -1, "bad cols refused");
        free(dst);
    }
    free(src);
    free(back);
}

// ---- Benchmarks -------------------------------------------------------------------------------

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/// Best G weights/s of repeated whole-matrix matvecs over `seconds`.
static double bench_one(const matrix *t, const void *act, float *y, double seconds) {
    cq_matvec_rows(&t->m, act, y, 0, t->m.rows, 0);
    double best = 1e30, until = now() + seconds;
    do {
        double t0 = now();
        cq_matvec_rows(&t->m, act, y, 0, t->m.rows, 0);
        double dt = now() - t0;
        if (dt < best) best = dt;
    } while (now() < until);
    return (double)t->m.rows * t->m.cols / best / 1e9;
}

static void bench(double seconds) {
    static const cq_type types[] = {CQ_Q8_0, CQ_Q4_0, CQ_IQ4_NL, CQ_Q4_K, CQ_Q6_K, CQ_MLX_Q4, CQ_MLX_Q8};
    const char *isas[8];
    int n = cq_available_isas(isas, 8);
    printf("type     isa           cache 256x2048   DRAM (~192 MB)\n");
    for (size_t ti = 0; ti < sizeof types / sizeof *types; ti++) {
        cq_type type = types[ti];
        int32_t group = type == CQ_MLX_Q8 ? 64 : 32, cols = 2048;
        matrix small = random_matrix(type, 256, cols, group, 0);
        int32_t big_cols = 4096;
        int32_t big_rows = (int32_t)((192u << 20) / cq_row_bytes(type, big_cols));
        matrix big = random_matrix(type, big_rows, big_cols, group, 0);
        float *x = malloc(4 * (size_t)big_cols), *y = malloc(4 * (size_t)big_rows);
        random_x(x, big_cols, 32, 0);
        void *act_s = aligned(cq_activation_bytes(type, cols)), *act_b = aligned(cq_activation_bytes(type, big_cols));
        for (int i = 0; i < n; i++) {
            cq_set_isa(isas[i]);
            cq_quantize_activation(type, x, cols, act_s);
            cq_quantize_activation(type, x, big_cols, act_b);
            double s = bench_one(&small, act_s, y, seconds);
            double b = bench_one(&big, act_b, y, seconds);
            printf("%-8s %-12s %7.2f GW/s     %7.2f GW/s (%5.1f GB/s)\n", cq_type_name(type), isas[i], s, b,
                   b * (double)cq_row_bytes(type, big_cols) / big_cols);
        }
        cq_set_isa(NULL);
        free(x); free(y); free(act_s); free(act_b);
        free_matrix(&small);
        free_matrix(&big);
    }
}

int main(int argc, char **argv) {
    const char *isas[8];
    int n = cq_available_isas(isas, 8);
    printf("cquant: dispatched %s; available:", cq_kernel_isa());
    for (int i = 0; i < n; i++) printf(" %s", isas[i]);
    printf("\n");
    if (argc > 1 && strcmp(argv[1], "bench") == 0) {
        bench(argc > 2 ? atof(argv[2]) : 0.5);
        return 0;
    }
    test_kernels();
    test_quantizers();
    if (failures) {
        printf("%d failures\n", failures);
        return 1;
    }
    printf("all passed\n");
    return 0;
}
