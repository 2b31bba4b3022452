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
 *    gives them.  The caller owns every buffer it passes in; unless a
 *    function says otherwise, its inputs and outputs must not overlap.
 *  - A function that fails sets its object result (`dm_model **out`, ...) to
 *    NULL and its struct result (`dm_image *out`, ...) to zeros, so freeing
 *    it is always safe; numbers it would return (sizes) are left unchanged.
 *  - Strings the library returns are NUL-terminated UTF-8 and owned by the
 *    library; each declaration says how long they stay valid.
 *
 * Versions and ABI
 *  - DM_VERSION_* is the version of this header, dm_version() that of the
 *    library linked at run time: a program can compare them.
 *  - The shared library's soname (libdamamba.so.N) changes whenever a release
 *    breaks binary compatibility.  Adding functions, enum values, or fields at
 *    the end of a struct with a `size` member does not: those structs tell
 *    the library, through `size`, which version of them the caller compiled
 *    against.  Set `size = sizeof(the struct)` before passing one in (the
 *    DM_*_INIT macros do); fields beyond the caller's size read as 0.
 */
#ifndef DAMAMBA_H
#define DAMAMBA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Marks the library's API: the shared library is built with hidden
 * visibility and exports these functions only. */
#if defined(__GNUC__)
#define DM_API __attribute__((visibility("default")))
#else
#define DM_API
#endif

#define DM_VERSION_MAJOR 0
#define DM_VERSION_MINOR 2
#define DM_VERSION_PATCH 0
#define DM_VERSION_STRING "0.2.0"
/* One comparable number: 10000 * major + 100 * minor + patch. */
#define DM_VERSION (DM_VERSION_MAJOR * 10000 + DM_VERSION_MINOR * 100 + DM_VERSION_PATCH)

#define DM_NUM_STAGES 4

typedef enum dm_status {
    DM_OK = 0,
    DM_ERR_ARGUMENT,    /* a bad argument from the caller (null, size, range) */
    DM_ERR_IO,          /* a file could not be opened, read or written */
    DM_ERR_FORMAT,      /* a file is not a valid safetensors / .pth / image */
    DM_ERR_MODEL,       /* valid file, but not a DAMamba the library can run */
    DM_ERR_NOMEM,       /* an allocation failed, a size would overflow, or a
                           buffer would take the process past its memory
                           limit (the machine's, its control group's, or
                           DAMAMBA_MEMORY_LIMIT: README, "Hostile input") */
    DM_ERR_UNSUPPORTED, /* valid request the build or the machine cannot do */
    DM_ERR_DEVICE,      /* the GPU or its runtime failed during a call */
} dm_status;

/* The library's version, DM_VERSION as the library was built: differs from
 * the header's DM_VERSION when a program runs against another release. */
DM_API int dm_version(void);
/* The same as text ("0.2.0"); static storage. */
DM_API const char *dm_version_string(void);

/* Human-readable text of the last failure on the calling thread; valid until
 * the next failing call on that thread. */
DM_API const char *dm_last_error(void);
/* Short name of a status ("ok", "format error", ...); static storage. */
DM_API const char *dm_status_string(dm_status status);

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
    /* Fields added since 0.2 follow, so programs built earlier read the
     * ones they know where they were. */
    int seg_classes;               /* UperNet head's classes; 0: no head */
    int seg_channels;              /* UperNet head's channels */
    /* Mask R-CNN with an FPN (mmdetection checkpoints: backbone.*, neck.*,
     * rpn_head.*, roi_head.*); all 0 for a classifier. */
    int det_classes;               /* object classes, background excluded */
    int fpn_channels;              /* FPN output channels */
    int det_fc_channels;           /* box head's shared fc width */
    int mask_channels;             /* mask head's conv width */
    int mask_convs;                /* mask head's 3x3 convs */
} dm_config;

