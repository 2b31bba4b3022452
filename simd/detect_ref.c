/* detect_ref.c - the detection operators of detect_kernels.h.  Each follows
 * the float32 arithmetic of the PyTorch / mmcv code it mirrors, operation
 * for operation, so results agree to rounding of the same expressions. */
#include "detect_kernels.h"

#include <math.h>
#include <string.h>

void dm_anchors(float stride, const float *ratios, int nratios, const float *scales, int nscales, int h, int w,
                float *out)
{
    int nbase = nratios * nscales;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int r = 0; r < nratios; r++) {
                float h_ratio = sqrtf(ratios[r]), w_ratio = 1.0f / h_ratio;
                for (int s = 0; s < nscales; s++) {
                    float bw = stride * w_ratio * scales[s], bh = stride * h_ratio * scales[s];
                    float sx = (float)x * stride, sy = (float)y * stride;
                    float *a = out + (((size_t)y * w + x) * nbase + r * nscales + s) * 4;
                    a[0] = (0.0f - 0.5f * bw) + sx;
                    a[1] = (0.0f - 0.5f * bh) + sy;
                    a[2] = (0.0f + 0.5f * bw) + sx;
                    a[3] = (0.0f + 0.5f * bh) + sy;
                }
            }
}

static float clampf(float v, float lo, float hi) { return v < lo ? lo : v > hi ? hi : v; }

void dm_delta2bbox(const float *rois, const float *deltas, size_t n, const float means[4], const float stds[4],
                   float max_ratio, float max_h, float max_w, float *out)
{
    for (size_t i = 0; i < n; i++) {
        const float *r = rois + 4 * i, *d = deltas + 4 * i;
        float dx = d[0] * stds[0] + means[0], dy = d[1] * stds[1] + means[1];
        float dw = clampf(d[2] * stds[2] + means[2], -max_ratio, max_ratio);
        float dh = clampf(d[3] * stds[3] + means[3], -max_ratio, max_ratio);
        float px = (r[0] + r[2]) * 0.5f, py = (r[1] + r[3]) * 0.5f;
        float pw = r[2] - r[0], ph = r[3] - r[1];
        float gx = px + pw * dx, gy = py + ph * dy;
        float gw = pw * expf(dw), gh = ph * expf(dh);
        float *o = out + 4 * i;
        o[0] = clampf(gx - gw * 0.5f, 0.0f, max_w);
        o[1] = clampf(gy - gh * 0.5f, 0.0f, max_h);
        o[2] = clampf(gx + gw * 0.5f, 0.0f, max_w);
        o[3] = clampf(gy + gh * 0.5f, 0.0f, max_h);
    }
}

/* IoU's overlap in one axis, as mmcv's nms takes it (std::max, std::min):
 * written out, since fminf and fmaxf are library calls in the inner loop.
 * A NaN coordinate makes its box's area NaN, so such a box neither
 * suppresses nor is suppressed, as with fminf and fmaxf. */
static inline float overlap(float a0, float a1, float b0, float b1)
{
    float lo = a0 > b0 ? a0 : b0, hi = a1 < b1 ? a1 : b1;
    return hi - lo > 0.0f ? hi - lo : 0.0f;
}

size_t dm_nms(const float *boxes, size_t n, float iou_thr, int *keep, uint8_t *removed)
{
    size_t kept = 0;
    memset(removed, 0, n);
    for (size_t i = 0; i < n; i++) {
        if (removed[i]) continue;
        keep[kept++] = (int)i;
        const float *a = boxes + 4 * i;
        float area_a = (a[2] - a[0]) * (a[3] - a[1]);
        for (size_t j = i + 1; j < n; j++) {
            if (removed[j]) continue;
            const float *b = boxes + 4 * j;
            float inter = overlap(a[0], a[2], b[0], b[2]) * overlap(a[1], a[3], b[1], b[3]);
            float area_b = (b[2] - b[0]) * (b[3] - b[1]);
            if (inter / (area_a + area_b - inter) > iou_thr) removed[j] = 1;
        }
    }
    return kept;
}

void dm_roi_align(const float *feat, int h, int w, int c, float spatial_scale, const float roi[4], int out_h,
                  int out_w, float *y)
{
    dm_roi_grid g = dm_roi_grid_of(roi, spatial_scale, out_h, out_w);
    for (int py = 0; py < out_h; py++)
        for (int px = 0; px < out_w; px++) {
            float *acc = y + ((size_t)py * out_w + px) * c;
            memset(acc, 0, sizeof(float) * c);
            for (int iy = 0; iy < g.grid_h; iy++) {
                float sy = dm_roi_sample_y(&g, py, iy);
                for (int ix = 0; ix < g.grid_w; ix++) {
                    dm_roi_sample s;
                    if (!dm_roi_sample_at(h, w, sy, dm_roi_sample_x(&g, px, ix), &s)) continue;
                    const float *v0 = feat + s.pos[0] * c, *v1 = feat + s.pos[1] * c;
                    const float *v2 = feat + s.pos[2] * c, *v3 = feat + s.pos[3] * c;
                    for (int ch = 0; ch < c; ch++)
                        acc[ch] += s.w[0] * v0[ch] + s.w[1] * v1[ch] + s.w[2] * v2[ch] + s.w[3] * v3[ch];
                }
            }
            for (int ch = 0; ch < c; ch++) acc[ch] /= g.count;
        }
}

/* grid_sample's source coordinate (align_corners False) of the normalized
 * grid position of pixel centre p in a box from lo to hi. */
static float paste_source(int p, float lo, float hi, int size)
{
    float g = ((float)p + 0.5f - lo) / (hi - lo) * 2.0f - 1.0f;
    if (isinf(g)) g = 0.0f;
    return ((g + 1.0f) * (float)size - 1.0f) / 2.0f;
}

void dm_paste_mask(const float *mask, int mh, int mw, const float box[4], int x0, int y0, int x1, int y1,
                   float *prob)
{
    int ww = x1 - x0;
    for (int py = y0; py < y1; py++) {
        float iy = paste_source(py, box[1], box[3], mh);
        float *row = prob + (size_t)(py - y0) * ww;
        if (!(iy > -1.0f && iy < (float)mh)) { /* no corner inside, or NaN */
            for (int px = x0; px < x1; px++)
                row[px - x0] = isnan(iy) || isnan(paste_source(px, box[0], box[2], mw)) ? NAN : 0.0f;
            continue;
        }
        float fy = floorf(iy);
        int ty = (int)fy;
        float dy = iy - fy;
        for (int px = x0; px < x1; px++) {
            float ix = paste_source(px, box[0], box[2], mw);
            if (!(ix > -1.0f && ix < (float)mw)) {
                row[px - x0] = isnan(ix) ? NAN : 0.0f;
                continue;
            }
            float fx = floorf(ix);
            int tx = (int)fx;
            float dx = ix - fx, v = 0.0f;
            /* corners nw, ne, sw, se; those outside the mask count as 0 */
            float wt[4] = {(1.0f - dx) * (1.0f - dy), dx * (1.0f - dy), (1.0f - dx) * dy, dx * dy};
            for (int k = 0; k < 4; k++) {
                int yy = ty + k / 2, xx = tx + k % 2;
                if (yy >= 0 && yy < mh && xx >= 0 && xx < mw) v += mask[(size_t)yy * mw + xx] * wt[k];
            }
            row[px - x0] = v;
        }
    }
}
