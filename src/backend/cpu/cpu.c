/* cpu.c - the operator table on the CPU: the kernels of simd/ (one thread
 * each, on ranges) shared out over the workspace's thread pool (pool.h).
 * Matrix products run the kernels' gemm on the weights as the model holds
 * them (packed), or in half precision on copies rounded the first time
 * each product runs. */
#include "backends.h"

#include "error.h"
#include "detect_kernels.h"
#include "half_gemm.h"
#include "kernels.h"
#include "host_memory.h"
#include "cgroup.h"
#include "pool.h"

#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Channels one thread of the scan takes at a time. */
#define SCAN_CHANNEL_BLOCK 16
/* A long sequence with few blocks of channels is also cut into chunks of
 * at least SCAN_CHUNK_STEPS steps, for up to SCAN_PIECES pieces in all. */
#define SCAN_CHUNK_STEPS 4096
#define SCAN_PIECES 16
/* A batch runs each stage in groups of images whose blocks' buffers fit
 * in this much: about half of a server CPU's last-level cache.  DAMamba-T
 * at 224 x 224 then runs stage 0 image by image and the later stages in
 * groups of up to 2, 4 and 12 images. */
#define CACHE_GROUP_BYTES ((size_t)16 << 20)

/* A product's weight rounded to the workspace's half precision and laid
 * out for its kernel, made the first time the product runs and found again
 * by the float32 weight it was made from. */
typedef struct prepared_weight {
    const float *source;
    size_t N, K;
    void *data;
} prepared_weight;

typedef struct cpu {
    const dm_kernels *k;
    int threads;
    dm_pool *pool;  /* threads - 1 workers besides the caller */
    float *scratch; /* im2col bands; the scan's states; rounded rows */
    size_t scratch_floats, planned_floats; /* held; the most reserve() asked */
    /* half precision: the native kernel (NULL: float32 products of the
     * rounded values); the serial of the model whose weights are
     * prepared, and those */
    dm_precision precision;
    const dm_half_gemm *native;
    uint64_t model_serial;
    prepared_weight *weights; /* sorted by (source, N, K) */
    size_t weight_count, weight_cap, weight_bytes;
    dm_status failure; /* the pass's first, returned by finish() */
} cpu;

static int at_most_max_threads(long n) { return n > DM_MAX_THREADS ? DM_MAX_THREADS : (int)n; }

/* The control groups' CPU quota, read once per process: reading it takes
 * about 150 us, and some callers ask for the default count per pass. */
static int cpu_quota;
static pthread_once_t cpu_quota_once = PTHREAD_ONCE_INIT;
static void read_cpu_quota(void) { cpu_quota = dm_cgroup_cpu_limit(""); }

/* DAMAMBA_THREADS's count: a whole number of at least 1 (one past LONG_MAX
 * reads as LONG_MAX); 0 for anything else. */
static long threads_setting(const char *value)
{
    if (!*value || value[strspn(value, "0123456789")]) return 0;
    return strtol(value, NULL, 10);
}

dm_status dm_threads_check(void)
{
    const char *env = getenv("DAMAMBA_THREADS");
    if (env && *env && !threads_setting(env))
        return dm_fail(DM_ERR_ARGUMENT, "DAMAMBA_THREADS is \"%.40s\", not a number of threads such as 4", env);
    return DM_OK;
}

int dm_threads(void)
{
    const char *env = getenv("DAMAMBA_THREADS");
    long n = env ? threads_setting(env) : 0;
    /* OMP_NUM_THREADS may list counts for nested levels ("4,2"): the first */
    if (!n && (env = getenv("OMP_NUM_THREADS"))) n = strtol(env, NULL, 10);
    if (n > 0) return at_most_max_threads(n);
    /* The processors this process may run on (taskset, cgroups' cpusets),
     * but no more than its control groups' CPU quota grants (a container's
     * --cpus): threads beyond it would only wait for their turn, and the
     * workers waiting between loops would spend the quota. */
    cpu_set_t allowed;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    if (sched_getaffinity(0, sizeof allowed, &allowed) == 0 && CPU_COUNT(&allowed) > 0) cpus = CPU_COUNT(&allowed);
    pthread_once(&cpu_quota_once, read_cpu_quota);
    if (cpu_quota > 0 && cpu_quota < cpus) cpus = cpu_quota;
    return cpus > 0 ? at_most_max_threads(cpus) : 1;
}

/* Parallel loops are cut into this many pieces per thread, handed out as
 * threads come free: a thread that another process slows down takes fewer
 * pieces instead of holding the others up.  The pieces are fixed by the
 * shape and the thread count alone, so results do not depend on timing. */
#define PIECES_PER_THREAD 8

static size_t pieces(const cpu *cx) { return cx->threads > 1 ? (size_t)cx->threads * PIECES_PER_THREAD : 1; }

/* Piece i's share [*a, *b) of total items cut into n pieces: contiguous,
 * sizes within one. */
static void share(size_t total, size_t n, size_t i, size_t *a, size_t *b)
{
    *a = total * i / n;
    *b = total * (i + 1) / n;
}