typedef struct dm_load_options {
    size_t size; /* sizeof(dm_load_options) */
    /* .pth training checkpoints: take 'model_ema' instead of 'model'.
     * Safetensors files hold one set of weights: asking one for its EMA
     * weights is refused (DM_ERR_ARGUMENT). */
    int use_ema;
} dm_load_options;
#define DM_LOAD_OPTIONS_INIT {.size = sizeof(dm_load_options)}

/* Load a model file: safetensors (official state-dict names) or a PyTorch
 * .pth checkpoint.  opts may be NULL (the defaults: no EMA).  The model is
 * independent of the file afterwards. */
DM_API dm_status dm_model_load(const char *path, const dm_load_options *opts,
                               dm_model **out);

/* The same for a model file already in memory, with the same options (EMA
 * selection included); the weights are copied, so buf may be freed
 * afterwards. */
DM_API dm_status dm_model_load_buffer(const void *buf, size_t size,
                                      const dm_load_options *opts,
                                      dm_model **out);

/* The model built into the library: DAMamba trained on Fashion-MNIST
 * (28 x 28 grey images, 10 classes named in its metadata), the default of
 * the damamba program. */
DM_API dm_status dm_model_load_default(dm_model **out);

/* A model of an official variant ('F', 'T', 'S' or 'B') with deterministic
 * pseudo-random weights, for tests and benchmarks without a checkpoint.
 * num_classes 0 builds no head. */
DM_API dm_status dm_model_synthetic(char variant, int in_chans,
                                    int num_classes, uint64_t seed,
                                    dm_model **out);

/* The same with an UperNet head of num_classes classes (at least 2) and
 * `channels` channels (the authors' ADE20K models: 150 and 512), for
 * benchmarks. */
DM_API dm_status dm_model_synthetic_seg(char variant, int num_classes,
                                        int channels, uint64_t seed,
                                        dm_model **out);

/* A Mask R-CNN on an official variant's backbone with the authors' head
 * widths (FPN 256, fc 1024, mask convs 256) and `classes` classes, with
 * deterministic pseudo-random weights, for tests and benchmarks. */
DM_API dm_status dm_model_synthetic_detector(char variant, int classes,
                                             uint64_t seed, dm_model **out);

/* Frees a model (NULL is a no-op).  Every pointer obtained from it (config,
 * metadata, class names) becomes invalid; no workspace may still use it. */
DM_API void dm_model_free(dm_model *model);

/* The model's configuration; valid while the model lives. */
DM_API const dm_config *dm_model_config(const dm_model *model);

/* A metadata string of the model file (safetensors __metadata__), or NULL;
 * valid while the model lives. */
DM_API const char *dm_model_metadata(const dm_model *model, const char *key);

/* The model's class names, num_classes of them (seg_classes for a
 * segmentation model, det_classes for a detector): its file's metadata
 * "classes" (a JSON list of names, checked when the model is loaded; a
 * detector's may also be mmcv's one name per line or names separated by
 * commas), else ImageNet's for a 1000-class classifier, ADE20K's for a
 * 150-class segmentation model or COCO's for an 80-class detector, else
 * NULL.  Valid while the model lives. */
DM_API const char *const *dm_model_class_names(const dm_model *model);

/* A segmentation model's label colours, [seg_classes][3] RGB: its file's
 * metadata "palette" (a JSON list of [r, g, b], checked at load), else
 * ADE20K's for 150 classes, else NULL (and NULL for a classifier).  Valid
 * while the model lives. */
DM_API const uint8_t *dm_model_palette(const dm_model *model);

/* A detector's COCO category ids, det_classes of them: COCO's where every
 * class name is one of COCO's, else index + 1; NULL for other models.
 * Valid while the model lives. */
DM_API const int *dm_model_category_ids(const dm_model *model);

/* COCO's 80 object classes in index order ("person" .. "toothbrush") and
 * their category ids (1 .. 90, with gaps); static storage. */
#define DM_COCO_CLASSES 80
DM_API const char *const *dm_coco_class_names(void);
DM_API const int *dm_coco_category_ids(void);

/* The 1000 ImageNet-1k class names in index order (from "tench" to "toilet
 * tissue"); static storage. */
