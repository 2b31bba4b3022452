/* half_gemm_neon.c - half-precision products on aarch64, compiled twice
 * (simd/meson.build): with FEAT_FHM for f16 ("neon-fp16") and, with
 * DM_HALF_NEON_BF16 defined, with FEAT_BF16 for bf16 ("neon-bf16").  The neon table must be active, and the
 * CPU must have the feature (dm_cpu_has_fhm, dm_cpu_has_bf16), to choose one.
 *
 * Rows of A are f16 or bf16, loaded 8 k at a time; each k (f16) or pair of
 * k (bf16) is taken from its lane by the by-element forms of the
 * instructions, against a weight panel's 16 columns. */
#include "vec.h"
#include "vec_math.h"

#include "half_gemm.h"

#include <arm_neon.h>
#include <string.h>

#define HALF_K_STEP 8 /* the k one load of a row brings */

#if !defined(DM_HALF_NEON_BF16)

#if !defined(__ARM_FEATURE_FP16_FML)
#error "neon-fp16 needs -march=...+fp16fml"
#endif

/* fmlal / fmlal2 (FEAT_FHM): f16 x f16 widened, so exact, then added to the
 * float32 accumulator with one rounding to nearest even, k after k: the
 * reference's sum, in its order. */
#define HALF_PRECISION DM_PRECISION_F16
#define HALF_GROUP 1
#define HALF_NAME "neon-fp16"
#define HALF_KERNEL dm_half_gemm_neon_fp16
#define HALF_SUPPORTED dm_cpu_has_fhm
typedef float16x8_t half8;
static inline half8 load_half8(const uint16_t *p) { return vld1q_f16((const float16_t *)p); }

/* The hardware conversion rounds to nearest even, as round_half does. */
static inline void store_halves(uint16_t *dst, vf v) { vst1_u16(dst, vreinterpret_u16_f16(vcvt_f16_f32(v))); }

/* k lane l of each row against the panel's 16 columns at w: columns 0-7
 * from w's first register (low half by fmlal, high by fmlal2), 8-15 from
 * its second. */
#define LANE_STEP(l)                                                                     \
    do {                                                                                 \
        half8 w0 = load_half8(w), w1 = load_half8(w + 8);                                \
        w += 16;                                                                         \
        for (size_t r = 0; r < rows; r++) {                                              \
            acc[r][0] = vfmlalq_laneq_low_f16(acc[r][0], w0, a[r], l);                   \
            acc[r][1] = vfmlalq_laneq_high_f16(acc[r][1], w0, a[r], l);                  \
            acc[r][2] = vfmlalq_laneq_low_f16(acc[r][2], w1, a[r], l);                   \
            acc[r][3] = vfmlalq_laneq_high_f16(acc[r][3], w1, a[r], l);                  \
        }                                                                                \
    } while (0)
#define ALL_LANES()                                                                      \
    do {                                                                                 \
        LANE_STEP(0); LANE_STEP(1); LANE_STEP(2); LANE_STEP(3);                          \
        LANE_STEP(4); LANE_STEP(5); LANE_STEP(6); LANE_STEP(7);                          \
    } while (0)

#else

#if !defined(__ARM_FEATURE_BF16_VECTOR_ARITHMETIC)
#error "neon-bf16 needs -march=...+bf16"
#endif

/* bfdot (FEAT_BF16): each float32 lane gets a[2i] * b[2i] + a[2i+1] *
 * b[2i+1] added.  Without FEAT_EBF16 (or with FPCR.EBF clear, as Linux
 * leaves it) the Arm ARM has the pair's sum and its addition to the
 * accumulator each rounded to odd, not to nearest, denormal inputs and
 * results flushed to zero, and FPCR ignored: sums that differ from the
 * reference's by its order and up to one ulp per rounding. */
#define HALF_PRECISION DM_PRECISION_BF16
#define HALF_GROUP 2
#define HALF_NAME "neon-bf16"
#define HALF_KERNEL dm_half_gemm_neon_bf16
#define HALF_SUPPORTED dm_cpu_has_bf16
typedef bfloat16x8_t half8;
static inline half8 load_half8(const uint16_t *p) { return vld1q_bf16((const bfloat16_t *)p); }

/* The high halves of the bf16-rounded floats. */
static inline void store_halves(uint16_t *dst, vf v)
{
    vst1_u16(dst, vshrn_n_u32(vreinterpretq_u32_f32(vround_bf16(v)), 16));
}

/* Pair lane l of each row against the panel's 16 columns of pairs at w,
 * four columns a register. */
