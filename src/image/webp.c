/* webp.c - libwebp behind the library's error conventions, at its default
 * settings, called as each reference calls it.  Pillow reads every WebP
 * through libwebp's animation decoder, which parses the whole container
 * and decodes the frame's chunks alone; OpenCV a still image through
 * WebPDecode on the whole file.  Whole files give the same pixels either
 * way, but the two differ on damaged ones: a metadata chunk cut short
 * after the image is refused by the first and ignored by the second, and
 * a corrupt end of the bitstream can fail one and pass the other. */
#include "webp.h"

#include <stdlib.h>
#include <string.h>

#include <webp/decode.h>
#include <webp/demux.h>

#include "bytes.h"
#include "error.h"
#include "image_check.h"

int dm_is_webp(const void *data, size_t size)
{
    const unsigned char *b = data;
    return size >= 12 && memcmp(b, "RIFF", 4) == 0 && memcmp(b + 8, "WEBP", 4) == 0;
}

static const char *status_reason(VP8StatusCode status)
{
    switch (status) {
    case VP8_STATUS_NOT_ENOUGH_DATA: return "the file ends before its header does";
    case VP8_STATUS_UNSUPPORTED_FEATURE: return "a feature libwebp does not read";
    case VP8_STATUS_OUT_OF_MEMORY: return "out of memory";
    default: return "corrupt header";
    }
}

/* A still image through WebPDecode, straight into RGB, as OpenCV 4.6
 * decodes it. */
static dm_status decode_still(const void *data, size_t size, uint8_t *rgb, int width, int height)
{
    WebPDecoderConfig config;
    if (!WebPInitDecoderConfig(&config))
        return dm_fail(DM_ERR_FORMAT, "cannot decode WebP: libwebp is not the version built for");
    config.output.colorspace = MODE_RGB;
    config.output.is_external_memory = 1;
    config.output.u.RGBA.rgba = rgb;
    config.output.u.RGBA.stride = 3 * width;
    config.output.u.RGBA.size = (size_t)3 * width * height;
    VP8StatusCode status = WebPDecode(data, size, &config);
    WebPFreeDecBuffer(&config.output);
    if (status == VP8_STATUS_OK) return DM_OK;
    if (status == VP8_STATUS_NOT_ENOUGH_DATA)
        return dm_fail(DM_ERR_FORMAT, "truncated WebP: the file ends before its image does");
    return dm_fail(DM_ERR_FORMAT, "cannot decode WebP: %s", status_reason(status));
}

/* Through libwebp's animation decoder, as Pillow reads any WebP: the
 * first frame on its canvas (a still image's frame covers it), alpha then
 * dropped. */
static dm_status decode_animation(const void *data, size_t size, uint8_t *rgb, int width, int height)
{
    WebPAnimDecoderOptions options;
    if (!WebPAnimDecoderOptionsInit(&options))
        return dm_fail(DM_ERR_FORMAT, "cannot decode WebP: libwebp is not the version built for");
    options.color_mode = MODE_RGBA;
    options.use_threads = 0;
    WebPData bytes = {.bytes = data, .size = size};
    WebPAnimDecoder *decoder = WebPAnimDecoderNew(&bytes, &options);
    WebPAnimInfo info;
    uint8_t *canvas;
    int timestamp;
    dm_status st = DM_OK;
    /* The container is parsed whole here, and fails without saying why:
     * a file shorter than its RIFF header says is the likely reason. */
    if (!decoder || !WebPAnimDecoderGetInfo(decoder, &info)) {
        uint64_t riff_size = (uint64_t)dm_le32((const uint8_t *)data + 4) + 8;
        if (riff_size > size)
            st = dm_fail(DM_ERR_FORMAT, "truncated WebP: the file holds %zu of the %llu bytes its RIFF header gives",
                         size, (unsigned long long)riff_size);
        else
            st = dm_fail(DM_ERR_FORMAT, "cannot decode WebP: corrupt or inconsistent chunks");
    } else if ((int64_t)info.canvas_width != width || (int64_t)info.canvas_height != height) { /* the copy's bound */
        st = dm_fail(DM_ERR_FORMAT, "cannot decode WebP: a canvas of %u x %u pixels beside a header of %d x %d",
                     info.canvas_width, info.canvas_height, width, height);
    } else if (!WebPAnimDecoderGetNext(decoder, &canvas, &timestamp)) {
        st = dm_fail(DM_ERR_FORMAT, "cannot decode WebP: its first frame is truncated or corrupt");
    } else {
        for (size_t i = 0, n = (size_t)width * height; i < n; i++) memcpy(rgb + 3 * i, canvas + 4 * i, 3);
    }
    WebPAnimDecoderDelete(decoder);
    return st;
}

/* The RGB image, and in libwebp the animation decoder's canvas twice (4
 * bytes a pixel each: it keeps the previous one) or a lossless frame's
 * pixels and cache: 16 bytes a pixel. */
enum { DECODE_BYTES_PER_PIXEL = 16 };

dm_status dm_webp_decode(const void *data, size_t size, int64_t max_pixels, int opencv, dm_image *out)
{
    *out = (dm_image){0};
    WebPBitstreamFeatures features;
    VP8StatusCode status = WebPGetFeatures(data, size, &features);
    if (status != VP8_STATUS_OK) return dm_fail(DM_ERR_FORMAT, "cannot decode WebP: %s", status_reason(status));
    int w = features.width, h = features.height;
    dm_status st = dm_image_within(w, h, max_pixels);
    if (st) return st;
    size_t need = (size_t)w * h * DECODE_BYTES_PER_PIXEL;
    if (need > DM_IMAGE_MAX_DECODE_BYTES)
        return dm_fail(DM_ERR_FORMAT, "WebP of %d x %d pixels needs %zu MB to decode, over the limit of %zu MB", w, h,
                       need >> 20, (size_t)DM_IMAGE_MAX_DECODE_BYTES >> 20);
    dm_decode_memory_take(need);
    uint8_t *pixels = malloc((size_t)w * h * 3);
    if (!pixels)
        st = dm_fail(DM_ERR_NOMEM, "out of memory for a %d x %d image", w, h);
    else if (opencv && !features.has_animation) /* filled first, as stb_image's buffers are */
        st = decode_still(data, size, memset(pixels, dm_image_alloc_fill, (size_t)w * h * 3), w, h);
    else /* OpenCV 4.6 reads no animation: it decodes as Pillow shows it */
        st = decode_animation(data, size, pixels, w, h);
    dm_decode_memory_give(need);
    if (st) {
        free(pixels);
        return st;
    }
    *out = (dm_image){.width = w, .height = h, .channels = 3, .pixels = pixels};
    return DM_OK;
}
