/* vec_math.h - the elementwise functions the kernels compute on vec.h's
 * vectors (exp, erf, the activations), the last step of a matrix product
 * and a bias and activation over rows, shared by the kernel table
 * (kernels.c) and the native half-precision products (half_gemm_*.c), so
 * both apply an activation alike.  Included after vec.h. */
#ifndef DM_VEC_MATH_H
#define DM_VEC_MATH_H

#include "kernels.h"

#include <math.h>

/* The polynomial of degree `degree` with coefficients c (lowest first) at
 * x, by Horner's rule. */
static inline vf vpoly(vf x, const float *c, int degree)
{
    vf p = vset1(c[degree]);
    for (int i = degree - 1; i >= 0; i--) p = vfma(p, x, vset1(c[i]));
    return p;
}

/* exp within 2 ulp of expf on [-87.3, 88.37], several times cheaper than a
 * libm-grade exp: x = n ln2 + r with |r| <= ln2 / 2 (ln2 in two parts, so r
 * is exact), e^r = 1 + r + r^2 P(r) with P of degree 5 (the classic minimax
 * fit of Cephes' expf), times 2^n put into the exponent bits.  Below the
 * range the result is 0 and above it infinity (expf gives subnormals below
 * 1.2e-38 and finite values up to 88.72: no caller tells them apart); NaN
 * stays NaN. */
static inline vf vexp(vf x)
{
    static const float p[6] = {5.0000001201e-1f, 1.6666665459e-1f, 4.1665795894e-2f,
                               8.3334519073e-3f, 1.3981999507e-3f, 1.9875691500e-4f};
    vf lo = vset1(-87.3f), hi = vset1(88.37f);
    vf c = vmin(vselect_gt(lo, x, lo, x), hi); /* NaN goes to hi, and back below */
    vf n = vround(vmul(c, vset1(1.44269504088896341f)));
    vf r = vfma(n, vset1(-0.693359375f), c);
    r = vfma(n, vset1(2.12194440e-4f), r);
    vf e = vadd(vadd(vset1(1.0f), r), vmul(vmul(r, r), vpoly(r, p, 5)));
    e = vscale2(e, n);
    e = vselect_gt(lo, x, vset1(0.0f), vselect_gt(x, hi, vset1(INFINITY), e));
    return vkeep_nan(x, e);
}

/* erf within 3 ulp of erff (the scalar reference), several times cheaper
 * than a 1-ulp libm-grade erf.  Two fits, made for this code (least squares
 * on Chebyshev nodes against a double-precision erf, reweighted towards
 * minimax):
 *   |x| <= 1:        erf(x) = x * P(x^2), P of degree 5 (relative error 4e-8)
 *   1 < |x| < 3.92:  erf(|x|) = Q(|x| - 2.46), Q of degree 12 (1.7 ulp once
 *                    evaluated in float32 with fused multiply-adds)
 * At |x| >= 3.92 erf rounds to +-1 in float: the clamp gives exactly that.
 * NaN takes the first form and stays NaN. */
static inline vf verf(vf x)
{
    static const float near_zero[6] = {1.128379122673985f,    -0.376123265387527f,   0.11280182048124318f,
                                       -0.02671135493924444f, 0.004917594560315333f, -0.0005631577622841888f};
    static const float far[13] = {0.9994966983795166f,     0.0026562039274722338f,  -0.00653573963791132f,
                                  0.009832868352532387f,   -0.009904998354613781f,  0.006798041518777609f,
                                  -0.0029630616772919893f, 0.0004616915248334408f,  0.0003906346682924777f,
                                  -0.0003014247340615839f, 5.1911840273533016e-05f, 2.5373088647029363e-05f,
                                  -9.168954420601949e-06f};
    vf a = vabs(x), one = vset1(1.0f);
    vf small = vmul(x, vpoly(vmul(x, x), near_zero, 5));
    vf large = vpoly(vsub(vmin(a, vset1(3.92f)), vset1(2.46f)), far, 12);
    large = vselect_gt(vset1(0.0f), x, vsub(vset1(0.0f), large), large);
    return vselect_gt(a, one, large, small);
}

static inline vf vgelu(vf x)
{
    vf half = vmul(x, vset1(0.5f));
    return vfma(half, verf(vmul(x, vset1(0.70710678118654752f))), half);
}

static inline vf vsilu(vf x) { return vdiv(x, vadd(vset1(1.0f), vexp(vsub(vset1(0.0f), x)))); }

/* PyTorch's softplus: the identity above its threshold of 20. */
static inline vf vsoftplus(vf x) { return vselect_gt(x, vset1(20.0f), x, vlog1p(vexp(x))); }

static inline vf vact(vf x, dm_act act)
{
    switch (act) {
    case DM_ACT_GELU: return vgelu(x);
    case DM_ACT_SILU: return vsilu(x);
    case DM_ACT_RELU: return vselect_gt(vset1(0.0f), x, vset1(0.0f), x); /* NaN stays NaN, as in PyTorch */
    case DM_ACT_NONE: break;
    }
    return x;
}

/* A product's last step for lanes [0, n) of C at c: the sums, added to
 * beta * C unless beta is 0 (C is then not read), plus bias, through act. */
static inline void vstore_product(float *c, vf sums, float beta, vf bias, dm_act act, size_t n)
{
    if (beta != 0.0f) sums = vfma(vset1(beta), vload_n(c, n), sums);
    vstore_n(c, vact(vadd(sums, bias), act), n);
}

/* Lanes [0, n) at y: plus bias (NULL: none), through act, in place. */
static inline void vbias_act(float *y, const float *bias, dm_act act, size_t n)
{
    vf v = vload_n(y, n);
    if (bias) v = vadd(v, vload_n(bias, n));
    vstore_n(y, vact(v, act), n);
}

/* rows rows of cols floats at y, stride floats apart: plus bias (NULL:
 * none), through act, in place; whole vectors, then the partial one. */
static inline void vbias_act_rows(float *y, size_t rows, size_t cols, size_t stride, const float *bias, dm_act act)
{
    size_t tail = cols % VL, body = cols - tail;
    for (size_t r = 0; r < rows; r++) {
        float *yr = y + r * stride;
        for (size_t j = 0; j < body; j += VL) vbias_act(yr + j, bias ? bias + j : NULL, act, VL);
        if (tail) vbias_act(yr + body, bias ? bias + body : NULL, act, tail);
    }
}

#endif
