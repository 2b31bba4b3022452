/* test_model.c - configurations and parameter counts of the official
 * variants, batch independence, shapes at odd resolutions. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "damamba.h"
#include "host_memory.h"
#include "model.h"
#include "workspace.h"

/* PyTorch's count of trainable parameters (sum of numel over parameters
 * with requires_grad) of the official variants with 1000 classes. */
START_TEST(official_parameter_counts)
{
    static const struct { char v; int64_t params; } want[] = {
        {'F', 5518644}, {'T', 25439870}, {'S', 44991880}, {'B', 85713488},
    };
    dm_model *m;
    ck_assert_int_eq(dm_model_synthetic(want[_i].v, 3, 1000, 1, &m), DM_OK);
    printf("DAMamba-%c: %lld parameters (PyTorch: %lld), %.2f GMACs at 224\n", want[_i].v,
           (long long)dm_model_config(m)->num_params, (long long)want[_i].params, dm_model_macs(m, 224, 224) / 1e9);
    ck_assert_int_eq(dm_model_config(m)->num_params, want[_i].params);
    dm_model_free(m);
}
END_TEST

/* Packing replaces each product's weight by its panels: the unpacked copy
 * is freed as it goes, so the model holds its weights once (a lookup that
 * missed them once left DAMamba-T's 97 MiB held twice: 2.003 times).
 * Measured 1.107: panels padded to 16 columns, buffers that are not
 * parameters, each buffer's header. */
START_TEST(weights_are_held_once)
{
    dm_model *m;
    size_t before = dm_host_held();
    ck_assert_int_eq(dm_model_synthetic('T', 3, 1000, 1, &m), DM_OK);
    size_t held = dm_host_held() - before;
    double ratio = (double)held / (4.0 * (double)dm_model_config(m)->num_params);
    printf("DAMamba-T: its allocations hold %.3f times its parameters' bytes\n", ratio);
    ck_assert_double_lt(ratio, 1.25);
    dm_model_free(m);
}
END_TEST

START_TEST(unknown_variant)
{
    dm_model *m;
    ck_assert_int_eq(dm_model_synthetic('X', 3, 1000, 1, &m), DM_ERR_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(dm_last_error(), "unknown variant 'X'"));
}
END_TEST

static float *random_input(size_t n, unsigned seed)
{
    float *x = malloc(n * sizeof *x);
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        x[i] = (float)(seed >> 8) / 8388608.0f - 1.0f;
    }
    return x;
}

/* Image k of a batch of three gives the same outputs as when run alone, up
 * to float32 rounding: OpenBLAS blocks its sums by matrix size, so a batch
 * reorders additions (measured: about 1.5e-6 of the largest logit). */
#define BATCH_TOL 1e-5
START_TEST(batch_independence)
{
    dm_model *m;
    ck_assert_int_eq(dm_model_load(test_path("micro.safetensors"), NULL, &m), DM_OK);
    const int n = 3, h = 37, w = 29, classes = dm_model_config(m)->num_classes;
    size_t image = (size_t)3 * h * w;
    float *x = random_input(n * image, 7);
    dm_workspace *ws;
    ck_assert_int_eq(dm_workspace_create(m, n, h, w, &ws), DM_OK);
    int C, oh, ow;
    dm_stage_shape(m, h, w, 2, &C, &oh, &ow);
    size_t s2 = (size_t)C * oh * ow;
    float *logits = malloc(sizeof(float) * n * classes), *stage = malloc(sizeof(float) * n * s2);
    dm_outputs all = {.size = sizeof(dm_outputs), .logits = logits, .stages = {NULL, NULL, stage, NULL}};
    ck_assert_int_eq(dm_forward(m, ws, x, n, h, w, &all), DM_OK);
    float *one_logits = malloc(sizeof(float) * classes), *one_stage = malloc(sizeof(float) * s2);
    for (int k = 0; k < n; k++) {
        dm_outputs one = {.size = sizeof(dm_outputs), .logits = one_logits, .stages = {NULL, NULL, one_stage, NULL}};
        ck_assert_int_eq(dm_forward(m, ws, x + k * image, 1, h, w, &one), DM_OK);
        char label[64];
        snprintf(label, sizeof label, "batch image %d logits", k);
        ck_assert_double_le(test_rel_err(label, one_logits, logits + k * classes, classes), BATCH_TOL);
        snprintf(label, sizeof label, "batch image %d stage2", k);
        ck_assert_double_le(test_rel_err(label, one_stage, stage + k * s2, s2), BATCH_TOL);
    }
    free(x); free(logits); free(stage); free(one_logits); free(one_stage);
    dm_workspace_free(ws);
    dm_model_free(m);
}
END_TEST

