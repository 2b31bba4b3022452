/* cmd_run.c - `damamba run` (tensor file in, outputs out) and
 * `damamba info` (the inferred configuration). */
#include "cli.h"
#include "internal_api.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

static const char run_usage[] =
    "usage: damamba run [-m MODEL] [--ema] -i IN.safetensors -o OUT.safetensors\n"
    "                   [-t THREADS] [--dtype f32|bf16|f16] [--backend cpu|cuda]\n"
    "                   [--mode whole|slide] [--crop H[xW]] [--stride H[xW]]\n"
    "\n"
    "Reads the F32 tensor 'input' (N x C x H x W) from IN, or 'image' or 'img'\n"
    "(C x H x W, as 'damamba preprocess' writes them) as a batch of one, runs\n"
    "the model and writes 'logits' (N x classes, when the model has a head) and\n"
    "'stage0' .. 'stage3' (N x C x H x W, F32) to OUT: the way to check this\n"
    "library against PyTorch.  A segmentation model (UperNet head) also gives\n"
    "'decode_logits' (N x K x H/4 x W/4, whole mode), 'seg_logits' (N x K x H x W,\n"
    "resized to the input) and 'seg_pred' (I64 N x H x W class indices), as\n"
    "mmsegmentation's EncoderDecoder computes them.  OUT is replaced only once\n"
    "it is completely written.\n"
    "\n"
    "A detection model (Mask R-CNN) takes one image: 'input' (1 x 3 x H x W) or\n"
    "'img' (3 x H x W), normalized and padded, 'img_shape' (h, w before\n"
    "padding), 'ori_shape' (h, w of the original) and 'scale_factor' (w, h, w,\n"
    "h), as 'damamba preprocess --pipeline coco' writes them, and writes\n"
    "'proposals' (N x 5), 'det_bboxes' (D x 4, original-image pixels),\n"
    "'det_scores' (D), 'det_labels' (D, I64) and 'det_masks' (D x H0 x W0, U8).\n"
    "\n"
    "  -m, --model FILE    model (.safetensors or .pth); default: embedded\n"
    "      --ema           a .pth checkpoint's EMA weights ('model_ema')\n"
    "  -i, --input FILE    input tensor file\n"
    "  -o, --output FILE   output tensor file\n"
    "  -t, --threads N     threads (default: DAMAMBA_THREADS, OMP_NUM_THREADS or all usable cores)\n"
    CLI_DTYPE_HELP("     ")
    CLI_BACKEND_HELP("     ")
    "      --mode M        segmentation: whole (default) or slide\n"
    "      --crop H[xW]    slide window (default 512)\n"
    "      --stride H[xW]  slide step (default 341)\n";

enum { OPT_MODE = 300, OPT_CROP, OPT_STRIDE };

#define MAX_OUTPUTS (DM_NUM_STAGES + 4)

/* The tensors one run writes, each in its own buffer but 'det_masks',
 * which is the detections' own (as large as the photo, once per object). */
typedef struct run_outputs {
    dm_tensor t[MAX_OUTPUTS];
    size_t count;
    dm_detections det;
} run_outputs;

/* A new output of the given shape; its buffer, or NULL (printed). */
static void *add_output(run_outputs *o, const char *name, dm_dtype dtype, int ndim, const int64_t *shape)
{
    dm_tensor *t = &o->t[o->count];
    *t = (dm_tensor){.name = (char *)name, .dtype = dtype, .ndim = ndim, .numel = 1};
    for (int d = 0; d < ndim; d++) t->numel *= (t->shape[d] = shape[d]);
    t->nbytes = (size_t)t->numel * dm_dtype_size(dtype);
    if (!(t->data = malloc(t->nbytes ? t->nbytes : 1))) { /* an empty tensor (no detections) too */
        cli_error("out of memory");
        return NULL;
    }
    o->count++;
    return (void *)t->data;
}

static void free_outputs(run_outputs *o)
{
    for (size_t i = 0; i < o->count; i++)
        if (o->t[i].data != o->det.masks) free((void *)o->t[i].data);
    dm_detections_free(&o->det);
}

/* decode_logits (whole mode), seg_logits and seg_pred of a segmentation
 * model.  Returns 0 (printed) on failure. */
