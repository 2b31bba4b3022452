/* test_image_check.c - the screen in front of stb_image: signatures, PNG
 * chunk lengths, PNM headers. */
#include "testutil.h"

#include <string.h>

#include "image_check.h"

/* A 1 x 1 RGB PNG of the pixel (0x10, 0x20, 0x30), written by Python's zlib. */
static const unsigned char png_1x1[] = {
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52, 0x00, 0x00, 0x00, 0x01,
    0x00, 0x00, 0x00, 0x01, 0x08, 0x02, 0x00, 0x00, 0x00, 0x90, 0x77, 0x53, 0xde, 0x00, 0x00, 0x00, 0x0c, 0x49, 0x44, 0x41,
    0x54, 0x78, 0x9c, 0x63, 0x10, 0x50, 0x30, 0x00, 0x00, 0x00, 0xa4, 0x00, 0x61, 0x34, 0x66, 0x7d, 0x72, 0x00, 0x00, 0x00,
    0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82};

START_TEST(signatures)
{
    ck_assert_int_eq(dm_image_check(png_1x1, sizeof png_1x1, DM_IMAGE_MAX_PIXELS), DM_OK);
    /* a 1 x 1 BMP of 24 bits: headers, then one row of 3 bytes padded to 4 */
    unsigned char bmp[58] = {'B', 'M', 58, 0, 0, 0, 0, 0, 0, 0, 54, 0, 0, 0, 40, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0,
                             1, 0, 24, 0};
    ck_assert_int_eq(dm_image_check(bmp, sizeof bmp, DM_IMAGE_MAX_PIXELS), DM_OK);
    ck_assert_int_eq(dm_image_check(bmp, sizeof bmp - 2, DM_IMAGE_MAX_PIXELS), DM_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(dm_last_error(), "truncated BMP"));
    /* compressed pixels (RLE8, RLE4, JPEG) are refused as such, not as a
     * truncated file; bit fields (3) are rows like any */
    static const struct { unsigned char compression; const char *message; } compressed[] = {
        {1, "run-length encoded (RLE8)"}, {2, "run-length encoded (RLE4)"}, {4, "compression 4"}};
    for (size_t i = 0; i < sizeof compressed / sizeof *compressed; i++) {
        bmp[30] = compressed[i].compression;
        ck_assert_int_eq(dm_image_check(bmp, sizeof bmp, DM_IMAGE_MAX_PIXELS), DM_ERR_FORMAT);
        ck_assert_msg(strstr(dm_last_error(), compressed[i].message), "%s", dm_last_error());
    }
    bmp[30] = 3;
    ck_assert_int_eq(dm_image_check(bmp, sizeof bmp, DM_IMAGE_MAX_PIXELS), DM_OK);
    bmp[30] = 0;
    bmp[22] = 0;
    bmp[25] = 0x80; /* height INT_MIN, which has no absolute value */
    ck_assert_int_eq(dm_image_check(bmp, sizeof bmp, DM_IMAGE_MAX_PIXELS), DM_ERR_FORMAT);
    /* a 1 x 1 GIF: screen, image descriptor, LZW data in one sub-block, trailer */
    static const unsigned char gif[] = {'G', 'I', 'F', '8', '9', 'a', 1, 0, 1, 0, 0, 0, 0, 0x2c, 0, 0, 0, 0,
                                        1, 0, 1, 0, 0, 2, 2, 0x44, 0x01, 0, 0x3b};
    ck_assert_int_eq(dm_image_check(gif, sizeof gif, DM_IMAGE_MAX_PIXELS), DM_OK);
    ck_assert_int_eq(dm_image_check(gif, sizeof gif - 2, DM_IMAGE_MAX_PIXELS), DM_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(dm_last_error(), "truncated GIF"));
    /* a 0 x 1 image in a large screen: stb_image gives the background alone */
    unsigned char empty[sizeof gif];
    memcpy(empty, gif, sizeof gif);
    empty[6] = empty[7] = 0xFF; /* screen 65535 pixels wide */
    empty[18] = 0;              /* the image 0 wide */
    ck_assert_int_eq(dm_image_check(empty, sizeof empty, DM_IMAGE_MAX_PIXELS), DM_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(dm_last_error(), "corrupt GIF: an image of 0 x 1 pixels"));
    ck_assert_int_eq(dm_image_check("P6\n1 1\n255\n...", 14, DM_IMAGE_MAX_PIXELS), DM_OK);
    ck_assert_int_eq(dm_image_check("P6\n1 1\n255\n..", 13, DM_IMAGE_MAX_PIXELS), DM_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(dm_last_error(), "truncated PNM"));
    ck_assert_int_eq(dm_image_check("P5 # comment\n1 1 255\n.", 22, DM_IMAGE_MAX_PIXELS), DM_OK);
    /* PNM: 16-bit samples and header numbers that would overflow an int */
    ck_assert_int_eq(dm_image_check("P6\n1 1\n65535\n......", 20, DM_IMAGE_MAX_PIXELS), DM_ERR_UNSUPPORTED);
    ck_assert_int_eq(dm_image_check("P6\n1 99999999999 255\n...", 25, DM_IMAGE_MAX_PIXELS), DM_ERR_FORMAT);
    ck_assert_int_eq(dm_image_check("P6\n1\n", 6, DM_IMAGE_MAX_PIXELS), DM_ERR_FORMAT);
    /* ASCII PNM, PSD and plain text are not read */
    ck_assert_int_eq(dm_image_check("P3\n1 1\n255\n", 11, DM_IMAGE_MAX_PIXELS), DM_ERR_FORMAT);
    ck_assert_int_eq(dm_image_check("8BPS..............", 18, DM_IMAGE_MAX_PIXELS), DM_ERR_FORMAT);
    ck_assert_int_eq(dm_image_check("", 0, DM_IMAGE_MAX_PIXELS), DM_ERR_FORMAT);
}
END_TEST

