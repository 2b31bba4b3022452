/* runtime.cpp - the host harness's CUDA runtime and cuBLAS (cuda_runtime.h,
 * cublas_v2.h): simulated devices whose memory is host memory, streams
 * whose work is queued and run as late as their synchronization allows, and
 * kernels run thread by thread.  Meant for one host thread at a time.
 *
 * What it makes visible:
 * - ordering, chosen by DM_CUDA_HOST_ORDER: "lazy" (the default) runs
 *   queued work only when a synchronization needs it (a stream or event
 *   sync, a wait on an event, a synchronous copy, cudaFree), so a consumer
 *   missing its wait reads buffers not yet written; "others-first" runs at
 *   each synchronization every other stream of the device before the one
 *   waited for, so a producer the waited-for stream forgot to wait for runs
 *   too late; "eager" runs each operation when it is queued (no overlap);
 * - fresh device and pinned memory is NaN, and guard bytes after every
 *   allocation are checked at each synchronization and on free;
 * - kernel and cuBLAS operands must lie in device memory of the device the
 *   stream belongs to; a violation is a fault: reported on stderr, and, as
 *   on a GPU, every later call fails with the same (sticky) error;
 * - failed calls set the per-thread last error that cudaGetLastError
 *   returns and clears, as the real runtime does;
 * - a device of a compute capability the build has no code for fails every
 *   launch with cudaErrorNoKernelImageForDevice. */
#include "cublasLt.h"
#include "cublas_v2.h"
#include "cuda_host.h"
#include "cuda_runtime.h"

#include <cblas.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <setjmp.h>
#include <sys/mman.h>
#include <ucontext.h>

#include <algorithm>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#define HOST_ASAN 1
#else
#define HOST_ASAN 0
#endif

uint3 threadIdx, blockIdx;
dim3 blockDim, gridDim;

namespace {

const size_t guard_bytes = 64;
const unsigned char guard_fill = 0xA5;
const int max_devices = 8;

/* -------------------------------------------------------------- errors */

thread_local cudaError_t last_error = cudaSuccess;
cudaError_t sticky_error = cudaSuccess; /* a fault: the context is lost */

cudaError_t fail(cudaError_t e)
{
    last_error = e;
    return e;
}

/* A fault a GPU would turn into an error at some later call; reported now,
 * with what caused it. */
void fault(cudaError_t e, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "cuda host harness: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    if (sticky_error == cudaSuccess) sticky_error = e;
    last_error = sticky_error;
}

/* ------------------------------------------------------------- devices */

struct device {
    int cc;
    size_t bytes, used;
};
int device_count = 2;
device devices[max_devices] = {{90, (size_t)4 << 30, 0}, {86, (size_t)4 << 30, 0}};
thread_local int current_device = 0;
long fail_countdown = 0; /* dm_cuda_host_fail_allocation */

/* Whether the build's code (DM_CUDA_ARCHS, the PTX target last) runs on a
 * device of compute capability cc: machine code for X.Y runs on X.Z with
 * Z >= Y; PTX for X.Y on anything from X.Y up. */
bool build_runs_on(int cc)
{
    const char *p = DM_CUDA_ARCHS;
    int arch = 0, newest = 0;
    char *end;
    while (*p && (arch = (int)strtol(p, &end, 10)) > 0) {
        if (arch / 10 == cc / 10 && arch <= cc) return true;
        newest = arch;
        p = end + strspn(end, " ,;");
    }
    return newest && cc >= newest;
}

/* -------------------------------------------------------------- memory */

struct allocation {
    size_t bytes;
    int device; /* -1: pinned host memory */
};
std::map<const char *, allocation> allocations;

/* The allocation [p, p + bytes) lies in, or nullptr. */
const std::pair<const char *const, allocation> *find_allocation(const void *p, size_t bytes)
{
    const char *c = (const char *)p;
    auto it = allocations.upper_bound(c);
    if (it == allocations.begin()) return nullptr;
    --it;
    if (c < it->first || c + bytes > it->first + it->second.bytes) return nullptr;
    return &*it;
}

bool is_device(const void *p, size_t bytes, int device)
{
    auto *a = find_allocation(p, bytes);
    return a && a->second.device == device;
}

bool injected_failure()
{
    return fail_countdown > 0 && --fail_countdown == 0;
}

cudaError_t allocate(void **ptr, size_t bytes, int device)
{
    *ptr = nullptr;
    if (sticky_error) return sticky_error;
    if (injected_failure()) return fail(cudaErrorMemoryAllocation);
    if (device >= 0 && bytes > devices[device].bytes - devices[device].used) return fail(cudaErrorMemoryAllocation);
    /* 256-byte aligned, as the runtime's allocations are (cublasLt's
     * algorithms may rely on it) */
    void *block = nullptr;
    if (posix_memalign(&block, 256, bytes + guard_bytes)) return fail(cudaErrorMemoryAllocation);
    char *p = (char *)block;
    memset(p, 0xFF, bytes); /* all-ones floats are NaN */
    memset(p + bytes, guard_fill, guard_bytes);
    allocations[p] = allocation{bytes, device};
    if (device >= 0) devices[device].used += bytes;
    *ptr = p;
    return cudaSuccess;
}

bool guard_intact(const char *p, const allocation &a)
{
    for (size_t i = 0; i < guard_bytes; i++)
        if ((unsigned char)p[a.bytes + i] != guard_fill) {
            fault(cudaErrorIllegalAddress, "%s allocation of %zu bytes at %p was written past its end (byte %zu "
                  "after it)", a.device >= 0 ? "device" : "pinned", a.bytes, (const void *)p, i);
            return false;
        }
    return true;
}

/* After a fault, the first one found, memory is not checked again. */
void check_guards()
{
    if (sticky_error) return;
    for (auto &a : allocations)
        if (!guard_intact(a.first, a.second)) return;
}

/* ------------------------------------------------------------- streams */

struct operation {
    uint64_t seq;
    std::function<void()> run;          /* empty for an event record or a wait */
    cudaStream_t wait_stream = nullptr; /* a wait: until that stream ran wait_seq */
    uint64_t wait_seq = 0;
};

} // namespace

