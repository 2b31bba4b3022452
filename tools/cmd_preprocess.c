/* cmd_preprocess.c - images in, tensors out: `damamba preprocess` (the
 * model's input) and `damamba features` (the four stage outputs). */
#include "cli.h"

#include <stdlib.h>
#include <string.h>

#include "internal_api.h"

static const char preprocess_usage[] =
    "usage: damamba preprocess [-m MODEL] [OPTIONS] IMAGE -o OUT.safetensors\n"
    "       damamba preprocess --pipeline ade20k|coco [--ratio R] [--flip] IMAGE -o OUT.safetensors\n"
    "\n"
    "Writes the F32 tensor 'image' (C x H x W) exactly as the model sees IMAGE:\n"
    "decoded, resized, center-cropped and normalized by the model's\n"
    "preprocessing (its metadata, else ImageNet's evaluation transform).\n"
    "With --pipeline ade20k, mmsegmentation's ADE20K test transform instead:\n"
    "'img' (3 x h x w: scaled with OpenCV's resize to fit (2048, 512) times R,\n"
    "keeping the aspect ratio, optionally flipped, normalized) and\n"
    "'scale_factor' (w_new / w, h_new / h, w_new / w, h_new / h).\n"
    "With --pipeline coco, mmdetection's COCO test pipeline: resized keeping\n"
    "its aspect ratio into 1333 x 800 (OpenCV's bilinear resize), normalized,\n"
    "zero-padded at the bottom and right to multiples of 32.  It writes 'img'\n"
    "(3 x H x W, padded), 'scale_factor', and 'img_shape' and 'ori_shape' (I64\n"
    "h, w, 3: the resized image and the original).  Both pipelines decode\n"
    "IMAGE as OpenCV does (turned upright as its EXIF orientation says), the\n"
    "model's preprocessing as PIL does.\n"
    "\n"
    "  -m, --model FILE     model whose preprocessing applies; default: embedded\n"
    "      --ema            a .pth checkpoint's EMA weights ('model_ema')\n"
    "  -o, --output FILE    output tensor file\n"
    "      --pipeline NAME  ade20k: mmsegmentation's ADE20K test transform;\n"
    "                       coco: mmdetection's COCO test pipeline (no model needed)\n"
    "      --ratio R        with --pipeline: a multi-scale ratio (default 1)\n"
    "      --flip           with --pipeline: flip horizontally\n"
    "\n" CLI_PREPROCESS_HELP;

static const char features_usage[] =
    "usage: damamba features [-m MODEL] [--size HxW] [-t THREADS] IMAGE -o OUT.safetensors\n"
    "       damamba features [-m MODEL] [--size HxW] [-t THREADS] -d DIR FILE|DIR|@LIST ...\n"
    "\n"
    "Writes the outputs of the model's four stages for IMAGE, 'stage0' ..\n"
    "'stage3' (F32, 1 x C x H x W, strides 4, 8, 16, 32), the features a\n"
    "detection or segmentation neck takes.  The image keeps its size, or is\n"
    "resized to exactly HxW (the paper's COCO setting is 800x1280); it is not\n"
    "cropped.  Channels, interpolation, mean and std are the model's.\n"
    "With -d, each image (found as `damamba classify` finds them, '-' and '@-'\n"
    "read standard input) gets its own file DIR/NAME.safetensors, NAME being\n"
    "its file name without extension ('stdin' for '-'), with the image's path\n"
    "as metadata 'file'.  An image that fails, or whose NAME an earlier one\n"
    "took, is reported and skipped; the exit status is then 1.\n"
    "\n"
    "  -m, --model FILE     model (.safetensors or .pth); default: embedded\n"
    "      --ema            a .pth checkpoint's EMA weights ('model_ema')\n"
    "  -s, --size HxW       resize the image to H x W pixels first\n"
    "  -o, --output FILE    output tensor file, for one image\n"
    "  -d, --output-dir DIR one tensor file per image, in DIR (created, with its\n"
    "                       parents, if missing)\n"
    "  -q, --quiet          no progress bar, no timing line (with -d)\n"
    "  -t, --threads N      threads (default: DAMAMBA_THREADS, OMP_NUM_THREADS or all usable cores)\n"
    "      --interpolation I, --mean A[,B,C], --std A[,B,C]   as for `damamba classify`\n";

/* The options both commands take; returns 0 to go on, else an exit code. */
typedef struct image_args {
    const char *model, *output, *output_dir, *pipeline, *ratio;
    char **images;
    int count, ema, quiet, flip;
    int h, w; /* features --size, else 0 */
    cli_preprocess_opts prep;
} image_args;