/* Every output of a pass over n images of h x w: logits, the four stages,
 * one block's offsets (stage 0's last block: T's depth there is odd). */
typedef struct all_outputs {
    float *buf;
    size_t logits, stage[4], offsets, total; /* floats per image of each, and in all */
    dm_outputs o;
} all_outputs;

static void outputs_for(const dm_model *m, int n, int h, int w, all_outputs *a)
{
    const dm_config *c = dm_model_config(m);
    a->logits = c->num_classes;
    a->total = a->logits;
    for (int s = 0; s < 4; s++) {
        int C, oh, ow;
        dm_stage_shape(m, h, w, s, &C, &oh, &ow);
        a->stage[s] = (size_t)C * oh * ow;
        if (s == 0) a->offsets = (size_t)oh * ow * 2 * c->groups[0];
        a->total += a->stage[s];
    }
    a->total += a->offsets;
    a->buf = malloc(sizeof(float) * n * a->total);
    float *p = a->buf;
    a->o = (dm_outputs){.size = sizeof(dm_outputs), .logits = p, .offsets_stage = 0,
                        .offsets_block = c->depths[0] - 1};
    p += n * a->logits;
    for (int s = 0; s < 4; s++) {
        a->o.stages[s] = p;
        p += n * a->stage[s];
    }
    a->o.offsets = p;
}

/* Image k of `batch` equals `alone` (outputs of image k alone), bit for bit. */
static void same_as_alone(const all_outputs *batch, int k, const all_outputs *alone, const char *what)
{
    const float *b[6] = {batch->o.logits, batch->o.stages[0], batch->o.stages[1], batch->o.stages[2],
                         batch->o.stages[3], batch->o.offsets};
    const float *a[6] = {alone->o.logits, alone->o.stages[0], alone->o.stages[1], alone->o.stages[2],
                         alone->o.stages[3], alone->o.offsets};
    size_t count[6] = {batch->logits, batch->stage[0], batch->stage[1], batch->stage[2], batch->stage[3],
                       batch->offsets};
    static const char *names[6] = {"logits", "stage 0", "stage 1", "stage 2", "stage 3", "offsets"};
    for (int i = 0; i < 6; i++)
        ck_assert_msg(memcmp(b[i] + k * count[i], a[i], count[i] * sizeof(float)) == 0,
                      "%s: image %d's %s differ from the image's alone", what, k, names[i]);
}

/* A batch runs each stage's blocks in groups of images that fit the cache
 * (forward.c).  However it is grouped, image k's every output is that of
 * image k alone, bit for bit: on one thread, a product and the scan sum
 * each pixel's terms in the same order whatever the batch. */
START_TEST(batch_in_groups)
{
    dm_model *m;
    ck_assert_msg(dm_model_synthetic('T', 3, 10, 5, &m) == DM_OK, "%s", dm_last_error());
    const int n = 3, h = 32, w = 32; /* stage 0 is 8 x 8 */
    float *x = random_input((size_t)n * 3 * h * w, 17);
    dm_workspace *ws;
    ck_assert_int_eq(dm_workspace_create(m, n, h, w, &ws), DM_OK);
    ck_assert_int_eq(dm_workspace_set_threads(ws, 1), DM_OK);
    all_outputs alone[3], batch;
    for (int k = 0; k < n; k++) {
        outputs_for(m, 1, h, w, &alone[k]);
        ck_assert_int_eq(dm_forward(m, ws, x + (size_t)k * 3 * h * w, 1, h, w, &alone[k].o), DM_OK);
    }
    outputs_for(m, n, h, w, &batch);
    /* the CPU's budget (the whole batch here); two images a group at stage
     * 0, so groups of 2 and 1; one image a group at every stage */
    size_t whole = ws->ops.group_bytes, two = 0;
    do ws->ops.group_bytes = two += 1024;
    while (dm_group_pixels(&m->config, &ws->ops, 0) / 64 < 2);
    ck_assert_uint_lt(dm_group_pixels(&m->config, &ws->ops, 0) / 64, 3);
    size_t budgets[3] = {whole, two, 1};
    static const char *what[3] = {"the whole batch", "groups of 2 and 1", "one image a group"};
    for (int b = 0; b < 3; b++) {
        ws->ops.group_bytes = budgets[b];
        memset(batch.buf, 0, sizeof(float) * n * batch.total);
        ck_assert_int_eq(dm_forward(m, ws, x, n, h, w, &batch.o), DM_OK);
        for (int k = 0; k < n; k++) same_as_alone(&batch, k, &alone[k], what[b]);
    }
    for (int k = 0; k < n; k++) free(alone[k].buf);
    free(batch.buf);
    free(x);
    dm_workspace_free(ws);
    dm_model_free(m);
}
END_TEST