/* ----------------------------------------------------------- gemm, conv */

/* The smallest tile of a product worth a call of its own. */
#define GEMM_MIN_ROWS 32
#define GEMM_MIN_COLS 64
/* Column tiles start on panels. */
#define GEMM_COL_ALIGN DM_PANEL
/* Rows of a half-precision product rounded at a time: the rounded band
 * stays in cache for the product that reads it. */
#define HALF_BAND_ROWS 512

/* Rows of the register block of the kernel that multiplies.  A tile of
 * rows that is not a multiple of it ends in a partial block, which does
 * less work per weight load and per step of its loop than a full one. */
static size_t row_block(const cpu *cx) { return cx->native ? cx->native->rows : cx->k->gemm_rows; }

/* rows rounded down to whole register blocks: the size of a band of rows
 * whose pieces start on blocks (every band here is many blocks long). */
static size_t whole_blocks(const cpu *cx, size_t rows) { return rows / row_block(cx) * row_block(cx); }

/* Piece i's share [*a, *b) of total rows cut into n pieces of whole
 * register blocks (the last block of all may be partial). */
static void share_rows(const cpu *cx, size_t total, size_t n, size_t i, size_t *a, size_t *b)
{
    size_t block = row_block(cx);
    share((total + block - 1) / block, n, i, a, b);
    *a = *a * block < total ? *a * block : total;
    *b = *b * block < total ? *b * block : total;
}

/* A product's weight as its tiles read it: float32 panels for the kernels'
 * gemm (the model's own, or their rounding when no native kernel runs the
 * precision), or laid out for the native kernel. */
typedef struct product_weight {
    const float *panels;
    const void *native;
    size_t N;
} product_weight;

/* Columns [n0, n1) of rows rows of C (row stride ldc) with the epilogue,
 * by the kernels' gemm or the native half-precision kernel.  A's rows are
 * lda floats apart (packed rows, for the native kernel). */
static void gemm_tile(const cpu *cx, size_t rows, size_t n0, size_t n1, size_t K, const float *A, size_t lda,
                      product_weight W, float beta, const float *bias, dm_act act, float *C, size_t ldc)
{
    if (rows == 0 || n1 == n0) return;
    if (W.panels) cx->k->gemm(rows, K, A, lda, W.panels, n0, n1, beta, bias, act, C, ldc);
    else cx->native->gemm(rows, K, A, W.native, W.N, n0, n1, beta, bias, act, C, ldc);
}

/* A product cut into row_tiles x col_tiles tiles. */
typedef struct gemm_job {
    const cpu *cx;
    size_t M, N, K, lda, row_tiles, col_tiles;
    const float *A, *bias;
    product_weight W;
    float beta, *C;
    dm_act act;
} gemm_job;

static void gemm_piece(void *arg, size_t t)
{
    const gemm_job *g = arg;
    size_t m0, m1, n0, n1, col_blocks = (g->N + GEMM_COL_ALIGN - 1) / GEMM_COL_ALIGN;
    share_rows(g->cx, g->M, g->row_tiles, t / g->col_tiles, &m0, &m1);
    share(col_blocks, g->col_tiles, t % g->col_tiles, &n0, &n1);
    n0 *= GEMM_COL_ALIGN;
    n1 = n1 * GEMM_COL_ALIGN < g->N ? n1 * GEMM_COL_ALIGN : g->N;
    gemm_tile(g->cx, m1 - m0, n0, n1, g->K, g->A + m0 * g->lda, g->lda, g->W, g->beta, g->bias, g->act,
              g->C + m0 * g->N, g->N);
}

/* Rows are cut first; a product too thin to give every piece rows of its
 * own (the last stages' 7 x 7 pixels) also cuts its columns, so each
 * thread reads only part of the weights. */
static void run_gemm(const cpu *cx, size_t M, size_t N, size_t K, const float *A, size_t lda, product_weight W,
                     float beta, const float *bias, dm_act act, float *C)
{
    size_t want = pieces(cx), row_tiles = M / GEMM_MIN_ROWS, col_tiles = 1;
    if (row_tiles > want) row_tiles = want;
    if (row_tiles == 0) row_tiles = 1;
    if (row_tiles < want) {
        col_tiles = want / row_tiles;
        if (col_tiles > N / GEMM_MIN_COLS) col_tiles = N / GEMM_MIN_COLS;
        if (col_tiles == 0) col_tiles = 1;
    }
    gemm_job g = {.cx = cx, .M = M, .N = N, .K = K, .lda = lda, .row_tiles = row_tiles, .col_tiles = col_tiles,
                  .A = A, .W = W, .bias = bias, .beta = beta, .C = C, .act = act};
    dm_pool_run(cx->pool, row_tiles * col_tiles, gemm_piece, &g);
}

/* ------------------------------------------------------ half precision */

/* Record the pass's first failure: operators report none themselves. */
static void fail(cpu *cx, dm_status st)
{
    if (!cx->failure) cx->failure = st;
}