enum { OPT_PIPELINE = 400, OPT_RATIO, OPT_FLIP };

/* An option of the other command, named rather than answered with the
 * usage alone; returns the exit status. */
static int not_taken(int features, const char *option)
{
    cli_error("%s does not take %s (%s does)", features ? "features" : "preprocess", option,
              features ? "preprocess" : "features");
    return 2;
}

static int parse_args(int argc, char **argv, const char *usage, int features, image_args *a)
{
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"ema", no_argument, 0, CLI_OPT_EMA}, {"output", required_argument, 0, 'o'},
        {"output-dir", required_argument, 0, 'd'}, {"quiet", no_argument, 0, 'q'},
        {"threads", required_argument, 0, 't'}, {"help", no_argument, 0, 'h'}, CLI_PREPROCESS_LONG_OPTIONS,
        {"pipeline", required_argument, 0, OPT_PIPELINE}, {"ratio", required_argument, 0, OPT_RATIO},
        {"flip", no_argument, 0, OPT_FLIP}, {0, 0, 0, 0}};
    int c;
    *a = (image_args){0};
    optind = 1;
    while ((c = getopt_long(argc, argv, features ? "m:o:d:s:t:qh" : "m:o:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': a->model = optarg; break;
        case CLI_OPT_EMA: a->ema = 1; break;
        case 'o': a->output = optarg; break;
        case 'd':
            if (!features) return not_taken(features, "--output-dir");
            a->output_dir = optarg;
            break;
        case 'q':
            if (!features) return not_taken(features, "--quiet");
            a->quiet = 1;
            break;
        case 's':
            if (!cli_parse_size("--size", optarg, &a->h, &a->w)) return 2;
            break;
        case 't':
            if (!features) return not_taken(features, "--threads");
            if (!cli_parse_threads(optarg)) return 2;
            break;
        case 'h': fputs(usage, stdout); return -1;
        case OPT_PIPELINE: if (features) return not_taken(features, "--pipeline"); a->pipeline = optarg; break;
        case OPT_RATIO: if (features) return not_taken(features, "--ratio"); a->ratio = optarg; break;
        case OPT_FLIP: if (features) return not_taken(features, "--flip"); a->flip = 1; break;
        case CLI_OPT_SIZE: /* preprocess's --size is the crop size, as for classify */
            if (features) {
                if (!cli_parse_size("--size", optarg, &a->h, &a->w)) return 2;
                break;
            }
            /* fall through */
        case CLI_OPT_CROP_FRACTION:
            if (features) return not_taken(features, "--crop-fraction");
            /* fall through */
        default: {
            int taken = cli_preprocess_opt(&a->prep, c, optarg);
            if (taken < 0) return 2;
            if (!taken) goto bad;
        }
        }
    }
    /* -o: one image; -d: any number. */
    const char *wrong = NULL;
    if (optind == argc) wrong = "no image given";
    else if (a->output && a->output_dir) wrong = "-o and -d exclude each other";
    else if (!a->output && !a->output_dir) wrong = features ? "-o FILE or -d DIR is needed" : "-o FILE is needed";
    else if (a->output && optind != argc - 1)
        wrong = features ? "-o takes one image; -d DIR takes several" : "one image at a time";
    if (wrong) {
        cli_error("%s", wrong);
        goto bad;
    }
    a->images = argv + optind;
    a->count = argc - optind;
    return !a->output || cli_output_distinct(a->output, (const char *[]){a->images[0], a->model}, 2) ? 0 : 2;
bad:
    fputs(usage, stderr);
    return 2;
}

/* Load the model (or NULL when it failed) and its preprocessing.  For
 * features images are not cropped: they keep their size or take --size HxW.
 * Returns 0, or the exit status for the error it printed. */
static int load_settings(const image_args *a, int features, dm_model **m, dm_preprocess *prep)
{
    if (!(*m = cli_load_model(a->model, a->ema))) return 1;
    int rc = cli_preprocess_settings(*m, &a->prep, prep);
    if (rc) return rc;
    if (features) prep->resize = prep->crop = 0;
    if (a->h) {
        prep->resize = 0;
        prep->resize_h = a->h;
        prep->resize_w = a->w;
    }
    return 0;
}

