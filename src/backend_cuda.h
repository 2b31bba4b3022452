/* backend_cuda.h - the CUDA backend as the CPU side calls it (cuda/).  A
 * CUDA workspace owns a device copy of one model's folded parameters and
 * every device buffer a forward pass needs.  Builds without CUDA get inline
 * versions that report the backend missing, so callers need no #if. */
#ifndef DM_BACKEND_CUDA_H
#define DM_BACKEND_CUDA_H

#include "error.h"
#include "model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dm_cuda_workspace dm_cuda_workspace;

#if DM_HAVE_CUDA

/* DM_OK when a CUDA device is usable; DM_ERR_UNSUPPORTED naming what
 * cudaGetDeviceCount reported otherwise. */
dm_status dm_cuda_available(void);
/* Upload model's parameters to device (the calling thread's current
 * device when negative) and allocate buffers for up to max_batch images of
 * max_h x max_w.  Every call leaves the caller's current device as it was. */
dm_status dm_cuda_workspace_create(const dm_model *model, int device, int max_batch, int max_h, int max_w,
                                   dm_cuda_workspace **out);
void dm_cuda_workspace_free(dm_cuda_workspace *cw);
size_t dm_cuda_workspace_bytes(const dm_cuda_workspace *cw);
/* dm_forward and dm_block_run on the device; arguments already checked
 * against the workspace's limits. */
dm_status dm_cuda_forward(const dm_model *model, dm_cuda_workspace *cw, const float *input, int n, int h, int w,
                          const dm_outputs *outputs);
dm_status dm_cuda_block_run(const dm_model *model, dm_cuda_workspace *cw, const float *input, float *output,
                            int n, int h, int w);

#else

static inline dm_status dm_cuda_available(void)
{
    return dm_fail(DM_ERR_UNSUPPORTED, "this build has no CUDA backend (configure with -Dcuda=enabled)");
}
static inline dm_status dm_cuda_workspace_create(const dm_model *model, int device, int max_batch, int max_h,
                                                 int max_w, dm_cuda_workspace **out)
{
    (void)model, (void)device, (void)max_batch, (void)max_h, (void)max_w;
    *out = NULL;
    return dm_cuda_available();
}
static inline void dm_cuda_workspace_free(dm_cuda_workspace *cw) { (void)cw; }
static inline size_t dm_cuda_workspace_bytes(const dm_cuda_workspace *cw) { (void)cw; return 0; }
static inline dm_status dm_cuda_forward(const dm_model *model, dm_cuda_workspace *cw, const float *input, int n,
                                        int h, int w, const dm_outputs *outputs)
{
    (void)model, (void)cw, (void)input, (void)n, (void)h, (void)w, (void)outputs;
    return dm_cuda_available();
}
static inline dm_status dm_cuda_block_run(const dm_model *model, dm_cuda_workspace *cw, const float *input,
                                          float *output, int n, int h, int w)
{
    (void)model, (void)cw, (void)input, (void)output, (void)n, (void)h, (void)w;
    return dm_cuda_available();
}

#endif

#ifdef __cplusplus
}
#endif

#endif
