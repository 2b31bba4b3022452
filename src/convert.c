/* convert.c - model files to safetensors, optionally in half size. */
#include "internal_api.h"

#include "error.h"
#include "model.h"
#include "model_file.h"
#include "safetensors.h"

#include <stdio.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static int is_float(dm_dtype t) { return t == DM_F32 || t == DM_F16 || t == DM_BF16 || t == DM_F64; }

/* "[a, b, c, d]" */
static void int_list(char *buf, size_t n, const int *v)
{
    snprintf(buf, n, "[%d, %d, %d, %d]", v[0], v[1], v[2], v[3]);
}

/* The configuration in the keys the golden files' metadata uses. */
static dm_status describe(const dm_config *c, const char *source, dm_meta *meta, size_t *count)
{
    char depths[64], dims[64], ratios[96], head_dim[64], ls[64], in_chans[16], classes[16];
    int heads[4];
    int_list(depths, sizeof depths, c->depths);
    int_list(dims, sizeof dims, c->dims);
    int_list(ls, sizeof ls, c->layer_scale);
    snprintf(ratios, sizeof ratios, "[%g, %g, %g, %g]", (double)c->mlp_hidden[0] / c->dims[0],
             (double)c->mlp_hidden[1] / c->dims[1], (double)c->mlp_hidden[2] / c->dims[2],
             (double)c->mlp_hidden[3] / c->dims[3]);
    for (int s = 0; s < 4; s++) heads[s] = c->dims[s] / c->groups[s];
    if (heads[0] == heads[1] && heads[1] == heads[2] && heads[2] == heads[3])
        snprintf(head_dim, sizeof head_dim, "%d", heads[0]);
    else
        int_list(head_dim, sizeof head_dim, heads);
    snprintf(in_chans, sizeof in_chans, "%d", c->in_chans);
    snprintf(classes, sizeof classes, "%d", c->num_classes);
    const char *kv[][2] = {{"depths", depths}, {"dims", dims}, {"mlp_ratios", ratios}, {"head_dim", head_dim},
                           {"layerscale", ls}, {"in_chans", in_chans}, {"num_classes", classes},
                           {"source", source}};
    for (size_t i = 0; i < sizeof kv / sizeof kv[0]; i++) {
        dm_meta *m = &meta[(*count)++];
        m->key = strdup(kv[i][0]);
        m->value = strdup(kv[i][1]);
        if (!m->key || !m->value) return dm_fail(DM_ERR_NOMEM, "out of memory");
    }
    return DM_OK;
}

/* Metadata of the input that the new configuration keys do not replace. */
static dm_status carry_meta(const dm_tensor_file *in, dm_meta *ours, size_t n_ours, dm_meta *meta, size_t *count)
{
    for (size_t i = 0; i < in->meta_count; i++) {
        int replaced = 0;
        for (size_t j = 0; j < n_ours; j++) replaced |= strcmp(in->meta[i].key, ours[j].key) == 0;
        if (replaced) continue;
        dm_meta *m = &meta[(*count)++];
        m->key = strdup(in->meta[i].key);
        m->value = strdup(in->meta[i].value);
        if (!m->key || !m->value) return dm_fail(DM_ERR_NOMEM, "out of memory");
    }
    return DM_OK;
}

