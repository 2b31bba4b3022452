/* half_gemm_avx512.c - bf16 products on AVX512-BF16 (Cooper Lake, Sapphire
 * Rapids and later Xeons, Zen 4): vdpbf16ps multiplies pairs of bf16 and
 * adds both products to a float32 lane.  Compiled with -mavx512bf16 alone
 * (simd/meson.build); the avx512 table must be active to choose it.
 *
 * What vdpbf16ps computes, per the Intel SDM: lane j of the accumulator
 * gets a[2j+1] * b[2j+1] added, then a[2j] * b[2j], each product exact in
 * float32 and each sum rounded to nearest even, denormal inputs and
 * results taken as zero whatever MXCSR says.  So the sums differ from the
 * reference's k order only by taking each pair's odd k first, and denormal
 * values (below 1.2e-38, never a network's) are lost.
 *
 * Layout: rows of A as bf16, k pairs contiguous, so one 32-bit broadcast
 * gives a pair to every lane; weight panels of 16 columns with a pair per
 * column (HALF_GROUP 2), 64 bytes, one register, per pair of k. */
#include "vec.h"

#include <string.h>

#define HALF_K_STEP 2
#include "half_gemm_bf16_x86.h"

/* Rows of a register block; its columns are one or two panels, so up to
 * 16 accumulators, and per pair two weight loads and 8 broadcasts. */
#define BLOCK_ROWS 8

_Static_assert(DM_PANEL == 16, "a panel is one register of 16 floats");

/* Rows r < rows, columns [0, cols) (cols <= 16 * panels) of the block of
 * C at c, from packed rows a (row_halves apart) and the panels at w (the
 * second `pairs` registers after the first); bias (NULL: none) from the
 * block's first column. */
static inline __attribute__((always_inline)) void block(size_t rows, size_t panels, size_t pairs, const uint16_t *a,
                                                        size_t row_halves, const __m512i *w, float beta,
                                                        const float *bias, dm_act act, float *c, size_t ldc,
                                                        size_t cols)
{
    __m512 acc[BLOCK_ROWS][2];
    for (size_t r = 0; r < rows; r++)
        for (size_t p = 0; p < panels; p++) acc[r][p] = _mm512_setzero_ps();
    for (size_t q = 0; q < pairs; q++) {
        __m512bh w0 = (__m512bh)_mm512_loadu_si512(w + q);
        __m512bh w1 = panels > 1 ? (__m512bh)_mm512_loadu_si512(w + pairs + q) : w0;
        for (size_t r = 0; r < rows; r++) {
            int32_t pair;
            memcpy(&pair, a + r * row_halves + 2 * q, sizeof pair);
            __m512bh ar = (__m512bh)_mm512_set1_epi32(pair);
            acc[r][0] = _mm512_dpbf16_ps(acc[r][0], ar, w0);
            if (panels > 1) acc[r][1] = _mm512_dpbf16_ps(acc[r][1], ar, w1);
        }
    }
    for (size_t p = 0; p < panels; p++) {
        size_t n = cols - p * DM_PANEL < DM_PANEL ? cols - p * DM_PANEL : DM_PANEL;
        vf b = bias ? vload_n(bias + p * DM_PANEL, n) : vset1(0.0f);
        for (size_t r = 0; r < rows; r++) vstore_product(c + r * ldc + p * DM_PANEL, acc[r][p], beta, b, act, n);
    }
}

/* The block for a run-time row count: each count its own copy, so the
 * accumulators stay in registers. */
static void block_rows(size_t rows, size_t panels, size_t pairs, const uint16_t *a, size_t row_halves,
                       const __m512i *w, float beta, const float *bias, dm_act act, float *c, size_t ldc,
                       size_t cols)
{
    switch (rows) {
#define BLOCK_CASE(n)                                                                        \
    case n:                                                                                  \
        if (panels > 1) block(n, 2, pairs, a, row_halves, w, beta, bias, act, c, ldc, cols); \
        else block(n, 1, pairs, a, row_halves, w, beta, bias, act, c, ldc, cols);            \
        break;
        BLOCK_CASE(1)
        BLOCK_CASE(2)
        BLOCK_CASE(3)
        BLOCK_CASE(4)
        BLOCK_CASE(5)
        BLOCK_CASE(6)
        BLOCK_CASE(7)
        BLOCK_CASE(8)
#undef BLOCK_CASE
    }
}

/* Column blocks of two panels outside, so they stay in cache while the
 * rows pass under them. */
static void gemm(size_t rows, size_t K, const void *rows_packed, const void *weight, size_t N, size_t n0, size_t n1,
                 float beta, const float *bias, dm_act act, float *C, size_t ldc)
{
    (void)N; /* a panel's place depends on K alone */
    size_t pairs = k_padded(K) / 2, row_halves = row_bytes(K) / sizeof(uint16_t);
    const __m512i *panels = weight;
    for (size_t n = n0; n < n1; n += 2 * DM_PANEL) {
        size_t cols = n1 - n < 2 * DM_PANEL ? n1 - n : 2 * DM_PANEL;
        const __m512i *w = panels + n / DM_PANEL * pairs;
        for (size_t r = 0; r < rows; r += BLOCK_ROWS)
            block_rows(rows - r < BLOCK_ROWS ? rows - r : BLOCK_ROWS, cols > DM_PANEL ? 2 : 1, pairs,
                       (const uint16_t *)rows_packed + r * row_halves, row_halves, w, beta, bias ? bias + n : NULL,
                       act, C + r * ldc + n, ldc, cols);
    }
}

const dm_half_gemm dm_half_gemm_avx512_bf16 = {
    .name = "avx512-bf16",
    .precision = DM_PRECISION_BF16,
    .rows = BLOCK_ROWS,
    .supported = dm_cpu_has_avx512_bf16,
    .weight_bytes = weight_bytes,
    .pack_weight = pack_weight,
    .row_bytes = row_bytes,
    .pack_rows = pack_rows,
    .gemm = gemm,
};
