/* kernels_neon.c - the kernel table for 64-bit ARM with Advanced SIMD
 * (NEON), four floats a vector; exp, erf and log1p come from SLEEF.
 *
 * Channel counts need not be multiples of four: the last partial vector of a
 * row goes through a small buffer (load_n / store_n), so tails run the same
 * arithmetic as the body. */
#include "kernels.h"

#include <arm_neon.h>
#include <math.h>
#include <sleef.h>
#include <string.h>

/* The first n (at most 4) floats at p, zeros after. */
static inline float32x4_t load_n(const float *p, size_t n)
{
    if (n >= 4) return vld1q_f32(p);
    float buf[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    memcpy(buf, p, n * sizeof(float));
    return vld1q_f32(buf);
}

/* Store the first n (at most 4) lanes of v at p. */
static inline void store_n(float *p, float32x4_t v, size_t n)
{
    if (n >= 4) {
        vst1q_f32(p, v);
        return;
    }
    float buf[4];
    vst1q_f32(buf, v);
    memcpy(p, buf, n * sizeof(float));
}

static inline size_t min4(size_t n) { return n < 4 ? n : 4; }

static inline float32x4_t gelu4(float32x4_t x)
{
    float32x4_t erf = Sleef_erff4_u10advsimd(vmulq_n_f32(x, 0.70710678118654752f));
    return vmulq_f32(vmulq_n_f32(x, 0.5f), vaddq_f32(vdupq_n_f32(1.0f), erf));
}

static inline float32x4_t silu4(float32x4_t x)
{
    return vdivq_f32(x, vaddq_f32(vdupq_n_f32(1.0f), Sleef_expf4_u10advsimd(vnegq_f32(x))));
}

/* PyTorch's softplus: the identity above 20. */
static inline float32x4_t softplus4(float32x4_t x)
{
    float32x4_t soft = Sleef_log1pf4_u10advsimd(Sleef_expf4_u10advsimd(x));
    return vbslq_f32(vcgtq_f32(x, vdupq_n_f32(20.0f)), x, soft);
}

static inline float32x4_t activate4(float32x4_t x, dm_act act)
{
    switch (act) {
    case DM_ACT_GELU: return gelu4(x);
    case DM_ACT_SILU: return silu4(x);
    case DM_ACT_NONE: break;
    }
    return x;
}

static void layernorm_neon(const float *x, float *y, size_t rows, size_t c,
                           const float *gamma, const float *beta, dm_act act)
{
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * c;
        float *yr = y + r * c;
        float32x4_t acc = vdupq_n_f32(0.0f);
        size_t j = 0;
        for (; j + 4 <= c; j += 4) acc = vaddq_f32(acc, vld1q_f32(xr + j));
        float mean = vaddvq_f32(acc);
        for (; j < c; j++) mean += xr[j];
        mean /= (float)c;

        float32x4_t vmean = vdupq_n_f32(mean);
        acc = vdupq_n_f32(0.0f);
        for (j = 0; j + 4 <= c; j += 4) {
            float32x4_t d = vsubq_f32(vld1q_f32(xr + j), vmean);
            acc = vfmaq_f32(acc, d, d);
        }
        float var = vaddvq_f32(acc);
        for (; j < c; j++) var += (xr[j] - mean) * (xr[j] - mean);
        var /= (float)c;
        float inv = 1.0f / sqrtf(var + DM_LN_EPS);

        for (j = 0; j < c; j += 4) {
            size_t n = min4(c - j);
            float32x4_t v = vmulq_n_f32(vsubq_f32(load_n(xr + j, n), vmean), inv);
            v = vfmaq_f32(load_n(beta + j, n), v, load_n(gamma + j, n));
            store_n(yr + j, activate4(v, act), n);
        }
    }
}

