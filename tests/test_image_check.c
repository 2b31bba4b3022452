/* test_image_check.c - the screen in front of stb_image: signatures, and
 * JPEG Huffman tables wherever stb_image would read them. */
#include "testutil.h"

#include <string.h>

#include "image_check.h"

/* A DHT segment with one table (class << 4 | number) whose 16 code counts
 * sum to `codes`. */
static size_t put_dht(unsigned char *b, unsigned codes, unsigned char table)
{
    size_t n = 0;
    b[n++] = 0xFF;
    b[n++] = 0xC4;
    b[n++] = (unsigned char)((2 + 17 + codes) >> 8);
    b[n++] = (unsigned char)(2 + 17 + codes);
    b[n++] = table;
    for (unsigned i = 0; i < 16; i++) b[n++] = (unsigned char)(codes / 16 + (i < codes % 16));
    memset(b + n, 0, codes);
    return n + codes;
}

/* SOI, optionally the tables of a scan and the scan, the table, EOI. */
static dm_status check_jpeg_with_table(unsigned codes, int after_scan)
{
    static unsigned char b[8192];
    static const unsigned char sos[] = {0xFF, 0xDA, 0x00, 0x08, 0x01, 0x01, 0x00, 0x00, 0x3F, 0x00};
    /* entropy-coded data with byte stuffing and a restart marker in it */
    static const unsigned char scan[] = {0x12, 0xFF, 0x00, 0x34, 0xFF, 0xD0, 0x56, 0xFF, 0xFF, 0x00, 0x78};
    size_t n = 0;
    b[n++] = 0xFF;
    b[n++] = 0xD8;
    if (after_scan) {
        n += put_dht(b + n, 12, 0x00); /* DC table 0 */
        n += put_dht(b + n, 12, 0x10); /* AC table 0 */
        memcpy(b + n, sos, sizeof sos);
        n += sizeof sos;
        memcpy(b + n, scan, sizeof scan);
        n += sizeof scan;
    }
    n += put_dht(b + n, codes, 0x00);
    b[n++] = 0xFF;
    b[n++] = 0xD9;
    return dm_image_check(b, n);
}

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

START_TEST(jpeg_huffman_tables)
{
    ck_assert_int_eq(check_jpeg_with_table(12, 0), DM_OK);
    ck_assert_int_eq(check_jpeg_with_table(256, 0), DM_OK);
    ck_assert_int_eq(check_jpeg_with_table(257, 0), DM_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(dm_last_error(), "a Huffman table with 257 codes"));
    /* Progressive files define tables between scans. */
    ck_assert_int_eq(check_jpeg_with_table(162, 1), DM_OK);
    ck_assert_int_eq(check_jpeg_with_table(4080, 1), DM_ERR_FORMAT);
    /* stb_image reads a table cut short by the end of the file as zeros;
     * such a file is also refused for its missing end. */
    unsigned char cut[] = {0xFF, 0xD8, 0xFF, 0xC4, 0x01, 0x00, 0x00, 0x80, 0x80, 0x01};
    ck_assert_int_eq(dm_image_check(cut, sizeof cut), DM_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(dm_last_error(), "a Huffman table with 257 codes"));
    ck_assert_int_eq(dm_image_check(cut, sizeof cut - 1), DM_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(dm_last_error(), "truncated JPEG"));
}
END_TEST

/* A scan whose Huffman table was never defined decoded with whatever the
 * decoder's table memory held. */
START_TEST(jpeg_scan_tables_defined)
{
    static const unsigned char sos[] = {0xFF, 0xD8, 0xFF, 0xDA, 0x00, 0x08, 0x01, 0x01, 0x00, 0x00, 0x3F, 0x00,
                                        0x12, 0x34, 0xFF, 0xD9};
    ck_assert_int_eq(dm_image_check(sos, sizeof sos), DM_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(dm_last_error(), "uses a table never defined"));
    /* A frame of components 1 and 2 whose one scan holds only component 1. */
    static const unsigned char half[] = {0xFF, 0xD8, 0xFF, 0xDB, 0x00, 0x43, 0x00, [4 + 67] = 0xFF, 0xC0, 0x00, 0x0E,
                                         0x08, 0x00, 0x08, 0x00, 0x08, 0x02, 0x01, 0x11, 0x00, 0x02, 0x11, 0x00,
                                         0xFF, 0xC4, 0x00, 0x14, 0x00, 0x01, [4 + 67 + 16 + 4 + 17 + 1] = 0xFF,
                                         0xC4, 0x00, 0x14, 0x10, 0x01, [4 + 67 + 16 + 2 * 22 + 1] = 0xFF, 0xDA,
                                         0x00, 0x08, 0x01, 0x01, 0x00, 0x00, 0x3F, 0x00, 0x12, 0x34, 0xFF, 0xD9};
    ck_assert_int_eq(dm_image_check(half, sizeof half), DM_ERR_FORMAT);
    ck_assert_msg(strstr(dm_last_error(), "component 2 is in no scan") != NULL, "%s", dm_last_error());
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
    tcase_add_test(tc, jpeg_huffman_tables);
    tcase_add_test(tc, jpeg_scan_tables_defined);
    tcase_add_test(tc, png_chunk_lengths);
    suite_add_tcase(s, tc);
    return test_run(s);
}
