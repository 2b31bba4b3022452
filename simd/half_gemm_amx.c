/* half_gemm_amx.c - bf16 products on AMX (Sapphire Rapids and later
 * Xeons): tdpbf16ps multiplies a 16 x 32 tile of bf16 rows by a 32 x 16
 * tile of bf16 columns into 16 x 16 float32 sums, 8192 multiply-adds an
 * instruction against vdpbf16ps's 32.  Compiled with -mamx-tile -mamx-bf16
 * and AVX-512 (simd/meson.build) for the sums' way back to C; the avx512
 * table must be active to choose it, and the OS must grant the tiles'
 * state (dm_cpu_has_amx_bf16).
 *
 * Like vdpbf16ps, each pair of products is exact in float32 and added to
 * its sum with rounding to nearest even, denormals taken as zero.
 *
 * Layout: the avx512-bf16 kernel's, with K padded to 32: a weight panel's
 * 16 pairs of k are 16 rows of 64 bytes, a B tile as it is; 16 packed rows
 * of A, 32 k wide, are an A tile. */
#include "vec.h"

#include <string.h>

#define HALF_K_STEP 32
#include "half_gemm_bf16_x86.h"

_Static_assert(DM_PANEL == 16, "a panel is one tile's 16 columns");

/* A block is 2 x 2 tiles of sums: rows [0, 16) and [16, 32), columns of
 * two panels.  Tiles 0-3 hold the sums (row half * 2 + panel), 4-5 A's
 * row halves, 6-7 the panels' weights. */
#define BLOCK_ROWS 32
#define TILE_ROWS 16