struct CUstream_st {
    int device;
    bool blocking; /* ordered with the legacy default stream */
    std::deque<operation> queue;
    uint64_t queued, done;
};

struct CUevent_st {
    cudaStream_t stream; /* of the last record, or nullptr */
    uint64_t seq;
};

namespace {

std::vector<cudaStream_t> streams; /* the legacy ones, then every live stream */
std::vector<cudaEvent_t> events;
enum { LAZY, OTHERS_FIRST, EAGER } order = LAZY;

cudaStream_t legacy_stream(int device)
{
    static CUstream_st legacy[max_devices];
    static bool made = false;
    if (!made) {
        made = true;
        const char *name = getenv("DM_CUDA_HOST_ORDER");
        if (name && strcmp(name, "eager") == 0) order = EAGER;
        if (name && strcmp(name, "others-first") == 0) order = OTHERS_FIRST;
        for (int d = 0; d < max_devices; d++) {
            legacy[d].device = d;
            legacy[d].blocking = true;
            streams.push_back(&legacy[d]);
        }
    }
    return &legacy[device];
}

cudaStream_t resolve(cudaStream_t s) { return s ? s : legacy_stream(current_device); }

/* Run stream s's queued work up to operation seq, first running whatever
 * its waits need; after a fault, queued work is dropped. */
void run_until(cudaStream_t s, uint64_t seq)
{
    while (s->done < seq && !s->queue.empty()) {
        operation op = std::move(s->queue.front());
        s->queue.pop_front();
        if (op.wait_stream) run_until(op.wait_stream, op.wait_seq);
        if (op.run && !sticky_error) op.run();
        s->done = op.seq;
    }
}

void run_all(cudaStream_t s) { run_until(s, s->queued); }

/* The host waits for operation seq of stream s. */
void synchronize(cudaStream_t s, uint64_t seq)
{
    if (order == OTHERS_FIRST)
        for (cudaStream_t other : streams)
            if (other != s && other->device == s->device) run_all(other);
    run_until(s, seq);
    check_guards();
}

/* Later streams first, so independent streams run in the reverse of the
 * order their work was probably meant. */
void run_device(int device)
{
    for (size_t i = streams.size(); i-- > 0;)
        if (streams[i]->device == device) run_all(streams[i]);
    check_guards();
}

uint64_t enqueue(cudaStream_t s, std::function<void()> run, cudaStream_t wait_stream = nullptr,
                 uint64_t wait_seq = 0)
{
    /* The legacy stream and blocking streams wait for each other. */
    cudaStream_t legacy = legacy_stream(s->device);
    if (s != legacy && s->blocking && legacy->queued > legacy->done)
        s->queue.push_back(operation{++s->queued, nullptr, legacy, legacy->queued});
    if (s == legacy)
        for (cudaStream_t other : streams)
            if (other != s && other->device == s->device && other->blocking && other->queued > other->done)
                s->queue.push_back(operation{++s->queued, nullptr, other, other->queued});
    s->queue.push_back(operation{++s->queued, std::move(run), wait_stream, wait_seq});
    if (order == EAGER) run_all(s);
    return s->queued;
}

cudaError_t check_stream(cudaStream_t s)
{
    if (sticky_error) return sticky_error;
    for (cudaStream_t known : streams)
        if (known == s) return cudaSuccess;
    return fail(cudaErrorInvalidResourceHandle);
}

/* ------------------------------------------------------------ kernels */

/* One GPU thread as a coroutine.  A fiber is started once, on its own
 * stack, and then runs one thread after another: switches between fibers
 * and the scheduler are _setjmp/_longjmp pairs, which unlike swapcontext
 * make no system call. */
enum fiber_state { READY, AT_WARP_BARRIER, AT_BLOCK_BARRIER, DONE };
const size_t fiber_stack_bytes = HOST_ASAN ? (size_t)256 << 10 : (size_t)64 << 10;
struct fiber {
    jmp_buf jump;
    char *stack;
    fiber_state state;
    uint3 index;
    int linear;
    unsigned generation; /* warp exchanges done, to pick a slot */
    ~fiber() { munmap(stack, fiber_stack_bytes); }
};

std::vector<std::unique_ptr<fiber>> fibers;
std::vector<uint64_t> warp_slots; /* [2][threads of the block] */
fiber *running = nullptr;          /* nullptr: threads run as plain calls */
bool barrier_seen;
jmp_buf scheduler;
#if HOST_ASAN
const void *scheduler_stack = nullptr;
size_t scheduler_stack_bytes = 0;
#endif
const char *kernel_name;
void (*kernel_thread)(void *);
void *kernel_record;

void switch_to_fiber(fiber *f)
{
    running = f;
    threadIdx = f->index;
#if HOST_ASAN
    void *fake = nullptr;
    __sanitizer_start_switch_fiber(&fake, f->stack, fiber_stack_bytes);
#endif
    if (!_setjmp(scheduler)) _longjmp(f->jump, 1);
#if HOST_ASAN
    __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
    running = nullptr;
}

void yield_to_scheduler()
{
    fiber *f = running;
#if HOST_ASAN
    void *fake = nullptr;
    __sanitizer_start_switch_fiber(&fake, scheduler_stack, scheduler_stack_bytes);
#endif
    if (!_setjmp(f->jump)) _longjmp(scheduler, 1);
#if HOST_ASAN
    __sanitizer_finish_switch_fiber(fake, &scheduler_stack, &scheduler_stack_bytes);
#endif
}

fiber *starting;

void fiber_main()
{
#if HOST_ASAN
    __sanitizer_finish_switch_fiber(nullptr, &scheduler_stack, &scheduler_stack_bytes);
#endif
    running = starting;
    for (;;) {
        yield_to_scheduler(); /* parked until it has a thread to run */
        kernel_thread(kernel_record);
        running->state = DONE;
    }
}

/* A parked fiber on a new stack, or nullptr. */
fiber *start_fiber()
{
    void *stack = mmap(nullptr, fiber_stack_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                       -1, 0);
    if (stack == MAP_FAILED) return nullptr;
    fiber *f = new fiber();
    f->stack = (char *)stack;
    ucontext_t start, here;
    getcontext(&start);
    start.uc_stack.ss_sp = f->stack;
    start.uc_stack.ss_size = fiber_stack_bytes;
    start.uc_link = nullptr;
    makecontext(&start, fiber_main, 0);
    starting = f;
#if HOST_ASAN
    void *fake = nullptr;
    __sanitizer_start_switch_fiber(&fake, f->stack, fiber_stack_bytes);
#endif
    if (!_setjmp(scheduler)) swapcontext(&here, &start);
#if HOST_ASAN
    __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
    running = nullptr;
    return f;
}

/* Drop every fiber, after a fault left some in the middle of a thread. */
void drop_fibers() { fibers.clear(); }

/* Run one block with every thread a coroutine; barriers release when all
 * threads they concern have arrived. */
void run_block_as_fibers(size_t threads)
{
    while (fibers.size() < threads) {
        fiber *f = start_fiber();
        if (!f) {
            fault(cudaErrorLaunchFailure, "no memory for the stacks of %zu threads", threads);
            return;
        }
        fibers.emplace_back(f);
    }
    warp_slots.assign(2 * threads, 0);
    for (size_t i = 0; i < threads; i++) {
        fiber &f = *fibers[i];
        f.state = READY;
        f.linear = (int)i;
        f.generation = 0;
        f.index = uint3{(unsigned)(i % blockDim.x), (unsigned)(i / blockDim.x % blockDim.y),
                        (unsigned)(i / ((size_t)blockDim.x * blockDim.y))};
    }
    for (;;) {
        for (size_t i = 0; i < threads; i++)
            if (fibers[i]->state == READY) switch_to_fiber(fibers[i].get());
        size_t done = 0, at_block = 0;
        bool released = false;
        for (size_t w = 0; w < threads; w += 32) {
            size_t end = w + 32 < threads ? w + 32 : threads, waiting = 0, exited = 0;
            for (size_t i = w; i < end; i++) {
                waiting += fibers[i]->state == AT_WARP_BARRIER;
                exited += fibers[i]->state == DONE;
            }
            done += exited;
            for (size_t i = w; i < end; i++) at_block += fibers[i]->state == AT_BLOCK_BARRIER;
            if (waiting && waiting + exited == end - w && exited) {
                fault(cudaErrorLaunchFailure, "kernel %s: in block (%u, %u, %u) lanes of warp %zu exited while "
                      "the others wait at a shuffle", kernel_name, blockIdx.x, blockIdx.y, blockIdx.z, w / 32);
                drop_fibers();
                return;
            }
            if (waiting == end - w) {
                for (size_t i = w; i < end; i++) fibers[i]->state = READY;
                released = true;
            }
        }
        if (done == threads) return;
        if (!released && at_block == threads - done) {
            if (done) {
                fault(cudaErrorLaunchFailure, "kernel %s: in block (%u, %u, %u) threads exited while others wait "
                      "at __syncthreads", kernel_name, blockIdx.x, blockIdx.y, blockIdx.z);
                drop_fibers();
                return;
            }
            for (size_t i = 0; i < threads; i++) fibers[i]->state = READY;
            released = true;
        }
        if (!released) {
            fault(cudaErrorLaunchFailure, "kernel %s: threads of block (%u, %u, %u) wait at different barriers",
                  kernel_name, blockIdx.x, blockIdx.y, blockIdx.z);
            drop_fibers();
            return;
        }
    }
}

/* Blocks run one after another.  The first runs as coroutines; when none of
 * its threads met a barrier the rest run as plain calls, which is much
 * faster, and a barrier met there is reported as a fault. */
void run_kernel(const char *name, dim3 grid, dim3 block, void (*thread)(void *), void *record)
{
    kernel_name = name;
    kernel_thread = thread;
    kernel_record = record;
    gridDim = grid;
    blockDim = block;
    size_t threads = (size_t)block.x * block.y * block.z;
    bool as_fibers = true;
    for (unsigned bz = 0; bz < grid.z; bz++)
        for (unsigned by = 0; by < grid.y; by++)
            for (unsigned bx = 0; bx < grid.x && !sticky_error; bx++) {
                blockIdx = uint3{bx, by, bz};
                if (as_fibers) {
                    barrier_seen = false;
                    run_block_as_fibers(threads);
                    as_fibers = barrier_seen;
                    continue;
                }
                for (unsigned tz = 0; tz < block.z; tz++)
                    for (unsigned ty = 0; ty < block.y; ty++)
                        for (unsigned tx = 0; tx < block.x; tx++) {
                            threadIdx = uint3{tx, ty, tz};
                            thread(record);
                        }
            }
}

/* The running thread, or a fault when threads run as plain calls. */
fiber *barrier_thread(const char *what)
{
    if (!running) {
        fault(cudaErrorLaunchFailure, "kernel %s: block (%u, %u, %u) reached %s, which block 0 did not; "
              "the harness cannot run such a kernel", kernel_name, blockIdx.x, blockIdx.y, blockIdx.z, what);
        return nullptr;
    }
    barrier_seen = true;
    return running;
}

} // namespace