#define DM_IMAGENET_CLASSES 1000
DM_API const char *const *dm_imagenet_class_names(void);

/* Output size of stage s (0..3) for an input of h x w pixels. */
DM_API dm_status dm_stage_shape(const dm_model *model, int h, int w,
                                int stage, int *channels, int *out_h,
                                int *out_w);

/* Multiply-accumulate operations of one forward pass of one h x w image
 * (with the UperNet head's convolutions, for a segmentation model;
 * INT64_MAX when there are more). */
DM_API int64_t dm_model_macs(const dm_model *model, int h, int w);

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
DM_API dm_status dm_backend_available(dm_backend backend);
/* "cpu" or "cuda"; static storage. */
DM_API const char *dm_backend_name(dm_backend backend);

/* -------------------------------------------------------------- workspace */

typedef struct dm_workspace dm_workspace;

/* Scratch memory for batches of up to max_batch images of up to
 * max_h x max_w pixels, on the CPU.  A forward pass allocates nothing else
 * (but the first in half precision: see dm_workspace_set_precision).
 * The model must outlive the workspace, and the workspace belongs to it:
 * dm_forward refuses it (DM_ERR_ARGUMENT) with a model of any other
 * configuration; another model of the same configuration it runs. */
DM_API dm_status dm_workspace_create(const dm_model *model, int max_batch,
                                     int max_h, int max_w,
                                     dm_workspace **out);

/* The same on a chosen backend; dm_forward then runs there.  A CUDA
 * workspace is made on the calling thread's current CUDA device (device 0
 * unless the caller chose another); it serves only the model it was created
 * for, and only one thread at a time (as any workspace).  The model stays
 * read-only and shareable. */
DM_API dm_status dm_workspace_create_on(const dm_model *model,
                                        dm_backend backend, int max_batch,
                                        int max_h, int max_w,
                                        dm_workspace **out);

/* The same on device number `device` of the backend (0 for the CPU, which
 * has one).  A CUDA workspace holds on its device its own copy of the
 * model's parameters, next to every device and pinned host buffer a forward
 * pass needs, all allocated here once: two workspaces of one model hold two
 * copies (dm_workspace_bytes counts them).  Fails with DM_ERR_UNSUPPORTED
 * when the device cannot run this build's code (see the gpu_archs build
 * option).  The CUDA calls of the library leave the calling thread's
 * current device as they found it. */
DM_API dm_status dm_workspace_create_on_device(const dm_model *model,
                                               dm_backend backend, int device,
                                               int max_batch, int max_h,
                                               int max_w, dm_workspace **out);
/* Frees a workspace (NULL is a no-op). */
DM_API void dm_workspace_free(dm_workspace *ws);

/* The backend the workspace runs on. */
DM_API dm_backend dm_workspace_backend(const dm_workspace *ws);

/* Bytes the workspace holds (device memory, for a CUDA workspace). */
DM_API size_t dm_workspace_bytes(const dm_workspace *ws);

/* The most threads a workspace runs on: beyond it, starting and waking
 * the threads would cost more than any pass they share. */
#define DM_MAX_THREADS 1024

/* Threads the workspace uses from now on (1 <= n <= DM_MAX_THREADS, else
 * DM_ERR_ARGUMENT), instead of dm_threads() at creation: a CPU workspace's
 * forward passes, detection and segmentation, and a CUDA workspace's work
 * on the host (resizing and softmax of segmentation logits).  The threads
 * are the workspace's own: nothing outside it changes, and no thread is
 * shared with the process (none is OpenMP's, which does not survive a
 * fork()). */
DM_API dm_status dm_workspace_set_threads(dm_workspace *ws, int n);

/* The precision of a workspace's matrix products: every linear layer and
 * convolution multiplies its weight and its input rounded to nearest (ties
 * to even) to this precision, and sums the products in float32.  Depthwise
 * convolutions, norms, the sampler, the scan, activations and softmax stay
 * in float32 whatever is chosen. */
