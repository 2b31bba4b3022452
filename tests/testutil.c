#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "damamba.h"
#include "kernels.h"
#include "model.h"
#include "safetensors.h"

const char *test_path(const char *name)
{
    static _Thread_local char buf[4096];
    const char *dir = getenv("DM_TEST_DATA");
    snprintf(buf, sizeof buf, "%s/%s", dir ? dir : "tests/golden", name);
    return buf;
}

unsigned char *test_read(const char *name, size_t *size)
{
    FILE *f = fopen(test_path(name), "rb");
    ck_assert_msg(f != NULL, "cannot open %s", name);
    fseek(f, 0, SEEK_END);
    *size = (size_t)ftell(f);
    rewind(f);
    unsigned char *bytes = malloc(*size ? *size : 1);
    ck_assert_ptr_nonnull(bytes);
    ck_assert_uint_eq(fread(bytes, 1, *size, f), *size);
    fclose(f);
    return bytes;
}

void test_open(const char *name, dm_tensor_file *file)
{
    dm_status st = dm_safetensors_open(test_path(name), file);
    ck_assert_msg(st == DM_OK, "cannot open %s: %s", name, dm_last_error());
}

const float *test_f32(const dm_tensor_file *file, const char *name, size_t *count)
{
    const dm_tensor *t = dm_tensor_file_find(file, name);
    ck_assert_msg(t != NULL, "golden tensor %s missing", name);
    ck_assert_msg(t->dtype == DM_F32, "golden tensor %s is not F32", name);
    if (count) *count = (size_t)t->numel;
    return t->data;
}

double test_rel_err(const char *label, const float *got, const float *want, size_t n)
{
    double max_err = 0.0, max_ref = 0.0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - want[i]);
        if (!(e <= max_err)) max_err = e; /* NaN counts as the worst */
        if (fabs(want[i]) > max_ref) max_ref = fabs(want[i]);
    }
    double rel = max_ref > 0 ? max_err / max_ref : max_err;
    printf("%-40s max_abs_err %.3e  max|ref| %.3e  rel_err %.3e\n", label, max_err, max_ref, rel);
    fflush(stdout);
    return rel;
}

int test_isa_runs(void)
{
    const dm_kernels *k;
    if (dm_kernels_require(&k) == DM_OK) return 1;
    printf("skipped: %s\n", dm_last_error());
    return 0;
}

int test_cuda_missing(void)
{
    if (dm_backend_available(DM_BACKEND_CUDA) == DM_OK) return 0;
    const char *require = getenv("DM_TEST_REQUIRE_CUDA");
    int required = require && *require && strcmp(require, "0") != 0;
    printf("%s: no CUDA device to test on: %s\n", required ? "FAIL" : "SKIP", dm_last_error());
    return required ? EXIT_FAILURE : 77; /* 77: meson's exit code for a skipped test */
}

/* A label for a result line: the backend, and for the CPU its instruction set. */
static const char *where(dm_backend backend)
{
    return backend == DM_BACKEND_CPU ? dm_isa() : dm_backend_name(backend);
}

