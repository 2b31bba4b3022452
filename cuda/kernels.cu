/* kernels.cu - the forward pass's operators on the device.  Each mirrors its
 * scalar twin in simd/kernels_ref.c step by step (same order of operations,
 * same exact erf GELU, same softplus threshold) so the backends differ only
 * by the rounding of summation order and fused multiply-adds. */
#include "kernels.cuh"

#include <math.h>

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

#define FOR_EACH(i, total) \
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (total); i += (size_t)gridDim.x * blockDim.x)

__device__ static float activate(float x, dm_act act)
{
    switch (act) {
    case DM_ACT_GELU: return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
    case DM_ACT_SILU: return x / (1.0f + expf(-x));
    case DM_ACT_RELU: return x > 0.0f ? x : 0.0f;
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

__global__ static void bias_act_kernel(float *y, size_t rows, int c, const float *bias, dm_act act)
{
    FOR_EACH(i, rows * c) y[i] = activate(y[i] + (bias ? bias[i % c] : 0.0f), act);
}

void cu_bias_act(cu_queue *q, float *y, size_t rows, int c, const float *bias, dm_act act)
{
    bias_act_kernel<<<grid_for(rows * c), threads_per_block, 0, q->stream>>>(y, rows, c, bias, act);
    launched(q, "bias_act_kernel");
}

/* ----------------------------------------------------------- convolutions */

/* One thread per output value; neighbouring threads take neighbouring
 * channels, so every load is coalesced. */
__global__ static void dwconv3x3_kernel(const float *x, float *y, int n, int h, int w, int c, const float *w9,
                                        const float *bias, dm_act act)
{
    size_t total = (size_t)n * h * w * c;
    FOR_EACH(i, total) {
        int ch = (int)(i % c);
        size_t pix = i / c;
        int ox = (int)(pix % w), oy = (int)(pix / w % h);
        const float *img = x + (pix / ((size_t)h * w)) * h * w * c;
        float out = bias ? bias[ch] : 0.0f;
        for (int ky = 0; ky < 3; ky++) {
            int iy = oy + ky - 1;
            if (iy < 0 || iy >= h) continue;
            for (int kx = 0; kx < 3; kx++) {
                int ix = ox + kx - 1;
                if (ix < 0 || ix >= w) continue;
                out += img[((size_t)iy * w + ix) * c + ch] * w9[(ky * 3 + kx) * c + ch];
            }
        }
        y[i] = activate(out, act);
    }
}

void cu_dwconv3x3(cu_queue *q, const float *x, float *y, int n, int h, int w, int c, const float *w9,
                  const float *bias, dm_act act)
{
    dwconv3x3_kernel<<<grid_for((size_t)n * h * w * c), threads_per_block, 0, q->stream>>>(x, y, n, h, w, c, w9,
                                                                                            bias, act);
    launched(q, "dwconv3x3_kernel");
}

/* Row p - p0 of cols: the 3x3 neighbourhood of output pixel p, tap-major,
 * zeros outside the image. */
__global__ static void im2col3x3_kernel(const float *x, float *cols, int h, int w, int cin, int stride, int pad,
                                        int oh, int ow, size_t p0, size_t p1)
{
    size_t row = 9 * (size_t)cin, per_image = (size_t)oh * ow;
    FOR_EACH(i, (p1 - p0) * row) {
        size_t p = p0 + i / row, img = p / per_image, q = p % per_image;
        int tap = (int)(i % row / cin), ch = (int)(i % cin);
        int iy = (int)(q / ow) * stride + tap / 3 - pad, ix = (int)(q % ow) * stride + tap % 3 - pad;
        cols[i] = iy < 0 || iy >= h || ix < 0 || ix >= w ? 0.0f : x[((img * h + iy) * w + ix) * cin + ch];
    }
}

void cu_im2col3x3(cu_queue *q, const float *x, float *cols, int h, int w, int cin, int stride, int pad, int oh,
                  int ow, size_t p0, size_t p1)
{
    im2col3x3_kernel<<<grid_for((p1 - p0) * 9 * cin), threads_per_block, 0, q->stream>>>(x, cols, h, w, cin,
                                                                                          stride, pad, oh, ow, p0, p1);
    launched(q, "im2col3x3_kernel");
}

/* ---------------------------------------------------------------- sampler */

/* One thread per output value: pixel p, channel ch of group g samples v at
 * (x + dx, y + dy) bilinearly; corners outside contribute 0. */
__global__ static void sample_kernel(const float *v, const float *off, float *u, int n, int h, int w, int c,
                                     int groups)
{
    int cg = c / groups;
    size_t pixels = (size_t)h * w;
    FOR_EACH(i, (size_t)n * pixels * c) {
        int ch = (int)(i % c), g = ch / cg;
        size_t pix = i / c, p = pix % pixels;
        const float *img = v + (pix - p) * c;
        int py = (int)(p / w), px = (int)(p % w);
        float sx = (float)px + off[pix * 2 * groups + 2 * g];
        float sy = (float)py + off[pix * 2 * groups + 2 * g + 1];
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
    sample_kernel<<<grid_for((size_t)n * h * w * c), threads_per_block, 0, q->stream>>>(v, off, u, n, h, w, c,
                                                                                         groups);
    launched(q, "sample_kernel");
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
    FOR_EACH(i, lanes) {
        size_t img = i / (chunks * C), k = i / C % chunks;
        size_t t0 = k * len, t1 = t0 + len < a.steps ? t0 + len : a.steps;
        carry[i] = scan_steps(a, img, (int)(i % C), t0, t1, 0.0f, &carry[lanes + i], NULL);
    }
}

__global__ static void scan_carry_kernel(cu_scan_args a, size_t chunks, float *carry)
{
    size_t C = (size_t)a.channels, lanes = (size_t)a.n * chunks * C;
    FOR_EACH(i, (size_t)a.n * C) {
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
    FOR_EACH(i, (size_t)a.n * chunks * C) {
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

__global__ static void to_nhwc_kernel(const float *in, float *x, int n, size_t hw, int c)
{
    FOR_EACH(i, (size_t)n * hw * c) {
        size_t img = i / (hw * c), p = i / c % hw, ch = i % c;
        x[i] = in[(img * c + ch) * hw + p];
    }
}

__global__ static void to_nchw_kernel(const float *x, float *out, int n, size_t hw, int c)
{
    FOR_EACH(i, (size_t)n * c * hw) {
        size_t img = i / (hw * c), ch = i / hw % c, p = i % hw;
        out[i] = x[(img * hw + p) * c + ch];
    }
}

void cu_to_nhwc(cu_queue *q, const float *in, float *x, int n, size_t hw, int c)
{
    to_nhwc_kernel<<<grid_for((size_t)n * hw * c), threads_per_block, 0, q->stream>>>(in, x, n, hw, c);
    launched(q, "to_nhwc_kernel");
}

void cu_to_nchw(cu_queue *q, const float *x, float *out, int n, size_t hw, int c)
{
    to_nchw_kernel<<<grid_for((size_t)n * hw * c), threads_per_block, 0, q->stream>>>(x, out, n, hw, c);
    launched(q, "to_nchw_kernel");
}

/* ------------------------------------------------- pooling and resizing */

/* One thread per output value; the bins and the order of the sum are the
 * scalar reference's. */
__global__ static void avg_pool_kernel(const float *x, int n, int h, int w, int c, float *y, int oh, int ow)
{
    FOR_EACH(i, (size_t)n * oh * ow * c) {
        size_t pix = i / c, img = pix / ((size_t)oh * ow);
        int ch = (int)(i % c), oy = (int)(pix / ow % oh), ox = (int)(pix % ow), y0, y1, x0, x1;
        dm_adaptive_bin(oy, h, oh, &y0, &y1);
        dm_adaptive_bin(ox, w, ow, &x0, &x1);
        const float *in = x + img * h * w * c + ch;
        float sum = 0.0f;
        for (int iy = y0; iy < y1; iy++)
            for (int ix = x0; ix < x1; ix++) sum += in[((size_t)iy * w + ix) * c];
        y[i] = sum / (float)((y1 - y0) * (x1 - x0));
    }
}

void cu_avg_pool(cu_queue *q, const float *x, int n, int h, int w, int c, float *y, int oh, int ow)
{
    avg_pool_kernel<<<grid_for((size_t)n * oh * ow * c), threads_per_block, 0, q->stream>>>(x, n, h, w, c, y, oh,
                                                                                             ow);
    launched(q, "avg_pool_kernel");
}

__global__ static void max_pool_kernel(const float *x, int n, int h, int w, int c, int k, int stride, int pad,
                                       float *y, int oh, int ow)
{
    FOR_EACH(i, (size_t)n * oh * ow * c) {
        size_t pix = i / c, img = pix / ((size_t)oh * ow);
        int ch = (int)(i % c), oy = (int)(pix / ow % oh), ox = (int)(pix % ow);
        const float *in = x + img * h * w * c + ch;
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
    max_pool_kernel<<<grid_for((size_t)n * oh * ow * c), threads_per_block, 0, q->stream>>>(x, n, h, w, c, k,
                                                                                             stride, pad, y, oh, ow);
    launched(q, "max_pool_kernel");
}

__global__ static void resize_kernel(const float *x, int n, int h, int w, int c, dm_resize mode, float *y, int oh,
                                     int ow)
{
    FOR_EACH(i, (size_t)n * oh * ow * c) {
        size_t pix = i / c, img = pix / ((size_t)oh * ow);
        int ch = (int)(i % c), oy = (int)(pix / ow % oh), ox = (int)(pix % ow);
        const float *in = x + img * h * w * c + ch;
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
    resize_kernel<<<grid_for((size_t)n * oh * ow * c), threads_per_block, 0, q->stream>>>(x, n, h, w, c, mode, y,
                                                                                           oh, ow);
    launched(q, "resize_kernel");
}

/* ---------------------------------------------------------- elementwise */

__global__ static void add_kernel(const float *a, const float *b, float *y, size_t count, dm_act act)
{
    FOR_EACH(i, count) y[i] = activate(a[i] + b[i], act);
}

void cu_add(cu_queue *q, const float *a, const float *b, float *y, size_t count, dm_act act)
{
    add_kernel<<<grid_for(count), threads_per_block, 0, q->stream>>>(a, b, y, count, act);
    launched(q, "add_kernel");
}

__global__ static void concat_kernel(const float *x, size_t pixels, int xc, float *y, int yc, int c0)
{
    FOR_EACH(i, pixels * xc) y[i / xc * yc + c0 + i % xc] = x[i];
}

void cu_concat(cu_queue *q, const float *x, size_t pixels, int xc, float *y, int yc, int c0)
{
    concat_kernel<<<grid_for(pixels * xc), threads_per_block, 0, q->stream>>>(x, pixels, xc, y, yc, c0);
    launched(q, "concat_kernel");
}

/* ---------------------------------------------------------------- RoIAlign */

/* One thread per output value: RoI r's bin (py, px), channel ch, summed
 * over the bin's samples in the reference's order. */
__global__ static void roi_align_kernel(dm_roi_levels levels, const float *rois, int n, int out_h, int out_w, int c,
                                        float *y)
{
    size_t bins = (size_t)out_h * out_w;
    FOR_EACH(i, (size_t)n * bins * c) {
        size_t bin = i / c, r = bin / bins;
        int ch = (int)(i % c), p = (int)(bin % bins), py = p / out_w, px = p % out_w;
        const float *roi = rois + 5 * r;
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
    roi_align_kernel<<<grid_for((size_t)n * out_h * out_w * c), threads_per_block, 0, q->stream>>>(
        *levels, rois, n, out_h, out_w, c, y);
    launched(q, "roi_align_kernel");
}

cudaError_t cu_check_kernel_image(void)
{
    cudaFuncAttributes attributes;
    return cudaFuncGetAttributes(&attributes, add_kernel);
}
