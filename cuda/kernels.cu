/* kernels.cu - the forward pass's operators on the device.  Each mirrors its
 * scalar twin in simd/kernels_ref.c step by step (same order of operations,
 * same exact erf GELU, same softplus threshold) so the backends differ only
 * by the rounding of summation order and fused multiply-adds. */
#include "kernels.cuh"

#include <math.h>
#include <stdint.h>

static const int threads_per_block = 256;

/* Blocks for a grid-stride loop over total items. */
static unsigned grid_for(size_t total)
{
    size_t blocks = (total + threads_per_block - 1) / threads_per_block;
    if (blocks > ((size_t)1 << 20)) blocks = (size_t)1 << 20;
    return blocks ? (unsigned)blocks : 1u;
}

/* Keep the first launch on q that failed, by name: the runtime reports a
 * launch's configuration errors at once, through cudaGetLastError. */
static void launched(cu_queue *q, const char *kernel)
{
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess && q->error == cudaSuccess) {
        q->error = e;
        q->failed_kernel = kernel;
    }
}

/* A grid-stride loop of index type I over total items. */
#define FOR_EACH(I, i, total) \
    for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < (I)(total); i += (I)gridDim.x * blockDim.x)

/* Kernels whose elements each take divisions to find their coordinates
 * are templates over the index type I.  A GPU divides 64-bit integers in a
 * long software routine (nvcc guards each one with a run-time test for
 * operands that fit 32 bits), so a launch whose indices all stay below
 * 2^31 (the loop's last step stays below 2^32: grid_for caps the grid at
 * 2^28 threads) runs in 32-bit arithmetic throughout, and only a larger
 * one in 64.  Offsets into buffers other than the one indexed are computed
 * in size_t regardless. */
#define LAUNCH_INDEXED(q, kernel, total, ...)                                                              \
    do {                                                                                                 \
        size_t total_ = (total);                                                                         \
        if (total_ <= (size_t)INT32_MAX)                                                                 \
            kernel<uint32_t><<<grid_for(total_), threads_per_block, 0, (q)->stream>>>(__VA_ARGS__);      \
        else                                                                                             \
            kernel<size_t><<<grid_for(total_), threads_per_block, 0, (q)->stream>>>(__VA_ARGS__);        \
        launched(q, #kernel);                                                                            \
    } while (0)

__device__ static float activate(float x, dm_act act)
{
    switch (act) {
    case DM_ACT_GELU: return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
    case DM_ACT_SILU: return x / (1.0f + expf(-x));
    case DM_ACT_RELU: return x < 0.0f ? 0.0f : x; /* NaN stays NaN, as in PyTorch */
    case DM_ACT_NONE: break;
    }
    return x;
}

/* PyTorch's softplus with its default threshold of 20. */
__device__ static float softplus(float x) { return x > 20.0f ? x : log1pf(expf(x)); }

/* ---------------------------------------------------------------- layernorm */

__device__ static float warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* One warp per row: two passes (mean, then variance) as the reference. */
__global__ static void layernorm_kernel(const float *x, float *y, size_t rows, int c, const float *g,
                                        const float *b, dm_act act)
{
    size_t warps = (size_t)gridDim.x * blockDim.x / 32;
    int lane = threadIdx.x % 32;
    for (size_t r = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) / 32; r < rows; r += warps) {
        const float *xr = x + r * c;
        float *yr = y + r * c;
        float mean = 0.0f, var = 0.0f;
        for (int j = lane; j < c; j += 32) mean += xr[j];
        mean = warp_sum(mean) / (float)c;
        for (int j = lane; j < c; j += 32) var += (xr[j] - mean) * (xr[j] - mean);
        var = warp_sum(var) / (float)c;
        float inv = 1.0f / sqrtf(var + DM_LN_EPS);
        for (int j = lane; j < c; j += 32) yr[j] = activate((xr[j] - mean) * inv * g[j] + b[j], act);
    }
}

void cu_layernorm(cu_queue *q, const float *x, float *y, size_t rows, int c, const float *g, const float *b,
                  dm_act act)
{
    layernorm_kernel<<<grid_for(rows * 32), threads_per_block, 0, q->stream>>>(x, y, rows, c, g, b, act);
    launched(q, "layernorm_kernel");
}

/* ----------------------------------------------------------- elementwise */

