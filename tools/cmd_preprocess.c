/* cmd_preprocess.c - one image in, tensors out: `damamba preprocess` (the
 * model's input) and `damamba features` (the four stage outputs). */
#include "cli.h"

#include <stdlib.h>
#include <string.h>

#include "tensor_file.h"

static const char preprocess_usage[] =
    "usage: damamba preprocess [-m MODEL] [OPTIONS] IMAGE -o OUT.safetensors\n"
    "\n"
    "Writes the F32 tensor 'image' (C x H x W) exactly as the model sees IMAGE:\n"
    "decoded, resized, center-cropped and normalized by the model's\n"
    "preprocessing (its metadata, else ImageNet's evaluation transform).\n"
    "\n"
    "  -m, --model FILE     model whose preprocessing applies; default: embedded\n"
    "  -o, --output FILE    output tensor file\n"
    "\n" CLI_PREPROCESS_HELP;

static const char features_usage[] =
    "usage: damamba features [-m MODEL] [--size HxW] [-t THREADS] IMAGE -o OUT.safetensors\n"
    "\n"
    "Writes the outputs of the model's four stages for IMAGE, 'stage0' ..\n"
    "'stage3' (F32, 1 x C x H x W, strides 4, 8, 16, 32), the features a\n"
    "detection or segmentation neck takes.  The image keeps its size, or is\n"
    "resized to exactly HxW (the paper's COCO setting is 800x1280); it is not\n"
    "cropped.  Channels, interpolation, mean and std are the model's.\n"
    "\n"
    "  -m, --model FILE     model (.safetensors or .pth); default: embedded\n"
    "  -s, --size HxW       resize the image to H x W pixels first\n"
    "  -o, --output FILE    output tensor file\n"
    "  -t, --threads N      threads (default: DAMAMBA_THREADS, OMP_NUM_THREADS or all cores)\n"
    "      --interpolation I, --mean A[,B,C], --std A[,B,C]   as for `damamba classify`\n";

/* The options both commands take; returns 0 to go on, else an exit code. */
typedef struct image_args {
    const char *model, *output, *image;
    int h, w; /* features --size, else 0 */
    cli_preprocess_opts prep;
} image_args;

static int parse_args(int argc, char **argv, const char *usage, int features, image_args *a)
{
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"output", required_argument, 0, 'o'},
        {"threads", required_argument, 0, 't'}, {"help", no_argument, 0, 'h'}, CLI_PREPROCESS_LONG_OPTIONS,
        {0, 0, 0, 0}};
    int c, threads;
    *a = (image_args){0};
    optind = 1;
    while ((c = getopt_long(argc, argv, features ? "m:o:s:t:h" : "m:o:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': a->model = optarg; break;
        case 'o': a->output = optarg; break;
        case 's':
            if (!cli_parse_size("--size", optarg, &a->h, &a->w)) return 2;
            break;
        case 't':
            if (!features || !cli_parse_int("--threads", optarg, 1, 1024, &threads)) goto bad;
            dm_set_threads(threads);
            break;
        case 'h': fputs(usage, stdout); return -1;
        case CLI_OPT_SIZE: /* preprocess's --size is the crop size, as for classify */
            if (features) {
                if (!cli_parse_size("--size", optarg, &a->h, &a->w)) return 2;
                break;
            }
            /* fall through */
        case CLI_OPT_CROP_FRACTION:
            if (features) goto bad;
            /* fall through */
        default: {
            int taken = cli_preprocess_opt(&a->prep, c, optarg);
            if (taken < 0) return 2;
            if (!taken) goto bad;
        }
        }
    }
    if (!a->output || optind != argc - 1) goto bad;
    a->image = argv[optind];
    return cli_output_distinct(a->output, (const char *[]){a->image, a->model}, 2) ? 0 : 2;
bad:
    fputs(usage, stderr);
    return 2;
}

/* Load the model (or NULL when it failed), its preprocessing, and the image
 * preprocessed into a freshly allocated C x H x W tensor.  For features the
 * image is not cropped: it keeps its size or takes --size HxW.  *rc is the
 * exit status on failure. */
static float *load_input(const image_args *a, int features, dm_model **m, dm_preprocess *prep, int *h, int *w,
                         int *rc)
{
    *rc = 1;
    if (!(*m = cli_load_model(a->model, 0)) || (*rc = cli_preprocess_settings(*m, &a->prep, prep))) return NULL;
    *rc = 1;
    if (features) prep->resize = prep->crop = 0;
    if (a->h) {
        prep->resize = 0;
        prep->resize_h = a->h;
        prep->resize_w = a->w;
    }
    return cli_load_image(a->image, prep, h, w);
}

static int write_tensors(const char *path, dm_tensor *t, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        t[i].numel = 1;
        for (int d = 0; d < t[i].ndim; d++) t[i].numel *= t[i].shape[d];
        t[i].nbytes = (size_t)t[i].numel * sizeof(float);
    }
    if (dm_safetensors_write(path, t, count, NULL, 0) != DM_OK) {
        cli_error("%s", dm_last_error());
        return 0;
    }
    return 1;
}

int cmd_preprocess(int argc, char **argv)
{
    image_args a;
    int rc = parse_args(argc, argv, preprocess_usage, 0, &a), h, w;
    if (rc) return rc < 0 ? 0 : rc;
    dm_model *m = NULL;
    dm_preprocess prep;
    float *input = load_input(&a, 0, &m, &prep, &h, &w, &rc);
    if (input) {
        dm_tensor t = {.name = "image", .dtype = DM_F32, .ndim = 3, .shape = {prep.channels, h, w}, .data = input};
        rc = write_tensors(a.output, &t, 1) ? 0 : 1;
    }
    free(input);
    dm_model_free(m);
    return rc;
}

int cmd_features(int argc, char **argv)
{
    image_args a;
    int rc = parse_args(argc, argv, features_usage, 1, &a), h, w;
    if (rc) return rc < 0 ? 0 : rc;
    dm_model *m = NULL;
    dm_preprocess prep;
    dm_workspace *ws = NULL;
    dm_outputs out = {0};
    dm_tensor t[DM_NUM_STAGES];
    static char names[DM_NUM_STAGES][8] = {"stage0", "stage1", "stage2", "stage3"};
    float *input = load_input(&a, 1, &m, &prep, &h, &w, &rc);
    if (!input) goto done;
    rc = 1;
    if (dm_workspace_create(m, 1, h, w, &ws) != DM_OK) {
        cli_error("%s", dm_last_error());
        goto done;
    }
    for (int s = 0; s < DM_NUM_STAGES; s++) {
        int c, oh, ow;
        dm_stage_shape(m, h, w, s, &c, &oh, &ow);
        t[s] = (dm_tensor){.name = names[s], .dtype = DM_F32, .ndim = 4, .shape = {1, c, oh, ow}};
        if (!(out.stages[s] = malloc(sizeof(float) * c * oh * ow))) {
            cli_error("out of memory");
            goto done;
        }
        t[s].data = out.stages[s];
    }
    if (dm_forward(m, ws, input, 1, h, w, &out) != DM_OK) {
        cli_error("%s", dm_last_error());
        goto done;
    }
    rc = write_tensors(a.output, t, DM_NUM_STAGES) ? 0 : 1;
done:
    for (int s = 0; s < DM_NUM_STAGES; s++) free(out.stages[s]);
    dm_workspace_free(ws);
    free(input);
    dm_model_free(m);
    return rc;
}
