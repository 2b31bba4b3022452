/* vec.h - a thin mapping from vector operations to one instruction set,
 * chosen by the compiler flags the including file is built with, so one
 * kernel body (kernels.c) serves AVX2+FMA, AVX-512, NEON and the x86-64
 * baseline, SSE2.
 *
 * vf is a vector of VL floats, of which the instruction set has VREGS
 * registers (what a register block may hold).  The _n forms touch only
 * the first n lanes (0 < n <= VL): loads give zeros in the rest, stores
 * leave memory alone.  With a constant n == VL they compile to the plain
 * instructions.  An instruction set without masked loads and stores
 * defines VEC_BUFFERED_TAILS and its whole-vector vload_all and
 * vstore_all; the _n forms are then written once, at the end. */
#ifndef DM_VEC_H
#define DM_VEC_H

#include <sleef.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__AVX512F__)
#include <immintrin.h>

#define VL 16
#define VREGS 32 /* vector registers */
#define VEC_ISA "avx512"
#define VEC_TABLE dm_kernels_avx512
typedef __m512 vf;

static inline __mmask16 lanes(size_t n) { return (__mmask16)((1u << n) - 1); }
static inline vf vload_n(const float *p, size_t n) { return n == VL ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(lanes(n), p); }
static inline void vstore_n(float *p, vf v, size_t n)
{
    if (n == VL) _mm512_storeu_ps(p, v);
    else _mm512_mask_storeu_ps(p, lanes(n), v);
}
static inline vf vkeep_n(vf v, size_t n) { return n == VL ? v : _mm512_maskz_mov_ps(lanes(n), v); }
static inline vf vset1(float x) { return _mm512_set1_ps(x); }
static inline vf vadd(vf a, vf b) { return _mm512_add_ps(a, b); }
static inline vf vsub(vf a, vf b) { return _mm512_sub_ps(a, b); }
static inline vf vmul(vf a, vf b) { return _mm512_mul_ps(a, b); }
static inline vf vdiv(vf a, vf b) { return _mm512_div_ps(a, b); }
static inline vf vfma(vf a, vf b, vf c) { return _mm512_fmadd_ps(a, b, c); }
static inline vf vabs(vf a) { return _mm512_abs_ps(a); }
static inline vf vmin(vf a, vf b) { return _mm512_min_ps(a, b); }
static inline float vsum(vf v) { return _mm512_reduce_add_ps(v); }
/* a > b ? x : y, lane by lane */
static inline vf vselect_gt(vf a, vf b, vf x, vf y) { return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(a, b, _CMP_GT_OQ), y, x); }
static inline vf vround(vf x) { return _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
/* p * 2^n for integral n whose result stays a normal float */
static inline vf vscale2(vf p, vf n)
{
    __m512i e = _mm512_slli_epi32(_mm512_cvtps_epi32(n), 23);
    return _mm512_castsi512_ps(_mm512_add_epi32(_mm512_castps_si512(p), e));
}
/* x where x is NaN, else r */
static inline vf vkeep_nan(vf x, vf r) { return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q), r, x); }
static inline vf vlog1p(vf x) { return Sleef_log1pf16_u10avx512f(x); }
static inline vf vround_f16(vf x)
{
    return _mm512_cvtph_ps(_mm512_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}
/* bits + 0x7fff + (bit 16): round to nearest even at bit 16; NaN kept and
 * made quiet, as dm_f32_to_bf16 does, so its high half is a NaN too */
static inline vf vround_bf16(vf x)
{
    __m512i b = _mm512_castps_si512(x), one = _mm512_set1_epi32(1);
    __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(b, 16), one);
    __m512i r = _mm512_add_epi32(b, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), lsb));
    vf rounded = _mm512_castsi512_ps(_mm512_and_si512(r, _mm512_set1_epi32((int)0xffff0000u)));
    vf quiet = _mm512_castsi512_ps(_mm512_or_si512(b, _mm512_set1_epi32(0x00400000)));
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q), rounded, quiet);
}

#elif defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>

#define VL 8
#define VREGS 16
#define VEC_ISA "avx2"
#define VEC_TABLE dm_kernels_avx2
typedef __m256 vf;