template <class I> __global__ static void bias_act_kernel(float *y, size_t rows, int c, const float *bias, dm_act act)
{
    FOR_EACH(I, i, rows * c) y[i] = activate(y[i] + (bias ? bias[i % (I)c] : 0.0f), act);
}

void cu_bias_act(cu_queue *q, float *y, size_t rows, int c, const float *bias, dm_act act)
{
    LAUNCH_INDEXED(q, bias_act_kernel, rows * c, y, rows, c, bias, act);
}

/* ----------------------------------------------------------- convolutions */

/* Outputs of one thread: a run along a row, for one channel. */
#define DW_RUN 8

/* One thread per channel and run of DW_RUN outputs along a row: the 3 x
 * (DW_RUN + 2) inputs under the run are loaded once each rather than once
 * per tap, and the coordinates divided out once per run.  Neighbouring
 * threads take neighbouring channels, so every load is coalesced.  Each
 * output sums its taps in the reference's order (bias, then row by row,
 * left to right), taps outside the image skipped. */
template <class I>
__global__ static void dwconv3x3_kernel(const float *x, float *y, int n, int h, int w, int c, const float *w9,
                                        const float *bias, dm_act act)
{
    int runs = (w + DW_RUN - 1) / DW_RUN;
    I total = (I)n * h * runs * c;
    FOR_EACH(I, i, total) {
        int ch = (int)(i % c);
        I rest = i / c;
        int x0 = (int)(rest % runs) * DW_RUN;
        I row = rest / runs; /* image * h + oy */
        int oy = (int)(row % h);
        const float *img = x + (size_t)(row / h) * h * w * c + ch;
        float tap[9], acc[DW_RUN];
        for (int t = 0; t < 9; t++) tap[t] = w9[t * c + ch];
        for (int t = 0; t < DW_RUN; t++) acc[t] = bias ? bias[ch] : 0.0f;
        for (int ky = 0; ky < 3; ky++) {
            int iy = oy + ky - 1;
            if (iy < 0 || iy >= h) continue;
            const float *src = img + (size_t)iy * w * c;
            /* column x0 - 1 + j feeds output t = j - kx through tap kx */
            for (int j = 0; j < DW_RUN + 2; j++) {
                int ix = x0 - 1 + j;
                if (ix < 0 || ix >= w) continue;
                float v = src[(size_t)ix * c];
                for (int kx = 0; kx < 3; kx++) {
                    int t = j - kx;
                    if (t >= 0 && t < DW_RUN) acc[t] += v * tap[ky * 3 + kx];
                }
            }
        }
        float *out = y + (size_t)row * w * c + ch;
        for (int t = 0; t < DW_RUN && x0 + t < w; t++) out[(size_t)(x0 + t) * c] = activate(acc[t], act);
    }
}

void cu_dwconv3x3(cu_queue *q, const float *x, float *y, int n, int h, int w, int c, const float *w9,
                  const float *bias, dm_act act)
{
    size_t runs = ((size_t)w + DW_RUN - 1) / DW_RUN;
    LAUNCH_INDEXED(q, dwconv3x3_kernel, (size_t)n * h * runs * c, x, y, n, h, w, c, w9, bias, act);
}

/* Row p - p0 of cols: the 3x3 neighbourhood of output pixel p, tap-major,
 * zeros outside the image. */
template <class I>
__global__ static void im2col3x3_kernel(const float *x, float *cols, int h, int w, int cin, int stride, int pad,
                                        int oh, int ow, size_t p0, size_t p1)
{
    I row = 9 * (I)cin, per_image = (I)oh * ow;
    FOR_EACH(I, i, (p1 - p0) * row) {
        I band_pixel = i / row, rest = i - band_pixel * row;
        I p = (I)p0 + band_pixel, img = p / per_image, q = p - img * per_image;
        int tap = (int)(rest / cin), ch = (int)(rest % cin);
        int iy = (int)(q / ow) * stride + tap / 3 - pad, ix = (int)(q % ow) * stride + tap % 3 - pad;
        cols[i] = iy < 0 || iy >= h || ix < 0 || ix >= w ? 0.0f : x[(((size_t)img * h + iy) * w + ix) * cin + ch];
    }
}

