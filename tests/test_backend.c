/* test_backend.c - choosing a backend: the CPU always works; CUDA either
 * works or says clearly why not (a build without it, a machine without a
 * device). */
#include "testutil.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "damamba.h"

static dm_model *small_model(void)
{
    dm_model *m;
    ck_assert_msg(dm_model_synthetic('F', 3, 10, 1, &m) == DM_OK, "%s", dm_last_error());
    return m;
}

START_TEST(backend_cpu)
{
    dm_model *m = small_model();
    dm_workspace *ws;
    ck_assert_int_eq(dm_backend_available(DM_BACKEND_CPU), DM_OK);
    ck_assert_int_eq(dm_workspace_create_on(m, DM_BACKEND_CPU, 1, 16, 16, &ws), DM_OK);
    ck_assert_int_eq(dm_workspace_backend(ws), DM_BACKEND_CPU);
    ck_assert_str_eq(dm_backend_name(DM_BACKEND_CPU), "cpu");
    dm_workspace_free(ws);
    /* The CPU is device 0, the only one. */
    ck_assert_int_eq(dm_workspace_create_on_device(m, DM_BACKEND_CPU, 0, 1, 16, 16, &ws), DM_OK);
    dm_workspace_free(ws);
    ck_assert_int_eq(dm_workspace_create_on_device(m, DM_BACKEND_CPU, 1, 1, 16, 16, &ws), DM_ERR_ARGUMENT);
    ck_assert_str_eq(dm_last_error(), "dm_workspace_create: the CPU backend has device 0 only, not 1");
    ck_assert_ptr_null(ws);
    ck_assert_int_eq(dm_workspace_create_on_device(m, DM_BACKEND_CPU, -1, 1, 16, 16, &ws), DM_ERR_ARGUMENT);
    ck_assert_str_eq(dm_last_error(), "dm_workspace_create: device -1 is negative");
    ck_assert_ptr_null(ws);
    dm_model_free(m);
}
END_TEST

START_TEST(backend_cuda_explains)
{
    dm_model *m = small_model();
    dm_workspace *ws = NULL;
    dm_status st = dm_workspace_create_on(m, DM_BACKEND_CUDA, 1, 16, 16, &ws);
    ck_assert_str_eq(dm_backend_name(DM_BACKEND_CUDA), "cuda");
#if DM_HAVE_CUDA
    if (st == DM_OK) {
        ck_assert_int_eq(dm_workspace_backend(ws), DM_BACKEND_CUDA);
        ck_assert_uint_gt(dm_workspace_bytes(ws), 0);
        /* It holds m's weights: a twin of m with other weights is refused. */
        dm_model *twin = small_model();
        float input[3 * 16 * 16] = {0}, logits[10];
        dm_outputs out = {.size = sizeof(dm_outputs), .logits = logits};
        ck_assert_int_eq(dm_forward(twin, ws, input, 1, 16, 16, &out), DM_ERR_ARGUMENT);
        ck_assert_ptr_nonnull(strstr(dm_last_error(), "holds the weights of the model it was created for"));
        ck_assert_int_eq(dm_forward(m, ws, input, 1, 16, 16, &out), DM_OK);
        dm_model_free(twin);
        dm_workspace_free(ws);
    } else {
        ck_assert_int_eq(st, DM_ERR_UNSUPPORTED);
        ck_assert_msg(strstr(dm_last_error(), "cudaGetDeviceCount") != NULL, "unclear: %s", dm_last_error());
        ck_assert_ptr_null(ws);
    }
#else
    ck_assert_int_eq(st, DM_ERR_UNSUPPORTED);
    ck_assert_str_eq(dm_last_error(), "this build has no CUDA backend (configure with -Dcuda=enabled)");
    ck_assert_ptr_null(ws);
    ck_assert_int_eq(dm_backend_available(DM_BACKEND_CUDA), DM_ERR_UNSUPPORTED);
#endif
    dm_model_free(m);
}
END_TEST

START_TEST(backend_unknown)
{
    dm_model *m = small_model();
    dm_workspace *ws = NULL;
    ck_assert_int_eq(dm_workspace_create_on(m, (dm_backend)7, 1, 16, 16, &ws), DM_ERR_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(dm_last_error(), "unknown backend 7"));
    ck_assert_ptr_null(ws);
    ck_assert_int_eq(dm_backend_available((dm_backend)7), DM_ERR_ARGUMENT);
    dm_model_free(m);
}
END_TEST

/* Threads belong to the workspace, and no count changes a bit of the
 * result; nor do the images beside one in a batch (the scan's cut once
 * followed both; test_ops holds a long, chunked scan to it too). */
