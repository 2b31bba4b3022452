/* image_check.c - signatures, PNG chunks, PNM header numbers, and the BMP,
 * TGA and GIF sizes stb_image trusts. */
#include "image_check.h"

#include "error.h"
#include "internal_api.h"

#include <pthread.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <zlib.h>

#include "bytes.h"

/* Inflate the image data (the IDAT chunks, in order) with zlib, output
 * discarded.  stb_image 2.27's inflater accepts the reserved distance codes
 * 30 and 31 as distance 0 and then copies bytes of its output buffer it
 * never wrote into the pixels; zlib refuses those and every other invalid
 * stream.
 *
 * stb_image also inflates all the data there is, doubling its buffer as it
 * goes, whatever the image needs: a 1 MB file of a 1 x 1 image took 2 GB.
 * So the data may inflate to at most twice what the image's rows need
 * (`need`, filter bytes included), plus room for interlacing's extra rows
 * and 64 kB: stb_image ignores a little data after the rows, and files
 * with some exist. */
static dm_status check_png_data(const unsigned char *b, size_t size, uint64_t need, uint32_t height)
{
    const uint64_t most = 2 * need + 16 * (uint64_t)height + 65536;
    z_stream z;
    memset(&z, 0, sizeof z);
    if (inflateInit(&z) != Z_OK)
        return dm_fail(DM_ERR_NOMEM, "PNG: out of memory checking the image data");
    unsigned char sink[16384];
    int ret = Z_OK, chunks = 0;
    for (size_t p = 8; p <= size && size - p >= 12 && ret == Z_OK;) {
        uint32_t len = dm_be32(b + p);
        if (len > size - p - 12) break; /* a chunk cut short before IEND: stb_image's to refuse */
        if (memcmp(b + p + 4, "IDAT", 4) == 0) {
            chunks++;
            z.next_in = (unsigned char *)(uintptr_t)(b + p + 8);
            z.avail_in = len;
            do {
                z.next_out = sink;
                z.avail_out = sizeof sink;
                ret = inflate(&z, Z_NO_FLUSH);
            } while (ret == Z_OK && z.avail_in > 0 && z.total_out <= most);
            if (ret == Z_BUF_ERROR && z.avail_in == 0) ret = Z_OK; /* wants the next chunk */
        }
        p += 12 + (size_t)len; /* chunk lengths were checked against the file */
    }
    const char *why = z.msg;
    uint64_t inflated = z.total_out;
    inflateEnd(&z);
    if (inflated > most)
        return dm_fail(DM_ERR_FORMAT, "corrupt PNG: its image data inflates to more than %llu bytes, and its rows "
                       "need %llu", (unsigned long long)most, (unsigned long long)need);
    if (ret == Z_STREAM_END) return DM_OK;
    if (ret == Z_MEM_ERROR) return dm_fail(DM_ERR_NOMEM, "PNG: out of memory checking the image data");
    if (!chunks) return dm_fail(DM_ERR_FORMAT, "corrupt PNG: no IDAT chunk, so no image data");
    if (ret == Z_OK) return dm_fail(DM_ERR_FORMAT, "truncated PNG: the compressed image data ends early");
    return dm_fail(DM_ERR_FORMAT, "corrupt PNG: invalid compressed image data (%s)", why ? why : "zlib");
}

/* stb_image 2.27 allocates a chunk's declared length before reading it, so a
 * tiny file could ask for gigabytes: no chunk may claim more than the file
 * holds.  And the file must end with a whole IEND chunk, as PNG files do.
 * The size is checked here too: stb_image's own refusal of a size over
 * 65536 reaches the caller as "unknown image type". */
static dm_status check_png(const unsigned char *b, size_t size, int64_t max_pixels)
{
    if (size < 8 + 8 + 13 || dm_be32(b + 8) != 13 || memcmp(b + 12, "IHDR", 4) != 0)
        return dm_fail(DM_ERR_FORMAT, "corrupt PNG: it does not start with an IHDR chunk");
    uint32_t width = dm_be32(b + 16), height = dm_be32(b + 20);
    if (!width || !height) return dm_fail(DM_ERR_FORMAT, "corrupt PNG: %u x %u pixels", width, height);
    if (width > 65536 || height > 65536)
        return dm_fail(DM_ERR_FORMAT, "image of %u x %u pixels is over the limit of 65536 pixels a side", width, height);
    dm_status st = dm_image_within(width, height, max_pixels);
    if (st) return st;
    /* Bytes of the rows: a filter byte and the samples of each (bit depth
     * times channels of the colour type; unknown ones as the widest). */
    static const unsigned channels_of_type[7] = {1, 4, 3, 1, 2, 4, 4};
    unsigned depth = b[24] <= 16 ? b[24] : 16, channels = b[25] < 7 ? channels_of_type[b[25]] : 4;
    uint64_t need = (uint64_t)height * (1 + ((uint64_t)width * depth * channels + 7) / 8);
    size_t p = 8;
    while (size - p >= 8) {
        uint32_t len = dm_be32(b + p);
        if (len > size - p - 8)
            return dm_fail(DM_ERR_FORMAT, "corrupt PNG: a chunk of %u bytes at byte %zu runs past the end of the file",
                           len, p);
        /* Apple's variant (BGRA, premultiplied, raw deflate): neither Pillow
         * nor libpng reads it */
        if (memcmp(b + p + 4, "CgBI", 4) == 0)
            return dm_fail(DM_ERR_UNSUPPORTED, "an Apple CgBI PNG (an iOS build's optimized PNG), which is not a "
                                               "standard PNG; convert it with Apple's tools first");
        if (memcmp(b + p + 4, "IEND", 4) == 0 && size - p >= 12) return check_png_data(b, p + 12, need, height);
        p += 8 + (size_t)len;
        p += size - p < 4 ? size - p : 4; /* the CRC */
    }
    return dm_fail(DM_ERR_FORMAT, "truncated PNG: the file ends before its IEND chunk");
}

