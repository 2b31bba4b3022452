/* half_gemm.h - matrix products in half precision on the instructions
 * that multiply bf16 or f16 values and sum in float32 (AMX's tdpbf16ps,
 * AVX512-BF16's vdpbf16ps; on aarch64 FEAT_FHM's fmlal and FEAT_BF16's bfdot).
 *
 * The product of a linear layer is C[M][N] = A[M][K] * W[N][K]^T with A and
 * W rounded to the precision (round_half, kernels.h).  Each kernel lays W
 * out once, when a workspace first meets it, and the rows of A it
 * multiplies per band, as its instructions want them; the CPU backend cuts
 * the product into tiles of rows and of DM_PANEL-aligned columns.
 * Where the CPU has none of these instructions the backend multiplies the
 * rounded values in float32 instead (see dm_precision_kernel). */
#ifndef DM_HALF_GEMM_H
#define DM_HALF_GEMM_H

#include "damamba.h"
#include "kernels.h"

#include <stddef.h>
#include <stdint.h>

typedef struct dm_half_gemm {
    const char *name; /* what dm_precision_kernel reports */
    dm_precision precision;
    size_t rows;            /* of its register block, as dm_kernels' gemm_rows */
    int (*supported)(void); /* does this CPU (and its OS) run it? */
    /* Bytes of W [N][K] laid out by pack_weight. */
    size_t (*weight_bytes)(size_t N, size_t K);
    /* W [N][K] float32, packed as the model holds it (dm_pack_panels),
     * rounded to the precision, into packed. */
    void (*pack_weight)(const float *W, size_t N, size_t K, void *packed);
    /* Bytes of one row of K values laid out by pack_rows (a multiple of 64). */
    size_t (*row_bytes)(size_t K);
    /* rows rows of A (lda floats apart), rounded, into packed. */
    void (*pack_rows)(const float *A, size_t lda, size_t rows, size_t K, void *packed);
    /* C[r][n] = act(beta * C[r][n] + sum over k of A[r][k] * W[n][k] +
     * bias[n]), for r < rows and n0 <= n < n1, from packed rows and a
     * packed weight of N columns; n0 is a multiple of DM_PANEL; beta is 0
     * (C is then not read) or 1; bias (N floats) may be NULL; C's rows are
     * ldc floats apart.  The sums are made in the precision, the rest in
     * float32 as the float32 gemm's last step does (vec_math.h). */
    void (*gemm)(size_t rows, size_t K, const void *rows_packed, const void *weight, size_t N, size_t n0, size_t n1,
                 float beta, const float *bias, dm_act act, float *C, size_t ldc);
} dm_half_gemm;

/* The native kernel for `precision` this build and CPU have, or NULL.
 * Honours DAMAMBA_ISA as the other kernels do: native kernels run only
 * under the instruction set they belong to. */
const dm_half_gemm *dm_half_gemm_native(dm_precision precision);

/* Every native kernel this build carries, whether this CPU runs it or not
 * (for the tests). */
extern const dm_half_gemm *const dm_half_gemms[];
extern const size_t dm_half_gemm_count;

/* The reference: C as the gemm entry defines it, for the whole of C [M][N],
 * rounding A and W with the scalar round_half and summing in k order. */
void dm_half_gemm_ref(dm_precision precision, size_t M, size_t N, size_t K, const float *A, size_t lda,
                      const float *W, float beta, float *C, size_t ldc);

/* ------------------------------------------------- for the kernels' files */

/* Weight layout every native kernel uses: W [N][K] (given in float32
 * panels, dm_pack_panels) rounded to the precision (as round_half rounds)
 * and stored as its 16-bit values, packed in panels (panels.h's
 * dm_panel_index) by groups of `group` consecutive k, K padded to
 * k_padded, a multiple of group. */
size_t dm_half_panels_bytes(size_t N, size_t k_padded);
void dm_half_pack_panels(const float *W, size_t N, size_t K, size_t k_padded, size_t group, dm_precision precision,
                         uint16_t *packed);

/* Whether this CPU and its OS run each kernel's instructions, compiled
 * with the baseline's flags so nothing of those instructions runs before
 * the answer is yes. */
#if defined(__x86_64__)
int dm_cpu_has_avx512_bf16(void);
int dm_cpu_has_amx_bf16(void); /* and the OS grants this process the tiles */
#elif defined(__aarch64__)
int dm_cpu_has_fhm(void);
int dm_cpu_has_bf16(void);
#endif

#endif