static void drop_weights(cpu *cx)
{
    for (size_t i = 0; i < cx->weight_count; i++) dm_host_free(cx->weights[i].data);
    free(cx->weights);
    cx->weights = NULL;
    cx->weight_count = cx->weight_cap = cx->weight_bytes = 0;
    cx->model_serial = 0;
}

static int weight_before(const prepared_weight *p, const float *source, size_t N, size_t K)
{
    if (p->source != source) return (uintptr_t)p->source < (uintptr_t)source;
    return p->N != N ? p->N < N : p->K < K;
}

static float *aligned_floats(size_t floats)
{
    return dm_host_alloc(floats > SIZE_MAX / sizeof(float) ? SIZE_MAX : floats * sizeof(float));
}

/* The model's packed W [N][K] as the half precision's tiles read it,
 * prepared on its first use (by the thread that enqueues, before any piece
 * runs).  0 when out of memory, the failure recorded. */
static int prepare_weight(cpu *cx, const float *W, size_t N, size_t K, product_weight *out)
{
    size_t lo = 0, hi = cx->weight_count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (weight_before(&cx->weights[mid], W, N, K)) lo = mid + 1;
        else hi = mid;
    }
    prepared_weight *p = &cx->weights[lo];
    if (lo == cx->weight_count || p->source != W || p->N != N || p->K != K) {
        if (cx->weight_count == cx->weight_cap) {
            size_t cap = cx->weight_cap ? 2 * cx->weight_cap : 64;
            prepared_weight *grown = realloc(cx->weights, cap * sizeof *grown);
            if (!grown) {
                fail(cx, dm_fail(DM_ERR_NOMEM, "out of memory for the %s weights", dm_precision_name(cx->precision)));
                return 0;
            }
            cx->weights = grown;
            cx->weight_cap = cap;
        }
        size_t bytes = cx->native ? cx->native->weight_bytes(N, K) : dm_packed_floats(N, K) * sizeof(float);
        void *data = dm_host_alloc(bytes);
        if (!data) {
            fail(cx, dm_fail_nomem("out of memory for %.1f MB of %s weights", bytes / 1e6,
                                   dm_precision_name(cx->precision)));
            return 0;
        }
        if (cx->native) cx->native->pack_weight(W, N, K, data);
        else cx->k->round_half(W, data, dm_packed_floats(N, K), cx->precision);
        p = &cx->weights[lo];
        memmove(p + 1, p, (cx->weight_count - lo) * sizeof *p);
        *p = (prepared_weight){W, N, K, data};
        cx->weight_count++;
        cx->weight_bytes += bytes;
    }
    *out = cx->native ? (product_weight){NULL, p->data, N} : (product_weight){p->data, NULL, N};
    return 1;
}

/* Floats one row of K values takes once rounded (or packed). */
static size_t half_row_floats(const cpu *cx, size_t K)
{
    return cx->native ? cx->native->row_bytes(K) / sizeof(float) : K;
}

/* Scratch of at least `floats`: grown, never shrunk. */
static dm_status grow_scratch(cpu *cx, size_t floats)
{
    if (cx->scratch && floats <= cx->scratch_floats) return DM_OK;
    float *p = aligned_floats(floats);
    if (!p) return dm_fail_nomem("out of memory for %.1f MB of scratch", floats * 4.0 / 1e6);
    dm_host_free(cx->scratch);
    cx->scratch = p;
    cx->scratch_floats = floats;
    return DM_OK;
}

/* Back to what the plan asked for, once the rounded bands of half
 * precision, which may have grown the scratch beyond it, are done with.
 * Out of memory, the larger scratch stays. */
static void shrink_scratch(cpu *cx)
{
    if (cx->scratch_floats <= cx->planned_floats) return;
    float *p = cx->planned_floats ? aligned_floats(cx->planned_floats) : NULL;
    if (cx->planned_floats && !p) return;
    dm_host_free(cx->scratch);
    cx->scratch = p;
    cx->scratch_floats = cx->planned_floats;
}

/* The same between operators, when a product needs more than the plan
 * gave; 0 when out of memory, recorded. */
static int ensure_scratch(cpu *cx, size_t floats)
{
    dm_status st = grow_scratch(cx, floats);
    if (st) fail(cx, st);
    return st == DM_OK;
}

/* rows rows of A (lda apart) rounded or packed into dst, row_floats apart. */
static void half_rows(const cpu *cx, const float *A, size_t lda, size_t rows, size_t K, float *dst)
{
    if (cx->native) cx->native->pack_rows(A, lda, rows, K, dst);
    else
        for (size_t r = 0; r < rows; r++) cx->k->round_half(A + r * lda, dst + r * K, K, cx->precision);
}

typedef struct round_job {
    const cpu *cx;
    const float *A;
    size_t lda, rows, K, pieces;
    float *dst;
} round_job;

static void round_piece(void *arg, size_t i)
{
    const round_job *j = arg;
    size_t a, b;
    share(j->rows, j->pieces, i, &a, &b);
    if (a < b) half_rows(j->cx, j->A + a * j->lda, j->lda, b - a, j->K, j->dst + a * half_row_floats(j->cx, j->K));
}

