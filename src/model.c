/* model.c - infer a DAMamba's configuration from its weights, bind the
 * parameters under their official names, and fold everything linear that
 * sits next to a convolution (BatchNorm, conv_constant, layer scale). */
#include "model.h"

#include "classes.h"
#include "error.h"
#include "model_file.h"
#include "versioned.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BN_EPS 1e-5f

/* ------------------------------------------------------------- variants */

dm_status dm_variant_config(char variant, int in_chans, int num_classes, dm_config *out)
{
    static const struct {
        char name;
        int depths[4], dims[4], mlp_ratio_x2[4], layer_scale[4];
    } variants[] = {
        {'F', {2, 2, 10, 2}, {48, 96, 192, 256}, {8, 8, 6, 6}, {0, 0, 0, 0}},
        {'T', {3, 4, 12, 5}, {80, 160, 320, 512}, {8, 8, 6, 6}, {0, 0, 0, 0}},
        {'S', {4, 8, 20, 6}, {96, 192, 384, 512}, {8, 8, 6, 6}, {0, 0, 1, 1}},
        {'B', {4, 8, 25, 8}, {112, 224, 448, 640}, {8, 8, 6, 8}, {0, 0, 1, 1}},
    };
    if (in_chans < 1 || num_classes < 0)
        return dm_fail(DM_ERR_ARGUMENT, "in_chans must be >= 1 and num_classes >= 0");
    for (size_t v = 0; v < sizeof variants / sizeof variants[0]; v++) {
        if (variants[v].name != variant) continue;
        memset(out, 0, sizeof *out);
        for (int s = 0; s < 4; s++) {
            out->depths[s] = variants[v].depths[s];
            out->dims[s] = variants[v].dims[s];
            out->mlp_hidden[s] = variants[v].dims[s] * variants[v].mlp_ratio_x2[s] / 2;
            out->groups[s] = variants[v].dims[s] / 16;
            out->dt_rank[s] = (variants[v].dims[s] + 15) / 16;
            out->layer_scale[s] = variants[v].layer_scale[s];
        }
        out->in_chans = in_chans;
        out->num_classes = num_classes;
        return DM_OK;
    }
    return dm_fail(DM_ERR_ARGUMENT, "unknown variant '%c' (expected F, T, S or B)", variant);
}

/* --------------------------------------------------------------- binding */

typedef struct binder {
    const dm_param_source *src;
    unsigned char *used; /* per file tensor */
    dm_model *model;
    int64_t params;
} binder;

static void *model_alloc(dm_model *m, size_t bytes)
{
    if (m->alloc_count == m->alloc_cap) {
        size_t cap = m->alloc_cap ? 2 * m->alloc_cap : 256;
        void **grown = realloc(m->allocs, cap * sizeof *grown);
        if (!grown) return NULL;
        m->allocs = grown;
        m->alloc_cap = cap;
    }
    void *p = malloc(bytes ? bytes : 1);
    if (p) m->allocs[m->alloc_count++] = p;
    return p;
}

typedef struct shape {
    int ndim;
    int64_t d[4];
} shape;
#define SHAPE(...) ((shape){sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t), {__VA_ARGS__}})

static void shape_str(char *buf, size_t n, int ndim, const int64_t *d)
{
    size_t o = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < ndim && o < n; i++)
        o += (size_t)snprintf(buf + o, n - o, "%s%lld", i ? ", " : "", (long long)d[i]);
    if (o < n) snprintf(buf + o, n - o, "]");
}

/* Fetch parameter prefix+name of the given shape as a fresh float32 buffer.
 * trainable: counts toward the parameter total, as PyTorch counts them. */