/* A fuzzing build computes the CRCs but lets a mismatch through, so that
 * mutated files reach the decoders behind this check. */
#ifdef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
#define REFUSE_BAD_CRC 0
#else
#define REFUSE_BAD_CRC 1
#endif

dm_status dm_png_check_crcs(const void *buf, size_t size, int pil)
{
    const unsigned char *b = buf;
    if (!dm_is_png(b, size)) return DM_OK;
    int image_data = 0;
    for (size_t p = 8; size - p >= 12;) {
        uint32_t len = dm_be32(b + p);
        if (len > size - p - 12) break; /* dm_image_check's to refuse */
        const unsigned char *type = b + p + 4;
        int critical = !(type[0] & 0x20); /* the case bit of the type's first letter */
        image_data |= memcmp(type, "IDAT", 4) == 0;
        if ((pil ? !image_data : critical) && crc32(0, type, 4 + len) != dm_be32(type + 4 + len) && REFUSE_BAD_CRC) {
            int letters = 1;
            for (int i = 0; i < 4; i++) letters &= (type[i] | 0x20) >= 'a' && (type[i] | 0x20) <= 'z';
            return dm_fail(DM_ERR_FORMAT, "corrupt PNG: the %.4s chunk at byte %zu fails its CRC check",
                           letters ? (const char *)type : "????", p);
        }
        if (memcmp(type, "IEND", 4) == 0) break;
        p += 12 + (size_t)len;
    }
    return DM_OK;
}

/* The three numbers of a binary PNM header (width, height, maximum sample
 * value), read as stb_image reads them: whitespace and comments between,
 * at most 9 digits each (stb_image 2.27 overflows an int on longer ones).
 * *end is where the last number ends. */
static dm_status pnm_header(const unsigned char *b, size_t size, long value[3], size_t *end)
{
    size_t p = 2;
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
    *end = p;
    return DM_OK;
}

static int is_binary_pnm(const unsigned char *b, size_t size)
{
    return size >= 2 && b[0] == 'P' && (b[1] == '5' || b[1] == '6');
}

/* Binary PNM (P5 grey, P6 RGB): 8-bit samples only (stb_image 2.27
 * mishandles 16-bit ones), a maximum sample value above 0, and the samples
 * the header promises must follow it (stb_image leaves the missing ones as
 * they were). */
static dm_status check_pnm(const unsigned char *b, size_t size)
{
    long value[3];
    size_t p;
    dm_status st = pnm_header(b, size, value, &p);
    if (st) return st;
    if (value[2] > 255)
        return dm_fail(DM_ERR_UNSUPPORTED, "PNM with %ld as maximum sample value: only 8-bit PNM is supported",
                       value[2]);
    if (value[2] == 0) return dm_fail(DM_ERR_FORMAT, "corrupt PNM: a maximum sample value of 0");
    if (value[0] == 0 || value[1] == 0)
        return dm_fail(DM_ERR_FORMAT, "corrupt PNM: %ld x %ld pixels", value[0], value[1]);
    /* One whitespace byte ends the header. */
    uint64_t need = (uint64_t)value[0] * (uint64_t)value[1] * (b[1] == '6' ? 3 : 1), have = size - p;
    have = have ? have - 1 : 0;
    if (have < need)
        return dm_fail(DM_ERR_FORMAT, "truncated PNM: %ld x %ld pixels need %llu bytes, the file holds %llu", value[0],
                       value[1], (unsigned long long)need, (unsigned long long)have);
    return DM_OK;
}

