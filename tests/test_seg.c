/* test_seg.c - semantic segmentation against mmsegmentation 0.30: the
 * UperNet micro model from its mmseg checkpoint (upernet_micro.pth) in
 * whole and sliding-window mode, the real single-scale ADE20K test
 * (transform, slide 512/341, resize to the photo) and multi-scale + flip,
 * each against the float64 references of upernet_io.safetensors. */
#include "testutil.h"

#include <dirent.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "damamba.h"
#include "internal_api.h"
#include "safetensors.h"
#include "model_file.h"

#define K 11 /* the micro model's classes */

/* The backend the suite runs on: the CPU, or CUDA when DM_TEST_BACKEND is
 * "cuda". */
static dm_backend backend = DM_BACKEND_CPU;

static dm_workspace *make_workspace(const dm_model *m, int h, int w)
{
    dm_workspace *ws;
    ck_assert_msg(dm_workspace_create_on(m, backend, 1, h, w, &ws) == DM_OK, "%s", dm_last_error());
    return ws;
}

static dm_model *load_micro(void)
{
    dm_model *m;
    ck_assert_msg(dm_model_load(test_path("upernet_micro.pth"), NULL, &m) == DM_OK, "%s", dm_last_error());
    return m;
}

/* An I64 tensor copied out (the file's data need not be 8-byte aligned);
 * free it. */
static int64_t *test_i64(const dm_tensor_file *f, const char *name, size_t *count)
{
    const dm_tensor *t = dm_tensor_file_find(f, name);
    ck_assert_msg(t && t->dtype == DM_I64, "golden tensor %s missing or not I64", name);
    *count = (size_t)t->numel;
    int64_t *copy = malloc(t->nbytes);
    ck_assert_ptr_nonnull(copy);
    memcpy(copy, t->data, t->nbytes);
    return copy;
}

/* Labels equal the expected ones wherever the expected scores' top two
 * (scores: K planes of `plane` values) are at least 1e-5 apart. */
static void expect_labels(const char *what, const int32_t *got, const dm_tensor_file *io, const char *labels_name,
                          const float *scores, size_t plane)
{
    size_t n;
    int64_t *want = test_i64(io, labels_name, &n);
    ck_assert_uint_eq(n, plane);
    size_t close = 0, wrong = 0;
    for (size_t p = 0; p < plane; p++) {
        float first = -INFINITY, second = -INFINITY;
        for (int k = 0; k < K; k++) {
            float v = scores[k * plane + p];
            if (v > first) second = first, first = v;
            else if (v > second) second = v;
        }
        if (first - second < 1e-5f) close++;
        else wrong += got[p] != want[p];
    }
    free(want);
    printf("%-28s %zu of %zu labels differ (%zu near-ties left out)\n", what, wrong, plane, close);
    ck_assert_uint_eq(wrong, 0);
    ck_assert_uint_lt(close, plane / 100);
}

static void expect_close(const char *what, const float *got, const dm_tensor_file *io, const char *name, size_t n)
{
    size_t count;
    const float *want = test_f32(io, name, &count);
    ck_assert_uint_eq(count, n);
    ck_assert_double_le(test_rel_err(what, got, want, n), GOLDEN_TOL);
}

static int starts_with(const char *s, const char *prefix) { return strncmp(s, prefix, strlen(prefix)) == 0; }

START_TEST(checkpoint_reads)
{
    dm_model *m = load_micro();
    const dm_config *c = dm_model_config(m);
    ck_assert_int_eq(c->seg_classes, K);
    ck_assert_int_eq(c->seg_channels, 64);
    ck_assert_int_eq(c->num_classes, 0);
    ck_assert_int_eq(c->dims[3], 128);
    const char *classes = dm_model_metadata(m, "classes");
    ck_assert_ptr_nonnull(classes);
    /* mmseg's ADE20K names keep their quirks, such as the space in 'bed ' */
    ck_assert_msg(starts_with(classes, "[\"wall\", \"building\", "), "%s", classes);
    ck_assert_ptr_nonnull(strstr(classes, "\"bed \", \"windowpane\""));
    const char *palette = dm_model_metadata(m, "palette");
    ck_assert_ptr_nonnull(palette);
    ck_assert_msg(starts_with(palette, "[[120, 120, 120], [180, 120, 120], "), "%s", palette);
    dm_model_free(m);
}
END_TEST

