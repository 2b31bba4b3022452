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
    void *owned; /* data, where a reader made it (freed with the file), or NULL */
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
    size_t *by_name; /* tensor indices in name order, or NULL (dm_tensor_file_index) */
    dm_meta *meta;
    size_t meta_count;
    void *bytes; /* the file read into memory, freed by dm_tensor_file_close() */
} dm_tensor_file;

/* Bytes per element of a dtype. */
size_t dm_dtype_size(dm_dtype dtype);

/* Open a safetensors file (memory-mapped). */
dm_status dm_safetensors_open(const char *path, dm_tensor_file *out);

void dm_tensor_file_close(dm_tensor_file *file);

/* The tensor of that name, or NULL: a binary search once the file is
 * indexed (the readers index what they read), a linear one before. */
const dm_tensor *dm_tensor_file_find(const dm_tensor_file *file, const char *name);

/* Write tensors to a safetensors file, replacing it whole or not at all
 * (below). */
dm_status dm_safetensors_write(const char *path, const dm_tensor *tensors, size_t count, const dm_meta *meta,
                               size_t meta_count);

/* Convert in_path (.pth or safetensors) to a safetensors file under the
 * official names, with the inferred configuration as metadata and
 * floating-point weights stored as dtype (DM_F32, DM_F16 or DM_BF16,
 * rounding to nearest even).  The input must be a DAMamba the library can
 * load; out_path must not be the input. */
dm_status dm_convert(const char *in_path, const char *out_path, int use_ema, dm_dtype dtype);

/* ------------------------------------------------------- output files */

/* An output replaced whole or not at all.  The content goes to a new file
 * beside PATH, named PATH.tmp.XXXXXX with six random characters (PATH's file
 * name cut short where the suffix would pass NAME_MAX) and created
 * with O_CREAT | O_EXCL | O_NOFOLLOW: no existing file, and no symbolic
 * link planted under any name, is ever opened for writing, and concurrent
 * writers to one PATH each write their own file.  Once complete it is
 * renamed over PATH in one step, so PATH holds either its old content or
 * the whole new one (the last writer wins); on failure the temporary file
 * is removed.  A PATH that is a symbolic link replaces the regular file
 * the link names (a link to nothing is refused).  A PATH that is a device
 * or a named pipe (/dev/null) is written in place; a pipe without a reader
 * is refused.  /dev/stdout, /dev/stderr, /dev/fd/N and /proc/self/fd/N are
 * the process's own descriptors, as a shell's redirections take them:
 * written through a duplicate, at its offset (appending to a file opened
 * for appending). */
struct dm_outfile_sink;
typedef struct dm_outfile {
    FILE *f;
    char *path;   /* as the caller named it, for messages */
    char *target; /* the file replaced: path, or the file its link names */
    char *tmp;
    struct dm_outfile_sink *sink; /* the descriptor under f and its first write error */
    int pending;                  /* its slot among the temporaries being written, or -1 */
} dm_outfile;

/* Text written through a stdio stream into memory, which, unlike
 * open_memstream's, says when it could not hold what was written (a
 * memory stream that cannot grow drops text without setting its error,
 * and its fclose succeeds). */
typedef struct dm_memout {
    FILE *f;    /* write here */
    char *text; /* after dm_memout_close: the text, NUL-terminated (free it) */
    size_t len;
    size_t cap;
    int failed; /* a write was not held; a writer may set it to give up */
} dm_memout;

/* 0, or -1 out of memory. */
int dm_memout_open(dm_memout *m);
/* Close m->f: 0 with m->text and m->len set when every write was held;
 * otherwise -1, m->text freed and NULL. */
int dm_memout_close(dm_memout *m);

/* A descriptor (close it) of the regular file at path, and its size; or -1
 * with the error set, without the path (callers add it).  An input must be
 * a regular file: a FIFO, device or directory is refused before anything
 * is read from it, so opening one never blocks. */
int dm_open_input(const char *path, size_t *size);

/* The whole regular file at path (opened as dm_open_input does), with a
 * NUL after its size bytes, in *data (free it); a file over max_size bytes
 * is refused as too large for `what`.  Errors without the path. */
dm_status dm_read_input(const char *path, size_t max_size, const char *what, char **data, size_t *size);

/* stat() of the file at path, or for "-" of the file on standard input:
 * 0 when there is one. */
struct stat;
int dm_stat_input(const char *path, struct stat *st);

