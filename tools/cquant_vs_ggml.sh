#!/usr/bin/env bash
# CQuant's quantizers against ggml's own C (ggml_quantize_chunk without an importance matrix:
# what llama-quantize writes) on 64×4096 values of varied scale: every byte must match. gguf-py
# (the fixtures) has no IQ4_NL or K-quant quantizer, so this is where those are checked.
# ggml is fetched at a pinned commit into a temporary folder and compiled there; nothing of it
# enters duplex. Needs git, network and a C compiler (CC, default cc).
#   tools/cquant_vs_ggml.sh [path to a ggml checkout]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
GGML_COMMIT=d99724f2b141fed9e1a9f402213506c081433465
CC="${CC:-cc}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
if [ $# -ge 1 ]; then
    src="$1"
else
    git -C "$work" init -q ggml
    git -C "$work/ggml" fetch -q --depth 1 https://github.com/ggml-org/ggml "$GGML_COMMIT"
    git -C "$work/ggml" checkout -q FETCH_HEAD
    src="$work/ggml"
fi
# -ffp-contract=off on both sides: the same unfused f32 arithmetic is the whole point.
"$CC" -O2 -std=gnu11 -ffp-contract=off -w -I "$src/include" -I "$src/src" -c "$src/src/ggml-quants.c" -o "$work/ggml-quants.o"
cat > "$work/compare.c" <<'C'
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cquant.h"
typedef size_t (*ggml_quantizer)(const float *, void *, int64_t, int64_t, const float *);
size_t quantize_q8_0(const float *, void *, int64_t, int64_t, const float *);
size_t quantize_q4_0(const float *, void *, int64_t, int64_t, const float *);
size_t quantize_iq4_nl(const float *, void *, int64_t, int64_t, const float *);
size_t quantize_q4_K(const float *, void *, int64_t, int64_t, const float *);
size_t quantize_q6_K(const float *, void *, int64_t, int64_t, const float *);
// What ggml-quants.o needs from the rest of ggml.
void ggml_abort(const char *file, int line, const char *fmt, ...) { fprintf(stderr, "ggml abort %s:%d %s\n", file, line, fmt); abort(); }
void ggml_log_internal(int level, const char *fmt, ...) { (void)level; (void)fmt; }
size_t ggml_row_size(int type, int64_t n) { return cq_row_bytes((cq_type)type, (int32_t)n); }
size_t ggml_type_size(int type) { (void)type; abort(); }
const char *ggml_type_name(int type) { (void)type; return "?"; }
static uint64_t state = 12345;
static float uniform(void) { state = state * 6364136223846793005ull + 1442695040888963407ull; return (float)((state >> 40) & 0xFFFFFF) / 16777216.0f; }
static float gaussian(void) { float u = uniform() + 1e-7f, v = uniform(); return sqrtf(-2 * logf(u)) * cosf(6.2831853f * v); }
int main(void) {
    enum { ROWS = 64, COLS = 4096 };
    float *x = malloc(sizeof(float) * ROWS * COLS);
    for (int r = 0; r < ROWS; r++)
        for (int c = 0; c < COLS; c++) {
            float v = gaussian() * (r % 7 == 0 ? 1e-3f : r % 5 == 0 ? 30.0f : 1.0f);
            if ((r == 3 && c < 256) || (r == 4 && c % 3 == 0)) v = 0;  // zero blocks, sparse rows
            if (r == 6) v = (float)((c % 17) - 8) * 0.25f;              // exact grid values, ties
            x[r * COLS + c] = v;
        }
    struct { cq_type type; ggml_quantizer ggml; } cases[] = {
        {CQ_Q8_0, quantize_q8_0}, {CQ_Q4_0, quantize_q4_0}, {CQ_IQ4_NL, quantize_iq4_nl},
        {CQ_Q4_K, quantize_q4_K}, {CQ_Q6_K, quantize_q6_K}};
    int bad = 0;
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        size_t rb = cq_row_bytes(cases[k].type, COLS), n = ROWS * rb, diff = 0;
        uint8_t *a = calloc(ROWS, rb), *b = calloc(ROWS, rb);
        if (cq_quantize_rows(cases[k].type, x, ROWS, COLS, a) != 0) return 2;
        cases[k].ggml(x, b, ROWS, COLS, NULL);
        for (size_t i = 0; i < n; i++) diff += a[i] != b[i];
        printf("%-7s %zu of %zu bytes differ from ggml\n", cq_type_name(cases[k].type), diff, n);
        bad |= diff != 0;
        free(a);
        free(b);
    }
    return bad;
}
C
"$CC" -O2 -std=c11 -ffp-contract=off -I "$root/Sources/CQuant/include" "$work/compare.c" "$work/ggml-quants.o" \
    "$root"/Sources/CQuant/*.c -lm -lpthread -o "$work/compare"
"$work/compare"