/* A half-precision product: bands of A's rows rounded into scratch, then
 * multiplied. */
static void half_gemm(cpu *cx, size_t M, size_t N, size_t K, const float *A, size_t lda, const float *W, float beta,
                      const float *bias, dm_act act, float *C)
{
    product_weight pw;
    size_t row = half_row_floats(cx, K), band = whole_blocks(cx, HALF_BAND_ROWS);
    if (band > M) band = M;
    if (!prepare_weight(cx, W, N, K, &pw) || !ensure_scratch(cx, band * row)) return;
    for (size_t m0 = 0; m0 < M; m0 += band) {
        round_job j = {.cx = cx, .A = A + m0 * lda, .lda = lda, .rows = M - m0 < band ? M - m0 : band, .K = K,
                       .pieces = pieces(cx), .dst = cx->scratch};
        dm_pool_run(cx->pool, j.pieces, round_piece, &j);
        run_gemm(cx, j.rows, N, K, cx->scratch, row, pw, beta, bias, act, C + m0 * N);
    }
}

static void cpu_gemm(void *ctx, size_t M, size_t N, size_t K, const float *A, size_t lda, const float *W, float beta,
                     const float *bias, dm_act act, float *C)
{
    cpu *cx = ctx;
    if (cx->precision != DM_PRECISION_F32) half_gemm(cx, M, N, K, A, lda, W, beta, bias, act, C);
    else run_gemm(cx, M, N, K, A, lda, (product_weight){W, NULL, N}, beta, bias, act, C);
}

/* Output pixels per im2col band: bounds the column buffer. */
static size_t conv_band(int cin)
{
    size_t band = ((size_t)1 << 20) / (9 * (size_t)cin);
    return band < 256 ? 256 : band;
}

static size_t cpu_conv3x3_scratch(void *ctx, size_t out_pixels, int cin)
{
    (void)ctx;
    size_t band = conv_band(cin);
    return (band < out_pixels ? band : out_pixels) * 9 * (size_t)cin;
}

/* Gather the 3x3 neighbourhoods of output pixels [p0, p1) of a channels-
 * last batch of h x w x cin into rows of 9 * cin (tap-major, then channel),
 * zeros in the padding.  A kernel row's three taps are neighbouring input
 * pixels whatever the stride, so each is one copy of up to 3 * cin floats. */
static void im2col3x3(const float *x, int h, int w, int cin, int stride, int pad, int oh, int ow, size_t p0,
                      size_t p1, float *cols)
{
    size_t per_image = (size_t)oh * ow, tap = (size_t)cin;
    for (size_t p = p0; p < p1; p++) {
        size_t img = p / per_image, q = p % per_image;
        int oy = (int)(q / ow), ox = (int)(q % ow);
        int ix0 = ox * stride - pad, kx0 = ix0 < 0 ? -ix0 : 0, kx1 = w - ix0 < 3 ? w - ix0 : 3;
        float *row = cols + (p - p0) * 9 * tap;
        for (int ky = 0; ky < 3; ky++, row += 3 * tap) {
            int iy = oy * stride + ky - pad;
            if (iy < 0 || iy >= h || kx0 >= kx1) {
                memset(row, 0, sizeof(float) * 3 * tap);
                continue;
            }
            memset(row, 0, sizeof(float) * (size_t)kx0 * tap);
            memcpy(row + kx0 * tap, x + ((img * h + iy) * w + ix0 + kx0) * tap,
                   sizeof(float) * (size_t)(kx1 - kx0) * tap);
            memset(row + kx1 * tap, 0, sizeof(float) * (size_t)(3 - kx1) * tap);
        }
    }
}

/* One band [p0, p1) of a convolution's output pixels, cut into pieces. */
typedef struct conv_job {
    const cpu *cx;
    const dm_conv3x3 *cv;
    dm_view x, y;
    dm_act act;
    product_weight W;
    float *packed; /* the band's packed rows, for a native half kernel */
    size_t p0, p1, pieces;
} conv_job;

static void conv_piece(void *arg, size_t i)
{
    const conv_job *j = arg;
    const cpu *cx = j->cx;
    const dm_conv3x3 *cv = j->cv;
    size_t a, b, K = 9 * (size_t)cv->cin, lda = K;
    share_rows(cx, j->p1 - j->p0, j->pieces, i, &a, &b);
    if (a >= b) return;
    float *rows = cx->scratch + a * K;
    im2col3x3(j->x.data, j->x.h, j->x.w, j->x.c, cv->stride, cv->pad, j->y.h, j->y.w, j->p0 + a, j->p0 + b, rows);
    if (cx->precision != DM_PRECISION_F32) {
        /* rounded in place, or packed next to the band for a native kernel */
        lda = half_row_floats(cx, K);
        float *dst = j->packed ? j->packed + a * lda : rows;
        half_rows(cx, rows, K, b - a, K, dst);
        rows = dst;
    }
    gemm_tile(cx, b - a, 0, (size_t)cv->cout, K, rows, lda, j->W, 0.0f, cv->bias, j->act,
              j->y.data + (j->p0 + a) * cv->cout, (size_t)cv->cout);
}

