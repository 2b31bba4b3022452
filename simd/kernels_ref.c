/* kernels_ref.c - the scalar reference implementation of every kernel.
 * Written for clarity: SIMD tables are tested against these. */
#include "kernels.h"

#include "dtype.h"

#include <math.h>
#include <string.h>

float dm_gelu_ref(float x) { return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f)); }
float dm_silu_ref(float x) { return x / (1.0f + expf(-x)); }
/* PyTorch's softplus with its default threshold of 20. */
float dm_softplus_ref(float x) { return x > 20.0f ? x : log1pf(expf(x)); }

static float activate(float x, dm_act act)
{
    switch (act) {
    case DM_ACT_GELU: return dm_gelu_ref(x);
    case DM_ACT_SILU: return dm_silu_ref(x);
    case DM_ACT_RELU: return x < 0.0f ? 0.0f : x; /* NaN stays NaN, as in PyTorch */
    case DM_ACT_NONE: break;
    }
    return x;
}

static void layernorm_ref(const float *x, float *y, size_t rows, size_t c,
                          const float *gamma, const float *beta, dm_act act)
{
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * c;
        float *yr = y + r * c;
        float mean = 0.0f, var = 0.0f;
        for (size_t j = 0; j < c; j++) mean += xr[j];
        mean /= (float)c;
        for (size_t j = 0; j < c; j++) var += (xr[j] - mean) * (xr[j] - mean);
        var /= (float)c;
        float inv = 1.0f / sqrtf(var + DM_LN_EPS);
        for (size_t j = 0; j < c; j++)
            yr[j] = activate((xr[j] - mean) * inv * gamma[j] + beta[j], act);
    }
}

static void dwconv3x3_ref(const float *x, float *y, int h, int w, int c,
                          const float *w9, const float *bias, dm_act act,
                          int y0, int y1)
{
    for (int oy = y0; oy < y1; oy++)
        for (int ox = 0; ox < w; ox++) {
            float *out = y + ((size_t)oy * w + ox) * c;
            for (int ch = 0; ch < c; ch++) out[ch] = bias ? bias[ch] : 0.0f;
            for (int ky = 0; ky < 3; ky++) {
                int iy = oy + ky - 1;
                if (iy < 0 || iy >= h) continue;
                for (int kx = 0; kx < 3; kx++) {
                    int ix = ox + kx - 1;
                    if (ix < 0 || ix >= w) continue;
                    const float *in = x + ((size_t)iy * w + ix) * c;
                    const float *k = w9 + (size_t)(ky * 3 + kx) * c;
                    for (int ch = 0; ch < c; ch++) out[ch] += in[ch] * k[ch];
                }
            }
            for (int ch = 0; ch < c; ch++) out[ch] = activate(out[ch], act);
        }
}

static void bias_act_ref(float *y, size_t rows, size_t c, const float *bias, dm_act act)
{
    for (size_t r = 0; r < rows; r++)
        for (size_t j = 0; j < c; j++) {
            float v = y[r * c + j] + (bias ? bias[j] : 0.0f);
            y[r * c + j] = activate(v, act);
        }
}

static void sample_ref(const float *v, const float *off, float *u, int h, int w,
                       int c, int groups, size_t p0, size_t p1)
{
    size_t cg = (size_t)(c / groups);
    for (size_t p = p0; p < p1; p++) {
        int py = (int)(p / (size_t)w), px = (int)(p % (size_t)w);
        for (int g = 0; g < groups; g++) {
            const float *src[4];
            float wt[4];
            int corners = dm_bilinear_corners(v, h, w, c, (size_t)g * cg, (float)px + off[p * 2 * groups + 2 * g],
                                              (float)py + off[p * 2 * groups + 2 * g + 1], src, wt);
            float *out = u + p * c + (size_t)g * cg;
            for (size_t j = 0; j < cg; j++) {
                float acc = 0.0f;
                for (int k = 0; k < corners; k++) acc += wt[k] * src[k][j];
                out[j] = acc;
            }
        }
    }
}

static void scan_ref(const dm_scan_args *a, size_t t0, size_t t1, size_t c0,
                     size_t c1, float *h, float *decay, float *y)
{
    size_t C = a->channels;
    for (size_t c = c0; c < c1; c++) {
        float log_decay = 0.0f;
        for (size_t t = t0; t < t1; t++) {
            float bt = a->bc[t * a->bc_stride], ct = a->bc[t * a->bc_stride + 1];
            float dt = dm_softplus_ref(a->delta[t * C + c] + a->dt_bias[c]);
            float dta = dt * a->a[c], da = expf(dta);
            float u = a->u[t * C + c];
            h[c] = da * h[c] + dt * bt * u;
            log_decay += dta;
            if (y) y[t * C + c] = h[c] * ct + u * a->d[c];
        }
        if (decay) decay[c] = expf(log_decay);
    }
}

static void avg_pool_ref(const float *x, int h, int w, int c, float *y, int oh, int ow, size_t p0, size_t p1)
{
    for (size_t p = p0; p < p1; p++) {
        int y0, y1, x0, x1;
        dm_adaptive_bin((int)(p / (size_t)ow), h, oh, &y0, &y1);
        dm_adaptive_bin((int)(p % (size_t)ow), w, ow, &x0, &x1);
        float *out = y + p * c;
        for (int ch = 0; ch < c; ch++) out[ch] = 0.0f;
        for (int iy = y0; iy < y1; iy++)
            for (int ix = x0; ix < x1; ix++)
                for (int ch = 0; ch < c; ch++) out[ch] += x[((size_t)iy * w + ix) * c + ch];
        float count = (float)((y1 - y0) * (x1 - x0));
        for (int ch = 0; ch < c; ch++) out[ch] /= count;
    }
}