/* A workspace whose images are too large to run a stage together holds
 * one group's buffers, not the batch's: the pass still gives each image's
 * outputs alone.  DAMamba-F at 320 x 320: stage 0's blocks keep about 18
 * MiB per image, over the CPU's 16. */
START_TEST(batch_in_groups_as_planned)
{
    dm_model *m;
    ck_assert_msg(dm_model_synthetic('F', 3, 10, 6, &m) == DM_OK, "%s", dm_last_error());
    const int n = 2, h = 320, w = 320;
    float *x = random_input((size_t)n * 3 * h * w, 19);
    dm_workspace *ws, *whole;
    ck_assert_int_eq(dm_workspace_create(m, n, h, w, &ws), DM_OK);
    ck_assert_int_eq(dm_workspace_create(m, 1, h, w, &whole), DM_OK);
    /* the grouped workspace is not twice the size of one image's */
    ck_assert_uint_lt(dm_workspace_bytes(ws), 2 * dm_workspace_bytes(whole) * 9 / 10);
    ck_assert_int_eq(dm_workspace_set_threads(ws, 1), DM_OK);
    ck_assert_int_eq(dm_workspace_set_threads(whole, 1), DM_OK);
    all_outputs alone, batch;
    outputs_for(m, 1, h, w, &alone);
    outputs_for(m, n, h, w, &batch);
    ck_assert_int_eq(dm_forward(m, ws, x, n, h, w, &batch.o), DM_OK);
    for (int k = 0; k < n; k++) {
        ck_assert_int_eq(dm_forward(m, whole, x + (size_t)k * 3 * h * w, 1, h, w, &alone.o), DM_OK);
        same_as_alone(&batch, k, &alone, "F at 320 x 320");
    }
    free(alone.buf);
    free(batch.buf);
    free(x);
    dm_workspace_free(ws);
    dm_workspace_free(whole);
    dm_model_free(m);
}
END_TEST

/* Stride-2 steps round up as PyTorch's floor((n + 2 - 3) / 2) + 1, down to 1x1. */
START_TEST(stage_shapes)
{
    dm_model *m;
    ck_assert_int_eq(dm_model_load(test_path("micro.safetensors"), NULL, &m), DM_OK);
    static const int sizes[][2] = {{1, 1}, {2, 3}, {17, 5}, {64, 96}, {225, 223}};
    for (int i = 0; i < 5; i++) {
        int h = sizes[i][0], w = sizes[i][1], eh = h, ew = w;
        for (int s = 0; s < 4; s++) {
            int steps = s == 0 ? 2 : 1;
            for (int k = 0; k < steps; k++) {
                eh = (eh + 2 - 3) / 2 + 1;
                ew = (ew + 2 - 3) / 2 + 1;
            }
            int C, oh, ow;
            ck_assert_int_eq(dm_stage_shape(m, h, w, s, &C, &oh, &ow), DM_OK);
            ck_assert_int_eq(oh, eh);
            ck_assert_int_eq(ow, ew);
        }
        /* and the forward pass runs there, with finite outputs */
        dm_workspace *ws;
        ck_assert_int_eq(dm_workspace_create(m, 1, h, w, &ws), DM_OK);
        float *x = random_input((size_t)3 * h * w, 3), logits[10];
        dm_outputs o = {.size = sizeof(dm_outputs), .logits = logits};
        ck_assert_int_eq(dm_forward(m, ws, x, 1, h, w, &o), DM_OK);
        for (int k = 0; k < 10; k++) ck_assert(isfinite(logits[k]));
        free(x);
        dm_workspace_free(ws);
    }
    dm_model_free(m);
}
END_TEST