void cu_im2col3x3(cu_queue *q, const float *x, float *cols, int h, int w, int cin, int stride, int pad, int oh,
                  int ow, size_t p0, size_t p1)
{
    /* the kernel divides column indices and pixel numbers */
    size_t columns = (p1 - p0) * 9 * cin;
    LAUNCH_INDEXED(q, im2col3x3_kernel, columns > p1 ? columns : p1, x, cols, h, w, cin, stride, pad, oh, ow, p0, p1);
}

/* ---------------------------------------------------------------- sampler */

/* One thread per output value: pixel p, channel ch of group g samples v at
 * (x + dx, y + dy) bilinearly; corners outside contribute 0. */
template <class I>
__global__ static void sample_kernel(const float *v, const float *off, float *u, int n, int h, int w, int c,
                                     int groups)
{
    int cg = c / groups;
    I pixels = (I)h * w;
    FOR_EACH(I, i, (I)n * pixels * c) {
        int ch = (int)(i % c), g = ch / cg;
        I pix = i / c, p = pix % pixels;
        const float *img = v + (size_t)(pix - p) * c;
        int py = (int)(p / w), px = (int)(p % w);
        float sx = (float)px + off[(size_t)pix * 2 * groups + 2 * g];
        float sy = (float)py + off[(size_t)pix * 2 * groups + 2 * g + 1];
        float out = 0.0f;
        /* Also rejects NaN offsets. */
        if (sy > -1.0f && sy < (float)h && sx > -1.0f && sx < (float)w) {
            float fy0 = floorf(sy), fx0 = floorf(sx);
            int y0 = (int)fy0, x0 = (int)fx0;
            float ly = sy - fy0, lx = sx - fx0;
            float wy[2] = {1.0f - ly, ly}, wx[2] = {1.0f - lx, lx};
            for (int dy = 0; dy < 2; dy++) {
                int yy = y0 + dy;
                if (yy < 0 || yy >= h) continue;
                for (int dx = 0; dx < 2; dx++) {
                    int xx = x0 + dx;
                    if (xx < 0 || xx >= w) continue;
                    out += wy[dy] * wx[dx] * img[((size_t)yy * w + xx) * c + ch];
                }
            }
        }
        u[i] = out;
    }
}

void cu_sample(cu_queue *q, const float *v, const float *off, float *u, int n, int h, int w, int c, int groups)
{
    LAUNCH_INDEXED(q, sample_kernel, (size_t)n * h * w * c, v, off, u, n, h, w, c, groups);
}

/* ------------------------------------------------------------------- scan */

/* The scan is linear in the state, h_t = a_t h_{t-1} + b_t, so a sequence
 * splits into chunks: each chunk is scanned from a zero state, keeping its
 * end state and the product of its a_t (pass 1); a short sequential pass per
 * channel turns those into every chunk's true start state (pass 2); each
 * chunk is then rescanned from its start, writing y (pass 3).  Threads of a
 * warp take neighbouring channels of one chunk, so loads are coalesced. */

/* Threads the chunk passes aim for: enough to fill a large GPU. */
static const size_t scan_target_threads = 1 << 17;
/* Shortest chunk worth its carry step. */
static const size_t scan_min_chunk = 8;

/* Chunks the scan of each image splits its sequence into. */
static size_t scan_chunks(int n, int channels, size_t steps)
{
    size_t lanes = (size_t)n * channels, chunks = (scan_target_threads + lanes - 1) / lanes;
    size_t most = (steps + scan_min_chunk - 1) / scan_min_chunk;
    if (chunks > most) chunks = most;
    if (chunks < 1) chunks = 1;
    size_t len = (steps + chunks - 1) / chunks;
    return (steps + len - 1) / len;
}

/* n x chunks x C lanes stay below both bounds scan_chunks applies, for any
 * batch up to max_n, since it only ever rounds the chunk count down. */
size_t cu_scan_carry_floats(int max_n, int channels, size_t steps)
{
    size_t lanes = (size_t)max_n * channels, most = (steps + scan_min_chunk - 1) / scan_min_chunk;
    size_t bound = scan_target_threads + lanes < lanes * most ? scan_target_threads + lanes : lanes * most;
    return 2 * bound;
}

/* Scan steps [t0, t1) of one image and channel from state h; writes y when
 * given, returns the end state and the decay product in *decay. */