START_TEST(threads_stay_in_the_workspace)
{
    enum { H = 64, W = 128, PIXELS = 3 * H * W, STAGE0 = 48 * (H / 4) * (W / 4) };
    dm_model *m = small_model();
    dm_workspace *ws;
    ck_assert_int_eq(dm_workspace_create(m, 2, H, W, &ws), DM_OK);
    float *input = malloc(sizeof(float) * 2 * PIXELS), *want_stage = malloc(sizeof(float) * 2 * STAGE0);
    float *got_stage = malloc(sizeof(float) * 2 * STAGE0), want[20], got[20];
    for (int i = 0; i < 2 * PIXELS; i++) input[i] = (float)((i * 29) % 83) / 41.0f - 1.0f;
    ck_assert_int_eq(dm_workspace_set_threads(ws, 1), DM_OK);
    dm_outputs out = DM_OUTPUTS_INIT;
    out.logits = want;
    out.stages[0] = want_stage;
    ck_assert_msg(dm_forward(m, ws, input, 2, H, W, &out) == DM_OK, "%s", dm_last_error());
    out.logits = got;
    out.stages[0] = got_stage;
    for (int threads = 1; threads <= 5; threads++) {
        ck_assert_int_eq(dm_workspace_set_threads(ws, threads), DM_OK);
        ck_assert_msg(dm_forward(m, ws, input, 2, H, W, &out) == DM_OK, "%s", dm_last_error());
        ck_assert_msg(memcmp(got_stage, want_stage, sizeof(float) * 2 * STAGE0) == 0, "stage 0 on %d threads", threads);
        ck_assert_msg(memcmp(got, want, sizeof want) == 0, "logits on %d threads", threads);
        for (int img = 0; img < 2; img++) { /* each image alone */
            ck_assert(dm_forward(m, ws, input + img * PIXELS, 1, H, W, &out) == DM_OK);
            ck_assert_msg(memcmp(got, want + 10 * img, sizeof(float) * 10) == 0, "image %d alone, %d threads", img,
                          threads);
        }
    }
    ck_assert_int_eq(dm_workspace_set_threads(ws, 0), DM_ERR_ARGUMENT);
    /* A count past the limit is refused before any thread starts, and the
     * workspace keeps its threads. */
    ck_assert_int_eq(dm_workspace_set_threads(ws, DM_MAX_THREADS + 1), DM_ERR_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(dm_last_error(), "1 to 1024 threads (got 1025)"));
    ck_assert_int_eq(dm_workspace_set_threads(ws, 100000), DM_ERR_ARGUMENT);
    ck_assert_msg(dm_forward(m, ws, input, 2, H, W, &out) == DM_OK, "%s", dm_last_error());
    ck_assert(memcmp(got, want, sizeof want) == 0);
    free(input), free(want_stage), free(got_stage);
    dm_workspace_free(ws);
    dm_model_free(m);
}
END_TEST

/* A workspace larger than the machine's memory is refused when it is
 * made, not found out by the kernel when its pages are touched: F's at
 * 2^30 pixels would be about 200 GB (more than this suite's machines
 * hold). */
START_TEST(workspace_beyond_memory_is_refused)
{
    dm_model *m = small_model();
    dm_workspace *ws = (dm_workspace *)m;
    ck_assert_int_eq(dm_workspace_create(m, 1, 32768, 32768, &ws), DM_ERR_NOMEM);
    ck_assert_ptr_null(ws);
    ck_assert_ptr_nonnull(strstr(dm_last_error(), "out of cpu memory for a"));
    dm_model_free(m);
}
END_TEST

/* The default count comes from the environment, within the limit: a
 * count that would start 100,000 threads (or overflow an int) gives
 * DM_MAX_THREADS.  DAMAMBA_THREADS holding anything but a count is passed
 * over by dm_threads() (to OMP_NUM_THREADS, the first of its list) and
 * refuses a CPU workspace, naming it. */
START_TEST(default_threads_within_the_limit)
{
    static const struct { const char *value, *omp; int want, is_count; } cases[] = {
        {"3", NULL, 3, 1}, {"1024", NULL, 1024, 1}, {"1025", NULL, DM_MAX_THREADS, 1},
        {"100000", NULL, DM_MAX_THREADS, 1}, {"99999999999999999999999", NULL, DM_MAX_THREADS, 1},
        {"3", "5", 3, 1}, {"abc", "5", 5, 0}, {"2x", "5,2", 5, 0}, {"0", "7", 7, 0}, {"-2", "6", 6, 0},
        {" 4", "6", 6, 0}};
    char *saved = getenv("DAMAMBA_THREADS") ? strdup(getenv("DAMAMBA_THREADS")) : NULL;
    char *saved_omp = getenv("OMP_NUM_THREADS") ? strdup(getenv("OMP_NUM_THREADS")) : NULL;
    dm_model *m = small_model();
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        setenv("DAMAMBA_THREADS", cases[i].value, 1);
        if (cases[i].omp) setenv("OMP_NUM_THREADS", cases[i].omp, 1);
        else unsetenv("OMP_NUM_THREADS");
        ck_assert_msg(dm_threads() == cases[i].want, "DAMAMBA_THREADS=%s gives %d threads", cases[i].value,
                      dm_threads());
        dm_workspace *ws = NULL;
        ck_assert_int_eq(dm_workspace_create(m, 1, 32, 32, &ws), cases[i].is_count ? DM_OK : DM_ERR_ARGUMENT);
        if (!cases[i].is_count) ck_assert_ptr_nonnull(strstr(dm_last_error(), "not a number of threads"));
        dm_workspace_free(ws);
    }
    dm_model_free(m);
    if (saved) setenv("DAMAMBA_THREADS", saved, 1);
    else unsetenv("DAMAMBA_THREADS");
    if (saved_omp) setenv("OMP_NUM_THREADS", saved_omp, 1);
    else unsetenv("OMP_NUM_THREADS");
    free(saved);
    free(saved_omp);
    ck_assert_int_ge(dm_threads(), 1);
    ck_assert_int_le(dm_threads(), DM_MAX_THREADS);
}
END_TEST

