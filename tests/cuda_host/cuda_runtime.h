/* cuda_runtime.h - a stand-in for the CUDA runtime that runs the backend's
 * unmodified .cu sources on the CPU, so a machine without a GPU can test
 * them (meson option cuda_host).  Only the subset the backend uses is here.
 *
 * Kernels run as ordinary C++: every launch is queued on its stream and
 * later runs block by block, each block's threads as coroutines so warp
 * shuffles and __syncthreads meet as on a GPU.  The build rewrites each
 * `kernel<<<grid, block, shmem, stream>>>(args)` into
 * `DM_HOST_LAUNCH(kernel, grid, block, shmem, stream)(args)`.
 *
 * The runtime behind it (runtime.cpp) checks what a GPU would not forgive
 * and makes what it would not promise visible: streams run as late as their
 * synchronization allows, fresh memory is NaN, every buffer ends in guard
 * bytes, kernel arguments must point into device memory of the stream's
 * device, and errors are sticky after a fault as on the real runtime. */
#ifndef DM_CUDA_HOST_RUNTIME_H
#define DM_CUDA_HOST_RUNTIME_H

#include "cuda_runtime_api.h"

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <tuple>

template <class T> cudaError_t cudaFuncGetAttributes(cudaFuncAttributes *attr, T *entry)
{
    return cudaFuncGetAttributes(attr, (const void *)entry);
}
/* The real runtime's typed allocators, for T ** other than void **. */
template <class T> cudaError_t cudaMalloc(T **ptr, size_t bytes) { return cudaMalloc((void **)ptr, bytes); }
template <class T> cudaError_t cudaMallocHost(T **ptr, size_t bytes) { return cudaMallocHost((void **)ptr, bytes); }

/* ------------------------------------------------------------ device side */

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
/* Blocks run one after another, so a function-level static is one block's
 * shared memory. */
#define __shared__ static

struct uint3 {
    unsigned x, y, z;
};
struct dim3 {
    unsigned x, y, z;
    dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

/* The running thread's coordinates, switched with every coroutine. */
extern uint3 threadIdx, blockIdx;
extern dim3 blockDim, gridDim;
static const int warpSize = 32;

namespace dm_host {

/* A barrier of the running thread's warp (or block) where every lane
 * publishes value and receives that of lane src_lane. */
uint64_t warp_exchange(unsigned mask, uint64_t value, int src_lane);
void block_barrier(void);
int lane_id(void);

template <class T> T shuffle(unsigned mask, T value, int src_lane)
{
    static_assert(sizeof(T) <= sizeof(uint64_t), "shuffles move at most 8 bytes");
    uint64_t bits = 0;
    __builtin_memcpy(&bits, &value, sizeof value);
    bits = warp_exchange(mask, bits, src_lane);
    T out;
    __builtin_memcpy(&out, &bits, sizeof out);
    return out;
}

} // namespace dm_host

template <class T> T __shfl_sync(unsigned mask, T v, int src, int width = 32)
{
    int lane = dm_host::lane_id();
    return dm_host::shuffle(mask, v, (lane & ~(width - 1)) + (src & (width - 1)));
}
template <class T> T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32)
{
    int lane = dm_host::lane_id(), src = lane ^ lane_mask;
    return dm_host::shuffle(mask, v, (src & ~(width - 1)) == (lane & ~(width - 1)) ? src : lane);
}
template <class T> T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32)
{
    int lane = dm_host::lane_id(), src = lane + (int)delta;
    return dm_host::shuffle(mask, v, (src & ~(width - 1)) == (lane & ~(width - 1)) ? src : lane);
}
template <class T> T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32)
{
    int lane = dm_host::lane_id(), src = lane - (int)delta;
    return dm_host::shuffle(mask, v, src >= (lane & ~(width - 1)) ? src : lane);
}
inline void __syncwarp(unsigned mask = 0xffffffffu) { (void)dm_host::warp_exchange(mask, 0, 0); }
inline void __syncthreads(void) { dm_host::block_barrier(); }

inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
template <class T> T __ldg(const T *p) { return *p; }
/* Threads of a block never run at the same time: plain read-modify-write. */
template <class T> T atomicAdd(T *p, T v)
{
    T old = *p;
    *p = old + v;
    return old;
}

/* ------------------------------------------------------------- launches */

namespace dm_host {

struct launch_config {
    dim3 grid, block;
    size_t shared_bytes;
    cudaStream_t stream;
};

/* Queue a kernel on cfg.stream: thread(record) runs one GPU thread with the
 * coordinates set; release(record) frees the arguments once it has run.
 * pointers[i] is argument i when it is a pointer, else not_a_pointer. */
extern const char not_a_pointer[1];
void enqueue_kernel(const char *name, const launch_config &cfg, void (*thread)(void *), void (*release)(void *),
                    void *record, const void *const *pointers, size_t count);

template <class T> const void *pointer_of(const T &) { return not_a_pointer; }
template <class T> const void *pointer_of(T *p) { return p; }

template <class... P> struct kernel_call {
    void (*kernel)(P...);
    std::tuple<P...> args;
    static void thread(void *self)
    {
        kernel_call *c = static_cast<kernel_call *>(self);
        std::apply(c->kernel, c->args);
    }
    static void release(void *self) { delete static_cast<kernel_call *>(self); }
};

template <class... P> struct launcher {
    void (*kernel)(P...);
    const char *name;
    launch_config cfg;
    void operator()(P... args) const
    {
        const void *pointers[] = {pointer_of(args)..., nullptr};
        kernel_call<P...> *call = new kernel_call<P...>{kernel, std::tuple<P...>(args...)};
        enqueue_kernel(name, cfg, kernel_call<P...>::thread, kernel_call<P...>::release, call, pointers,
                       sizeof...(P));
    }
};

template <class... P>
launcher<P...> launch(void (*kernel)(P...), const char *name, dim3 grid, dim3 block, size_t shared_bytes = 0,
                      cudaStream_t stream = nullptr)
{
    return launcher<P...>{kernel, name, launch_config{grid, block, shared_bytes, stream}};
}

} // namespace dm_host

#define DM_HOST_LAUNCH(kernel, ...) dm_host::launch(kernel, #kernel, __VA_ARGS__)

#endif
