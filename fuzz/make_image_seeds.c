/* make_image_seeds.c - small images in every format stb_image_write
 * writes, as seeds for fuzz_image, each also cut short at a third, at a
 * half and one byte before its end: make_image_seeds DIR */
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb_image_write.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

/* Write the file at path, then its truncated copies path.cutN. */
static int write_with_cuts(const char *path, const unsigned char *data, size_t size)
{
    size_t cuts[] = {size, size / 3, size / 2, size - 1};
    int ok = 1;
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        char name[4200];
        snprintf(name, sizeof name, i ? "%s.cut%zu" : "%s", path, cuts[i]);
        FILE *f = fopen(name, "wb");
        ok &= f && fwrite(data, 1, cuts[i], f) == cuts[i];
        ok &= f && fclose(f) == 0;
    }
    return ok;
}

/* What stb_image_write writes, collected in memory. */
typedef struct buffer {
    unsigned char *data;
    size_t size;
} buffer;

static void collect(void *ctx, void *data, int size)
{
    buffer *b = ctx;
    unsigned char *p = realloc(b->data, b->size + (size_t)size);
    if (!p) exit(1);
    memcpy(p + b->size, data, (size_t)size);
    b->data = p;
    b->size += (size_t)size;
}

/* b with n bytes inserted at byte `at`, written with its cuts to path. */
static int insert_seed(const char *path, buffer *b, size_t at, const unsigned char *bytes, size_t n)
{
    buffer out = {0};
    collect(&out, b->data, (int)at);
    collect(&out, (void *)(uintptr_t)bytes, (int)n);
    collect(&out, b->data + at, (int)(b->size - at));
    int ok = write_with_cuts(path, out.data, out.size);
    free(out.data);
    return ok;
}

