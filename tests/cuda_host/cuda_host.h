/* cuda_host.h - controls of the host harness's simulated machine, for tests
 * built with -Dcuda_host=true.  Plain C. */
#ifndef DM_CUDA_HOST_H
#define DM_CUDA_HOST_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The simulated devices: count of them, each with compute capability
 * cc[i] (major * 10 + minor) and bytes of memory.  Resets the machine:
 * call it with no allocation alive.  The default is two devices, 9.0 and
 * 8.6, of 4 GiB each. */
void dm_cuda_host_set_devices(int count, const int *cc, size_t bytes);

/* Make the nth device or pinned allocation from now on fail (1 = the next
 * one), cuBLAS's own included; 0 turns it off. */
void dm_cuda_host_fail_allocation(long nth);

/* Whether cublasLtMatmulAlgoGetHeuristic finds an algorithm (1, the
 * default) or none (0), as for a problem no cublasLt kernel serves. */
void dm_cuda_host_lt_algorithms(int available);

/* Allocations alive on all devices, for leak checks. */
size_t dm_cuda_host_live_allocations(void);

#ifdef __cplusplus
}
#endif

#endif