/* ldtilecfg's 64 bytes (palette 1). */
typedef struct tile_config {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tile_config;

/* Tiles for a block of `rows` rows; the second row half is left
 * unconfigured when there is none. */
static void configure(size_t rows)
{
    tile_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    uint8_t upper = rows < TILE_ROWS ? (uint8_t)rows : TILE_ROWS;
    uint8_t lower = rows > TILE_ROWS ? (uint8_t)(rows - TILE_ROWS) : 0;
    uint8_t half_rows[2] = {upper, lower};
    for (int h = 0; h < 2; h++) {
        if (!half_rows[h]) continue;
        for (int p = 0; p < 2; p++) cfg.rows[2 * h + p] = half_rows[h], cfg.colsb[2 * h + p] = 64;
        cfg.rows[4 + h] = half_rows[h], cfg.colsb[4 + h] = 64;
    }
    for (int p = 0; p < 2; p++) cfg.rows[6 + p] = TILE_ROWS, cfg.colsb[6 + p] = 64;
    _tile_loadconfig(&cfg);
}

/* One block: rows (<= 32) of packed A at a, the panels at w0 and w1 (w1
 * only read when cols > 16), chunks of 32 k; the sums into C's
 * [rows][cols] (added to it when beta is 1) with bias (NULL: none, else
 * from the block's first column) on their way out of the tiles.  A whole
 * block with nothing to add is stored from the tiles straight into C;
 * the others pass through a buffer on the stack. */
static void block(size_t rows, size_t cols, size_t chunks, const uint16_t *a, size_t row_halves, const uint16_t *w0,
                  const uint16_t *w1, float beta, const float *bias, float *c, size_t ldc)
{
    int lower = rows > TILE_ROWS, second = cols > DM_PANEL;
    size_t a_stride = row_halves * sizeof(uint16_t);
    const uint16_t *a_lower = a + TILE_ROWS * row_halves;
    _tile_zero(0);
    if (second) _tile_zero(1);
    if (lower) _tile_zero(2);
    if (lower && second) _tile_zero(3);
    for (size_t j = 0; j < chunks; j++) {
        _tile_loadd(4, a + 32 * j, a_stride);
        _tile_loadd(6, w0 + 512 * j, 64);
        _tile_dpbf16ps(0, 4, 6);
        if (second) {
            _tile_loadd(7, w1 + 512 * j, 64);
            _tile_dpbf16ps(1, 4, 7);
        }
        if (lower) {
            _tile_loadd(5, a_lower + 32 * j, a_stride);
            _tile_dpbf16ps(2, 5, 6);
            if (second) _tile_dpbf16ps(3, 5, 7);
        }
    }
    if (beta == 0.0f && !bias && cols == 2 * DM_PANEL) {
        size_t c_stride = ldc * sizeof(float);
        _tile_stored(0, c, c_stride);
        _tile_stored(1, c + DM_PANEL, c_stride);
        if (lower) {
            _tile_stored(2, c + TILE_ROWS * ldc, c_stride);
            _tile_stored(3, c + TILE_ROWS * ldc + DM_PANEL, c_stride);
        }
        return;
    }
    float sums[BLOCK_ROWS][2 * DM_PANEL];
    const size_t sums_stride = sizeof sums[0];
    _tile_stored(0, &sums[0][0], sums_stride);
    if (second) _tile_stored(1, &sums[0][DM_PANEL], sums_stride);
    if (lower) _tile_stored(2, &sums[TILE_ROWS][0], sums_stride);
    if (lower && second) _tile_stored(3, &sums[TILE_ROWS][DM_PANEL], sums_stride);
    for (size_t p = 0; p * DM_PANEL < cols; p++) {
        size_t n = cols - p * DM_PANEL < DM_PANEL ? cols - p * DM_PANEL : DM_PANEL;
        vf b = bias ? vload_n(bias + p * DM_PANEL, n) : vset1(0.0f);
        for (size_t r = 0; r < rows; r++)
            vstore_product(c + r * ldc + p * DM_PANEL, vload(&sums[r][p * DM_PANEL]), beta, b, DM_ACT_NONE, n);
    }
}

/* Column blocks of two panels outside, so they stay in cache while the
 * rows pass under them; the tiles are configured for full blocks and
 * again for the last, partial one, and released at the end.  The
 * activation follows in a pass of its own over what was written: applied
 * to each block on its way out of the tiles instead, GELU after fc1 took
 * up to a quarter longer. */
static void gemm(size_t rows, size_t K, const void *rows_packed, const void *weight, size_t N, size_t n0, size_t n1,
                 float beta, const float *bias, dm_act act, float *C, size_t ldc)
{
    (void)N; /* a panel's place depends on K alone */
    size_t halves = k_padded(K), chunks = halves / 32, row_halves = row_bytes(K) / sizeof(uint16_t);
    const uint16_t *panels = weight, *a = rows_packed;
    size_t configured = 0;
    for (size_t n = n0; n < n1; n += 2 * DM_PANEL) {
        size_t cols = n1 - n < 2 * DM_PANEL ? n1 - n : 2 * DM_PANEL;
        const uint16_t *w0 = panels + n / DM_PANEL * DM_PANEL * halves, *w1 = w0 + DM_PANEL * halves;
        for (size_t r = 0; r < rows; r += BLOCK_ROWS) {
            size_t m = rows - r < BLOCK_ROWS ? rows - r : BLOCK_ROWS;
            if (m != configured) configure(configured = m);
            block(m, cols, chunks, a + r * row_halves, row_halves, w0, w1, beta, bias ? bias + n : NULL,
                  C + r * ldc + n, ldc);
        }
    }
    if (configured) _tile_release();
    if (act != DM_ACT_NONE) vbias_act_rows(C + n0, rows, n1 - n0, ldc, NULL, act);
}

const dm_half_gemm dm_half_gemm_avx512_amx_bf16 = {
    .name = "avx512-amx-bf16",
    .precision = DM_PRECISION_BF16,
    .rows = BLOCK_ROWS,
    .supported = dm_cpu_has_amx_bf16,
    .weight_bytes = weight_bytes,
    .pack_weight = pack_weight,
    .row_bytes = row_bytes,
    .pack_rows = pack_rows,
    .gemm = gemm,
};