typedef enum dm_precision {
    DM_PRECISION_F32,  /* float32 throughout (the default) */
    DM_PRECISION_BF16, /* bfloat16: float32's range, 8 bits of significand */
    DM_PRECISION_F16,  /* IEEE half: 11 bits of significand, |x| < 65520 */
} dm_precision;

/* "f32", "bf16" or "f16"; NULL for a value outside the enum. */
DM_API const char *dm_precision_name(dm_precision precision);

/* How a CPU workspace computes products in `precision` on this machine:
 * the name of the instruction set that multiplies half-precision values
 * natively ("avx512-bf16"; on aarch64 "neon-fp16" with FEAT_FHM, "neon-bf16"
 * with FEAT_BF16), or "widened" on a CPU without such instructions: the same
 * rounded values multiplied in float32, so results agree with
 * the native kernels up to summation order, without their speed, and the
 * rounded weights are held as float32.  "float32" for DM_PRECISION_F32;
 * NULL for a value outside the enum.  DAMAMBA_ISA=scalar, sse2 or avx2
 * turns the native kernels off, as it does the other SIMD kernels. */
DM_API const char *dm_precision_kernel(dm_precision precision);

/* Compute the workspace's passes in `precision` from now on (CPU
 * workspaces; DM_ERR_UNSUPPORTED on a CUDA one).  In bf16 or f16 the
 * workspace keeps the product weights of the model it runs rounded to the
 * precision: the first pass after this call prepares them, so it
 * allocates, and so does the first pass with another model.  Setting
 * DM_PRECISION_F32 frees them. */
DM_API dm_status dm_workspace_set_precision(dm_workspace *ws, dm_precision precision);

/* ---------------------------------------------------------------- forward */

typedef struct dm_outputs {
    size_t size;                  /* sizeof(dm_outputs) */
    float *logits;                /* n x num_classes, or NULL */
    float *stages[DM_NUM_STAGES]; /* n x C_s x H_s x W_s each, or NULL */
    /* The Dynamic Adaptive Scan's sampling offsets of one block, or NULL:
     * n x H_s x W_s x groups x 2, (dx, dy) in pixels of that stage's grid.
     * Pixel (y, x) of group g samples its features at (x + dx, y + dy). */
    float *offsets;
    int offsets_stage, offsets_block;
} dm_outputs;
#define DM_OUTPUTS_INIT {.size = sizeof(dm_outputs)}

/* Run n images (n x in_chans x h x w, NCHW float32).  Only the outputs whose
 * pointers are non-NULL are written; they must not overlap the input or one
 * another.  On failure their contents are unspecified. */
DM_API dm_status dm_forward(const dm_model *model, dm_workspace *ws,
                            const float *input, int n, int h, int w,
                            const dm_outputs *outputs);

/* ---------------------------------------------------------- probabilities */

/* probs = softmax(logits) over n values, computed in double precision.
 * probs may be logits itself (in place). */
DM_API dm_status dm_softmax(const float *logits, int n, float *probs);

/* The indices of the k largest of n scores (1 <= k <= n), best first; equal
 * scores in index order; a NaN above every number, as torch.topk puts it.
 * index holds k ints. */
DM_API dm_status dm_top_k(const float *scores, int n, int k, int *index);

/* -------------------------------------------------------------- detection */

/* Mask R-CNN with an FPN on a DAMamba backbone (dm_config.det_classes > 0),
 * computed as mmdetection 2.28 does at test time. */

/* Which masks dm_detect() returns (bits of dm_det_settings.masks). */
#define DM_MASKS_BITMAP 1 /* full-size 0/1 bitmaps */
#define DM_MASKS_RLE 2    /* COCO compressed RLE strings */

/* Test-time settings; dm_det_settings_default() gives the authors' values. */
typedef struct dm_det_settings {
    size_t size;       /* sizeof(dm_det_settings) */
    int rpn_pre_nms;   /* best-scoring anchors per level before NMS: 1000 */
    float rpn_iou;     /* RPN NMS: a box overlapping a better one by IoU
                          above this is dropped: 0.7 */
    int rpn_proposals; /* proposals kept after NMS: 1000 */
    float score_thr;   /* detections need a class score above this: 0.05 */
    float iou;         /* per-class NMS IoU threshold: 0.5 */
    int max_dets;      /* detections per image: 100 */
    float mask_thr;    /* a pixel belongs to a mask at probability >= this: 0.5 */
    int masks;         /* DM_MASKS_* bits: DM_MASKS_BITMAP */
} dm_det_settings;