namespace dm_host {

const char not_a_pointer[1] = {0};

int lane_id(void) { return running ? running->linear % 32 : (int)(threadIdx.x % 32); }

uint64_t warp_exchange(unsigned mask, uint64_t value, int src_lane)
{
    fiber *f = barrier_thread("a warp shuffle");
    if (!f) return value;
    int warp = f->linear - f->linear % 32;
    size_t threads = (size_t)blockDim.x * blockDim.y * blockDim.z;
    unsigned lanes = threads - warp >= 32 ? 0xffffffffu : (1u << (threads - warp)) - 1;
    if (mask != lanes) {
        fault(cudaErrorLaunchFailure, "kernel %s: a shuffle with mask %#x; the harness runs whole warps only",
              kernel_name, mask);
        return value;
    }
    uint64_t *slots = &warp_slots[(f->generation & 1) * threads];
    slots[f->linear] = value;
    f->state = AT_WARP_BARRIER;
    yield_to_scheduler();
    int src = warp + src_lane;
    uint64_t got = src_lane >= 0 && src_lane < 32 && (size_t)src < threads ? slots[src] : value;
    f->generation++;
    return got;
}

void block_barrier(void)
{
    fiber *f = barrier_thread("__syncthreads");
    if (!f) return;
    f->state = AT_BLOCK_BARRIER;
    yield_to_scheduler();
}

void enqueue_kernel(const char *name, const launch_config &cfg, void (*thread)(void *), void (*release)(void *),
                    void *record, const void *const *pointers, size_t count)
{
    cudaStream_t s = resolve(cfg.stream);
    cudaError_t e = check_stream(s);
    size_t threads = (size_t)cfg.block.x * cfg.block.y * cfg.block.z;
    if (!e && s->device != current_device) e = fail(cudaErrorInvalidResourceHandle);
    if (!e && !build_runs_on(devices[current_device].cc)) e = fail(cudaErrorNoKernelImageForDevice);
    if (!e && (threads == 0 || threads > 1024 || cfg.grid.x == 0 || cfg.grid.x > 0x7fffffffu ||
               cfg.grid.y == 0 || cfg.grid.y > 65535 || cfg.grid.z == 0 || cfg.grid.z > 65535 || cfg.shared_bytes))
        e = fail(cudaErrorInvalidConfiguration);
    for (size_t i = 0; !e && i < count; i++)
        if (pointers[i] != not_a_pointer && pointers[i] && !is_device(pointers[i], 0, s->device)) {
            fault(cudaErrorIllegalAddress, "kernel %s: argument %zu (%p) is not memory of device %d", name, i,
                  pointers[i], s->device);
            e = sticky_error;
        }
    if (e) {
        release(record);
        return;
    }
    dim3 grid = cfg.grid, block = cfg.block;
    enqueue(s, [=] {
        run_kernel(name, grid, block, thread, record);
        release(record);
    });
}

} // namespace dm_host

