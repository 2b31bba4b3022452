/* jpeg.c - libjpeg-turbo behind the library's error conventions: its fatal
 * errors long-jump back here instead of exiting, its warnings are quiet
 * but for the end of the data. */
#include "jpeg.h"

#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
#include <jerror.h>

#include "error.h"
#include "image_check.h"
#include "orientation.h"

typedef struct jpeg_failure {
    struct jpeg_error_mgr mgr;
    jmp_buf escape;
    char message[JMSG_LENGTH_MAX];
} jpeg_failure;

static void on_error(j_common_ptr cinfo)
{
    jpeg_failure *f = (jpeg_failure *)cinfo->err;
    f->mgr.format_message(cinfo, f->message);
    longjmp(f->escape, 1);
}

/* Corrupt-data warnings: libjpeg fills what it cannot decode and goes on,
 * as Pillow and OpenCV let it, also where a scan's data meets a marker
 * before its last blocks (a frame header larger than its data).  A file
 * that ends before its image does is refused instead, as Pillow refuses a
 * truncated file. */
static void on_message(j_common_ptr cinfo, int level)
{
    if (level == -1 && cinfo->err->msg_code == JWRN_JPEG_EOF) {
        jpeg_failure *f = (jpeg_failure *)cinfo->err;
        snprintf(f->message, sizeof f->message, "truncated JPEG: the file ends before its image does");
        longjmp(f->escape, 1);
    }
}

/* Every scan of a progressive (or non-interleaved) JPEG passes over the
 * whole image, and a scan can be a dozen bytes: a 360 kB file repeating one
 * scan 1,000 times over 8192 x 8192 pixels took 53 s to decode.  Encoders
 * write about 10 scans; more than DM_IMAGE_MAX_JPEG_SCANS is refused.  The
 * decoder calls this before each row of blocks it reads. */
static void on_progress(j_common_ptr cinfo)
{
    int scan = ((j_decompress_ptr)cinfo)->input_scan_number;
    if (scan > DM_IMAGE_MAX_JPEG_SCANS) {
        jpeg_failure *f = (jpeg_failure *)cinfo->err;
        snprintf(f->message, sizeof f->message, "more than %d scans, over the limit for a JPEG file",
                 DM_IMAGE_MAX_JPEG_SCANS);
        longjmp(f->escape, 1);
    }
}

/* A CMYK (or YCCK) JPEG converted to RGB: the samples taken as Adobe
 * writes them, inverted, then each of C, M, Y scaled by 1 - K and taken
 * from it, in Pillow's 8-bit rounding (a division by 255, rounded) or
 * OpenCV's (a shift by 8 bits).  In place, n pixels of four bytes becoming
 * three. */
static void cmyk_to_rgb(uint8_t *pixels, size_t n, int opencv)
{
    for (size_t i = 0; i < n; i++) {
        const uint8_t *in = pixels + 4 * i;
        int white = in[3]; /* 255 - K, K being the inverted sample */
        uint8_t rgb[3];
        for (int c = 0; c < 3; c++) {
            int t = (255 - in[c]) * white;
            rgb[c] = (uint8_t)(white - (opencv ? t >> 8 : (((t + 128) >> 8) + t + 128) >> 8));
        }
        memcpy(pixels + 3 * i, rgb, 3);
    }
}

int dm_is_jpeg(const void *data, size_t size)
{
    const unsigned char *b = data;
    return size >= 2 && b[0] == 0xFF && b[1] == 0xD8;
}

/* The EXIF orientation in the first APP1 segment, past its 6-byte "Exif"
 * header, as OpenCV's JPEG decoder takes it (without checking that
 * header: an XMP segment first leaves the image as it is). */
static int app1_orientation(j_decompress_ptr cinfo)
{
    for (jpeg_saved_marker_ptr m = cinfo->marker_list; m; m = m->next)
        if (m->marker == JPEG_APP0 + 1)
            return m->data_length > 6 ? dm_exif_orientation(m->data + 6, m->data_length - 6) : 0;
    return 0;
}