/* DM_ERR_ARGUMENT when path is the same file (device and inode, so hard
 * links and other spellings count) as one of the count inputs: replacing it
 * would destroy an input.  NULL inputs are skipped; "-" is the file on
 * standard input, if it is one. */
dm_status dm_output_distinct(const char *path, const char *const *inputs, size_t count);

/* Create the temporary file for path; write through out->f. */
dm_status dm_outfile_open(const char *path, dm_outfile *out);

/* Close the temporary file and, when ok and every write succeeded, rename
 * it over the path; otherwise remove it.  ok = 0 abandons the output without
 * an error of its own (the caller has one).  Frees out in any case. */
dm_status dm_outfile_finish(dm_outfile *out, int ok);

/* Remove the temporary files of the outputs being written (the first 16
 * at once).  Async-signal-safe: for a program's handler of the signals
 * that end it, so that Ctrl-C or a closed pipe leaves no PATH.tmp.XXXXXX. */
void dm_outfile_remove_temporaries(void);

/* ------------------------------------------------------------ images */

/* dm_image_load_memory_as refusing images over max_pixels (1 to
 * DM_IMAGE_MAX_PIXELS) from their header, before any pixel is decoded: the
 * server's lower limit for what a request may make it decode. */
dm_status dm_image_load_memory_within(const void *data, size_t size, int channels, int64_t max_pixels,
                                      dm_image_convention convention, dm_image *out);

/* Does (v - mean) / std stay a finite float for every sample v from 0 to
 * top, with std positive?  A huge mean or a tiny std (a model's metadata,
 * an option) would otherwise turn every input into infinities and NaNs. */
int dm_normalization_ok(float mean, float std, float top);

/* ------------------------------------------------ operator profiles */

/* One operator-table entry's part in the passes since profiling began. */
typedef struct dm_op_profile {
    const char *entry; /* the table's name for it: "gemm", "scan", ... */
    long calls;
    double seconds;    /* from each call until the operator completed */
    double flops;      /* 2 x multiply-adds of gemm and conv3x3; 0 for the rest */
} dm_op_profile;

/* Time every operator ws's passes run from now on (again from zero when
 * already profiling).  Passes without it run at full speed; with it they
 * read the clock around each operator, and on a backend whose operators
 * run asynchronously (CUDA) wait for each one, losing all overlap. */
dm_status dm_workspace_profile(dm_workspace *ws);

/* The entries called since dm_workspace_profile(), in table order: writes
 * at most max of them to out and returns how many there are (0 when ws is
 * not profiled). */
int dm_workspace_profile_read(const dm_workspace *ws, dm_op_profile *out, int max);

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

/* The parsed tree (nodes of 80 bytes, strings, malloc's overhead) stays
 * under this many bytes per byte of text, plus 4 KiB: the most a document
 * can need (a list of one-digit numbers, as inference requests send). */
#define DM_JSON_BYTES_PER_BYTE 48

/* Parse len bytes.  On failure returns NULL and writes a reason (with the
 * byte offset) to err. */
dm_json *dm_json_parse(const char *text, size_t len, char *err, size_t errlen);

/* The same, refusing a document whose tree would take more than
 * bytes_per_byte per byte of text (plus 4 KiB), for documents such as
 * safetensors headers that never need as much as lists of numbers. */
dm_json *dm_json_parse_bounded(const char *text, size_t len, int bytes_per_byte, char *err, size_t errlen);
void dm_json_free(dm_json *value);

/* Whether a parse that returned NULL failed for want of memory (err then
 * begins "out of memory"), not for its text. */
int dm_json_out_of_memory(const char *err);

/* Member of an object by name, or NULL. */
const dm_json *dm_json_get(const dm_json *object, const char *key);

/* Write s as a JSON string literal (quoted, escaped); 0 on a write error.
 * The output is valid UTF-8 whatever s holds: a byte that does not belong
 * to a well-formed UTF-8 sequence is written as the escape \udcXX of a
 * lone surrogate, as Python's "surrogateescape" error handler decodes it
 * (os.fsencode gives the original bytes back); control characters and DEL
 * are escaped too. */
int dm_json_write_string(FILE *f, const char *s);

/* Write v by the printf format `format` (one double conversion), or null
 * when v is NaN or infinite, which JSON has no number for (a broken
 * model's outputs); 0 on a write error. */
int dm_json_write_number(FILE *f, const char *format, double v);

#endif