START_TEST(forward_rejects_bad_calls)
{
    dm_model *m;
    ck_assert_int_eq(dm_model_load(test_path("micro.safetensors"), NULL, &m), DM_OK);
    dm_workspace *ws;
    ck_assert_int_eq(dm_workspace_create(m, 2, 32, 32, &ws), DM_OK);
    float x[3 * 64 * 64] = {0}, logits[30];
    dm_outputs o = {.size = sizeof(dm_outputs), .logits = logits};
    ck_assert_int_eq(dm_forward(m, ws, x, 3, 32, 32, &o), DM_ERR_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(dm_last_error(), "exceeds the workspace"));
    ck_assert_int_eq(dm_forward(m, ws, x, 1, 64, 16, &o), DM_ERR_ARGUMENT);
    ck_assert_int_eq(dm_forward(m, ws, NULL, 1, 16, 16, &o), DM_ERR_ARGUMENT);
    dm_workspace *none = (dm_workspace *)1;
    ck_assert_int_eq(dm_workspace_create(m, 0, 32, 32, &none), DM_ERR_ARGUMENT);
    ck_assert_ptr_null(none);
    dm_workspace_free(ws);
    dm_model_free(m);
}
END_TEST

/* The offsets a block reports are the ones its sampler used: with the offset
 * layer's weight zeroed, they must equal its bias exactly, at every pixel. */
START_TEST(offsets_capture)
{
    dm_tensor_file f;
    test_open("micro.safetensors", &f);
    dm_tensor *tensors = malloc(f.count * sizeof *tensors);
    memcpy(tensors, f.tensors, f.count * sizeof *tensors);
    dm_tensor_file g = f;
    g.tensors = tensors;
    const int stage = 2, block = 1, groups = 6;
    float zero_w[2 * 6 * 96] = {0}, bias[12];
    for (int i = 0; i < 2 * groups; i++) bias[i] = 0.25f * (float)(i - 5);
    for (size_t i = 0; i < g.count; i++) {
        if (!strcmp(tensors[i].name, "stages.2.blocks.1.token_mixer.da_scan.offset.weight")) tensors[i].data = zero_w;
        if (!strcmp(tensors[i].name, "stages.2.blocks.1.token_mixer.da_scan.offset.bias")) tensors[i].data = bias;
    }
    dm_model *m;
    ck_assert_int_eq(dm_model_from_file(&g, &m), DM_OK);
    const int n = 2, h = 50, w = 70;
    int oh, ow;
    dm_stage_shape(m, h, w, stage, NULL, &oh, &ow);
    size_t count = (size_t)n * oh * ow * groups * 2;
    float *x = random_input((size_t)n * 3 * h * w, 11), *off = malloc(count * sizeof *off);
    dm_workspace *ws;
    ck_assert_int_eq(dm_workspace_create(m, n, h, w, &ws), DM_OK);
    dm_outputs o = {.size = sizeof(dm_outputs), .offsets = off, .offsets_stage = stage, .offsets_block = block};
    ck_assert_int_eq(dm_forward(m, ws, x, n, h, w, &o), DM_OK);
    for (size_t i = 0; i < count; i++) ck_assert_float_eq(off[i], bias[i % (2 * groups)]);
    /* and a block that does not exist is refused */
    o.offsets_block = 2;
    ck_assert_int_eq(dm_forward(m, ws, x, n, h, w, &o), DM_ERR_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(dm_last_error(), "no block 2 in stage 2"));
    free(x); free(off); free(tensors);
    dm_workspace_free(ws);
    dm_model_free(m);
    dm_tensor_file_close(&f);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("model");
    TCase *tc = tcase_create("model");
    tcase_set_timeout(tc, 300);
    tcase_add_loop_test(tc, official_parameter_counts, 0, 4);
    tcase_add_test(tc, weights_are_held_once);
    tcase_add_test(tc, unknown_variant);
    tcase_add_test(tc, batch_independence);
    tcase_add_test(tc, batch_in_groups);
    tcase_add_test(tc, batch_in_groups_as_planned);
    tcase_add_test(tc, stage_shapes);
    tcase_add_test(tc, forward_rejects_bad_calls);
    tcase_add_test(tc, offsets_capture);
    suite_add_tcase(s, tc);
    return test_run(s);
}