/* Write float32 tensors, with the source image's path as metadata 'file'. */
static int write_tensors(const char *path, dm_tensor *t, size_t count, const char *source)
{
    for (size_t i = 0; i < count; i++) {
        t[i].numel = 1;
        for (int d = 0; d < t[i].ndim; d++) t[i].numel *= t[i].shape[d];
        t[i].nbytes = (size_t)t[i].numel * dm_dtype_size(t[i].dtype);
    }
    dm_meta meta = {.key = "file", .value = (char *)source};
    if (dm_safetensors_write(path, t, count, &meta, 1) != DM_OK) {
        cli_error("%s", dm_last_error());
        return 0;
    }
    return 1;
}

/* An mmcv test pipeline of one image: mmsegmentation's ADE20K transform
 * ('img' and 'scale_factor') or mmdetection's COCO pipeline (the padded
 * 'img', 'scale_factor', 'img_shape' and 'ori_shape').  Returns the exit
 * code. */
static int preprocess_pipeline(const image_args *a)
{
    int coco = !strcmp(a->pipeline, "coco");
    if (!coco && strcmp(a->pipeline, "ade20k")) {
        cli_error("--pipeline expects ade20k or coco, got '%s'", a->pipeline);
        return 2;
    }
    if (!a->output || a->model || a->ema || a->prep.size || a->prep.crop_fraction > 0 || a->prep.interpolation_set ||
        a->prep.mean.count || a->prep.std.count) {
        cli_error("--pipeline takes one image and -o OUT, and no model or preprocessing options");
        return 2;
    }
    dm_mm_transform t = coco ? dm_mm_transform_coco() : dm_mm_transform_ade20k();
    t.flip = a->flip;
    if (a->ratio) {
        char *end;
        t.ratio = strtod(a->ratio, &end);
        if (*end || !(t.ratio > 0 && t.ratio <= 64)) {
            cli_error("--ratio expects a number above 0 and up to 64, got '%s'", a->ratio);
            return 2;
        }
    }
    const char *path = a->images[0];
    dm_image img;
    if (cli_image_load(path, 3, DM_IMAGE_OPENCV, &img) != DM_OK) {
        cli_error("%s", dm_last_error());
        return 1;
    }
    int h, w, ph = 0, pw = 0, rc = 1;
    float scale[4], *out = NULL;
    if (dm_mm_transform_size(&t, img.width, img.height, &h, &w, scale) == DM_OK) {
        ph = dm_mm_padded(&t, h);
        pw = dm_mm_padded(&t, w);
    }
    if (!ph || !(out = malloc(sizeof(float) * 3 * ph * pw)) || dm_mm_transform_image(&img, &t, out) != DM_OK) {
        cli_error("%s: %s", path, !ph || out ? dm_last_error() : "out of memory");
    } else {
        int64_t img_shape[3] = {h, w, 3}, ori_shape[3] = {img.height, img.width, 3};
        dm_tensor tensors[] = {
            {.name = "img", .dtype = DM_F32, .ndim = 3, .shape = {3, ph, pw}, .data = out},
            {.name = "scale_factor", .dtype = DM_F32, .ndim = 1, .shape = {4}, .data = scale},
            {.name = "img_shape", .dtype = DM_I64, .ndim = 1, .shape = {3}, .data = img_shape},
            {.name = "ori_shape", .dtype = DM_I64, .ndim = 1, .shape = {3}, .data = ori_shape},
        };
        rc = write_tensors(a->output, tensors, coco ? 4 : 2, path) ? 0 : 1;
    }
    free(out);
    dm_image_free(&img);
    return rc;
}

int cmd_preprocess(int argc, char **argv)
{
    image_args a;
    int rc = parse_args(argc, argv, preprocess_usage, 0, &a), h, w;
    if (rc) return rc < 0 ? 0 : rc;
    if (a.pipeline) return preprocess_pipeline(&a);
    if (a.ratio || a.flip) {
        cli_error("--ratio and --flip go with --pipeline");
        return 2;
    }
    dm_model *m = NULL;
    dm_preprocess prep = DM_PREPROCESS_INIT;
    float *input = NULL;
    if (!(rc = load_settings(&a, 0, &m, &prep))) {
        input = cli_load_image(a.images[0], &prep, &h, &w);
        dm_tensor t = {.name = "image", .dtype = DM_F32, .ndim = 3, .shape = {prep.channels, h, w}, .data = input};
        rc = input && write_tensors(a.output, &t, 1, a.images[0]) ? 0 : 1;
    }
    free(input);
    dm_model_free(m);
    return rc;
}

/* A workspace for one image of h x w, kept while images fit in it. */
typedef struct feature_ws {
    dm_workspace *ws;
    int h, w;
} feature_ws;