/* Eight -1s then eight 0s: the mask of the first n lanes starts at 8 - n. */
static const int32_t lane_mask_table[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
static inline __m256i lanes(size_t n) { return _mm256_loadu_si256((const __m256i *)(lane_mask_table + 8 - n)); }
static inline vf vload_n(const float *p, size_t n) { return n == VL ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, lanes(n)); }
static inline void vstore_n(float *p, vf v, size_t n)
{
    if (n == VL) _mm256_storeu_ps(p, v);
    else _mm256_maskstore_ps(p, lanes(n), v);
}
static inline vf vkeep_n(vf v, size_t n) { return n == VL ? v : _mm256_and_ps(v, _mm256_castsi256_ps(lanes(n))); }
static inline vf vset1(float x) { return _mm256_set1_ps(x); }
static inline vf vadd(vf a, vf b) { return _mm256_add_ps(a, b); }
static inline vf vsub(vf a, vf b) { return _mm256_sub_ps(a, b); }
static inline vf vmul(vf a, vf b) { return _mm256_mul_ps(a, b); }
static inline vf vdiv(vf a, vf b) { return _mm256_div_ps(a, b); }
static inline vf vfma(vf a, vf b, vf c) { return _mm256_fmadd_ps(a, b, c); }
static inline vf vabs(vf a) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), a); }
static inline vf vmin(vf a, vf b) { return _mm256_min_ps(a, b); }
static inline float vsum(vf v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
static inline vf vselect_gt(vf a, vf b, vf x, vf y) { return _mm256_blendv_ps(y, x, _mm256_cmp_ps(a, b, _CMP_GT_OQ)); }
static inline vf vround(vf x) { return _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
/* p * 2^n for integral n whose result stays a normal float */
static inline vf vscale2(vf p, vf n)
{
    __m256i e = _mm256_slli_epi32(_mm256_cvtps_epi32(n), 23);
    return _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(p), e));
}
/* x where x is NaN, else r */
static inline vf vkeep_nan(vf x, vf r) { return _mm256_blendv_ps(r, x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q)); }
static inline vf vlog1p(vf x) { return Sleef_log1pf8_u10avx2(x); }
static inline vf vround_f16(vf x)
{
    return _mm256_cvtph_ps(_mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}
/* bits + 0x7fff + (bit 16): round to nearest even at bit 16; NaN kept and
 * made quiet, as dm_f32_to_bf16 does, so its high half is a NaN too */
static inline vf vround_bf16(vf x)
{
    __m256i b = _mm256_castps_si256(x);
    __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(b, 16), _mm256_set1_epi32(1));
    __m256i r = _mm256_add_epi32(b, _mm256_add_epi32(_mm256_set1_epi32(0x7fff), lsb));
    vf rounded = _mm256_castsi256_ps(_mm256_and_si256(r, _mm256_set1_epi32((int)0xffff0000u)));
    vf quiet = _mm256_castsi256_ps(_mm256_or_si256(b, _mm256_set1_epi32(0x00400000)));
    return _mm256_blendv_ps(rounded, quiet, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
}

#elif defined(__aarch64__)
#include <arm_neon.h>

#define VL 4
#define VREGS 32
#define VEC_ISA "neon"
#define VEC_TABLE dm_kernels_neon
typedef float32x4_t vf;

#define VEC_BUFFERED_TAILS 1 /* no masked loads and stores */
static inline vf vload_all(const float *p) { return vld1q_f32(p); }
static inline void vstore_all(float *p, vf v) { vst1q_f32(p, v); }
static inline vf vset1(float x) { return vdupq_n_f32(x); }
static inline vf vadd(vf a, vf b) { return vaddq_f32(a, b); }
static inline vf vsub(vf a, vf b) { return vsubq_f32(a, b); }
static inline vf vmul(vf a, vf b) { return vmulq_f32(a, b); }
static inline vf vdiv(vf a, vf b) { return vdivq_f32(a, b); }
static inline vf vfma(vf a, vf b, vf c) { return vfmaq_f32(c, a, b); }
static inline vf vabs(vf a) { return vabsq_f32(a); }
static inline vf vmin(vf a, vf b) { return vminq_f32(a, b); }
static inline float vsum(vf v) { return vaddvq_f32(v); }
static inline vf vselect_gt(vf a, vf b, vf x, vf y) { return vbslq_f32(vcgtq_f32(a, b), x, y); }
static inline vf vround(vf x) { return vrndnq_f32(x); }
/* p * 2^n for integral n whose result stays a normal float */
static inline vf vscale2(vf p, vf n)
{
    int32x4_t e = vshlq_n_s32(vcvtq_s32_f32(n), 23);
    return vreinterpretq_f32_s32(vaddq_s32(vreinterpretq_s32_f32(p), e));
}
/* x where x is NaN, else r */
static inline vf vkeep_nan(vf x, vf r) { return vbslq_f32(vceqq_f32(x, x), r, x); }
static inline vf vlog1p(vf x) { return Sleef_log1pf4_u10advsimd(x); }
static inline vf vround_f16(vf x) { return vcvt_f32_f16(vcvt_f16_f32(x)); }
/* bits + 0x7fff + (bit 16): round to nearest even at bit 16; NaN kept and
 * made quiet, as dm_f32_to_bf16 does, so its high half is a NaN too */
static inline vf vround_bf16(vf x)
{
    uint32x4_t b = vreinterpretq_u32_f32(x);
    uint32x4_t r = vaddq_u32(b, vaddq_u32(vdupq_n_u32(0x7fff), vandq_u32(vshrq_n_u32(b, 16), vdupq_n_u32(1))));
    vf rounded = vreinterpretq_f32_u32(vandq_u32(r, vdupq_n_u32(0xffff0000u)));
    vf quiet = vreinterpretq_f32_u32(vorrq_u32(b, vdupq_n_u32(0x00400000)));
    return vbslq_f32(vceqq_f32(x, x), rounded, quiet);
}

#elif defined(__SSE2__) && defined(__x86_64__)
/* The x86-64 baseline, for CPUs without AVX2: four lanes and no fused
 * multiply-add (vfma rounds twice), no round or blend instructions. */
#include <emmintrin.h>

#include "dtype.h"

#define VL 4
#define VREGS 16
#define VEC_ISA "sse2"
#define VEC_TABLE dm_kernels_sse2
typedef __m128 vf;

#define VEC_BUFFERED_TAILS 1 /* no masked loads and stores */
static inline vf vload_all(const float *p) { return _mm_loadu_ps(p); }
static inline void vstore_all(float *p, vf v) { _mm_storeu_ps(p, v); }
static inline vf vset1(float x) { return _mm_set1_ps(x); }
static inline vf vadd(vf a, vf b) { return _mm_add_ps(a, b); }
static inline vf vsub(vf a, vf b) { return _mm_sub_ps(a, b); }
static inline vf vmul(vf a, vf b) { return _mm_mul_ps(a, b); }
static inline vf vdiv(vf a, vf b) { return _mm_div_ps(a, b); }
static inline vf vfma(vf a, vf b, vf c) { return _mm_add_ps(_mm_mul_ps(a, b), c); }
static inline vf vabs(vf a) { return _mm_andnot_ps(_mm_set1_ps(-0.0f), a); }
static inline vf vmin(vf a, vf b) { return _mm_min_ps(a, b); }
static inline float vsum(vf v)
{
    __m128 s = _mm_add_ps(v, _mm_movehl_ps(v, v));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}
static inline vf vblend(vf mask, vf x, vf y) { return _mm_or_ps(_mm_and_ps(mask, x), _mm_andnot_ps(mask, y)); }
static inline vf vselect_gt(vf a, vf b, vf x, vf y) { return vblend(_mm_cmpgt_ps(a, b), x, y); }
/* to nearest, ties to even (MXCSR's default), for |x| < 2^31: exp's use */
static inline vf vround(vf x) { return _mm_cvtepi32_ps(_mm_cvtps_epi32(x)); }
/* p * 2^n for integral n whose result stays a normal float */
static inline vf vscale2(vf p, vf n)
{
    __m128i e = _mm_slli_epi32(_mm_cvtps_epi32(n), 23);
    return _mm_castsi128_ps(_mm_add_epi32(_mm_castps_si128(p), e));
}
/* x where x is NaN, else r */
static inline vf vkeep_nan(vf x, vf r) { return vblend(_mm_cmpunord_ps(x, x), x, r); }
static inline vf vlog1p(vf x) { return Sleef_log1pf4_u10sse2(x); }
/* no conversion instructions: the file formats' exact conversions */
static inline vf vround_f16(vf x)
{
    float lanes[VL];
    _mm_storeu_ps(lanes, x);
    for (int i = 0; i < VL; i++) lanes[i] = dm_f16_to_f32(dm_f32_to_f16(lanes[i]));
    return _mm_loadu_ps(lanes);
}
/* bits + 0x7fff + (bit 16): round to nearest even at bit 16; NaN kept and
 * made quiet, as dm_f32_to_bf16 does, so its high half is a NaN too */
static inline vf vround_bf16(vf x)
{
    __m128i b = _mm_castps_si128(x);
    __m128i lsb = _mm_and_si128(_mm_srli_epi32(b, 16), _mm_set1_epi32(1));
    __m128i r = _mm_add_epi32(b, _mm_add_epi32(_mm_set1_epi32(0x7fff), lsb));
    vf rounded = _mm_castsi128_ps(_mm_and_si128(r, _mm_set1_epi32((int)0xffff0000u)));
    vf quiet = _mm_castsi128_ps(_mm_or_si128(b, _mm_set1_epi32(0x00400000)));
    return vblend(_mm_cmpunord_ps(x, x), quiet, rounded);
}

#else
#error "vec.h needs -mavx512f, -mavx2 -mfma, SSE2 on x86-64, or an aarch64 target"
#endif

#ifdef VEC_BUFFERED_TAILS
/* Without masked loads and stores, a tail goes through a buffer. */
static inline vf vload_n(const float *p, size_t n)
{
    if (n == VL) return vload_all(p);
    float lanes[VL] = {0};
    memcpy(lanes, p, n * sizeof(float));
    return vload_all(lanes);
}
static inline void vstore_n(float *p, vf v, size_t n)
{
    if (n == VL) {
        vstore_all(p, v);
        return;
    }
    float lanes[VL];
    vstore_all(lanes, v);
    memcpy(p, lanes, n * sizeof(float));
}
static inline vf vkeep_n(vf v, size_t n) { return n == VL ? v : vload_n((const float *)&v, n); }
#endif

static inline vf vload(const float *p) { return vload_n(p, VL); }
static inline void vstore(float *p, vf v) { vstore_n(p, v, VL); }

#endif
