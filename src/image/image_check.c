/* image_check.c - signatures, PNG chunk lengths, PNM header numbers, and a
 * walk over JPEG markers that follows stb_image's reading order, so every
 * Huffman table it would build is seen. */
#include "image_check.h"

#include "error.h"

#include <stdint.h>
#include <string.h>

#define JPEG_DHT 0xC4
#define JPEG_DQT 0xDB
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

/* Tables a JPEG has defined so far, one bit per table number. */
typedef struct jpeg_tables {
    unsigned dc, ac, quant, frame_quant; /* frame_quant: those the frame's components use */
    unsigned char component[256];        /* by id: IN_FRAME, then IN_SCAN once a scan holds it */
} jpeg_tables;

enum { IN_FRAME = 1, IN_SCAN = 2 };

/* The tables of a DHT segment, read as stb_image reads them: one after the
 * other while the segment length says more remain. */
static dm_status check_dht(const unsigned char *b, size_t size, size_t *p, jpeg_tables *t)
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
        if (b[*p] >> 4) t->ac |= 1u << (b[*p] & 15);
        else t->dc |= 1u << (b[*p] & 15);
        *p += 17 + codes;
        left -= 17 + (long)codes;
    }
    return DM_OK;
}

/* The quantization tables of a DQT segment at p (its length). */
static void note_dqt(const unsigned char *b, size_t size, size_t p, jpeg_tables *t)
{
    size_t end = p + (size_t)(b[p] << 8 | b[p + 1]);
    for (p += 2; p < end && p < size; p += 1 + (b[p] >> 4 ? 128 : 64)) t->quant |= 1u << (b[p] & 15);
}

/* A scan (SOS segment at p, its length) may only use tables defined before
 * it: stb_image would decode with whatever its table memory holds. */
static dm_status check_scan_tables(const unsigned char *b, size_t size, size_t p, jpeg_tables *t)
{
    if (p + 3 > size) return DM_OK;
    unsigned comps = b[p + 2];
    size_t spectral = p + 3 + 2 * (size_t)comps;
    if (spectral + 2 > size) return DM_OK; /* cut short: refused for its missing end */
    unsigned start = b[spectral], end = b[spectral + 1];
    int defined = (t->frame_quant & ~t->quant) == 0;
    for (unsigned c = 0; c < comps; c++) {
        unsigned dc = b[p + 4 + 2 * c] >> 4, ac = b[p + 4 + 2 * c] & 15;
        t->component[b[p + 3 + 2 * c]] |= IN_SCAN;
        if (start == 0 && !(t->dc >> dc & 1)) defined = 0;
        if (end > 0 && !(t->ac >> ac & 1)) defined = 0;
    }
    return defined ? DM_OK
                   : dm_fail(DM_ERR_FORMAT, "corrupt JPEG: a scan at byte %zu uses a table never defined", p - 2);
}

static int is_frame(unsigned m) { return m >= 0xC0 && m <= 0xCF && m != JPEG_DHT && m != 0xC8 && m != 0xCC; }

/* 8 x 8 blocks of a frame (SOF segment at p, its length): each
 * component's share, rounded down, so a lower bound.  Notes the
 * quantization tables the components use. */
static uint64_t frame_blocks(const unsigned char *b, size_t size, size_t p, jpeg_tables *t)
{
    if (p + 8 > size) return 0;
    uint64_t height = (uint64_t)(b[p + 3] << 8 | b[p + 4]), width = (uint64_t)(b[p + 5] << 8 | b[p + 6]);
    unsigned comps = b[p + 7], hmax = 1, vmax = 1;
    if (p + 8 + 3 * (size_t)comps > size) return 0;
    for (unsigned c = 0; c < comps; c++) {
        unsigned s = b[p + 9 + 3 * c];
        t->frame_quant |= 1u << (b[p + 10 + 3 * c] & 15);
        t->component[b[p + 8 + 3 * c]] |= IN_FRAME;
        if (s >> 4 > hmax) hmax = s >> 4;
        if ((s & 15) > vmax) vmax = s & 15;
    }
    uint64_t blocks = 0;
    for (unsigned c = 0; c < comps; c++) {
        unsigned s = b[p + 9 + 3 * c];
        blocks += (width * (s >> 4) / hmax / 8) * (height * (s & 15) / vmax / 8);
    }
    return blocks;
}

/* Besides the Huffman tables: the file must end its image (EOI), and its
 * scans must hold at least one bit per 8 x 8 block, as every block's DC
 * coefficient takes a Huffman code of a bit or more.  stb_image decodes a
 * truncated file, or a frame far larger than its data, as zeros. */