/* Run one preprocessed image and write its four stage outputs to path. */
static int extract(const dm_model *m, feature_ws *fw, const float *input, int h, int w, const char *path,
                   const char *source)
{
    if (h > fw->h || w > fw->w) {
        dm_workspace_free(fw->ws);
        fw->h = h > fw->h ? h : fw->h;
        fw->w = w > fw->w ? w : fw->w;
        if (!(fw->ws = cli_workspace_create(m, DM_BACKEND_CPU, 1, fw->h, fw->w))) {
            fw->h = fw->w = 0;
            return 0;
        }
    }
    static char names[DM_NUM_STAGES][8] = {"stage0", "stage1", "stage2", "stage3"};
    dm_outputs out = DM_OUTPUTS_INIT;
    dm_tensor t[DM_NUM_STAGES];
    int ok = 1;
    for (int s = 0; ok && s < DM_NUM_STAGES; s++) {
        int c, oh, ow;
        dm_stage_shape(m, h, w, s, &c, &oh, &ow);
        t[s] = (dm_tensor){.name = names[s], .dtype = DM_F32, .ndim = 4, .shape = {1, c, oh, ow}};
        if (!(t[s].data = out.stages[s] = malloc(sizeof(float) * c * oh * ow))) {
            cli_error("out of memory");
            ok = 0;
        }
    }
    if (ok && dm_forward(m, fw->ws, input, 1, h, w, &out) != DM_OK) {
        cli_error("%s: %s", source, dm_last_error());
        ok = 0;
    }
    ok = ok && write_tensors(path, t, DM_NUM_STAGES, source);
    for (int s = 0; s < DM_NUM_STAGES; s++) free(out.stages[s]);
    return ok;
}

/* DIR/NAME.safetensors for an image: NAME is its file name without the
 * extension, "stdin" for standard input.  NULL (printed) when it would
 * replace one of the run's inputs or what an earlier image wrote. */
static char *output_path(const char *dir, const char *image, cli_outputs *outs)
{
    int len;
    const char *stem = cli_path_stem(image, &len);
    char *out;
    if (asprintf(&out, "%s/%.*s.safetensors", dir, len, stem) < 0) {
        cli_error("out of memory");
        return NULL;
    }
    if (cli_outputs_claim(outs, image, out)) return out;
    free(out);
    return NULL;
}

/* features -d: every image to its own file in a.output_dir. */
static int extract_all(const image_args *a, const dm_model *m, const dm_preprocess *prep)
{
    if (!cli_output_dir(a->output_dir)) return 1;
    cli_source source;
    if (!cli_source_init(&source, a->images, a->count, 0, 1)) return 2;
    cli_outputs outs;
    if (!cli_outputs_init(&outs, &source.files, a->images, a->count, &a->model, 1)) {
        cli_source_free(&source);
        return 1;
    }
    feature_ws fw = {0};
    cli_progress progress;
    cli_progress_start(&progress, cli_source_total(&source), a->quiet);
    int h, w;
    size_t done = 0, bad = 0;
    for (char *image; (image = cli_source_next(&source)); free(image)) {
        char *out = output_path(a->output_dir, image, &outs);
        cli_progress_clear(&progress);
        float *input = out ? cli_load_image(image, prep, &h, &w) : NULL;
        bad += !(input && extract(m, &fw, input, h, w, out, image));
        free(input);
        free(out);
        cli_progress_update(&progress, ++done, bad);
    }
    cli_progress_end(&progress, "extracted features of");
    int failed = bad || source.failed;
    dm_workspace_free(fw.ws);
    cli_outputs_free(&outs);
    cli_source_free(&source);
    return failed ? 1 : 0;
}

int cmd_features(int argc, char **argv)
{
    image_args a;
    int rc = parse_args(argc, argv, features_usage, 1, &a), h, w;
    if (rc) return rc < 0 ? 0 : rc;
    dm_model *m = NULL;
    dm_preprocess prep = DM_PREPROCESS_INIT;
    if (!(rc = load_settings(&a, 1, &m, &prep))) {
        if (a.output_dir) {
            rc = extract_all(&a, m, &prep);
        } else {
            feature_ws fw = {0};
            float *input = cli_load_image(a.images[0], &prep, &h, &w);
            rc = input && extract(m, &fw, input, h, w, a.output, a.images[0]) ? 0 : 1;
            free(input);
            dm_workspace_free(fw.ws);
        }
    }
    dm_model_free(m);
    return rc;
}
