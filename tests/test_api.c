/* test_api.c - the library's surface: versions, structs that carry their
 * size, the built-in model and class names, softmax and top-k, the
 * precision of a workspace. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"

static const char *const fashion_mnist[10] = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                              "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"};

START_TEST(version_matches_header)
{
    ck_assert_int_eq(dm_version(), DM_VERSION);
    ck_assert_int_eq(DM_VERSION, DM_VERSION_MAJOR * 10000 + DM_VERSION_MINOR * 100 + DM_VERSION_PATCH);
    char text[32];
    snprintf(text, sizeof text, "%d.%d.%d", DM_VERSION_MAJOR, DM_VERSION_MINOR, DM_VERSION_PATCH);
    ck_assert_str_eq(dm_version_string(), text);
    ck_assert_str_eq(DM_VERSION_STRING, text);
}
END_TEST

/* Logits of the micro model for one fixed 40 x 40 image. */
static void micro_logits(const dm_model *m, const dm_outputs *out, dm_status want)
{
    static float x[3 * 40 * 40];
    for (int i = 0; i < 3 * 40 * 40; i++) x[i] = (float)((i * 37) % 101) / 50.0f - 1.0f;
    dm_workspace *ws;
    ck_assert_int_eq(dm_workspace_create(m, 1, 40, 40, &ws), DM_OK);
    ck_assert_int_eq(dm_forward(m, ws, x, 1, 40, 40, out), want);
    dm_workspace_free(ws);
}

START_TEST(struct_without_size_is_refused)
{
    dm_model *m = (dm_model *)&m;
    dm_load_options opts = {.use_ema = 0};
    ck_assert_int_eq(dm_model_load(test_path("micro.safetensors"), &opts, &m), DM_ERR_ARGUMENT);
    ck_assert_ptr_null(m);
    ck_assert_ptr_nonnull(strstr(dm_last_error(), "sizeof(dm_load_options)"));

    ck_assert_int_eq(dm_model_load(test_path("micro.safetensors"), NULL, &m), DM_OK);
    float logits[10];
    dm_outputs out = {.logits = logits};
    micro_logits(m, &out, DM_ERR_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(dm_last_error(), "sizeof(dm_outputs)"));
    dm_model_free(m);

    dm_preprocess p = {.crop = 224};
    int h, w;
    ck_assert_int_eq(dm_preprocess_default(NULL, &p), DM_ERR_ARGUMENT);
    ck_assert_int_eq(dm_preprocess_output_size(&p, 300, 300, &h, &w), DM_ERR_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(dm_last_error(), "sizeof(dm_preprocess)"));
    /* a missing out pointer is named by the function it was given to */
    ck_assert_int_eq(dm_model_load_default(NULL), DM_ERR_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(dm_last_error(), "dm_model_load_default: out is required"));
}
END_TEST

/* A program built against a later header passes larger structs: the library
 * reads and writes only the fields it knows. */
START_TEST(larger_structs_from_newer_callers)
{
    dm_model *m;
    ck_assert_int_eq(dm_model_load(test_path("micro.safetensors"), NULL, &m), DM_OK);
    float a[10], b[10];
    struct {
        dm_outputs known;
        double future[4];
    } newer;
    memset(&newer, 0xab, sizeof newer);
    newer.known = (dm_outputs){.size = sizeof newer, .logits = a};
    memset(newer.future, 0xab, sizeof newer.future);
    dm_outputs plain = DM_OUTPUTS_INIT;
    plain.logits = b;
    micro_logits(m, &newer.known, DM_OK);
    micro_logits(m, &plain, DM_OK);
    ck_assert_mem_eq(a, b, sizeof a);
    dm_model_free(m);

    struct {
        dm_preprocess known;
        unsigned char future[16];
    } prep;
    memset(&prep, 0x5a, sizeof prep);
    prep.known.size = sizeof prep;
    ck_assert_int_eq(dm_preprocess_default(NULL, &prep.known), DM_OK);
    ck_assert_uint_eq(prep.known.size, sizeof prep);
    ck_assert_int_eq(prep.known.crop, 224);
    for (size_t i = 0; i < sizeof prep.future; i++) ck_assert_uint_eq(prep.future[i], 0x5a);
}
END_TEST