void test_golden_block(dm_backend backend)
{
    dm_tensor_file wf, io;
    test_open("block.safetensors", &wf);
    test_open("block.io.safetensors", &io);
    int dim = atoi(dm_tensor_file_meta(&wf, "dim")), head_dim = atoi(dm_tensor_file_meta(&wf, "head_dim"));
    int ratio = atoi(dm_tensor_file_meta(&wf, "mlp_ratio")), ls = atoi(dm_tensor_file_meta(&wf, "layerscale"));
    dm_config cfg = {0};
    for (int s = 0; s < 4; s++) {
        cfg.depths[s] = 2; /* the loader holds the one block whatever the depths say */
        cfg.dims[s] = dim;
        cfg.mlp_hidden[s] = dim * ratio;
        cfg.groups[s] = dim / head_dim;
        cfg.dt_rank[s] = (dim + 15) / 16;
        cfg.layer_scale[s] = ls;
    }
    cfg.in_chans = 3;
    dm_model *m;
    ck_assert_msg(dm_block_load(&wf, &cfg, &m) == DM_OK, "%s", dm_last_error());
    size_t n;
    const float *in = test_f32(&io, "input", &n), *want = test_f32(&io, "output.expected", NULL);
    const dm_tensor *t = dm_tensor_file_find(&io, "input");
    int b = (int)t->shape[0], h = (int)t->shape[2], w = (int)t->shape[3];
    dm_workspace *ws;
    ck_assert_msg(dm_workspace_create_on(m, backend, b, 4 * h, 4 * w, &ws) == DM_OK, "%s", dm_last_error());
    float *got = malloc(sizeof(float) * n);
    ck_assert_msg(dm_block_run(m, ws, in, got, b, h, w) == DM_OK, "%s", dm_last_error());
    char label[64];
    snprintf(label, sizeof label, "[%s] block", where(backend));
    ck_assert_double_le(test_rel_err(label, got, want, n), GOLDEN_TOL);
    free(got);
    dm_workspace_free(ws);
    dm_model_free(m);
    dm_tensor_file_close(&wf);
    dm_tensor_file_close(&io);
}

void test_golden_model(const char *weights, const char *io_name, dm_backend backend)
{
    test_golden_model_in(weights, io_name, backend, DM_PRECISION_F32, GOLDEN_TOL);
}

void test_golden_model_in(const char *weights, const char *io_name, dm_backend backend, dm_precision precision,
                          double tol)
{
    dm_model *m;
    ck_assert_msg(dm_model_load(test_path(weights), NULL, &m) == DM_OK, "%s", dm_last_error());
    dm_tensor_file io;
    test_open(io_name, &io);
    const dm_tensor *t = dm_tensor_file_find(&io, "input");
    int n = (int)t->shape[0], h = (int)t->shape[2], w = (int)t->shape[3];
    dm_workspace *ws;
    ck_assert_msg(dm_workspace_create_on(m, backend, n, h, w, &ws) == DM_OK, "%s", dm_last_error());
    ck_assert_msg(dm_workspace_set_precision(ws, precision) == DM_OK, "%s", dm_last_error());
    dm_outputs out = DM_OUTPUTS_INIT;
    size_t counts[5];
    const float *want[5];
    want[4] = test_f32(&io, "logits.expected", &counts[4]);
    out.logits = malloc(sizeof(float) * counts[4]);
    for (int s = 0; s < 4; s++) {
        char name[32];
        snprintf(name, sizeof name, "stage%d.expected", s);
        want[s] = test_f32(&io, name, &counts[s]);
        out.stages[s] = malloc(sizeof(float) * counts[s]);
    }
    ck_assert_msg(dm_forward(m, ws, t->data, n, h, w, &out) == DM_OK, "%s", dm_last_error());
    for (int s = 0; s < 5; s++) {
        char label[64];
        const char *in = dm_precision_name(precision);
        if (s < 4) snprintf(label, sizeof label, "[%s %s] %s stage%d", where(backend), in, weights, s);
        else snprintf(label, sizeof label, "[%s %s] %s logits", where(backend), in, weights);
        float *got = s < 4 ? out.stages[s] : out.logits;
        ck_assert_double_le(test_rel_err(label, got, want[s], counts[s]), tol);
    }
    for (int s = 0; s < 4; s++) free(out.stages[s]);
    free(out.logits);
    dm_workspace_free(ws);
    dm_model_free(m);
    dm_tensor_file_close(&io);
}

static int run(Suite *suite, enum fork_status fork)
{
    SRunner *sr = srunner_create(suite);
    srunner_set_fork_status(sr, fork);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

int test_run(Suite *suite) { return run(suite, CK_FORK_GETENV); }

int test_run_in_process(Suite *suite) { return run(suite, CK_NOFORK); }

static uint64_t rng_state;

void test_seed(uint64_t seed) { rng_state = seed; }

float test_uniform(float lo, float hi)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return lo + (hi - lo) * (float)(rng_state >> 40) / 16777216.0f;
}