/* Banded im2col + GEMM; each piece of a band is gathered and multiplied at
 * once. */
static void cpu_conv3x3(void *ctx, const dm_conv3x3 *cv, dm_view x, dm_act act, dm_view y)
{
    cpu *cx = ctx;
    size_t total = dm_view_pixels(y), K = 9 * (size_t)cv->cin;
    size_t band = whole_blocks(cx, conv_band(cv->cin));
    if (band > total) band = total;
    conv_job j = {.cx = cx, .cv = cv, .x = x, .y = y, .act = act, .W = {cv->weight, NULL, (size_t)cv->cout},
                  .pieces = pieces(cx)};
    if (cx->precision != DM_PRECISION_F32) {
        size_t packed = cx->native ? band * half_row_floats(cx, K) : 0;
        if (!prepare_weight(cx, cv->weight, (size_t)cv->cout, K, &j.W) || !ensure_scratch(cx, band * K + packed))
            return;
        if (cx->native) j.packed = cx->scratch + band * K;
    }
    for (j.p0 = 0; j.p0 < total; j.p0 += band) {
        j.p1 = j.p0 + band < total ? j.p0 + band : total;
        dm_pool_run(cx->pool, j.pieces, conv_piece, &j);
    }
}

/* -------------------------------------------------------- per-pixel ops */

/* Work on n images of per_image items each (rows, pixels; a flat range is
 * one image), cut into contiguous pieces; part(args, image, i0, i1) does
 * items [i0, i1) of one image, once per image a piece touches. */
typedef void (*image_part)(const void *args, size_t image, size_t i0, size_t i1);

typedef struct images_job {
    size_t total, per_image, pieces;
    image_part part;
    const void *args;
} images_job;

static void images_piece(void *arg, size_t i)
{
    const images_job *j = arg;
    size_t q0, q1;
    share(j->total, j->pieces, i, &q0, &q1);
    while (q0 < q1) {
        size_t img = q0 / j->per_image, i0 = q0 % j->per_image;
        size_t i1 = i0 + (q1 - q0) < j->per_image ? i0 + (q1 - q0) : j->per_image;
        j->part(j->args, img, i0, i1);
        q0 += i1 - i0;
    }
}

static void share_images(const cpu *cx, int n, size_t per_image, image_part part, const void *args)
{
    images_job j = {.total = (size_t)n * per_image, .per_image = per_image, .pieces = pieces(cx), .part = part,
                    .args = args};
    dm_pool_run(cx->pool, j.pieces, images_piece, &j);
}

/* An operator's arguments as its image_part reads them. */
typedef struct image_op {
    const dm_kernels *k;
    dm_view x, y, other;
    const float *w9, *bias, *gamma, *beta, *offsets;
    const float *from_host; /* input: the caller's NCHW batch */
    float *to_host;         /* output: the caller's NCHW memory */
    dm_act act;
    int groups, size, stride, pad, c0;
    dm_resize mode;
} image_op;

static const float *image_in(const image_op *op, size_t img) { return op->x.data + img * op->x.h * op->x.w * op->x.c; }
static float *image_out(const image_op *op, size_t img) { return op->y.data + img * op->y.h * op->y.w * op->y.c; }

static void layernorm_rows(const void *args, size_t img, size_t r0, size_t r1)
{
    const image_op *op = args;
    size_t c = (size_t)op->x.c;
    (void)img;
    op->k->layernorm(op->x.data + r0 * c, op->y.data + r0 * c, r1 - r0, c, op->gamma, op->beta, op->act);
}

static void cpu_layernorm(void *ctx, dm_view x, const float *gamma, const float *beta, dm_act act, dm_view y)
{
    const cpu *cx = ctx;
    image_op op = {.k = cx->k, .x = x, .y = y, .gamma = gamma, .beta = beta, .act = act};
    share_images(cx, 1, dm_view_pixels(x), layernorm_rows, &op);
}

static void bias_act_rows(const void *args, size_t img, size_t r0, size_t r1)
{
    const image_op *op = args;
    size_t c = (size_t)op->y.c;
    (void)img;
    op->k->bias_act(op->y.data + r0 * c, r1 - r0, c, op->bias, op->act);
}

static void cpu_bias_act(void *ctx, dm_view y, const float *bias, dm_act act)
{
    const cpu *cx = ctx;
    image_op op = {.k = cx->k, .y = y, .bias = bias, .act = act};
    share_images(cx, 1, dm_view_pixels(y), bias_act_rows, &op);
}

static void dwconv_rows(const void *args, size_t img, size_t y0, size_t y1)
{
    const image_op *op = args;
    op->k->dwconv3x3(image_in(op, img), image_out(op, img), op->x.h, op->x.w, op->x.c, op->w9, op->bias, op->act,
                     (int)y0, (int)y1);
}

