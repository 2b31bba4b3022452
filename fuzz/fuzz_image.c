/* fuzz_image.c - the library's image decoder path, as dm_image_load sees a
 * file: the format screen, the header probe and pixel limit, the decode,
 * and the conversion to three and to one channels.
 *
 * Each input that decodes to at most 2^20 pixels is decoded again for one
 * channel, and again with every allocation of the decoder filled with
 * another byte (dm_image_alloc_fill): a pixel that differs came from
 * memory the decoder never wrote, and aborts.  A larger image is decoded
 * once: it runs the same code, and a GIF of a few dozen bytes can declare
 * a screen of tens of megapixels, whose every further decode under the
 * sanitizers would take seconds towards the per-input timeout. */
#include "damamba.h"
#include "image_check.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    for (int channels = 3; channels >= 1; channels -= 2) {
        dm_image img, poisoned;
        dm_image_alloc_fill = 0;
        if (dm_image_load_memory(data, size, channels, &img) != DM_OK) return 0;
        if ((size_t)img.width * img.height > ((size_t)1 << 20)) {
            dm_image_free(&img);
            return 0;
        }
        dm_image_alloc_fill = 0xA5;
        dm_status st = dm_image_load_memory(data, size, channels, &poisoned);
        dm_image_alloc_fill = 0;
        if (st != DM_OK || poisoned.width != img.width || poisoned.height != img.height ||
            memcmp(img.pixels, poisoned.pixels, (size_t)img.width * img.height * channels) != 0)
            abort(); /* pixels depend on memory the decoder never wrote */
        dm_image_free(&poisoned);
        dm_image_free(&img);
    }
    return 0;
}
