/* eval_seg.c - `damamba eval --task seg`: mIoU, mAcc and aAcc of a
 * segmentation model over an ADE20K-layout folder, accumulated over the
 * whole dataset as mmsegmentation's eval does. */
#include "cli.h"

#include "internal_api.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <png.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define IGNORE_INDEX 255

/* The raw 8-bit samples of a one-channel (grey or palette) PNG: the class
 * indices of an annotation, never converted through a palette. */
/* libpng's errors, named after the file, before its long jump back. */
static void png_failed(png_structp png, png_const_charp message)
{
    cli_error("%s: not a readable PNG annotation: %s", (const char *)png_get_error_ptr(png), message);
    png_longjmp(png, 1);
}

static void png_warned(png_structp png, png_const_charp message) { (void)png, (void)message; }

static uint8_t *read_label_png(const char *path, int *w, int *h)
{
    size_t size;
    int fd = dm_open_input(path, &size);
    FILE *f = fd >= 0 ? fdopen(fd, "rb") : NULL;
    if (!f) {
        cli_error("%s: %s", path, fd < 0 ? dm_last_error() : strerror(errno));
        if (fd >= 0) close(fd);
        return NULL;
    }
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, (png_voidp)path, png_failed, png_warned);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    uint8_t *volatile pixels = NULL;
    int ok = info != NULL;
    if (ok && setjmp(png_jmpbuf(png))) { /* libpng's errors return here */
        free(pixels);
        pixels = NULL;
        ok = 0;
    } else if (ok) {
        png_init_io(png, f);
        png_read_info(png, info);
        int type = png_get_color_type(png, info), depth = png_get_bit_depth(png, info);
        *w = (int)png_get_image_width(png, info);
        *h = (int)png_get_image_height(png, info);
        if ((type != PNG_COLOR_TYPE_GRAY && type != PNG_COLOR_TYPE_PALETTE) || depth != 8 ||
            png_get_interlace_type(png, info) != PNG_INTERLACE_NONE || (int64_t)*w * *h > DM_IMAGE_MAX_PIXELS) {
            cli_error("%s: an annotation must be an 8-bit grey or palette PNG, not interlaced, of at most %d pixels",
                      path, DM_IMAGE_MAX_PIXELS);
            ok = 0;
        } else if ((pixels = malloc((size_t)*w * *h))) {
            for (int y = 0; y < *h; y++) png_read_row(png, pixels + (size_t)y * *w, NULL);
        }
    }
    png_destroy_read_struct(&png, &info, NULL);
    fclose(f);
    if (ok && !pixels) cli_error("%s: not a readable PNG (or out of memory)", path);
    return ok ? pixels : NULL;
}

/* Per-class areas summed over the dataset, as mmseg's total_area_*. */
typedef struct seg_totals {
    int classes;
    int64_t *intersect, *pred, *label;
} seg_totals;

/* Add one image: prediction (class indices) against its annotation, as
 * mmseg's intersect_and_union: with reduce_zero_label, annotation 0 is
 * ignored and the others move down by one; IGNORE_INDEX is ignored; the
 * areas count classes 0..K-1. */
static void accumulate(seg_totals *t, const int32_t *pred, const uint8_t *gt, size_t n, int reduce_zero_label)
{
    for (size_t p = 0; p < n; p++) {
        int label = gt[p];
        if (reduce_zero_label) label = label == 0 || label == IGNORE_INDEX ? IGNORE_INDEX : label - 1;
        if (label == IGNORE_INDEX) continue;
        t->pred[pred[p]]++;
        if (label >= t->classes) continue;
        t->label[label]++;
        t->intersect[label] += pred[p] == label;
    }
}

static void print_metrics(const seg_totals *t, const dm_model *m, int per_class, size_t images)
{
    char buf[32], text[4096];
    double iou_sum = 0, acc_sum = 0;
    int64_t hit = 0, all = 0;
    int iou_n = 0, acc_n = 0;
    if (per_class) printf("%-5s %-24s %8s %8s\n", "class", "name", "IoU", "Acc");
    for (int k = 0; k < t->classes; k++) {
        /* union = predicted + labelled - both; a class absent from both is
         * left out of the mean (mmseg's NaN) */
        int64_t uni = t->pred[k] + t->label[k] - t->intersect[k];
        double iou = uni ? (double)t->intersect[k] / uni : -1, acc = t->label[k] ? (double)t->intersect[k] / t->label[k] : -1;
        if (uni) iou_sum += iou, iou_n++;
        if (t->label[k]) acc_sum += acc, acc_n++;
        hit += t->intersect[k];
        all += t->label[k];
        if (per_class) {
            char iou_text[16] = "nan", acc_text[16] = "nan";
            if (uni) snprintf(iou_text, sizeof iou_text, "%.4f", iou);
            if (t->label[k]) snprintf(acc_text, sizeof acc_text, "%.4f", acc);
            printf("%-5d %-24s %8s %8s\n", k, cli_text(cli_class_name(m, k, buf, sizeof buf), text, sizeof text),
                   iou_text, acc_text);
        }
    }
    /* means of nothing (every pixel ignored) are mmseg's nan */
    printf("mIoU=%.4f mAcc=%.4f aAcc=%.4f n=%zu\n", iou_n ? iou_sum / iou_n : NAN, acc_n ? acc_sum / acc_n : NAN,
           all ? (double)hit / all : NAN, images);
}