START_TEST(default_model_is_the_data_file)
{
    dm_model *builtin, *file;
    ck_assert_msg(dm_model_load_default(&builtin) == DM_OK, "%s", dm_last_error());
    ck_assert_msg(dm_model_load(getenv("DM_DEFAULT_MODEL"), NULL, &file) == DM_OK, "%s", dm_last_error());
    const dm_config *c = dm_model_config(builtin);
    ck_assert_int_eq(c->in_chans, 1);
    ck_assert_int_eq(c->num_classes, 10);
    ck_assert_int_eq(c->num_params, dm_model_config(file)->num_params);
    const char *const *names = dm_model_class_names(builtin);
    ck_assert_ptr_nonnull(names);
    for (int i = 0; i < 10; i++) ck_assert_str_eq(names[i], fashion_mnist[i]);

    float x[28 * 28], a[10], b[10];
    for (int i = 0; i < 28 * 28; i++) x[i] = (float)((i * 13) % 29) / 10.0f - 1.0f;
    dm_workspace *wa, *wb; /* a workspace serves the model it was made for */
    ck_assert_int_eq(dm_workspace_create(builtin, 1, 28, 28, &wa), DM_OK);
    ck_assert_int_eq(dm_workspace_create(file, 1, 28, 28, &wb), DM_OK);
    dm_outputs oa = {.size = sizeof oa, .logits = a}, ob = {.size = sizeof ob, .logits = b};
    ck_assert_int_eq(dm_forward(builtin, wa, x, 1, 28, 28, &oa), DM_OK);
    ck_assert_int_eq(dm_forward(file, wb, x, 1, 28, 28, &ob), DM_OK);
    ck_assert_mem_eq(a, b, sizeof a);
    dm_workspace_free(wa);
    dm_workspace_free(wb);
    dm_model_free(builtin);
    dm_model_free(file);
}
END_TEST

START_TEST(imagenet_class_names)
{
    const char *const *names = dm_imagenet_class_names();
    ck_assert_str_eq(names[0], "tench");
    ck_assert_str_eq(names[1], "goldfish");
    ck_assert_str_eq(names[999], "toilet tissue");
    for (int i = 0; i < DM_IMAGENET_CLASSES; i++) ck_assert_msg(names[i] && *names[i] && !strchr(names[i], '\n'), "%d", i);

    dm_model *m;
    ck_assert_int_eq(dm_model_synthetic('F', 3, 1000, 1, &m), DM_OK);
    ck_assert_ptr_eq(dm_model_class_names(m), names);
    dm_model_free(m);
    ck_assert_int_eq(dm_model_synthetic('F', 3, 10, 1, &m), DM_OK);
    ck_assert_ptr_null(dm_model_class_names(m));
    dm_model_free(m);
}
END_TEST

/* micro.safetensors rewritten with a 'classes' metadata entry. */
static dm_status load_with_classes(const char *classes, dm_model **out)
{
    dm_tensor_file f;
    test_open("micro.safetensors", &f);
    char path[] = "/tmp/dm_test_classes_XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    close(fd);
    dm_meta meta = {.key = "classes", .value = (char *)classes};
    ck_assert_int_eq(dm_safetensors_write(path, f.tensors, f.count, &meta, 1), DM_OK);
    dm_tensor_file_close(&f);
    dm_status st = dm_model_load(path, NULL, out);
    remove(path);
    return st;
}

