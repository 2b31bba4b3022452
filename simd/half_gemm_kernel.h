/* half_gemm_kernel.h - the parts of a native half-precision kernel
 * (half_gemm.h) that do not depend on its instructions: its sizes, its
 * weight layout and the rounding of A's rows.  Included by a kernel's file
 * after vec.h and after it defines
 *   HALF_PRECISION  the precision it multiplies in;
 *   HALF_GROUP      consecutive k its instruction takes per column (the
 *                   weight panels' group, dm_half_pack_panels);
 *   HALF_K_STEP     the multiple of HALF_GROUP that K is padded to with
 *                   zeros, in both the weight and the rows;
 *   store_halves(dst, v)  the VL floats of v rounded as round_half does,
 *                   as 16-bit values into dst. */
#ifndef DM_HALF_GEMM_KERNEL_H
#define DM_HALF_GEMM_KERNEL_H

#include "half_gemm.h"

#include <string.h>

/* A packed row's values: K padded to a whole 64 bytes. */
#define HALF_ROW_ALIGN 32

static size_t round_up(size_t x, size_t step) { return (x + step - 1) / step * step; }

static size_t k_padded(size_t K) { return round_up(K, HALF_K_STEP); }

static size_t weight_bytes(size_t N, size_t K) { return dm_half_panels_bytes(N, k_padded(K)); }

static void pack_weight(const float *W, size_t N, size_t K, void *packed)
{
    dm_half_pack_panels(W, N, K, k_padded(K), HALF_GROUP, HALF_PRECISION, packed);
}

static size_t row_bytes(size_t K) { return round_up(K, HALF_ROW_ALIGN) * sizeof(uint16_t); }

/* Each row: K rounded values, then zeros to the row's end. */
static void pack_rows(const float *A, size_t lda, size_t rows, size_t K, void *packed)
{
    size_t width = round_up(K, HALF_ROW_ALIGN), filled = round_up(K, VL);
    for (size_t r = 0; r < rows; r++) {
        const float *a = A + r * lda;
        uint16_t *dst = (uint16_t *)packed + r * width;
        for (size_t k = 0; k < K; k += VL) store_halves(dst + k, vload_n(a + k, K - k < VL ? K - k : VL));
        memset(dst + filled, 0, (width - filled) * sizeof(uint16_t));
    }
}

#endif
