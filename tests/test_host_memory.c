/* test_host_memory.c - the library's large buffers held to the process's
 * memory limit (host_memory.c), here DAMAMBA_MEMORY_LIMIT at 256 MiB above
 * what the process holds at its start (a build with CUDA maps its
 * libraries' data, tens of MB): what is refused, what its message says,
 * and a model file that names 100,000 classes failing cleanly, without the
 * process taking the gigabytes. */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include "host_memory.h"

#define MB ((size_t)1 << 20)

static size_t limit; /* bytes: set in main, before any buffer */

/* Resident memory that is not a file's, as host_memory.c counts it (0
 * where /proc cannot say). */
static size_t resident_at_start(void)
{
    unsigned long long size, resident, shared;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f) return 0;
    int ok = fscanf(f, "%llu %llu %llu", &size, &resident, &shared) == 3 && shared <= resident;
    fclose(f);
    return ok ? (size_t)(resident - shared) * (size_t)sysconf(_SC_PAGE_SIZE) : 0;
}

static void expect_refusal(const char *what)
{
    dm_status st = dm_fail_nomem("out of memory for %s", what);
    ck_assert_int_eq(st, DM_ERR_NOMEM);
    char want[64];
    snprintf(want, sizeof want, "would pass %.1f MB, DAMAMBA_MEMORY_LIMIT", limit / 1e6);
    ck_assert_msg(strstr(dm_last_error(), want), "%s", dm_last_error());
}

START_TEST(limit_comes_from_the_environment)
{
    ck_assert_uint_eq(dm_memory_limit(), limit);
}
END_TEST

/* Buffers count whole, touched or not, and give their bytes back freed. */
START_TEST(buffers_count_until_freed)
{
    size_t before = dm_host_held();
    void *a = dm_host_alloc(100 * MB), *b = dm_host_alloc(100 * MB);
    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_nonnull(b);
    ck_assert_uint_eq((uintptr_t)a % 64, 0);
    ck_assert_uint_ge(dm_host_held(), before + 200 * MB);
    ck_assert_ptr_null(dm_host_alloc(100 * MB));
    expect_refusal("a third");
    dm_host_free(a);
    void *c = dm_host_alloc(100 * MB);
    ck_assert_ptr_nonnull(c);
    dm_host_free(b);
    dm_host_free(c);
    ck_assert_uint_eq(dm_host_held(), before);
    /* sizes that overflow are refused, not wrapped */
    ck_assert_ptr_null(dm_host_alloc(SIZE_MAX - 16));
    ck_assert_ptr_null(dm_host_array(SIZE_MAX / 2, 4));
}
END_TEST

/* Memory the process holds elsewhere counts once resident. */
START_TEST(resident_memory_counts)
{
    size_t bytes = 160 * MB;
    /* mapped, not malloc'd: unmapped, it leaves at once (a sanitizer
     * keeps freed memory a while); volatile: the stores stay */
    char *volatile elsewhere = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ck_assert(elsewhere != MAP_FAILED);
    for (size_t i = 0; i < bytes; i += 4096) elsewhere[i] = 1;
    ck_assert_ptr_null(dm_host_alloc(120 * MB));
    expect_refusal("a buffer beside resident memory");
    munmap(elsewhere, bytes);
    void *p = dm_host_alloc(120 * MB);
    ck_assert_ptr_nonnull(p);
    dm_host_free(p);
}
END_TEST

/* A workspace beyond the limit is refused at creation, naming it; one
 * within it runs. */
START_TEST(workspace_within_the_limit)
{
    dm_model *m;
    ck_assert_msg(dm_model_load(test_path("micro.safetensors"), NULL, &m) == DM_OK, "%s", dm_last_error());
    dm_workspace *ws = NULL;
    ck_assert_int_eq(dm_workspace_create(m, 1, 2048, 2048, &ws), DM_ERR_NOMEM);
    ck_assert_ptr_null(ws);
    ck_assert_msg(strstr(dm_last_error(), "workspace: ") && strstr(dm_last_error(), "DAMAMBA_MEMORY_LIMIT"), "%s",
                  dm_last_error());
    ck_assert_msg(dm_workspace_create(m, 1, 64, 64, &ws) == DM_OK, "%s", dm_last_error());
    float x[3 * 64 * 64] = {0}, logits[10];
    dm_outputs out = DM_OUTPUTS_INIT;
    out.logits = logits;
    ck_assert_msg(dm_forward(m, ws, x, 1, 64, 64, &out) == DM_OK, "%s", dm_last_error());
    dm_workspace_free(ws);
    dm_model_free(m);
}
END_TEST

/* The golden Mask R-CNN micro with 100,000 classes behind a box head one
 * unit wide: 26 MB of weights, whose box head's scores and deltas for
 * 1,000 proposals are 2 GB, twice over (device and host). */