static void cpu_dwconv3x3(void *ctx, dm_view x, const float *w9, const float *bias, dm_act act, dm_view y)
{
    const cpu *cx = ctx;
    image_op op = {.k = cx->k, .x = x, .y = y, .w9 = w9, .bias = bias, .act = act};
    share_images(cx, x.n, (size_t)x.h, dwconv_rows, &op);
}

static void sample_pixels(const void *args, size_t img, size_t p0, size_t p1)
{
    const image_op *op = args;
    size_t pixels = (size_t)op->x.h * op->x.w;
    op->k->sample(image_in(op, img), op->offsets + img * pixels * 2 * op->groups, image_out(op, img), op->x.h,
                  op->x.w, op->x.c, op->groups, p0, p1);
}

static void cpu_sample(void *ctx, dm_view v, const float *offsets, int groups, dm_view u)
{
    const cpu *cx = ctx;
    image_op op = {.k = cx->k, .x = v, .y = u, .offsets = offsets, .groups = groups};
    share_images(cx, v.n, (size_t)v.h * v.w, sample_pixels, &op);
}

/* ------------------------------------------------------------------ scan */

/* Per image: a state per channel; a chunked scan also its chunks' states
 * and decays, one image at a time. */
static size_t cpu_scan_scratch(void *ctx, int n, size_t steps, int c)
{
    (void)ctx, (void)steps;
    return ((size_t)n + 2 * SCAN_PIECES) * (size_t)c;
}

/* One block of one image's channels, scanned over the whole sequence. */
typedef struct scan_job {
    const dm_kernels *k;
    const dm_scan_inputs *in;
    dm_scan_args args;
    dm_view y;
    float *state;
    size_t per_image;
} scan_job;

static void scan_piece(void *arg, size_t i)
{
    const scan_job *j = arg;
    size_t L = (size_t)j->in->u.h * j->in->u.w, C = (size_t)j->in->u.c;
    size_t img = i / j->per_image, c0 = (i % j->per_image) * SCAN_CHANNEL_BLOCK;
    size_t c1 = c0 + SCAN_CHANNEL_BLOCK < C ? c0 + SCAN_CHANNEL_BLOCK : C;
    dm_scan_args args = j->args;
    args.u = j->in->u.data + img * L * C;
    args.delta = j->in->delta + img * L * C;
    args.bc = j->in->bc + img * L * j->in->bc_stride;
    j->k->scan(&args, 0, L, c0, c1, j->state + img * C, NULL, j->y.data + img * L * C);
}

/* The chunks an image's sequence of L steps is scanned in: one, unless the
 * sequence is long and its channel blocks too few for many threads to
 * share (a segmentation's first stage).  A chunked scan does nearly twice
 * the arithmetic, and rounds differently: the cut depends on the image's
 * shape alone, never on the thread count or the batch, so an image's
 * result is the same on any number of threads and beside any images. */
static size_t scan_chunks(size_t L, size_t channel_blocks)
{
    size_t want = (SCAN_PIECES + channel_blocks - 1) / channel_blocks, most = L / SCAN_CHUNK_STEPS;
    size_t chunks = want < most ? want : most;
    return chunks > 1 ? chunks : 1;
}

/* The channels are independent, so threads take blocks of channels; a
 * narrow image's sequence is also cut into chunks (scan_chunks). */
static void cpu_scan(void *ctx, const dm_scan_inputs *in, dm_view y)
{
    const cpu *cx = ctx;
    int n = in->u.n;
    size_t L = (size_t)in->u.h * in->u.w, C = (size_t)in->u.c;
    size_t per_image = (C + SCAN_CHANNEL_BLOCK - 1) / SCAN_CHANNEL_BLOCK, chunks = scan_chunks(L, per_image);
    float *state = cx->scratch, *chunk_states = state + n * C, *decays = chunk_states + SCAN_PIECES * C;
    memset(state, 0, sizeof(float) * n * C);
    dm_scan_args args = {
        .bc_stride = in->bc_stride, .a = in->a, .d = in->d, .dt_bias = in->dt_bias, .channels = C,
    };
    if (chunks > 1) {
        for (int img = 0; img < n; img++) {
            args.u = in->u.data + img * L * C;
            args.delta = in->delta + img * L * C;
            args.bc = in->bc + img * L * in->bc_stride;
            dm_scan_chunked(cx->k, &args, L, chunks, SCAN_CHANNEL_BLOCK, cx->pool, state + img * C, chunk_states,
                            decays, y.data + img * L * C);
        }
        return;
    }
    scan_job j = {.k = cx->k, .in = in, .args = args, .y = y, .state = state, .per_image = per_image};
    dm_pool_run(cx->pool, n * per_image, scan_piece, &j);
}

/* ------------------------------------------------- pooling and resizing */

static void avg_pool_pixels(const void *args, size_t img, size_t p0, size_t p1)
{
    const image_op *op = args;
    op->k->avg_pool(image_in(op, img), op->x.h, op->x.w, op->x.c, image_out(op, img), op->y.h, op->y.w, p0, p1);
}