static dm_status take(binder *b, const char *prefix, const char *name, shape s,
                      int trainable, float **out)
{
    char full[256];
    snprintf(full, sizeof full, "%s%s", prefix, name);
    dm_tensor want = {.name = full, .dtype = DM_F32, .ndim = s.ndim, .numel = 1};
    for (int i = 0; i < s.ndim; i++) {
        want.shape[i] = s.d[i];
        want.numel *= s.d[i];
    }
    float *dst = model_alloc(b->model, (size_t)want.numel * sizeof(float));
    if (!dst) return dm_fail(DM_ERR_NOMEM, "out of memory for tensor '%s'", full);
    if (b->src->file) {
        const dm_tensor *t = dm_tensor_file_find(b->src->file, full);
        if (!t) return dm_fail(DM_ERR_MODEL, "missing tensor '%s'", full);
        b->used[t - b->src->file->tensors] = 1;
        int same = t->ndim == s.ndim;
        for (int i = 0; same && i < s.ndim; i++) same = t->shape[i] == s.d[i];
        if (!same) {
            char got[96], exp[96];
            shape_str(got, sizeof got, t->ndim, t->shape);
            shape_str(exp, sizeof exp, s.ndim, s.d);
            return dm_fail(DM_ERR_MODEL, "tensor '%s' has shape %s, expected %s", full, got, exp);
        }
        if (t->dtype != DM_F32 && t->dtype != DM_F16 && t->dtype != DM_BF16 && t->dtype != DM_F64)
            return dm_fail(DM_ERR_MODEL, "tensor '%s' has dtype %s, expected a floating-point type",
                           full, dm_dtype_name(t->dtype));
        dm_tensor_to_f32(t, dst);
    } else {
        b->src->generate(b->src->ctx, full, &want, dst);
    }
    if (trainable) b->params += want.numel;
    *out = dst;
    return DM_OK;
}

/* BatchNorm's running statistics: mark them used, check their shapes. */
static dm_status take_bn(binder *b, const char *prefix, int c, float **scale, float **shift)
{
    float *w = NULL, *bias = NULL, *mean = NULL, *var = NULL;
    dm_status st;
    if ((st = take(b, prefix, "weight", SHAPE(c), 1, &w)) ||
        (st = take(b, prefix, "bias", SHAPE(c), 1, &bias)) ||
        (st = take(b, prefix, "running_mean", SHAPE(c), 0, &mean)) ||
        (st = take(b, prefix, "running_var", SHAPE(c), 0, &var)))
        return st;
    if (b->src->file) { /* a counter, not a parameter; optional */
        char full[256];
        snprintf(full, sizeof full, "%snum_batches_tracked", prefix);
        const dm_tensor *t = dm_tensor_file_find(b->src->file, full);
        if (t) b->used[t - b->src->file->tensors] = 1;
    }
    /* Eval-mode BatchNorm is y = x * scale + shift. */
    for (int i = 0; i < c; i++) {
        float sc = w[i] / sqrtf(var[i] + BN_EPS);
        w[i] = sc;
        bias[i] = bias[i] - mean[i] * sc;
    }
    *scale = w;
    *shift = bias;
    return DM_OK;
}

/* A dense 3x3 conv followed by a BatchNorm, folded and reordered for the
 * channels-last im2col GEMM. */
static dm_status take_conv_bn(binder *b, const char *conv, const char *bn, int cin,
                              int cout, int stride, dm_conv3x3 *out)
{
    float *w = NULL, *bias = NULL, *scale = NULL, *shift = NULL;
    dm_status st;
    if ((st = take(b, conv, "weight", SHAPE(cout, cin, 3, 3), 1, &w)) ||
        (st = take(b, conv, "bias", SHAPE(cout), 1, &bias)) ||
        (st = take_bn(b, bn, cout, &scale, &shift)))
        return st;
    out->cin = cin;
    out->cout = cout;
    out->stride = stride;
    out->pad = 1;
    out->weight = model_alloc(b->model, (size_t)cout * 9 * cin * sizeof(float));
    out->bias = bias;
    if (!out->weight) return dm_fail(DM_ERR_NOMEM, "out of memory folding '%s'", conv);
    for (int o = 0; o < cout; o++) {
        for (int i = 0; i < cin; i++)
            for (int k = 0; k < 9; k++)
                out->weight[((size_t)o * 9 + k) * cin + i] = w[((size_t)o * cin + i) * 9 + k] * scale[o];
        bias[o] = bias[o] * scale[o] + shift[o];
    }
    return DM_OK;
}

/* Depthwise 3x3 [c][1][3][3] -> tap-major [9][c]; constant (a shared
 * [1][1][3][3] kernel, ResDWC's conv_constant) is added when given. */
