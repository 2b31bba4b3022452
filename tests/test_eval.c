/* test_eval.c - the embedded Fashion-MNIST model on its 10,000 test images,
 * through the library's own preprocessing: in float32 it must reach
 * PyTorch's accuracy, agree with PyTorch's prediction on at least 99.9% of
 * the images, and its logits must match the float64 reference.  With its
 * products in bf16 or f16 its top-1 must stay within 0.1 point of
 * PyTorch's float32 accuracy and its prediction agree on at least 99.5% of
 * the images, logits within half_tol. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "damamba.h"

#define BATCH 256

static int argmax(const float *v, int n)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[best]) best = i;
    return best;
}

/* f32, then the half precisions; the logits' bound is relative to the
 * largest logit, the same as the golden DAMamba-F's (test_golden.c).
 * Measured on AVX2 (widened): bf16 2.3e-2, f16 3.1e-3. */
static const dm_precision precisions[] = {DM_PRECISION_F32, DM_PRECISION_BF16, DM_PRECISION_F16};
static const double logit_tol[] = {GOLDEN_TOL, 5e-2, 6e-3};

START_TEST(fmnist_test_set)
{
    dm_precision precision = precisions[_i];
    dm_model *m;
    ck_assert_msg(dm_model_load(getenv("DM_DEFAULT_MODEL"), NULL, &m) == DM_OK, "%s", dm_last_error());
    dm_tensor_file data;
    test_open("fmnist_test.safetensors", &data);
    const dm_tensor *images = dm_tensor_file_find(&data, "images"), *labels = dm_tensor_file_find(&data, "labels");
    const dm_tensor *pred = dm_tensor_file_find(&data, "torch_pred");
    const float *want = test_f32(&data, "logits_expected", NULL);
    ck_assert(images && images->dtype == DM_U8 && images->ndim == 3);
    ck_assert(labels && labels->dtype == DM_I64 && pred && pred->dtype == DM_I64);
    const char *acc_text = dm_tensor_file_meta(&data, "torch_test_accuracy");
    ck_assert_ptr_nonnull(acc_text);
    double torch_acc = atof(acc_text);

    int n = (int)images->shape[0], h = (int)images->shape[1], w = (int)images->shape[2];
    int classes = dm_model_config(m)->num_classes;
    dm_preprocess p = DM_PREPROCESS_INIT;
    ck_assert(dm_preprocess_default(m, &p) == DM_OK);
    int oh, ow;
    ck_assert(dm_preprocess_output_size(&p, w, h, &oh, &ow) == DM_OK);
    dm_workspace *ws;
    ck_assert(dm_workspace_create(m, BATCH, oh, ow, &ws) == DM_OK);
    ck_assert(dm_workspace_set_precision(ws, precision) == DM_OK);
    float *input = malloc(sizeof(float) * BATCH * oh * ow), *logits = malloc(sizeof(float) * BATCH * classes);
    const uint8_t *pixels = images->data;
    int correct = 0, agree = 0;
    double max_err = 0, max_ref = 0;
    for (int start = 0; start < n; start += BATCH) {
        int b = n - start < BATCH ? n - start : BATCH;
        for (int i = 0; i < b; i++) {
            dm_image img = {w, h, 1, (uint8_t *)pixels + (size_t)(start + i) * h * w};
            ck_assert(dm_image_preprocess(&img, &p, input + (size_t)i * oh * ow) == DM_OK);
        }
        dm_outputs out = {.size = sizeof(dm_outputs), .logits = logits};
        ck_assert_msg(dm_forward(m, ws, input, b, oh, ow, &out) == DM_OK, "%s", dm_last_error());
        for (int i = 0; i < b; i++) {
            const float *got = logits + (size_t)i * classes, *ref = want + (size_t)(start + i) * classes;
            int64_t label, torch_pred;
            memcpy(&label, (const char *)labels->data + 8 * (start + i), 8);
            memcpy(&torch_pred, (const char *)pred->data + 8 * (start + i), 8);
            int top = argmax(got, classes);
            correct += top == label;
            agree += top == torch_pred;
            for (int c = 0; c < classes; c++) {
                double e = fabs((double)got[c] - ref[c]);
                if (!(e <= max_err)) max_err = e;
                if (fabs(ref[c]) > max_ref) max_ref = fabs(ref[c]);
            }
        }
    }
    printf("[%s %s] fmnist: top1 %.4f (PyTorch %.4f), agreement with PyTorch %d of %d, logits max abs err %.3e "
           "(max |logit| %.3e)\n",
           dm_isa(), dm_precision_name(precision), (double)correct / n, torch_acc, agree, n, max_err, max_ref);
    if (precision == DM_PRECISION_F32) {
        ck_assert_double_ge((double)correct / n, torch_acc - 1e-9);
        ck_assert_int_ge(agree * 1000, n * 999);
    } else {
        ck_assert_double_le(fabs((double)correct / n - torch_acc), 0.001 + 1e-9);
        ck_assert_int_ge(agree * 1000, n * 995);
    }
    ck_assert_double_le(max_err / max_ref, logit_tol[_i]);
    free(input);
    free(logits);
    dm_workspace_free(ws);
    dm_tensor_file_close(&data);
    dm_model_free(m);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("eval");
    TCase *tc = tcase_create("fmnist");
    tcase_set_timeout(tc, 600);
    tcase_add_loop_test(tc, fmnist_test_set, 0, 3);
    suite_add_tcase(s, tc);
    return test_run(s);
}
