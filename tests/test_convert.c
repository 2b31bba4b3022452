/* test_convert.c - half-size conversions against a rounding computed with
 * C's own arithmetic (testutil.c), `damamba convert`'s library side on
 * micro.pth, and the golden micro model run from F16 weights. */
#include "testutil.h"

#include <fenv.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal_api.h"
#include "damamba.h"
#include "model_file.h"
#include "safetensors.h"
#include "model.h"

START_TEST(f16_decodes_normals_subnormals_and_specials)
{
    static const struct { uint16_t bits; double value; } cases[] = {
        {0x0000, 0.0}, {0x0001, 0x1p-24}, {0x03FF, 1023 * 0x1p-24}, {0x0400, 0x1p-14}, {0x3C00, 1.0},
        {0xC000, -2.0}, {0x3555, 0x1.554p-2}, {0x7BFF, 65504.0}, {0x8001, -0x1p-24}, {0x7C00, INFINITY},
        {0xFC00, -INFINITY},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        ck_assert_msg(dm_f16_to_f32(cases[i].bits) == cases[i].value, "0x%04x -> %a", cases[i].bits,
                      (double)dm_f16_to_f32(cases[i].bits));
    ck_assert(signbit(dm_f16_to_f32(0x8000)) && dm_f16_to_f32(0x8000) == 0);
    ck_assert(isnan(dm_f16_to_f32(0x7E00)) && isnan(dm_f16_to_f32(0xFC01)));
}
END_TEST

START_TEST(bf16_decodes_normals_subnormals_and_specials)
{
    ck_assert(dm_bf16_to_f32(0x3F80) == 1.0f);
    ck_assert(dm_bf16_to_f32(0xC0A0) == -5.0f);
    ck_assert(dm_bf16_to_f32(0x0001) == 0x1p-133f);
    ck_assert(dm_bf16_to_f32(0x7F80) == INFINITY && dm_bf16_to_f32(0xFF80) == -INFINITY);
    ck_assert(isnan(dm_bf16_to_f32(0x7FC0)));
}
END_TEST

/* Pseudo-random floats through the binades lo_exp..hi_exp, every seventh
 * one a tie (one bit beyond the format's precision), against the reference. */
static void check_encoder(uint16_t (*encode)(float), float (*decode)(uint16_t), double (*ref)(double), int bits,
                          int lo_exp, int hi_exp)
{
    ck_assert_int_eq(fegetround(), FE_TONEAREST);
    uint64_t state = 12345;
    for (int e = lo_exp; e <= hi_exp; e++)
        for (int k = 0; k < 2000; k++) {
            state = state * 6364136223846793005ULL + 1442695040888963407ULL;
            double m = 1.0 + (double)(state >> 40) / (1 << 24);
            if (k % 7 == 0) m = (floor(ldexp(m, bits - 1)) + 0.5) / ldexp(1.0, bits - 1);
            float x = (float)ldexp(k % 2 ? -m : m, e);
            double want = ref(x), got = decode(encode(x));
            ck_assert_msg(got == want, "%a -> %a, expected %a", (double)x, got, want);
        }
}

START_TEST(f16_encoder_rounds_to_nearest_even)
{
    check_encoder(dm_f32_to_f16, dm_f16_to_f32, test_f16_round, 11, -30, 17);
    ck_assert(dm_f16_to_f32(dm_f32_to_f16(1.0f + 0x1p-11f)) == 1.0f);              /* tie: down to even */
    ck_assert(dm_f16_to_f32(dm_f32_to_f16(1.0f + 3 * 0x1p-11f)) == 1.0f + 0x1p-9f); /* tie: up to even */
    ck_assert(dm_f16_to_f32(dm_f32_to_f16(0x1p-25f)) == 0.0f);                      /* subnormal tie */
    ck_assert(dm_f16_to_f32(dm_f32_to_f16(3 * 0x1p-25f)) == 0x1p-23f);
    ck_assert(dm_f16_to_f32(dm_f32_to_f16(65519.0f)) == 65504.0f);
    ck_assert(dm_f16_to_f32(dm_f32_to_f16(65520.0f)) == INFINITY);
    ck_assert(dm_f32_to_f16(-INFINITY) == 0xFC00);
    ck_assert(isnan(dm_f16_to_f32(dm_f32_to_f16(NAN))));
    ck_assert(isnan(dm_f16_to_f32(dm_f32_to_f16(-nanf("0x1")))));                   /* low payload bits only */
}
END_TEST

START_TEST(bf16_encoder_rounds_to_nearest_even)
{
    check_encoder(dm_f32_to_bf16, dm_bf16_to_f32, test_bf16_round, 8, -140, 126);
    ck_assert(dm_bf16_to_f32(dm_f32_to_bf16(0x1.FFFFFEp127f)) == INFINITY);
    ck_assert(dm_f32_to_bf16(INFINITY) == 0x7F80);
    ck_assert(isnan(dm_bf16_to_f32(dm_f32_to_bf16(nanf("0x1")))));
}
END_TEST

/* ------------------------------------------------------- dm_convert */

static char tmpdir[64];

static void make_tmpdir(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/dm_convert_XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static const char *tmp_file(const char *name)
{
    static char path[128];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    return path;
}

static void remove_tmpdir(void)
{
    static const char *names[] = {"f32.safetensors", "f16.safetensors", "bf16.safetensors", "ema.safetensors",
                                  "big.safetensors", "big_f16.safetensors"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) remove(tmp_file(names[i]));
    rmdir(tmpdir);
}

static void convert_ok(const char *name, int use_ema, dm_dtype dtype, dm_tensor_file *out)
{
    const char *path = tmp_file(name);
    ck_assert_msg(dm_convert(test_path("micro.pth"), path, use_ema, dtype) == DM_OK, "%s", dm_last_error());
    ck_assert_msg(dm_safetensors_open(path, out) == DM_OK, "%s", dm_last_error());
}

START_TEST(f32_round_trip_is_bit_exact_with_official_metadata)
{
    dm_tensor_file got, want;
    convert_ok("f32.safetensors", 0, DM_F32, &got);
    test_open("micro.safetensors", &want);
    ck_assert_uint_eq(got.count, want.count);
    for (size_t i = 0; i < want.count; i++) {
        const dm_tensor *a = dm_tensor_file_find(&got, want.tensors[i].name), *b = &want.tensors[i];
        ck_assert_msg(a && a->dtype == b->dtype && a->nbytes == b->nbytes && a->ndim == b->ndim, "%s", b->name);
        ck_assert_msg(memcmp(a->data, b->data, b->nbytes) == 0, "%s differs", b->name);
    }
    /* The authors' configuration, as the golden file's metadata states it. */
    static const char *keys[] = {"depths", "dims", "mlp_ratios", "head_dim", "layerscale", "num_classes"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        const char *a = dm_tensor_file_meta(&got, keys[i]), *b = dm_tensor_file_meta(&want, keys[i]);
        ck_assert_msg(a && b && strcmp(a, b) == 0, "%s: '%s' vs '%s'", keys[i], a ? a : "(none)", b);
    }
    ck_assert_str_eq(dm_tensor_file_meta(&got, "source"), "micro.pth");
    ck_assert_str_eq(dm_tensor_file_meta(&got, "in_chans"), "3");
    dm_tensor_file_close(&got);
    dm_tensor_file_close(&want);
}
END_TEST

START_TEST(ema_conversion_takes_model_ema)
{
    dm_tensor_file got, want;
    convert_ok("ema.safetensors", 1, DM_F32, &got);
    ck_assert(dm_model_file_open(test_path("micro.pth"), 1, &want) == DM_OK);
    const dm_tensor *a = dm_tensor_file_find(&got, "head.fc.weight"), *b = dm_tensor_file_find(&want, "head.fc.weight");
    ck_assert(a && b && a->nbytes == b->nbytes && memcmp(a->data, b->data, b->nbytes) == 0);
    dm_tensor_file_close(&got);
    dm_tensor_file_close(&want);
}
END_TEST

START_TEST(conversion_refuses_its_own_input)
{
    const char *path = tmp_file("f32.safetensors");
    ck_assert(dm_convert(test_path("micro.pth"), path, 0, DM_F32) == DM_OK);
    ck_assert_int_eq(dm_convert(path, path, 0, DM_F16), DM_ERR_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(dm_last_error(), "the output is the input file"));
    ck_assert_int_eq(dm_convert(test_path("micro.pth"), path, 0, DM_I64), DM_ERR_ARGUMENT);
}
END_TEST

/* A weight beyond F16's range is refused for F16, naming it, and the
 * output not written; 65504, the largest F16, converts, as does it to
 * BF16.  A weight that any narrower type would make infinite is refused. */
START_TEST(f16_refuses_weights_beyond_its_range)
{
    dm_tensor_file micro;
    test_open("micro.safetensors", &micro);
    dm_tensor *t = calloc(micro.count, sizeof *t);
    memcpy(t, micro.tensors, micro.count * sizeof *t);
    size_t w = 0;
    while (t[w].dtype != DM_F32 || t[w].numel < 2) w++;
    float *data = malloc(t[w].nbytes);
    memcpy(data, t[w].data, t[w].nbytes);
    t[w].data = data;
    char big[512], out[512]; /* tmp_file's buffer is reused */
    snprintf(big, sizeof big, "%s", tmp_file("big.safetensors"));
    snprintf(out, sizeof out, "%s", tmp_file("big_f16.safetensors"));
    const float values[] = {65504.0f, -65520.0f};
    for (int i = 0; i < 2; i++) {
        data[1] = values[i];
        ck_assert_int_eq(dm_safetensors_write(big, t, micro.count, NULL, 0), DM_OK);
        unlink(out);
        dm_status st = dm_convert(big, out, 0, DM_F16);
        if (i == 0) {
            ck_assert_msg(st == DM_OK, "%s", dm_last_error());
            continue;
        }
        ck_assert_int_eq(st, DM_ERR_ARGUMENT);
        char says[160];
        snprintf(says, sizeof says, "tensor '%s' holds -65520, beyond F16's largest value", t[w].name);
        ck_assert_msg(strstr(dm_last_error(), says), "%s", dm_last_error());
        ck_assert_int_ne(access(out, F_OK), 0);
        ck_assert_msg(dm_convert(big, out, 0, DM_BF16) == DM_OK, "%s", dm_last_error());
    }
    /* so is one beyond BF16's (F32's largest rounds up to infinity there),
     * and an F64 weight beyond F32's, whatever the output type */
    char says[160];
    data[1] = FLT_MAX;
    ck_assert_int_eq(dm_safetensors_write(big, t, micro.count, NULL, 0), DM_OK);
    unlink(out);
    ck_assert_int_eq(dm_convert(big, out, 0, DM_BF16), DM_ERR_ARGUMENT);
    snprintf(says, sizeof says, "tensor '%s' holds 3.40282e+38, beyond BF16's largest value", t[w].name);
    ck_assert_msg(strstr(dm_last_error(), says), "%s", dm_last_error());
    ck_assert_int_ne(access(out, F_OK), 0);
    double *wide = calloc((size_t)t[w].numel, sizeof *wide);
    wide[1] = 1e39;
    t[w] = (dm_tensor){.name = t[w].name, .dtype = DM_F64, .ndim = t[w].ndim, .numel = t[w].numel,
                       .data = wide, .nbytes = (size_t)t[w].numel * sizeof *wide};
    memcpy(t[w].shape, micro.tensors[w].shape, sizeof t[w].shape);
    ck_assert_int_eq(dm_safetensors_write(big, t, micro.count, NULL, 0), DM_OK);
    for (int i = 0; i < 3; i++) {
        const dm_dtype to[] = {DM_F32, DM_F16, DM_BF16};
        ck_assert_int_eq(dm_convert(big, out, 0, to[i]), DM_ERR_ARGUMENT);
        snprintf(says, sizeof says, "tensor '%s' holds 1e+39, beyond F32's largest value", t[w].name);
        ck_assert_msg(strstr(dm_last_error(), says), "%s", dm_last_error());
        ck_assert_int_ne(access(out, F_OK), 0);
    }
    free(wide);
    free(data);
    free(t);
    dm_tensor_file_close(&micro);
}
END_TEST

/* Run micro's golden input; outputs[0..3] stages, [4] logits. */
static void run_micro(const dm_model *m, float *outputs[5], size_t counts[5])
{
    dm_tensor_file io;
    test_open("micro.io.safetensors", &io);
    const dm_tensor *x = dm_tensor_file_find(&io, "input");
    int n = (int)x->shape[0], h = (int)x->shape[2], w = (int)x->shape[3];
    dm_workspace *ws;
    ck_assert(dm_workspace_create(m, n, h, w, &ws) == DM_OK);
    dm_outputs out = DM_OUTPUTS_INIT;
    for (int s = 0; s < 5; s++) {
        char name[32];
        if (s < 4) snprintf(name, sizeof name, "stage%d.expected", s);
        test_f32(&io, s < 4 ? name : "logits.expected", &counts[s]);
        outputs[s] = malloc(counts[s] * sizeof(float));
        if (s < 4) out.stages[s] = outputs[s];
    }
    out.logits = outputs[4];
    ck_assert_msg(dm_forward(m, ws, x->data, n, h, w, &out) == DM_OK, "%s", dm_last_error());
    dm_workspace_free(ws);
    dm_tensor_file_close(&io);
}

/* Convert micro to half size: each weight must be the reference rounding of
 * the float32 one; the model must compute exactly what float32 weights
 * rounded the same way compute; and its distance to the golden outputs is
 * reported and bounded in units of the format's unit roundoff.  Measured:
 * 2.3 to 4.1 units for F16, 3.5 to 11.2 for BF16 (the stem's folded
 * BatchNorm is the most sensitive); the bound is 16 units. */
static void check_half_size(const char *name, dm_dtype dtype, double (*ref)(double), double unit_roundoff,
                            double bound_in_units)
{
    dm_tensor_file half, full;
    convert_ok(name, 0, dtype, &half);
    test_open("micro.safetensors", &full);
    /* The reference: float32 weights rounded by C arithmetic. */
    dm_tensor_file rounded = {.count = full.count, .tensors = calloc(full.count, sizeof(dm_tensor))};
    for (size_t i = 0; i < full.count; i++) {
        const dm_tensor *t = &full.tensors[i], *h = dm_tensor_file_find(&half, t->name);
        rounded.tensors[i] = *t;
        ck_assert_ptr_nonnull(h);
        if (t->dtype != DM_F32) continue;
        ck_assert_int_eq(h->dtype, dtype);
        float *r = malloc(t->nbytes), *got = malloc(t->nbytes);
        dm_tensor_to_f32(t, r);
        dm_tensor_to_f32(h, got);
        for (int64_t j = 0; j < t->numel; j++) {
            r[j] = (float)ref(r[j]);
            ck_assert_msg(got[j] == r[j], "%s[%lld]: %a, expected %a", t->name, (long long)j, got[j], r[j]);
        }
        rounded.tensors[i].data = r;
        free(got);
    }
    dm_model *m_half, *m_ref;
    ck_assert_msg(dm_model_load(tmp_file(name), NULL, &m_half) == DM_OK, "%s", dm_last_error());
    ck_assert_msg(dm_model_from_file(&rounded, &m_ref) == DM_OK, "%s", dm_last_error());
    float *a[5], *b[5];
    size_t counts[5];
    run_micro(m_half, a, counts);
    run_micro(m_ref, b, counts);
    dm_tensor_file io;
    test_open("micro.io.safetensors", &io);
    for (int s = 0; s < 5; s++) {
        ck_assert_msg(memcmp(a[s], b[s], counts[s] * sizeof(float)) == 0, "output %d differs from the reference run", s);
        char label[64], key[32];
        snprintf(key, sizeof key, s < 4 ? "stage%d.expected" : "logits.expected", s);
        snprintf(label, sizeof label, "%s %s vs float32 golden", name, key);
        double rel = test_rel_err(label, a[s], test_f32(&io, key, NULL), counts[s]);
        ck_assert_double_le(rel, bound_in_units * unit_roundoff);
        free(a[s]);
        free(b[s]);
    }
    for (size_t i = 0; i < full.count; i++)
        if (full.tensors[i].dtype == DM_F32) free((void *)rounded.tensors[i].data);
    free(rounded.tensors);
    dm_model_free(m_half);
    dm_model_free(m_ref);
    dm_tensor_file_close(&io);
    dm_tensor_file_close(&half);
    dm_tensor_file_close(&full);
}

START_TEST(f16_weights_are_rounded_and_run_as_rounded)
{
    check_half_size("f16.safetensors", DM_F16, test_f16_round, 0x1p-11, 16);
}
END_TEST

START_TEST(bf16_weights_are_rounded_and_run_as_rounded)
{
    check_half_size("bf16.safetensors", DM_BF16, test_bf16_round, 0x1p-8, 16);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("convert");
    TCase *tc = tcase_create("dtypes");
    tcase_add_test(tc, f16_decodes_normals_subnormals_and_specials);
    tcase_add_test(tc, bf16_decodes_normals_subnormals_and_specials);
    tcase_add_test(tc, f16_encoder_rounds_to_nearest_even);
    tcase_add_test(tc, bf16_encoder_rounds_to_nearest_even);
    suite_add_tcase(s, tc);
    TCase *tv = tcase_create("convert");
    tcase_set_timeout(tv, 300);
    tcase_add_checked_fixture(tv, make_tmpdir, remove_tmpdir);
    tcase_add_test(tv, f32_round_trip_is_bit_exact_with_official_metadata);
    tcase_add_test(tv, ema_conversion_takes_model_ema);
    tcase_add_test(tv, conversion_refuses_its_own_input);
    tcase_add_test(tv, f16_refuses_weights_beyond_its_range);
    tcase_add_test(tv, f16_weights_are_rounded_and_run_as_rounded);
    tcase_add_test(tv, bf16_weights_are_rounded_and_run_as_rounded);
    suite_add_tcase(s, tv);
    return test_run(s);
}