/* JPEG is libjpeg-turbo's, never stb_image's: its signature is refused
 * here, and the loader routes it past this screen. */
START_TEST(jpeg_not_for_stb)
{
    static const unsigned char jpeg[] = {0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x02, 0xFF, 0xD9};
    ck_assert_int_eq(dm_image_check(jpeg, sizeof jpeg, DM_IMAGE_MAX_PIXELS), DM_ERR_FORMAT);
}
END_TEST

START_TEST(png_chunk_lengths)
{
    unsigned char png[sizeof png_1x1];
    memcpy(png, png_1x1, sizeof png);
    png[57] = 0x50; /* 1.3 GB claimed by the IEND chunk of a 69-byte file */
    ck_assert_int_eq(dm_image_check(png, sizeof png, DM_IMAGE_MAX_PIXELS), DM_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(dm_last_error(), "runs past the end of the file"));
}
END_TEST

/* Apple's CgBI PNG (BGRA, premultiplied, raw deflate), which stb_image
 * reads with red and blue swapped and neither Pillow nor libpng reads: a
 * CgBI chunk (its CRC unchecked here) after IHDR. */
START_TEST(png_cgbi_refused)
{
    unsigned char png[sizeof png_1x1 + 16];
    memcpy(png, png_1x1, 33);
    memcpy(png + 33, "\0\0\0\4CgBI\x50\0\x20\x06\0\0\0\0", 16);
    memcpy(png + 49, png_1x1 + 33, sizeof png_1x1 - 33);
    ck_assert_int_eq(dm_image_check(png, sizeof png, DM_IMAGE_MAX_PIXELS), DM_ERR_UNSUPPORTED);
    ck_assert_ptr_nonnull(strstr(dm_last_error(), "an Apple CgBI PNG"));
}
END_TEST

/* stb_image took the reserved deflate distance code 30 as distance 0 and
 * copied output bytes it never wrote into the pixels (found by fuzz_image):
 * a 13 x 9 PNG whose image data holds that code. */