/* ------------------------------------------------------------- runtime */

extern "C" {

void dm_cuda_host_set_devices(int count, const int *cc, size_t bytes)
{
    device_count = count < 0 ? 0 : count > max_devices ? max_devices : count;
    for (int d = 0; d < device_count; d++) devices[d] = device{cc[d], bytes, 0};
    current_device = 0;
    sticky_error = cudaSuccess;
    last_error = cudaSuccess;
}

void dm_cuda_host_fail_allocation(long nth) { fail_countdown = nth; }

size_t dm_cuda_host_live_allocations(void) { return allocations.size(); }

} // extern "C"

#define NAMED_ERRORS(X)                                                                      \
    X(cudaSuccess, "no error")                                                              \
    X(cudaErrorInvalidValue, "invalid argument")                                            \
    X(cudaErrorMemoryAllocation, "out of memory")                                           \
    X(cudaErrorInvalidConfiguration, "invalid configuration argument")                      \
    X(cudaErrorInvalidDevice, "invalid device ordinal")                                     \
    X(cudaErrorInvalidDeviceFunction, "invalid device function")                            \
    X(cudaErrorNoDevice, "no CUDA-capable device is detected")                              \
    X(cudaErrorInvalidResourceHandle, "invalid resource handle")                            \
    X(cudaErrorIllegalAddress, "an illegal memory access was encountered")                  \
    X(cudaErrorLaunchFailure, "unspecified launch failure")                                 \
    X(cudaErrorNoKernelImageForDevice, "no kernel image is available for execution on the device")

const char *cudaGetErrorName(cudaError_t e)
{
#define NAME(code, text) \
    if (e == code) return #code;
    NAMED_ERRORS(NAME)
#undef NAME
    return "cudaErrorUnknown";
}

const char *cudaGetErrorString(cudaError_t e)
{
#define TEXT(code, text) \
    if (e == code) return text;
    NAMED_ERRORS(TEXT)
#undef TEXT
    return "unknown error";
}

cudaError_t cudaGetLastError(void)
{
    cudaError_t e = last_error;
    last_error = sticky_error;
    return e;
}

cudaError_t cudaPeekAtLastError(void) { return last_error; }

cudaError_t cudaGetDeviceCount(int *count)
{
    *count = device_count;
    return device_count ? cudaSuccess : fail(cudaErrorNoDevice);
}