static dm_status take_dw(binder *b, const char *prefix, int c, int with_constant,
                         float **w9, float **bias)
{
    float *w = NULL, *k = NULL;
    dm_status st;
    if ((st = take(b, prefix, with_constant ? "conv.weight" : "weight", SHAPE(c, 1, 3, 3), 1, &w)) ||
        (st = take(b, prefix, with_constant ? "conv.bias" : "bias", SHAPE(c), 1, bias)))
        return st;
    if (with_constant && (st = take(b, prefix, "conv_constant", SHAPE(1, 1, 3, 3), 0, &k)))
        return st;
    *w9 = model_alloc(b->model, (size_t)9 * c * sizeof(float));
    if (!*w9) return dm_fail(DM_ERR_NOMEM, "out of memory folding '%s'", prefix);
    for (int ch = 0; ch < c; ch++)
        for (int t = 0; t < 9; t++)
            (*w9)[(size_t)t * c + ch] = w[(size_t)ch * 9 + t] + (k ? k[t] : 0.0f);
    return DM_OK;
}

static dm_status bind_block(binder *b, const dm_config *cfg, int s, const char *p, dm_block *blk)
{
    char q[160];
    int C = cfg->dims[s], G = cfg->groups[s], R = cfg->dt_rank[s], F = cfg->mlp_hidden[s];
    float *ls1 = NULL, *ls2 = NULL, *a_logs = NULL, *bn_scale = NULL, *bn_shift = NULL, *fc1_w = NULL, *fc2_w = NULL;
    dm_status st;

    snprintf(q, sizeof q, "%spos_embed.", p);
    if ((st = take_dw(b, q, C, 1, &blk->pos_w9, &blk->pos_b))) return st;
    if ((st = take(b, p, "norm1.norm.weight", SHAPE(C), 1, &blk->norm1_g)) ||
        (st = take(b, p, "norm1.norm.bias", SHAPE(C), 1, &blk->norm1_b)))
        return st;

    snprintf(q, sizeof q, "%stoken_mixer.", p);
    if ((st = take(b, q, "in_proj.weight", SHAPE(C, C, 1, 1), 1, &blk->in_proj)) ||
        (st = take(b, q, "conv2d.weight", SHAPE(C, 1, 3, 3), 1, &blk->conv_w9)) ||
        (st = take(b, q, "conv2d.bias", SHAPE(C), 1, &blk->conv_b)))
        return st;
    float *conv_w = blk->conv_w9;
    if (!(blk->conv_w9 = model_alloc(b->model, (size_t)9 * C * sizeof(float))))
        return dm_fail(DM_ERR_NOMEM, "out of memory");
    for (int ch = 0; ch < C; ch++)
        for (int t = 0; t < 9; t++) blk->conv_w9[(size_t)t * C + ch] = conv_w[(size_t)ch * 9 + t];

    char r[192];
    snprintf(r, sizeof r, "%sda_scan.dw_conv.0.", q);
    if ((st = take_dw(b, r, C, 0, &blk->off_dw_w9, &blk->off_dw_b))) return st;
    if ((st = take(b, q, "da_scan.dw_conv.1.1.weight", SHAPE(C), 1, &blk->off_ln_g)) ||
        (st = take(b, q, "da_scan.dw_conv.1.1.bias", SHAPE(C), 1, &blk->off_ln_b)) ||
        (st = take(b, q, "da_scan.offset.weight", SHAPE(2 * G, C), 1, &blk->off_w)) ||
        (st = take(b, q, "da_scan.offset.bias", SHAPE(2 * G), 1, &blk->off_b)) ||
        (st = take(b, q, "x_proj_weight", SHAPE(R + 2, C), 1, &blk->x_proj)) ||
        (st = take(b, q, "dt_projs_weight", SHAPE(C, R), 1, &blk->dt_proj)) ||
        (st = take(b, q, "dt_projs_bias", SHAPE(C), 1, &blk->dt_bias)) ||
        (st = take(b, q, "A_logs", SHAPE(C, 1), 1, &a_logs)) ||
        (st = take(b, q, "Ds", SHAPE(C), 1, &blk->d)) ||
        (st = take(b, q, "out_norm.norm.weight", SHAPE(C), 1, &blk->out_norm_g)) ||
        (st = take(b, q, "out_norm.norm.bias", SHAPE(C), 1, &blk->out_norm_b)) ||
        (st = take(b, q, "out_proj.weight", SHAPE(C, C, 1, 1), 1, &blk->out_proj)))
        return st;
    blk->a = a_logs;
    for (int c = 0; c < C; c++) blk->a[c] = -expf(a_logs[c]);

    snprintf(q, sizeof q, "%snorm2.", p);
    if ((st = take_bn(b, q, C, &bn_scale, &bn_shift))) return st;
    if ((st = take(b, p, "mlp.fc1.weight", SHAPE(F, C, 1, 1), 1, &fc1_w)) ||
        (st = take(b, p, "mlp.fc1.bias", SHAPE(F), 1, &blk->fc1_b)) ||
        (st = take(b, p, "mlp.fc2.weight", SHAPE(C, F, 1, 1), 1, &fc2_w)) ||
        (st = take(b, p, "mlp.fc2.bias", SHAPE(C), 1, &blk->fc2_b)))
        return st;
    snprintf(q, sizeof q, "%smlp.conv.", p);
    if ((st = take_dw(b, q, F, 1, &blk->mlp_w9, &blk->mlp_b))) return st;
    if (cfg->layer_scale[s] &&
        ((st = take(b, p, "layer_scale_1", SHAPE(C), 1, &ls1)) ||
         (st = take(b, p, "layer_scale_2", SHAPE(C), 1, &ls2))))
        return st;

    /* fc1(BN(x)) = (W diag(scale)) x + (W shift + b) */
    for (int o = 0; o < F; o++) {
        double acc = blk->fc1_b[o];
        for (int i = 0; i < C; i++) {
            acc += (double)fc1_w[(size_t)o * C + i] * bn_shift[i];
            fc1_w[(size_t)o * C + i] *= bn_scale[i];
        }
        blk->fc1_b[o] = (float)acc;
    }
    blk->fc1_w = fc1_w;
    /* x + ls * (W y + b) = x + (diag(ls) W) y + ls * b */
    blk->fc2_w = fc2_w;
    if (ls1)
        for (int o = 0; o < C; o++) {
            for (int i = 0; i < C; i++) blk->out_proj[(size_t)o * C + i] *= ls1[o];
            for (int i = 0; i < F; i++) fc2_w[(size_t)o * F + i] *= ls2[o];
            blk->fc2_b[o] *= ls2[o];
        }
    return DM_OK;
}

