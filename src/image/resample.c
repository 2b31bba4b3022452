/* resample.c - Pillow's ImagingResample for 8-bit images, reproduced so the
 * library sees the pixels the authors' evaluation transform produced.
 *
 * Each axis gets a filter whose support widens with the shrink factor
 * (antialiasing); its weights are normalized in double precision, then
 * turned into fixed point with PRECISION_BITS fractional bits.  The image is
 * filtered horizontally first, rounded and clipped to 8 bits, then
 * vertically.  A pass is skipped when its axis keeps its size, as Pillow
 * does.  Only the output window and the rows it needs are computed. */
#include "resample.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

/* 8 bits of result, 2 bits of headroom for filters with negative lobes. */
#define PRECISION_BITS (32 - 8 - 2)

static double bilinear_filter(double x)
{
    x = fabs(x);
    return x < 1.0 ? 1.0 - x : 0.0;
}

/* Keys' cubic convolution with a = -0.5, as Pillow writes it. */
static double bicubic_filter(double x)
{
    const double a = -0.5;
    x = fabs(x);
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
}

/* Fixed-point weights for `count` consecutive output positions of one axis,
 * starting at output position `start`. */
typedef struct axis_weights {
    int ksize;        /* weights stored per output position */
    int *first;       /* first input position each output reads */
    int *taps;        /* how many input positions it reads */
    int32_t *weights; /* count x ksize */
} axis_weights;

static void axis_free(axis_weights *a)
{
    free(a->first);
    free(a->taps);
    free(a->weights);
}

static dm_status axis_compute(int in_size, int out_size, int start, int count, dm_interpolation interpolation,
                              axis_weights *a)
{
    double (*filter)(double) = interpolation == DM_INTERP_BICUBIC ? bicubic_filter : bilinear_filter;
    double filter_support = interpolation == DM_INTERP_BICUBIC ? 2.0 : 1.0;
    double scale = (double)in_size / out_size;
    double filterscale = scale < 1.0 ? 1.0 : scale;
    double support = filter_support * filterscale, inv_filterscale = 1.0 / filterscale;
    a->ksize = (int)ceil(support) * 2 + 1;
    a->first = malloc(sizeof(int) * (size_t)count);
    a->taps = malloc(sizeof(int) * (size_t)count);
    a->weights = malloc(sizeof(int32_t) * (size_t)count * (size_t)a->ksize);
    double *w = malloc(sizeof(double) * (size_t)a->ksize);
    if (!a->first || !a->taps || !a->weights || !w) {
        free(w);
        axis_free(a);
        return dm_fail(DM_ERR_NOMEM, "out of memory for resampling weights");
    }
    for (int i = 0; i < count; i++) {
        double center = ((start + i) + 0.5) * scale;
        int lo = (int)(center - support + 0.5);
        int hi = (int)(center + support + 0.5);
        if (lo < 0) lo = 0;
        if (hi > in_size) hi = in_size;
        double sum = 0.0;
        for (int x = 0; x < hi - lo; x++) {
            w[x] = filter((x + lo - center + 0.5) * inv_filterscale);
            sum += w[x];
        }
        int32_t *k = a->weights + (size_t)i * a->ksize;
        for (int x = 0; x < hi - lo; x++) {
            double v = sum != 0.0 ? w[x] / sum : w[x];
            k[x] = (int32_t)(v < 0 ? -0.5 + v * (1 << PRECISION_BITS) : 0.5 + v * (1 << PRECISION_BITS));
        }
        a->first[i] = lo;
        a->taps[i] = hi - lo;
    }
    free(w);
    return DM_OK;
}

/* A run of 8-bit samples: `lanes` contiguous bytes per position, positions
 * `step` bytes apart, `lines` such runs `line_stride` bytes apart. */
typedef struct plane {
    const uint8_t *data;
    size_t step, line_stride;
} plane;

/* One filtering pass: for every line, output position o and lane l,
 * out = clip8(sum_k in[first_o + k] * weight_o[k]) with Pillow's rounding
 * bias.  Rows (horizontal pass: positions are pixels of a row, lanes are a
 * pixel's channels) and columns (vertical pass: positions are rows, lanes a
 * whole row) are both this loop with different strides. */
