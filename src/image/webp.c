/* webp.c - libwebp behind the library's error conventions.  Every file is
 * decoded through libwebp's animation decoder at its default settings, as
 * Pillow decodes it: a still image is an animation of one frame, and the
 * first frame of an animation lands on a transparent black canvas. */
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

/* The canvas (4 bytes a pixel, twice: the decoder keeps the previous one),
 * the frame's decoding buffers (a lossless frame's pixels and cache, a
 * lossy one's alpha plane) and the RGB copy returned: 16 bytes a pixel. */
enum { DECODE_BYTES_PER_PIXEL = 16 };

dm_status dm_webp_decode(const void *data, size_t size, int64_t max_pixels, dm_image *out)
{
    *out = (dm_image){0};
    WebPBitstreamFeatures features;
    VP8StatusCode status = WebPGetFeatures(data, size, &features);
    if (status != VP8_STATUS_OK) return dm_fail(DM_ERR_FORMAT, "cannot decode WebP: %s", status_reason(status));
    dm_status st = dm_image_within(features.width, features.height, max_pixels);
    if (st) return st;
    size_t need = (size_t)features.width * features.height * DECODE_BYTES_PER_PIXEL;
    if (need > DM_IMAGE_MAX_DECODE_BYTES)
        return dm_fail(DM_ERR_FORMAT, "WebP of %d x %d pixels needs %zu MB to decode, over the limit of %zu MB",
                       features.width, features.height, need >> 20, (size_t)DM_IMAGE_MAX_DECODE_BYTES >> 20);
    dm_decode_memory_take(need);
    WebPAnimDecoderOptions options;
    WebPAnimDecoder *decoder = NULL;
    WebPAnimInfo info;
    uint8_t *canvas = NULL, *pixels = NULL;
    int timestamp;
    if (!WebPAnimDecoderOptionsInit(&options)) {
        st = dm_fail(DM_ERR_FORMAT, "cannot decode WebP: libwebp's animation decoder is not the version built for");
        goto done;
    }
    options.color_mode = MODE_RGBA;
    options.use_threads = 0;
    WebPData bytes = {.bytes = data, .size = size};
    decoder = WebPAnimDecoderNew(&bytes, &options);
    /* The container is parsed whole here, and fails without saying why:
     * a file shorter than its RIFF header says is the likely reason. */
    if (!decoder || !WebPAnimDecoderGetInfo(decoder, &info)) {
        uint64_t riff_size = (uint64_t)dm_le32((const uint8_t *)data + 4) + 8;
        if (riff_size > size)
            st = dm_fail(DM_ERR_FORMAT, "truncated WebP: the file holds %zu of the %llu bytes its RIFF header gives",
                         size, (unsigned long long)riff_size);
        else
            st = dm_fail(DM_ERR_FORMAT, "cannot decode WebP: corrupt or inconsistent chunks");
        goto done;
    }
    if ((int64_t)info.canvas_width != features.width || (int64_t)info.canvas_height != features.height) {
        st = dm_fail(DM_ERR_FORMAT, "cannot decode WebP: a canvas of %u x %u pixels beside a header of %d x %d",
                     info.canvas_width, info.canvas_height, features.width, features.height);
        goto done;
    }
    if (!WebPAnimDecoderGetNext(decoder, &canvas, &timestamp)) {
        st = dm_fail(DM_ERR_FORMAT, "cannot decode WebP: its first frame is truncated or corrupt");
        goto done;
    }
    size_t n = (size_t)features.width * features.height;
    pixels = malloc(n * 3);
    if (!pixels) {
        st = dm_fail(DM_ERR_NOMEM, "out of memory for a %d x %d image", features.width, features.height);
        goto done;
    }
    for (size_t i = 0; i < n; i++) memcpy(pixels + 3 * i, canvas + 4 * i, 3);
    *out = (dm_image){.width = features.width, .height = features.height, .channels = 3, .pixels = pixels};
done:
    WebPAnimDecoderDelete(decoder);
    dm_decode_memory_give(need);
    return st;
}