cudaError_t cudaGetDevice(int *device)
{
    *device = current_device;
    return cudaSuccess;
}

cudaError_t cudaSetDevice(int device)
{
    if (device < 0 || device >= device_count) return fail(cudaErrorInvalidDevice);
    current_device = device;
    return sticky_error;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp *prop, int device)
{
    if (device < 0 || device >= device_count) return fail(cudaErrorInvalidDevice);
    memset(prop, 0, sizeof *prop);
    snprintf(prop->name, sizeof prop->name, "host harness device %d", device);
    prop->totalGlobalMem = devices[device].bytes;
    prop->major = devices[device].cc / 10;
    prop->minor = devices[device].cc % 10;
    prop->multiProcessorCount = 4;
    return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int *value, cudaDeviceAttr attr, int device)
{
    if (device < 0 || device >= device_count) return fail(cudaErrorInvalidDevice);
    if (attr == cudaDevAttrComputeCapabilityMajor) *value = devices[device].cc / 10;
    else if (attr == cudaDevAttrComputeCapabilityMinor) *value = devices[device].cc % 10;
    else return fail(cudaErrorInvalidValue);
    return cudaSuccess;
}

cudaError_t cudaFuncGetAttributes(cudaFuncAttributes *attr, const void *func)
{
    if (!func) return fail(cudaErrorInvalidDeviceFunction);
    if (!build_runs_on(devices[current_device].cc)) return fail(cudaErrorNoKernelImageForDevice);
    memset(attr, 0, sizeof *attr);
    attr->maxThreadsPerBlock = 1024;
    return sticky_error;
}

cudaError_t cudaDeviceSynchronize(void)
{
    run_device(current_device);
    return sticky_error;
}

cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes)
{
    *free_bytes = devices[current_device].bytes - devices[current_device].used;
    *total_bytes = devices[current_device].bytes;
    return sticky_error;
}

cudaError_t cudaMalloc(void **ptr, size_t bytes) { return allocate(ptr, bytes, current_device); }

cudaError_t cudaMallocHost(void **ptr, size_t bytes) { return allocate(ptr, bytes, -1); }

/* cudaFree and cudaFreeHost wait for the device, as the real ones do. */
static cudaError_t release(void *ptr, bool device)
{
    if (!ptr) return sticky_error;
    auto it = allocations.find((const char *)ptr);
    if (it == allocations.end() || (it->second.device >= 0) != device) return fail(cudaErrorInvalidValue);
    for (int d = 0; d < device_count; d++) run_device(d);
    if (!sticky_error) guard_intact(it->first, it->second);
    if (it->second.device >= 0) devices[it->second.device].used -= it->second.bytes;
    allocations.erase(it);
    free(ptr);
    return sticky_error;
}

cudaError_t cudaFree(void *ptr) { return release(ptr, true); }
cudaError_t cudaFreeHost(void *ptr) { return release(ptr, false); }

/* Queue a copy on s.  Pinned host memory is read or written when the copy
 * runs; pageable memory is staged when queued (host to device) or waited
 * for (device to host), as the real runtime does. */
static cudaError_t copy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind, cudaStream_t s,
                        bool synchronous)
{
    cudaError_t e = check_stream(s);
    if (e) return e;
    if (!bytes) return cudaSuccess;
    bool dst_dev = find_allocation(dst, bytes) && find_allocation(dst, bytes)->second.device >= 0;
    bool src_dev = find_allocation(src, bytes) && find_allocation(src, bytes)->second.device >= 0;
    if (kind == cudaMemcpyDefault)
        kind = dst_dev ? (src_dev ? cudaMemcpyDeviceToDevice : cudaMemcpyHostToDevice)
                       : (src_dev ? cudaMemcpyDeviceToHost : cudaMemcpyHostToHost);
    bool want_dst = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
    bool want_src = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
    if (dst_dev != want_dst || src_dev != want_src) {
        fprintf(stderr, "cuda host harness: a copy of %zu bytes from %p to %p does not match its kind %d\n", bytes,
                src, dst, (int)kind);
        return fail(cudaErrorInvalidValue);
    }
    bool src_pageable = !src_dev && !find_allocation(src, bytes);
    bool dst_pageable = !dst_dev && !find_allocation(dst, bytes);
    if (src_pageable) {
        std::vector<char> staged((const char *)src, (const char *)src + bytes);
        enqueue(s, [=, staged = std::move(staged)] { memcpy(dst, staged.data(), bytes); });
        /* A synchronous copy from pageable memory returns once staged; the
         * transfer itself may still be pending. */
        return sticky_error;
    }
    uint64_t seq = enqueue(s, [=] { memcpy(dst, src, bytes); });
    if (synchronous || dst_pageable) synchronize(s, seq);
    return sticky_error;
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind)
{
    return copy(dst, src, bytes, kind, legacy_stream(current_device), true);
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind, cudaStream_t stream)
{
    return copy(dst, src, bytes, kind, resolve(stream), false);
}

cudaError_t cudaMemsetAsync(void *ptr, int value, size_t bytes, cudaStream_t stream)
{
    cudaStream_t s = resolve(stream);
    cudaError_t e = check_stream(s);
    if (e) return e;
    if (!is_device(ptr, bytes, s->device)) return fail(cudaErrorInvalidValue);
    enqueue(s, [=] { memset(ptr, value, bytes); });
    return cudaSuccess;
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *stream, unsigned flags)
{
    legacy_stream(0);
    if (sticky_error) return sticky_error;
    *stream = new CUstream_st{current_device, !(flags & cudaStreamNonBlocking), {}, 0, 0};
    streams.push_back(*stream);
    return cudaSuccess;
}

