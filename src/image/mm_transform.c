/* mm_transform.c - the OpenMMLab test transform (mmcv 1.7): keep-ratio
 * rescale with mmcv's rounding, OpenCV's resize, flip, normalize. */
#include "damamba.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cv_resize.h"
#include "error.h"
#include "internal_api.h"
#include "image_check.h"

dm_mm_transform dm_mm_transform_ade20k(void)
{
    return (dm_mm_transform){
        .scale_long = 2048,
        .scale_short = 512,
        .ratio = 1.0,
        .mean = {123.675f, 116.28f, 103.53f},
        .std = {58.395f, 57.12f, 57.375f},
    };
}

dm_mm_transform dm_mm_transform_coco(void)
{
    dm_mm_transform t = dm_mm_transform_ade20k();
    t.scale_long = 1333;
    t.scale_short = 800;
    t.pad_to = 32;
    return t;
}

dm_status dm_mm_transform_size(const dm_mm_transform *t, int width, int height, int *out_h, int *out_w,
                               float scale_factor[4])
{
    if (!t || !out_h || !out_w) return dm_fail(DM_ERR_ARGUMENT, "dm_mm_transform_size: NULL argument");
    if (width < 1 || height < 1 || width > 65536 || height > 65536)
        return dm_fail(DM_ERR_ARGUMENT, "transform: image size %d x %d out of range", width, height);
    if (!(t->ratio > 0 && t->ratio <= 64) || t->scale_long < 1 || t->scale_short < 1 || t->scale_long > 65536 ||
        t->scale_short > 65536)
        return dm_fail(DM_ERR_ARGUMENT, "transform: scale %d x %d with ratio %g out of range", t->scale_long,
                       t->scale_short, t->ratio);
    for (int c = 0; c < 3; c++)
        if (!dm_normalization_ok(t->mean[c], t->std[c], 255.0f))
            return dm_fail(DM_ERR_ARGUMENT, "transform: std must be positive, and with mean give finite values "
                                            "(v - mean) / std for pixels v from 0 to 255");
    /* MultiScaleFlipAug: (int(w * r), int(h * r)); mmcv.rescale_size: the
     * largest factor that fits both sides, sizes rounded half up. */
    double scale_a = (int)(t->scale_long * t->ratio), scale_b = (int)(t->scale_short * t->ratio);
    double max_edge = scale_a > scale_b ? scale_a : scale_b, min_edge = scale_a > scale_b ? scale_b : scale_a;
    int longer = width > height ? width : height, shorter = width > height ? height : width;
    double f1 = max_edge / longer, f2 = min_edge / shorter, factor = f1 < f2 ? f1 : f2;
    double w = (double)width * factor + 0.5, h = (double)height * factor + 0.5;
    if (w < 1 || h < 1)
        return dm_fail(DM_ERR_ARGUMENT, "transform: %d x %d scaled by %g gives %d x %d pixels: a side is empty",
                       width, height, factor, (int)w, (int)h);
    /* the tensor's pixels: the rounded sizes, padded */
    double tensor_w = floor(w), tensor_h = floor(h);
    if (t->pad_to) {
        tensor_w = ceil(tensor_w / t->pad_to) * t->pad_to;
        tensor_h = ceil(tensor_h / t->pad_to) * t->pad_to;
    }
    if (tensor_w * tensor_h > DM_IMAGE_MAX_PIXELS)
        return dm_fail(DM_ERR_ARGUMENT, "transform: %d x %d scaled by %g gives a tensor of %.0f x %.0f pixels, over "
                       "the limit of %d", width, height, factor, tensor_w, tensor_h, DM_IMAGE_MAX_PIXELS);
    *out_w = (int)w;
    *out_h = (int)h;
    if (scale_factor) {
        scale_factor[0] = scale_factor[2] = (float)((double)*out_w / width);
        scale_factor[1] = scale_factor[3] = (float)((double)*out_h / height);
    }
    return DM_OK;
}

dm_status dm_mm_transform_image(const dm_image *image, const dm_mm_transform *t, float *out)
{
    if (!image || !image->pixels || !out) return dm_fail(DM_ERR_ARGUMENT, "dm_mm_transform_image: NULL argument");
    if (image->channels != 1 && image->channels != 3)
        return dm_fail(DM_ERR_ARGUMENT, "transform: images have 1 or 3 channels, not %d", image->channels);
    int oh, ow;
    dm_status st = dm_mm_transform_size(t, image->width, image->height, &oh, &ow, NULL);
    if (st) return st;
    if (t->pad_to < 0 || t->pad_to > 4096) return dm_fail(DM_ERR_ARGUMENT, "transform: pad_to %d out of range", t->pad_to);
    int C = image->channels, ph = dm_mm_padded(t, oh), pw = dm_mm_padded(t, ow);
    size_t plane = (size_t)oh * ow;
    uint8_t *resized = malloc(plane * C);
    if (!resized) return dm_fail(DM_ERR_NOMEM, "out of memory transforming a %d x %d image", image->width, image->height);
    st = dm_cv_resize(image->pixels, image->width, image->height, C, resized, ow, oh);
    if (st == DM_OK)
        for (int c = 0; c < 3; c++) {
            /* float32 (x - mean) / std: mmcv's cv2.subtract and cv2.multiply
             * by the reciprocal in double round to the same floats */
            float mean = t->mean[c], std = t->std[c];
            float *o = out + (size_t)c * ph * pw;
            for (int y = 0; y < ph; y++)
                for (int x = 0; x < pw; x++) {
                    int sx = t->flip ? ow - 1 - x : x;
                    o[(size_t)y * pw + x] = y >= oh || x >= ow ? 0.0f
                        : ((float)resized[((size_t)y * ow + sx) * C + (C == 3 ? c : 0)] - mean) / std;
                }
        }
    free(resized);
    return st;
}
