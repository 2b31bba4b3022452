/* cmd_compare.c - `damamba compare`: the same input through the CPU and the
 * CUDA backend, with the differences per output and the time of each. */
#include "cli.h"
#include "internal_api.h"

#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The golden suite's tolerance, relative to the largest CPU magnitude of
 * each output.  Both backends evaluate the same float32 arithmetic and
 * differ only in summation order and fused multiply-adds, which keeps them
 * within about 1e-6 of each other at DAMamba's depths; a wrong operator
 * shows up as 1e-2 or more.  1e-4 separates the two with room to spare. */
#define COMPARE_TOL 1e-4

static const char compare_usage[] =
    "usage: damamba compare [-m MODEL] [-i IN.safetensors | IMAGE | --synthetic] [-b N] [-s HxW] [-t THREADS]\n"
    "\n"
    "Runs one input on the CPU and on the CUDA backend and prints, for each\n"
    "stage output and the logits, the largest absolute difference and that\n"
    "difference relative to the largest CPU magnitude; for the logits also how\n"
    "many images agree on the top-1 class and on the set of top-5 classes; then\n"
    "the time of one forward pass on each (after a warm-up pass; CUDA's time\n"
    "includes the copies to and from the device).  Exits 1 when a relative\n"
    "difference exceeds 1e-4, the golden suite's tolerance.\n"
    "\n"
    "  -m, --model FILE    model (.safetensors or .pth); default: embedded\n"
    "      --ema           a .pth checkpoint's EMA weights ('model_ema')\n"
    "  -i, --input FILE    F32 tensor 'input' (N x C x H x W), as for 'damamba run'\n"
    "  IMAGE               an image, preprocessed as the model's metadata says\n"
    "      --synthetic     pseudo-random images (the default without -i)\n"
    "  -b, --batch N       images for --synthetic (default 1)\n"
    "  -s, --size HxW      image size for --synthetic (default 224x224, 28x28 for\n"
    "                      the embedded model)\n"
    "  -t, --threads N     CPU threads\n";

/* Uniform in [-1, 1): the range of normalized image values. */
static float *synthetic_input(size_t count)
{
    float *x = malloc(count * sizeof(float));
    uint64_t state = 0x2545F4914F6CDD1Dull;
    for (size_t i = 0; x && i < count; i++) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        x[i] = (float)((state >> 40) * (2.0 / 16777216.0) - 1.0);
    }
    return x;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Run a warm-up and a timed pass; returns the time in ms, or -1. */
static double run_on(const dm_model *m, dm_backend backend, const float *input, int n, int h, int w,
                     const dm_outputs *out)
{
    dm_workspace *ws = cli_workspace_create(m, backend, n, h, w);
    if (!ws) return -1;
    double t0 = 0, t1 = -1;
    if (dm_forward(m, ws, input, n, h, w, out) == DM_OK) {
        t0 = now_ms();
        if (dm_forward(m, ws, input, n, h, w, out) == DM_OK) t1 = now_ms();
    }
    if (t1 < 0) cli_error("%s forward pass: %s", dm_backend_name(backend), dm_last_error());
    dm_workspace_free(ws);
    return t1 < 0 ? -1 : t1 - t0;
}

/* Prints one output's line; returns 1 when it is within the tolerance. */
static int report(const char *name, const char *shape, const float *cpu, const float *gpu, size_t count)
{
    double max_abs = 0, max_ref = 0;
    for (size_t i = 0; i < count; i++) {
        double d = fabs((double)cpu[i] - gpu[i]);
        if (!(d <= max_abs)) max_abs = d; /* NaN counts as the worst */
        if (fabs(cpu[i]) > max_ref) max_ref = fabs(cpu[i]);
    }
    double rel = max_ref > 0 ? max_abs / max_ref : max_abs;
    int ok = rel <= COMPARE_TOL;
    printf("%-8s %-16s %12.4e %14.4e %12.4e  %s\n", name, shape, max_ref, max_abs, rel, ok ? "ok" : "EXCEEDS");
    return ok;
}

/* Images whose top-1 class agrees, and whose top-k sets agree. */
static void agreement(const float *cpu, const float *gpu, int n, int classes, int *top1, int *topk, int k)
{
    *top1 = *topk = 0;
    for (int img = 0; img < n; img++) {
        int a[5] = {0}, b[5] = {0}, same = 1;
        dm_top_k(cpu + (size_t)img * classes, classes, k, a);
        dm_top_k(gpu + (size_t)img * classes, classes, k, b);
        *top1 += a[0] == b[0];
        for (int i = 0; i < k; i++) {
            int found = 0;
            for (int j = 0; j < k; j++) found |= a[i] == b[j];
            same &= found;
        }
        *topk += same;
    }
}