static int run_segmentation(const dm_model *m, dm_backend backend, const float *input, int n, int h, int w,
                            const dm_seg_options *options, run_outputs *o)
{
    int K = dm_model_config(m)->seg_classes, ws_h = h, ws_w = w, h4, w4;
    dm_stage_shape(m, h, w, 0, NULL, &h4, &w4);
    if (options->mode == DM_SEG_SLIDE) {
        ws_h = options->crop_h < h ? options->crop_h : h;
        ws_w = options->crop_w < w ? options->crop_w : w;
    }
    dm_seg_outputs out = {0};
    if (options->mode == DM_SEG_WHOLE &&
        !(out.decode_logits = add_output(o, "decode_logits", DM_F32, 4, (int64_t[]){n, K, h4, w4})))
        return 0;
    if (!(out.seg_logits = add_output(o, "seg_logits", DM_F32, 4, (int64_t[]){n, K, h, w}))) return 0;
    int64_t *pred = add_output(o, "seg_pred", DM_I64, 3, (int64_t[]){n, h, w});
    if (!pred || !(out.seg_pred = malloc(sizeof(int32_t) * n * h * w))) {
        if (pred) cli_error("out of memory");
        return 0;
    }
    dm_workspace *ws = cli_workspace_create(m, backend, n, ws_h, ws_w);
    int ok = ws && dm_segment(m, ws, input, n, h, w, options, &out) == DM_OK;
    if (ws && !ok) cli_error("%s", dm_last_error());
    for (size_t p = 0; ok && p < (size_t)n * h * w; p++) pred[p] = out.seg_pred[p];
    free(out.seg_pred);
    dm_workspace_free(ws);
    return ok;
}

/* The first count values of a numeric tensor, or 0 with an error. */
static int read_numbers(const dm_tensor_file *f, const char *path, const char *name, int count, double *out)
{
    const dm_tensor *t = dm_tensor_file_find(f, name);
    if (!t || t->numel < count || (t->dtype != DM_F32 && t->dtype != DM_F64 && t->dtype != DM_I64 && t->dtype != DM_I32)) {
        cli_error("%s: a detection model needs a numeric tensor '%s' of at least %d values", path, name, count);
        return 0;
    }
    for (int i = 0; i < count; i++) {
        const char *p = (const char *)t->data + i * dm_dtype_size(t->dtype);
        float f;
        double d;
        int64_t l;
        int32_t n;
        switch (t->dtype) {
        case DM_F32: memcpy(&f, p, 4); out[i] = f; break;
        case DM_F64: memcpy(&d, p, 8); out[i] = d; break;
        case DM_I64: memcpy(&l, p, 8); out[i] = (double)l; break;
        default: memcpy(&n, p, 4); out[i] = n; break;
        }
    }
    return 1;
}

static int in_range(double v, double lo, double hi) { return v >= lo && v <= hi; }

/* `run` on a Mask R-CNN: one image in, proposals and detections out.
 * Returns 0 (printed) on failure. */