dm_status dm_jpeg_decode(const void *data, size_t size, int64_t max_pixels, int opencv, dm_image *out,
                         int *orientation)
{
    *out = (dm_image){0};
    struct jpeg_decompress_struct cinfo;
    jpeg_failure failure;
    /* volatile: assigned between setjmp and a possible longjmp */
    uint8_t *volatile pixels = NULL;
    volatile size_t taken = 0;
    cinfo.err = jpeg_std_error(&failure.mgr);
    failure.mgr.error_exit = on_error;
    failure.mgr.emit_message = on_message;
    if (setjmp(failure.escape)) {
        jpeg_destroy_decompress(&cinfo);
        free(pixels);
        if (taken) dm_decode_memory_give(taken);
        return dm_fail(failure.mgr.msg_code == JERR_OUT_OF_MEMORY ? DM_ERR_NOMEM : DM_ERR_FORMAT,
                       "cannot decode JPEG: %s", failure.message);
    }
    jpeg_create_decompress(&cinfo);
    struct jpeg_progress_mgr progress = {.progress_monitor = on_progress};
    cinfo.progress = &progress;
    jpeg_mem_src(&cinfo, data, (unsigned long)size);
    if (opencv) jpeg_save_markers(&cinfo, JPEG_APP0 + 1, 0xFFFF);
    jpeg_read_header(&cinfo, TRUE);
    *orientation = opencv ? app1_orientation(&cinfo) : 0;
    dm_status st = dm_image_within(cinfo.image_width, cinfo.image_height, max_pixels);
    int cmyk = cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK;
    int channels = cinfo.num_components == 1 ? 1 : 3, decoded = cmyk ? 4 : channels;
    /* The pixels, and for a file of several scans every coefficient of the
     * image, kept until the last scan. */
    size_t need = 0;
    if (st == DM_OK) {
        need = (size_t)cinfo.image_width * cinfo.image_height * decoded;
        if (jpeg_has_multiple_scans(&cinfo))
            for (int c = 0; c < cinfo.num_components; c++)
                need += (size_t)cinfo.comp_info[c].width_in_blocks * cinfo.comp_info[c].height_in_blocks *
                        sizeof(JBLOCK);
    }
    if (need > DM_IMAGE_MAX_DECODE_BYTES)
        st = dm_fail(DM_ERR_FORMAT, "JPEG of %u x %u pixels needs %zu MB to decode, over the limit of %zu MB",
                     cinfo.image_width, cinfo.image_height, need >> 20, (size_t)DM_IMAGE_MAX_DECODE_BYTES >> 20);
    if (st != DM_OK) {
        jpeg_destroy_decompress(&cinfo);
        return st;
    }
    dm_decode_memory_take(need);
    taken = need;
    cinfo.out_color_space = cmyk ? JCS_CMYK : channels == 1 ? JCS_GRAYSCALE : JCS_RGB;
    jpeg_start_decompress(&cinfo);
    size_t row = (size_t)cinfo.output_width * decoded;
    pixels = malloc(row * cinfo.output_height);
    if (!pixels) {
        jpeg_destroy_decompress(&cinfo);
        dm_decode_memory_give(need);
        return dm_fail(DM_ERR_NOMEM, "out of memory for a %u x %u image", cinfo.output_width, cinfo.output_height);
    }
    while (cinfo.output_scanline < cinfo.output_height) {
        JSAMPROW line = pixels + cinfo.output_scanline * row;
        jpeg_read_scanlines(&cinfo, &line, 1);
    }
    jpeg_finish_decompress(&cinfo);
    if (cmyk) cmyk_to_rgb(pixels, (size_t)cinfo.output_width * cinfo.output_height, opencv);
    *out = (dm_image){.width = (int)cinfo.output_width, .height = (int)cinfo.output_height, .channels = channels,
                      .pixels = pixels};
    jpeg_destroy_decompress(&cinfo);
    dm_decode_memory_give(need);
    return DM_OK;
}
