/* cmd_bench.c - `damamba bench`: time the forward pass of an official
 * variant with synthetic weights. */
#include "cli.h"

#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "internal_api.h"

static const char bench_usage[] =
    "usage: damamba bench [-v F|T|S|B] [-b BATCH] [-s SIZE] [-t THREADS] [-n RUNS] [--backend cpu|cuda]\n"
    "                     [--dtype f32|bf16|f16] [--task cls|seg] [--ops]\n"
    "       damamba bench --task det [-v F|T|S|B] [-t THREADS] [-n RUNS] [--dtype f32|bf16|f16]\n"
    "                     [--backend cpu|cuda] [--ops]\n"
    "\n"
    "Times forward passes of an official variant with synthetic weights and\n"
    "prints the median time per batch, images per second, achieved GFLOP/s\n"
    "(2 x multiply-accumulates over the time) and the peak resident memory.\n"
    "The last line is machine-readable.\n"
    "\n"
    "  -v, --variant V     F, T, S or B (default T)\n"
    "      --task T        cls (default): the classifier (1000 classes);\n"
    "                      seg: the UperNet segmentation model (150 classes, 512\n"
    "                      channels, as the authors' ADE20K models), whole mode\n"
    "                      up to the label map, default size 512;\n"
    "                      det: a Mask R-CNN (80 classes) on one 1333 x 800\n"
    "                      image (the COCO setting, padded to 1344 x 800): the\n"
    "                      median time per image and the shares of the backbone,\n"
    "                      FPN with RPN, and the heads (proposals, boxes, masks)\n"
    "  -b, --batch N       images per forward pass (default 1)\n"
    "  -s, --size N        image height and width (default 224)\n"
    "  -t, --threads N     threads (default: DAMAMBA_THREADS, OMP_NUM_THREADS or all usable cores)\n"
    CLI_DTYPE_HELP("     ")
    "  -n, --runs N        timed runs after one warm-up run (default 10)\n"
    "      --backend B     cpu (default) or cuda (a build with -Dcuda=enabled);\n"
    "                      CUDA times include the copies to and from the device\n"
    "      --ops           time each operator of the timed runs too: its calls\n"
    "                      and time per pass, share of the pass, GFLOP/s of the\n"
    "                      matrix products, and the time outside the operators\n"
    "                      (CUDA: each operator is waited for, so passes are\n"
    "                      slower and nothing overlaps)\n";

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median_of(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Where `runs` profiled passes that took `total` seconds together spent
 * their time: each operator's calls and milliseconds per pass, its share,
 * and the rest, spent outside the operators (argument checks, the graph's
 * own work on the host). */
static void print_op_profile(const dm_workspace *ws, int runs, double total)
{
    dm_op_profile ops[64];
    int n = dm_workspace_profile_read(ws, ops, 64);
    if (n > 64) n = 64;
    double in_ops = 0;
    printf("operators   per pass, mean of %d runs\n", runs);
    printf("  %-12s %7s %10s %7s %8s\n", "entry", "calls", "ms", "share", "GFLOP/s");
    for (int i = 0; i < n; i++) {
        in_ops += ops[i].seconds;
        printf("  %-12s %7.1f %10.3f %6.1f%%", ops[i].entry, (double)ops[i].calls / runs, ops[i].seconds / runs * 1e3,
               100 * ops[i].seconds / total);
        if (ops[i].flops > 0) printf(" %8.1f", ops[i].flops / ops[i].seconds / 1e9);
        putchar('\n');
    }
    printf("  %-12s %7s %10.3f %6.1f%%\n", "(outside)", "", (total - in_ops) / runs * 1e3, 100 * (total - in_ops) / total);
    printf("  %-12s %7s %10.3f %6.1f%%\n", "pass", "", total / runs * 1e3, 100.0);
}

static double peak_rss_mb(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss / 1024.0; /* ru_maxrss is in KiB on Linux */
}

/* The backend a run uses: for the CPU, its kernels, threads and precision. */
static void print_backend(dm_backend backend)
{
    if (backend == DM_BACKEND_CPU)
        printf("backend     cpu: %s, %d thread%s, %s products (%s)\n", dm_isa(), cli_thread_count(),
               cli_thread_count() == 1 ? "" : "s", dm_precision_name(cli_precision), dm_precision_kernel(cli_precision));
    else printf("backend     %s\n", dm_backend_name(backend));
}

/* Mask R-CNN on one COCO-sized image: the whole call, and the backbone
 * alone (a forward pass to the stage outputs) for its share. */
static int bench_detection(char variant, int runs, dm_backend backend, int profile)
{
    const int h = 800, w = 1344, img_w = 1333;
    dm_model *m = NULL;
    dm_workspace *ws = NULL;
    float *input = malloc(sizeof(float) * 3 * h * w), *stages[DM_NUM_STAGES] = {0};
    double *total = calloc((size_t)runs, sizeof(double)), *backbone = calloc((size_t)runs, sizeof(double));
    double *parts[4];
    for (int p = 0; p < 4; p++) parts[p] = calloc((size_t)runs, sizeof(double));
    int rc = 1, count = 0;
    if (!input || !total || !backbone || !parts[0] || !parts[1] || !parts[2] || !parts[3]) {
        cli_error("out of memory");
        goto done;
    }
    if (dm_model_synthetic_detector(variant, 80, 1, &m) != DM_OK) {
        cli_error("%s", dm_last_error());
        goto done;
    }
    if (!(ws = cli_workspace_create(m, backend, 1, h, w))) goto done;
    dm_outputs out = DM_OUTPUTS_INIT;
    for (int s = 0; s < DM_NUM_STAGES; s++) {
        int c, sh, sw;
        dm_stage_shape(m, h, w, s, &c, &sh, &sw);
        if (!(out.stages[s] = stages[s] = malloc(sizeof(float) * c * sh * sw))) {
            cli_error("out of memory");
            goto done;
        }
    }
    /* a smooth deterministic image, zero-padded on the right as the pipeline pads */
    for (int c = 0; c < 3; c++)
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
                input[((size_t)c * h + y) * w + x] = x < img_w ? sinf(0.01f * x + 0.02f * y + c) : 0.0f;
    dm_det_image im = {h, img_w, h, img_w, {1, 1, 1, 1}};
    for (int r = -1; r < runs; r++) {
        if (r == 0 && profile && dm_workspace_profile(ws) != DM_OK) goto failed;
        dm_detections d;
        double t0 = now_s();
        if (dm_forward(m, ws, input, 1, h, w, &out) != DM_OK) goto failed;
        double t1 = now_s();
        if (dm_detect(m, ws, input, h, w, &im, NULL, &d) != DM_OK) goto failed;
        double t2 = now_s();
        if (r >= 0) {
            backbone[r] = t1 - t0;
            total[r] = t2 - t1;
            for (int p = 0; p < 4; p++) parts[p][r] = d.seconds[p];
        }
        count = d.count;
        dm_detections_free(&d);
    }
    double t = median_of(total, runs), tb = median_of(backbone, runs), tp[4];
    for (int p = 0; p < 4; p++) tp[p] = median_of(parts[p], runs);
    printf("model       Mask R-CNN, DAMamba-%c backbone (synthetic weights, 80 classes), 1 x 3 x %d x %d\n",
           variant, h, w);
    print_backend(backend);
    printf("median      %.0f ms per image (%d runs), %d detections\n", t * 1e3, runs, count);
    printf("shares      backbone %.0f%%, FPN + RPN head %.0f%%, proposals %.0f%%, box head %.0f%%, mask head %.0f%%\n",
           100 * tb / t, 100 * (tp[0] - tb) / t, 100 * tp[1] / t, 100 * tp[2] / t, 100 * tp[3] / t);
    printf("memory      peak RSS %.1f MiB (workspace %.1f MiB)\n", peak_rss_mb(), dm_workspace_bytes(ws) / (1024.0 * 1024.0));
    if (profile) {
        double sum = 0;
        for (int r = 0; r < runs; r++) sum += backbone[r] + total[r];
        print_op_profile(ws, runs, sum);
    }
    printf("ms_per_image=%.1f backbone_ms=%.1f fpn_rpn_ms=%.1f heads_ms=%.1f peak_rss_mb=%.1f\n", t * 1e3, tb * 1e3,
           (tp[0] - tb) * 1e3, (tp[1] + tp[2] + tp[3]) * 1e3, peak_rss_mb());
    rc = 0;
    goto done;
failed:
    cli_error("%s", dm_last_error());
done:
    for (int s = 0; s < DM_NUM_STAGES; s++) free(stages[s]);
    for (int p = 0; p < 4; p++) free(parts[p]);
    free(input), free(total), free(backbone);
    dm_workspace_free(ws);
    dm_model_free(m);
    return rc;
}

int cmd_bench(int argc, char **argv)
{
    static const struct option opts[] = {
        {"variant", required_argument, 0, 'v'}, {"batch", required_argument, 0, 'b'},
        {"size", required_argument, 0, 's'},    {"threads", required_argument, 0, 't'}, {"dtype", required_argument, 0, CLI_OPT_DTYPE},
        {"runs", required_argument, 0, 'n'},    {"backend", required_argument, 0, CLI_OPT_BACKEND},
        {"task", required_argument, 0, 'T'},    {"ops", no_argument, 0, 'O'},
        {"help", no_argument, 0, 'h'},          {0, 0, 0, 0}};
    dm_backend backend = DM_BACKEND_CPU;
    char variant = 'T';
    int batch = 1, batch_given = 0, size = 0, runs = 10, c, profile = 0;
    cli_task task = CLI_TASK_CLS;
    optind = 1;
    while ((c = getopt_long(argc, argv, "v:b:s:t:n:h", opts, NULL)) != -1) {
        switch (c) {
        case 'v':
            if (strlen(optarg) != 1 || !strchr("FTSB", optarg[0])) {
                cli_error("--variant expects F, T, S or B, got '%s'", optarg);
                return 2;
            }
            variant = optarg[0];
            break;
        case 'b':
            if (!cli_parse_int("--batch", optarg, 1, 4096, &batch)) return 2;
            batch_given = 1;
            break;
        case 's': if (!cli_parse_int("--size", optarg, 32, 4096, &size)) return 2; break;
        case CLI_OPT_DTYPE: if (!cli_parse_precision("--dtype", optarg)) return 2; break;
        case 't': if (!cli_parse_threads(optarg)) return 2; break;
        case 'n': if (!cli_parse_int("--runs", optarg, 1, 100000, &runs)) return 2; break;
        case CLI_OPT_BACKEND: if (!cli_parse_backend("--backend", optarg, &backend)) return 2; break;
        case 'T': if (!cli_parse_task(optarg, &task)) return 2; break;
        case 'O': profile = 1; break;
        case 'h': fputs(bench_usage, stdout); return 0;
        default: fputs(bench_usage, stderr); return 2;
        }
    }
    if (optind != argc) {
        fputs(bench_usage, stderr);
        return 2;
    }
    /* the detector's image is fixed (the COCO setting): a batch or size for
     * it is refused, not ignored */
    if (task == CLI_TASK_DET && (batch_given || size)) {
        cli_error("bench --task det does not take %s", batch_given ? "--batch" : "--size");
        return 2;
    }
    if (!cli_backend_usable(backend)) return 1;
    if (task == CLI_TASK_DET) return bench_detection(variant, runs, backend, profile);
    int seg = task == CLI_TASK_SEG;
    if (!size) size = seg ? 512 : 224;
    dm_model *m = NULL;
    dm_workspace *ws = NULL;
    float *input = NULL, *logits = NULL;
    int32_t *labels = NULL;
    double *times = NULL;
    int rc = 1;
    if ((seg ? dm_model_synthetic_seg(variant, 150, 512, 1, &m) : dm_model_synthetic(variant, 3, 1000, 1, &m)) !=
        DM_OK) {
        cli_error("%s", dm_last_error());
        goto done;
    }
    if (!(ws = cli_workspace_create(m, backend, batch, size, size))) goto done;
    size_t numel = (size_t)batch * 3 * size * size;
    input = malloc(sizeof(float) * numel);
    logits = malloc(sizeof(float) * (size_t)batch * 1000);
    labels = malloc(sizeof(int32_t) * (size_t)batch * size * size);
    times = malloc(sizeof(double) * (size_t)runs);
    if (!input || !logits || !labels || !times) {
        cli_error("out of memory");
        goto done;
    }
    /* A smooth deterministic image: the timing does not depend on it. */
    for (size_t i = 0; i < numel; i++) input[i] = (float)((i * 2654435761u) % 1000) / 500.0f - 1.0f;
    dm_outputs out = {.size = sizeof(dm_outputs), .logits = logits};
    dm_seg_options whole = {.mode = DM_SEG_WHOLE};
    dm_seg_outputs seg_out = {.seg_pred = labels};
    for (int r = -1; r < runs; r++) {
        /* the warm-up run stays out of the profile */
        if (r == 0 && profile && dm_workspace_profile(ws) != DM_OK) {
            cli_error("%s", dm_last_error());
            goto done;
        }
        double t0 = now_s();
        dm_status st = seg ? dm_segment(m, ws, input, batch, size, size, &whole, &seg_out)
                           : dm_forward(m, ws, input, batch, size, size, &out);
        if (st != DM_OK) {
            cli_error("%s", dm_last_error());
            goto done;
        }
        if (r >= 0) times[r] = now_s() - t0;
    }
    double sum = 0;
    for (int r = 0; r < runs; r++) sum += times[r];
    double median = median_of(times, runs);
    double flops = 2.0 * (double)dm_model_macs(m, size, size) * batch;
    double rss_mb = peak_rss_mb();
    double weights_mb = dm_model_config(m)->num_params * 4.0 / (1024.0 * 1024.0);
    printf("model       DAMamba-%c%s (synthetic weights), %d x 3 x %d x %d\n", variant,
           seg ? " + UperNet, whole mode to the label map" : "", batch, size, size);
    print_backend(backend);
    printf("runs        %d (best %.2f ms, worst %.2f ms)\n", runs, times[0] * 1e3, times[runs - 1] * 1e3);
    printf("median      %.2f ms per batch, %.2f ms per image\n", median * 1e3, median * 1e3 / batch);
    printf("throughput  %.2f images/s, %.1f GFLOP/s\n", batch / median, flops / median / 1e9);
    printf("memory      peak RSS %.1f MiB (weights %.1f MiB, workspace %.1f MiB)\n", rss_mb, weights_mb,
           dm_workspace_bytes(ws) / (1024.0 * 1024.0));
    if (profile) print_op_profile(ws, runs, sum);
    printf("images_per_s=%.3f ms_per_batch=%.3f gflops=%.2f peak_rss_mb=%.1f\n", batch / median, median * 1e3,
           flops / median / 1e9, rss_mb);
    rc = 0;
done:
    free(times);
    free(logits);
    free(labels);
    free(input);
    dm_workspace_free(ws);
    dm_model_free(m);
    return rc;
}
