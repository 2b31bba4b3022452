/* bench_threads.c - how much faster a forward pass runs on THREADS threads
 * than on one, measured in one process with the two alternating.
 *
 * On a shared machine the time of a pass drifts by tens of percent over a
 * minute, so two `damamba bench` runs, one after the other, compare two
 * different machines.  Here each pair runs a pass on one thread and a pass
 * on THREADS back to back (which goes first alternates), from two
 * workspaces of the same synthetic model, so drift falls on both alike.
 * It prints the ratio of the medians, the median and quartiles of the pair
 * ratios, the ratio of the fastest passes, and each operator's time per
 * pass on both (the means over the pairs); `bench_peak` run in the same
 * sitting says what the cores themselves gave.
 *
 * usage: bench_threads [F|T|S|B [THREADS >= 2 [PAIRS >= 1 [SIZE >= 32 [BATCH >= 1]]]]]
 * Defaults: T, the CPUs this process may use (at least 2), 20 pairs, 224,
 * batch 1.  The last line is machine-readable. */
#include "damamba.h"
#include "internal_api.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

static int by_value(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The q-quantile of n sorted values, interpolated. */
static double quantile(const double *sorted, int n, double q)
{
    double at = q * (n - 1);
    int i = (int)at;
    return i + 1 < n ? sorted[i] + (at - i) * (sorted[i + 1] - sorted[i]) : sorted[n - 1];
}

static dm_status timed_pass(const dm_model *m, dm_workspace *ws, const float *input, int batch, int size,
                            const dm_outputs *out, double *ms)
{
    double t0 = now_ms();
    dm_status st = dm_forward(m, ws, input, batch, size, size, out);
    *ms = now_ms() - t0;
    return st;
}

/* Each operator's milliseconds per pass on one thread and on several, and
 * their ratio. */
static void print_operators(const dm_workspace *one, const dm_workspace *many, int pairs)
{
    dm_op_profile a[64], b[64];
    int n = dm_workspace_profile_read(one, a, 64);
    if (n > 64) n = 64;
    if (dm_workspace_profile_read(many, b, 64) < n) return; /* both passes run the same table */
    printf("%-12s %7s %10s %10s %8s\n", "operator", "calls", "1 thread", "N threads", "speedup");
    for (int i = 0; i < n; i++) {
        if (a[i].calls == 0) continue;
        double ms1 = a[i].seconds / pairs * 1e3, msn = b[i].seconds / pairs * 1e3;
        printf("%-12s %7.1f %10.3f %10.3f %8.3f\n", a[i].entry, (double)a[i].calls / pairs, ms1, msn,
               msn > 0 ? ms1 / msn : 0.0);
    }
}

int main(int argc, char **argv)
{
    char variant = argc > 1 ? argv[1][0] : 'T';
    int threads = argc > 2 ? atoi(argv[2]) : (dm_threads() > 2 ? dm_threads() : 2);
    int pairs = argc > 3 ? atoi(argv[3]) : 20, size = argc > 4 ? atoi(argv[4]) : 224;
    int batch = argc > 5 ? atoi(argv[5]) : 1;
    dm_model *m = NULL;
    if (argc > 6 || threads < 2 || pairs < 1 || size < 32 || batch < 1 ||
        dm_model_synthetic(variant, 3, 1000, 1, &m) != DM_OK) {
        fprintf(stderr, "usage: bench_threads [F|T|S|B [THREADS >= 2 [PAIRS >= 1 [SIZE >= 32 [BATCH >= 1]]]]]\n");
        return 2;
    }
    dm_workspace *one = NULL, *many = NULL;
    size_t pixels = (size_t)batch * 3 * size * size;
    float *input = malloc(sizeof(float) * pixels), *logits = malloc(sizeof(float) * (size_t)batch * 1000);
    double *t1 = malloc(sizeof(double) * pairs), *tn = malloc(sizeof(double) * pairs);
    double *ratio = malloc(sizeof(double) * pairs);
    int rc = 1;
    if (!input || !logits || !t1 || !tn || !ratio) {
        fprintf(stderr, "bench_threads: out of memory\n");
        goto done;
    }
    if (dm_workspace_create(m, batch, size, size, &one) != DM_OK ||
        dm_workspace_create(m, batch, size, size, &many) != DM_OK ||
        dm_workspace_set_threads(one, 1) != DM_OK || dm_workspace_set_threads(many, threads) != DM_OK ||
        dm_workspace_profile(one) != DM_OK || dm_workspace_profile(many) != DM_OK) {
        fprintf(stderr, "bench_threads: %s\n", dm_last_error());
        goto done;
    }
    for (size_t i = 0; i < pixels; i++) input[i] = (float)((i * 2654435761u) % 1000) / 500.0f - 1.0f;
    dm_outputs out = {.size = sizeof(dm_outputs), .logits = logits};
    double warm;
    if (timed_pass(m, one, input, batch, size, &out, &warm) != DM_OK ||
        timed_pass(m, many, input, batch, size, &out, &warm) != DM_OK) {
        fprintf(stderr, "bench_threads: %s\n", dm_last_error());
        goto done;
    }
    dm_workspace_profile(one); /* from zero: the warm-up passes are not counted */
    dm_workspace_profile(many);
    for (int p = 0; p < pairs; p++) {
        dm_status a, b;
        if (p % 2 == 0) {
            a = timed_pass(m, one, input, batch, size, &out, &t1[p]);
            b = timed_pass(m, many, input, batch, size, &out, &tn[p]);
        } else {
            a = timed_pass(m, many, input, batch, size, &out, &tn[p]);
            b = timed_pass(m, one, input, batch, size, &out, &t1[p]);
        }
        if (a != DM_OK || b != DM_OK) {
            fprintf(stderr, "bench_threads: %s\n", dm_last_error());
            goto done;
        }
        ratio[p] = t1[p] / tn[p];
    }
    qsort(t1, pairs, sizeof *t1, by_value);
    qsort(tn, pairs, sizeof *tn, by_value);
    qsort(ratio, pairs, sizeof *ratio, by_value);
    double med1 = quantile(t1, pairs, 0.5), medn = quantile(tn, pairs, 0.5);
    printf("DAMamba-%c (synthetic weights), %d x 3 x %d x %d, %d pairs of passes alternating 1 and %d threads\n",
           variant, batch, size, size, pairs, threads);
    printf("1 thread    median %8.2f ms, fastest %8.2f ms\n", med1, t1[0]);
    printf("%d threads   median %8.2f ms, fastest %8.2f ms\n", threads, medn, tn[0]);
    printf("speedup     ratio of medians %.3f, median of pair ratios %.3f (quartiles %.3f to %.3f), "
           "fastest over fastest %.3f\n",
           med1 / medn, quantile(ratio, pairs, 0.5), quantile(ratio, pairs, 0.25), quantile(ratio, pairs, 0.75),
           t1[0] / tn[0]);
    print_operators(one, many, pairs);
    printf("threads=%d ms_1=%.3f ms_n=%.3f speedup_medians=%.4f speedup_pairs=%.4f speedup_fastest=%.4f\n", threads,
           med1, medn, med1 / medn, quantile(ratio, pairs, 0.5), t1[0] / tn[0]);
    rc = 0;
done:
    dm_workspace_free(one);
    dm_workspace_free(many);
    dm_model_free(m);
    free(input);
    free(logits);
    free(t1);
    free(tn);
    free(ratio);
    return rc;
}