static void cpu_avg_pool(void *ctx, dm_view x, dm_view y)
{
    const cpu *cx = ctx;
    image_op op = {.k = cx->k, .x = x, .y = y};
    share_images(cx, y.n, (size_t)y.h * y.w, avg_pool_pixels, &op);
}

static void max_pool_pixels(const void *args, size_t img, size_t p0, size_t p1)
{
    const image_op *op = args;
    op->k->max_pool(image_in(op, img), op->x.h, op->x.w, op->x.c, op->size, op->stride, op->pad, image_out(op, img),
                    op->y.h, op->y.w, p0, p1);
}

static void cpu_max_pool(void *ctx, dm_view x, int k, int stride, int pad, dm_view y)
{
    const cpu *cx = ctx;
    image_op op = {.k = cx->k, .x = x, .y = y, .size = k, .stride = stride, .pad = pad};
    share_images(cx, y.n, (size_t)y.h * y.w, max_pool_pixels, &op);
}

static void resize_pixels(const void *args, size_t img, size_t p0, size_t p1)
{
    const image_op *op = args;
    op->k->resize(image_in(op, img), op->x.h, op->x.w, op->x.c, op->mode, image_out(op, img), op->y.h, op->y.w, p0,
                  p1);
}

static void cpu_resize(void *ctx, dm_view x, dm_resize mode, dm_view y)
{
    const cpu *cx = ctx;
    image_op op = {.k = cx->k, .x = x, .y = y, .mode = mode};
    share_images(cx, y.n, (size_t)y.h * y.w, resize_pixels, &op);
}

/* ------------------------------------------------ elementwise, layouts */

static void add_elements(const void *args, size_t img, size_t i0, size_t i1)
{
    const image_op *op = args;
    (void)img;
    op->k->add(op->x.data + i0, op->other.data + i0, op->y.data + i0, i1 - i0, op->act);
}

static void cpu_add(void *ctx, dm_view a, dm_view b, dm_act act, dm_view y)
{
    const cpu *cx = ctx;
    image_op op = {.k = cx->k, .x = a, .other = b, .y = y, .act = act};
    share_images(cx, 1, dm_view_floats(y), add_elements, &op);
}

static void concat_pixels(const void *args, size_t img, size_t p0, size_t p1)
{
    const image_op *op = args;
    (void)img;
    for (size_t p = p0; p < p1; p++)
        memcpy(op->y.data + p * op->y.c + op->c0, op->x.data + p * op->x.c, sizeof(float) * op->x.c);
}

static void cpu_concat(void *ctx, dm_view x, int c0, dm_view y)
{
    const cpu *cx = ctx;
    image_op op = {.x = x, .y = y, .c0 = c0};
    share_images(cx, 1, dm_view_pixels(x), concat_pixels, &op);
}

typedef struct roi_job {
    const dm_roi_levels *levels;
    const float *rois;
    dm_view y;
} roi_job;

/* RoI i, pooled from its level */
static void roi_piece(void *arg, size_t i)
{
    const roi_job *j = arg;
    const float *roi = j->rois + 5 * i;
    int l = (int)roi[0];
    dm_view f = j->levels->level[l];
    dm_roi_align(f.data, f.h, f.w, f.c, j->levels->scale[l], roi + 1, j->y.h, j->y.w,
                 j->y.data + i * j->y.h * j->y.w * j->y.c);
}

static void cpu_roi_align(void *ctx, const dm_roi_levels *levels, const float *rois, int n, dm_view y)
{
    const cpu *cx = ctx;
    roi_job j = {levels, rois, y};
    dm_pool_run(cx->pool, (size_t)n, roi_piece, &j);
}

static void cpu_host_run(void *ctx, size_t pieces, dm_pool_piece piece, void *arg)
{
    dm_pool_run(((const cpu *)ctx)->pool, pieces, piece, arg);
}

/* NCHW [n][c][h*w] <-> channels-last [n][h*w][c]. */
static void input_pixels(const void *args, size_t img, size_t p0, size_t p1)
{
    const image_op *op = args;
    size_t hw = (size_t)op->y.h * op->y.w, c = (size_t)op->y.c;
    float *to = image_out(op, img);
    const float *from = op->from_host + img * c * hw;
    for (size_t p = p0; p < p1; p++)
        for (size_t ch = 0; ch < c; ch++) to[p * c + ch] = from[ch * hw + p];
}

static void cpu_input(void *ctx, const float *host, dm_layout layout, dm_view dst)
{
    const cpu *cx = ctx;
    if (layout == DM_LAYOUT_NHWC) {
        memcpy(dst.data, host, sizeof(float) * dm_view_floats(dst));
        return;
    }
    image_op op = {.y = dst, .from_host = host};
    share_images(cx, dst.n, (size_t)dst.h * dst.w, input_pixels, &op);
}

static void output_channels(const void *args, size_t img, size_t c0, size_t c1)
{
    const image_op *op = args;
    size_t hw = (size_t)op->x.h * op->x.w, c = (size_t)op->x.c;
    for (size_t ch = c0; ch < c1; ch++) {
        const float *from = image_in(op, img) + ch;
        float *to = op->to_host + (img * c + ch) * hw;
        for (size_t p = 0; p < hw; p++) to[p] = from[p * c];
    }
}

