/* fuzz_image.c - the library's image decoder path, as dm_image_load sees a
 * file: the format screen, the header probe and pixel limit, the decode,
 * and the conversion to three and to one channels.
 *
 * Images are taken up to 2^22 pixels, not the library's 8192 x 8192: a
 * GIF of a few dozen bytes can declare tens of megapixels, and one decode
 * of a 39-byte 4097 x 2049 one took over 10 s, the per-input timeout, under
 * the sanitizers on a loaded machine.  Above the limit the probe refuses,
 * as it does beyond the library's own; below it the decoders run the same
 * code at any size.
 *
 * Each input that decodes to at most 2^20 pixels is decoded again for one
 * channel, and again with every allocation of the decoder filled with
 * another byte (dm_image_alloc_fill): a pixel that differs came from
 * memory the decoder never wrote, and aborts; the stack the decoder is
 * about to use is filled with that byte too.  A larger one is decoded
 * once, to keep within the timeout.  The three-channel decode is done
 * again in OpenCV's convention: the same size, perhaps turned by the
 * file's EXIF orientation, and for JPEG and PNG the same pixels, CMYK
 * converted within 2 levels (16-bit grey PNGs, which Pillow clips, and
 * palette PNGs, whose palettes the references complete otherwise, aside).
 * A damaged WebP may
 * be refused, or decode otherwise, in one convention only, as in the
 * references. */
#include "damamba.h"
#include "image_check.h"
#include "internal_api.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define FUZZ_MAX_PIXELS ((int64_t)1 << 22)

/* Fill 64 kB of the stack below this call with `byte`: the frames of a
 * decoder called next lie there. */
__attribute__((noinline)) static void paint_stack(unsigned char byte)
{
    volatile unsigned char area[65536];
    for (size_t i = 0; i < sizeof area; i++) area[i] = byte;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    for (int channels = 3; channels >= 1; channels -= 2) {
        dm_image img, poisoned;
        dm_image_alloc_fill = 0;
        paint_stack(0);
        if (dm_image_load_memory_within(data, size, channels, FUZZ_MAX_PIXELS, DM_IMAGE_PIL, &img) != DM_OK)
            return 0;
        if ((size_t)img.width * img.height > ((size_t)1 << 20)) {
            dm_image_free(&img);
            return 0;
        }
        dm_image_alloc_fill = 0xA5;
        paint_stack(0xA5);
        dm_status st = dm_image_load_memory_within(data, size, channels, FUZZ_MAX_PIXELS, DM_IMAGE_PIL, &poisoned);
        dm_image_alloc_fill = 0;
        if (st != DM_OK || poisoned.width != img.width || poisoned.height != img.height ||
            memcmp(img.pixels, poisoned.pixels, (size_t)img.width * img.height * channels) != 0)
            abort(); /* pixels depend on memory the decoder never wrote */
        dm_image_free(&poisoned);
        if (channels == 3) {
            /* WebP goes to libwebp by each reference's own call, which
             * differ on damaged files: either may refuse, or decode
             * otherwise. */
            int webp = size > 12 && !memcmp(data, "RIFF", 4) && !memcmp(data + 8, "WEBP", 4);
            dm_image cv;
            st = dm_image_load_memory_within(data, size, 3, FUZZ_MAX_PIXELS, DM_IMAGE_OPENCV, &cv);
            if (st != DM_OK && !webp) abort(); /* only WebP's decoders refuse different files */
            if (st == DM_OK) {
                int same = cv.width == img.width && cv.height == img.height;
                int swapped = cv.width == img.height && cv.height == img.width;
                size_t samples = (size_t)img.width * img.height * 3;
                int64_t sum = 0;
                for (size_t i = 0; i < samples; i++) sum += img.pixels[i] - cv.pixels[i];
                /* JPEG and PNG decode alike in both but for orientation and
                 * CMYK; not 16-bit grey PNGs, which Pillow clips, nor
                 * palette PNGs, whose indices beyond the palette differ */
                int png = size > 25 && !memcmp(data, "\x89PNG", 4), jpeg = data[0] == 0xFF && data[1] == 0xD8;
                int alike = jpeg || (png && !(data[24] == 16 && data[25] == 0) && data[25] != 3);
                if ((!same && !swapped) || (alike && llabs(sum) > 2 * (int64_t)samples)) abort(); /* other pixels */
                dm_image_free(&cv);
            }
        }
        dm_image_free(&img);
    }
    return 0;
}