START_TEST(whole_matches_mmseg)
{
    dm_model *m = load_micro();
    dm_tensor_file io;
    test_open("upernet_io.safetensors", &io);
    const int H = 64, W = 96;
    const float *input = test_f32(&io, "input", NULL);
    float *decode = malloc(sizeof(float) * K * 16 * 24), *logits = malloc(sizeof(float) * K * H * W);
    int32_t *pred = malloc(sizeof(int32_t) * H * W);
    dm_workspace *ws = make_workspace(m, H, W);
    dm_seg_options o = {.mode = DM_SEG_WHOLE};
    dm_seg_outputs out = {decode, logits, pred};
    ck_assert_msg(dm_segment(m, ws, input, 1, H, W, &o, &out) == DM_OK, "%s", dm_last_error());
    expect_close("whole decode_logits", decode, &io, "decode_logits.expected", K * 16 * 24);
    expect_close("whole seg_logits", logits, &io, "seg_logits.expected", K * H * W);
    expect_labels("whole seg_pred", pred, &io, "seg_pred", test_f32(&io, "seg_logits.expected", NULL), H * W);
    dm_workspace_free(ws);
    free(decode), free(logits), free(pred);
    dm_tensor_file_close(&io);
    dm_model_free(m);
}
END_TEST

START_TEST(slide_matches_mmseg)
{
    dm_model *m = load_micro();
    dm_tensor_file io;
    test_open("upernet_io.safetensors", &io);
    const int H = 96, W = 150;
    float *logits = malloc(sizeof(float) * K * H * W);
    int32_t *pred = malloc(sizeof(int32_t) * H * W);
    dm_workspace *ws = make_workspace(m, 64, 64);
    dm_seg_options o = {.mode = DM_SEG_SLIDE, .crop_h = 64, .crop_w = 64, .stride_h = 43, .stride_w = 43};
    dm_seg_outputs out = {NULL, logits, pred};
    ck_assert_msg(dm_segment(m, ws, test_f32(&io, "slide.input", NULL), 1, H, W, &o, &out) == DM_OK, "%s",
                  dm_last_error());
    expect_close("slide seg_logits", logits, &io, "slide.seg_logits.expected", K * H * W);
    expect_labels("slide seg_pred", pred, &io, "slide.seg_pred", test_f32(&io, "slide.seg_logits.expected", NULL),
                  H * W);
    /* decode logits belong to one window each: refused */
    out.decode_logits = logits;
    ck_assert_int_eq(dm_segment(m, ws, test_f32(&io, "slide.input", NULL), 1, H, W, &o, &out), DM_ERR_ARGUMENT);
    dm_workspace_free(ws);
    free(logits), free(pred);
    dm_tensor_file_close(&io);
    dm_model_free(m);
}
END_TEST

/* From the photo: mmseg's ADE20K single-scale test (_i = 0: keep-ratio
 * resize into (2048, 512), slide 512 / 341) and its multi-scale + flip test
 * (_i = 1: img_scale reduced to (256, 64), whole mode). */
