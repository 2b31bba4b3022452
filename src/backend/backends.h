/* backends.h - the backends' operator tables (ops.h) and how to create
 * them.  Builds without CUDA get inline versions that report the backend
 * missing, so callers need no #if. */
#ifndef DM_BACKENDS_H
#define DM_BACKENDS_H

#include "error.h"
#include "model.h"
#include "ops.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The CPU table over simd/ with `threads` threads (its pool); it reads parameters where the model holds them.
 * DM_ERR_UNSUPPORTED when DAMAMBA_ISA names an instruction set this build
 * or CPU lacks. */
dm_status dm_cpu_backend_create(int threads, dm_ops *out);
/* DM_ERR_ARGUMENT when DAMAMBA_THREADS holds something other than a count
 * (dm_threads() passes over it): a CPU workspace is then refused. */
dm_status dm_threads_check(void);

#if DM_HAVE_CUDA

/* DM_OK when a CUDA device is usable; DM_ERR_UNSUPPORTED naming what
 * cudaGetDeviceCount reported otherwise. */
dm_status dm_cuda_available(void);
/* The CUDA table on CUDA device `device` (the calling thread's current
 * device when negative), holding a device copy of model's parameters;
 * model may be NULL for a table of operators alone (as in tests).
 * DM_ERR_UNSUPPORTED when the device cannot run this build's code.  Every
 * entry leaves the caller's current device as it found it (a pass, from
 * begin() to finish()). */
dm_status dm_cuda_backend_create(const dm_model *model, int device, dm_ops *out);

#else

static inline dm_status dm_cuda_available(void)
{
    return dm_fail(DM_ERR_UNSUPPORTED, "this build has no CUDA backend (configure with -Dcuda=enabled)");
}
static inline dm_status dm_cuda_backend_create(const dm_model *model, int device, dm_ops *out)
{
    (void)model, (void)device, (void)out;
    return dm_cuda_available();
}

#endif

#ifdef __cplusplus
}
#endif

#endif
