/* json.h - a small strict JSON reader for safetensors headers and model
 * metadata (class lists, preprocessing settings). */
#ifndef DM_JSON_H
#define DM_JSON_H

#include <stddef.h>
#include <stdio.h>
#include <stdint.h>

#include "internal_api.h"

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

#endif