int cmd_compare(int argc, char **argv)
{
    const char *model_path = NULL, *in_path = NULL, *size = NULL;
    int ema = 0, synthetic = 0, batch_given = 0;
    int n = 1, c;
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"ema", no_argument, 0, CLI_OPT_EMA}, {"input", required_argument, 0, 'i'},
        {"synthetic", no_argument, 0, 'S'},   {"batch", required_argument, 0, 'b'},
        {"size", required_argument, 0, 's'},  {"threads", required_argument, 0, 't'},
        {"help", no_argument, 0, 'h'},        {0, 0, 0, 0}};
    optind = 1;
    while ((c = getopt_long(argc, argv, "m:i:b:s:t:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model_path = optarg; break;
        case CLI_OPT_EMA: ema = 1; break;
        case 'i': in_path = optarg; break;
        case 'S': synthetic = 1; break;
        case 'b':
            if (!cli_parse_int("--batch", optarg, 1, 4096, &n)) return 2;
            batch_given = 1;
            break;
        case 's': size = optarg; break;
        case 't': if (!cli_parse_threads(optarg)) return 2; break;
        case 'h': fputs(compare_usage, stdout); return 0;
        default: fputs(compare_usage, stderr); return 2;
        }
    }
    const char *image_path = optind < argc ? argv[optind++] : NULL;
    if (optind != argc) {
        fputs(compare_usage, stderr);
        return 2;
    }
    if (!!in_path + !!image_path + synthetic > 1) {
        cli_error("give one input: -i FILE, IMAGE or --synthetic");
        return 2;
    }
    if ((in_path || image_path) && (batch_given || size)) {
        cli_error("-b and -s shape the --synthetic images; -i FILE and IMAGE bring their own");
        return 2;
    }
    int h = model_path ? 224 : 28, w = h;
    if (size && !cli_parse_size("--size", size, &h, &w)) return 2;
    if (!cli_backend_usable(DM_BACKEND_CUDA)) return 1;

    int rc = 1;
    dm_tensor_file in = {0};
    float *input = NULL, *bufs[2][5] = {{0}};
    dm_model *m = cli_load_model(model_path, ema);
    if (!m) goto done;
    const dm_config *cfg = dm_model_config(m);
    if (in_path) {
        if (dm_safetensors_open(in_path, &in) != DM_OK) {
            cli_error("%s", dm_last_error());
            goto done;
        }
        const dm_tensor *x = dm_tensor_file_find(&in, "input");
        if (!x || x->dtype != DM_F32 || x->ndim != 4 || x->shape[1] != cfg->in_chans || x->shape[0] < 1 ||
            x->shape[0] > 4096 || x->shape[2] < 1 || x->shape[2] > 65536 || x->shape[3] < 1 || x->shape[3] > 65536) {
            cli_error("%s: needs an F32 tensor 'input' of shape N x %d x H x W", in_path, cfg->in_chans);
            goto done;
        }
        n = (int)x->shape[0];
        h = (int)x->shape[2];
        w = (int)x->shape[3];
        if ((input = malloc(x->nbytes))) memcpy(input, x->data, x->nbytes); /* the mapping may be unaligned */
    } else if (image_path) {
        dm_preprocess prep = DM_PREPROCESS_INIT;
        cli_preprocess_opts none = {0};
        if (cli_preprocess_settings(m, &none, &prep) || !(input = cli_load_image(image_path, &prep, &h, &w)))
            goto done;
        n = 1;
    } else {
        input = synthetic_input((size_t)n * cfg->in_chans * h * w);
    }
    if (!input) {
        cli_error("out of memory");
        goto done;
    }

    dm_outputs outs[2] = {DM_OUTPUTS_INIT, DM_OUTPUTS_INIT};
    char shapes[5][32];
    size_t counts[5];
    for (int s = 0; s < DM_NUM_STAGES; s++) {
        int C, oh, ow;
        dm_stage_shape(m, h, w, s, &C, &oh, &ow);
        counts[s] = (size_t)n * C * oh * ow;
        snprintf(shapes[s], sizeof shapes[s], "%dx%dx%dx%d", n, C, oh, ow);
    }
    counts[4] = (size_t)n * cfg->num_classes;
    snprintf(shapes[4], sizeof shapes[4], "%dx%d", n, cfg->num_classes);
    for (int b = 0; b < 2; b++)
        for (int k = 0; k < 5; k++) {
            if (!counts[k]) continue;
            if (!(bufs[b][k] = malloc(counts[k] * sizeof(float)))) {
                cli_error("out of memory");
                goto done;
            }
            if (k < 4) outs[b].stages[k] = bufs[b][k];
            else outs[b].logits = bufs[b][k];
        }
    double ms[2];
    for (int b = 0; b < 2; b++)
        if ((ms[b] = run_on(m, b ? DM_BACKEND_CUDA : DM_BACKEND_CPU, input, n, h, w, &outs[b])) < 0) goto done;

    printf("model    %s\ninput    %s, %d x %d x %d x %d\n\n", model_path ? model_path : CLI_DEFAULT_MODEL_NAME,
           in_path ? in_path : image_path ? image_path : "synthetic", n, cfg->in_chans, h, w);
    printf("%-8s %-16s %12s %14s %12s\n", "output", "shape", "max|cpu|", "max abs diff", "rel diff");
    int ok = 1;
    static const char *names[5] = {"stage0", "stage1", "stage2", "stage3", "logits"};
    for (int k = 0; k < 5; k++)
        if (counts[k]) ok &= report(names[k], shapes[k], bufs[0][k], bufs[1][k], counts[k]);
    if (counts[4]) {
        int k = cfg->num_classes < 5 ? cfg->num_classes : 5, top1, topk;
        agreement(bufs[0][4], bufs[1][4], n, cfg->num_classes, &top1, &topk, k);
        printf("\ntop-1 agreement  %d/%d images\ntop-%d agreement  %d/%d images (same set of classes)\n", top1, n,
               k, topk, n);
    }
    printf("\ntime     cpu %.2f ms (%d thread%s), cuda %.2f ms\n", ms[0], cli_thread_count(),
           cli_thread_count() == 1 ? "" : "s", ms[1]);
    printf("result   %s (tolerance %.0e x max|cpu| per output)\n", ok ? "agree" : "DIFFER", COMPARE_TOL);
    rc = ok ? 0 : 1;
done:
    for (int b = 0; b < 2; b++)
        for (int k = 0; k < 5; k++) free(bufs[b][k]);
    free(input);
    dm_model_free(m);
    dm_tensor_file_close(&in);
    return rc;
}