static dm_status bind_all(binder *b, const dm_config *cfg)
{
    dm_model *m = b->model;
    int half = cfg->dims[0] / 2;
    dm_status st;
    if ((st = take_conv_bn(b, "stem.0.", "stem.1.", cfg->in_chans, half, 2, &m->stem[0])) ||
        (st = take_conv_bn(b, "stem.3.", "stem.4.", half, half, 1, &m->stem[1])) ||
        (st = take_conv_bn(b, "stem.6.", "stem.7.", half, cfg->dims[0], 2, &m->stem[2])) ||
        (st = take_conv_bn(b, "stem.9.", "stem.10.", cfg->dims[0], cfg->dims[0], 1, &m->stem[3])))
        return st;
    for (int s = 0; s < DM_NUM_STAGES; s++) {
        dm_stage *stage = &m->stages[s];
        char conv[64], bn[64], norm[64];
        if (s > 0) {
            snprintf(conv, sizeof conv, "stages.%d.downsample.0.", s);
            snprintf(bn, sizeof bn, "stages.%d.downsample.1.", s);
            if ((st = take_conv_bn(b, conv, bn, cfg->dims[s - 1], cfg->dims[s], 2, &stage->downsample)))
                return st;
        }
        stage->blocks = model_alloc(m, (size_t)cfg->depths[s] * sizeof(dm_block));
        if (!stage->blocks) return dm_fail(DM_ERR_NOMEM, "out of memory");
        stage->block_count = cfg->depths[s];
        for (int j = 0; j < cfg->depths[s]; j++) {
            char prefix[64];
            snprintf(prefix, sizeof prefix, "stages.%d.blocks.%d.", s, j);
            if ((st = bind_block(b, cfg, s, prefix, &stage->blocks[j]))) return st;
        }
        snprintf(norm, sizeof norm, "norm%d.norm.", s + 1);
        if ((st = take(b, norm, "weight", SHAPE(cfg->dims[s]), 1, &stage->norm_g)) ||
            (st = take(b, norm, "bias", SHAPE(cfg->dims[s]), 1, &stage->norm_b)))
            return st;
    }
    if (cfg->num_classes > 0 &&
        ((st = take(b, "head.fc.", "weight", SHAPE(cfg->num_classes, cfg->dims[3]), 1, &m->head_w)) ||
         (st = take(b, "head.fc.", "bias", SHAPE(cfg->num_classes), 1, &m->head_b))))
        return st;
    return DM_OK;
}