#define LANE_STEP(l)                                                                     \
    do {                                                                                 \
        half8 w0 = load_half8(w), w1 = load_half8(w + 8), w2 = load_half8(w + 16),       \
              w3 = load_half8(w + 24);                                                   \
        w += 32;                                                                         \
        for (size_t r = 0; r < rows; r++) {                                              \
            acc[r][0] = vbfdotq_laneq_f32(acc[r][0], w0, a[r], l);                       \
            acc[r][1] = vbfdotq_laneq_f32(acc[r][1], w1, a[r], l);                       \
            acc[r][2] = vbfdotq_laneq_f32(acc[r][2], w2, a[r], l);                       \
            acc[r][3] = vbfdotq_laneq_f32(acc[r][3], w3, a[r], l);                       \
        }                                                                                \
    } while (0)
#define ALL_LANES()                                                                      \
    do {                                                                                 \
        LANE_STEP(0); LANE_STEP(1); LANE_STEP(2); LANE_STEP(3);                          \
    } while (0)

#endif

#include "half_gemm_kernel.h"

/* Rows of a register block: 16 accumulators, 4 rows and 2-4 weights. */
#define BLOCK_ROWS 4

_Static_assert(DM_PANEL == 16, "a panel is four registers of 4 floats");

/* 16 sums of a row into C's columns [0, cols) at c, with bias (NULL:
 * none, else from the panel's first column) and act. */
static inline void store_row(float *c, const float32x4_t acc[4], size_t cols, float beta, const float *bias,
                             dm_act act)
{
    for (size_t i = 0; i < 4 && 4 * i < cols; i++) {
        size_t n = cols - 4 * i < 4 ? cols - 4 * i : 4;
        vf b = bias ? vload_n(bias + 4 * i, n) : vset1(0.0f);
        vstore_product(c + 4 * i, acc[i], beta, b, act, n);
    }
}

/* Rows r < rows, columns [0, cols) of the block of C at c, from packed rows
 * a (row_halves apart) and the panel at w; bias from the panel's first
 * column. */
static inline __attribute__((always_inline)) void block(size_t rows, size_t K, const uint16_t *a_rows,
                                                        size_t row_halves, const uint16_t *w, float beta,
                                                        const float *bias, dm_act act, float *c, size_t ldc,
                                                        size_t cols)
{
    float32x4_t acc[BLOCK_ROWS][4];
    for (size_t r = 0; r < rows; r++)
        for (int i = 0; i < 4; i++) acc[r][i] = vdupq_n_f32(0.0f);
    for (size_t k = 0; k < k_padded(K); k += HALF_K_STEP) {
        half8 a[BLOCK_ROWS];
        for (size_t r = 0; r < rows; r++) a[r] = load_half8(a_rows + r * row_halves + k);
        ALL_LANES();
    }
    for (size_t r = 0; r < rows; r++) store_row(c + r * ldc, acc[r], cols, beta, bias, act);
}

/* Panels outside, so each stays in cache while the rows pass under it; the
 * row count of a block a constant in each call, so the accumulators stay
 * in registers. */
static void gemm(size_t rows, size_t K, const void *rows_packed, const void *weight, size_t N, size_t n0, size_t n1,
                 float beta, const float *bias, dm_act act, float *C, size_t ldc)
{
    (void)N; /* a panel's place depends on K alone */
    size_t row_halves = row_bytes(K) / sizeof(uint16_t), panel_halves = k_padded(K) * DM_PANEL;
    for (size_t n = n0; n < n1; n += DM_PANEL) {
        size_t cols = n1 - n < DM_PANEL ? n1 - n : DM_PANEL;
        const uint16_t *w = (const uint16_t *)weight + n / DM_PANEL * panel_halves;
        for (size_t r = 0; r < rows; r += BLOCK_ROWS) {
            const uint16_t *a = (const uint16_t *)rows_packed + r * row_halves;
            float *c = C + r * ldc + n;
            const float *b = bias ? bias + n : NULL;
            switch (rows - r) {
            case 1: block(1, K, a, row_halves, w, beta, b, act, c, ldc, cols); break;
            case 2: block(2, K, a, row_halves, w, beta, b, act, c, ldc, cols); break;
            case 3: block(3, K, a, row_halves, w, beta, b, act, c, ldc, cols); break;
            default: block(BLOCK_ROWS, K, a, row_halves, w, beta, b, act, c, ldc, cols); break;
            }
        }
    }
}

const dm_half_gemm HALF_KERNEL = {
    .name = HALF_NAME,
    .precision = HALF_PRECISION,
    .rows = BLOCK_ROWS,
    .supported = HALF_SUPPORTED,
    .weight_bytes = weight_bytes,
    .pack_weight = pack_weight,
    .row_bytes = row_bytes,
    .pack_rows = pack_rows,
    .gemm = gemm,
};
