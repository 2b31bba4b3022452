#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "damamba.h"
#include "internal_api.h"
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

const char *test_fixture_path(const char *name)
{
    static _Thread_local char buf[4096];
    const char *dir = getenv("DM_TEST_FIXTURES");
    snprintf(buf, sizeof buf, "%s/%s", dir ? dir : "tests/fixtures", name);
    return buf;
}

unsigned char *test_read(const char *name, size_t *size) { return test_read_path(test_path(name), size); }

unsigned char *test_read_path(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot open %s", path);
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

/* x rounded to `bits` significant bits, ties to even (the default rounding
 * mode of nearbyint), with the format's smallest exponent min_exp and
 * largest finite value max_finite. */
static double reference_round(double x, int bits, int min_exp, double max_finite)
{
    if (isnan(x) || isinf(x) || x == 0) return x;
    int e;
    frexp(x, &e);
    if (e < min_exp) e = min_exp; /* subnormal: a fixed quantum */
    double r = ldexp(nearbyint(ldexp(x, bits - e)), e - bits);
    return fabs(r) > max_finite ? copysign(INFINITY, x) : r;
}

double test_f16_round(double x) { return reference_round(x, 11, -13, 65504.0); }
double test_bf16_round(double x) { return reference_round(x, 8, -125, 0x1.FEp127); }

double test_activate(double x, dm_act act)
{
    switch (act) {
    case DM_ACT_GELU: return 0.5 * x * (1.0 + erf(x / sqrt(2.0)));
    case DM_ACT_SILU: return x / (1.0 + exp(-x));
    case DM_ACT_RELU: return x < 0.0 ? 0.0 : x; /* NaN stays NaN, as in PyTorch */
    case DM_ACT_NONE: break;
    }
    return x;
}

uint32_t test_crc32(const void *data, size_t n)
{
    const unsigned char *p = data;
    uint32_t crc = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        crc ^= p[i];
        for (int b = 0; b < 8; b++) crc = (crc >> 1) ^ (0xedb88320u & (0u - (crc & 1)));
    }
    return crc ^ 0xffffffffu;
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

/* A profiled pass gives the unprofiled pass's logits bit for bit, and
 * counts every operator DAMamba-F's graph runs on one image of 32 x 32:
 * per block 7 products, 4 depthwise convolutions, 3 norms, a sampler and a
 * scan; 7 dense convolutions (stem, downsamples), 4 stage norms, the
 * head's pool and product, the input and the logits.  The products' and
 * convolutions' work is dm_model_macs's count less its other operators'
 * (the depthwise convolutions, sampler and scan). */
void test_operator_profile(dm_backend backend)
{
    dm_model *m;
    ck_assert_msg(dm_model_synthetic('F', 3, 10, 1, &m) == DM_OK, "%s", dm_last_error());
    enum { H = 32, W = 32, CLASSES = 10 };
    dm_workspace *ws;
    ck_assert_msg(dm_workspace_create_on(m, backend, 1, H, W, &ws) == DM_OK, "%s", dm_last_error());
    float input[3 * H * W], want[CLASSES], got[CLASSES];
    for (int i = 0; i < 3 * H * W; i++) input[i] = (float)((i * 29) % 83) / 41.0f - 1.0f;
    dm_outputs out = DM_OUTPUTS_INIT;
    out.logits = want;
    ck_assert_msg(dm_forward(m, ws, input, 1, H, W, &out) == DM_OK, "%s", dm_last_error());
    dm_op_profile ops[32];
    ck_assert_int_eq(dm_workspace_profile_read(ws, ops, 32), 0);
    ck_assert_int_eq(dm_workspace_profile(ws), DM_OK);
    out.logits = got;
    ck_assert_msg(dm_forward(m, ws, input, 1, H, W, &out) == DM_OK, "%s", dm_last_error());
    ck_assert_mem_eq(got, want, sizeof got);
    /* profiling again starts from zero */
    ck_assert_int_eq(dm_workspace_profile(ws), DM_OK);
    ck_assert_msg(dm_forward(m, ws, input, 1, H, W, &out) == DM_OK, "%s", dm_last_error());
    ck_assert_mem_eq(got, want, sizeof got);

    const dm_config *c = dm_model_config(m);
    int blocks = 0;
    double product_macs = (double)CLASSES * c->dims[3], other_macs = 0;
    for (int s = 0; s < DM_NUM_STAGES; s++) {
        int ch, sh, sw;
        dm_stage_shape(m, H, W, s, &ch, &sh, &sw);
        double P = (double)sh * sw, C = c->dims[s], F = c->mlp_hidden[s], G = c->groups[s], R = c->dt_rank[s];
        blocks += c->depths[s];
        product_macs += c->depths[s] * P * (2 * C * C + 2 * G * C + (R + 2) * C + R * C + 2 * F * C);
        other_macs += c->depths[s] * P * (27 * C + 9 * F + 4 * C + 3 * C);
    }
    double conv_macs = (double)dm_model_macs(m, H, W) - product_macs - other_macs;
    static const char *const entries[] = {"input", "output", "gemm", "conv3x3", "dwconv3x3", "layernorm",
                                          "sample", "scan", "avg_pool"};
    long calls[] = {1, 1, 7L * blocks + 1, 7, 4L * blocks, 3L * blocks + 4, blocks, blocks, 1};
    double flops[] = {0, 0, 2 * product_macs, 2 * conv_macs, 0, 0, 0, 0, 0};
    ck_assert_int_eq(dm_workspace_profile_read(ws, ops, 32), 9);
    for (int i = 0; i < 9; i++) {
        ck_assert_str_eq(ops[i].entry, entries[i]);
        ck_assert_int_eq(ops[i].calls, calls[i]);
        ck_assert_double_eq(ops[i].flops, flops[i]);
        ck_assert_double_gt(ops[i].seconds, 0);
    }
    ck_assert_int_eq(dm_workspace_profile_read(ws, ops, 2), 9); /* counts all, writes 2 */

    /* settings still reach the backend: on the CPU bfloat16 products
     * change the logits, float32 ones give them back; CUDA has no other */
    dm_status st = dm_workspace_set_precision(ws, DM_PRECISION_BF16);
    if (backend == DM_BACKEND_CPU) {
        ck_assert_msg(st == DM_OK, "%s", dm_last_error());
        ck_assert_msg(dm_forward(m, ws, input, 1, H, W, &out) == DM_OK, "%s", dm_last_error());
        ck_assert(memcmp(got, want, sizeof got) != 0);
        ck_assert_int_eq(dm_workspace_set_precision(ws, DM_PRECISION_F32), DM_OK);
        ck_assert_msg(dm_forward(m, ws, input, 1, H, W, &out) == DM_OK, "%s", dm_last_error());
        ck_assert_mem_eq(got, want, sizeof got);
    } else {
        ck_assert_int_eq(st, DM_ERR_UNSUPPORTED);
    }
    dm_workspace_free(ws);
    if (backend != DM_BACKEND_CPU) { /* the others run a batch at once */
        dm_model_free(m);
        return;
    }

    /* Two images of 224 x 224, which the CPU runs stage 0 of one at a time
     * (a group's buffers within its cache; workspace buffers sized for
     * one): profiled, the pass keeps the backend's groups. */
    enum { BIG = 224 };
    float *big = malloc(sizeof(float) * 2 * 3 * BIG * BIG), want2[2 * CLASSES], got2[2 * CLASSES];
    ck_assert_ptr_nonnull(big);
    for (int i = 0; i < 2 * 3 * BIG * BIG; i++) big[i] = (float)((i * 29) % 83) / 41.0f - 1.0f;
    ck_assert_msg(dm_workspace_create_on(m, backend, 2, BIG, BIG, &ws) == DM_OK, "%s", dm_last_error());
    out.logits = want2;
    ck_assert_msg(dm_forward(m, ws, big, 2, BIG, BIG, &out) == DM_OK, "%s", dm_last_error());
    ck_assert_int_eq(dm_workspace_profile(ws), DM_OK);
    out.logits = got2;
    ck_assert_msg(dm_forward(m, ws, big, 2, BIG, BIG, &out) == DM_OK, "%s", dm_last_error());
    ck_assert_mem_eq(got2, want2, sizeof got2);
    dm_workspace_free(ws);
    free(big);
    dm_model_free(m);
}

int test_with_spare_memory(size_t spare, int (*run)(void *arg), void *arg)
{
#if defined(__SANITIZE_ADDRESS__)
    (void)spare, (void)run, (void)arg;
    printf("not tested under AddressSanitizer, whose shadow memory an address-space limit would refuse\n");
    return -1;
#else
    pid_t child = fork();
    ck_assert_int_ge(child, 0);
    if (child == 0) {
        long pages = 0;
        FILE *statm = fopen("/proc/self/statm", "r");
        int read = statm && fscanf(statm, "%ld", &pages) == 1;
        if (statm) fclose(statm);
        struct rlimit limit;
        limit.rlim_cur = limit.rlim_max = (rlim_t)pages * (rlim_t)sysconf(_SC_PAGESIZE) + spare;
        if (!read || setrlimit(RLIMIT_AS, &limit) != 0) _exit(125);
        /* qemu-user takes the limit without applying it: then nothing is tested */
        void *beyond = malloc(spare + ((size_t)64 << 20));
        if (beyond) _exit(124);
        _exit(run(arg));
    }
    int status;
    ck_assert_int_eq(waitpid(child, &status, 0), child);
    ck_assert_msg(WIFEXITED(status), "the child under a memory limit died of signal %d", WTERMSIG(status));
    ck_assert_msg(WEXITSTATUS(status) != 125, "could not limit the child's address space");
    if (WEXITSTATUS(status) == 124) {
        printf("not tested: the address-space limit does not hold here (an emulator's process)\n");
        return -1;
    }
    return WEXITSTATUS(status);
#endif
}
