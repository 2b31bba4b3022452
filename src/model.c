/* model.c - infer a DAMamba's configuration from its weights, bind the
 * parameters under their official names, and fold everything linear that
 * sits next to a convolution (BatchNorm, conv_constant, layer scale). */
#include "model.h"

#include "classes.h"
#include "error.h"
#include "host_memory.h"
#include "panels.h"
#include "model_file.h"
#include "versioned.h"

#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
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
    /* On whole cache lines: a kernel's vector load of a weight panel
     * then never straddles two of them. */
    void *p = dm_host_alloc(bytes);
    if (!p) return NULL;
    m->allocs[m->alloc_count++] = p;
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
    char full[256], shown[300];
    snprintf(full, sizeof full, "%s%s", prefix, name);
    snprintf(shown, sizeof shown, "%s%s", b->src->prefix ? b->src->prefix : "", full);
    dm_tensor want = {.name = full, .dtype = DM_F32, .ndim = s.ndim, .numel = 1};
    for (int i = 0; i < s.ndim; i++) {
        want.shape[i] = s.d[i];
        want.numel *= s.d[i];
    }
    /* the file's tensor is checked before anything is allocated for it */
    const dm_tensor *t = NULL;
    if (b->src->file) {
        if (!(t = dm_tensor_file_find(b->src->file, full))) return dm_fail(DM_ERR_MODEL, "missing tensor '%s'", shown);
        b->used[t - b->src->file->tensors] = 1;
        int same = t->ndim == s.ndim;
        for (int i = 0; same && i < s.ndim; i++) same = t->shape[i] == s.d[i];
        if (!same) {
            char got[96], exp[96];
            shape_str(got, sizeof got, t->ndim, t->shape);
            shape_str(exp, sizeof exp, s.ndim, s.d);
            return dm_fail(DM_ERR_MODEL, "tensor '%s' has shape %s, expected %s", shown, got, exp);
        }
        if (t->dtype != DM_F32 && t->dtype != DM_F16 && t->dtype != DM_BF16 && t->dtype != DM_F64)
            return dm_fail(DM_ERR_MODEL, "tensor '%s' has dtype %s, expected a floating-point type",
                           shown, dm_dtype_name(t->dtype));
    }
    float *dst = model_alloc(b->model, (size_t)want.numel * sizeof(float));
    if (!dst) return dm_fail_nomem("out of memory for tensor '%s'", full);
    if (t) dm_tensor_to_f32(t, dst);
    else b->src->generate(b->src->ctx, full, &want, dst);
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

/* A convolution of ksize x ksize taps followed by a BatchNorm (bn NULL:
 * none), folded: the weights [cout][cin][taps] scaled per output and
 * reordered to [cout][taps][cin] (rows of an im2col GEMM; [cout][cin] for
 * 1x1), the bias (the conv's own, or none) scaled and shifted. */
static dm_status take_conv_bn(binder *b, const char *conv, const char *bn, int cin, int cout, int ksize,
                              int conv_bias, float **weight, float **bias)
{
    float *w = NULL, *scale = NULL, *shift = NULL;
    int taps = ksize * ksize;
    dm_status st;
    if ((st = take(b, conv, "weight", SHAPE(cout, cin, ksize, ksize), 1, &w)) ||
        (conv_bias && (st = take(b, conv, "bias", SHAPE(cout), 1, bias))) ||
        (bn && (st = take_bn(b, bn, cout, &scale, &shift))))
        return st;
    if (!conv_bias && (*bias = model_alloc(b->model, (size_t)cout * sizeof(float))))
        memset(*bias, 0, (size_t)cout * sizeof(float));
    *weight = model_alloc(b->model, (size_t)cout * taps * cin * sizeof(float));
    if (!*weight || !*bias) return dm_fail_nomem("out of memory folding '%s'", conv);
    for (int o = 0; o < cout; o++) {
        float sc = scale ? scale[o] : 1.0f;
        for (int i = 0; i < cin; i++)
            for (int k = 0; k < taps; k++)
                (*weight)[((size_t)o * taps + k) * cin + i] = w[((size_t)o * cin + i) * taps + k] * sc;
        if (scale) (*bias)[o] = (*bias)[o] * scale[o] + shift[o];
    }
    return DM_OK;
}

/* A dense 3x3 conv (with its bias unless it is an mmcv ConvModule) and its
 * BatchNorm. */