static void cpu_output(void *ctx, dm_view src, dm_layout layout, float *host)
{
    const cpu *cx = ctx;
    if (layout == DM_LAYOUT_NHWC) {
        memcpy(host, src.data, sizeof(float) * dm_view_floats(src));
        return;
    }
    image_op op = {.x = src, .to_host = host};
    share_images(cx, src.n, (size_t)src.c, output_channels, &op);
}

/* ------------------------------------------------ memory and passes */

static float *cpu_alloc(void *ctx, size_t floats)
{
    (void)ctx;
    return aligned_floats(floats);
}

static void cpu_release(void *ctx, float *p)
{
    (void)ctx;
    dm_host_free(p);
}

static dm_status cpu_reserve(void *ctx, size_t scratch_floats, size_t transfer_floats, int outputs)
{
    cpu *cx = ctx;
    (void)transfer_floats, (void)outputs; /* outputs are written in place */
    if (scratch_floats > cx->planned_floats) cx->planned_floats = scratch_floats;
    return grow_scratch(cx, scratch_floats);
}

static size_t cpu_held_bytes(void *ctx)
{
    const cpu *cx = ctx;
    return cx->scratch_floats * sizeof(float) + cx->weight_bytes;
}

static dm_status cpu_set_precision(void *ctx, dm_precision precision)
{
    cpu *cx = ctx;
    if (precision == cx->precision) return DM_OK;
    drop_weights(cx);
    cx->precision = precision;
    cx->native = precision == DM_PRECISION_F32 ? NULL : dm_half_gemm_native(precision);
    if (precision == DM_PRECISION_F32) shrink_scratch(cx);
    return DM_OK;
}

static dm_status cpu_set_threads(void *ctx, int threads)
{
    cpu *cx = ctx;
    if (threads == cx->threads) return DM_OK;
    dm_pool *pool = dm_pool_create(threads);
    if (!pool) return dm_fail(DM_ERR_NOMEM, "out of memory for a pool of %d threads", threads);
    dm_pool_destroy(cx->pool);
    cx->pool = pool;
    cx->threads = threads;
    return DM_OK;
}

/* The workspace runs any model of its shapes; in half precision it holds
 * the prepared weights of the last one it ran, and prepares them anew for
 * another. */
static const dm_model *cpu_params(void *ctx, const dm_model *model)
{
    cpu *cx = ctx;
    if (cx->model_serial != model->serial) {
        drop_weights(cx);
        cx->model_serial = model->serial;
    }
    return model;
}

static void cpu_destroy(void *ctx)
{
    if (!ctx) return;
    cpu *cx = ctx;
    dm_pool_destroy(cx->pool);
    drop_weights(cx);
    dm_host_free(cx->scratch);
    free(cx);
}

static dm_status cpu_begin(void *ctx)
{
    ((cpu *)ctx)->failure = DM_OK;
    return DM_OK;
}

static dm_status cpu_finish(void *ctx) { return ((cpu *)ctx)->failure; }

dm_status dm_cpu_backend_create(int threads, dm_ops *out)
{
    const dm_kernels *k;
    dm_status st = dm_kernels_require(&k);
    if (st) return st;
    cpu *cx = calloc(1, sizeof *cx);
    if (!cx) return dm_fail(DM_ERR_NOMEM, "out of memory for the CPU backend");
    cx->k = k;
    cx->threads = threads > 0 ? threads : 1;
    if (!(cx->pool = dm_pool_create(cx->threads))) {
        free(cx);
        return dm_fail(DM_ERR_NOMEM, "out of memory for a pool of %d threads", threads);
    }
    *out = (dm_ops){
        .name = "cpu",
        .ctx = cx,
        .conv3x3_scratch = cpu_conv3x3_scratch,
        .scan_scratch = cpu_scan_scratch,
        .reserve = cpu_reserve,
        .alloc = cpu_alloc,
        .release = cpu_release,
        .params = cpu_params,
        .held_bytes = cpu_held_bytes,
        .set_threads = cpu_set_threads,
        .set_precision = cpu_set_precision,
        .destroy = cpu_destroy,
        .begin = cpu_begin,
        .finish = cpu_finish,
        .input_pieces = 1,
        .group_bytes = CACHE_GROUP_BYTES,
        .synchronous = 1,
        .packed_weights = 1,
        .input = cpu_input,
        .output = cpu_output,
        .gemm = cpu_gemm,
        .conv3x3 = cpu_conv3x3,
        .dwconv3x3 = cpu_dwconv3x3,
        .layernorm = cpu_layernorm,
        .bias_act = cpu_bias_act,
        .sample = cpu_sample,
        .scan = cpu_scan,
        .avg_pool = cpu_avg_pool,
        .max_pool = cpu_max_pool,
        .resize = cpu_resize,
        .add = cpu_add,
        .concat = cpu_concat,
        .roi_align = cpu_roi_align,
        .host_run = cpu_host_run,
    };
    return DM_OK;
}