static int run_detection(const dm_model *m, dm_backend backend, const dm_tensor_file *in, const char *in_path,
                         const float *input, int n, int h, int w, run_outputs *o)
{
    double img[2], ori[2], sf[4];
    if (n != 1) {
        cli_error("%s: a detection model takes one image (input has %d)", in_path, n);
        return 0;
    }
    if (!read_numbers(in, in_path, "img_shape", 2, img) || !read_numbers(in, in_path, "ori_shape", 2, ori) ||
        !read_numbers(in, in_path, "scale_factor", 4, sf))
        return 0;
    if (!in_range(img[0], 1, h) || !in_range(img[1], 1, w) || !in_range(ori[0], 1, 65536) || !in_range(ori[1], 1, 65536)) {
        cli_error("%s: img_shape %gx%g must fit the %dx%d input, and ori_shape %gx%g be 1 to 65536 a side", in_path,
                  img[0], img[1], h, w, ori[0], ori[1]);
        return 0;
    }
    dm_det_image im = {(int)img[0], (int)img[1], (int)ori[0], (int)ori[1], {(float)sf[0], (float)sf[1], (float)sf[2], (float)sf[3]}};
    dm_detections d = {0};
    dm_workspace *ws = cli_workspace_create(m, backend, 1, h, w);
    int ok = ws && dm_detect(m, ws, input, h, w, &im, NULL, &d) == DM_OK;
    if (ws && !ok) cli_error("%s", dm_last_error());
    dm_workspace_free(ws);
    int64_t D = d.count, N = d.num_proposals;
    float *proposals = NULL, *boxes = NULL, *scores = NULL;
    int64_t *labels = NULL;
    ok = ok && (proposals = add_output(o, "proposals", DM_F32, 2, (int64_t[]){N, 5})) &&
         (boxes = add_output(o, "det_bboxes", DM_F32, 2, (int64_t[]){D, 4})) &&
         (scores = add_output(o, "det_scores", DM_F32, 1, (int64_t[]){D})) &&
         (labels = add_output(o, "det_labels", DM_I64, 1, (int64_t[]){D}));
    if (ok && N) memcpy(proposals, d.proposals, sizeof(float) * 5 * N);
    if (ok && D) {
        memcpy(boxes, d.boxes, sizeof(float) * 4 * D);
        memcpy(scores, d.scores, sizeof(float) * D);
        for (int64_t i = 0; i < D; i++) labels[i] = d.labels[i];
    }
    if (ok) { /* the masks are written from the detections' buffer, not copied */
        int64_t numel = D * d.mask_h * d.mask_w;
        o->t[o->count++] = (dm_tensor){.name = "det_masks", .dtype = DM_U8, .ndim = 3, .shape = {D, d.mask_h, d.mask_w},
                                       .numel = numel, .nbytes = (size_t)numel, .data = d.masks};
    }
    o->det = d;
    return ok;
}

/* The stage outputs and logits of a forward pass.  Returns 0 (printed) on
 * failure. */
static int run_forward(const dm_model *m, dm_backend backend, const float *input, int n, int h, int w, run_outputs *o)
{
    static const char *names[DM_NUM_STAGES] = {"stage0", "stage1", "stage2", "stage3"};
    const dm_config *cfg = dm_model_config(m);
    dm_outputs fwd = DM_OUTPUTS_INIT;
    for (int s = 0; s < DM_NUM_STAGES; s++) {
        int C, oh, ow;
        dm_stage_shape(m, h, w, s, &C, &oh, &ow);
        if (!(fwd.stages[s] = add_output(o, names[s], DM_F32, 4, (int64_t[]){n, C, oh, ow}))) return 0;
    }
    if (cfg->num_classes && !(fwd.logits = add_output(o, "logits", DM_F32, 2, (int64_t[]){n, cfg->num_classes})))
        return 0;
    dm_workspace *ws = cli_workspace_create(m, backend, n, h, w);
    int ok = ws && dm_forward(m, ws, input, n, h, w, &fwd) == DM_OK;
    if (ws && !ok) cli_error("%s", dm_last_error());
    dm_workspace_free(ws);
    return ok;
}