START_TEST(image_matches_mmseg)
{
    dm_model *m = load_micro();
    dm_tensor_file io;
    test_open("upernet_io.safetensors", &io);
    dm_image img;
    ck_assert_msg(dm_image_load(test_path("seg_small.png"), 3, &img) == DM_OK, "%s", dm_last_error());
    ck_assert_int_eq(img.width, 101);
    ck_assert_int_eq(img.height, 75);
    size_t plane = (size_t)img.width * img.height;
    float *probs = malloc(sizeof(float) * K * plane);
    int32_t *labels = malloc(sizeof(int32_t) * plane);
    dm_mm_transform t = dm_mm_transform_ade20k();
    dm_seg_options o = dm_seg_options_ade20k();
    if (_i == 1) {
        t.scale_long = 256;
        t.scale_short = 64;
        o = (dm_seg_options){.mode = DM_SEG_WHOLE, .multi_scale_flip = 1};
    }
    const char *case_name = _i == 0 ? "ss" : "ms";
    int wh, ww;
    ck_assert(dm_segment_image_size(&t, &o, img.width, img.height, &wh, &ww) == DM_OK);
    ck_assert_int_eq(wh, _i == 0 ? 512 : 112); /* the window; ratio 1.75's 112 x 151 */
    ck_assert_int_eq(ww, _i == 0 ? 512 : 151);
    dm_workspace *ws = make_workspace(m, wh, ww);
    ck_assert_msg(dm_segment_image(m, ws, &img, &t, &o, probs, labels) == DM_OK, "%s", dm_last_error());
    dm_workspace_free(ws);
    char probs_name[64], labels_name[64], what[64];
    snprintf(probs_name, sizeof probs_name, "%s.probs.expected", case_name);
    snprintf(labels_name, sizeof labels_name, "%s.seg_pred", case_name);
    snprintf(what, sizeof what, "%s probs", case_name);
    expect_close(what, probs, &io, probs_name, K * plane);
    snprintf(what, sizeof what, "%s seg_pred", case_name);
    expect_labels(what, labels, &io, labels_name, test_f32(&io, probs_name, NULL), plane);
    free(probs), free(labels);
    dm_image_free(&img);
    dm_tensor_file_close(&io);
    dm_model_free(m);
}
END_TEST

/* The micro model's weights rewritten as safetensors under mmseg's names,
 * with the given metadata only, and with conv_seg cut to its first
 * `classes` output channels if classes > 0, loaded. */
static dm_status load_cut_as_safetensors(const dm_meta *meta, size_t metas, int classes, dm_model **out)
{
    dm_tensor_file pth;
    ck_assert(dm_model_file_open(test_path("upernet_micro.pth"), 0, &pth) == DM_OK);
    for (size_t i = 0; i < pth.count && classes > 0; i++) {
        dm_tensor *t = &pth.tensors[i];
        if (strcmp(t->name, "decode_head.conv_seg.weight") && strcmp(t->name, "decode_head.conv_seg.bias")) continue;
        t->nbytes = t->nbytes / (size_t)t->shape[0] * (size_t)classes; /* the first rows */
        t->numel = t->numel / t->shape[0] * classes;
        t->shape[0] = classes;
    }
    char path[] = "/tmp/dm_seg_XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    close(fd);
    ck_assert_msg(dm_safetensors_write(path, pth.tensors, pth.count, meta, metas) == DM_OK, "%s", dm_last_error());
    dm_tensor_file_close(&pth);
    dm_status st = dm_model_load(path, NULL, out);
    unlink(path);
    return st;
}

static dm_status load_as_safetensors(const dm_meta *meta, size_t metas, dm_model **out)
{
    return load_cut_as_safetensors(meta, metas, 0, out);
}

/* A head of one output channel is mmseg's binary mode, which labels by a
 * sigmoid and a threshold: refused, where the largest of one channel
 * labelled every pixel 0.  Two channels are an ordinary head. */
START_TEST(one_channel_head_refused)
{
    dm_model *m = (dm_model *)&m;
    ck_assert_int_eq(load_cut_as_safetensors(NULL, 0, 1, &m), DM_ERR_MODEL);
    ck_assert_ptr_null(m);
    ck_assert_msg(strstr(dm_last_error(), "the UperNet head has one output channel (mmseg's binary mode"), "%s",
                  dm_last_error());
    ck_assert_msg(load_cut_as_safetensors(NULL, 0, 2, &m) == DM_OK, "%s", dm_last_error());
    ck_assert_int_eq(dm_model_config(m)->seg_classes, 2);
    dm_model_free(m);
}
END_TEST