/* Even after a fault, so that the workspace's free leaks nothing. */
cudaError_t cudaStreamDestroy(cudaStream_t stream)
{
    auto it = std::find(streams.begin(), streams.end(), stream);
    if (!stream || it == streams.end() || stream == legacy_stream(stream->device))
        return fail(cudaErrorInvalidResourceHandle);
    run_all(stream); /* its work completes, so whatever waits for it is done */
    for (cudaEvent_t e : events)
        if (e->stream == stream) e->stream = nullptr;
    for (cudaStream_t other : streams)
        for (operation &op : other->queue)
            if (op.wait_stream == stream) op.wait_stream = nullptr;
    streams.erase(std::find(streams.begin(), streams.end(), stream));
    delete stream;
    return sticky_error;
}

cudaError_t cudaStreamSynchronize(cudaStream_t stream)
{
    cudaStream_t s = resolve(stream);
    cudaError_t e = check_stream(s);
    if (e) return e;
    synchronize(s, s->queued);
    return sticky_error;
}

cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned flags)
{
    cudaStream_t s = resolve(stream);
    cudaError_t e = check_stream(s);
    if (e) return e;
    if (!event || flags) return fail(cudaErrorInvalidValue);
    if (event->stream) enqueue(s, nullptr, event->stream, event->seq);
    return cudaSuccess;
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t *event, unsigned flags)
{
    (void)flags;
    if (sticky_error) return sticky_error;
    *event = new CUevent_st{nullptr, 0};
    events.push_back(*event);
    return cudaSuccess;
}

cudaError_t cudaEventDestroy(cudaEvent_t event)
{
    auto it = std::find(events.begin(), events.end(), event);
    if (it == events.end()) return fail(cudaErrorInvalidResourceHandle);
    events.erase(it);
    delete event;
    return sticky_error;
}

cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream)
{
    cudaStream_t s = resolve(stream);
    cudaError_t e = check_stream(s);
    if (e) return e;
    if (!event) return fail(cudaErrorInvalidResourceHandle);
    event->stream = s;
    event->seq = enqueue(s, nullptr);
    return cudaSuccess;
}

cudaError_t cudaEventSynchronize(cudaEvent_t event)
{
    if (!event) return fail(cudaErrorInvalidResourceHandle);
    if (event->stream) synchronize(event->stream, event->seq);
    else check_guards();
    return sticky_error;
}

/* --------------------------------------------------------------- cuBLAS */

struct cublasContext {
    int device;
    cudaStream_t stream;
    void *own_workspace; /* cuBLAS allocates device memory of its own */
};

const char *cublasGetStatusString(cublasStatus_t status)
{
    switch (status) {
    case CUBLAS_STATUS_SUCCESS: return "the operation completed successfully";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "the library was not initialized";
    case CUBLAS_STATUS_ALLOC_FAILED: return "the resource allocation failed";
    case CUBLAS_STATUS_INVALID_VALUE: return "an invalid numeric value was used as an argument";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "the GPU program failed to execute";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "an internal operation failed";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "the functionality requested is not supported";
    }
    return "unknown error";
}

