/* panels.h - the layout of a matrix product's weight as the product
 * kernels read it: the model holds its weights this way (model.c); the
 * gemm kernels (kernels.h) and the half-precision ones (half_gemm.h) read
 * it.  Plain C, no instruction set, so the model loader needs no kernels. */
#ifndef DM_PANELS_H
#define DM_PANELS_H

#include <stddef.h>

/* A product's weight W [N][K], packed: in panels of DM_PANEL columns
 * padded with zeros.  A panel holds its columns' values by groups of
 * `group` consecutive k (1 for float32), column after column within a
 * group, K padded with zeros to k_padded (a multiple of group).  A SIMD
 * kernel then loads the values of one k (or group) for a whole panel at
 * once, contiguous and in the order it walks k. */
#define DM_PANEL 16

static inline size_t dm_panel_count(size_t N) { return (N + DM_PANEL - 1) / DM_PANEL; }

/* Where W[n][k] lies in a packed weight. */
static inline size_t dm_panel_index(size_t n, size_t k, size_t k_padded, size_t group)
{
    return ((n / DM_PANEL * (k_padded / group) + k / group) * DM_PANEL + n % DM_PANEL) * group + k % group;
}

/* Floats of W [N][K] packed for the gemm kernel, the packing, and back. */
static inline size_t dm_packed_floats(size_t N, size_t K) { return dm_panel_count(N) * DM_PANEL * K; }
void dm_pack_panels(const float *W, size_t N, size_t K, float *packed);
void dm_unpack_panels(const float *packed, size_t N, size_t K, float *W);

#endif