START_TEST(model_class_names_from_metadata)
{
    dm_model *m;
    ck_assert_msg(load_with_classes("[\"a\", \"b\", \"c\", \"d\", \"e\", \"f\", \"g\", \"h\", \"i\", \"caf\\u00e9\"]", &m) ==
                      DM_OK, "%s", dm_last_error());
    const char *const *names = dm_model_class_names(m);
    ck_assert_str_eq(names[0], "a");
    ck_assert_str_eq(names[9], "caf\xc3\xa9");
    dm_model_free(m);

    static const char *const bad[] = {"[\"a\", \"b\"]", "{\"a\": 1}", "[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]", "[\"a\""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        m = (dm_model *)&m;
        ck_assert_int_eq(load_with_classes(bad[i], &m), DM_ERR_MODEL);
        ck_assert_ptr_null(m);
        ck_assert_ptr_nonnull(strstr(dm_last_error(), "classes"));
    }
}
END_TEST

START_TEST(softmax_values)
{
    float logits[3] = {0, logf(2), logf(3)}, probs[3];
    ck_assert_int_eq(dm_softmax(logits, 3, probs), DM_OK);
    ck_assert_float_eq_tol(probs[0], 1.0f / 6, 1e-7f);
    ck_assert_float_eq_tol(probs[1], 2.0f / 6, 1e-7f);
    ck_assert_float_eq_tol(probs[2], 3.0f / 6, 1e-7f);
    /* In place, and no overflow for large logits. */
    float big[2] = {1000, 1000};
    ck_assert_int_eq(dm_softmax(big, 2, big), DM_OK);
    ck_assert_float_eq(big[0], 0.5f);
    ck_assert_float_eq(big[1], 0.5f);
    ck_assert_int_eq(dm_softmax(logits, 0, probs), DM_ERR_ARGUMENT);
    ck_assert_int_eq(dm_softmax(NULL, 3, probs), DM_ERR_ARGUMENT);
}
END_TEST

/* Reference order: higher score first, then lower index. */
static const float *ref_scores;
static int by_score(const void *a, const void *b)
{
    int i = *(const int *)a, j = *(const int *)b;
    if (ref_scores[i] != ref_scores[j]) return ref_scores[i] > ref_scores[j] ? -1 : 1;
    return i - j;
}

START_TEST(top_k_order)
{
    float s[5] = {1, 3, 3, 2, 0};
    int index[5];
    ck_assert_int_eq(dm_top_k(s, 5, 3, index), DM_OK);
    ck_assert_int_eq(index[0], 1);
    ck_assert_int_eq(index[1], 2);
    ck_assert_int_eq(index[2], 3);
    ck_assert_int_eq(dm_top_k(s, 5, 0, index), DM_ERR_ARGUMENT);
    ck_assert_int_eq(dm_top_k(s, 5, 6, index), DM_ERR_ARGUMENT);

    /* Against a full sort, over sizes, k and many ties. */
    float scores[200];
    int got[200], want[200];
    unsigned seed = 7;
    for (int n = 1; n <= 200; n += 13) {
        for (int i = 0; i < n; i++) scores[i] = (float)((seed = seed * 1103515245u + 12345u) >> 16 & 15);
        for (int i = 0; i < n; i++) want[i] = i;
        ref_scores = scores;
        qsort(want, (size_t)n, sizeof(int), by_score);
        for (int k = 1; k <= n; k += 1 + n / 4) {
            ck_assert_int_eq(dm_top_k(scores, n, k, got), DM_OK);
            ck_assert_mem_eq(got, want, sizeof(int) * k);
        }
    }
}
END_TEST