/* The same weights as safetensors under mmseg's names give the same logits. */
START_TEST(safetensors_checkpoint)
{
    dm_model *a = load_micro(), *b;
    ck_assert_msg(load_as_safetensors(NULL, 0, &b) == DM_OK, "%s", dm_last_error());
    ck_assert_int_eq(dm_model_config(b)->seg_classes, K);
    ck_assert_int_eq(dm_model_config(b)->num_params, dm_model_config(a)->num_params);
    dm_tensor_file io;
    test_open("upernet_io.safetensors", &io);
    float got[K * 16 * 24], want[K * 16 * 24];
    dm_seg_options o = {.mode = DM_SEG_WHOLE};
    dm_workspace *wa, *wb;
    ck_assert(dm_workspace_create(a, 1, 64, 96, &wa) == DM_OK);
    ck_assert(dm_workspace_create(b, 1, 64, 96, &wb) == DM_OK);
    ck_assert(dm_segment(a, wa, test_f32(&io, "input", NULL), 1, 64, 96, &o, &(dm_seg_outputs){.decode_logits = want}) == DM_OK);
    ck_assert(dm_segment(b, wb, test_f32(&io, "input", NULL), 1, 64, 96, &o, &(dm_seg_outputs){.decode_logits = got}) == DM_OK);
    ck_assert_mem_eq(got, want, sizeof got);
    dm_workspace_free(wa);
    dm_workspace_free(wb);
    dm_tensor_file_close(&io);
    dm_model_free(a);
    dm_model_free(b);
}
END_TEST

/* A palette is K colours of three numbers from 0 to 255; anything else
 * fails the load, naming it. */
START_TEST(palettes_read_or_refused)
{
    static const char *const last[] = {"[1, 2, 3]", "[1e10, 0, 0]", "[-1, 0, 0]", "[256, 0, 0]", "[\"a\", 0, 0]",
                                       "[1, 2]", "[1, 2, 3, 4]"};
    for (size_t i = 0; i < sizeof last / sizeof last[0]; i++) {
        char palette[512] = "[";
        for (int k = 0; k < K - 1; k++) snprintf(palette + strlen(palette), 32, "[%d, 0, 255], ", k);
        snprintf(palette + strlen(palette), 64, "%s]", last[i]);
        dm_model *m = (dm_model *)&m; /* a failed load sets it to NULL */
        dm_status st = load_as_safetensors(&(dm_meta){.key = "palette", .value = palette}, 1, &m);
        if (i == 0) {
            ck_assert_msg(st == DM_OK, "%s", dm_last_error());
            const uint8_t *colours = dm_model_palette(m);
            ck_assert(colours[3] == 1 && colours[5] == 255 && colours[3 * (K - 1) + 2] == 3);
            dm_model_free(m);
        } else {
            ck_assert_msg(st == DM_ERR_MODEL, "%s accepted", last[i]);
            ck_assert_ptr_null(m);
            ck_assert_msg(strstr(dm_last_error(), "metadata 'palette' (a .pth's meta PALETTE) is not a JSON list of 11"),
                          "%s", dm_last_error());
        }
    }
    /* Names and colours for one class too few (an mmseg checkpoint of
     * another dataset's meta): the names are what the message blames. */
    char names[512] = "[", colours[512] = "[";
    for (int k = 0; k < K - 1; k++) {
        snprintf(names + strlen(names), 32, "%s\"c%d\"", k ? ", " : "", k);
        snprintf(colours + strlen(colours), 32, "%s[%d, 0, 0]", k ? ", " : "", k);
    }
    strcat(names, "]"), strcat(colours, "]");
    dm_meta both[] = {{.key = "palette", .value = colours}, {.key = "classes", .value = names}};
    dm_model *m = NULL;
    ck_assert_int_eq(load_as_safetensors(both, 2, &m), DM_ERR_MODEL);
    ck_assert_msg(strstr(dm_last_error(), "metadata 'classes' (a .pth's meta CLASSES) is not a JSON list of 11 names"),
                  "%s", dm_last_error());
}
END_TEST

