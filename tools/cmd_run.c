/* cmd_run.c - `damamba run` (tensor file in, outputs out) and
 * `damamba info` (the inferred configuration). */
#include "cli.h"
#include "internal_api.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

static const char run_usage[] =
    "usage: damamba run [-m MODEL] -i IN.safetensors -o OUT.safetensors [-t THREADS]\n"
    "\n"
    "Reads the F32 tensor 'input' (N x C x H x W) from IN, or 'image' (C x H x W,\n"
    "as 'damamba preprocess' writes it) as a batch of one, runs the model and\n"
    "writes 'logits' (N x classes, when the model has a head) and 'stage0' ..\n"
    "'stage3' (N x C x H x W, F32) to OUT: the way to check this library\n"
    "against PyTorch.  OUT is replaced only once it is completely written.\n"
    "\n"
    "  -m, --model FILE    model (.safetensors or .pth); default: embedded\n"
    "      --ema           a .pth checkpoint's EMA weights ('model_ema')\n"
    "  -i, --input FILE    input tensor file\n"
    "  -o, --output FILE   output tensor file\n"
    "  -t, --threads N     threads (default: DAMAMBA_THREADS, OMP_NUM_THREADS or all cores)\n";

int cmd_run(int argc, char **argv)
{
    const char *model_path = NULL, *in_path = NULL, *out_path = NULL;
    int ema = 0;
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"ema", no_argument, 0, CLI_OPT_EMA}, {"input", required_argument, 0, 'i'},
        {"output", required_argument, 0, 'o'}, {"threads", required_argument, 0, 't'},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    int c, threads;
    optind = 1;
    while ((c = getopt_long(argc, argv, "m:i:o:t:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model_path = optarg; break;
        case CLI_OPT_EMA: ema = 1; break;
        case 'i': in_path = optarg; break;
        case 'o': out_path = optarg; break;
        case 't':
            if (!cli_parse_int("--threads", optarg, 1, 1024, &threads)) return 2;
            cli_threads = threads;
            break;
        case 'h': fputs(run_usage, stdout); return 0;
        default: fputs(run_usage, stderr); return 2;
        }
    }
    if (!in_path || !out_path || optind != argc) {
        fputs(run_usage, stderr);
        return 2;
    }
    if (!cli_output_distinct(out_path, (const char *[]){in_path, model_path}, 2)) return 2;
    dm_tensor_file in;
    if (dm_safetensors_open(in_path, &in) != DM_OK) {
        cli_error("%s", dm_last_error());
        return 1;
    }
    /* 'input' is a batch; 'image' (from damamba preprocess) one image. */
    const dm_tensor *x = dm_tensor_file_find(&in, "input");
    int single = !x && (x = dm_tensor_file_find(&in, "image")) != NULL;
    int rc = 1;
    dm_model *m = NULL;
    dm_workspace *ws = NULL;
    float *buf[5] = {0};
    dm_tensor outs[5];
    size_t nouts = 0;
    if (!x || x->dtype != DM_F32 || x->ndim != 4 - single) {
        cli_error("%s: needs an F32 tensor 'input' of shape N x C x H x W, or 'image' of shape C x H x W", in_path);
        goto done;
    }
    if (!(m = cli_load_model(model_path, ema))) goto done;
    const dm_config *cfg = dm_model_config(m);
    int64_t shape[4] = {1, 0, 0, 0};
    memcpy(shape + single, x->shape, sizeof(int64_t) * x->ndim);
    int n = (int)shape[0], h = (int)shape[2], w = (int)shape[3];
    if (shape[1] != cfg->in_chans || n < 1 || h < 1 || w < 1 || shape[0] > 65536 || shape[2] > 65536 ||
        shape[3] > 65536) {
        cli_error("%s: %s has shape [%lld, %lld, %lld, %lld]; the model takes N x %d x H x W", in_path, x->name,
                  (long long)shape[0], (long long)shape[1], (long long)shape[2], (long long)shape[3], cfg->in_chans);
        goto done;
    }
    /* The mapped input may be unaligned; copy it. */
    float *input = malloc((size_t)x->nbytes);
    if (!input) { cli_error("out of memory"); goto done; }
    memcpy(input, x->data, x->nbytes);
    buf[4] = input;
    if (!(ws = cli_workspace_create(m, DM_BACKEND_CPU, n, h, w))) goto done;
    dm_outputs o = DM_OUTPUTS_INIT;
    static char names[4][8] = {"stage0", "stage1", "stage2", "stage3"};
    for (int s = 0; s < 4; s++) {
        int C, oh, ow;
        dm_stage_shape(m, h, w, s, &C, &oh, &ow);
        dm_tensor *t = &outs[nouts++];
        *t = (dm_tensor){.name = names[s], .dtype = DM_F32, .ndim = 4, .shape = {n, C, oh, ow}};
        t->numel = (int64_t)n * C * oh * ow;
        t->nbytes = (size_t)t->numel * 4;
        if (!(buf[s] = malloc(t->nbytes))) { cli_error("out of memory"); goto done; }
        t->data = o.stages[s] = buf[s];
    }
    float *logits = NULL;
    if (cfg->num_classes) {
        logits = malloc(sizeof(float) * n * cfg->num_classes);
        if (!logits) { cli_error("out of memory"); goto done; }
        o.logits = logits;
        dm_tensor *t = &outs[nouts++];
        *t = (dm_tensor){.name = "logits", .dtype = DM_F32, .ndim = 2, .shape = {n, cfg->num_classes},
                         .numel = (int64_t)n * cfg->num_classes, .data = logits};
        t->nbytes = (size_t)t->numel * 4;
    }
    if (dm_forward(m, ws, input, n, h, w, &o) != DM_OK ||
        dm_safetensors_write(out_path, outs, nouts, NULL, 0) != DM_OK) {
        cli_error("%s", dm_last_error());
        free(logits);
        goto done;
    }
    free(logits);
    rc = 0;
done:
    for (int i = 0; i < 5; i++) free(buf[i]);
    dm_workspace_free(ws);
    dm_model_free(m);
    dm_tensor_file_close(&in);
    return rc;
}