static dm_status check_config(const dm_config *c)
{
    for (int s = 0; s < DM_NUM_STAGES; s++) {
        if (c->depths[s] < 1 || c->dims[s] < 1 || c->mlp_hidden[s] < 1)
            return dm_fail(DM_ERR_MODEL, "stage %d: needs at least one block with channels", s);
        if (c->groups[s] < 1 || c->dims[s] % c->groups[s] != 0)
            return dm_fail(DM_ERR_MODEL, "stage %d: %d offset groups do not divide %d channels",
                           s, c->groups[s], c->dims[s]);
        if (c->dt_rank[s] < 1)
            return dm_fail(DM_ERR_MODEL, "stage %d: dt rank must be positive", s);
    }
    if (c->dims[0] % 2)
        return dm_fail(DM_ERR_MODEL, "stage 0 has %d channels; the stem needs an even number", c->dims[0]);
    if (c->in_chans < 1) return dm_fail(DM_ERR_MODEL, "the stem takes no input channels");
    return DM_OK;
}

static dm_status bind_single_block(binder *b, const dm_config *cfg)
{
    dm_stage *stage = &b->model->stages[0];
    if (!(stage->blocks = model_alloc(b->model, sizeof(dm_block)))) return dm_fail(DM_ERR_NOMEM, "out of memory");
    stage->block_count = 1;
    return bind_block(b, cfg, 0, "", &stage->blocks[0]);
}

static dm_status build(const dm_config *config, const dm_param_source *src,
                       dm_status (*bind)(binder *, const dm_config *), dm_model **out)
{
    *out = NULL;
    dm_status st = check_config(config);
    if (st) return st;
    dm_model *m = calloc(1, sizeof *m);
    if (!m) return dm_fail(DM_ERR_NOMEM, "out of memory");
    binder b = {.src = src, .model = m};
    if (src->file && !(b.used = calloc(src->file->count + 1, 1))) {
        free(m);
        return dm_fail(DM_ERR_NOMEM, "out of memory");
    }
    m->config = *config;
    st = bind(&b, config);
    if (!st && src->file)
        for (size_t i = 0; i < src->file->count; i++)
            if (!b.used[i]) {
                st = dm_fail(DM_ERR_MODEL, "unexpected tensor '%s'", src->file->tensors[i].name);
                break;
            }
    free(b.used);
    if (st) {
        dm_model_free(m);
        return st;
    }
    m->config.num_params = b.params;
    *out = m;
    return DM_OK;
}

dm_status dm_model_build(const dm_config *config, const dm_param_source *src, dm_model **out)
{
    return build(config, src, bind_all, out);
}

dm_status dm_block_load(const dm_tensor_file *file, const dm_config *config, dm_model **out)
{
    dm_param_source src = {.file = file};
    return build(config, &src, bind_single_block, out);
}

void dm_model_free(dm_model *model)
{
    if (!model) return;
    for (size_t i = 0; i < model->alloc_count; i++) free(model->allocs[i]);
    free(model->allocs);
    for (size_t i = 0; i < model->meta_count; i++) {
        free(model->meta[i].key);
        free(model->meta[i].value);
    }
    free(model->meta);
    dm_model_free_classes(model);
    free(model);
}

/* ------------------------------------------------------------ inference */

