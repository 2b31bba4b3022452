/* unpickle.h - a restricted unpickler for PyTorch state dicts.
 *
 * It builds plain values (numbers, strings, tuples, lists, dicts) and knows
 * the few globals a state dict uses: collections.OrderedDict, torch.Size,
 * torch._utils._rebuild_tensor_v2 and the torch.*Storage types (through
 * persistent ids).  Every other global becomes an inert object that
 * swallows whatever is done to it.  Nothing is imported or executed. */
#ifndef DM_UNPICKLE_H
#define DM_UNPICKLE_H

#include "tensor_file.h"

#include <stddef.h>
#include <stdint.h>

typedef enum pk_kind {
    PK_NONE,
    PK_BOOL,
    PK_INT,    /* fits in int64 */
    PK_FLOAT,
    PK_STRING, /* str or bytes */
    PK_TUPLE,
    PK_LIST,   /* also sets */
    PK_DICT,   /* items hold key, value, key, value, ... */
    PK_GLOBAL,
    PK_STORAGE,
    PK_TENSOR, /* the arguments of _rebuild_tensor_v2, checked by the caller */
    PK_OBJECT, /* anything else: inert */
} pk_kind;

typedef enum pk_global {
    PK_G_OTHER,
    PK_G_ORDERED_DICT,
    PK_G_REBUILD_TENSOR,
    PK_G_STORAGE,
    PK_G_SIZE,
    PK_G_REBUILD_PARAMETER,
} pk_global;

typedef struct pk_value pk_value;
struct pk_value {
    pk_kind kind;
    int64_t integer;    /* PK_BOOL, PK_INT; PK_STORAGE: element count */
    const char *str;    /* PK_STRING; PK_STORAGE: its key (into the pickle) */
    size_t len;
    pk_value **items;   /* PK_TUPLE, PK_LIST, PK_DICT */
    size_t count, cap;
    pk_global global;   /* PK_GLOBAL */
    dm_dtype dtype;     /* PK_GLOBAL storage types, PK_STORAGE */
    pk_value *args;     /* PK_TENSOR: the argument tuple */
};

typedef struct pk_block pk_block;

typedef struct dm_pickle {
    pk_value *root;
    pk_block *blocks; /* every value, for freeing */
} dm_pickle;

/* The unpickler's memory (values, containers, stack, memo) stays under this
 * many bytes per byte of pickle, plus one block of values; a pickle that
 * needs more is refused.  PyTorch checkpoints need about 16. */
#define DM_PICKLE_BYTES_PER_BYTE 64

/* Unpickle len bytes.  Errors name the byte offset and the problem. */
dm_status dm_unpickle(const unsigned char *buf, size_t len, dm_pickle *out);
void dm_pickle_free(dm_pickle *pickle);

/* Value of key in a dict (the last one set), or NULL. */
const pk_value *pk_dict_get(const pk_value *dict, const char *key);

#endif
