/* image_check.c - signatures, PNG chunk lengths and PNM header numbers. */
#include "image_check.h"

#include "error.h"

#include <stdint.h>
#include <string.h>

/* stb_image 2.27 allocates a chunk's declared length before reading it, so a
 * tiny file could ask for gigabytes: no chunk may claim more than the file
 * holds. */
static dm_status check_png(const unsigned char *b, size_t size)
{
    size_t p = 8;
    while (size - p >= 8) {
        uint32_t len = (uint32_t)b[p] << 24 | (uint32_t)b[p + 1] << 16 | (uint32_t)b[p + 2] << 8 | b[p + 3];
        if (len > size - p - 8)
            return dm_fail(DM_ERR_FORMAT, "corrupt PNG: a chunk of %u bytes at byte %zu runs past the end of the file",
                           len, p);
        if (memcmp(b + p + 4, "IEND", 4) == 0) break;
        p += 8 + (size_t)len;
        p += size - p < 4 ? size - p : 4; /* the CRC */
    }
    return DM_OK;
}

/* Binary PNM (P5 grey, P6 RGB): stb_image 2.27 reads the header numbers
 * into an int without a bound and mishandles 16-bit samples, so each number
 * must have at most 9 digits and the maximum sample value at most 255. */
static dm_status check_pnm(const unsigned char *b, size_t size)
{
    size_t p = 2;
    long value[3];
    for (int k = 0; k < 3; k++) {
        for (;;) { /* whitespace and comments, as stb_image skips them */
            while (p < size && (b[p] == ' ' || (b[p] >= '\t' && b[p] <= '\r'))) p++;
            if (p < size && b[p] == '#') {
                while (p < size && b[p] != '\n' && b[p] != '\r') p++;
                continue;
            }
            break;
        }
        int digits = 0;
        value[k] = 0;
        while (p < size && b[p] >= '0' && b[p] <= '9') {
            if (++digits > 9) return dm_fail(DM_ERR_FORMAT, "corrupt PNM: a header number over 9 digits");
            value[k] = value[k] * 10 + (b[p++] - '0');
        }
        if (!digits) return dm_fail(DM_ERR_FORMAT, "corrupt PNM: the header lacks width, height or maximum value");
    }
    if (value[2] > 255)
        return dm_fail(DM_ERR_UNSUPPORTED, "PNM with %ld as maximum sample value: only 8-bit PNM is supported",
                       value[2]);
    return DM_OK;
}

/* TGA has no signature; these are the header fields stb_image tests. */
static int looks_like_tga(const unsigned char *b, size_t size)
{
    if (size < 18 || b[1] > 1) return 0;
    int type = b[2];
    if (b[1] == 1 ? type != 1 && type != 9 : type != 2 && type != 3 && type != 10 && type != 11) return 0;
    return (b[12] | b[13]) && (b[14] | b[15]);
}

dm_status dm_image_check(const void *buf, size_t size)
{
    const unsigned char *b = buf;
    if (size >= 8 && memcmp(b, "\x89PNG\r\n\x1a\n", 8) == 0) return check_png(b, size);
    if (size >= 2 && b[0] == 'B' && b[1] == 'M') return DM_OK;
    if (size >= 6 && (memcmp(b, "GIF87a", 6) == 0 || memcmp(b, "GIF89a", 6) == 0)) return DM_OK;
    if (size >= 2 && b[0] == 'P' && (b[1] == '5' || b[1] == '6')) return check_pnm(b, size);
    if (looks_like_tga(b, size)) return DM_OK;
    return dm_fail(DM_ERR_FORMAT, "not a PNG, JPEG, BMP, GIF, TGA or binary PNM (P5, P6) image");
}