/* The authors' settings, size set. */
DM_API void dm_det_settings_default(dm_det_settings *out);

/* How the model input was made from the original image: resized to
 * img_h x img_w (the input may be padded beyond that), from an original of
 * ori_h x ori_w (at most 1e9 pixels: masks come at that size); scale_factor
 * (w, h, w, h) is resized size / original. */
typedef struct dm_det_image {
    int img_h, img_w;
    int ori_h, ori_w;
    float scale_factor[4];
} dm_det_image;

/* One image's detections, best first.  Free with dm_detections_free(). */
typedef struct dm_detections {
    int count;
    float *boxes;      /* count x 4: x1, y1, x2, y2 in original-image pixels */
    float *scores;     /* count */
    int *labels;       /* count: class index, 0 .. det_classes - 1 */
    int mask_h, mask_w;/* the original image's size */
    uint8_t *masks;    /* count x mask_h x mask_w bytes 0/1 (DM_MASKS_BITMAP), or NULL */
    char **rle;        /* count COCO compressed RLE 'counts' strings, column-major
                          runs (DM_MASKS_RLE), or NULL */
    int num_proposals;
    float *proposals;  /* num_proposals x 5: x1, y1, x2, y2 (input pixels), score */
    /* Wall-clock seconds of the call's parts: the network up to the RPN's
     * outputs (backbone, FPN, RPN head), choosing proposals, the box head
     * with per-class NMS, the mask head with pasting and encoding. */
    double seconds[4];
} dm_detections;

/* Detect objects in one input image (1 x 3 x h x w, normalized and padded)
 * with a Mask R-CNN model.  ws is a workspace of the model for at least
 * h x w, on either backend: the networks run there, choosing proposals and
 * detections and pasting masks on the host.  The heads allocate their own
 * memory for the call (device memory, on a CUDA workspace, which also grows
 * its transfer buffers to the call's proposals and detections).  settings
 * may be NULL for the defaults.  On failure out is left empty. */
DM_API dm_status dm_detect(const dm_model *model, dm_workspace *ws, const float *input, int h, int w,
                    const dm_det_image *image, const dm_det_settings *settings, dm_detections *out);

DM_API void dm_detections_free(dm_detections *dets);

/* ----------------------------------------------------------------- images */

/* Decoded images are refused above this many pixels (width x height), checked
 * from the file's header before any pixel is decoded: 8192 x 8192. */
#define DM_IMAGE_MAX_PIXELS (8192 * 8192)
/* So is an image whose decoding would take more memory than this, counted
 * from the header as 3 bytes per sample (6 at 16 bits): 8192 x 8192 RGB
 * passes at 8 bits (576 MiB), not at 16.  A JPEG counts its pixels, and
 * when it has several scans (progressive) 128 bytes per 8 x 8 block of each
 * component; a WebP 16 bytes per pixel.  Images decoded at once by several
 * threads share twice this much; the others wait their turn. */
#define DM_IMAGE_MAX_DECODE_BYTES ((size_t)1 << 30)
/* A JPEG of more scans than this is refused: each scan passes over the
 * whole image, so a small file of thousands of scans would take minutes to
 * decode.  Encoders write one scan, or about ten when progressive. */
#define DM_IMAGE_MAX_JPEG_SCANS 100

/* An 8-bit image: height x width pixels of `channels` interleaved bytes,
 * rows top to bottom. */
typedef struct dm_image {
    int width, height;
    int channels;    /* 1 (grey) or 3 (RGB) */
    uint8_t *pixels; /* height * width * channels bytes */
} dm_image;

