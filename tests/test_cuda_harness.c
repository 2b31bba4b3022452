/* test_cuda_harness.c - what only the host harness (-Dgpu_harness=true) can
 * stage: every allocation of a workspace failing in turn, devices the build
 * has no code for, cublasLt without an algorithm for a product (the plain
 * cuBLAS product and a pass then do the epilogue), and the harness's own checks (fresh memory is NaN, a
 * write past the end of a buffer is a fault that stays). */
#include "testutil.h"

#include <cuda_host.h>
#include <cuda_runtime_api.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "damamba.h"

static const size_t device_bytes = (size_t)1 << 30;

static dm_model *small_model(void)
{
    dm_model *m;
    ck_assert_msg(dm_model_synthetic('F', 3, 10, 1, &m) == DM_OK, "%s", dm_last_error());
    return m;
}

/* A forward pass on a fresh workspace of m works. */
static void assert_forward_works(const dm_model *m)
{
    dm_workspace *ws;
    ck_assert_msg(dm_workspace_create_on(m, DM_BACKEND_CUDA, 2, 32, 32, &ws) == DM_OK, "%s", dm_last_error());
    float input[2 * 3 * 32 * 32] = {0}, logits[2 * 10];
    dm_outputs out = {.size = sizeof(dm_outputs), .logits = logits};
    ck_assert_msg(dm_forward(m, ws, input, 2, 32, 32, &out) == DM_OK, "%s", dm_last_error());
    for (int i = 0; i < 2 * 10; i++) ck_assert(isfinite(logits[i]));
    dm_workspace_free(ws);
}

/* Each allocation of workspace creation (device, pinned, cuBLAS's own)
 * fails in turn: each time DM_ERR_NOMEM, nothing left allocated, and the
 * next workspace works. */
START_TEST(harness_each_allocation_fails)
{
    dm_model *m = small_model();
    long failures = 0;
    for (long nth = 1;; nth++) {
        dm_cuda_host_fail_allocation(nth);
        dm_workspace *ws;
        dm_status st = dm_workspace_create_on(m, DM_BACKEND_CUDA, 2, 32, 32, &ws);
        dm_cuda_host_fail_allocation(0);
        if (st == DM_OK) {
            dm_workspace_free(ws);
            break;
        }
        ck_assert_msg(st == DM_ERR_NOMEM, "allocation %ld: %s", nth, dm_last_error());
        ck_assert_uint_eq(dm_cuda_host_live_allocations(), 0);
        assert_forward_works(m);
        failures++;
    }
    printf("workspace creation survived each of its %ld allocations failing\n", failures);
    ck_assert_int_ge(failures, 4); /* parameters, activations, pinned buffers, cuBLAS */
    dm_model_free(m);
}
END_TEST

/* The default gpu_archs (75 80 86 89 90, PTX 90): Volta and Pascal have no
 * code; Orin (8.7) runs the 8.6 code, Blackwell the PTX. */
START_TEST(harness_device_without_code)
{
    dm_model *m = small_model();
    static const int runs[] = {75, 87, 90, 100, 120}, refused[] = {60, 70, 72};
    for (size_t i = 0; i < sizeof runs / sizeof runs[0]; i++) {
        dm_cuda_host_set_devices(1, &runs[i], device_bytes);
        assert_forward_works(m);
    }
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        dm_cuda_host_set_devices(1, &refused[i], device_bytes);
        dm_workspace *ws;
        ck_assert_int_eq(dm_workspace_create_on(m, DM_BACKEND_CUDA, 1, 32, 32, &ws), DM_ERR_UNSUPPORTED);
        char capability[16];
        snprintf(capability, sizeof capability, "%d.%d", refused[i] / 10, refused[i] % 10);
        ck_assert_ptr_nonnull(strstr(dm_last_error(), capability));
        ck_assert_ptr_nonnull(strstr(dm_last_error(), "gpu_archs"));
        ck_assert_uint_eq(dm_cuda_host_live_allocations(), 0);
    }
    printf("%s\n", dm_last_error());
    dm_model_free(m);
}
END_TEST

START_TEST(harness_fresh_memory_is_nan)
{
    float *d, h[4];
    ck_assert_int_eq(cudaMalloc((void **)&d, sizeof h), cudaSuccess);
    ck_assert_int_eq(cudaMemcpy(h, d, sizeof h, cudaMemcpyDeviceToHost), cudaSuccess);
    for (int i = 0; i < 4; i++) ck_assert(isnan(h[i]));
    ck_assert_int_eq(cudaFree(d), cudaSuccess);
}
END_TEST

/* A write one byte past a buffer is found when the buffer is freed, and
 * the fault then fails every call, the library's included, by name. */
START_TEST(harness_guard_bytes)
{
    dm_model *m = small_model();
    dm_workspace *ws;
    ck_assert_msg(dm_workspace_create_on(m, DM_BACKEND_CUDA, 1, 32, 32, &ws) == DM_OK, "%s", dm_last_error());
    char *d;
    ck_assert_int_eq(cudaMalloc((void **)&d, 16), cudaSuccess);
    d[16] = 0; /* the harness's device memory is host memory */
    ck_assert_int_eq(cudaFree(d), cudaErrorIllegalAddress);
    ck_assert_int_eq(cudaGetLastError(), cudaErrorIllegalAddress);
    ck_assert_int_eq(cudaGetLastError(), cudaErrorIllegalAddress);
    float input[3 * 32 * 32] = {0}, logits[10];
    dm_outputs out = {.size = sizeof(dm_outputs), .logits = logits};
    ck_assert_int_eq(dm_forward(m, ws, input, 1, 32, 32, &out), DM_ERR_DEVICE);
    ck_assert_ptr_nonnull(strstr(dm_last_error(), "cudaErrorIllegalAddress"));
    printf("%s\n", dm_last_error());
    dm_workspace_free(ws);
    dm_model_free(m);
}
END_TEST

/* Where cublasLt finds no algorithm, the products fall back to cublasSgemm
 * and a bias and activation pass: the golden model still matches. */
START_TEST(harness_gemm_without_cublaslt)
{
    dm_cuda_host_lt_algorithms(0);
    test_golden_model("micro.safetensors", "micro.io.safetensors", DM_BACKEND_CUDA);
}
END_TEST

/* Each test starts on a fresh simulated machine. */
static void fresh_machine(void)
{
    static const int cc[] = {90, 86};
    dm_cuda_host_set_devices(2, cc, device_bytes);
    dm_cuda_host_lt_algorithms(1);
}

int main(void)
{
    Suite *s = suite_create("cuda_harness");
    TCase *tc = tcase_create("harness");
    tcase_set_timeout(tc, 600);
    tcase_add_checked_fixture(tc, fresh_machine, NULL);
    tcase_add_test(tc, harness_each_allocation_fails);
    tcase_add_test(tc, harness_device_without_code);
    tcase_add_test(tc, harness_fresh_memory_is_nan);
    tcase_add_test(tc, harness_guard_bytes);
    tcase_add_test(tc, harness_gemm_without_cublaslt);
    suite_add_tcase(s, tc);
    return test_run_in_process(s);
}
