/* cv_resize.c - OpenCV's bilinear resize of 8-bit images, bit for bit.
 *
 * OpenCV maps output pixel d to source position (d + 0.5) * scale - 0.5,
 * computed in float, and turns the two interpolation weights (1 - f, f)
 * into 11-bit fixed point, each rounded on its own (they need not sum to
 * 2048).  Columns clamp their position into the image; rows keep theirs and
 * clamp the row they read.  The horizontal pass keeps full-precision
 * integers; the vertical pass drops 4 bits of each, takes the high half of
 * the product with the row weight, and rounds the sum away by 2 bits: the
 * arithmetic of its vectorized vertical pass, which covers whole rows.
 * A same-size resize is a copy, and an exact 2x reduction on both axes goes
 * through the area path: the rounded mean of each 2x2 block. */
#include "cv_resize.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

#define COEF_BITS 11 /* INTER_RESIZE_COEF_BITS */
#define COEF_ONE (1 << COEF_BITS)

/* One axis's taps: output position i reads first[i] and first[i] + 1 with
 * weights w0[i], w1[i]. */
typedef struct axis_taps {
    int *first;
    int16_t *w0, *w1;
} axis_taps;

static int16_t fixed_weight(float w) { return (int16_t)lrintf(w * (float)COEF_ONE); }

static void axis_taps_compute(int in, int out, int clamp, axis_taps *t)
{
    double scale = (double)in / out;
    for (int i = 0; i < out; i++) {
        float f = (float)((i + 0.5) * scale - 0.5);
        int first = (int)floorf(f);
        f -= (float)first;
        if (clamp && first < 0) f = 0.0f, first = 0;
        if (clamp && first >= in - 1) f = 0.0f, first = in - 1;
        t->first[i] = first;
        t->w0[i] = fixed_weight(1.0f - f);
        t->w1[i] = fixed_weight(f);
    }
}

static int clamp_index(int i, int n) { return i < 0 ? 0 : i >= n ? n - 1 : i; }

static uint8_t saturate_u8(int v) { return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v); }

/* Horizontal pass of one source row into dst_w * channels integers. */
static void resize_row(const uint8_t *src, int src_w, int channels, const axis_taps *x, int dst_w, int32_t *out)
{
    for (int i = 0; i < dst_w; i++) {
        const uint8_t *a = src + (size_t)x->first[i] * channels;
        const uint8_t *b = x->first[i] + 1 < src_w ? a + channels : a;
        for (int c = 0; c < channels; c++) out[i * channels + c] = a[c] * x->w0[i] + b[c] * x->w1[i];
    }
}

static void area_half(const uint8_t *src, int src_w, int channels, uint8_t *dst, int dst_w, int dst_h)
{
    size_t row = (size_t)src_w * channels;
    for (int y = 0; y < dst_h; y++) {
        const uint8_t *r0 = src + 2 * (size_t)y * row, *r1 = r0 + row;
        uint8_t *o = dst + (size_t)y * dst_w * channels;
        for (int x = 0; x < dst_w; x++)
            for (int c = 0; c < channels; c++) {
                size_t i = (size_t)2 * x * channels + c;
                o[x * channels + c] = (uint8_t)((r0[i] + r0[i + channels] + r1[i] + r1[i + channels] + 2) >> 2);
            }
    }
}

dm_status dm_cv_resize(const uint8_t *src, int src_w, int src_h, int channels, uint8_t *dst, int dst_w, int dst_h)
{
    if (!src || !dst || src_w < 1 || src_h < 1 || dst_w < 1 || dst_h < 1 || channels < 1 || channels > 4)
        return dm_fail(DM_ERR_ARGUMENT, "resize: bad sizes (%dx%d x %d channels -> %dx%d)", src_w, src_h, channels,
                       dst_w, dst_h);
    if (src_w == dst_w && src_h == dst_h) {
        memcpy(dst, src, (size_t)src_w * src_h * channels);
        return DM_OK;
    }
    if (src_w == 2 * dst_w && src_h == 2 * dst_h) {
        area_half(src, src_w, channels, dst, dst_w, dst_h);
        return DM_OK;
    }
    size_t row = (size_t)dst_w * channels;
    axis_taps x = {malloc(sizeof(int) * dst_w), malloc(sizeof(int16_t) * dst_w), malloc(sizeof(int16_t) * dst_w)};
    axis_taps y = {malloc(sizeof(int) * dst_h), malloc(sizeof(int16_t) * dst_h), malloc(sizeof(int16_t) * dst_h)};
    int32_t *rows = malloc(sizeof(int32_t) * 2 * row);
    dm_status st = DM_OK;
    if (!x.first || !x.w0 || !x.w1 || !y.first || !y.w0 || !y.w1 || !rows) {
        st = dm_fail(DM_ERR_NOMEM, "out of memory resizing a %dx%d image", src_w, src_h);
        goto done;
    }
    axis_taps_compute(src_w, dst_w, 1, &x);
    axis_taps_compute(src_h, dst_h, 0, &y);
    /* The two source rows the current output row reads, resized across;
     * consecutive output rows mostly share them. */
    int32_t *cache[2] = {rows, rows + row};
    int cached[2] = {-1, -1};
    for (int oy = 0; oy < dst_h; oy++) {
        int need[2] = {clamp_index(y.first[oy], src_h), clamp_index(y.first[oy] + 1, src_h)};
        const int32_t *s[2];
        for (int k = 0; k < 2; k++) {
            int slot = cached[0] == need[k] ? 0 : cached[1] == need[k] ? 1 : -1;
            if (slot < 0) {
                slot = cached[0] == need[1 - k] ? 1 : 0; /* keep the row the other tap needs */
                resize_row(src + (size_t)need[k] * src_w * channels, src_w, channels, &x, dst_w, cache[slot]);
                cached[slot] = need[k];
            }
            s[k] = cache[slot];
        }
        int b0 = y.w0[oy], b1 = y.w1[oy];
        uint8_t *o = dst + (size_t)oy * row;
        for (size_t i = 0; i < row; i++)
            o[i] = saturate_u8((((s[0][i] >> 4) * b0 >> 16) + ((s[1][i] >> 4) * b1 >> 16) + 2) >> 2);
    }
done:
    free(x.first), free(x.w0), free(x.w1);
    free(y.first), free(y.w0), free(y.w1);
    free(rows);
    return st;
}
