/* half_gemm.c - the half-precision product's reference, and the choice
 * among the native kernels this build carries (none yet on this target
 * when the list is empty). */
#include "half_gemm.h"

#include "kernels.h"

#include <string.h>

static float rounded(float x, dm_precision precision)
{
    float y;
    dm_kernels_scalar.round_half(&x, &y, 1, precision);
    return y;
}

void dm_half_gemm_ref(dm_precision precision, size_t M, size_t N, size_t K, const float *A, size_t lda,
                      const float *W, float beta, float *C, size_t ldc)
{
    for (size_t r = 0; r < M; r++)
        for (size_t n = 0; n < N; n++) {
            float sum = 0.0f;
            for (size_t k = 0; k < K; k++) sum += rounded(A[r * lda + k], precision) * rounded(W[n * K + k], precision);
            float *c = C + r * ldc + n;
            *c = beta != 0.0f ? beta * *c + sum : sum;
        }
}

const dm_half_gemm *const dm_half_gemms[] = {NULL};
const size_t dm_half_gemm_count = 0;

const dm_half_gemm *dm_half_gemm_native(dm_precision precision)
{
    const dm_kernels *k = dm_kernels_active();
    for (size_t i = 0; i < dm_half_gemm_count; i++) {
        const dm_half_gemm *g = dm_half_gemms[i];
        /* a native kernel belongs to the instruction set its name starts with */
        if (g->precision == precision && k && strncmp(g->name, k->isa, strlen(k->isa)) == 0 && g->supported())
            return g;
    }
    return NULL;
}