cublasStatus_t cublasCreate(cublasHandle_t *handle)
{
    *handle = nullptr;
    if (!device_count || sticky_error) return CUBLAS_STATUS_NOT_INITIALIZED;
    void *scratch;
    /* A failed allocation leaves its error for cudaGetLastError, as there. */
    if (cudaMalloc(&scratch, (size_t)1 << 20) != cudaSuccess) return CUBLAS_STATUS_ALLOC_FAILED;
    *handle = new cublasContext{current_device, nullptr, scratch};
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasDestroy(cublasHandle_t handle)
{
    if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
    cudaFree(handle->own_workspace);
    delete handle;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetStream(cublasHandle_t handle, cudaStream_t stream)
{
    if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
    handle->stream = stream;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetWorkspace(cublasHandle_t handle, void *workspace, size_t bytes)
{
    if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (bytes && !is_device(workspace, bytes, handle->device)) return CUBLAS_STATUS_INVALID_VALUE;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetMathMode(cublasHandle_t handle, cublasMath_t mode)
{
    (void)mode;
    return handle ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_NOT_INITIALIZED;
}

/* Whether the column-major rows x cols matrix at p with leading dimension
 * ld lies in device memory of device; a fault of `who` otherwise. */
static bool operand_ok(const char *who, int device, const char *name, const void *p, size_t rows, size_t cols,
                       size_t ld)
{
    if (rows == 0 || cols == 0) return true;
    size_t extent = (ld * (cols - 1) + rows) * sizeof(float);
    if (is_device(p, extent, device)) return true;
    fault(cudaErrorIllegalAddress, "%s: operand %s (%p, %zu x %zu, leading dimension %zu) is not inside one "
          "allocation of device %d", who, name, p, rows, cols, ld, device);
    return false;
}

cublasStatus_t cublasSgemm(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m, int n,
                           int k, const float *alpha, const float *A, int lda, const float *B, int ldb,
                           const float *beta, float *C, int ldc)
{
    if (!handle || sticky_error) return CUBLAS_STATUS_NOT_INITIALIZED;
    int a_rows = transa == CUBLAS_OP_N ? m : k, a_cols = transa == CUBLAS_OP_N ? k : m;
    int b_rows = transb == CUBLAS_OP_N ? k : n, b_cols = transb == CUBLAS_OP_N ? n : k;
    if (m < 0 || n < 0 || k < 0 || lda < (a_rows > 1 ? a_rows : 1) || ldb < (b_rows > 1 ? b_rows : 1) ||
        ldc < (m > 1 ? m : 1))
        return CUBLAS_STATUS_INVALID_VALUE;
    cudaStream_t s = resolve(handle->stream);
    if (check_stream(s) || s->device != handle->device) return CUBLAS_STATUS_INVALID_VALUE;
    const char *who = "cublasSgemm";
    if (!operand_ok(who, handle->device, "A", A, a_rows, a_cols, lda) ||
        !operand_ok(who, handle->device, "B", B, b_rows, b_cols, ldb) ||
        !operand_ok(who, handle->device, "C", C, m, n, ldc))
        return CUBLAS_STATUS_EXECUTION_FAILED;
    float a = *alpha, b = *beta;
    enqueue(s, [=] {
        cblas_sgemm(CblasColMajor, transa == CUBLAS_OP_N ? CblasNoTrans : CblasTrans,
                    transb == CUBLAS_OP_N ? CblasNoTrans : CblasTrans, m, n, k, a, A, lda, B, ldb, b, C, ldc);
    });
    return CUBLAS_STATUS_SUCCESS;
}

/* -------------------------------------------------------------- cublasLt */

struct cublasLtContext {
    int unused;
};
struct cublasLtMatmulDescOpaque_t {
    cublasOperation_t transa, transb;
    cublasLtEpilogue_t epilogue;
    const float *bias;
};
struct cublasLtMatrixLayoutOpaque_t {
    uint64_t rows, cols;
    int64_t ld;
};
struct cublasLtMatmulPreferenceOpaque_t {
    uint64_t workspace_bytes;
    uint32_t alignment[4]; /* of A, B, C, D, in bytes */
};

static bool lt_available = true;

void dm_cuda_host_lt_algorithms(int available) { lt_available = available != 0; }

cublasStatus_t cublasLtCreate(cublasLtHandle_t *handle)
{
    *handle = nullptr;
    if (!device_count || sticky_error) return CUBLAS_STATUS_NOT_INITIALIZED;
    *handle = new cublasLtContext{0};
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtDestroy(cublasLtHandle_t handle)
{
    if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
    delete handle;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *desc, cublasComputeType_t compute, cudaDataType_t scale)
{
    /* float32 products only: what the backend asks for */
    if (compute != CUBLAS_COMPUTE_32F || scale != CUDA_R_32F) return CUBLAS_STATUS_NOT_SUPPORTED;
    *desc = new cublasLtMatmulDescOpaque_t{CUBLAS_OP_N, CUBLAS_OP_N, CUBLASLT_EPILOGUE_DEFAULT, nullptr};
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t desc)
{
    delete desc;
    return CUBLAS_STATUS_SUCCESS;
}

/* Each attribute's value has the size of its type, as the library checks. */
cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attr,
                                              const void *buf, size_t bytes)
{
    if (!desc || !buf) return CUBLAS_STATUS_INVALID_VALUE;
    switch (attr) {
    case CUBLASLT_MATMUL_DESC_TRANSA:
    case CUBLASLT_MATMUL_DESC_TRANSB: {
        int32_t op;
        if (bytes != sizeof op) return CUBLAS_STATUS_INVALID_VALUE;
        memcpy(&op, buf, sizeof op);
        if (op != CUBLAS_OP_N && op != CUBLAS_OP_T) return CUBLAS_STATUS_INVALID_VALUE;
        (attr == CUBLASLT_MATMUL_DESC_TRANSA ? desc->transa : desc->transb) = (cublasOperation_t)op;
        return CUBLAS_STATUS_SUCCESS;
    }
    case CUBLASLT_MATMUL_DESC_EPILOGUE: {
        uint32_t e;
        if (bytes != sizeof e) return CUBLAS_STATUS_INVALID_VALUE;
        memcpy(&e, buf, sizeof e);
        if (e != CUBLASLT_EPILOGUE_DEFAULT && e != CUBLASLT_EPILOGUE_RELU && e != CUBLASLT_EPILOGUE_BIAS &&
            e != CUBLASLT_EPILOGUE_RELU_BIAS)
            return CUBLAS_STATUS_NOT_SUPPORTED;
        desc->epilogue = (cublasLtEpilogue_t)e;
        return CUBLAS_STATUS_SUCCESS;
    }
    case CUBLASLT_MATMUL_DESC_BIAS_POINTER:
        if (bytes != sizeof desc->bias) return CUBLAS_STATUS_INVALID_VALUE;
        memcpy(&desc->bias, buf, sizeof desc->bias);
        return CUBLAS_STATUS_SUCCESS;
    }
    return CUBLAS_STATUS_INVALID_VALUE;
}

cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *layout, cudaDataType_t type, uint64_t rows,
                                          uint64_t cols, int64_t ld)
{
    if (type != CUDA_R_32F || ld < 1 || (uint64_t)ld < rows) return CUBLAS_STATUS_INVALID_VALUE;
    *layout = new cublasLtMatrixLayoutOpaque_t{rows, cols, ld};
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t layout)
{
    delete layout;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *pref)
{
    *pref = new cublasLtMatmulPreferenceOpaque_t{0, {256, 256, 256, 256}};
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t pref)
{
    delete pref;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t pref,
                                                    cublasLtMatmulPreferenceAttributes_t attr, const void *buf,
                                                    size_t bytes)
{
    if (!pref || !buf) return CUBLAS_STATUS_INVALID_VALUE;
    if (attr == CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES) {
        if (bytes != sizeof pref->workspace_bytes) return CUBLAS_STATUS_INVALID_VALUE;
        memcpy(&pref->workspace_bytes, buf, bytes);
        return CUBLAS_STATUS_SUCCESS;
    }
    int k = (int)attr - CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES;
    if (k < 0 || k > 3 || bytes != sizeof(uint32_t)) return CUBLAS_STATUS_INVALID_VALUE;
    memcpy(&pref->alignment[k], buf, bytes);
    return CUBLAS_STATUS_SUCCESS;
}

/* D (m x n) = op(A) (m x k) op(B) (k x n) + C: the layouts agree. */
static bool lt_shapes_agree(cublasLtMatmulDesc_t desc, cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                            cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t d)
{
    if (!desc || !a || !b || !c || !d) return false;
    uint64_t m = d->rows, n = d->cols, k = desc->transa == CUBLAS_OP_N ? a->cols : a->rows;
    bool a_ok = desc->transa == CUBLAS_OP_N ? a->rows == m : a->cols == m;
    bool b_ok = desc->transb == CUBLAS_OP_N ? b->rows == k && b->cols == n : b->rows == n && b->cols == k;
    return a_ok && b_ok && c->rows == m && c->cols == n && m <= INT32_MAX && n <= INT32_MAX && k <= INT32_MAX;
}

cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc,
                                              cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                                              cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t d,
                                              cublasLtMatmulPreference_t pref, int requested,
                                              cublasLtMatmulHeuristicResult_t *results, int *found)
{
    *found = 0;
    if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!pref || requested < 1 || !lt_shapes_agree(desc, a, b, c, d)) return CUBLAS_STATUS_INVALID_VALUE;
    if (!lt_available) return CUBLAS_STATUS_NOT_SUPPORTED;
    memset(&results[0], 0, sizeof results[0]);
    for (int k = 0; k < 4; k++) results[0].algo.data[k] = pref->alignment[k]; /* what it may rely on */
    results[0].state = CUBLAS_STATUS_SUCCESS;
    results[0].wavesCount = 1.0f;
    *found = 1;
    return CUBLAS_STATUS_SUCCESS;
}

/* In place only (C == D, one layout), as the backend calls it. */
cublasStatus_t cublasLtMatmul(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc, const void *alpha, const void *A,
                              cublasLtMatrixLayout_t a, const void *B, cublasLtMatrixLayout_t b, const void *beta,
                              const void *C, cublasLtMatrixLayout_t c, void *D, cublasLtMatrixLayout_t d,
                              const cublasLtMatmulAlgo_t *algo, void *workspace, size_t workspace_bytes,
                              cudaStream_t stream)
{
    if (!handle || sticky_error) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!alpha || !beta || !algo || !lt_shapes_agree(desc, a, b, c, d)) return CUBLAS_STATUS_INVALID_VALUE;
    if (C != D || c->ld != d->ld) return CUBLAS_STATUS_NOT_SUPPORTED;
    cudaStream_t s = resolve(stream);
    if (check_stream(s)) return CUBLAS_STATUS_INVALID_VALUE;
    const char *who = "cublasLtMatmul";
    int device = s->device;
    bool bias = desc->epilogue == CUBLASLT_EPILOGUE_BIAS || desc->epilogue == CUBLASLT_EPILOGUE_RELU_BIAS;
    bool relu = desc->epilogue == CUBLASLT_EPILOGUE_RELU || desc->epilogue == CUBLASLT_EPILOGUE_RELU_BIAS;
    if (!operand_ok(who, device, "A", A, a->rows, a->cols, a->ld) ||
        !operand_ok(who, device, "B", B, b->rows, b->cols, b->ld) ||
        !operand_ok(who, device, "D", D, d->rows, d->cols, d->ld) ||
        (bias && !operand_ok(who, device, "bias", desc->bias, d->rows, 1, d->rows)) ||
        (workspace_bytes && !operand_ok(who, device, "workspace", workspace, workspace_bytes / sizeof(float), 1,
                                        workspace_bytes / sizeof(float))))
        return CUBLAS_STATUS_EXECUTION_FAILED;
    const void *operands[4] = {A, B, C, D};
    for (int i = 0; i < 4; i++)
        if ((uintptr_t)operands[i] % algo->data[i]) {
            fault(cudaErrorIllegalAddress, "%s: operand %c (%p) is not aligned to the %u bytes its algorithm was "
                  "chosen for", who, "ABCD"[i], operands[i], (unsigned)algo->data[i]);
            return CUBLAS_STATUS_EXECUTION_FAILED;
        }
    int m = (int)d->rows, n = (int)d->cols, k = (int)(desc->transa == CUBLAS_OP_N ? a->cols : a->rows);
    int lda = (int)a->ld, ldb = (int)b->ld, ldd = (int)d->ld;
    CBLAS_TRANSPOSE ta = desc->transa == CUBLAS_OP_N ? CblasNoTrans : CblasTrans;
    CBLAS_TRANSPOSE tb = desc->transb == CUBLAS_OP_N ? CblasNoTrans : CblasTrans;
    float al = *(const float *)alpha, be = *(const float *)beta;
    const float *pa = (const float *)A, *pb = (const float *)B, *pbias = bias ? desc->bias : nullptr;
    float *pd = (float *)D;
    /* D = act(alpha op(A) op(B) + beta C + bias), the bias along D's rows */
    enqueue(s, [=] {
        cblas_sgemm(CblasColMajor, ta, tb, m, n, k, al, pa, lda, pb, ldb, be, pd, ldd);
        for (int j = 0; j < n; j++)
            for (int i = 0; i < m; i++) {
                float *v = pd + (size_t)j * ldd + i;
                if (pbias) *v += pbias[i];
                if (relu) *v = *v > 0.0f ? *v : 0.0f;
            }
    });
    return CUBLAS_STATUS_SUCCESS;
}