/* Decode a PNG, JPEG, WebP (an animation's first frame), BMP, GIF (first
 * frame), TGA or PNM (binary PGM/PPM) file into `channels` channels (1 or 3), giving the pixels PIL's open and
 * convert("RGB") or convert("L") give.  Alpha is dropped (a GIF's
 * transparent pixels show their palette colour); colour becomes grey as
 * PIL's convert("L") computes it, grey becomes RGB by repetition.  Free the
 * result with dm_image_free(). */
DM_API dm_status dm_image_load(const char *path, int channels, dm_image *out);

/* The same for an encoded image already in memory (not kept). */
DM_API dm_status dm_image_load_memory(const void *data, size_t size,
                                      int channels, dm_image *out);

/* Whose decoding an image load reproduces.  The two differ on JPEG and PNG
 * files with an EXIF orientation tag, which OpenCV applies and PIL ignores;
 * on CMYK JPEGs, converted to RGB with each one's arithmetic (up to 2
 * levels apart); on 16-bit grey PNGs, whose samples OpenCV takes the high
 * byte of and Pillow clips at 255; on 16-bit BMPs, whose 5-bit fields
 * OpenCV shifts and Pillow scales; and on damaged WebPs, refused or
 * decoded as each reference's call into libwebp does. */
typedef enum dm_image_convention {
    DM_IMAGE_PIL,    /* PIL's open and convert: the classifier's evaluation
                        transform (dm_image_load) */
    DM_IMAGE_OPENCV, /* OpenCV's imread / imdecode in IMREAD_COLOR mode, which
                        mmsegmentation's and mmdetection's test pipelines
                        use: what dm_mm_transform_image, dm_segment_image and
                        the detector expect.  Colour only (channels 3). */
} dm_image_convention;

/* dm_image_load and dm_image_load_memory in either convention.  Under
 * DM_IMAGE_OPENCV the image is turned as its EXIF orientation tag says (a
 * JPEG's first APP1 segment, a PNG's eXIf chunk; tags 5 to 8 swap width and
 * height), read as OpenCV reads it. */
DM_API dm_status dm_image_load_as(const char *path, int channels, dm_image_convention convention,
                                  dm_image *out);
DM_API dm_status dm_image_load_memory_as(const void *data, size_t size, int channels,
                                         dm_image_convention convention, dm_image *out);

/* Release the pixels of an image loaded by this library and zero it. */
DM_API void dm_image_free(dm_image *image);

typedef enum dm_interpolation {
    DM_INTERP_BICUBIC,  /* PIL's BICUBIC (a = -0.5), antialiased when shrinking */
    DM_INTERP_BILINEAR, /* PIL's BILINEAR, antialiased when shrinking */
} dm_interpolation;

/* How an image becomes a model input, as torchvision's evaluation transform
 * does it: Resize (PIL, 8-bit), CenterCrop, ToTensor, Normalize. */
typedef struct dm_preprocess {
    size_t size;     /* sizeof(dm_preprocess) */
    int resize;      /* > 0: shorter side scaled to this, aspect kept */
    int resize_h;    /* resize == 0 and both > 0: scaled to exactly */
    int resize_w;    /*   resize_h x resize_w; all 0: size kept; one alone:
                      *   refused */
    int crop;        /* > 0: center crop crop x crop; 0: no crop */
    dm_interpolation interpolation;
    int channels;    /* 1 or 3 */
    float mean[3];   /* per channel, on pixels scaled to [0, 1] */
    float std[3];
} dm_preprocess;
#define DM_PREPROCESS_INIT {.size = sizeof(dm_preprocess)}

/* The model's preprocessing: its file's metadata "preprocess" (a JSON object
 * with keys resize, crop, interpolation, channels, mean, std), else the
 * ImageNet evaluation transform (resize 256, crop 224, bicubic, mean 0.485
 * 0.456 0.406, std 0.229 0.224 0.225; a one-channel model gets the averages
 * 0.449 and 0.226).  model may be NULL for the ImageNet defaults.  out->size
 * must be set; the fields it covers are written (zeros on failure). */