__device__ static float scan_steps(const cu_scan_args a, size_t img, int c, size_t t0, size_t t1, float h,
                                   float *decay, float *y)
{
    size_t C = (size_t)a.channels;
    float prod = 1.0f, dt_bias = a.dt_bias[c], A = a.a[c], D = a.d[c];
    for (size_t t = t0; t < t1; t++) {
        size_t at = (img * a.steps + t) * C + c;
        const float *bc = a.bc + (img * a.steps + t) * a.bc_stride;
        float dt = softplus(a.delta[at] + dt_bias);
        float da = expf(dt * A);
        float u = a.u[at];
        h = da * h + dt * bc[0] * u;
        prod *= da;
        if (y) y[at] = h * bc[1] + u * D;
    }
    if (decay) *decay = prod;
    return h;
}

/* carry layout: [2][n][chunks][C]: end states (then start states), decays. */
__global__ static void scan_chunk_kernel(cu_scan_args a, size_t chunks, size_t len, float *carry)
{
    size_t C = (size_t)a.channels, lanes = (size_t)a.n * chunks * C;
    FOR_EACH(size_t, i, lanes) {
        size_t img = i / (chunks * C), k = i / C % chunks;
        size_t t0 = k * len, t1 = t0 + len < a.steps ? t0 + len : a.steps;
        carry[i] = scan_steps(a, img, (int)(i % C), t0, t1, 0.0f, &carry[lanes + i], NULL);
    }
}

__global__ static void scan_carry_kernel(cu_scan_args a, size_t chunks, float *carry)
{
    size_t C = (size_t)a.channels, lanes = (size_t)a.n * chunks * C;
    FOR_EACH(size_t, i, (size_t)a.n * C) {
        size_t at = i / C * chunks * C + i % C;
        float h = 0.0f;
        for (size_t k = 0; k < chunks; k++, at += C) {
            float end = carry[at];
            carry[at] = h;
            h = carry[lanes + at] * h + end;
        }
    }
}

__global__ static void scan_output_kernel(cu_scan_args a, size_t chunks, size_t len, const float *carry, float *y)
{
    size_t C = (size_t)a.channels;
    FOR_EACH(size_t, i, (size_t)a.n * chunks * C) {
        size_t img = i / (chunks * C), k = i / C % chunks;
        size_t t0 = k * len, t1 = t0 + len < a.steps ? t0 + len : a.steps;
        scan_steps(a, img, (int)(i % C), t0, t1, carry[i], NULL, y);
    }
}

void cu_scan(cu_queue *q, const cu_scan_args *args, float *carry, float *y)
{
    size_t chunks = scan_chunks(args->n, args->channels, args->steps);
    size_t len = (args->steps + chunks - 1) / chunks, lanes = (size_t)args->n * chunks * args->channels;
    scan_chunk_kernel<<<grid_for(lanes), threads_per_block, 0, q->stream>>>(*args, chunks, len, carry);
    launched(q, "scan_chunk_kernel");
    scan_carry_kernel<<<grid_for((size_t)args->n * args->channels), threads_per_block, 0, q->stream>>>(*args, chunks,
                                                                                                      carry);
    launched(q, "scan_carry_kernel");
    scan_output_kernel<<<grid_for(lanes), threads_per_block, 0, q->stream>>>(*args, chunks, len, carry, y);
    launched(q, "scan_output_kernel");
}

/* ---------------------------------------------------------------- layouts */

/* Each image's rows x cols matrix transposed, through a shared tile so
 * that both the reads and the writes of a warp are coalesced (a naive
 * transpose strides one of the two by a whole row).  Blocks of 32 x 8
 * threads each move a 32 x 32 tile; the grid's y and z loop over row tiles
 * and images beyond the hardware's 65535. */
#define TILE 32
#define TILE_ROWS 8
static const unsigned max_grid_yz = 65535;

__global__ static void transpose_kernel(const float *in, float *out, int n, size_t rows, size_t cols)
{
    __shared__ float tile[TILE][TILE + 1]; /* + 1: columns fall in distinct banks */
    size_t row_tiles = (rows + TILE - 1) / TILE, c0 = (size_t)blockIdx.x * TILE;
    for (size_t img = blockIdx.z; img < (size_t)n; img += gridDim.z)
        for (size_t rt = blockIdx.y; rt < row_tiles; rt += gridDim.y) {
            const float *from = in + img * rows * cols;
            float *to = out + img * rows * cols;
            size_t r0 = rt * TILE;
            for (unsigned k = threadIdx.y; k < TILE; k += TILE_ROWS) {
                size_t r = r0 + k, c = c0 + threadIdx.x;
                if (r < rows && c < cols) tile[k][threadIdx.x] = from[r * cols + c];
            }
            __syncthreads();
            for (unsigned k = threadIdx.y; k < TILE; k += TILE_ROWS) {
                size_t c = c0 + k, r = r0 + threadIdx.x;
                if (r < rows && c < cols) to[c * rows + r] = tile[threadIdx.x][k];
            }
            __syncthreads(); /* the tile is refilled next */
        }
}