/* dm_model_load_buffer takes the same options as dm_model_load: EMA too. */
START_TEST(buffer_load_selects_ema)
{
    size_t size;
    unsigned char *bytes = test_read("micro.pth", &size);
    dm_load_options ema = DM_LOAD_OPTIONS_INIT;
    ema.use_ema = 1;
    dm_model *from_memory, *from_file, *plain;
    ck_assert_msg(dm_model_load_buffer(bytes, size, &ema, &from_memory) == DM_OK, "%s", dm_last_error());
    ck_assert_int_eq(dm_model_load_buffer(bytes, size, NULL, &plain), DM_OK);
    free(bytes);
    ck_assert_int_eq(dm_model_load(test_path("micro.pth"), &ema, &from_file), DM_OK);
    float a[10], b[10], c[10];
    dm_outputs oa = {.size = sizeof oa, .logits = a}, ob = {.size = sizeof ob, .logits = b},
               oc = {.size = sizeof oc, .logits = c};
    micro_logits(from_memory, &oa, DM_OK);
    micro_logits(from_file, &ob, DM_OK);
    micro_logits(plain, &oc, DM_OK);
    ck_assert_mem_eq(a, b, sizeof a);
    ck_assert_msg(memcmp(a, c, sizeof a) != 0, "the EMA weights give the plain model's logits");
    dm_model_free(from_memory);
    dm_model_free(from_file);
    dm_model_free(plain);
    /* a safetensors file has no EMA weights to give */
    dm_model *none = (dm_model *)&ema;
    ck_assert_int_eq(dm_model_load(test_path("micro.safetensors"), &ema, &none), DM_ERR_ARGUMENT);
    ck_assert_ptr_null(none);
    ck_assert_ptr_nonnull(strstr(dm_last_error(), "EMA weights exist only in .pth training checkpoints"));
}
END_TEST

/* Precisions: names, the kernel that computes them, and a CPU workspace's
 * half-precision weights: made by its first pass in that precision (and
 * counted by dm_workspace_bytes), made anew for another model, never
 * taken for those of a model freed since whose memory a new one reuses,
 * and freed back in float32, which reads the model's own. */