int cmd_run(int argc, char **argv)
{
    const char *model_path = NULL, *in_path = NULL, *out_path = NULL;
    int ema = 0;
    dm_backend backend = DM_BACKEND_CPU;
    dm_seg_options seg = dm_seg_options_ade20k();
    seg.mode = DM_SEG_WHOLE;
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"ema", no_argument, 0, CLI_OPT_EMA}, {"input", required_argument, 0, 'i'},
        {"output", required_argument, 0, 'o'}, {"threads", required_argument, 0, 't'}, {"dtype", required_argument, 0, CLI_OPT_DTYPE},
        {"mode", required_argument, 0, OPT_MODE}, {"crop", required_argument, 0, OPT_CROP},
        {"stride", required_argument, 0, OPT_STRIDE}, {"backend", required_argument, 0, CLI_OPT_BACKEND},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    int c, seg_given = 0, window_given = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, "m:i:o:t:h", opts, NULL)) != -1) {
        seg_given |= c == OPT_MODE || c == OPT_CROP || c == OPT_STRIDE;
        window_given |= c == OPT_CROP || c == OPT_STRIDE;
        switch (c) {
        case 'm': model_path = optarg; break;
        case CLI_OPT_EMA: ema = 1; break;
        case 'i': in_path = optarg; break;
        case 'o': out_path = optarg; break;
        case CLI_OPT_DTYPE: if (!cli_parse_precision("--dtype", optarg)) return 2; break;
        case 't': if (!cli_parse_threads(optarg)) return 2; break;
        case OPT_MODE:
            if (strcmp(optarg, "whole") && strcmp(optarg, "slide")) {
                cli_error("--mode expects whole or slide, got '%s'", optarg);
                return 2;
            }
            seg.mode = strcmp(optarg, "whole") ? DM_SEG_SLIDE : DM_SEG_WHOLE;
            break;
        case OPT_CROP: if (!cli_parse_size("--crop", optarg, &seg.crop_h, &seg.crop_w)) return 2; break;
        case OPT_STRIDE: if (!cli_parse_size("--stride", optarg, &seg.stride_h, &seg.stride_w)) return 2; break;
        case CLI_OPT_BACKEND: if (!cli_parse_backend("--backend", optarg, &backend)) return 2; break;
        case 'h': fputs(run_usage, stdout); return 0;
        default: fputs(run_usage, stderr); return 2;
        }
    }
    if (!in_path || !out_path || optind != argc) {
        fputs(run_usage, stderr);
        return 2;
    }
    if (window_given && seg.mode == DM_SEG_WHOLE) {
        cli_error("--crop and --stride set slide windows; --mode whole (the default) has none");
        return 2;
    }
    if (!cli_output_distinct(out_path, (const char *[]){in_path, model_path}, 2)) return 2;
    if (!cli_backend_usable(backend)) return 1;
    dm_tensor_file in;
    if (dm_safetensors_open(in_path, &in) != DM_OK) {
        cli_error("%s", dm_last_error());
        return 1;
    }
    /* 'input' is a batch; 'image' and 'img' (from damamba preprocess) one image. */
    const dm_tensor *x = dm_tensor_file_find(&in, "input");
    int single = !x && ((x = dm_tensor_file_find(&in, "image")) || (x = dm_tensor_file_find(&in, "img")));
    int rc = 1;
    dm_model *m = NULL;
    float *input = NULL;
    run_outputs o = {0};
    if (!x || x->dtype != DM_F32 || x->ndim != 4 - single) {
        cli_error("%s: needs an F32 tensor 'input' of shape N x C x H x W, or 'image' or 'img' of shape C x H x W",
                  in_path);
        goto done;
    }
    if (!(m = cli_load_model(model_path, ema))) goto done;
    const dm_config *cfg = dm_model_config(m);
    if (seg_given && !cfg->seg_classes) {
        cli_error("--mode, --crop and --stride are for segmentation models; %s has no segmentation head",
                  model_path ? model_path : CLI_DEFAULT_MODEL_NAME);
        rc = 2;
        goto done;
    }
    int64_t shape[4] = {1, 0, 0, 0};
    memcpy(shape + single, x->shape, sizeof(int64_t) * x->ndim);
    int n = (int)shape[0], h = (int)shape[2], w = (int)shape[3];
    if (shape[1] != cfg->in_chans || n < 1 || h < 1 || w < 1 || shape[0] > 65536 || shape[2] > 65536 ||
        shape[3] > 65536) {
        cli_error("%s: %s has shape [%lld, %lld, %lld, %lld]; the model takes N x %d x H x W, N, H and W from 1 "
                  "to 65536", in_path, x->name, (long long)shape[0], (long long)shape[1], (long long)shape[2],
                  (long long)shape[3], cfg->in_chans);
        goto done;
    }
    /* The mapped input may be unaligned; copy it. */
    if (!(input = malloc((size_t)x->nbytes))) { cli_error("out of memory"); goto done; }
    memcpy(input, x->data, x->nbytes);
    int ok = cfg->det_classes ? run_detection(m, backend, &in, in_path, input, n, h, w, &o)
                              : run_forward(m, backend, input, n, h, w, &o) &&
                                    (!cfg->seg_classes || run_segmentation(m, backend, input, n, h, w, &seg, &o));
    if (!ok) goto done;
    if (dm_safetensors_write(out_path, o.t, o.count, NULL, 0) != DM_OK) {
        cli_error("%s", dm_last_error());
        goto done;
    }
    rc = 0;