int main(int argc, char **argv)
{
    if (argc != 2) return 2;
    enum { W = 13, H = 9 };
    unsigned char rgb[W * H * 3], grey[W * H];
    float hdr[W * H * 3];
    for (int i = 0; i < W * H; i++) {
        grey[i] = (unsigned char)(i * 7);
        for (int c = 0; c < 3; c++) {
            rgb[3 * i + c] = (unsigned char)(i * (c + 3) + 40 * c);
            hdr[3 * i + c] = rgb[3 * i + c] / 64.0f;
        }
    }
    char p[4096];
    int ok = 1;
    buffer b = {0};
#define OUT(name) (snprintf(p, sizeof p, "%s/%s", argv[1], name), p)
#define SEED(name, write) (b.size = 0, (write) && write_with_cuts(OUT(name), b.data, b.size))
    ok &= SEED("rgb.png", stbi_write_png_to_func(collect, &b, W, H, 3, rgb, W * 3));
    ok &= SEED("grey.png", stbi_write_png_to_func(collect, &b, W, H, 1, grey, W));
    ok &= SEED("rgb.bmp", stbi_write_bmp_to_func(collect, &b, W, H, 3, rgb));
    ok &= SEED("rle.tga", stbi_write_tga_to_func(collect, &b, W, H, 3, rgb));
    stbi_write_tga_with_rle = 0;
    ok &= SEED("rgb.tga", stbi_write_tga_to_func(collect, &b, W, H, 3, rgb));
    ok &= SEED("rgb.jpg", stbi_write_jpg_to_func(collect, &b, W, H, 3, rgb, 90));
    ok &= SEED("grey.jpg", stbi_write_jpg_to_func(collect, &b, W, H, 1, grey, 50));
    ok &= SEED("rgb.hdr", stbi_write_hdr_to_func(collect, &b, W, H, 3, hdr));
    /* A JPEG and a PNG with EXIF orientation 6 (a quarter turn): an APP1
     * segment after the JPEG's SOI, an eXIf chunk after the PNG's IHDR. */
    static const unsigned char tiff[] = {'M', 'M', 0, 42, 0, 0, 0, 8, 0, 1, 0x01, 0x12, 0, 3,
                                         0, 0, 0, 1, 0, 6, 0, 0, 0, 0, 0, 0};
    unsigned char app1[10 + sizeof tiff] = {0xFF, 0xE1, 0, 8 + sizeof tiff, 'E', 'x', 'i', 'f', 0, 0};
    memcpy(app1 + 10, tiff, sizeof tiff);
    unsigned char exif[12 + sizeof tiff] = {0, 0, 0, sizeof tiff, 'e', 'X', 'I', 'f'};
    memcpy(exif + 8, tiff, sizeof tiff);
    uLong crc = crc32(0, exif + 4, 4 + sizeof tiff);
    for (int i = 0; i < 4; i++) exif[8 + sizeof tiff + i] = (unsigned char)(crc >> (24 - 8 * i));
    b.size = 0;
    ok &= stbi_write_jpg_to_func(collect, &b, W, H, 3, rgb, 90) &&
          insert_seed(OUT("exif.jpg"), &b, 2, app1, sizeof app1);
    b.size = 0;
    ok &= stbi_write_png_to_func(collect, &b, W, H, 3, rgb, W * 3) &&
          insert_seed(OUT("exif.png"), &b, 33, exif, sizeof exif);
    /* binary PPM and PGM, and a 1x1 GIF (clear code, index 0, end code) */
    b.size = 0;
    char head[64];
    int n = snprintf(head, sizeof head, "P6\n# seed\n%d %d\n255\n", W, H);
    collect(&b, head, n);
    collect(&b, rgb, (int)sizeof rgb);
    ok &= write_with_cuts(OUT("rgb.ppm"), b.data, b.size);
    b.size = 0;
    n = snprintf(head, sizeof head, "P5 %d %d 255\n", W, H);
    collect(&b, head, n);
    collect(&b, grey, (int)sizeof grey);
    ok &= write_with_cuts(OUT("grey.pgm"), b.data, b.size);
    static const unsigned char gif[] = {'G', 'I', 'F', '8', '9', 'a', 1, 0, 1, 0, 0x80, 0, 0, 10, 200, 30, 255,
                                        255, 255, 0x2c, 0, 0, 0, 0, 1, 0, 1, 0, 0, 2, 2, 0x44, 0x01, 0, 0x3b};
    ok &= write_with_cuts(OUT("dot.gif"), gif, sizeof gif);
    /* Palette images of two entries whose pixels take every index: an 8-bit
     * BMP and a palette PNG (IHDR, PLTE, IDAT, IEND). */
    unsigned char bmp[14 + 40 + 8 + W * H + H * 3] = {'B', 'M', [10] = 14 + 40 + 8, [14] = 40, [18] = W, [22] = H,
                                                      [26] = 1, [28] = 8, [46] = 2, [54] = 10, 200, 30, 0, 255};
    bmp[2] = (unsigned char)sizeof bmp;
    for (int y = 0, at = 62; y < H; y++, at += (W + 3) / 4 * 4)
        for (int x = 0; x < W; x++) bmp[at + x] = (unsigned char)((y * W + x) * 37);
    ok &= write_with_cuts(OUT("palette.bmp"), bmp, sizeof bmp);
    unsigned char raw[H * (W + 1)], png[512];
    for (int y = 0; y < H; y++) {
        raw[y * (W + 1)] = 0; /* no filter */
        for (int x = 0; x < W; x++) raw[y * (W + 1) + 1 + x] = (unsigned char)((y * W + x) * 37);
    }
    static const unsigned char png_head[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 13, 'I', 'H', 'D',
                                             'R', 0, 0, 0, W, 0, 0, 0, H, 8, 3, 0, 0, 0, 0, 0, 0, 0,
                                             0, 0, 0, 6, 'P', 'L', 'T', 'E', 10, 200, 30, 0, 255, 0, 0, 0, 0, 0};
    memcpy(png, png_head, sizeof png_head);
    uLong ihdr_crc = crc32(0, png + 12, 17), plte_crc = crc32(0, png + 37, 10);
    for (int i = 0; i < 4; i++) {
        png[29 + i] = (unsigned char)(ihdr_crc >> (24 - 8 * i));
        png[47 + i] = (unsigned char)(plte_crc >> (24 - 8 * i));
    }
    uLongf packed = sizeof png - sizeof png_head - 24;
    ok &= compress2(png + sizeof png_head + 8, &packed, raw, sizeof raw, 9) == Z_OK;
    size_t at = sizeof png_head;
    static const char *const tail_types[2] = {"IDAT", "IEND"};
    for (int k = 0; k < 2; k++) {
        uLong len = k ? 0 : packed;
        for (int i = 0; i < 4; i++) png[at + i] = (unsigned char)(len >> (24 - 8 * i));
        memcpy(png + at + 4, tail_types[k], 4);
        uLong crc = crc32(0, png + at + 4, 4 + (uInt)len);
        for (int i = 0; i < 4; i++) png[at + 8 + len + i] = (unsigned char)(crc >> (24 - 8 * i));
        at += 12 + len;
    }
    ok &= write_with_cuts(OUT("palette.png"), png, at);
    free(b.data);
    return ok ? 0 : 1;
}
