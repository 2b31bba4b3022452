/* internal_api.h - what the damamba program needs from inside the library
 * beyond damamba.h: tensor files (reading inputs, writing results), the
 * checkpoint converter, JSON reading and string output, and error reporting.  Not
 * installed and not exported from libdamamba.so: the program links the
 * library statically.  The program's include path holds this header and
 * damamba.h only. */
#ifndef DM_INTERNAL_API_H
#define DM_INTERNAL_API_H

#include "damamba.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* ------------------------------------------------------------ errors */

#if defined(__GNUC__)
#define DM_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define DM_PRINTF(a, b)
#endif

/* Record a failure for dm_last_error() and return its status, so callers
 * can write `return dm_fail(DM_ERR_FORMAT, "...", ...);`. */
dm_status dm_fail(dm_status status, const char *fmt, ...) DM_PRINTF(2, 3);

/* ------------------------------------------------------- tensor files */

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

/* A model or tensor file's named tensors, whatever its format; the data
 * stays valid until dm_tensor_file_close(). */
typedef struct dm_tensor_file {
    dm_tensor *tensors;
    size_t count;
    dm_meta *meta;
    size_t meta_count;
    /* Backing storage, released by dm_tensor_file_close(). */
    void *map;
    size_t map_size;
    void *owned;
} dm_tensor_file;

/* Open a safetensors file (memory-mapped). */
dm_status dm_safetensors_open(const char *path, dm_tensor_file *out);

void dm_tensor_file_close(dm_tensor_file *file);

const dm_tensor *dm_tensor_file_find(const dm_tensor_file *file, const char *name);

/* Write tensors to a safetensors file.  Writes PATH.tmp, then renames it over
 * PATH, so a failure never leaves a half-written file behind. */
dm_status dm_safetensors_write(const char *path, const dm_tensor *tensors, size_t count, const dm_meta *meta,
                               size_t meta_count);

/* Convert in_path (.pth or safetensors) to a safetensors file under the
 * official names, with the inferred configuration as metadata and
 * floating-point weights stored as dtype (DM_F32, DM_F16 or DM_BF16,
 * rounding to nearest even).  The input must be a DAMamba the library can
 * load; out_path must not be the input. */
dm_status dm_convert(const char *in_path, const char *out_path, int use_ema, dm_dtype dtype);

/* --------------------------------------------------------------- JSON */

/* The library's small strict reader: a parsed value is a tree of dm_json. */
typedef enum dm_json_type {
    DM_JSON_NULL,
    DM_JSON_BOOL,
    DM_JSON_NUMBER,
    DM_JSON_STRING,
    DM_JSON_ARRAY,
    DM_JSON_OBJECT,
} dm_json_type;

typedef struct dm_json {
    dm_json_type type;
    char *key;             /* member name, inside an object */
    char *string;          /* DM_JSON_STRING, decoded UTF-8 */
    double number;         /* DM_JSON_NUMBER */
    int64_t integer;       /* DM_JSON_NUMBER when is_integer */
    int is_integer;
    int boolean;           /* DM_JSON_BOOL */
    struct dm_json *child; /* first element or member */
    struct dm_json *next;  /* next sibling */
    size_t count;          /* number of children */
} dm_json;

/* Parse len bytes.  On failure returns NULL and writes a reason (with the
 * byte offset) to err. */
dm_json *dm_json_parse(const char *text, size_t len, char *err, size_t errlen);
void dm_json_free(dm_json *value);

/* Member of an object by name, or NULL. */
const dm_json *dm_json_get(const dm_json *object, const char *key);

/* Write s as a JSON string literal (quoted, escaped); 0 on a write error. */
int dm_json_write_string(FILE *f, const char *s);

#endif