done:
    free_outputs(&o);
    free(input);
    dm_model_free(m);
    dm_tensor_file_close(&in);
    return rc;
}

static const char info_usage[] =
    "usage: damamba info [-m MODEL] [--size HxW]\n"
    "\n"
    "Prints the configuration inferred from the model's weights, its parameter\n"
    "count (as PyTorch counts trainable parameters) and its multiply-accumulate\n"
    "operations for one image of the given size (default: the size the model's\n"
    "preprocessing crops every image to, as its metadata says, 28x28 for the\n"
    "built-in model; else 224x224).\n"
    "\n"
    "  -m, --model FILE   model (.safetensors or .pth); default: embedded\n"
    "      --ema          a .pth checkpoint's EMA weights ('model_ema')\n"
    "  -s, --size HxW     input size for the MAC count\n";

int cmd_info(int argc, char **argv)
{
    const char *model_path = NULL, *size = NULL;
    int ema = 0;
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"ema", no_argument, 0, CLI_OPT_EMA}, {"size", required_argument, 0, 's'},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "m:s:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model_path = optarg; break;
        case CLI_OPT_EMA: ema = 1; break;
        case 's': size = optarg; break;
        case 'h': fputs(info_usage, stdout); return 0;
        default: fputs(info_usage, stderr); return 2;
        }
    }
    if (optind != argc) { fputs(info_usage, stderr); return 2; }
    int h = 224, w = 224;
    if (size && !cli_parse_size("--size", size, &h, &w)) return 2;
    dm_model *m = cli_load_model(model_path, ema);
    if (!m) return 1;
    /* the size the model is run at, as classify crops its images */
    dm_preprocess prep = DM_PREPROCESS_INIT;
    if (!size && (dm_preprocess_default(m, &prep) != DM_OK || !cli_fixed_input_size(&prep, &h, &w))) h = w = 224;
    const dm_config *cfg = dm_model_config(m);
    printf("model       %s\n", model_path ? model_path : CLI_DEFAULT_MODEL_NAME);
    printf("depths      [%d, %d, %d, %d]\n", cfg->depths[0], cfg->depths[1], cfg->depths[2], cfg->depths[3]);
    printf("dims        [%d, %d, %d, %d]\n", cfg->dims[0], cfg->dims[1], cfg->dims[2], cfg->dims[3]);
    printf("mlp_hidden  [%d, %d, %d, %d]\n", cfg->mlp_hidden[0], cfg->mlp_hidden[1], cfg->mlp_hidden[2],
           cfg->mlp_hidden[3]);
    printf("groups      [%d, %d, %d, %d]\n", cfg->groups[0], cfg->groups[1], cfg->groups[2], cfg->groups[3]);
    printf("dt_rank     [%d, %d, %d, %d]\n", cfg->dt_rank[0], cfg->dt_rank[1], cfg->dt_rank[2], cfg->dt_rank[3]);
    printf("layer_scale [%d, %d, %d, %d]\n", cfg->layer_scale[0], cfg->layer_scale[1], cfg->layer_scale[2],
           cfg->layer_scale[3]);
    printf("in_chans    %d\n", cfg->in_chans);
    if (cfg->num_classes) printf("classes     %d\n", cfg->num_classes);
    else if (!cfg->seg_classes && !cfg->det_classes) printf("classes     none (backbone without head)\n");
    if (cfg->seg_classes)
        printf("seg head    UperNet, %d channels, %d classes\n", cfg->seg_channels, cfg->seg_classes);
    if (cfg->det_classes)
        printf("detector    Mask R-CNN: %d classes, FPN %d, fc %d, mask head %d x %d convs\n", cfg->det_classes,
               cfg->fpn_channels, cfg->det_fc_channels, cfg->mask_convs, cfg->mask_channels);
    printf("parameters  %lld\n", (long long)cfg->num_params);
    printf("macs        %.3f G at %dx%d\n", dm_model_macs(m, h, w) / 1e9, h, w);
    dm_model_free(m);
    return 0;
}