START_TEST(workspace_precision)
{
    ck_assert_str_eq(dm_precision_name(DM_PRECISION_F32), "f32");
    ck_assert_str_eq(dm_precision_name(DM_PRECISION_BF16), "bf16");
    ck_assert_str_eq(dm_precision_name(DM_PRECISION_F16), "f16");
    ck_assert_ptr_null(dm_precision_name((dm_precision)7));
    ck_assert_str_eq(dm_precision_kernel(DM_PRECISION_F32), "float32");
    ck_assert_ptr_nonnull(dm_precision_kernel(DM_PRECISION_BF16));
    ck_assert_ptr_null(dm_precision_kernel((dm_precision)-1));

    dm_model *a, *b;
    ck_assert_int_eq(dm_model_synthetic('F', 3, 10, 1, &a), DM_OK);
    ck_assert_int_eq(dm_model_synthetic('F', 3, 10, 2, &b), DM_OK);
    dm_workspace *ws;
    ck_assert_int_eq(dm_workspace_create(a, 1, 32, 32, &ws), DM_OK);
    ck_assert_int_eq(dm_workspace_set_precision(NULL, DM_PRECISION_BF16), DM_ERR_ARGUMENT);
    ck_assert_int_eq(dm_workspace_set_precision(ws, (dm_precision)3), DM_ERR_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(dm_last_error(), "no precision 3"));

    float x[3 * 32 * 32], f32[10], bf16[10], other[10], alone[10];
    for (int i = 0; i < 3 * 32 * 32; i++) x[i] = (float)((i * 7) % 23) / 11.0f - 1.0f;
    dm_outputs out = {.size = sizeof out, .logits = f32};
    size_t f32_bytes = dm_workspace_bytes(ws);
    ck_assert_int_eq(dm_forward(a, ws, x, 1, 32, 32, &out), DM_OK);
    ck_assert_int_eq(dm_workspace_bytes(ws), f32_bytes); /* nothing prepared */
    ck_assert_int_eq(dm_workspace_set_precision(ws, DM_PRECISION_BF16), DM_OK);
    out.logits = bf16;
    ck_assert_msg(dm_forward(a, ws, x, 1, 32, 32, &out) == DM_OK, "%s", dm_last_error());
    ck_assert_uint_gt(dm_workspace_bytes(ws), f32_bytes); /* the rounded weights */
    double diff = 0, top = 0;
    for (int i = 0; i < 10; i++) {
        double d = fabs(bf16[i] - f32[i]), t = fabs(f32[i]);
        if (d > diff) diff = d;
        if (t > top) top = t;
    }
    ck_assert_msg(diff > 0 && diff < 0.05 * top, "bf16 logits differ from f32 by %g (largest %g)", diff, top);
    /* the workspace holds a's rounded weights: b gets its own, as a
     * workspace of its own computes them */
    out.logits = other;
    ck_assert_int_eq(dm_forward(b, ws, x, 1, 32, 32, &out), DM_OK);
    dm_workspace *fresh;
    ck_assert_int_eq(dm_workspace_create(b, 1, 32, 32, &fresh), DM_OK);
    ck_assert_int_eq(dm_workspace_set_precision(fresh, DM_PRECISION_BF16), DM_OK);
    out.logits = alone;
    ck_assert_int_eq(dm_forward(b, fresh, x, 1, 32, 32, &out), DM_OK);
    ck_assert_mem_eq(other, alone, sizeof alone);
    ck_assert_msg(memcmp(other, bf16, sizeof bf16) != 0, "b's logits are a's");
    /* b freed and another model made, perhaps at b's addresses: its
     * weights are prepared anew all the same */
    dm_workspace_free(fresh);
    dm_model_free(b);
    ck_assert_int_eq(dm_model_synthetic('F', 3, 10, 3, &b), DM_OK);
    out.logits = other;
    ck_assert_int_eq(dm_forward(b, ws, x, 1, 32, 32, &out), DM_OK);
    ck_assert_int_eq(dm_workspace_create(b, 1, 32, 32, &fresh), DM_OK);
    ck_assert_int_eq(dm_workspace_set_precision(fresh, DM_PRECISION_BF16), DM_OK);
    out.logits = alone;
    ck_assert_int_eq(dm_forward(b, fresh, x, 1, 32, 32, &out), DM_OK);
    ck_assert_mem_eq(other, alone, sizeof alone);
    dm_workspace_free(fresh);
    ck_assert_int_eq(dm_workspace_set_precision(ws, DM_PRECISION_F32), DM_OK);
    ck_assert_int_eq(dm_workspace_bytes(ws), f32_bytes);
    out.logits = other;
    ck_assert_int_eq(dm_forward(a, ws, x, 1, 32, 32, &out), DM_OK);
    ck_assert_mem_eq(other, f32, sizeof f32);
    dm_workspace_free(ws);

    /* a CUDA workspace (where one exists) computes in float32 only */
    if (dm_backend_available(DM_BACKEND_CUDA) == DM_OK) {
        ck_assert_int_eq(dm_workspace_create_on(a, DM_BACKEND_CUDA, 1, 32, 32, &ws), DM_OK);
        ck_assert_int_eq(dm_workspace_set_precision(ws, DM_PRECISION_F16), DM_ERR_UNSUPPORTED);
        ck_assert_int_eq(dm_workspace_set_precision(ws, DM_PRECISION_F32), DM_OK);
        dm_workspace_free(ws);
    }
    dm_model_free(a);
    dm_model_free(b);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("api");
    TCase *tc = tcase_create("api");
    tcase_add_test(tc, version_matches_header);
    tcase_add_test(tc, struct_without_size_is_refused);
    tcase_add_test(tc, larger_structs_from_newer_callers);
    tcase_add_test(tc, default_model_is_the_data_file);
    tcase_add_test(tc, imagenet_class_names);
    tcase_add_test(tc, model_class_names_from_metadata);
    tcase_add_test(tc, softmax_values);
    tcase_add_test(tc, top_k_order);
    tcase_add_test(tc, buffer_load_selects_ema);
    tcase_add_test(tc, workspace_precision);
    suite_add_tcase(s, tc);
    return test_run(s);
}