static dm_status check_jpeg(const unsigned char *b, size_t size)
{
    size_t p = 2; /* after SOI */
    uint64_t blocks = 0, scan_bytes = 0;
    int ended = 0;
    jpeg_tables tables = {0};
    while (p < size) {
        while (p < size && b[p] != 0xFF) p++; /* padding between segments */
        while (p < size && b[p] == 0xFF) p++;
        if (p >= size) break;
        unsigned m = b[p++];
        if (m == JPEG_EOI) {
            ended = 1;
            break;
        }
        if (m == 0 || m == 1 || is_restart(m)) continue;
        if (m == JPEG_DHT) {
            dm_status st = check_dht(b, size, &p, &tables);
            if (st) return st;
            continue;
        }
        if (p + 2 > size) break;
        if (is_frame(m)) blocks = frame_blocks(b, size, p, &tables);
        if (m == JPEG_DQT) note_dqt(b, size, p, &tables);
        if (m == JPEG_SOS) {
            dm_status st = check_scan_tables(b, size, p, &tables);
            if (st) return st;
        }
        p += (size_t)(b[p] << 8 | b[p + 1]);
        if (m == JPEG_SOS) {
            size_t end = skip_scan(b, size, p);
            scan_bytes += end > p ? end - p : 0;
            p = end;
        }
    }
    if (!ended) return dm_fail(DM_ERR_FORMAT, "truncated JPEG: the file ends before its end-of-image marker");
    /* A component no scan holds keeps whatever its plane's memory held. */
    for (unsigned id = 0; id < 256; id++)
        if (tables.component[id] == IN_FRAME)
            return dm_fail(DM_ERR_FORMAT, "corrupt JPEG: component %u is in no scan", id);
    if (scan_bytes < blocks / 8)
        return dm_fail(DM_ERR_FORMAT, "truncated JPEG: %llu bytes of image data cannot hold the frame's %llu blocks",
                       (unsigned long long)scan_bytes, (unsigned long long)blocks);
    return DM_OK;
}

static uint32_t be32(const unsigned char *b)
{
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

/* stb_image 2.27 allocates a chunk's declared length before reading it, so a
 * tiny file could ask for gigabytes: no chunk may claim more than the file
 * holds.  And the file must end with a whole IEND chunk, as PNG files do.
 * The size is checked here too: stb_image's own refusal of a size over
 * 65536 reaches the caller as "unknown image type". */
static dm_status check_png(const unsigned char *b, size_t size)
{
    if (size < 8 + 8 + 13 || be32(b + 8) != 13 || memcmp(b + 12, "IHDR", 4) != 0)
        return dm_fail(DM_ERR_FORMAT, "corrupt PNG: it does not start with an IHDR chunk");
    uint32_t width = be32(b + 16), height = be32(b + 20);
    if (!width || !height) return dm_fail(DM_ERR_FORMAT, "corrupt PNG: %u x %u pixels", width, height);
    if (width > 65536 || height > 65536)
        return dm_fail(DM_ERR_FORMAT, "image of %u x %u pixels is over the limit of 65536 pixels a side", width, height);
    if ((uint64_t)width * height > DM_IMAGE_MAX_PIXELS)
        return dm_fail(DM_ERR_FORMAT, "image of %u x %u pixels is over the limit of %d pixels", width, height,
                       DM_IMAGE_MAX_PIXELS);
    size_t p = 8;
    while (size - p >= 8) {
        uint32_t len = be32(b + p);
        if (len > size - p - 8)
            return dm_fail(DM_ERR_FORMAT, "corrupt PNG: a chunk of %u bytes at byte %zu runs past the end of the file",
                           len, p);
        if (memcmp(b + p + 4, "IEND", 4) == 0 && size - p >= 12) return DM_OK;
        p += 8 + (size_t)len;
        p += size - p < 4 ? size - p : 4; /* the CRC */
    }
    return dm_fail(DM_ERR_FORMAT, "truncated PNG: the file ends before its IEND chunk");
}

/* Binary PNM (P5 grey, P6 RGB): stb_image 2.27 reads the header numbers
 * into an int without a bound and mishandles 16-bit samples, so each number
 * must have at most 9 digits and the maximum sample value at most 255; and
 * the samples the header promises must follow it (stb_image leaves the
 * missing ones as they were). */
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
    /* One whitespace byte ends the header. */
    uint64_t need = (uint64_t)value[0] * (uint64_t)value[1] * (b[1] == '6' ? 3 : 1), have = size - p;
    have = have ? have - 1 : 0;
    if (have < need)
        return dm_fail(DM_ERR_FORMAT, "truncated PNM: %ld x %ld pixels need %llu bytes, the file holds %llu", value[0],
                       value[1], (unsigned long long)need, (unsigned long long)have);
    return DM_OK;
}

static unsigned le16(const unsigned char *b) { return (unsigned)b[0] | (unsigned)b[1] << 8; }
static uint32_t le32(const unsigned char *b) { return le16(b) | (uint32_t)le16(b + 2) << 16; }

static dm_status truncated(const char *format, uint64_t need, uint64_t have)
{
    return dm_fail(DM_ERR_FORMAT, "truncated %s: the header promises %llu bytes of pixels, the file holds %llu",
                   format, (unsigned long long)need, (unsigned long long)have);
}

/* BMP (uncompressed or bit fields; stb_image reads no other): the rows the
 * header promises, each padded to 4 bytes, must lie in the file from its
 * pixel data offset.  A height
 * of INT_MIN has no absolute value. */
