/* half_gemm_bf16_x86.h - what the x86 bf16 kernels (half_gemm_avx512.c,
 * half_gemm_amx.c) share: bf16 in pairs of k, A's rows rounded with
 * AVX-512, and half_gemm_kernel.h's parts on top.  Included after vec.h
 * and after the kernel defines HALF_K_STEP. */
#ifndef DM_HALF_GEMM_BF16_X86_H
#define DM_HALF_GEMM_BF16_X86_H

#include "half_gemm.h"
#include "vec_math.h"

#include <immintrin.h>

#define HALF_PRECISION DM_PRECISION_BF16
#define HALF_GROUP 2

/* The high halves of the bf16-rounded floats, narrowed from 32 to 16 bits. */
static inline void store_halves(uint16_t *dst, vf v)
{
    __m512i bits = _mm512_srli_epi32(_mm512_castps_si512(vround_bf16(v)), 16);
    _mm256_storeu_si256((__m256i *)dst, _mm512_cvtepi32_epi16(bits));
}

#include "half_gemm_kernel.h"

#endif