START_TEST(bad_requests)
{
    dm_model *m = load_micro(), *classifier;
    ck_assert(dm_model_synthetic('F', 3, 10, 1, &classifier) == DM_OK);
    float input[3 * 32 * 32] = {0}, logits[K * 32 * 32];
    dm_workspace *ws, *cws;
    ck_assert(dm_workspace_create(m, 1, 32, 32, &ws) == DM_OK);
    ck_assert(dm_workspace_create(classifier, 1, 32, 32, &cws) == DM_OK);
    dm_seg_outputs out = {.seg_logits = logits};
    dm_seg_options o = {.mode = DM_SEG_WHOLE};
    ck_assert_int_eq(dm_segment(classifier, cws, input, 1, 32, 32, &o, &out), DM_ERR_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(dm_last_error(), "no segmentation head"));
    ck_assert_int_eq(dm_segment(m, ws, input, 1, 64, 32, &o, &out), DM_ERR_ARGUMENT); /* larger than ws */
    ck_assert_ptr_nonnull(strstr(dm_last_error(), "exceeds the workspace"));
    o = (dm_seg_options){.mode = DM_SEG_SLIDE, .crop_h = 16, .crop_w = 16};
    ck_assert_int_eq(dm_segment(m, ws, input, 1, 32, 32, &o, &out), DM_ERR_ARGUMENT); /* stride 0 */
    ck_assert_ptr_nonnull(strstr(dm_last_error(), "slide mode needs a crop and a stride of at least 1"));
    o = (dm_seg_options){.mode = DM_SEG_SLIDE, .crop_h = 0, .crop_w = 8, .stride_h = 8, .stride_w = 8};
    ck_assert_int_eq(dm_segment(m, ws, input, 1, 32, 32, &o, &out), DM_ERR_ARGUMENT); /* named, not an empty batch */
    ck_assert_ptr_nonnull(strstr(dm_last_error(), "slide mode needs a crop and a stride of at least 1"));
    o = (dm_seg_options){.mode = DM_SEG_SLIDE, .crop_h = 16, .crop_w = 16};
    o.multi_scale_flip = 1;
    o.stride_h = o.stride_w = 8;
    ck_assert_int_eq(dm_segment(m, ws, input, 1, 32, 32, &o, &out), DM_ERR_ARGUMENT);
    /* a padding transform (mmdet's COCO one) is refused: its tensor is not
     * the size the segmentation runs on (it was written past the input) */
    uint8_t pixels[30 * 40 * 3] = {0};
    dm_image image = {.width = 40, .height = 30, .channels = 3, .pixels = pixels};
    dm_mm_transform coco = dm_mm_transform_coco();
    int32_t labels[30 * 40];
    int wh = -7, ww = -7;
    o = (dm_seg_options){.mode = DM_SEG_WHOLE};
    ck_assert_int_eq(dm_segment_image_size(&coco, &o, 40, 30, &wh, &ww), DM_ERR_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(dm_last_error(), "without padding (pad_to 0)"));
    /* the size of what dm_segment_image refuses is refused too, and a
     * refusal leaves the sizes as they were */
    dm_mm_transform ade = dm_mm_transform_ade20k();
    ck_assert_int_eq(dm_segment_image_size(&ade, &o, 0, 30, &wh, &ww), DM_ERR_ARGUMENT);
    const dm_seg_options refused[2] = {{.mode = DM_SEG_SLIDE, .crop_h = -5, .crop_w = 0, .stride_h = 4, .stride_w = 4},
                                       {.mode = (dm_seg_mode)7}};
    for (int i = 0; i < 2; i++) {
        ck_assert_int_eq(dm_segment_image_size(&ade, &refused[i], 40, 30, &wh, &ww), DM_ERR_ARGUMENT);
        ck_assert_int_eq(dm_segment_image(m, ws, &image, &ade, &refused[i], NULL, labels), DM_ERR_ARGUMENT);
    }
    ck_assert(wh == -7 && ww == -7);
    coco.scale_long = 40, coco.scale_short = 32;
    ck_assert_int_eq(dm_segment_image(m, ws, &image, &coco, &o, NULL, labels), DM_ERR_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(dm_last_error(), "pads to multiples of 32"));
    dm_workspace_free(ws);
    dm_workspace_free(cws);
    dm_model_free(classifier);
    dm_model_free(m);
}
END_TEST

/* Strides longer than the crop: refused where they leave pixels between
 * windows (mmseg asserts every pixel is covered), else the same windows as
 * the stride that places them, even a stride whose window ends would
 * overflow an int. */