static void write_many_classes(const char *path, int K)
{
    dm_tensor_file f;
    test_open("maskrcnn_micro.safetensors", &f);
    dm_tensor *t = calloc(f.count, sizeof *t);
    float *zeros = calloc((size_t)K * 64 + 4 * (size_t)K, sizeof(float));
    ck_assert(t && zeros);
    static const struct {
        const char *name;
        int ndim;
        int64_t shape[4]; /* -1: K, -4: 4K, -2: K + 1 */
    } changed[] = {
        {"roi_head.bbox_head.shared_fcs.0.weight", 2, {1, 3136}},
        {"roi_head.bbox_head.shared_fcs.0.bias", 1, {1}},
        {"roi_head.bbox_head.shared_fcs.1.weight", 2, {1, 1}},
        {"roi_head.bbox_head.shared_fcs.1.bias", 1, {1}},
        {"roi_head.bbox_head.fc_cls.weight", 2, {-2, 1}},
        {"roi_head.bbox_head.fc_cls.bias", 1, {-2}},
        {"roi_head.bbox_head.fc_reg.weight", 2, {-4, 1}},
        {"roi_head.bbox_head.fc_reg.bias", 1, {-4}},
        {"roi_head.mask_head.conv_logits.weight", 4, {-1, 64, 1, 1}},
        {"roi_head.mask_head.conv_logits.bias", 1, {-1}},
    };
    size_t hits = 0;
    for (size_t i = 0; i < f.count; i++) {
        t[i] = f.tensors[i];
        for (size_t c = 0; c < sizeof changed / sizeof *changed; c++) {
            if (strcmp(t[i].name, changed[c].name) != 0) continue;
            t[i].ndim = changed[c].ndim;
            t[i].numel = 1;
            for (int d = 0; d < t[i].ndim; d++) {
                int64_t n = changed[c].shape[d];
                t[i].shape[d] = n == -1 ? K : n == -2 ? K + 1 : n == -4 ? 4 * (int64_t)K : n;
                t[i].numel *= t[i].shape[d];
            }
            t[i].data = zeros;
            t[i].nbytes = (size_t)t[i].numel * sizeof(float);
            hits++;
        }
    }
    ck_assert_uint_eq(hits, sizeof changed / sizeof *changed);
    char count[16];
    snprintf(count, sizeof count, "%d", K);
    dm_meta meta[] = {{"num_classes", count}, {"bbox_head.fc_out_channels", "1"}};
    ck_assert_msg(dm_safetensors_write(path, t, f.count, meta, 2) == DM_OK, "%s", dm_last_error());
    free(zeros);
    free(t);
    dm_tensor_file_close(&f);
}

/* dm_detect of model m on an h x w image of noise, from an original of
 * ori_h x ori_w, fails for lack of memory, naming `what` and the limit,
 * without the process passing the limit. */
static void detect_refused(dm_model *m, int h, int w, int ori_h, int ori_w, const char *what)
{
    dm_workspace *ws;
    ck_assert_msg(dm_workspace_create(m, 1, h, w, &ws) == DM_OK, "%s", dm_last_error());
    float *x = malloc(sizeof(float) * 3 * h * w);
    test_seed(7);
    for (int i = 0; i < 3 * h * w; i++) x[i] = test_uniform(-2, 2);
    float sx = (float)w / ori_w, sy = (float)h / ori_h;
    dm_det_image im = {h, w, ori_h, ori_w, {sx, sy, sx, sy}};
    dm_detections d;
    ck_assert_int_eq(dm_detect(m, ws, x, h, w, &im, NULL, &d), DM_ERR_NOMEM);
    ck_assert_msg(strstr(dm_last_error(), what) && strstr(dm_last_error(), "DAMAMBA_MEMORY_LIMIT"), "%s",
                  dm_last_error());
    ck_assert_int_eq(d.count, 0);
    struct rusage ru;
    ck_assert_int_eq(getrusage(RUSAGE_SELF, &ru), 0);
    ck_assert_msg((size_t)ru.ru_maxrss * 1024 < limit, "peak resident %ld kB", ru.ru_maxrss);
    free(x);
    dm_workspace_free(ws);
}

START_TEST(detector_of_many_classes_fails_cleanly)
{
    char dir[] = "/tmp/dm_host_memory_XXXXXX", path[64];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/classes.safetensors", dir);
    write_many_classes(path, 100000);
    dm_model *m;
    ck_assert_msg(dm_model_load(path, NULL, &m) == DM_OK, "%s", dm_last_error());
    remove(path);
    rmdir(dir);
    ck_assert_int_eq(dm_model_config(m)->det_classes, 100000);
    detect_refused(m, 256, 256, 256, 256, "box head");
    dm_model_free(m);
}
END_TEST

/* Masks come at the original image's size: for a 20000 x 25000 photo one
 * is 500 MB, more than the limit, and is refused, not allocated. */
START_TEST(masks_of_a_large_photo_fail_cleanly)
{
    dm_model *m;
    ck_assert_msg(dm_model_load(test_path("maskrcnn_micro.safetensors"), NULL, &m) == DM_OK, "%s", dm_last_error());
    detect_refused(m, 128, 160, 20000, 25000, "masks of 20000x25000 pixels");
    dm_model_free(m);
}
END_TEST

int main(void)
{
    char setting[32];
    limit = (resident_at_start() / MB + 256) * MB;
    snprintf(setting, sizeof setting, "%zuM", limit / MB);
    setenv("DAMAMBA_MEMORY_LIMIT", setting, 1);
    Suite *s = suite_create("host_memory");
    TCase *tc = tcase_create("host_memory");
    tcase_add_test(tc, limit_comes_from_the_environment);
    tcase_add_test(tc, buffers_count_until_freed);
    tcase_add_test(tc, resident_memory_counts);
    tcase_add_test(tc, workspace_within_the_limit);
    tcase_add_test(tc, detector_of_many_classes_fails_cleanly);
    tcase_add_test(tc, masks_of_a_large_photo_fail_cleanly);
    suite_add_tcase(s, tc);
    return test_run(s);
}