static void transpose(cu_queue *q, const float *in, float *out, int n, size_t rows, size_t cols)
{
    if (n < 1 || !rows || !cols) return;
    size_t row_tiles = (rows + TILE - 1) / TILE;
    dim3 grid((unsigned)((cols + TILE - 1) / TILE), (unsigned)(row_tiles < max_grid_yz ? row_tiles : max_grid_yz),
              (unsigned)n < max_grid_yz ? (unsigned)n : max_grid_yz);
    transpose_kernel<<<grid, dim3(TILE, TILE_ROWS), 0, q->stream>>>(in, out, n, rows, cols);
    launched(q, "transpose_kernel");
}

void cu_to_nhwc(cu_queue *q, const float *in, float *x, int n, size_t hw, int c) { transpose(q, in, x, n, c, hw); }

void cu_to_nchw(cu_queue *q, const float *x, float *out, int n, size_t hw, int c) { transpose(q, x, out, n, hw, c); }

/* ------------------------------------------------- pooling and resizing */

/* One thread per output value; the bins and the order of the sum are the
 * scalar reference's. */
template <class I>
__global__ static void avg_pool_kernel(const float *x, int n, int h, int w, int c, float *y, int oh, int ow)
{
    FOR_EACH(I, i, (I)n * oh * ow * c) {
        I pix = i / c, img = pix / ((I)oh * ow);
        int ch = (int)(i % c), oy = (int)(pix / ow % oh), ox = (int)(pix % ow), y0, y1, x0, x1;
        dm_adaptive_bin(oy, h, oh, &y0, &y1);
        dm_adaptive_bin(ox, w, ow, &x0, &x1);
        const float *in = x + (size_t)img * h * w * c + ch;
        float sum = 0.0f;
        for (int iy = y0; iy < y1; iy++)
            for (int ix = x0; ix < x1; ix++) sum += in[((size_t)iy * w + ix) * c];
        y[i] = sum / (float)((y1 - y0) * (x1 - x0));
    }
}

void cu_avg_pool(cu_queue *q, const float *x, int n, int h, int w, int c, float *y, int oh, int ow)
{
    LAUNCH_INDEXED(q, avg_pool_kernel, (size_t)n * oh * ow * c, x, n, h, w, c, y, oh, ow);
}

template <class I>
__global__ static void max_pool_kernel(const float *x, int n, int h, int w, int c, int k, int stride, int pad,
                                       float *y, int oh, int ow)
{
    FOR_EACH(I, i, (I)n * oh * ow * c) {
        I pix = i / c, img = pix / ((I)oh * ow);
        int ch = (int)(i % c), oy = (int)(pix / ow % oh), ox = (int)(pix % ow);
        const float *in = x + (size_t)img * h * w * c + ch;
        float best = -INFINITY;
        for (int ky = 0; ky < k; ky++)
            for (int kx = 0; kx < k; kx++) {
                int iy = oy * stride + ky - pad, ix = ox * stride + kx - pad;
                if (iy >= 0 && iy < h && ix >= 0 && ix < w) best = fmaxf(best, in[((size_t)iy * w + ix) * c]);
            }
        y[i] = best;
    }
}

void cu_max_pool(cu_queue *q, const float *x, int n, int h, int w, int c, int k, int stride, int pad, float *y,
                 int oh, int ow)
{
    LAUNCH_INDEXED(q, max_pool_kernel, (size_t)n * oh * ow * c, x, n, h, w, c, k, stride, pad, y, oh, ow);
}