/* Size d of tensor name, or -1 when absent or of too few dimensions. */
static int64_t dim_of(const dm_tensor_file *f, int d, const char *fmt, ...)
{
    char name[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    const dm_tensor *t = dm_tensor_file_find(f, name);
    return t && t->ndim > d ? t->shape[d] : -1;
}

#define NEED(value, ...)                                                              \
    do {                                                                              \
        if ((value) < 1 || (value) > (1 << 20)) {                                     \
            char n_[256];                                                             \
            snprintf(n_, sizeof n_, __VA_ARGS__);                                     \
            return dm_fail(DM_ERR_MODEL, "missing or malformed tensor '%s'", n_);      \
        }                                                                             \
    } while (0)

dm_status dm_config_infer(const dm_tensor_file *f, dm_config *c)
{
    memset(c, 0, sizeof *c);
    int64_t v = dim_of(f, 1, "stem.0.weight");
    NEED(v, "stem.0.weight");
    c->in_chans = (int)v;
    for (int s = 0; s < DM_NUM_STAGES; s++) {
        int depth = 0;
        while (dim_of(f, 0, "stages.%d.blocks.%d.norm1.norm.weight", s, depth) > 0) depth++;
        if (depth == 0)
            return dm_fail(DM_ERR_MODEL, "missing tensor 'stages.%d.blocks.0.norm1.norm.weight' (stage %d has no blocks)", s, s);
        c->depths[s] = depth;
        c->dims[s] = (int)dim_of(f, 0, "stages.%d.blocks.0.norm1.norm.weight", s);
        NEED(c->dims[s], "stages.%d.blocks.0.norm1.norm.weight", s);
        v = dim_of(f, 0, "stages.%d.blocks.0.mlp.fc1.weight", s);
        NEED(v, "stages.%d.blocks.0.mlp.fc1.weight", s);
        c->mlp_hidden[s] = (int)v;
        v = dim_of(f, 0, "stages.%d.blocks.0.token_mixer.da_scan.offset.weight", s);
        NEED(v, "stages.%d.blocks.0.token_mixer.da_scan.offset.weight", s);
        if (v % 2) return dm_fail(DM_ERR_MODEL, "tensor 'stages.%d.blocks.0.token_mixer.da_scan.offset.weight' has an odd number of outputs (%lld); expected 2 per group", s, (long long)v);
        c->groups[s] = (int)(v / 2);
        v = dim_of(f, 1, "stages.%d.blocks.0.token_mixer.dt_projs_weight", s);
        NEED(v, "stages.%d.blocks.0.token_mixer.dt_projs_weight", s);
        c->dt_rank[s] = (int)v;
        char ls[96];
        snprintf(ls, sizeof ls, "stages.%d.blocks.0.layer_scale_1", s);
        c->layer_scale[s] = dm_tensor_file_find(f, ls) != NULL;
        if (s > 0) {
            int64_t in = dim_of(f, 1, "stages.%d.downsample.0.weight", s);
            int64_t outc = dim_of(f, 0, "stages.%d.downsample.0.weight", s);
            NEED(in, "stages.%d.downsample.0.weight", s);
            if (in != c->dims[s - 1] || outc != c->dims[s])
                return dm_fail(DM_ERR_MODEL,
                               "inconsistent stage shapes: 'stages.%d.downsample.0.weight' maps %lld to %lld channels, but stage %d has %d and stage %d has %d",
                               s, (long long)in, (long long)outc, s - 1, c->dims[s - 1], s, c->dims[s]);
        }
    }
    int64_t stem_out = dim_of(f, 0, "stem.9.weight");
    if (stem_out != c->dims[0])
        return dm_fail(DM_ERR_MODEL, "inconsistent stage shapes: the stem ends with %lld channels but stage 0 has %d",
                       (long long)stem_out, c->dims[0]);
    v = dim_of(f, 0, "head.fc.weight");
    c->num_classes = v > 0 ? (int)v : 0;
    return DM_OK;
}

dm_status dm_model_from_file(const dm_tensor_file *file, dm_model **out)
{
    *out = NULL;
    dm_config cfg;
    dm_status st = dm_config_infer(file, &cfg);
    if (st) return st;
    dm_param_source src = {.file = file};
    if ((st = dm_model_build(&cfg, &src, out))) return st;
    dm_model *m = *out;
    if (file->meta_count) {
        m->meta = calloc(file->meta_count, sizeof *m->meta);
        if (!m->meta) { dm_model_free(m); *out = NULL; return dm_fail(DM_ERR_NOMEM, "out of memory"); }
        for (size_t i = 0; i < file->meta_count; i++, m->meta_count++) {
            m->meta[i].key = strdup(file->meta[i].key);
            m->meta[i].value = strdup(file->meta[i].value);
            if (!m->meta[i].key || !m->meta[i].value) {
                m->meta_count++;
                dm_model_free(m);
                *out = NULL;
                return dm_fail(DM_ERR_NOMEM, "out of memory");
            }
        }
    }
    if ((st = dm_model_parse_classes(m))) {
        dm_model_free(m);
        *out = NULL;
    }
    return st;
}

/* The caller's options, or the defaults for NULL. */
static dm_status load_options(const dm_load_options *opts, dm_load_options *full)
{
    if (!opts) {
        *full = (dm_load_options){.size = sizeof *full};
        return DM_OK;
    }
    return dm_struct_import(full, sizeof *full, opts, DM_LOAD_OPTIONS_MIN_SIZE, "dm_load_options");
}

dm_status dm_model_load(const char *path, const dm_load_options *opts, dm_model **out)
{
    if (out) *out = NULL;
    if (!path || !out) return dm_fail(DM_ERR_ARGUMENT, "dm_model_load: path and out are required");
    dm_load_options o;
    dm_status st = load_options(opts, &o);
    if (st) return st;
    dm_tensor_file file;
    if ((st = dm_model_file_open(path, o.use_ema, &file))) return st;
    st = dm_model_from_file(&file, out);
    dm_tensor_file_close(&file);
    if (st) dm_error_prefix("%s: ", path);
    return st;
}

dm_status dm_model_load_buffer(const void *buf, size_t size, const dm_load_options *opts, dm_model **out)
{
    if (out) *out = NULL;
    if (!buf || !out) return dm_fail(DM_ERR_ARGUMENT, "dm_model_load_buffer: buf and out are required");
    dm_load_options o;
    dm_status st = load_options(opts, &o);
    if (st) return st;
    dm_tensor_file file;
    st = dm_model_file_parse(buf, size, o.use_ema, &file);
    if (st) return st;
    st = dm_model_from_file(&file, out);
    dm_tensor_file_close(&file);
    return st;
}

/* The default model's bytes, linked in by embed.S. */
extern const unsigned char dm_default_model[];
extern const unsigned char dm_default_model_end[];

dm_status dm_model_load_default(dm_model **out)
{
    return dm_model_load_buffer(dm_default_model, (size_t)(dm_default_model_end - dm_default_model), NULL, out);
}

const dm_config *dm_model_config(const dm_model *model) { return model ? &model->config : NULL; }

const char *dm_model_metadata(const dm_model *model, const char *key)
{
    if (!model || !key) return NULL;
    for (size_t i = 0; i < model->meta_count; i++)
        if (strcmp(model->meta[i].key, key) == 0) return model->meta[i].value;
    return NULL;
}

dm_status dm_stage_shape(const dm_model *model, int h, int w, int stage, int *channels,
                         int *out_h, int *out_w)
{
    if (!model || stage < 0 || stage >= DM_NUM_STAGES || h < 1 || w < 1)
        return dm_fail(DM_ERR_ARGUMENT, "dm_stage_shape: bad model, stage %d or size %dx%d", stage, h, w);
    h = dm_down2(dm_down2(h));
    w = dm_down2(dm_down2(w));
    for (int s = 1; s <= stage; s++) {
        h = dm_down2(h);
        w = dm_down2(w);
    }
    if (channels) *channels = model->config.dims[stage];
    if (out_h) *out_h = h;
    if (out_w) *out_w = w;
    return DM_OK;
}

/* ------------------------------------------------------------- mirrors */

static void mirror_conv(const dm_conv3x3 *src, dm_param_place place, void *ctx, dm_conv3x3 *dst)
{
    *dst = *src;
    if (src->weight) dst->weight = place(ctx, src->weight, (size_t)src->cout * 9 * src->cin);
    if (src->bias) dst->bias = place(ctx, src->bias, (size_t)src->cout);
}

static void mirror_block(const dm_config *cfg, int s, const dm_block *b, dm_param_place place, void *ctx,
                         dm_block *d)
{
    size_t C = cfg->dims[s], G = cfg->groups[s], R = cfg->dt_rank[s], F = cfg->mlp_hidden[s];
    const struct {
        float *const *src;
        float **dst;
        size_t floats;
    } params[] = {
        {&b->pos_w9, &d->pos_w9, 9 * C},           {&b->pos_b, &d->pos_b, C},
        {&b->norm1_g, &d->norm1_g, C},             {&b->norm1_b, &d->norm1_b, C},
        {&b->in_proj, &d->in_proj, C * C},         {&b->conv_w9, &d->conv_w9, 9 * C},
        {&b->conv_b, &d->conv_b, C},               {&b->off_dw_w9, &d->off_dw_w9, 9 * C},
        {&b->off_dw_b, &d->off_dw_b, C},           {&b->off_ln_g, &d->off_ln_g, C},
        {&b->off_ln_b, &d->off_ln_b, C},           {&b->off_w, &d->off_w, 2 * G * C},
        {&b->off_b, &d->off_b, 2 * G},             {&b->x_proj, &d->x_proj, (R + 2) * C},
        {&b->dt_proj, &d->dt_proj, C * R},         {&b->dt_bias, &d->dt_bias, C},
        {&b->a, &d->a, C},                         {&b->d, &d->d, C},
        {&b->out_norm_g, &d->out_norm_g, C},       {&b->out_norm_b, &d->out_norm_b, C},
        {&b->out_proj, &d->out_proj, C * C},       {&b->fc1_w, &d->fc1_w, F * C},
        {&b->fc1_b, &d->fc1_b, F},                 {&b->mlp_w9, &d->mlp_w9, 9 * F},
        {&b->mlp_b, &d->mlp_b, F},                 {&b->fc2_w, &d->fc2_w, C * F},
        {&b->fc2_b, &d->fc2_b, C},
    };
    for (size_t i = 0; i < sizeof params / sizeof params[0]; i++)
        *params[i].dst = *params[i].src ? place(ctx, *params[i].src, params[i].floats) : NULL;
}

dm_status dm_model_mirror(const dm_model *m, dm_param_place place, void *ctx, dm_model *out)
{
    const dm_config *cfg = &m->config;
    memset(out, 0, sizeof *out);
    out->config = *cfg;
    for (int i = 0; i < 4; i++) mirror_conv(&m->stem[i], place, ctx, &out->stem[i]);
    for (int s = 0; s < DM_NUM_STAGES; s++) {
        const dm_stage *src = &m->stages[s];
        dm_stage *dst = &out->stages[s];
        mirror_conv(&src->downsample, place, ctx, &dst->downsample);
        dst->block_count = src->block_count;
        if (src->block_count && !(dst->blocks = calloc((size_t)src->block_count, sizeof(dm_block)))) {
            dm_model_mirror_free(out);
            return dm_fail(DM_ERR_NOMEM, "out of memory mirroring the model's parameters");
        }
        for (int j = 0; j < src->block_count; j++)
            mirror_block(cfg, s, &src->blocks[j], place, ctx, &dst->blocks[j]);
        if (src->norm_g) dst->norm_g = place(ctx, src->norm_g, (size_t)cfg->dims[s]);
        if (src->norm_b) dst->norm_b = place(ctx, src->norm_b, (size_t)cfg->dims[s]);
    }
    if (m->head_w) out->head_w = place(ctx, m->head_w, (size_t)cfg->num_classes * cfg->dims[3]);
    if (m->head_b) out->head_b = place(ctx, m->head_b, (size_t)cfg->num_classes);
    return DM_OK;
}

void dm_model_mirror_free(dm_model *mirror)
{
    for (int s = 0; s < DM_NUM_STAGES; s++) {
        free(mirror->stages[s].blocks);
        mirror->stages[s].blocks = NULL;
    }
}
