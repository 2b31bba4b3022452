/* fuzz_image.c - the library's image decoder path, as dm_image_load sees a
 * file: the format screen, the header probe and pixel limit, the decode,
 * and the conversion to one and to three channels. */
#include "damamba.h"

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    for (int channels = 1; channels <= 3; channels += 2) {
        dm_image img;
        if (dm_image_load_memory(data, size, channels, &img) != DM_OK) return 0;
        volatile uint8_t sink = 0;
        for (size_t i = 0; i < (size_t)img.width * img.height * channels; i++) sink ^= img.pixels[i];
        (void)sink;
        dm_image_free(&img);
    }
    return 0;
}