static dm_status check_bmp(const unsigned char *b, size_t size)
{
    if (size < 30) return dm_fail(DM_ERR_FORMAT, "truncated BMP: the file ends inside its header");
    uint32_t offset = le32(b + 10), header = le32(b + 14);
    int64_t width, height;
    unsigned bpp;
    if (header == 12) {
        width = le16(b + 18);
        height = le16(b + 20);
        bpp = le16(b + 24);
    } else {
        width = (int32_t)le32(b + 18);
        height = (int32_t)le32(b + 22);
        bpp = le16(b + 28);
        if (height == INT32_MIN) return dm_fail(DM_ERR_FORMAT, "corrupt BMP: height %lld", (long long)height);
    }
    if (height < 0) height = -height;
    if (width < 1 || height < 1 || (bpp != 1 && bpp != 4 && bpp != 8 && bpp != 16 && bpp != 24 && bpp != 32))
        return dm_fail(DM_ERR_FORMAT, "corrupt BMP: %lld x %lld pixels of %u bits", (long long)width,
                       (long long)height, bpp);
    uint64_t need = ((uint64_t)width * bpp + 31) / 32 * 4 * (uint64_t)height, have = size > offset ? size - offset : 0;
    return have < need ? truncated("BMP", need, have) : DM_OK;
}

/* TGA: the palette and the pixels the header promises must be in the file;
 * run-length packets are walked to count them. */
static dm_status check_tga(const unsigned char *b, size_t size)
{
    unsigned type = b[2], pixel_bytes = (b[16] + 7u) / 8;
    uint64_t pixels = (uint64_t)le16(b + 12) * le16(b + 14);
    uint64_t p = 18 + (uint64_t)b[0];
    if (b[1]) p += le16(b + 3) + (uint64_t)le16(b + 5) * ((b[7] + 7u) / 8);
    if (!pixel_bytes) return dm_fail(DM_ERR_FORMAT, "corrupt TGA: 0 bits per pixel");
    if (type < 8) {
        uint64_t need = pixels * pixel_bytes, have = size > p ? size - p : 0;
        return have < need ? truncated("TGA", need, have) : DM_OK;
    }
    uint64_t done = 0;
    while (done < pixels && p < size) {
        unsigned packet = b[p++], count = (packet & 0x7F) + 1u;
        p += (packet & 0x80 ? 1 : count) * (uint64_t)pixel_bytes;
        if (p <= size) done += count;
    }
    if (done < pixels)
        return dm_fail(DM_ERR_FORMAT, "truncated TGA: the run-length data ends after %llu of %llu pixels",
                       (unsigned long long)done, (unsigned long long)pixels);
    return DM_OK;
}

/* GIF: stb_image decodes the first image, reading missing bytes as zeros,
 * so the blocks up to the end of that image's data must be whole. */
static dm_status check_gif(const unsigned char *b, size_t size)
{
    size_t p = 13; /* signature and screen descriptor */
    if (size < p) return dm_fail(DM_ERR_FORMAT, "truncated GIF: the file ends inside its header");
    if (b[10] & 0x80) p += (size_t)3 << ((b[10] & 7) + 1); /* global palette */
    while (p < size) {
        unsigned block = b[p++];
        if (block == 0x3B) return dm_fail(DM_ERR_FORMAT, "GIF without an image");
        if (block == 0x21) {
            p++; /* extension label */
        } else if (block == 0x2C) {
            if (size - p < 10) break;
            if (!le16(b + p + 4) || !le16(b + p + 6)) /* stb_image would give the background alone */
                return dm_fail(DM_ERR_FORMAT, "corrupt GIF: an image of %u x %u pixels", le16(b + p + 4),
                               le16(b + p + 6));
            if (b[p + 8] & 0x80) p += (size_t)3 << ((b[p + 8] & 7) + 1); /* local palette */
            p += 10;  /* descriptor and the LZW code size */
        } else {
            return dm_fail(DM_ERR_FORMAT, "corrupt GIF: unknown block 0x%02X at byte %zu", block, p - 1);
        }
        while (p < size && b[p]) p += 1 + (size_t)b[p]; /* data sub-blocks, up to an empty one */
        if (p++ >= size) break;
        if (block == 0x2C) return DM_OK;
    }
    return dm_fail(DM_ERR_FORMAT, "truncated GIF: the file ends before the end of its first image");
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
    if (size >= 2 && b[0] == 'B' && b[1] == 'M') return check_bmp(b, size);
    if (size >= 6 && (memcmp(b, "GIF87a", 6) == 0 || memcmp(b, "GIF89a", 6) == 0)) return check_gif(b, size);
    if (size >= 2 && b[0] == 'P' && (b[1] == '5' || b[1] == '6')) return check_pnm(b, size);
    if (looks_like_tga(b, size)) return check_tga(b, size);
    return dm_fail(DM_ERR_FORMAT, "not a PNG, JPEG, BMP, GIF, TGA or binary PNM (P5, P6) image");
}