template <class I>
__global__ static void resize_kernel(const float *x, int n, int h, int w, int c, dm_resize mode, float *y, int oh,
                                     int ow)
{
    FOR_EACH(I, i, (I)n * oh * ow * c) {
        I pix = i / c, img = pix / ((I)oh * ow);
        int ch = (int)(i % c), oy = (int)(pix / ow % oh), ox = (int)(pix % ow);
        const float *in = x + (size_t)img * h * w * c + ch;
        if (mode == DM_RESIZE_NEAREST) {
            y[i] = in[((size_t)dm_nearest_source(oy, h, oh) * w + dm_nearest_source(ox, w, ow)) * c];
            continue;
        }
        float sy = dm_bilinear_source(oy, h, oh), sx = dm_bilinear_source(ox, w, ow);
        int y0 = (int)sy, x0 = (int)sx, y1 = y0 + (y0 < h - 1), x1 = x0 + (x0 < w - 1);
        float ly = sy - (float)y0, lx = sx - (float)x0;
        float top = (1.0f - lx) * in[((size_t)y0 * w + x0) * c] + lx * in[((size_t)y0 * w + x1) * c];
        float bottom = (1.0f - lx) * in[((size_t)y1 * w + x0) * c] + lx * in[((size_t)y1 * w + x1) * c];
        y[i] = (1.0f - ly) * top + ly * bottom;
    }
}

void cu_resize(cu_queue *q, const float *x, int n, int h, int w, int c, dm_resize mode, float *y, int oh, int ow)
{
    LAUNCH_INDEXED(q, resize_kernel, (size_t)n * oh * ow * c, x, n, h, w, c, mode, y, oh, ow);
}

/* ---------------------------------------------------------- elementwise */

__global__ static void add_kernel(const float *a, const float *b, float *y, size_t count, dm_act act)
{
    FOR_EACH(size_t, i, count) y[i] = activate(a[i] + b[i], act);
}

void cu_add(cu_queue *q, const float *a, const float *b, float *y, size_t count, dm_act act)
{
    add_kernel<<<grid_for(count), threads_per_block, 0, q->stream>>>(a, b, y, count, act);
    launched(q, "add_kernel");
}

template <class I> __global__ static void concat_kernel(const float *x, size_t pixels, int xc, float *y, int yc, int c0)
{
    FOR_EACH(I, i, pixels * xc) {
        I p = i / xc;
        y[(size_t)p * yc + c0 + (i - p * xc)] = x[i];
    }
}

void cu_concat(cu_queue *q, const float *x, size_t pixels, int xc, float *y, int yc, int c0)
{
    LAUNCH_INDEXED(q, concat_kernel, pixels * xc, x, pixels, xc, y, yc, c0);
}

/* ---------------------------------------------------------------- RoIAlign */

/* One thread per output value: RoI r's bin (py, px), channel ch, summed
 * over the bin's samples in the reference's order. */
template <class I>
__global__ static void roi_align_kernel(dm_roi_levels levels, const float *rois, int n, int out_h, int out_w, int c,
                                        float *y)
{
    I bins = (I)out_h * out_w;
    FOR_EACH(I, i, (I)n * bins * c) {
        I bin = i / c, r = bin / bins;
        int ch = (int)(i - bin * c), p = (int)(bin - r * bins), py = p / out_w, px = p % out_w;
        const float *roi = rois + 5 * (size_t)r;
        int l = (int)roi[0];
        dm_view f = levels.level[l];
        dm_roi_grid g = dm_roi_grid_of(roi + 1, levels.scale[l], out_h, out_w);
        const float *feat = f.data + ch;
        float acc = 0.0f;
        for (int iy = 0; iy < g.grid_h; iy++) {
            float sy = dm_roi_sample_y(&g, py, iy);
            for (int ix = 0; ix < g.grid_w; ix++) {
                dm_roi_sample s;
                if (!dm_roi_sample_at(f.h, f.w, sy, dm_roi_sample_x(&g, px, ix), &s)) continue;
                acc += s.w[0] * feat[s.pos[0] * c] + s.w[1] * feat[s.pos[1] * c] + s.w[2] * feat[s.pos[2] * c] +
                       s.w[3] * feat[s.pos[3] * c];
            }
        }
        y[i] = acc / g.count;
    }
}

void cu_roi_align(cu_queue *q, const dm_roi_levels *levels, const float *rois, int n, int out_h, int out_w, int c,
                  float *y)
{
    LAUNCH_INDEXED(q, roi_align_kernel, (size_t)n * out_h * out_w * c, *levels, rois, n, out_h, out_w, c, y);
}

cudaError_t cu_check_kernel_image(void)
{
    cudaFuncAttributes attributes;
    return cudaFuncGetAttributes(&attributes, add_kernel);
}