/* The output tensors: floating ones converted into data, others as they are. */
static dm_status convert_tensors(const dm_tensor_file *in, dm_dtype dtype, dm_tensor *out, unsigned char **data)
{
    size_t total = 0, largest = 0;
    for (size_t i = 0; i < in->count; i++) {
        const dm_tensor *t = &in->tensors[i];
        if (!is_float(t->dtype)) continue;
        total += (size_t)t->numel * dm_dtype_size(dtype);
        if ((size_t)t->numel > largest) largest = (size_t)t->numel;
    }
    float *f32 = malloc((largest ? largest : 1) * sizeof *f32);
    *data = malloc(total ? total : 1);
    if (!f32 || !*data) {
        free(f32);
        return dm_fail(DM_ERR_NOMEM, "out of memory converting %zu bytes", total);
    }
    unsigned char *at = *data;
    for (size_t i = 0; i < in->count; i++) {
        const dm_tensor *t = &in->tensors[i];
        out[i] = *t;
        if (!is_float(t->dtype)) continue;
        dm_tensor_to_f32(t, f32);
        out[i].dtype = dtype;
        out[i].data = at;
        out[i].nbytes = (size_t)t->numel * dm_dtype_size(dtype);
        /* a finite weight that the narrower type would make infinite is
         * refused, naming it, not written as infinity */
        const char *beyond = NULL;
        double value = 0;
        for (int64_t j = 0; j < t->numel && !beyond; j++) {
            if (t->dtype == DM_F64) memcpy(&value, (const char *)t->data + 8 * j, 8);
            else value = f32[j];
            if (!isfinite(value)) continue;
            if (!isfinite(f32[j])) beyond = "F32's largest value (3.4e38)";
            else if (dtype == DM_F16 && !isfinite(dm_f16_to_f32(dm_f32_to_f16(f32[j]))))
                beyond = "F16's largest value (65504): convert to BF16 or F32";
            else if (dtype == DM_BF16 && !isfinite(dm_bf16_to_f32(dm_f32_to_bf16(f32[j]))))
                beyond = "BF16's largest value (3.39e38): convert to F32";
        }
        if (beyond) {
            dm_status st = dm_fail(DM_ERR_ARGUMENT, "tensor '%s' holds %g, beyond %s", t->name, value, beyond);
            free(f32);
            return st;
        }
        if (dtype == DM_F32) memcpy(at, f32, out[i].nbytes);
        else
            for (int64_t j = 0; j < t->numel; j++) {
                uint16_t h = dtype == DM_F16 ? dm_f32_to_f16(f32[j]) : dm_f32_to_bf16(f32[j]);
                memcpy(at + 2 * j, &h, 2);
            }
        at += out[i].nbytes;
    }
    free(f32);
    return DM_OK;
}

dm_status dm_convert(const char *in_path, const char *out_path, int use_ema, dm_dtype dtype)
{
    if (!in_path || !out_path) return dm_fail(DM_ERR_ARGUMENT, "dm_convert: input and output paths are required");
    if (dtype != DM_F32 && dtype != DM_F16 && dtype != DM_BF16)
        return dm_fail(DM_ERR_ARGUMENT, "cannot convert to %s: choose F32, F16 or BF16", dm_dtype_name(dtype));
    dm_status st = dm_output_distinct(out_path, &in_path, 1);
    if (st) return st;
    dm_tensor_file in;
    if ((st = dm_model_file_open(in_path, use_ema, &in))) return st;
    dm_model *model = NULL;
    dm_tensor *tensors = calloc(in.count ? in.count : 1, sizeof *tensors);
    dm_meta *meta = calloc(in.meta_count + 8, sizeof *meta);
    unsigned char *data = NULL;
    size_t meta_count = 0;
    const char *base = strrchr(in_path, '/');
    if (!tensors || !meta) st = dm_fail(DM_ERR_NOMEM, "out of memory");
    /* Only what loads is worth writing: build the model to check. */
    else if ((st = dm_model_from_file(&in, &model))) dm_error_prefix("%s: ", in_path);
    else if (!(st = describe(dm_model_config(model), base ? base + 1 : in_path, meta, &meta_count)) &&
             !(st = carry_meta(&in, meta, meta_count, meta, &meta_count)) &&
             !(st = convert_tensors(&in, dtype, tensors, &data)))
        st = dm_safetensors_write(out_path, tensors, in.count, meta, meta_count);
    for (size_t i = 0; i < meta_count; i++) {
        free(meta[i].key);
        free(meta[i].value);
    }
    free(meta);
    free(tensors);
    free(data);
    dm_model_free(model);
    dm_tensor_file_close(&in);
    return st;
}
