/* cmd_bench.c - `damamba bench`: time the forward pass of an official
 * variant with synthetic weights. */
#include "cli.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static const char bench_usage[] =
    "usage: damamba bench [-v F|T|S|B] [-b BATCH] [-s SIZE] [-t THREADS] [-n RUNS] [--backend cpu|cuda]\n"
    "\n"
    "Times forward passes of an official variant with synthetic weights and\n"
    "prints the median time per batch, images per second, achieved GFLOP/s\n"
    "(2 x multiply-accumulates over the time) and the peak resident memory.\n"
    "The last line is machine-readable.\n"
    "\n"
    "  -v, --variant V     F, T, S or B (default T)\n"
    "  -b, --batch N       images per forward pass (default 1)\n"
    "  -s, --size N        image height and width (default 224)\n"
    "  -t, --threads N     threads (default: DAMAMBA_THREADS, OMP_NUM_THREADS or all cores)\n"
    "  -n, --runs N        timed runs after one warm-up run (default 10)\n"
    "      --backend B     cpu (default) or cuda (a build with -Dcuda=enabled);\n"
    "                      CUDA times include the copies to and from the device\n";

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

int cmd_bench(int argc, char **argv)
{
    static const struct option opts[] = {
        {"variant", required_argument, 0, 'v'}, {"batch", required_argument, 0, 'b'},
        {"size", required_argument, 0, 's'},    {"threads", required_argument, 0, 't'},
        {"runs", required_argument, 0, 'n'},    {"backend", required_argument, 0, 'B'},
        {"help", no_argument, 0, 'h'},          {0, 0, 0, 0}};
    dm_backend backend = DM_BACKEND_CPU;
    char variant = 'T';
    int batch = 1, size = 224, runs = 10, threads, c;
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
        case 'b': if (!cli_parse_int("--batch", optarg, 1, 4096, &batch)) return 2; break;
        case 's': if (!cli_parse_int("--size", optarg, 32, 4096, &size)) return 2; break;
        case 't':
            if (!cli_parse_int("--threads", optarg, 1, 1024, &threads)) return 2;
            cli_threads = threads;
            break;
        case 'n': if (!cli_parse_int("--runs", optarg, 1, 100000, &runs)) return 2; break;
        case 'B': if (!cli_parse_backend("--backend", optarg, &backend)) return 2; break;
        case 'h': fputs(bench_usage, stdout); return 0;
        default: fputs(bench_usage, stderr); return 2;
        }
    }
    if (optind != argc) {
        fputs(bench_usage, stderr);
        return 2;
    }
    dm_model *m = NULL;
    dm_workspace *ws = NULL;
    float *input = NULL, *logits = NULL;
    double *times = NULL;
    int rc = 1;
    if (dm_model_synthetic(variant, 3, 1000, 1, &m) != DM_OK) {
        cli_error("%s", dm_last_error());
        goto done;
    }
    if (!(ws = cli_workspace_create(m, backend, batch, size, size))) goto done;
    size_t numel = (size_t)batch * 3 * size * size;
    input = malloc(sizeof(float) * numel);
    logits = malloc(sizeof(float) * (size_t)batch * 1000);
    times = malloc(sizeof(double) * (size_t)runs);
    if (!input || !logits || !times) {
        cli_error("out of memory");
        goto done;
    }
    /* A smooth deterministic image: the timing does not depend on it. */
    for (size_t i = 0; i < numel; i++) input[i] = (float)((i * 2654435761u) % 1000) / 500.0f - 1.0f;
    dm_outputs out = {.size = sizeof(dm_outputs), .logits = logits};
    for (int r = -1; r < runs; r++) {
        double t0 = now_s();
        if (dm_forward(m, ws, input, batch, size, size, &out) != DM_OK) {
            cli_error("%s", dm_last_error());
            goto done;
        }
        if (r >= 0) times[r] = now_s() - t0;
    }
    qsort(times, (size_t)runs, sizeof(double), cmp_double);
    double median = runs % 2 ? times[runs / 2] : 0.5 * (times[runs / 2 - 1] + times[runs / 2]);
    double flops = 2.0 * (double)dm_model_macs(m, size, size) * batch;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double rss_mb = ru.ru_maxrss / 1024.0; /* ru_maxrss is in KiB on Linux */
    double weights_mb = dm_model_config(m)->num_params * 4.0 / (1024.0 * 1024.0);
    printf("model       DAMamba-%c (synthetic weights), %d x 3 x %d x %d\n", variant, batch, size, size);
    if (backend == DM_BACKEND_CPU) printf("backend     cpu: %s, %d threads\n", dm_isa(), cli_thread_count());
    else printf("backend     %s\n", dm_backend_name(backend));
    printf("runs        %d (best %.2f ms, worst %.2f ms)\n", runs, times[0] * 1e3, times[runs - 1] * 1e3);
    printf("median      %.2f ms per batch, %.2f ms per image\n", median * 1e3, median * 1e3 / batch);
    printf("throughput  %.2f images/s, %.1f GFLOP/s\n", batch / median, flops / median / 1e9);
    printf("memory      peak RSS %.1f MiB (weights %.1f MiB, workspace %.1f MiB)\n", rss_mb, weights_mb,
           dm_workspace_bytes(ws) / (1024.0 * 1024.0));
    printf("images_per_s=%.3f ms_per_batch=%.3f gflops=%.2f peak_rss_mb=%.1f\n", batch / median, median * 1e3,
           flops / median / 1e9, rss_mb);
    rc = 0;
done:
    free(times);
    free(logits);
    free(input);
    dm_workspace_free(ws);
    dm_model_free(m);
    return rc;
}