START_TEST(png_image_data_inflates)
{
    static const unsigned char bad_distance[] = {
        0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52, 0x00, 0x00,
        0x00, 0x0d, 0x00, 0x00, 0x00, 0x09, 0x08, 0x02, 0x00, 0x00, 0x00, 0x66, 0x18, 0x31, 0x3d, 0x00, 0x00, 0x00,
        0x2b, 0x49, 0x44, 0x41, 0x54, 0x78, 0x5e, 0x63, 0x64, 0xd0, 0x08, 0x60, 0x66, 0x61, 0x25, 0x88, 0x58, 0xd4,
        0x4d, 0x1c, 0xa9, 0xa9, 0x8e, 0xb1, 0xf4, 0x88, 0x30, 0x2d, 0xec, 0x35, 0x21, 0xe0, 0x15, 0x62, 0xfd, 0xc1,
        0x28, 0x38, 0x45, 0x9c, 0x9a, 0xef, 0x03, 0x00, 0x71, 0xb8, 0x0b, 0x84, 0x57, 0xd3, 0xe0, 0x86, 0x00, 0x00,
        0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82};
    ck_assert_int_eq(dm_image_check(bad_distance, sizeof bad_distance, DM_IMAGE_MAX_PIXELS), DM_ERR_FORMAT);
    ck_assert_msg(strstr(dm_last_error(), "corrupt PNG: invalid compressed image data") != NULL, "%s",
                  dm_last_error());
    dm_image img;
    ck_assert_int_eq(dm_image_load_memory(bad_distance, sizeof bad_distance, 3, &img), DM_ERR_FORMAT);

    /* the same 1 x 1 image with its zlib stream cut after 4 of 12 bytes */
    static const unsigned char cut[] = {
        0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52, 0x00, 0x00,
        0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x02, 0x00, 0x00, 0x00, 0x90, 0x77, 0x53, 0xde, 0x00, 0x00, 0x00,
        0x04, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0x10, 0xe3, 0xc6, 0x06, 0xe0, 0x00, 0x00, 0x00, 0x00, 0x49,
        0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82};
    ck_assert_int_eq(dm_image_check(cut, sizeof cut, DM_IMAGE_MAX_PIXELS), DM_ERR_FORMAT);
    ck_assert_msg(strstr(dm_last_error(), "truncated PNG: the compressed image data ends early") != NULL, "%s",
                  dm_last_error());

    /* an IEND chunk that carries data: the image-data walk stops at it
     * (it once stepped past the end and read outside the file) */
    unsigned char iend_with_data[49];
    memcpy(iend_with_data, png_1x1, 33);
    static const unsigned char iend[] = {0, 0, 0, 4, 'I', 'E', 'N', 'D', 1, 2, 3, 4, 0, 0, 0, 0};
    memcpy(iend_with_data + 33, iend, sizeof iend);
    ck_assert_int_eq(dm_image_check(iend_with_data, sizeof iend_with_data, DM_IMAGE_MAX_PIXELS), DM_ERR_FORMAT);
    ck_assert_msg(strstr(dm_last_error(), "no IDAT chunk") != NULL, "%s", dm_last_error());

    /* and the whole 1 x 1 image decodes to its one pixel */
    ck_assert_int_eq(dm_image_load_memory(png_1x1, sizeof png_1x1, 3, &img), DM_OK);
    ck_assert_int_eq(img.pixels[0], 0x10);
    ck_assert_int_eq(img.pixels[1], 0x20);
    ck_assert_int_eq(img.pixels[2], 0x30);
    dm_image_free(&img);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("image_check");
    TCase *tc = tcase_create("screen");
    tcase_add_test(tc, signatures);
    tcase_add_test(tc, jpeg_not_for_stb);
    tcase_add_test(tc, png_chunk_lengths);
    tcase_add_test(tc, png_cgbi_refused);
    tcase_add_test(tc, png_image_data_inflates);
    suite_add_tcase(s, tc);
    return test_run(s);
}