DM_API dm_status dm_preprocess_default(const dm_model *model,
                                       dm_preprocess *out);

/* Size of the tensor dm_image_preprocess() makes of a width x height image;
 * fails when the settings are invalid or the crop is larger than the
 * resized image. */
DM_API dm_status dm_preprocess_output_size(const dm_preprocess *settings,
                                           int width, int height, int *out_h,
                                           int *out_w);

/* Resize, crop and normalize an image into out: settings->channels x out_h
 * x out_w float32 (CHW), the sizes dm_preprocess_output_size() gives.  An
 * image of other channels than the settings' (here also 2, grey and alpha,
 * or 4, RGBA: the alpha is dropped) is converted first.  out must not
 * overlap the image's pixels. */
DM_API dm_status dm_image_preprocess(const dm_image *image,
                                     const dm_preprocess *settings,
                                     float *out);

/* The OpenMMLab test transform (mmcv 1.7's Resize with keep_ratio,
 * RandomFlip, Normalize with to_rgb), as mmsegmentation and mmdetection
 * apply it: the image is scaled, keeping its aspect ratio, as large as fits
 * a long side of scale_long * ratio and a short side of scale_short * ratio,
 * with OpenCV's 8-bit bilinear resize, optionally flipped left to right, and
 * normalized per RGB channel in pixel units. */
typedef struct dm_mm_transform {
    int scale_long, scale_short; /* img_scale, e.g. (2048, 512) */
    double ratio;                /* multi-scale ratio; 1 for img_scale itself */
    int flip;                    /* 1: flip horizontally after the resize */
    float mean[3], std[3];       /* RGB, on 0..255 pixels */
    int pad_to;                  /* > 0: the tensor is zero-padded at the bottom
                                    and right to multiples of this (mmdet's Pad) */
} dm_mm_transform;

/* Tensor side for a resized side of n pixels: n, or n padded up. */
static inline int dm_mm_padded(const dm_mm_transform *t, int n)
{
    return t->pad_to > 0 ? (n + t->pad_to - 1) / t->pad_to * t->pad_to : n;
}

/* mmsegmentation's ADE20K test transform: img_scale (2048, 512), ratio 1,
 * no flip, mean 123.675 116.28 103.53, std 58.395 57.12 57.375. */
DM_API dm_mm_transform dm_mm_transform_ade20k(void);

/* mmdetection's COCO test transform: img_scale (1333, 800), ratio 1, no
 * flip, the same mean and std, padded to multiples of 32. */
DM_API dm_mm_transform dm_mm_transform_coco(void);

/* Size of the tensor dm_mm_transform_image() makes of a width x height
 * image, and if scale_factor is non-NULL mmcv's scale factor
 * (w_new / w, h_new / h, w_new / w, h_new / h). */
DM_API dm_status dm_mm_transform_size(const dm_mm_transform *t, int width,
                                      int height, int *out_h, int *out_w,
                                      float scale_factor[4]);

/* Apply the transform to an RGB image: out is 3 x dm_mm_padded(out_h) x
 * dm_mm_padded(out_w) float32 (CHW, RGB), out_h and out_w the sizes
 * dm_mm_transform_size() gives (the resized image, mmdet's img_shape).  A
 * grey image is repeated into three channels first.  The references'
 * pixels come from dm_image_load_as(..., DM_IMAGE_OPENCV, ...). */
DM_API dm_status dm_mm_transform_image(const dm_image *image,
                                       const dm_mm_transform *t, float *out);

/* ----------------------------------------------------------- segmentation */

/* A model with an UperNet head (config.seg_classes > 0) labels every pixel,
 * as mmsegmentation 0.30's EncoderDecoder does: the head's logits at 1/4
 * scale are resized (bilinear, align_corners=False) to the network input.
 * The backbone and the head run on the workspace's backend; resizing,
 * averaging and labelling happen on the CPU. */
typedef enum dm_seg_mode {
    DM_SEG_WHOLE, /* the whole input at once */
    DM_SEG_SLIDE, /* crop x crop windows stride apart, placed as mmseg places
                   * them; logits averaged where windows overlap */
} dm_seg_mode;

