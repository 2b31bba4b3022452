/* test_cuda.c - the golden block, small model and DAMamba-F on the CUDA
 * backend, against the same float64 references and tolerance as the CPU
 * suite.  Built only with -Dcuda=enabled; skipped (exit 77) only when the
 * machine has no usable CUDA device, and then a failure instead where
 * DM_TEST_REQUIRE_CUDA is set (on machines that must have one). */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "damamba.h"

START_TEST(cuda_block) { test_golden_block(DM_BACKEND_CUDA); }
END_TEST

START_TEST(cuda_micro) { test_golden_model("micro.safetensors", "micro.io.safetensors", DM_BACKEND_CUDA); }
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

int main(void)
{
    if (dm_backend_available(DM_BACKEND_CUDA) != DM_OK) {
        const char *require = getenv("DM_TEST_REQUIRE_CUDA");
        int required = require && *require && strcmp(require, "0") != 0;
        printf("%s: no CUDA device to test on: %s\n", required ? "FAIL" : "SKIP", dm_last_error());
        return required ? EXIT_FAILURE : 77; /* 77: meson's exit code for a skipped test */
    }
    Suite *s = suite_create("cuda");
    TCase *tc = tcase_create("golden");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, cuda_block);
    tcase_add_test(tc, cuda_micro);
    tcase_add_test(tc, cuda_damamba_f);
    tcase_add_test(tc, cuda_smaller_than_workspace);
    tcase_add_test(tc, cuda_workspace_bound_to_model);
    suite_add_tcase(s, tc);
    return test_run_in_process(s);
}