static void max_pool_ref(const float *x, int h, int w, int c, int k, int stride, int pad, float *y, int oh, int ow,
                         size_t p0, size_t p1)
{
    for (size_t p = p0; p < p1; p++) {
        int oy = (int)(p / (size_t)ow), ox = (int)(p % (size_t)ow);
        float *out = y + p * c;
        for (int ch = 0; ch < c; ch++) out[ch] = -INFINITY;
        (void)oh; /* the range [p0, p1) bounds the rows */
        for (int ky = 0; ky < k; ky++)
            for (int kx = 0; kx < k; kx++) {
                int iy = oy * stride + ky - pad, ix = ox * stride + kx - pad;
                if (iy < 0 || iy >= h || ix < 0 || ix >= w) continue;
                const float *in = x + ((size_t)iy * w + ix) * c;
                for (int ch = 0; ch < c; ch++) out[ch] = in[ch] > out[ch] ? in[ch] : out[ch];
            }
    }
}

static void resize_ref(const float *x, int h, int w, int c, dm_resize mode, float *y, int oh, int ow, size_t p0,
                       size_t p1)
{
    for (size_t p = p0; p < p1; p++) {
        int oy = (int)(p / (size_t)ow), ox = (int)(p % (size_t)ow);
        float *out = y + p * c;
        if (mode == DM_RESIZE_NEAREST) {
            memcpy(out, x + ((size_t)dm_nearest_source(oy, h, oh) * w + dm_nearest_source(ox, w, ow)) * c,
                   sizeof(float) * c);
            continue;
        }
        float sy = dm_bilinear_source(oy, h, oh), sx = dm_bilinear_source(ox, w, ow);
        int y0 = (int)sy, x0 = (int)sx, y1 = y0 + (y0 < h - 1), x1 = x0 + (x0 < w - 1);
        float ly = sy - (float)y0, lx = sx - (float)x0;
        const float *a = x + ((size_t)y0 * w + x0) * c, *b = x + ((size_t)y0 * w + x1) * c;
        const float *d = x + ((size_t)y1 * w + x0) * c, *e = x + ((size_t)y1 * w + x1) * c;
        for (int ch = 0; ch < c; ch++)
            out[ch] = (1.0f - ly) * ((1.0f - lx) * a[ch] + lx * b[ch]) + ly * ((1.0f - lx) * d[ch] + lx * e[ch]);
    }
}

static void add_ref(const float *a, const float *b, float *y, size_t count, dm_act act)
{
    for (size_t i = 0; i < count; i++) y[i] = activate(a[i] + b[i], act);
}

static void erf_ref(const float *x, float *y, size_t count)
{
    for (size_t i = 0; i < count; i++) y[i] = erff(x[i]);
}

static void exp_ref(const float *x, float *y, size_t count)
{
    for (size_t i = 0; i < count; i++) y[i] = expf(x[i]);
}

/* Through the bit-exact conversions of the file formats (dtype.c). */
static void round_half_ref(const float *x, float *y, size_t count, dm_precision precision)
{
    for (size_t i = 0; i < count; i++)
        y[i] = precision == DM_PRECISION_F16 ? dm_f16_to_f32(dm_f32_to_f16(x[i])) : dm_bf16_to_f32(dm_f32_to_bf16(x[i]));
}

/* A panel at a time: its DM_PANEL sums side by side, each in k order. */
static void gemm_ref(size_t rows, size_t K, const float *A, size_t lda, const float *w, size_t n0, size_t n1,
                     float beta, const float *bias, dm_act act, float *C, size_t ldc)
{
    for (size_t r = 0; r < rows; r++)
        for (size_t first = n0; first < n1; first += DM_PANEL) {
            const float *panel = w + first / DM_PANEL * K * DM_PANEL, *a = A + r * lda;
            float sum[DM_PANEL], *c = C + r * ldc + first;
            size_t cols = n1 - first < DM_PANEL ? n1 - first : DM_PANEL;
            for (size_t j = 0; j < DM_PANEL; j++) sum[j] = beta != 0.0f && j < cols ? beta * c[j] : 0.0f;
            for (size_t k = 0; k < K; k++)
                for (size_t j = 0; j < DM_PANEL; j++) sum[j] += a[k] * panel[k * DM_PANEL + j];
            for (size_t j = 0; j < cols; j++) c[j] = activate(bias ? sum[j] + bias[first + j] : sum[j], act);
        }
}

const dm_kernels dm_kernels_scalar = {
    .isa = "scalar",
    .gemm_rows = 1,
    .layernorm = layernorm_ref,
    .dwconv3x3 = dwconv3x3_ref,
    .bias_act = bias_act_ref,
    .sample = sample_ref,
    .scan = scan_ref,
    .avg_pool = avg_pool_ref,
    .max_pool = max_pool_ref,
    .resize = resize_ref,
    .add = add_ref,
    .erf = erf_ref,
    .exp = exp_ref,
    .round_half = round_half_ref,
    .gemm = gemm_ref,
};
