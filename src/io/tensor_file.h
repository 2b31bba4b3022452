/* tensor_file.h - a model file's named tensors, whatever its format.
 *
 * Readers (safetensors, .pth) fill a dm_tensor_file: a list of named tensors
 * whose data stays valid until dm_tensor_file_close().  Nothing is converted
 * here; the model loader converts to float32 as it binds parameters. */
#ifndef DM_TENSOR_FILE_H
#define DM_TENSOR_FILE_H

#include "damamba.h"

#include <stddef.h>
#include <stdint.h>

#define DM_MAX_DIMS 8

typedef enum dm_dtype {
    DM_F32,
    DM_F16,
    DM_BF16,
    DM_F64,
    DM_I64,
    DM_I32,
    DM_U8,
    DM_I8,
    DM_BOOL,
} dm_dtype;

typedef struct dm_tensor {
    char *name;
    dm_dtype dtype;
    int ndim;
    int64_t shape[DM_MAX_DIMS];
    int64_t numel;
    const void *data; /* little-endian, dtype-sized elements, maybe unaligned */
    size_t nbytes;
} dm_tensor;

typedef struct dm_meta {
    char *key;
    char *value;
} dm_meta;

typedef struct dm_tensor_file {
    dm_tensor *tensors;
    size_t count;
    size_t *by_name; /* tensor indices in name order, or NULL: see dm_tensor_file_index */
    dm_meta *meta;
    size_t meta_count;
    /* Backing storage, released by dm_tensor_file_close(). */
    void *map;
    size_t map_size;
    void *owned;
} dm_tensor_file;

/* Bytes per element of a dtype. */
size_t dm_dtype_size(dm_dtype dtype);
/* Name of a dtype as safetensors spells it ("F32", ...). */
const char *dm_dtype_name(dm_dtype dtype);

/* Open a safetensors file (memory-mapped). */
dm_status dm_safetensors_open(const char *path, dm_tensor_file *out);
/* Parse a safetensors image already in memory (not copied: buf must outlive
 * the result).  Used by the file reader and the fuzz target. */
dm_status dm_safetensors_parse(const void *buf, size_t size,
                               dm_tensor_file *out);

/* Open any model file: .pth (zip) or safetensors, told apart by content. */
dm_status dm_tensor_file_open(const char *path, int use_ema,
                              dm_tensor_file *out);

void dm_tensor_file_close(dm_tensor_file *file);

/* Map a whole file read-only and parse it with a format's parser; the file
 * keeps the mapping.  Errors get the path as a prefix. */
typedef dm_status (*dm_parse_fn)(const void *buf, size_t size, int use_ema,
                                 dm_tensor_file *out);
dm_status dm_tensor_file_map(const char *path, dm_parse_fn parse, int use_ema,
                             dm_tensor_file *out);

/* Sort the names for dm_tensor_file_find (log n, where a model's n lookups
 * were n^2 without it) and refuse a name that appears twice.  The readers
 * call it once the tensors are listed. */
dm_status dm_tensor_file_index(dm_tensor_file *file);

/* The tensor of that name, or NULL: a binary search once the file is
 * indexed, a linear one before. */
const dm_tensor *dm_tensor_file_find(const dm_tensor_file *file,
                                     const char *name);
const char *dm_tensor_file_meta(const dm_tensor_file *file, const char *key);

/* Write tensors to a safetensors file, replacing it whole or not at all
 * (files.h). */
dm_status dm_safetensors_write(const char *path, const dm_tensor *tensors,
                               size_t count, const dm_meta *meta,
                               size_t meta_count);

#endif