static void filter_pass(plane in, int lines, int lanes, const axis_weights *a, int count, uint8_t *out,
                        size_t out_step, size_t out_line_stride)
{
    for (int line = 0; line < lines; line++)
        for (int o = 0; o < count; o++) {
            const int32_t *k = a->weights + (size_t)o * a->ksize;
            const uint8_t *src = in.data + line * in.line_stride + a->first[o] * in.step;
            uint8_t *dst = out + line * out_line_stride + o * out_step;
            for (int l = 0; l < lanes; l++) {
                int32_t acc = 1 << (PRECISION_BITS - 1);
                for (int t = 0; t < a->taps[o]; t++) acc += src[t * in.step + l] * k[t];
                int v = acc < 0 ? 0 : acc >> PRECISION_BITS;
                dst[l] = (uint8_t)(v > 255 ? 255 : v);
            }
        }
}

dm_status dm_resample(const uint8_t *src, int src_w, int src_h, int channels, int out_w, int out_h, int crop_x,
                      int crop_y, int crop_w, int crop_h, dm_interpolation interpolation, uint8_t *dst)
{
    if (!src || !dst || src_w < 1 || src_h < 1 || channels < 1 || channels > 4 || out_w < 1 || out_h < 1 ||
        crop_x < 0 || crop_y < 0 || crop_w < 1 || crop_h < 1 || crop_x > out_w - crop_w || crop_y > out_h - crop_h)
        return dm_fail(DM_ERR_ARGUMENT, "resample: bad sizes (%dx%d -> %dx%d, window %dx%d at %d,%d)", src_w, src_h,
                       out_w, out_h, crop_w, crop_h, crop_x, crop_y);
    if (interpolation != DM_INTERP_BICUBIC && interpolation != DM_INTERP_BILINEAR)
        return dm_fail(DM_ERR_ARGUMENT, "resample: unknown interpolation %d", (int)interpolation);
    size_t pixel = (size_t)channels, src_row = (size_t)src_w * pixel, dst_row = (size_t)crop_w * pixel;
    int resize_x = out_w != src_w, resize_y = out_h != src_h;
    axis_weights ax = {0}, ay = {0};
    dm_status st;
    if (resize_y && (st = axis_compute(src_h, out_h, crop_y, crop_h, interpolation, &ay)) != DM_OK) return st;
    if (resize_x && (st = axis_compute(src_w, out_w, crop_x, crop_w, interpolation, &ax)) != DM_OK) {
        axis_free(&ay);
        return st;
    }
    /* Source rows the window needs: all its rows' taps, or the window itself. */
    int row0 = resize_y ? ay.first[0] : crop_y;
    int rows = resize_y ? ay.first[crop_h - 1] + ay.taps[crop_h - 1] - row0 : crop_h;
    uint8_t *tmp = NULL;
    plane mid = {src + (size_t)row0 * src_row + (size_t)crop_x * pixel, pixel, src_row};
    if (resize_x) {
        uint8_t *target = resize_y ? (tmp = malloc((size_t)rows * dst_row)) : dst;
        if (!target) {
            axis_free(&ax);
            axis_free(&ay);
            return dm_fail(DM_ERR_NOMEM, "out of memory resampling a %dx%d image", src_w, src_h);
        }
        filter_pass((plane){src + (size_t)row0 * src_row, pixel, src_row}, rows, channels, &ax, crop_w, target,
                    pixel, dst_row);
        mid = (plane){target, pixel, dst_row};
    }
    if (resize_y) {
        for (int o = 0; o < crop_h; o++) ay.first[o] -= row0;
        filter_pass((plane){mid.data, mid.line_stride, 0}, 1, (int)dst_row, &ay, crop_h, dst, dst_row, 0);
    } else if (!resize_x) {
        for (int r = 0; r < crop_h; r++) memcpy(dst + r * dst_row, mid.data + r * mid.line_stride, dst_row);
    }
    free(tmp);
    axis_free(&ax);
    axis_free(&ay);
    return DM_OK;
}
