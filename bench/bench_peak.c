/* bench_peak.c - the machine's multiply-add ceiling: the float32 GFLOP/s of
 * independent chains of fused multiply-adds on the widest vectors the CPU
 * has (AVX-512, AVX2 + FMA or NEON), on one thread and then on THREADS
 * threads at once.  Nothing a forward pass does can go faster, so the
 * second figure over the first bounds what more threads can give the
 * products, whatever the code: turbo and shared power budgets often make
 * it less than the thread count.
 *
 * usage: bench_peak [THREADS [ROUNDS]]
 * Defaults: the CPUs this process may run on, 5 rounds; each figure is the
 * best round, each round about a fifth of a second per thread. */
#include <omp.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#if defined(__x86_64__)
#include <immintrin.h>
#elif defined(__aarch64__)
#include <arm_neon.h>
#endif

/* Chains per thread: more than a multiply-add's latency times the units
 * that issue them (4 x 2 on current x86 cores), so none waits. */
#define CHAINS 12

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Each way runs `steps` steps of CHAINS multiply-adds of a vector and
 * returns a sum of the chains, which the caller keeps so that nothing is
 * optimized away.  `lanes` floats per vector. */
typedef struct way {
    const char *name;
    int lanes;
    int (*supported)(void);
    float (*run)(long steps, float x);
} way;

#define CHAIN_LOOP(vec, set1, fma, add, first)                                         \
    vec acc[CHAINS], m = set1(0.999999f), a = set1(1e-7f);                                \
    for (int i = 0; i < CHAINS; i++) acc[i] = set1(x + (float)i);                        \
    for (long s = 0; s < steps; s++)                                                      \
        for (int i = 0; i < CHAINS; i++) acc[i] = fma(acc[i], m, a);                      \
    for (int i = 1; i < CHAINS; i++) acc[0] = add(acc[0], acc[i]);                        \
    return first(acc[0]);

static int always(void) { return 1; }

#if defined(__x86_64__)
__attribute__((target("avx512f"))) static float run_avx512(long steps, float x)
{
    CHAIN_LOOP(__m512, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_add_ps, _mm512_cvtss_f32)
}
static int has_avx512(void) { return __builtin_cpu_supports("avx512f"); }

__attribute__((target("avx2,fma"))) static float run_avx2(long steps, float x)
{
    CHAIN_LOOP(__m256, _mm256_set1_ps, _mm256_fmadd_ps, _mm256_add_ps, _mm256_cvtss_f32)
}
static int has_avx2(void) { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }

/* x86-64's baseline, without fused multiply-adds: a multiply and an add */
static __m128 sse2_fma(__m128 acc, __m128 m, __m128 a) { return _mm_add_ps(_mm_mul_ps(acc, m), a); }
static float run_sse2(long steps, float x) { CHAIN_LOOP(__m128, _mm_set1_ps, sse2_fma, _mm_add_ps, _mm_cvtss_f32) }
static const way ways[] = {{"avx512", 16, has_avx512, run_avx512},
                           {"avx2+fma", 8, has_avx2, run_avx2},
                           {"sse2", 4, always, run_sse2}};
#elif defined(__aarch64__)
static float neon_first(float32x4_t v) { return vgetq_lane_f32(v, 0); }
static float run_neon(long steps, float x) { CHAIN_LOOP(float32x4_t, vdupq_n_f32, vfmaq_f32, vaddq_f32, neon_first) }
static const way ways[] = {{"neon", 4, always, run_neon}};
#else
static float scalar_fma(float acc, float m, float a) { return acc * m + a; }
static float same(float v) { return v; }
static float plus(float a, float b) { return a + b; }
static float run_scalar(long steps, float x) { CHAIN_LOOP(float, same, scalar_fma, plus, same) }
static const way ways[] = {{"scalar", 1, always, run_scalar}};
#endif

/* The best GFLOP/s of `threads` threads running the way at once, all
 * together, over `rounds` rounds: each round counts until its slowest
 * thread is done. */
static double measure(const way *w, int threads, int rounds, long steps)
{
    double flops = 2.0 * w->lanes * CHAINS * (double)steps * threads, best = 0.0;
    volatile float sink = 0.0f;
    for (int r = 0; r < rounds; r++) {
        double slowest = 0.0;
#pragma omp parallel num_threads(threads) reduction(max : slowest)
        {
#pragma omp barrier
            double t0 = now_s();
            sink = w->run(steps, (float)omp_get_thread_num());
            slowest = now_s() - t0;
        }
        if (flops / slowest * 1e-9 > best) best = flops / slowest * 1e-9;
    }
    (void)sink;
    return best;
}

int main(int argc, char **argv)
{
    cpu_set_t cpus;
    int threads = sched_getaffinity(0, sizeof cpus, &cpus) == 0 ? CPU_COUNT(&cpus) : 1;
    int rounds = 5;
    if (argc > 1) threads = atoi(argv[1]);
    if (argc > 2) rounds = atoi(argv[2]);
    if (argc > 3 || threads < 1 || threads > 1024 || rounds < 1) {
        fprintf(stderr, "usage: bench_peak [THREADS (1..1024) [ROUNDS]]\n");
        return 2;
    }
    const way *w = ways; /* the last way runs everywhere */
    while (!w->supported()) w++;

    /* about 0.2 s a round on a 3 GHz core issuing two vectors a cycle */
    long steps = 3e9 * 0.2 * 2 / CHAINS;
    double one = measure(w, 1, rounds, steps), all = threads > 1 ? measure(w, threads, rounds, steps) : one;
    printf("multiply-add peak, float32, %s (%d lanes), best of %d rounds\n", w->name, w->lanes, rounds);
    printf("  1 thread: %.1f GFLOP/s\n", one);
    if (threads > 1)
        printf("  %d threads at once: %.1f GFLOP/s (%.1f each), %.2fx one thread\n", threads, all, all / threads,
               all / one);
    printf("peak_1=%.1f peak_%d=%.1f scaling=%.3f\n", one, threads, all, all / one);
    return 0;
}
