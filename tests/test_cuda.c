/* test_cuda.c - the golden block, small model and DAMamba-F on the CUDA
 * backend, against the same float64 references and tolerance as the CPU
 * suite; the CPU backend as the reference for shapes the golden files do
 * not have; recovery from failed calls, and device choice.  Built with
 * -Dcuda=enabled or -Dgpu_harness=true; skipped (exit 77) only when the
 * machine has no usable CUDA device, and then a failure instead where
 * DM_TEST_REQUIRE_CUDA is set (on machines that must have one). */
#include "testutil.h"

#include <cuda_runtime_api.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "damamba.h"

START_TEST(cuda_block) { test_golden_block(DM_BACKEND_CUDA); }
END_TEST

START_TEST(cuda_micro) { test_golden_model("micro.safetensors", "micro.io.safetensors", DM_BACKEND_CUDA); }
END_TEST

START_TEST(cuda_profile) { test_operator_profile(DM_BACKEND_CUDA); }
END_TEST

START_TEST(cuda_damamba_f)
{
    test_golden_model("damamba_f.safetensors", "damamba_f.io.safetensors", DM_BACKEND_CUDA);
}
END_TEST

/* A batch and image smaller than the workspace, logits only: the chunked
 * copy-in and the scan's chunking follow the call, not the plan. */
START_TEST(cuda_smaller_than_workspace)
{
    dm_model *m;
    ck_assert_msg(dm_model_load(test_path("micro.safetensors"), NULL, &m) == DM_OK, "%s", dm_last_error());
    dm_tensor_file io;
    test_open("micro.io.safetensors", &io);
    const dm_tensor *t = dm_tensor_file_find(&io, "input");
    int n = (int)t->shape[0], h = (int)t->shape[2], w = (int)t->shape[3];
    size_t count;
    const float *want = test_f32(&io, "logits.expected", &count);
    dm_workspace *ws;
    ck_assert_msg(dm_workspace_create_on(m, DM_BACKEND_CUDA, 3 * n, h + 37, w + 5, &ws) == DM_OK, "%s",
                  dm_last_error());
    float *logits = malloc(sizeof(float) * count);
    dm_outputs out = {.size = sizeof(dm_outputs), .logits = logits};
    ck_assert_msg(dm_forward(m, ws, t->data, n, h, w, &out) == DM_OK, "%s", dm_last_error());
    ck_assert_double_le(test_rel_err("[cuda] micro logits, larger workspace", logits, want, count), GOLDEN_TOL);
    free(logits);
    dm_workspace_free(ws);
    dm_model_free(m);
    dm_tensor_file_close(&io);
}
END_TEST

/* A CUDA workspace holds one model's parameters; another model is refused. */
START_TEST(cuda_workspace_bound_to_model)
{
    dm_model *a, *b;
    ck_assert(dm_model_synthetic('F', 3, 10, 1, &a) == DM_OK);
    ck_assert(dm_model_synthetic('F', 3, 10, 2, &b) == DM_OK);
    dm_workspace *ws;
    ck_assert_msg(dm_workspace_create_on(a, DM_BACKEND_CUDA, 1, 32, 32, &ws) == DM_OK, "%s", dm_last_error());
    ck_assert_int_eq(dm_workspace_backend(ws), DM_BACKEND_CUDA);
    float input[3 * 32 * 32] = {0}, logits[10];
    dm_outputs out = {.size = sizeof(dm_outputs), .logits = logits};
    ck_assert_int_eq(dm_forward(b, ws, input, 1, 32, 32, &out), DM_ERR_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(dm_last_error(), "another model"));
    ck_assert_msg(dm_forward(a, ws, input, 1, 32, 32, &out) == DM_OK, "%s", dm_last_error());
    dm_workspace_free(ws);
    dm_model_free(a);
    dm_model_free(b);
}
END_TEST

/* Every output of a forward pass: logits, stage outputs, one block's
 * offsets. */
typedef struct all_outputs {
    dm_outputs out;
    size_t counts[DM_NUM_STAGES + 2];
} all_outputs;

static void outputs_alloc(const dm_model *m, int n, int h, int w, int offsets_stage, int offsets_block,
                          all_outputs *a)
{
    const dm_config *c = dm_model_config(m);
    memset(a, 0, sizeof *a);
    a->out.size = sizeof a->out;
    h = (h + 1) / 2, w = (w + 1) / 2; /* the stem: two stride-2 convolutions */
    for (int s = 0; s < DM_NUM_STAGES; s++) {
        h = (h + 1) / 2, w = (w + 1) / 2;
        if (s == offsets_stage) {
            a->counts[DM_NUM_STAGES + 1] = (size_t)n * h * w * c->groups[s] * 2;
            a->out.offsets = malloc(sizeof(float) * a->counts[DM_NUM_STAGES + 1]);
            a->out.offsets_stage = offsets_stage;
            a->out.offsets_block = offsets_block;
        }
        a->counts[s] = (size_t)n * c->dims[s] * h * w;
        a->out.stages[s] = malloc(sizeof(float) * a->counts[s]);
    }
    a->counts[DM_NUM_STAGES] = (size_t)n * c->num_classes;
    a->out.logits = malloc(sizeof(float) * a->counts[DM_NUM_STAGES]);
}