int dm_pnm_max_value(const void *buf, size_t size)
{
    long value[3];
    size_t end;
    if (!is_binary_pnm(buf, size) || pnm_header(buf, size, value, &end) != DM_OK) return 0;
    return value[2] <= 255 ? (int)value[2] : 0;
}

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
    uint32_t offset = dm_le32(b + 10), header = dm_le32(b + 14);
    int64_t width, height;
    unsigned bpp;
    if (header == 12) {
        width = dm_le16(b + 18);
        height = dm_le16(b + 20);
        bpp = dm_le16(b + 24);
    } else {
        if (size < 34) return dm_fail(DM_ERR_FORMAT, "truncated BMP: the file ends inside its header");
        width = (int32_t)dm_le32(b + 18);
        height = (int32_t)dm_le32(b + 22);
        bpp = dm_le16(b + 28);
        if (height == INT32_MIN) return dm_fail(DM_ERR_FORMAT, "corrupt BMP: height %lld", (long long)height);
        /* compressed pixels are no rows to count: refused for what they are */
        uint32_t compression = dm_le32(b + 30);
        if (compression == 1 || compression == 2)
            return dm_fail(DM_ERR_FORMAT, "unsupported BMP: run-length encoded (RLE%d) pixels; only uncompressed "
                           "and bit-field BMPs are read", compression == 1 ? 8 : 4);
        if (compression > 3)
            return dm_fail(DM_ERR_FORMAT, "unsupported BMP: compression %u; only uncompressed and bit-field BMPs "
                           "are read", (unsigned)compression);
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
    uint64_t pixels = (uint64_t)dm_le16(b + 12) * dm_le16(b + 14);
    uint64_t p = 18 + (uint64_t)b[0];
    /* stb_image skips that many bytes, where the file holds the entries
     * from that one on (Pillow reads them so) */
    if (b[1] && dm_le16(b + 3))
        return dm_fail(DM_ERR_FORMAT, "unsupported TGA: its colour map starts at entry %u; only maps from entry 0 "
                       "are read", dm_le16(b + 3));
    if (b[1]) p += (uint64_t)dm_le16(b + 5) * ((b[7] + 7u) / 8);
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

/* stb_image 2.27 writes each LZW code's pixels by walking its chain of
 * prefixes, up to 4,095 long, and goes on walking for codes past the last
 * pixel: a 60 kB GIF of 64 x 64 pixels whose codes each repeat the last one
 * plus a pixel took 27 s to decode, and the walk grows with the file, not
 * the image.  So the codes of an image's data (from b[p], its first
 * sub-block; lzw_size the byte before) are followed as stb_image reads
 * them, counting the pixels they stand for; more than four times the
 * image's pixels (plus 65,536) is refused.  Streams stb_image refuses end
 * the count early: it stops there too. */
static dm_status check_gif_codes(const unsigned char *b, size_t size, size_t p, unsigned lzw_size, uint64_t pixels)
{
    if (lzw_size > 12) return DM_OK; /* stb_image refuses the image */
    enum { MAX_CODES = 8192 };      /* stb_image's table */
    uint16_t length[MAX_CODES + 1]; /* pixels each code stands for */
    const unsigned clear = 1u << lzw_size;
    for (unsigned c = 0; c < clear; c++) length[c] = 1;
    unsigned size_bits = lzw_size + 1, mask = (1u << size_bits) - 1, avail = clear + 2, valid = 0;
    uint32_t bits = 0;
    int old = -1, cleared = 0;
    uint64_t written = 0, budget = 4 * pixels + 65536;
    size_t block_end = p;
    for (;;) {
        if (valid < size_bits) {
            if (p == block_end) { /* the next sub-block */
                if (p >= size || !b[p]) return DM_OK;
                block_end = p + 1 + b[p];
                p++;
                if (block_end > size) return DM_OK; /* checked whole by the caller */
            }
            bits |= (uint32_t)b[p++] << valid;
            valid += 8;
            continue;
        }
        unsigned code = bits & mask;
        bits >>= size_bits;
        valid -= size_bits;
        if (code == clear) {
            size_bits = lzw_size + 1;
            mask = (1u << size_bits) - 1;
            avail = clear + 2;
            old = -1;
            cleared = 1;
            continue;
        }
        if (code == clear + 1 || code > avail || !cleared || (old < 0 && code == avail)) return DM_OK;
        if (old >= 0) {
            length[avail] = (uint16_t)(length[old] + 1);
            if (++avail > MAX_CODES) return DM_OK;
        }
        written += length[code];
        if (written > budget)
            return dm_fail(DM_ERR_FORMAT, "corrupt GIF: its compressed data stands for more than %llu pixels, "
                           "and the image has %llu", (unsigned long long)budget, (unsigned long long)pixels);
        if ((avail & mask) == 0 && avail <= 0x0FFF) {
            size_bits++;
            mask = (1u << size_bits) - 1;
        }
        old = (int)code;
    }
}

/* GIF: stb_image decodes the first image, reading missing bytes as zeros,
 * so the blocks up to the end of that image's data must be whole, and its
 * codes may not stand for many more pixels than it has. */
static dm_status check_gif(const unsigned char *b, size_t size)
{
    size_t p = 13; /* signature and screen descriptor */
    if (size < p) return dm_fail(DM_ERR_FORMAT, "truncated GIF: the file ends inside its header");
    if (b[10] & 0x80) p += (size_t)3 << ((b[10] & 7) + 1); /* global palette */
    uint64_t pixels = 0;
    while (p < size) {
        unsigned block = b[p++];
        if (block == 0x3B) return dm_fail(DM_ERR_FORMAT, "GIF without an image");
        if (block == 0x21) {
            p++; /* extension label */
        } else if (block == 0x2C) {
            if (size - p < 10) break;
            if (!dm_le16(b + p + 4) || !dm_le16(b + p + 6)) /* stb_image would give the background alone */
                return dm_fail(DM_ERR_FORMAT, "corrupt GIF: an image of %u x %u pixels", dm_le16(b + p + 4),
                               dm_le16(b + p + 6));
            pixels = (uint64_t)dm_le16(b + p + 4) * dm_le16(b + p + 6);
            if (b[p + 8] & 0x80) p += (size_t)3 << ((b[p + 8] & 7) + 1); /* local palette */
            p += 10;  /* descriptor and the LZW code size */
        } else {
            return dm_fail(DM_ERR_FORMAT, "corrupt GIF: unknown block 0x%02X at byte %zu", block, p - 1);
        }
        size_t data = p;
        while (p < size && b[p]) p += 1 + (size_t)b[p]; /* data sub-blocks, up to an empty one */
        if (p++ >= size) break;
        if (block == 0x2C) return check_gif_codes(b, size, data, b[data - 1], pixels);
    }
    return dm_fail(DM_ERR_FORMAT, "truncated GIF: the file ends before the end of its first image");
}

int dm_is_png(const void *buf, size_t size) { return size >= 8 && memcmp(buf, "\x89PNG\r\n\x1a\n", 8) == 0; }

int dm_looks_like_tga(const void *buf, size_t size)
{
    const unsigned char *b = buf;
    if (size < 18 || b[1] > 1) return 0;
    int type = b[2];
    if (b[1] == 1 ? type != 1 && type != 9 : type != 2 && type != 3 && type != 10 && type != 11) return 0;
    return (b[12] | b[13]) && (b[14] | b[15]);
}

/* Decoders running at once share this much memory: an image whose decoding
 * would exceed what is left waits for the others to finish, so a batch
 * decoded by many threads costs no more than one large image. */
#define DECODE_MEMORY_TOTAL ((size_t)2 * DM_IMAGE_MAX_DECODE_BYTES)

static pthread_mutex_t decode_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t decode_finished = PTHREAD_COND_INITIALIZER;
static size_t decode_in_use;

void dm_decode_memory_take(size_t bytes)
{
    pthread_mutex_lock(&decode_lock);
    while (decode_in_use && decode_in_use + bytes > DECODE_MEMORY_TOTAL)
        pthread_cond_wait(&decode_finished, &decode_lock);
    decode_in_use += bytes;
    pthread_mutex_unlock(&decode_lock);
}

void dm_decode_memory_give(size_t bytes)
{
    pthread_mutex_lock(&decode_lock);
    decode_in_use -= bytes;
    pthread_cond_broadcast(&decode_finished);
    pthread_mutex_unlock(&decode_lock);
}

int dm_normalization_ok(float mean, float std, float top)
{
    return std > 0 && isfinite(std) && isfinite(mean) && isfinite((0.0f - mean) / std) && isfinite((top - mean) / std);
}

dm_status dm_image_within(int64_t width, int64_t height, int64_t max_pixels)
{
    if (width * height <= max_pixels) return DM_OK;
    return dm_fail(DM_ERR_FORMAT, "image of %lld x %lld pixels is over the limit of %lld pixels", (long long)width,
                   (long long)height, (long long)max_pixels);
}

dm_status dm_image_check(const void *buf, size_t size, int64_t max_pixels)
{
    const unsigned char *b = buf;
    if (dm_is_png(b, size)) return check_png(b, size, max_pixels);
    if (size >= 2 && b[0] == 'B' && b[1] == 'M') return check_bmp(b, size);
    if (size >= 6 && (memcmp(b, "GIF87a", 6) == 0 || memcmp(b, "GIF89a", 6) == 0)) return check_gif(b, size);
    if (is_binary_pnm(b, size)) return check_pnm(b, size);
    if (dm_looks_like_tga(b, size)) return check_tga(b, size);
    return dm_fail(DM_ERR_FORMAT, "not a PNG, JPEG, WebP, BMP, GIF, TGA or binary PNM (P5, P6) image");
}
