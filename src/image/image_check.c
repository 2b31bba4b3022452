/* image_check.c - signatures, PNG chunk lengths, PNM header numbers, and a
 * walk over JPEG markers that follows stb_image's reading order, so every
 * Huffman table it would build is seen. */
#include "image_check.h"

#include "error.h"

#include <stdint.h>
#include <string.h>

#define JPEG_DHT 0xC4
#define JPEG_SOS 0xDA
#define JPEG_EOI 0xD9
#define MAX_HUFFMAN_CODES 256

static int is_restart(unsigned m) { return m >= 0xD0 && m <= 0xD7; }

/* Skip entropy-coded data: it ends at 0xFF followed by a byte that is
 * neither stuffing (0) nor a restart marker. */
static size_t skip_scan(const unsigned char *b, size_t size, size_t p)
{
    while (p + 1 < size) {
        if (b[p] != 0xFF) { p++; continue; }
        size_t q = p + 1;
        while (q < size && b[q] == 0xFF) q++;
        if (q < size && b[q] != 0 && !is_restart(b[q])) return p;
        p = q + 1;
    }
    return size;
}

/* The tables of a DHT segment, read as stb_image reads them: one after the
 * other while the segment length says more remain. */
static dm_status check_dht(const unsigned char *b, size_t size, size_t *p)
{
    if (*p + 2 > size) return DM_OK;
    long left = (long)(b[*p] << 8 | b[*p + 1]) - 2;
    *p += 2;
    while (left > 0 && *p < size) {
        /* stb_image reads bytes past the end as zeros and still builds the
         * table, so a truncated table is checked with what is there. */
        unsigned codes = 0;
        for (size_t i = 1; i <= 16 && *p + i < size; i++) codes += b[*p + i];
        if (codes > MAX_HUFFMAN_CODES)
            return dm_fail(DM_ERR_FORMAT, "corrupt JPEG: a Huffman table with %u codes (at most %d) at byte %zu",
                           codes, MAX_HUFFMAN_CODES, *p);
        *p += 17 + codes;
        left -= 17 + (long)codes;
    }
    return DM_OK;
}

static dm_status check_jpeg(const unsigned char *b, size_t size)
{
    size_t p = 2; /* after SOI */
    while (p < size) {
        while (p < size && b[p] != 0xFF) p++; /* padding between segments */
        while (p < size && b[p] == 0xFF) p++;
        if (p >= size) break;
        unsigned m = b[p++];
        if (m == JPEG_EOI) break;
        if (m == 0 || m == 1 || is_restart(m)) continue;
        if (m == JPEG_DHT) {
            dm_status st = check_dht(b, size, &p);
            if (st) return st;
            continue;
        }
        if (p + 2 > size) break;
        p += (size_t)(b[p] << 8 | b[p + 1]);
        if (m == JPEG_SOS) p = skip_scan(b, size, p);
    }
    return DM_OK;
}

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
    if (size >= 2 && b[0] == 0xFF && b[1] == 0xD8) return check_jpeg(b, size);
    if (size >= 2 && b[0] == 'B' && b[1] == 'M') return DM_OK;
    if (size >= 6 && (memcmp(b, "GIF87a", 6) == 0 || memcmp(b, "GIF89a", 6) == 0)) return DM_OK;
    if (size >= 2 && b[0] == 'P' && (b[1] == '5' || b[1] == '6')) return check_pnm(b, size);
    if (looks_like_tga(b, size)) return DM_OK;
    return dm_fail(DM_ERR_FORMAT, "not a PNG, JPEG, BMP, GIF, TGA or binary PNM (P5, P6) image");
}