START_TEST(slide_strides)
{
    dm_model *m = load_micro();
    enum { H = 32, W = 32 };
    float *input = malloc(sizeof(float) * 3 * H * W), *want = malloc(sizeof(float) * K * H * W),
          *got = malloc(sizeof(float) * K * H * W);
    for (int i = 0; i < 3 * H * W; i++) input[i] = (float)((i * 37) % 101) / 50.0f - 1.0f;
    dm_workspace *ws = make_workspace(m, 16, 16);
    dm_seg_outputs out = {.seg_logits = want};
    dm_seg_options o = {.mode = DM_SEG_SLIDE, .crop_h = 16, .crop_w = 16, .stride_h = 16, .stride_w = 16};
    ck_assert_msg(dm_segment(m, ws, input, 1, H, W, &o, &out) == DM_OK, "%s", dm_last_error());
    out.seg_logits = got;
    const int same_windows[] = {17, 1000, 2147483647};
    for (int i = 0; i < 3; i++) {
        o.stride_h = o.stride_w = same_windows[i];
        ck_assert_msg(dm_segment(m, ws, input, 1, H, W, &o, &out) == DM_OK, "%s", dm_last_error());
        ck_assert_mem_eq(got, want, sizeof(float) * K * H * W);
    }
    /* 8 x 8 windows 12 apart: rows 8 to 12 and 20 to 24 are in none */
    dm_workspace *small = make_workspace(m, 8, 8);
    o = (dm_seg_options){.mode = DM_SEG_SLIDE, .crop_h = 8, .crop_w = 8, .stride_h = 8, .stride_w = 12};
    ck_assert_int_eq(dm_segment(m, small, input, 1, H, W, &o, &out), DM_ERR_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(dm_last_error(), "uncovered"));
    o.stride_w = 8;
    ck_assert_msg(dm_segment(m, small, input, 1, H, W, &o, &out) == DM_OK, "%s", dm_last_error());
    for (int i = 0; i < K * H * W; i++) ck_assert(isfinite(got[i]));
    dm_workspace_free(small);
    dm_workspace_free(ws);
    free(input), free(want), free(got);
    dm_model_free(m);
}
END_TEST

/* A NaN in the input reaches the logits, as it does through mmseg's
 * network (its ReLUs keep NaN): the heads' ReLUs made it 0, and a NaN
 * pixel gave confident, finite logits everywhere. */
START_TEST(nan_input_stays_nan)
{
    dm_model *m = load_micro();
    dm_tensor_file io;
    test_open("upernet_io.safetensors", &io);
    const int H = 64, W = 96;
    float *input = malloc(sizeof(float) * 3 * H * W), *logits = malloc(sizeof(float) * K * H * W);
    memcpy(input, test_f32(&io, "input", NULL), sizeof(float) * 3 * H * W);
    input[(size_t)H * W / 2] = NAN;
    dm_workspace *ws = make_workspace(m, H, W);
    dm_seg_options o = {.mode = DM_SEG_WHOLE};
    ck_assert_msg(dm_segment(m, ws, input, 1, H, W, &o, &(dm_seg_outputs){NULL, logits, NULL}) == DM_OK, "%s",
                  dm_last_error());
    size_t nans = 0;
    for (size_t i = 0; i < (size_t)K * H * W; i++) nans += isnan(logits[i]);
    printf("one NaN input pixel: %zu of %d logits NaN\n", nans, K * H * W);
    ck_assert_uint_gt(nans, 0);
    dm_workspace_free(ws);
    free(input), free(logits);
    dm_tensor_file_close(&io);
    dm_model_free(m);
}
END_TEST