static float *output_of(all_outputs *a, int k)
{
    return k < DM_NUM_STAGES ? a->out.stages[k] : k == DM_NUM_STAGES ? a->out.logits : a->out.offsets;
}

static void outputs_free(all_outputs *a)
{
    for (int k = 0; k < DM_NUM_STAGES + 2; k++) free(output_of(a, k));
}

/* Inputs in [-2, 2) from a fixed seed. */
static float *random_input(size_t count, uint32_t seed)
{
    float *x = malloc(sizeof(float) * count);
    for (size_t i = 0; i < count; i++) {
        seed = seed * 1664525u + 1013904223u;
        x[i] = (float)(seed >> 8) / (float)(1u << 24) * 4.0f - 2.0f;
    }
    return x;
}

/* The micro model on each (n, h, w) in turn, through one CUDA workspace and
 * one CPU workspace, every output compared. */
static void compare_with_cpu(const int (*shapes)[3], int count, int max_n, int max_h, int max_w)
{
    dm_model *m;
    ck_assert_msg(dm_model_load(test_path("micro.safetensors"), NULL, &m) == DM_OK, "%s", dm_last_error());
    dm_workspace *gpu, *cpu;
    ck_assert_msg(dm_workspace_create_on(m, DM_BACKEND_CUDA, max_n, max_h, max_w, &gpu) == DM_OK, "%s",
                  dm_last_error());
    ck_assert_msg(dm_workspace_create(m, max_n, max_h, max_w, &cpu) == DM_OK, "%s", dm_last_error());
    for (int i = 0; i < count; i++) {
        int n = shapes[i][0], h = shapes[i][1], w = shapes[i][2];
        float *input = random_input((size_t)n * 3 * h * w, 7u + (uint32_t)i);
        all_outputs want, got;
        outputs_alloc(m, n, h, w, 2, 1, &want);
        outputs_alloc(m, n, h, w, 2, 1, &got);
        ck_assert_msg(dm_forward(m, cpu, input, n, h, w, &want.out) == DM_OK, "%s", dm_last_error());
        ck_assert_msg(dm_forward(m, gpu, input, n, h, w, &got.out) == DM_OK, "%s", dm_last_error());
        static const char *names[] = {"stage0", "stage1", "stage2", "stage3", "logits", "offsets"};
        for (int k = 0; k < DM_NUM_STAGES + 2; k++) {
            char label[80];
            snprintf(label, sizeof label, "[cuda] %d x %dx%d %s vs cpu", n, h, w, names[k]);
            ck_assert_double_le(test_rel_err(label, output_of(&got, k), output_of(&want, k), want.counts[k]),
                                GOLDEN_TOL);
        }
        outputs_free(&want);
        outputs_free(&got);
        free(input);
    }
    dm_workspace_free(gpu);
    dm_workspace_free(cpu);
    dm_model_free(m);
}

/* Batches that do not split evenly into the copy-in chunks, odd sizes down
 * to 1x1 maps in the last stage, and calls in a row with other inputs and
 * shapes, each against the CPU backend. */
START_TEST(cuda_shapes_vs_cpu)
{
    static const int shapes[][3] = {{5, 29, 31}, {3, 64, 48}, {1, 7, 9}, {5, 29, 31}};
    compare_with_cpu(shapes, 4, 5, 64, 48);
}
END_TEST

/* One output at a time (a stage, the logits, offsets alone), each equal
 * to the same output of a pass that asks for all. */
START_TEST(cuda_partial_outputs)
{
    dm_model *m;
    ck_assert_msg(dm_model_load(test_path("micro.safetensors"), NULL, &m) == DM_OK, "%s", dm_last_error());
    int n = 3, h = 37, w = 41;
    dm_workspace *ws;
    ck_assert_msg(dm_workspace_create_on(m, DM_BACKEND_CUDA, n, h, w, &ws) == DM_OK, "%s", dm_last_error());
    float *input = random_input((size_t)n * 3 * h * w, 11u);
    all_outputs all, one;
    outputs_alloc(m, n, h, w, 3, 0, &all);
    outputs_alloc(m, n, h, w, 3, 0, &one);
    ck_assert_msg(dm_forward(m, ws, input, n, h, w, &all.out) == DM_OK, "%s", dm_last_error());
    for (int k = 0; k < DM_NUM_STAGES + 2; k++) {
        dm_outputs only = {.size = sizeof(dm_outputs), .offsets_stage = 3, .offsets_block = 0};
        if (k < DM_NUM_STAGES) only.stages[k] = one.out.stages[k];
        else if (k == DM_NUM_STAGES) only.logits = one.out.logits;
        else only.offsets = one.out.offsets;
        ck_assert_msg(dm_forward(m, ws, input, n, h, w, &only) == DM_OK, "%s", dm_last_error());
        char label[64];
        snprintf(label, sizeof label, "[cuda] output %d alone vs all", k);
        ck_assert_double_eq(test_rel_err(label, output_of(&one, k), output_of(&all, k), all.counts[k]), 0.0);
    }
    outputs_free(&all);
    outputs_free(&one);
    free(input);
    dm_workspace_free(ws);
    dm_model_free(m);
}
END_TEST

