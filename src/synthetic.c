/* synthetic.c - deterministic pseudo-random weights for any official
 * variant, so tests and benchmarks need no checkpoint.  Each tensor's values
 * depend only on the seed and its name.  Scales keep activations of order 1
 * and offsets fractional, so every path of the model is exercised. */
#include "model.h"

#include "error.h"

#include <math.h>
#include <string.h>

static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Uniform in [-1, 1). */
static float uniform(uint64_t *state) { return (float)((splitmix64(state) >> 40) * (2.0 / 16777216.0) - 1.0); }

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

static void generate(void *ctx, const char *name, const dm_tensor *t, float *dst)
{
    uint64_t state = *(const uint64_t *)ctx;
    for (const char *p = name; *p; p++) state = (state ^ (unsigned char)*p) * 0x100000001B3ull;
    int64_t n = t->numel;
    double fan_in = t->ndim > 1 ? (double)(n / t->shape[0]) : 1.0;
    float scale = (float)(1.0 / sqrt(fan_in));
    if (ends_with(name, "conv_constant")) {
        for (int64_t i = 0; i < n; i++) dst[i] = i == 4 ? 1.0f : 0.0f; /* identity tap */
    } else if (ends_with(name, "running_var")) {
        for (int64_t i = 0; i < n; i++) dst[i] = 1.0f + 0.25f * uniform(&state);
    } else if (ends_with(name, "A_logs")) {
        for (int64_t i = 0; i < n; i++) dst[i] = logf(1.0f + (float)(i % 16));
    } else if (ends_with(name, "Ds") || ends_with(name, "layer_scale_1") || ends_with(name, "layer_scale_2")) {
        for (int64_t i = 0; i < n; i++) dst[i] = 0.5f + 0.25f * uniform(&state);
    } else if (t->ndim == 1 && (strstr(name, "norm") || ends_with(name, ".1.weight") ||
                                ends_with(name, ".4.weight") || ends_with(name, ".7.weight") ||
                                ends_with(name, ".10.weight") || strstr(name, "dw_conv.1.1.weight") ||
                                ends_with(name, "bn.weight"))) {
        for (int64_t i = 0; i < n; i++) dst[i] = 1.0f + 0.1f * uniform(&state); /* norm gains */
    } else if (strstr(name, "da_scan.offset")) {
        for (int64_t i = 0; i < n; i++) dst[i] = 1.5f * scale * uniform(&state); /* offsets of about a pixel */
    } else if (t->ndim == 1) {
        for (int64_t i = 0; i < n; i++) dst[i] = 0.1f * uniform(&state); /* biases, means */
    } else {
        for (int64_t i = 0; i < n; i++) dst[i] = scale * uniform(&state);
    }
}

dm_status dm_model_synthetic(char variant, int in_chans, int num_classes, uint64_t seed, dm_model **out)
{
    if (!out) return dm_fail(DM_ERR_ARGUMENT, "dm_model_synthetic: out is required");
    *out = NULL;
    dm_config cfg;
    dm_status st = dm_variant_config(variant, in_chans, num_classes, &cfg);
    if (st) return st;
    dm_param_source src = {.generate = generate, .ctx = &seed};
    return dm_model_build(&cfg, &src, out);
}

dm_status dm_model_synthetic_seg(char variant, int num_classes, int channels, uint64_t seed, dm_model **out)
{
    if (!out) return dm_fail(DM_ERR_ARGUMENT, "dm_model_synthetic_seg: out is required");
    *out = NULL;
    if (num_classes < 2 || num_classes > 65536 || channels < 1 || channels > 65536)
        return dm_fail(DM_ERR_ARGUMENT, "dm_model_synthetic_seg: classes must be 2 to 65536 and channels 1 to 65536");
    dm_config cfg;
    dm_status st = dm_variant_config(variant, 3, 0, &cfg);
    if (st) return st;
    cfg.seg_classes = num_classes;
    cfg.seg_channels = channels;
    dm_param_source src = {.generate = generate, .ctx = &seed};
    return dm_model_build(&cfg, &src, out);
}

dm_status dm_model_synthetic_detector(char variant, int classes, uint64_t seed, dm_model **out)
{
    if (!out) return dm_fail(DM_ERR_ARGUMENT, "dm_model_synthetic_detector: out is required");
    *out = NULL;
    if (classes < 1 || classes > 100000) return dm_fail(DM_ERR_ARGUMENT, "dm_model_synthetic_detector: %d classes", classes);
    dm_config cfg;
    dm_status st = dm_variant_config(variant, 3, 0, &cfg);
    if (st) return st;
    /* the authors' Mask R-CNN: FPN 256, two fc of 1024, four mask convs of 256 */
    cfg.det_classes = classes;
    cfg.fpn_channels = 256;
    cfg.det_fc_channels = 1024;
    cfg.mask_channels = 256;
    cfg.mask_convs = 4;
    dm_param_source src = {.generate = generate, .ctx = &seed};
    return dm_model_build(&cfg, &src, out);
}
