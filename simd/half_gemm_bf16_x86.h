/* half_gemm_bf16_x86.h - what the x86 bf16 kernels (half_gemm_avx512.c,
 * half_gemm_amx.c) share: bf16 in pairs of k, A's rows rounded with
 * AVX-512, and half_gemm_kernel.h's parts on top.  Included after vec.h
 * and after the kernel defines HALF_K_STEP. */
#ifndef DM_HALF_GEMM_BF16_X86_H
#define DM_HALF_GEMM_BF16_X86_H

#include "half_gemm.h"

#include <immintrin.h>

#define HALF_PRECISION DM_PRECISION_BF16
#define HALF_GROUP 2

/* The high halves of the bf16-rounded floats, narrowed from 32 to 16 bits. */
static inline void store_halves(uint16_t *dst, vf v)
{
    __m512i bits = _mm512_srli_epi32(_mm512_castps_si512(vround_bf16(v)), 16);
    _mm256_storeu_si256((__m256i *)dst, _mm512_cvtepi32_epi16(bits));
}

/* Lanes [0, n) of a block's row of sums into C at dst: added to C when
 * beta is 1, written over it when 0. */
static inline void store_sums(float *dst, __m512 sum, size_t n, float beta)
{
    __mmask16 lanes = (__mmask16)((1u << n) - 1);
    if (beta != 0.0f) sum = _mm512_add_ps(_mm512_maskz_loadu_ps(lanes, dst), sum);
    _mm512_mask_storeu_ps(dst, lanes, sum);
}

#include "half_gemm_kernel.h"

#endif