/* Threads of this process (entries of /proc/self/task). */
static int thread_count(void)
{
    DIR *d = opendir("/proc/self/task");
    ck_assert_ptr_nonnull(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

/* A child forked after segmentations on three threads segments on a
 * workspace of its own, on three threads, to the same labels. */
static void expect_forked_child_segments(const dm_model *m, const float *input, int H, int W,
                                         const dm_seg_options *o, const int32_t *pred, int32_t *again)
{
    pid_t child = fork();
    ck_assert_int_ge(child, 0);
    if (child == 0) {
        alarm(120);
        dm_workspace *own;
        int ok = dm_workspace_create(m, 1, H, W, &own) == DM_OK && dm_workspace_set_threads(own, 3) == DM_OK &&
                 dm_segment(m, own, input, 1, H, W, o, &(dm_seg_outputs){NULL, NULL, again}) == DM_OK &&
                 memcmp(pred, again, sizeof(int32_t) * H * W) == 0;
        _exit(ok ? 0 : 1);
    }
    int status;
    ck_assert_int_eq(waitpid(child, &status, 0), child);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the forked child %s %d",
                  WIFSIGNALED(status) ? "was killed by signal" : "exited with", WIFSIGNALED(status) ? WTERMSIG(status)
                                                                                                    : WEXITSTATUS(status));
}

/* The host-side loops of segmentation run on the workspace's threads: on
 * one thread, segmentation leaves the process no thread it did not have,
 * three threads give the same logits, bit for bit, and a child forked
 * after a segmentation on three threads segments too.
 * They ran on OpenMP's
 * threads, as many as dm_threads() said, which stayed after every object
 * was freed and which libgomp does not carry across fork(): the child
 * waited for them forever. */
START_TEST(host_work_on_the_workspace_threads)
{
    if (backend != DM_BACKEND_CPU) return; /* the CUDA runtime does not survive a fork */
    int alone = thread_count(); /* 1, or more under an emulator (qemu's own) */
    dm_model *m = load_micro();
    dm_tensor_file io;
    test_open("upernet_io.safetensors", &io);
    const int H = 64, W = 96;
    const float *input = test_f32(&io, "input", NULL);
    int32_t *pred = malloc(sizeof(int32_t) * H * W), *again = malloc(sizeof(int32_t) * H * W);
    size_t logits = (size_t)K * H * W;
    float *one = malloc(sizeof(float) * logits), *three = malloc(sizeof(float) * logits);
    dm_workspace *ws = make_workspace(m, H, W);
    dm_seg_options o = {.mode = DM_SEG_WHOLE};
    ck_assert(dm_workspace_set_threads(ws, 1) == DM_OK);
    ck_assert_msg(dm_segment(m, ws, input, 1, H, W, &o, &(dm_seg_outputs){NULL, one, pred}) == DM_OK, "%s",
                  dm_last_error());
    ck_assert_int_eq(thread_count(), alone);
    ck_assert(dm_workspace_set_threads(ws, 3) == DM_OK);
    ck_assert(dm_segment(m, ws, input, 1, H, W, &o, &(dm_seg_outputs){NULL, three, again}) == DM_OK);
    ck_assert(memcmp(pred, again, sizeof(int32_t) * H * W) == 0);
    ck_assert_msg(memcmp(one, three, sizeof(float) * logits) == 0, "the logits on 3 threads differ from 1's");
    /* the same through a profiled table (bench --ops), which forwards the host's loops */
    ck_assert(dm_workspace_profile(ws) == DM_OK);
    memset(again, 0xff, sizeof(int32_t) * H * W);
    ck_assert(dm_segment(m, ws, input, 1, H, W, &o, &(dm_seg_outputs){NULL, NULL, again}) == DM_OK);
    ck_assert(memcmp(pred, again, sizeof(int32_t) * H * W) == 0);
    if (getenv("DM_TEST_NO_FORK")) /* an emulator that cannot fork threads */
        printf("fork not tested under %s\n", getenv("DM_TEST_NO_FORK"));
    else
        expect_forked_child_segments(m, input, H, W, &o, pred, again);
    dm_workspace_free(ws);
    free(pred), free(again), free(one), free(three);
    dm_tensor_file_close(&io);
    dm_model_free(m);
}
END_TEST

int main(void)
{
    if (!test_isa_runs()) return 77; /* a DAMAMBA_ISA this machine lacks */
    const char *on = getenv("DM_TEST_BACKEND");
    if (on && !strcmp(on, "cuda")) {
        int missing = test_cuda_missing();
        if (missing) return missing;
        backend = DM_BACKEND_CUDA;
    }
    Suite *s = suite_create("seg");
    TCase *tc = tcase_create("seg");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, checkpoint_reads);
    tcase_add_test(tc, whole_matches_mmseg);
    tcase_add_test(tc, slide_matches_mmseg);
    tcase_add_loop_test(tc, image_matches_mmseg, 0, 2);
    tcase_add_test(tc, safetensors_checkpoint);
    tcase_add_test(tc, palettes_read_or_refused);
    tcase_add_test(tc, one_channel_head_refused);
    tcase_add_test(tc, bad_requests);
    tcase_add_test(tc, slide_strides);
    tcase_add_test(tc, host_work_on_the_workspace_threads);
    tcase_add_test(tc, nan_input_stays_nan);
    suite_add_tcase(s, tc);
    /* the CUDA runtime does not survive a fork once initialized */
    return backend == DM_BACKEND_CUDA ? test_run_in_process(s) : test_run(s);
}