static void dwconv3x3_neon(const float *x, float *y, int h, int w, int c,
                           const float *w9, const float *bias, dm_act act,
                           int y0, int y1)
{
    for (int oy = y0; oy < y1; oy++)
        for (int ox = 0; ox < w; ox++) {
            float *out = y + ((size_t)oy * w + ox) * c;
            for (int ch = 0; ch < c; ch += 4) {
                size_t n = min4((size_t)(c - ch));
                float32x4_t acc = bias ? load_n(bias + ch, n) : vdupq_n_f32(0.0f);
                for (int ky = 0; ky < 3; ky++) {
                    int iy = oy + ky - 1;
                    if (iy < 0 || iy >= h) continue;
                    for (int kx = 0; kx < 3; kx++) {
                        int ix = ox + kx - 1;
                        if (ix < 0 || ix >= w) continue;
                        const float *in = x + ((size_t)iy * w + ix) * c + ch;
                        const float *k = w9 + (size_t)(ky * 3 + kx) * c + ch;
                        acc = vfmaq_f32(acc, load_n(in, n), load_n(k, n));
                    }
                }
                store_n(out + ch, activate4(acc, act), n);
            }
        }
}

static void bias_act_neon(float *y, size_t rows, size_t c, const float *bias, dm_act act)
{
    for (size_t r = 0; r < rows; r++) {
        float *yr = y + r * c;
        for (size_t j = 0; j < c; j += 4) {
            size_t n = min4(c - j);
            float32x4_t v = load_n(yr + j, n);
            if (bias) v = vaddq_f32(v, load_n(bias + j, n));
            store_n(yr + j, activate4(v, act), n);
        }
    }
}

static void sample_neon(const float *v, const float *off, float *u, int h, int w,
                        int c, int groups, size_t p0, size_t p1)
{
    int cg = c / groups;
    for (size_t p = p0; p < p1; p++) {
        int py = (int)(p / (size_t)w), px = (int)(p % (size_t)w);
        for (int g = 0; g < groups; g++) {
            const float *corner[4];
            float weight[4];
            int corners = dm_bilinear_corners(v, h, w, c, (size_t)g * cg, (float)px + off[p * 2 * groups + 2 * g],
                                              (float)py + off[p * 2 * groups + 2 * g + 1], corner, weight);
            float *out = u + p * c + (size_t)g * cg;
            for (int j = 0; j < cg; j += 4) {
                size_t n = min4((size_t)(cg - j));
                float32x4_t acc = vdupq_n_f32(0.0f);
                for (int k = 0; k < corners; k++) acc = vfmaq_n_f32(acc, load_n(corner[k] + j, n), weight[k]);
                store_n(out + j, acc, n);
            }
        }
    }
}

/* Four channels at a time, the state kept in a register over all steps. */
static void scan_neon(const dm_scan_args *a, size_t t0, size_t t1, size_t c0,
                      size_t c1, float *h, float *decay, float *y)
{
    size_t C = a->channels;
    for (size_t c = c0; c < c1; c += 4) {
        size_t n = min4(c1 - c);
        float32x4_t state = load_n(h + c, n), prod = vdupq_n_f32(1.0f);
        float32x4_t va = load_n(a->a + c, n), vd = load_n(a->d + c, n);
        float32x4_t bias = load_n(a->dt_bias + c, n);
        for (size_t t = t0; t < t1; t++) {
            float bt = a->bc[t * a->bc_stride], ct = a->bc[t * a->bc_stride + 1];
            float32x4_t dt = softplus4(vaddq_f32(load_n(a->delta + t * C + c, n), bias));
            float32x4_t da = Sleef_expf4_u10advsimd(vmulq_f32(dt, va));
            float32x4_t u = load_n(a->u + t * C + c, n);
            state = vfmaq_f32(vmulq_f32(vmulq_n_f32(dt, bt), u), da, state);
            prod = vmulq_f32(prod, da);
            if (decay) store_n(decay + t * C + c, prod, n);
            if (y) store_n(y + t * C + c, vfmaq_n_f32(vmulq_f32(u, vd), state, ct), n);
        }
        store_n(h + c, state, n);
    }
}

int dm_neon_supported(void) { return 1; /* Advanced SIMD is part of the aarch64 baseline */ }

const dm_kernels dm_kernels_neon = {
    .isa = "neon",
    .layernorm = layernorm_neon,
    .dwconv3x3 = dwconv3x3_neon,
    .bias_act = bias_act_neon,
    .sample = sample_neon,
    .scan = scan_neon,
};