/* The annotation of an image under dir (ROOT/images/validation):
 * ROOT/annotations/validation/ and the image's path under dir, its
 * extension .png, as mmseg maps them; 0 (printed) when too long. */
static int annotation_path(char *out, size_t size, const char *root, const char *dir, const char *image)
{
    const char *sub = image + strlen(dir) + 1; /* the walk gives dir/... */
    int len;
    cli_path_stem(sub, &len);
    const char *base = strrchr(sub, '/');
    len += base ? (int)(base + 1 - sub) : 0;
    if (snprintf(out, size, "%s/annotations/validation/%.*s.png", root, len, sub) < (int)size) return 1;
    cli_error("%s: the path of its annotation is too long", image);
    return 0;
}

/* Images whose names differ in their extension alone (x.jpg, x.png) would
 * be scored against one annotation: 0 (printed) when two share one. */
static int annotations_distinct(const char *root, const char *dir, const cli_files *files)
{
    char **paths = calloc(files->count + 1, sizeof *paths), ann[PATH_MAX];
    int ok = paths != NULL;
    if (!ok) cli_error("out of memory");
    for (size_t i = 0; ok && i < files->count; i++) {
        if (!annotation_path(ann, sizeof ann, root, dir, files->paths[i])) ok = 0;
        else if (!(paths[i] = strdup(ann))) {
            cli_error("out of memory");
            ok = 0;
        }
    }
    if (ok) qsort(paths, files->count, sizeof *paths, cli_compare_strings);
    for (size_t i = 1; ok && i < files->count; i++)
        if (!strcmp(paths[i], paths[i - 1])) {
            cli_error("%s: the annotation of two images (names that differ in their extension alone)", paths[i]);
            ok = 0;
        }
    for (size_t i = 0; paths && i < files->count; i++) free(paths[i]);
    free(paths);
    return ok;
}

/* Segment one image and add it to the totals; 0 (printed) on failure. */
static int eval_image(cli_segmenter *seg, const char *root, const char *dir, const char *path, int reduce_zero_label,
                      seg_totals *t)
{
    dm_image img;
    char ann[PATH_MAX];
    int ok = 0, gw, gh;
    uint8_t *gt = NULL;
    int32_t *pred = NULL;
    if (dm_image_load_as(path, 3, DM_IMAGE_OPENCV, &img) != DM_OK) {
        cli_error("%s", dm_last_error());
        return 0;
    }
    if (!annotation_path(ann, sizeof ann, root, dir, path) || !(gt = read_label_png(ann, &gw, &gh))) goto done;
    if (gw != img.width || gh != img.height) {
        cli_error("%s: %d x %d, but its annotation is %d x %d", path, img.width, img.height, gw, gh);
        goto done;
    }
    if (!(pred = malloc(sizeof(int32_t) * gw * gh))) {
        cli_error("out of memory");
        goto done;
    }
    if (!cli_segment_image(seg, path, &img, pred)) goto done;
    accumulate(t, pred, gt, (size_t)gw * gh, reduce_zero_label);
    ok = 1;
done:
    free(gt);
    free(pred);
    dm_image_free(&img);
    return ok;
}

int cli_eval_seg(const dm_model *m, dm_backend backend, const char *root, const dm_seg_options *o,
                 int reduce_zero_label, int per_class, int quiet)
{
    int K = dm_model_config(m)->seg_classes, failed = 0;
    if (K == 0) {
        cli_error("--task seg needs a segmentation model (no decode_head.* in it)");
        return 1;
    }
    char dir[PATH_MAX];
    struct stat st;
    cli_files files = {0};
    seg_totals t = {K, calloc((size_t)K, sizeof(int64_t)), calloc((size_t)K, sizeof(int64_t)),
                    calloc((size_t)K, sizeof(int64_t))};
    if (!t.intersect || !t.pred || !t.label) {
        cli_error("out of memory");
        failed = 1;
    } else if (snprintf(dir, sizeof dir, "%s/images/validation", root) >= (int)sizeof dir) {
        cli_error("%s: the path of its images/validation is too long", root);
        failed = 1;
    } else if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        cli_error("%s: no directory images/validation in it (the ADE20K layout)", root);
        failed = 1;
    } else if (!cli_files_add(&files, dir)) {
        failed = 1;
    } else if (files.count == 0) {
        cli_error("%s: no images", dir); /* an mIoU of nothing is no measurement */
        failed = 1;
    } else if (!annotations_distinct(root, dir, &files)) {
        failed = 1;
    }
    cli_segmenter seg = {.model = m, .backend = backend, .transform = dm_mm_transform_ade20k(), .options = *o};
    size_t counted = 0, bad = 0;
    cli_progress progress;
    cli_progress_start(&progress, failed ? 0 : files.count, quiet);
    for (size_t i = 0; !failed && i < files.count; i++) {
        /* a bad image is reported and left out; the others still count */
        if (eval_image(&seg, root, dir, files.paths[i], reduce_zero_label, &t)) counted++;
        else bad++;
        cli_progress_update(&progress, i + 1, bad);
    }
    cli_progress_end(&progress, "evaluated");
    if (!failed && counted == 0) {
        cli_error("%s: no image could be evaluated", dir);
        failed = 1;
    }
    if (!failed) print_metrics(&t, m, per_class, counted);
    cli_segmenter_free(&seg);
    cli_files_free(&files);
    free(t.intersect), free(t.pred), free(t.label);
    return failed || bad ? 1 : 0;
}
