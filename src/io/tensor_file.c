/* tensor_file.c - what every format's tensors share: reading a file for a
 * parser, looking tensors up, closing, converting to float32. */
#include "tensor_file.h"

#include "error.h"
#include "internal_api.h"

#include <stdlib.h>
#include <string.h>

dm_status dm_tensor_file_read(const char *path, dm_parse_fn parse, int use_ema, dm_tensor_file *out)
{
    memset(out, 0, sizeof *out);
    char *bytes;
    size_t size;
    dm_status st = dm_read_input(path, SIZE_MAX - 1, "model reader", &bytes, &size);
    if (st == DM_OK && (st = parse(bytes, size, use_ema, out)) == DM_OK) {
        out->bytes = bytes;
        return DM_OK;
    }
    free(bytes);
    dm_error_prefix("%s: ", path);
    return st;
}

static int by_name(const void *a, const void *b, void *file)
{
    const dm_tensor *t = ((const dm_tensor_file *)file)->tensors;
    return strcmp(t[*(const size_t *)a].name, t[*(const size_t *)b].name);
}

dm_status dm_tensor_file_index(dm_tensor_file *file)
{
    free(file->by_name);
    file->by_name = malloc((file->count ? file->count : 1) * sizeof *file->by_name);
    if (!file->by_name) return dm_fail(DM_ERR_NOMEM, "out of memory indexing %zu tensors", file->count);
    for (size_t i = 0; i < file->count; i++) file->by_name[i] = i;
    qsort_r(file->by_name, file->count, sizeof *file->by_name, by_name, file);
    for (size_t i = 1; i < file->count; i++) {
        const char *name = file->tensors[file->by_name[i]].name;
        if (strcmp(file->tensors[file->by_name[i - 1]].name, name) == 0)
            return dm_fail(DM_ERR_FORMAT, "tensor '%s' appears twice", name);
    }
    return DM_OK;
}

const dm_tensor *dm_tensor_file_find(const dm_tensor_file *file, const char *name)
{
    if (!file->by_name) {
        for (size_t i = 0; i < file->count; i++)
            if (strcmp(file->tensors[i].name, name) == 0) return &file->tensors[i];
        return NULL;
    }
    size_t lo = 0, hi = file->count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const dm_tensor *t = &file->tensors[file->by_name[mid]];
        int c = strcmp(t->name, name);
        if (c == 0) return t;
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

void dm_tensor_file_close(dm_tensor_file *file)
{
    if (!file) return;
    for (size_t i = 0; i < file->count; i++) {
        free(file->tensors[i].name);
        free(file->tensors[i].owned);
    }
    for (size_t i = 0; i < file->meta_count; i++) {
        free(file->meta[i].key);
        free(file->meta[i].value);
    }
    free(file->tensors);
    free(file->by_name);
    free(file->meta);
    free(file->bytes);
    memset(file, 0, sizeof *file);
}

const char *dm_tensor_file_meta(const dm_tensor_file *file, const char *key)
{
    for (size_t i = 0; i < file->meta_count; i++)
        if (strcmp(file->meta[i].key, key) == 0) return file->meta[i].value;
    return NULL;
}

void dm_tensor_to_f32(const dm_tensor *t, float *dst)
{
    const unsigned char *p = t->data;
    for (int64_t i = 0; i < t->numel; i++) {
        uint16_t h;
        switch (t->dtype) {
        case DM_F32: memcpy(&dst[i], p + 4 * i, 4); break;
        case DM_F64: { double d; memcpy(&d, p + 8 * i, 8); dst[i] = (float)d; break; }
        case DM_F16: memcpy(&h, p + 2 * i, 2); dst[i] = dm_f16_to_f32(h); break;
        case DM_BF16: memcpy(&h, p + 2 * i, 2); dst[i] = dm_bf16_to_f32(h); break;
        default: dst[i] = 0.0f; break;
        }
    }
}
