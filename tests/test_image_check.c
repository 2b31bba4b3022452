/* test_image_check.c - the screen in front of stb_image: signatures, PNG
 * chunk lengths, PNM headers. */
#include "testutil.h"

#include <string.h>

#include "image_check.h"

START_TEST(signatures)
{
    ck_assert_int_eq(dm_image_check("\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\1\0\0\0\1\10\2\0\0\0...."
                                    "\0\0\0\0IEND....", 45), DM_OK);
    /* a 1 x 1 BMP of 24 bits: headers, then one row of 3 bytes padded to 4 */
    unsigned char bmp[58] = {'B', 'M', 58, 0, 0, 0, 0, 0, 0, 0, 54, 0, 0, 0, 40, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0,
                             1, 0, 24, 0};
    ck_assert_int_eq(dm_image_check(bmp, sizeof bmp), DM_OK);
    ck_assert_int_eq(dm_image_check(bmp, sizeof bmp - 2), DM_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(dm_last_error(), "truncated BMP"));
    bmp[22] = 0;
    bmp[25] = 0x80; /* height INT_MIN, which has no absolute value */
    ck_assert_int_eq(dm_image_check(bmp, sizeof bmp), DM_ERR_FORMAT);
    /* a 1 x 1 GIF: screen, image descriptor, LZW data in one sub-block, trailer */
    static const unsigned char gif[] = {'G', 'I', 'F', '8', '9', 'a', 1, 0, 1, 0, 0, 0, 0, 0x2c, 0, 0, 0, 0,
                                        1, 0, 1, 0, 0, 2, 2, 0x44, 0x01, 0, 0x3b};
    ck_assert_int_eq(dm_image_check(gif, sizeof gif), DM_OK);
    ck_assert_int_eq(dm_image_check(gif, sizeof gif - 2), DM_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(dm_last_error(), "truncated GIF"));
    /* a 0 x 1 image in a large screen: stb_image gives the background alone */
    unsigned char empty[sizeof gif];
    memcpy(empty, gif, sizeof gif);
    empty[6] = empty[7] = 0xFF; /* screen 65535 pixels wide */
    empty[18] = 0;              /* the image 0 wide */
    ck_assert_int_eq(dm_image_check(empty, sizeof empty), DM_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(dm_last_error(), "corrupt GIF: an image of 0 x 1 pixels"));
    ck_assert_int_eq(dm_image_check("P6\n1 1\n255\n...", 14), DM_OK);
    ck_assert_int_eq(dm_image_check("P6\n1 1\n255\n..", 13), DM_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(dm_last_error(), "truncated PNM"));
    ck_assert_int_eq(dm_image_check("P5 # comment\n1 1 255\n.", 22), DM_OK);
    /* PNM: 16-bit samples and header numbers that would overflow an int */
    ck_assert_int_eq(dm_image_check("P6\n1 1\n65535\n......", 20), DM_ERR_UNSUPPORTED);
    ck_assert_int_eq(dm_image_check("P6\n1 99999999999 255\n...", 25), DM_ERR_FORMAT);
    ck_assert_int_eq(dm_image_check("P6\n1\n", 6), DM_ERR_FORMAT);
    /* ASCII PNM, PSD and plain text are not read */
    ck_assert_int_eq(dm_image_check("P3\n1 1\n255\n", 11), DM_ERR_FORMAT);
    ck_assert_int_eq(dm_image_check("8BPS..............", 18), DM_ERR_FORMAT);
    ck_assert_int_eq(dm_image_check("", 0), DM_ERR_FORMAT);
}
END_TEST

/* JPEG is libjpeg-turbo's, never stb_image's: its signature is refused
 * here, and the loader routes it past this screen. */
START_TEST(jpeg_not_for_stb)
{
    static const unsigned char jpeg[] = {0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x02, 0xFF, 0xD9};
    ck_assert_int_eq(dm_image_check(jpeg, sizeof jpeg), DM_ERR_FORMAT);
}
END_TEST

START_TEST(png_chunk_lengths)
{
    unsigned char png[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 13, 'I', 'H', 'D', 'R', 0, 0, 0, 1,
                           0, 0, 0, 1, 8, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 'I', 'E', 'N', 'D', 0, 0, 0, 0};
    ck_assert_int_eq(dm_image_check(png, sizeof png), DM_OK);
    png[33] = 0x50; /* 1.3 GB claimed by an IEND chunk of a 45-byte file */
    ck_assert_int_eq(dm_image_check(png, sizeof png), DM_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(dm_last_error(), "runs past the end of the file"));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("image_check");
    TCase *tc = tcase_create("screen");
    tcase_add_test(tc, signatures);
    tcase_add_test(tc, jpeg_not_for_stb);
    tcase_add_test(tc, png_chunk_lengths);
    suite_add_tcase(s, tc);
    return test_run(s);
}