typedef struct pass_loop {
    const dm_model *model;
    dm_precision precision;
    dm_status status;
    float logits[10];
} pass_loop;

static void *run_passes(void *arg)
{
    pass_loop *loop = arg;
    dm_workspace *ws;
    float input[3 * 16 * 16];
    for (int i = 0; i < 3 * 16 * 16; i++) input[i] = (float)((i * 13) % 31) / 15.0f - 1.0f;
    dm_outputs out = DM_OUTPUTS_INIT;
    out.logits = loop->logits;
    if ((loop->status = dm_workspace_create(loop->model, 1, 16, 16, &ws))) return NULL;
    dm_workspace_set_threads(ws, 1);
    loop->status = dm_workspace_set_precision(ws, loop->precision);
    for (int i = 0; i < 20 && !loop->status; i++) loop->status = dm_forward(loop->model, ws, input, 1, 16, 16, &out);
    dm_workspace_free(ws);
    return NULL;
}

/* Workspaces of one model running passes at once, reading its packed
 * weights in float32 or preparing their own rounded copies in bf16, all
 * give the logits of one running alone in their precision. */
START_TEST(concurrent_workspaces_agree)
{
    dm_model *m = small_model();
    pass_loop alone[2] = {{m, DM_PRECISION_F32, DM_OK, {0}}, {m, DM_PRECISION_BF16, DM_OK, {0}}};
    for (int p = 0; p < 2; p++) {
        run_passes(&alone[p]);
        ck_assert_int_eq(alone[p].status, DM_OK);
    }
    ck_assert(memcmp(alone[0].logits, alone[1].logits, sizeof alone[0].logits) != 0);
    pthread_t threads[4];
    pass_loop loops[4];
    for (int i = 0; i < 4; i++) {
        loops[i] = (pass_loop){m, alone[i % 2].precision, DM_OK, {0}};
        ck_assert_int_eq(pthread_create(&threads[i], NULL, run_passes, &loops[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(threads[i], NULL);
        ck_assert_int_eq(loops[i].status, DM_OK);
        ck_assert_mem_eq(loops[i].logits, alone[i % 2].logits, sizeof loops[i].logits);
    }
    dm_model_free(m);
}
END_TEST

START_TEST(workspace_of_another_model)
{
    /* Buffers planned for DAMamba-F are too small for DAMamba-T: the pass
     * once wrote past them and returned DM_OK. */
    dm_model *small = small_model(), *large;
    ck_assert_int_eq(dm_model_synthetic('T', 3, 10, 1, &large), DM_OK);
    dm_workspace *ws;
    ck_assert_int_eq(dm_workspace_create(small, 1, 32, 32, &ws), DM_OK);
    float input[3 * 32 * 32] = {0}, logits[10];
    dm_outputs out = {.size = sizeof(dm_outputs), .logits = logits};
    ck_assert_int_eq(dm_forward(large, ws, input, 1, 32, 32, &out), DM_ERR_ARGUMENT);
    ck_assert_msg(strstr(dm_last_error(), "the workspace was created for another model") != NULL, "%s",
                  dm_last_error());
    /* A second model of the same configuration may share it. */
    dm_model *twin = small_model();
    ck_assert_int_eq(dm_forward(twin, ws, input, 1, 32, 32, &out), DM_OK);
    dm_workspace_free(ws);
    dm_model_free(twin);
    dm_model_free(large);
    dm_model_free(small);
}
END_TEST

START_TEST(profile_counts_operators) { test_operator_profile(DM_BACKEND_CPU); }
END_TEST

int main(void)
{
    Suite *s = suite_create("backend");
    TCase *tc = tcase_create("choice");
    tcase_add_test(tc, backend_cpu);
    tcase_add_test(tc, backend_cuda_explains);
    tcase_add_test(tc, backend_unknown);
    tcase_add_test(tc, workspace_of_another_model);
    tcase_add_test(tc, threads_stay_in_the_workspace);
    tcase_add_test(tc, default_threads_within_the_limit);
    tcase_add_test(tc, workspace_beyond_memory_is_refused);
    tcase_add_test(tc, concurrent_workspaces_agree);
    tcase_add_test(tc, profile_counts_operators);
    suite_add_tcase(s, tc);
    return test_run(s);
}