static dm_status take_conv3x3_bn(binder *b, const char *conv, const char *bn, int cin, int cout, int stride,
                                 int conv_bias, dm_conv3x3 *out)
{
    *out = (dm_conv3x3){.cin = cin, .cout = cout, .stride = stride, .pad = 1};
    return take_conv_bn(b, conv, bn, cin, cout, 3, conv_bias, &out->weight, &out->bias);
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
    if (!*w9) return dm_fail_nomem("out of memory folding '%s'", prefix);
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
        return dm_fail_nomem("out of memory");
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

/* A 3x3 conv with bias and no normalization (mmdet's heads and FPN). */
static dm_status take_conv3x3(binder *b, const char *conv, int cin, int cout, dm_conv3x3 *out)
{
    *out = (dm_conv3x3){.cin = cin, .cout = cout, .stride = 1, .pad = 1};
    return take_conv_bn(b, conv, NULL, cin, cout, 3, 1, &out->weight, &out->bias);
}

/* A fully connected layer, or a 1x1 conv when conv is set, with bias. */
static dm_status take_linear(binder *b, const char *prefix, int cin, int cout, int conv, dm_conv1x1 *out)
{
    *out = (dm_conv1x1){.cin = cin, .cout = cout};
    dm_status st = take(b, prefix, "weight", conv ? SHAPE(cout, cin, 1, 1) : SHAPE(cout, cin), 1, &out->weight);
    return st ? st : take(b, prefix, "bias", SHAPE(cout), 1, &out->bias);
}

/* RPN anchors per pixel: one scale times three aspect ratios. */
#define DET_ANCHORS 3

/* Mask R-CNN's neck and heads under mmdetection's names. */
static dm_status bind_det(binder *b, const dm_config *cfg)
{
    dm_det_heads *d = &b->model->det;
    int F = cfg->fpn_channels, fc = cfg->det_fc_channels, K = cfg->det_classes, M = cfg->mask_channels;
    char name[96];
    dm_status st;
    for (int s = 0; s < DM_NUM_STAGES; s++) {
        snprintf(name, sizeof name, "neck.lateral_convs.%d.conv.", s);
        if ((st = take_linear(b, name, cfg->dims[s], F, 1, &d->lateral[s]))) return st;
        snprintf(name, sizeof name, "neck.fpn_convs.%d.conv.", s);
        if ((st = take_conv3x3(b, name, F, F, &d->fpn[s]))) return st;
    }
    if ((st = take_conv3x3(b, "rpn_head.rpn_conv.", F, F, &d->rpn_conv)) ||
        (st = take_linear(b, "rpn_head.rpn_cls.", F, DET_ANCHORS, 1, &d->rpn_cls)) ||
        (st = take_linear(b, "rpn_head.rpn_reg.", F, 4 * DET_ANCHORS, 1, &d->rpn_reg)) ||
        (st = take_linear(b, "roi_head.bbox_head.shared_fcs.0.", F * 49, fc, 0, &d->fc[0])) ||
        (st = take_linear(b, "roi_head.bbox_head.shared_fcs.1.", fc, fc, 0, &d->fc[1])) ||
        (st = take_linear(b, "roi_head.bbox_head.fc_cls.", fc, K + 1, 0, &d->cls)) ||
        (st = take_linear(b, "roi_head.bbox_head.fc_reg.", fc, 4 * K, 0, &d->reg)))
        return st;
    /* RoI features arrive channels-last: column c * 49 + p becomes p * F + c */
    float *w0 = model_alloc(b->model, sizeof(float) * fc * 49 * F);
    if (!w0) return dm_fail_nomem("out of memory reordering the box head");
    for (int o = 0; o < fc; o++)
        for (int c = 0; c < F; c++)
            for (int p = 0; p < 49; p++)
                w0[((size_t)o * 49 + p) * F + c] = d->fc[0].weight[((size_t)o * F + c) * 49 + p];
    d->fc[0].weight = w0;

    d->mask_convs_count = cfg->mask_convs;
    if (!(d->mask_convs = model_alloc(b->model, sizeof(dm_conv3x3) * (size_t)cfg->mask_convs)))
        return dm_fail_nomem("out of memory");
    for (int i = 0; i < cfg->mask_convs; i++) {
        snprintf(name, sizeof name, "roi_head.mask_head.convs.%d.conv.", i);
        if ((st = take_conv3x3(b, name, i ? M : F, M, &d->mask_convs[i]))) return st;
    }
    float *up_w = NULL, *up_b = NULL;
    if ((st = take(b, "roi_head.mask_head.upsample.", "weight", SHAPE(M, M, 2, 2), 1, &up_w)) ||
        (st = take(b, "roi_head.mask_head.upsample.", "bias", SHAPE(M), 1, &up_b)) ||
        (st = take_linear(b, "roi_head.mask_head.conv_logits.", M, K, 1, &d->mask_logits)))
        return st;
    /* ConvTranspose2d weight [in][out][dy][dx] -> rows (dy, dx, out) */
    d->upsample = (dm_conv1x1){.cin = M, .cout = 4 * M};
    d->upsample.weight = model_alloc(b->model, sizeof(float) * 4 * M * M);
    d->upsample.bias = model_alloc(b->model, sizeof(float) * 4 * M);
    if (!d->upsample.weight || !d->upsample.bias) return dm_fail_nomem("out of memory");
    for (int t = 0; t < 4; t++)
        for (int o = 0; o < M; o++) {
            d->upsample.bias[t * M + o] = up_b[o];
            for (int i = 0; i < M; i++)
                d->upsample.weight[((size_t)t * M + o) * M + i] = up_w[((size_t)i * M + o) * 4 + t];
        }
    return DM_OK;
}

static dm_status bind_all(binder *b, const dm_config *cfg)
{
    dm_model *m = b->model;
    int half = cfg->dims[0] / 2;
    dm_status st;
    if ((st = take_conv3x3_bn(b, "stem.0.", "stem.1.", cfg->in_chans, half, 2, 1, &m->stem[0])) ||
        (st = take_conv3x3_bn(b, "stem.3.", "stem.4.", half, half, 1, 1, &m->stem[1])) ||
        (st = take_conv3x3_bn(b, "stem.6.", "stem.7.", half, cfg->dims[0], 2, 1, &m->stem[2])) ||
        (st = take_conv3x3_bn(b, "stem.9.", "stem.10.", cfg->dims[0], cfg->dims[0], 1, 1, &m->stem[3])))
        return st;
    for (int s = 0; s < DM_NUM_STAGES; s++) {
        dm_stage *stage = &m->stages[s];
        char conv[64], bn[64], norm[64];
        if (s > 0) {
            snprintf(conv, sizeof conv, "stages.%d.downsample.0.", s);
            snprintf(bn, sizeof bn, "stages.%d.downsample.1.", s);
            if ((st = take_conv3x3_bn(b, conv, bn, cfg->dims[s - 1], cfg->dims[s], 2, 1, &stage->downsample)))
                return st;
        }
        stage->blocks = model_alloc(m, (size_t)cfg->depths[s] * sizeof(dm_block));
        if (!stage->blocks) return dm_fail_nomem("out of memory");
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

const int dm_ppm_scales[DM_PPM_SCALES] = {1, 2, 3, 6};

/* An mmcv ConvModule (conv without bias, BatchNorm "bn", ReLU at run time). */
static dm_status take_conv_module(binder *b, const char *fmt, int index, int cin, int cout, int ksize,
                                  float **weight, float **bias)
{
    char prefix[96], conv[112], bn[112];
    snprintf(prefix, sizeof prefix, fmt, index);
    snprintf(conv, sizeof conv, "%sconv.", prefix);
    snprintf(bn, sizeof bn, "%sbn.", prefix);
    return take_conv_bn(b, conv, bn, cin, cout, ksize, 0, weight, bias);
}

static dm_status take_conv_module3x3(binder *b, const char *fmt, int index, int cin, int cout, dm_conv3x3 *out)
{
    *out = (dm_conv3x3){.cin = cin, .cout = cout, .stride = 1, .pad = 1};
    return take_conv_module(b, fmt, index, cin, cout, 3, &out->weight, &out->bias);
}

static dm_status take_conv_module1x1(binder *b, const char *fmt, int index, int cin, int cout, dm_conv1x1 *out)
{
    *out = (dm_conv1x1){.cin = cin, .cout = cout};
    return take_conv_module(b, fmt, index, cin, cout, 1, &out->weight, &out->bias);
}

/* mmseg's UPerHead under its names without the "decode_head." prefix. */
static dm_status bind_upernet(binder *b, const dm_config *cfg)
{
    dm_upernet *u = model_alloc(b->model, sizeof *u);
    if (!u) return dm_fail_nomem("out of memory");
    memset(u, 0, sizeof *u);
    b->model->upernet = u;
    int ch = cfg->seg_channels, c3 = cfg->dims[3];
    dm_status st;
    for (int i = 0; i < DM_PPM_SCALES; i++)
        if ((st = take_conv_module1x1(b, "psp_modules.%d.1.", i, c3, ch, &u->psp[i]))) return st;
    if ((st = take_conv_module3x3(b, "bottleneck.", 0, c3 + DM_PPM_SCALES * ch, ch, &u->bottleneck))) return st;
    for (int i = 0; i < DM_NUM_STAGES - 1; i++)
        if ((st = take_conv_module1x1(b, "lateral_convs.%d.", i, cfg->dims[i], ch, &u->lateral[i])) ||
            (st = take_conv_module3x3(b, "fpn_convs.%d.", i, ch, ch, &u->fpn[i])))
            return st;
    if ((st = take_conv_module3x3(b, "fpn_bottleneck.", 0, DM_NUM_STAGES * ch, ch, &u->fpn_bottleneck))) return st;
    u->cls = (dm_conv1x1){.cin = ch, .cout = cfg->seg_classes};
    return (st = take(b, "conv_seg.", "weight", SHAPE(cfg->seg_classes, ch, 1, 1), 1, &u->cls.weight)) ? st
           : take(b, "conv_seg.", "bias", SHAPE(cfg->seg_classes), 1, &u->cls.bias);
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
    if (c->seg_classes < 0 || (c->seg_classes > 0 && c->seg_channels < 1))
        return dm_fail(DM_ERR_MODEL, "the UperNet head needs classes and channels (got %d and %d)", c->seg_classes,
                       c->seg_channels);
    /* mmseg labels with a one-channel head differently: a sigmoid and a
     * threshold (0.3, from the config) where more channels take a softmax
     * and the largest.  Refused rather than labelled class 0 everywhere. */
    if (c->seg_classes == 1)
        return dm_fail(DM_ERR_MODEL, "the UperNet head has one output channel (mmseg's binary mode: a sigmoid and a "
                                     "threshold, out_channels=1), which is not supported; a head of 2 channels is");
    return DM_OK;
}

/* The model then describes what it holds: one block, in stage 0. */
static dm_status bind_single_block(binder *b, const dm_config *cfg)
{
    for (int s = 0; s < DM_NUM_STAGES; s++) b->model->config.depths[s] = s == 0;
    dm_stage *stage = &b->model->stages[0];
    if (!(stage->blocks = model_alloc(b->model, sizeof(dm_block)))) return dm_fail_nomem("out of memory");
    stage->block_count = 1;
    return bind_block(b, cfg, 0, "", &stage->blocks[0]);
}

/* Bind the parameters of one source into m; a file's tensors must all be
 * used.  Adds the trainable parameters bound to *params. */
static dm_status bind_source(dm_model *m, const dm_config *config, const dm_param_source *src,
                             dm_status (*bind)(binder *, const dm_config *), int64_t *params)
{
    binder b = {.src = src, .model = m};
    if (src->file && !(b.used = calloc(src->file->count + 1, 1))) return dm_fail(DM_ERR_NOMEM, "out of memory");
    dm_status st = bind(&b, config);
    if (!st && src->file)
        for (size_t i = 0; i < src->file->count; i++)
            if (!b.used[i]) {
                st = dm_fail(DM_ERR_MODEL, "unexpected tensor '%s%s'", src->prefix ? src->prefix : "",
                             src->file->tensors[i].name);
                break;
            }
    free(b.used);
    *params += b.params;
    return st;
}

static dm_status pack_products(dm_model *m); /* with the parameter walks, below */

static dm_status build(const dm_config *config, const dm_param_source *src,
                       dm_status (*bind)(binder *, const dm_config *), dm_model **out)
{
    *out = NULL;
    dm_status st = check_config(config);
    if (st) return st;
    dm_model *m = calloc(1, sizeof *m);
    if (!m) return dm_fail(DM_ERR_NOMEM, "out of memory");
    static atomic_uint_fast64_t models_built;
    m->serial = atomic_fetch_add(&models_built, 1) + 1;
    m->config = *config;
    int64_t params = 0;
    st = bind_source(m, config, src, bind, &params);
    if (!st && (config->seg_classes > 0 || config->det_classes > 0)) {
        dm_param_source head = *src;
        head.file = src->head_file;
        head.prefix = src->head_prefix;
        st = bind_source(m, config, &head, config->seg_classes > 0 ? bind_upernet : bind_det, &params);
    }
    if (!st) st = pack_products(m);
    if (st) {
        dm_model_free(m);
        return st;
    }
    m->config.num_params = params;
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
    for (size_t i = 0; i < model->alloc_count; i++) dm_host_free(model->allocs[i]);
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
    NEED(stem_out, "stem.9.weight");
    if (stem_out != c->dims[0])
        return dm_fail(DM_ERR_MODEL, "inconsistent stage shapes: the stem ends with %lld channels but stage 0 has %d",
                       (long long)stem_out, c->dims[0]);
    /* no head.fc.weight: a backbone without a classifier */
    v = dim_of(f, 0, "head.fc.weight");
    if (dm_tensor_file_find(f, "head.fc.weight")) NEED(v, "head.fc.weight");
    c->num_classes = v > 0 ? (int)v : 0;
    return DM_OK;
}

/* A view's own memory: its tensor list and index (the names are the
 * file's). */
static void view_free(dm_tensor_file *view)
{
    free(view->tensors);
    free(view->by_name);
}

/* The tensors of file whose names start with prefix but not with skip
 * (NULL: none skipped), under their names without prefix (pointing into
 * file's names: free with view_free), indexed by name: a checkpoint of
 * many tensors is bound in n log n, not n^2. */
static dm_status prefix_view(const dm_tensor_file *file, const char *prefix, const char *skip, dm_tensor_file *view)
{
    *view = (dm_tensor_file){.tensors = malloc((file->count + 1) * sizeof *view->tensors)};
    if (!view->tensors) return dm_fail(DM_ERR_NOMEM, "out of memory");
    size_t n = strlen(prefix);
    for (size_t i = 0; i < file->count; i++)
        if (strncmp(file->tensors[i].name, prefix, n) == 0 &&
            !(skip && strncmp(file->tensors[i].name, skip, strlen(skip)) == 0)) {
            view->tensors[view->count] = file->tensors[i];
            view->tensors[view->count++].name += n;
        }
    dm_status st = dm_tensor_file_index(view);
    if (st) view_free(view);
    return st;
}

/* Checkpoints of a backbone with heads, told apart by one of their
 * tensors: every name starts with one of parts (the first is the
 * backbone's); the head binder sees the tensors under head_prefix, without
 * it, the backbone excluded. */
typedef struct checkpoint_kind {
    const char *marker;
    const char *what;
    const char *parts[4];
    const char *head_prefix;
} checkpoint_kind;

static const checkpoint_kind checkpoint_kinds[] = {
    /* mmsegmentation: auxiliary_head.* is only used in training, so ignored */
    {"decode_head.conv_seg.weight", "segmentation", {"backbone.", "decode_head.", "auxiliary_head."}, "decode_head."},
    /* mmdetection's Mask R-CNN: the heads keep their full names */
    {"roi_head.bbox_head.fc_cls.weight", "detection", {"backbone.", "neck.", "rpn_head.", "roi_head."}, ""},
};

/* The part of a kind's checkpoints a tensor name belongs to, -1 none. */
static int checkpoint_part(const checkpoint_kind *kind, const char *name)
{
    for (int p = 0; p < 4 && kind->parts[p]; p++)
        if (strncmp(name, kind->parts[p], strlen(kind->parts[p])) == 0) return p;
    return -1;
}

static dm_status split_checkpoint(const dm_tensor_file *file, const checkpoint_kind *kind, dm_tensor_file *backbone,
                                  dm_tensor_file *head)
{
    for (size_t i = 0; i < file->count; i++) {
        if (checkpoint_part(kind, file->tensors[i].name) < 0)
            return dm_fail(DM_ERR_MODEL, "unexpected tensor '%s' in a %s checkpoint (names start with %s, %s%s%s%s%s)",
                           file->tensors[i].name, kind->what, kind->parts[0], kind->parts[1],
                           kind->parts[2] ? ", " : "", kind->parts[2] ? kind->parts[2] : "",
                           kind->parts[3] ? ", " : "", kind->parts[3] ? kind->parts[3] : "");
    }
    dm_status st = prefix_view(file, kind->parts[0], NULL, backbone);
    if (!st && (st = prefix_view(file, kind->head_prefix, kind->parts[0], head))) view_free(backbone);
    return st;
}

/* A file no kind's marker told apart: a checkpoint with heads that lacks
 * its marker, or a backbone of one without heads, gets a message saying
 * so instead of failing on the classifier's first missing name. */
static dm_status unmarked_checkpoint(const dm_tensor_file *file)
{
    size_t kinds = sizeof checkpoint_kinds / sizeof checkpoint_kinds[0];
    for (size_t k = 0; k < kinds; k++) {
        const checkpoint_kind *kind = &checkpoint_kinds[k];
        for (size_t i = 0; i < file->count; i++)
            if (checkpoint_part(kind, file->tensors[i].name) > 0) /* a head's, not the backbone's */
                return dm_fail(DM_ERR_MODEL, "missing tensor '%s': the file looks like a %s checkpoint ('%s' is "
                               "one of its parts)", kind->marker, kind->what, file->tensors[i].name);
    }
    for (size_t i = 0; i < file->count; i++)
        if (checkpoint_part(&checkpoint_kinds[0], file->tensors[i].name) == 0)
            return dm_fail(DM_ERR_MODEL,
                           "tensor '%s': a checkpoint's backbone without its heads (no '%s' nor '%s'), or "
                           "a classifier's names with a prefix",
                           file->tensors[i].name, checkpoint_kinds[0].marker, checkpoint_kinds[1].marker);
    return DM_OK;
}

/* Mask R-CNN's widths from its heads' shapes. */
static dm_status infer_det(const dm_tensor_file *f, dm_config *c)
{
    int64_t fpn = dim_of(f, 0, "neck.lateral_convs.0.conv.weight");
    NEED(fpn, "neck.lateral_convs.0.conv.weight");
    int64_t cls = dim_of(f, 0, "roi_head.bbox_head.fc_cls.weight");
    if (cls < 2 || cls > (1 << 20))
        return dm_fail(DM_ERR_MODEL, "malformed tensor 'roi_head.bbox_head.fc_cls.weight' (needs at least one class and the background)");
    int64_t fc = dim_of(f, 0, "roi_head.bbox_head.shared_fcs.1.weight");
    NEED(fc, "roi_head.bbox_head.shared_fcs.1.weight");
    int64_t mask = dim_of(f, 0, "roi_head.mask_head.upsample.weight");
    NEED(mask, "roi_head.mask_head.upsample.weight");
    int convs = 0;
    while (dim_of(f, 0, "roi_head.mask_head.convs.%d.conv.weight", convs) > 0) convs++;
    c->fpn_channels = (int)fpn;
    c->det_classes = (int)cls - 1;
    c->det_fc_channels = (int)fc;
    c->mask_channels = (int)mask;
    c->mask_convs = convs;
    return DM_OK;
}

dm_status dm_model_from_file(const dm_tensor_file *file, dm_model **out)
{
    *out = NULL;
    dm_tensor_file backbone = *file, head = {0};
    const checkpoint_kind *kind = NULL;
    for (size_t k = 0; k < sizeof checkpoint_kinds / sizeof checkpoint_kinds[0]; k++)
        if (dm_tensor_file_find(file, checkpoint_kinds[k].marker)) kind = &checkpoint_kinds[k];
    int seg = kind == &checkpoint_kinds[0];
    dm_status st = kind ? split_checkpoint(file, kind, &backbone, &head) : unmarked_checkpoint(file);
    if (st) return st;
    dm_config cfg;
    if ((st = dm_config_infer(&backbone, &cfg)) && kind)
        dm_error_prefix("the backbone of a %s checkpoint (names after '%s'): ", kind->what, kind->parts[0]);
    if (!st && kind && cfg.num_classes)
        st = dm_fail(DM_ERR_MODEL, "unexpected tensor '%shead.fc.weight': a classifier's head in a %s checkpoint, "
                                   "whose backbone has none", kind->parts[0], kind->what);
    if (!st && kind && !seg) st = infer_det(&head, &cfg);
    if (!st && seg) {
        int64_t classes = dim_of(&head, 0, "conv_seg.weight"), channels = dim_of(&head, 1, "conv_seg.weight");
        if (classes < 1 || classes > 65536 || channels < 1 || channels > 65536)
            st = dm_fail(DM_ERR_MODEL, "malformed tensor 'decode_head.conv_seg.weight'");
        cfg.seg_classes = (int)classes;
        cfg.seg_channels = (int)channels;
    }
    if (!st) {
        dm_param_source src = {.file = &backbone, .head_file = &head};
        if (kind) src.prefix = kind->parts[0], src.head_prefix = kind->head_prefix;
        st = dm_model_build(&cfg, &src, out);
    }
    if (kind) {
        view_free(&backbone);
        view_free(&head);
    }
    if (st) return st;
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
    if (!out) return dm_fail(DM_ERR_ARGUMENT, "dm_model_load_default: out is required");
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

/* ------------------------------------------------------ parameter walks */

/* visit(ctx, &p, floats, product) for every parameter p a model holds (not
 * NULL): floats is its size as the model holds it; product the (n, k) of
 * a matrix-product weight, NULL for any other parameter.  The one list of
 * the parameters, for packing the products and for mirrors. */
typedef void (*param_visit)(void *ctx, float **param, size_t floats, const dm_product *product);

typedef struct walk {
    param_visit visit;
    void *ctx;
} walk;

static void walk_param(const walk *w, float **param, size_t floats)
{
    if (*param) w->visit(w->ctx, param, floats, NULL);
}

static void walk_product(const walk *w, float **param, size_t n, size_t k)
{
    dm_product product = {n, k};
    if (*param) w->visit(w->ctx, param, dm_packed_floats(n, k), &product);
}

static void walk_conv(const walk *w, dm_conv3x3 *c)
{
    walk_product(w, &c->weight, (size_t)c->cout, 9 * (size_t)c->cin);
    walk_param(w, &c->bias, (size_t)c->cout);
}

static void walk_conv1x1(const walk *w, dm_conv1x1 *c)
{
    walk_product(w, &c->weight, (size_t)c->cout, (size_t)c->cin);
    walk_param(w, &c->bias, (size_t)c->cout);
}

static void walk_upernet(const walk *w, dm_upernet *u)
{
    for (int i = 0; i < DM_PPM_SCALES; i++) walk_conv1x1(w, &u->psp[i]);
    walk_conv(w, &u->bottleneck);
    for (int i = 0; i < DM_NUM_STAGES - 1; i++) {
        walk_conv1x1(w, &u->lateral[i]);
        walk_conv(w, &u->fpn[i]);
    }
    walk_conv(w, &u->fpn_bottleneck);
    walk_conv1x1(w, &u->cls);
}

static void walk_det(const walk *w, dm_det_heads *h)
{
    for (int i = 0; i < DM_NUM_STAGES; i++) {
        walk_conv1x1(w, &h->lateral[i]);
        walk_conv(w, &h->fpn[i]);
    }
    walk_conv(w, &h->rpn_conv);
    walk_conv1x1(w, &h->rpn_cls);
    walk_conv1x1(w, &h->rpn_reg);
    for (int i = 0; i < 2; i++) walk_conv1x1(w, &h->fc[i]);
    walk_conv1x1(w, &h->cls);
    walk_conv1x1(w, &h->reg);
    for (int i = 0; i < h->mask_convs_count; i++) walk_conv(w, &h->mask_convs[i]);
    walk_conv1x1(w, &h->upsample);
    walk_conv1x1(w, &h->mask_logits);
}

static void walk_block(const walk *w, const dm_config *cfg, int s, dm_block *b)
{
    size_t C = cfg->dims[s], G = cfg->groups[s], R = cfg->dt_rank[s], F = cfg->mlp_hidden[s];
    const struct {
        float **param;
        size_t floats;
    } params[] = {
        {&b->pos_w9, 9 * C},    {&b->pos_b, C},      {&b->norm1_g, C},     {&b->norm1_b, C},
        {&b->conv_w9, 9 * C},   {&b->conv_b, C},     {&b->off_dw_w9, 9 * C}, {&b->off_dw_b, C},
        {&b->off_ln_g, C},      {&b->off_ln_b, C},   {&b->off_b, 2 * G},   {&b->dt_bias, C},
        {&b->a, C},             {&b->d, C},          {&b->out_norm_g, C},  {&b->out_norm_b, C},
        {&b->fc1_b, F},         {&b->mlp_w9, 9 * F}, {&b->mlp_b, F},       {&b->fc2_b, C},
    };
    for (size_t i = 0; i < sizeof params / sizeof params[0]; i++) walk_param(w, params[i].param, params[i].floats);
    const struct {
        float **param;
        size_t n, k;
    } products[] = {
        {&b->in_proj, C, C}, {&b->off_w, 2 * G, C}, {&b->x_proj, R + 2, C}, {&b->dt_proj, C, R},
        {&b->out_proj, C, C}, {&b->fc1_w, F, C},    {&b->fc2_w, C, F},
    };
    for (size_t i = 0; i < sizeof products / sizeof products[0]; i++)
        walk_product(w, products[i].param, products[i].n, products[i].k);
}

static void walk_model(dm_model *m, param_visit visit, void *ctx)
{
    const walk w = {visit, ctx};
    const dm_config *cfg = &m->config;
    for (int i = 0; i < 4; i++) walk_conv(&w, &m->stem[i]);
    for (int s = 0; s < DM_NUM_STAGES; s++) {
        dm_stage *stage = &m->stages[s];
        walk_conv(&w, &stage->downsample);
        for (int j = 0; j < stage->block_count; j++) walk_block(&w, cfg, s, &stage->blocks[j]);
        walk_param(&w, &stage->norm_g, (size_t)cfg->dims[s]);
        walk_param(&w, &stage->norm_b, (size_t)cfg->dims[s]);
    }
    walk_product(&w, &m->head_w, (size_t)cfg->num_classes, (size_t)cfg->dims[3]);
    walk_param(&w, &m->head_b, (size_t)cfg->num_classes);
    if (m->upernet) walk_upernet(&w, m->upernet);
    if (cfg->det_classes > 0) walk_det(&w, &m->det);
}

/* An allocation before packing: its address and place in the model's list. */
typedef struct alloc_place {
    uintptr_t address;
    size_t index;
} alloc_place;

typedef struct packer {
    dm_model *model;
    dm_status status;
    alloc_place *places; /* by address */
    size_t count;
} packer;

static int by_address(const void *a, const void *b)
{
    uintptr_t x = ((const alloc_place *)a)->address, y = ((const alloc_place *)b)->address;
    return x < y ? -1 : x > y;
}

/* Free the unpacked weight, found among the allocations by address (a
 * search through them all for each of a model's thousands of products
 * took quadratic time), leaving a hole that pack_products closes. */
static void release_unpacked(packer *p, void *weight)
{
    alloc_place key = {(uintptr_t)weight, 0};
    const alloc_place *at = bsearch(&key, p->places, p->count, sizeof key, by_address);
    if (!at) return;
    dm_host_free(weight);
    p->model->allocs[at->index] = NULL;
}

static void pack_product(void *ctx, float **param, size_t floats, const dm_product *product)
{
    packer *p = ctx;
    (void)floats;
    if (!product || p->status) return;
    float *packed = model_alloc(p->model, dm_packed_floats(product->n, product->k) * sizeof(float));
    if (!packed) {
        p->status = dm_fail_nomem("out of memory packing a %zu x %zu weight", product->n, product->k);
        return;
    }
    dm_pack_panels(*param, product->n, product->k, packed);
    release_unpacked(p, *param);
    *param = packed;
}

/* The products' weights, bound as [n][k], packed (and the unpacked copy
 * freed): once, as the model is made, so every CPU pass reads them as its
 * kernels want them and nothing holds them twice. */
static dm_status pack_products(dm_model *m)
{
    packer p = {m, DM_OK, malloc((m->alloc_count ? m->alloc_count : 1) * sizeof *p.places), m->alloc_count};
    if (!p.places) return dm_fail(DM_ERR_NOMEM, "out of memory packing the weights");
    for (size_t i = 0; i < p.count; i++) p.places[i] = (alloc_place){(uintptr_t)m->allocs[i], i};
    qsort(p.places, p.count, sizeof *p.places, by_address);
    walk_model(m, pack_product, &p);
    free(p.places);
    size_t kept = 0;
    for (size_t i = 0; i < m->alloc_count; i++)
        if (m->allocs[i]) m->allocs[kept++] = m->allocs[i];
    m->alloc_count = kept;
    return p.status;
}

typedef struct mirroring {
    dm_param_place place;
    void *ctx;
} mirroring;

static void mirror_param(void *ctx, float **param, size_t floats, const dm_product *product)
{
    const mirroring *mi = ctx;
    *param = mi->place(mi->ctx, *param, floats, product);
}

dm_status dm_model_mirror(const dm_model *m, dm_param_place place, void *ctx, dm_model *out)
{
    const dm_config *cfg = &m->config;
    memset(out, 0, sizeof *out);
    out->config = *cfg;
    memcpy(out->stem, m->stem, sizeof out->stem);
    for (int s = 0; s < DM_NUM_STAGES; s++) {
        const dm_stage *src = &m->stages[s];
        dm_stage *dst = &out->stages[s];
        *dst = *src;
        dst->blocks = NULL;
        if (src->block_count && !(dst->blocks = malloc((size_t)src->block_count * sizeof(dm_block)))) {
            dm_model_mirror_free(out);
            return dm_fail(DM_ERR_NOMEM, "out of memory mirroring the model's parameters");
        }
        if (src->block_count) memcpy(dst->blocks, src->blocks, (size_t)src->block_count * sizeof(dm_block));
    }
    out->head_w = m->head_w;
    out->head_b = m->head_b;
    if (m->upernet) {
        if (!(out->upernet = malloc(sizeof *out->upernet))) {
            dm_model_mirror_free(out);
            return dm_fail(DM_ERR_NOMEM, "out of memory mirroring the model's parameters");
        }
        *out->upernet = *m->upernet;
    }
    if (cfg->det_classes > 0) {
        out->det = m->det;
        out->det.mask_convs = NULL;
        size_t bytes = (size_t)m->det.mask_convs_count * sizeof(dm_conv3x3);
        if (bytes && !(out->det.mask_convs = malloc(bytes))) {
            dm_model_mirror_free(out);
            return dm_fail(DM_ERR_NOMEM, "out of memory mirroring the model's parameters");
        }
        if (bytes) memcpy(out->det.mask_convs, m->det.mask_convs, bytes);
    }
    mirroring mi = {place, ctx};
    walk_model(out, mirror_param, &mi);
    return DM_OK;
}

void dm_model_mirror_free(dm_model *mirror)
{
    for (int s = 0; s < DM_NUM_STAGES; s++) {
        free(mirror->stages[s].blocks);
        mirror->stages[s].blocks = NULL;
    }
    free(mirror->upernet);
    mirror->upernet = NULL;
    free(mirror->det.mask_convs);
    mirror->det.mask_convs = NULL;
}
