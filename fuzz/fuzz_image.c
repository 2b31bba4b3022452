/* fuzz_image.c - the image decoder path: the format screen, stb_image's
 * header probe, a pixel limit, then the decode to 8-bit RGB. */
#define STB_IMAGE_IMPLEMENTATION
#define STBI_NO_STDIO
#include <stb_image.h>

#include "image_check.h"

#include <stddef.h>
#include <stdint.h>

/* Decoding is refused above this many pixels (kept small so the fuzzer
 * spends its time on parsing, not on allocating). */
#define MAX_PIXELS (4096 * 4096 / 16)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int w, h, c;
    if (size > INT32_MAX || dm_image_check(data, size) != DM_OK) return 0;
    if (!stbi_info_from_memory(data, (int)size, &w, &h, &c)) return 0;
    if (w < 1 || h < 1 || (int64_t)w * h > MAX_PIXELS) return 0;
    unsigned char *pixels = stbi_load_from_memory(data, (int)size, &w, &h, &c, 3);
    if (pixels) {
        volatile unsigned char sink = 0;
        for (int64_t i = 0; i < (int64_t)w * h * 3; i++) sink ^= pixels[i];
        (void)sink;
    }
    stbi_image_free(pixels);
    return 0;
}