static const char info_usage[] =
    "usage: damamba info [-m MODEL] [--size HxW]\n"
    "\n"
    "Prints the configuration inferred from the model's weights, its parameter\n"
    "count (as PyTorch counts trainable parameters) and its multiply-accumulate\n"
    "operations for one image of the given size (default 224x224, or the\n"
    "model's own input size from its metadata).\n"
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
    int h = model_path ? 224 : 28, w = h;
    if (size && !cli_parse_size("--size", size, &h, &w)) return 2;
    dm_model *m = cli_load_model(model_path, ema);
    if (!m) return 1;
    const dm_config *cfg = dm_model_config(m);
    printf("model       %s\n", model_path ? model_path : CLI_DEFAULT_MODEL_NAME);
    printf("depths      [%d, %d, %d, %d]\n", cfg->depths[0], cfg->depths[1], cfg->depths[2], cfg->depths[3]);
    printf("dims        [%d, %d, %d, %d]\n", cfg->dims[0], cfg->dims[1], cfg->dims[2], cfg->dims[3]);
    printf("mlp_hidden  [%d, %d, %d, %d]\n", cfg->mlp_hidden[0], cfg->mlp_hidden[1], cfg->mlp_hidden[2],
           cfg->mlp_hidden[3]);
    printf("groups      [%d, %d, %d, %d]\n", cfg->groups[0], cfg->groups[1], cfg->groups[2], cfg->groups[3]);
    printf("layer_scale [%d, %d, %d, %d]\n", cfg->layer_scale[0], cfg->layer_scale[1], cfg->layer_scale[2],
           cfg->layer_scale[3]);
    printf("in_chans    %d\n", cfg->in_chans);
    if (cfg->num_classes) printf("classes     %d\n", cfg->num_classes);
    else printf("classes     none (backbone without head)\n");
    printf("parameters  %lld\n", (long long)cfg->num_params);
    printf("macs        %.3f G at %dx%d\n", dm_model_macs(m, h, w) / 1e9, h, w);
    dm_model_free(m);
    return 0;
}
