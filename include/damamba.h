/*
 * damamba.h - run DAMamba (vision state-space model with Dynamic Adaptive
 * Scan) on CPUs, or on an NVIDIA GPU where the build has the CUDA backend.
 * The one public header of libdamamba.
 *
 * Conventions
 *  - Every function that can fail returns a dm_status; on failure
 *    dm_last_error() describes the problem (per thread, valid until the next
 *    failing call on that thread).  The library never aborts or exits.
 *  - A loaded dm_model is read-only: many threads may share one.  Everything
 *    a forward pass writes lives in a dm_workspace, one per concurrent caller.
 *  - Tensors at the API boundary are float32, NCHW, contiguous, as PyTorch
 *    gives them.  The caller owns every buffer it passes in.
 */
#ifndef DAMAMBA_H
#define DAMAMBA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DM_VERSION_STRING "0.1.0"
#define DM_NUM_STAGES 4

typedef enum dm_status {
    DM_OK = 0,
    DM_ERR_ARGUMENT,    /* a bad argument from the caller (null, size, range) */
    DM_ERR_IO,          /* a file could not be opened, read or written */
    DM_ERR_FORMAT,      /* a file is not a valid safetensors / .pth / image */
    DM_ERR_MODEL,       /* valid file, but not a DAMamba the library can run */
    DM_ERR_NOMEM,       /* an allocation failed or a size would overflow */
    DM_ERR_UNSUPPORTED, /* valid request the build or the machine cannot do */
    DM_ERR_DEVICE,      /* the GPU or its runtime failed during a call */
} dm_status;

/* Human-readable text of the last failure on the calling thread. */
const char *dm_last_error(void);
/* Short name of a status ("ok", "format error", ...). */
const char *dm_status_string(dm_status status);

/* ------------------------------------------------------------------ model */

typedef struct dm_model dm_model;

/* The configuration, inferred from the weights' names and shapes. */
typedef struct dm_config {
    int depths[DM_NUM_STAGES];     /* blocks per stage */
    int dims[DM_NUM_STAGES];       /* channels per stage */
    int mlp_hidden[DM_NUM_STAGES]; /* ConvFFN hidden channels per stage */
    int groups[DM_NUM_STAGES];     /* offset groups (channels / head_dim) */
    int dt_rank[DM_NUM_STAGES];    /* ceil(dim / 16) */
    int layer_scale[DM_NUM_STAGES];/* 1 where blocks carry layer scales */
    int in_chans;                  /* image channels (3, or 1 for grey) */
    int num_classes;               /* 0 when the file has no head */
    int64_t num_params;            /* trainable parameters, as PyTorch counts */
} dm_config;

typedef struct dm_load_options {
    /* .pth training checkpoints: take 'model_ema' instead of 'model'. */
    int use_ema;
} dm_load_options;

/* Load a model file: safetensors (official state-dict names) or a PyTorch
 * .pth checkpoint.  opts may be NULL. */
dm_status dm_model_load(const char *path, const dm_load_options *opts,
                        dm_model **out);

/* Load a model file already in memory (safetensors); the bytes are copied
 * as needed, so buf may be freed afterwards. */
dm_status dm_model_load_buffer(const void *buf, size_t size, dm_model **out);

/* A model of an official variant ('F', 'T', 'S' or 'B') with deterministic
 * pseudo-random weights, for tests and benchmarks without a checkpoint.
 * num_classes 0 builds no head. */
dm_status dm_model_synthetic(char variant, int in_chans, int num_classes,
                             uint64_t seed, dm_model **out);

void dm_model_free(dm_model *model);

const dm_config *dm_model_config(const dm_model *model);

/* A metadata string of the model file (safetensors __metadata__), or NULL. */
const char *dm_model_metadata(const dm_model *model, const char *key);

/* Output size of stage s (0..3) for an input of h x w pixels. */
dm_status dm_stage_shape(const dm_model *model, int h, int w, int stage,
                         int *channels, int *out_h, int *out_w);

/* Multiply-accumulate operations of one forward pass of one h x w image. */
int64_t dm_model_macs(const dm_model *model, int h, int w);

/* --------------------------------------------------------------- backends */

/* Where a workspace runs the forward pass.  Both compute the same model with
 * the same folded parameters in float32 (no TF32 or other reduced precision
 * on the GPU); results differ only by rounding. */
typedef enum dm_backend {
    DM_BACKEND_CPU,  /* always available */
    DM_BACKEND_CUDA, /* builds configured with -Dcuda=enabled, with a GPU */
} dm_backend;

/* DM_OK when the backend can run here; otherwise DM_ERR_UNSUPPORTED with
 * dm_last_error() saying why (no CUDA in this build, no usable device). */
dm_status dm_backend_available(dm_backend backend);
/* "cpu" or "cuda". */
const char *dm_backend_name(dm_backend backend);

/* -------------------------------------------------------------- workspace */

typedef struct dm_workspace dm_workspace;

/* Scratch memory for batches of up to max_batch images of up to
 * max_h x max_w pixels, on the CPU.  A forward pass allocates nothing else. */
dm_status dm_workspace_create(const dm_model *model, int max_batch, int max_h,
                              int max_w, dm_workspace **out);

/* The same on a chosen backend; dm_forward then runs there.  A CUDA
 * workspace holds, on the calling thread's current CUDA device (device 0
 * unless the caller chose another), its own copy of the model's parameters
 * and all device and pinned host buffers, allocated here once;
 * it serves only the model it was created for, and only one thread at a
 * time (as any workspace).  The model stays read-only and shareable. */
dm_status dm_workspace_create_on(const dm_model *model, dm_backend backend,
                                 int max_batch, int max_h, int max_w,
                                 dm_workspace **out);
void dm_workspace_free(dm_workspace *ws);

/* The backend the workspace runs on. */
dm_backend dm_workspace_backend(const dm_workspace *ws);

/* Bytes the workspace holds (device memory, for a CUDA workspace). */
size_t dm_workspace_bytes(const dm_workspace *ws);

/* ---------------------------------------------------------------- forward */

typedef struct dm_outputs {
    float *logits;                /* n x num_classes, or NULL */
    float *stages[DM_NUM_STAGES]; /* n x C_s x H_s x W_s each, or NULL */
    /* The Dynamic Adaptive Scan's sampling offsets of one block, or NULL:
     * n x H_s x W_s x groups x 2, (dx, dy) in pixels of that stage's grid.
     * Pixel (y, x) of group g samples its features at (x + dx, y + dy). */
    float *offsets;
    int offsets_stage, offsets_block;
} dm_outputs;

/* Run n images (n x in_chans x h x w, NCHW float32).  Only the outputs whose
 * pointers are non-NULL are written. */
dm_status dm_forward(const dm_model *model, dm_workspace *ws,
                     const float *input, int n, int h, int w,
                     const dm_outputs *outputs);

/* ---------------------------------------------------------------- runtime */

/* The instruction set the kernels use ("scalar", "avx2", "avx512", "neon"):
 * the best this CPU has.  The environment variable DAMAMBA_ISA forces one;
 * if this build or CPU lacks it, dm_isa() returns "none" and
 * dm_workspace_create and dm_forward fail with DM_ERR_UNSUPPORTED. */
const char *dm_isa(void);

/* Threads a forward pass uses: DAMAMBA_THREADS, else OMP_NUM_THREADS, else
 * the number of cores.  dm_set_threads(n) with n > 0 overrides both. */
int dm_threads(void);
void dm_set_threads(int n);

#ifdef __cplusplus
}
#endif

#endif /* DAMAMBA_H */