/* A workspace too large for the device fails, cleanly: a smaller one then
 * works, as does a forward pass after a failed call of the caller's own.
 * Too large is the most pixels the library takes (2^30): of DAMamba-F
 * (222 GB), or of DAMamba-B (about twice that) on a device that holds F's. */
START_TEST(cuda_recovers_from_failed_calls)
{
    dm_status st = DM_OK;
    for (const char *v = "FB"; *v && st == DM_OK; v++) {
        dm_model *m;
        ck_assert(dm_model_synthetic(*v, 3, 10, 1, &m) == DM_OK);
        dm_workspace *ws = NULL;
        st = dm_workspace_create_on(m, DM_BACKEND_CUDA, 1024, 1024, 1024, &ws);
        if (st == DM_OK)
            printf("the device holds DAMamba-%c's largest workspace, %zu bytes\n", *v, dm_workspace_bytes(ws));
        else
            ck_assert_ptr_null(ws);
        dm_workspace_free(ws);
        dm_model_free(m);
    }
    ck_assert_int_eq(st, DM_ERR_NOMEM);
    printf("too large a workspace: %s\n", dm_last_error());
    void *p = NULL;
    ck_assert_int_ne(cudaMalloc(&p, (size_t)1 << 60), cudaSuccess);
    test_golden_model("micro.safetensors", "micro.io.safetensors", DM_BACKEND_CUDA);
}
END_TEST

/* Workspaces on a chosen device; the caller's current device stays. */
START_TEST(cuda_device_choice)
{
    int count = 0;
    ck_assert_int_eq(cudaGetDeviceCount(&count), cudaSuccess);
    dm_model *m;
    ck_assert(dm_model_synthetic('F', 3, 10, 1, &m) == DM_OK);
    dm_workspace *ws;
    ck_assert_int_eq(dm_workspace_create_on_device(m, DM_BACKEND_CUDA, count, 1, 32, 32, &ws), DM_ERR_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(dm_last_error(), "no CUDA device"));
    ck_assert_int_eq(dm_workspace_create_on_device(m, DM_BACKEND_CUDA, -1, 1, 32, 32, &ws), DM_ERR_ARGUMENT);
    ck_assert_int_eq(cudaSetDevice(0), cudaSuccess);
    int device = count - 1, current = -1;
    ck_assert_msg(dm_workspace_create_on_device(m, DM_BACKEND_CUDA, device, 1, 32, 32, &ws) == DM_OK, "%s",
                  dm_last_error());
    ck_assert_int_eq(cudaGetDevice(&current), cudaSuccess);
    ck_assert_int_eq(current, 0);
    float input[3 * 32 * 32] = {0}, logits[10];
    dm_outputs out = {.size = sizeof(dm_outputs), .logits = logits};
    ck_assert_msg(dm_forward(m, ws, input, 1, 32, 32, &out) == DM_OK, "%s", dm_last_error());
    ck_assert_int_eq(cudaGetDevice(&current), cudaSuccess);
    ck_assert_int_eq(current, 0);
    dm_workspace_free(ws);
    ck_assert_int_eq(cudaGetDevice(&current), cudaSuccess);
    ck_assert_int_eq(current, 0);
    printf("workspace on device %d of %d; the current device stayed 0\n", device, count);
    dm_model_free(m);
}
END_TEST

int main(void)
{
    int missing = test_cuda_missing();
    if (missing) return missing;
    Suite *s = suite_create("cuda");
    TCase *tc = tcase_create("golden");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, cuda_block);
    tcase_add_test(tc, cuda_micro);
    tcase_add_test(tc, cuda_damamba_f);
    tcase_add_test(tc, cuda_profile);
    tcase_add_test(tc, cuda_smaller_than_workspace);
    tcase_add_test(tc, cuda_workspace_bound_to_model);
    tcase_add_test(tc, cuda_shapes_vs_cpu);
    tcase_add_test(tc, cuda_partial_outputs);
    tcase_add_test(tc, cuda_recovers_from_failed_calls);
    tcase_add_test(tc, cuda_device_choice);
    suite_add_tcase(s, tc);
    return test_run_in_process(s);
}