typedef struct dm_seg_options {
    dm_seg_mode mode;
    int crop_h, crop_w;     /* slide: window size (ADE20K: 512 x 512) */
    int stride_h, stride_w; /* slide: window step (ADE20K: 341 x 341); a
                             * stride longer than its crop is refused
                             * where it leaves pixels between windows */
    /* dm_segment_image only: mmseg's multi-scale + flip test (ratios 0.5,
     * 0.75, 1, 1.25, 1.5, 1.75, each also flipped; softmax outputs
     * averaged) instead of the transform's own ratio and flip. */
    int multi_scale_flip;
} dm_seg_options;

/* The ADE20K test settings: slide, 512 x 512 windows, stride 341. */
DM_API dm_seg_options dm_seg_options_ade20k(void);

/* Outputs of dm_segment; K = config.seg_classes, h4 x w4 the size of stage
 * 0 (dm_stage_shape).  Only the non-NULL ones are written. */
typedef struct dm_seg_outputs {
    float *decode_logits; /* n x K x h4 x w4, the head's output (whole mode) */
    float *seg_logits;    /* n x K x h x w, resized to the input */
    int32_t *seg_pred;    /* n x h x w, the class of the largest logit */
} dm_seg_outputs;

/* Segment n inputs (n x in_chans x h x w, NCHW float32).  The workspace
 * must hold n images of h x w (whole) or of the window clipped to the input
 * (slide).  Slide mode allocates its window and sum buffers. */
DM_API dm_status dm_segment(const dm_model *model, dm_workspace *ws,
                            const float *input, int n, int h, int w,
                            const dm_seg_options *options,
                            const dm_seg_outputs *outputs);

/* Segment a decoded image (as mmsegmentation decodes it: DM_IMAGE_OPENCV)
 * end to end as mmsegmentation's test does: the transform (or its
 * multi-scale + flip set), inference in the options' mode, logits resized
 * to the image's size, softmax, averaged over the augmentations.  probs (K x height x width) and labels (height x width)
 * may each be NULL.  The workspace must hold one network input of the size
 * dm_segment_image_size() gives.  The transform pads nothing (pad_to 0: a
 * padded one is refused, as mmseg's test pipeline has no Pad). */
DM_API dm_status dm_segment_image(const dm_model *model, dm_workspace *ws,
                                  const dm_image *image,
                                  const dm_mm_transform *transform,
                                  const dm_seg_options *options, float *probs,
                                  int32_t *labels);

/* The network input size (ws_h x ws_w, batch 1) dm_segment_image needs a
 * workspace for, for a width x height image.  Options dm_segment_image
 * refuses are refused here too; on failure ws_h and ws_w are unchanged. */
DM_API dm_status dm_segment_image_size(const dm_mm_transform *transform,
                                       const dm_seg_options *options, int width,
                                       int height, int *ws_h, int *ws_w);

/* ---------------------------------------------------------------- runtime */

/* The instruction set the kernels use ("scalar", "sse2", "avx2", "avx512",
 * "neon"): the best this CPU has.  The environment variable DAMAMBA_ISA
 * forces one;
 * if this build or CPU lacks it, dm_isa() returns "none" and
 * dm_workspace_create and dm_forward fail with DM_ERR_UNSUPPORTED.  Static
 * storage. */
DM_API const char *dm_isa(void);

/* Threads a new CPU workspace uses: DAMAMBA_THREADS (a whole number; while
 * it holds anything else, CPU workspaces are refused with DM_ERR_ARGUMENT
 * naming it, and this passes over it), else the first number of
 * OMP_NUM_THREADS, else the usable cores: those the process may run on (its CPU affinity),
 * no more than the CPU quota of its control groups grants (a container's
 * --cpus, rounded up; read at the first call); at most DM_MAX_THREADS
 * (dm_workspace_set_threads() changes a workspace's). */
DM_API int dm_threads(void);

#ifdef __cplusplus
}
#endif

#endif /* DAMAMBA_H */
