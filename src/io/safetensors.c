/* safetensors.c - read and write the safetensors format: an 8-byte
 * little-endian header length, a JSON header, then raw tensor data.
 * Every size and offset is checked against the file before use. */
#include "safetensors.h"

#include "dtype.h"

#include "error.h"
#include "json.h"
#include "internal_api.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Headers are small (a few hundred kB for the largest models); anything far
 * beyond that is hostile or corrupt.  Parsed, a header may take 24 bytes
 * per byte (real ones take 8 to 12), so at most 384 MiB. */
#define MAX_HEADER_BYTES (16u << 20)
#define HEADER_BYTES_PER_BYTE 24

static int by_offset(const void *a, const void *b)
{
    const dm_tensor *x = a, *y = b;
    const char *px = x->data, *py = y->data;
    return px < py ? -1 : px > py;
}

/* Tensors may not share bytes (a writer that aliases them is broken),
 * checked on a copy sorted by offset: n log n for n tensors. */
static dm_status check_overlaps(const dm_tensor_file *file)
{
    if (file->count < 2) return DM_OK;
    dm_tensor *sorted = malloc(file->count * sizeof *sorted);
    if (!sorted) return dm_fail(DM_ERR_NOMEM, "out of memory reading header");
    memcpy(sorted, file->tensors, file->count * sizeof *sorted);
    dm_status st = DM_OK;
    qsort(sorted, file->count, sizeof *sorted, by_offset);
    /* Against the furthest end so far: an empty tensor between two others
     * must not hide their overlap. */
    const dm_tensor *furthest = NULL;
    for (size_t i = 0; !st && i < file->count; i++) {
        const dm_tensor *t = &sorted[i];
        if (!t->nbytes) continue;
        if (furthest && (const char *)t->data < (const char *)furthest->data + furthest->nbytes)
            st = dm_fail(DM_ERR_FORMAT, "tensors '%s' and '%s' overlap in the data section", furthest->name,
                         t->name);
        if (!furthest || (const char *)t->data + t->nbytes > (const char *)furthest->data + furthest->nbytes)
            furthest = t;
    }
    free(sorted);
    return st;
}

static dm_status parse_tensor(const dm_json *entry, const unsigned char *data,
                              uint64_t data_size, dm_tensor *t)
{
    const dm_json *dtype = dm_json_get(entry, "dtype");
    const dm_json *shape = dm_json_get(entry, "shape");
    const dm_json *offsets = dm_json_get(entry, "data_offsets");
    if (entry->type != DM_JSON_OBJECT || !dtype || !shape || !offsets)
        return dm_fail(DM_ERR_FORMAT, "tensor '%s': entry needs dtype, shape and data_offsets", t->name);
    if (dtype->type != DM_JSON_STRING || !dm_dtype_from_name(dtype->string, &t->dtype))
        return dm_fail(DM_ERR_FORMAT, "tensor '%s': unknown dtype %s%s%s", t->name,
                       dtype->type == DM_JSON_STRING ? "'" : "",
                       dtype->type == DM_JSON_STRING ? dtype->string : "(not a string)",
                       dtype->type == DM_JSON_STRING ? "'" : "");
    if (shape->type != DM_JSON_ARRAY || shape->count > DM_MAX_DIMS)
        return dm_fail(DM_ERR_FORMAT, "tensor '%s': shape must be a list of at most %d sizes", t->name, DM_MAX_DIMS);
    t->ndim = (int)shape->count;
    t->numel = 1;
    int i = 0;
    for (const dm_json *d = shape->child; d; d = d->next, i++) {
        if (d->type != DM_JSON_NUMBER || !d->is_integer || d->integer < 0)
            return dm_fail(DM_ERR_FORMAT, "tensor '%s': shape entry %d is not a size", t->name, i);
        t->shape[i] = d->integer;
        if (d->integer != 0 && t->numel > INT64_MAX / d->integer)
            return dm_fail(DM_ERR_FORMAT, "tensor '%s': shape product overflows", t->name);
        t->numel *= d->integer;
    }
    size_t esize = dm_dtype_size(t->dtype);
    if ((uint64_t)t->numel > UINT64_MAX / esize)
        return dm_fail(DM_ERR_FORMAT, "tensor '%s': size overflows", t->name);
    const dm_json *b = offsets->child, *e = b ? b->next : NULL;
    if (offsets->type != DM_JSON_ARRAY || offsets->count != 2 ||
        b->type != DM_JSON_NUMBER || !b->is_integer || e->type != DM_JSON_NUMBER || !e->is_integer ||
        b->integer < 0 || e->integer < b->integer)
        return dm_fail(DM_ERR_FORMAT, "tensor '%s': data_offsets must be [begin, end] with begin <= end", t->name);
    if ((uint64_t)e->integer > data_size)
        return dm_fail(DM_ERR_FORMAT, "tensor '%s': data_offsets [%lld, %lld] run past the end of the data (%llu bytes)",
                       t->name, (long long)b->integer, (long long)e->integer, (unsigned long long)data_size);
    uint64_t nbytes = (uint64_t)(e->integer - b->integer);
    if (nbytes != (uint64_t)t->numel * esize)
        return dm_fail(DM_ERR_FORMAT, "tensor '%s': data_offsets hold %llu bytes but shape and dtype need %llu",
                       t->name, (unsigned long long)nbytes, (unsigned long long)t->numel * esize);
    t->data = data + b->integer;
    t->nbytes = (size_t)nbytes;
    return DM_OK;
}

/* The offset of the first byte after the length that is not white space
 * (size when there is none). */
static size_t header_start(const unsigned char *bytes, size_t size)
{
    size_t first = 8;
    while (first < size && bytes[first] && strchr(" \t\r\n", bytes[first])) first++; /* strchr finds NUL too */
    return first;
}

int dm_safetensors_plausible(const void *buf, size_t size)
{
    size_t first = header_start(buf, size);
    return size < 8 || first == size || ((const unsigned char *)buf)[first] == '{';
}

dm_status dm_safetensors_parse(const void *buf, size_t size, dm_tensor_file *out)
{
    const unsigned char *bytes = buf;
    memset(out, 0, sizeof *out);
    if (size < 8)
        return dm_fail(DM_ERR_FORMAT, "file too short for a safetensors header (%zu bytes)", size);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | bytes[i];
    /* what follows the length tells a safetensors file from any other file
     * better than the length, which is any 8 bytes of another format */
    if (!dm_safetensors_plausible(buf, size))
        return dm_fail(DM_ERR_FORMAT, "not a safetensors file: what follows the 8-byte length is not a JSON object");
    size_t first = header_start(bytes, size);
    if (hlen > size - 8)
        return dm_fail(DM_ERR_FORMAT, "header length %llu runs past the end of the file (%zu bytes)",
                       (unsigned long long)hlen, size);
    if (hlen > MAX_HEADER_BYTES)
        return dm_fail(DM_ERR_FORMAT, "header length %llu exceeds the %u-byte limit",
                       (unsigned long long)hlen, MAX_HEADER_BYTES);
    if (first >= 8 + hlen) return dm_fail(DM_ERR_FORMAT, "header is not a JSON object");
    char err[160];
    dm_json *root = dm_json_parse_bounded((const char *)bytes + 8, (size_t)hlen, HEADER_BYTES_PER_BYTE, err, sizeof err);
    if (!root && dm_json_out_of_memory(err)) return dm_fail(DM_ERR_NOMEM, "%s reading the header", err);
    if (!root) return dm_fail(DM_ERR_FORMAT, "header is not valid JSON: %s", err);
    dm_status st = DM_OK;
    if (root->type != DM_JSON_OBJECT) {
        st = dm_fail(DM_ERR_FORMAT, "header is not a JSON object");
        goto done;
    }
    out->tensors = calloc(root->count ? root->count : 1, sizeof *out->tensors);
    if (!out->tensors) { st = dm_fail(DM_ERR_NOMEM, "out of memory reading header"); goto done; }
    const unsigned char *data = bytes + 8 + hlen;
    uint64_t data_size = size - 8 - hlen;
    for (const dm_json *m = root->child; m; m = m->next) {
        if (strcmp(m->key, "__metadata__") == 0) {
            if (m->type != DM_JSON_OBJECT) { st = dm_fail(DM_ERR_FORMAT, "__metadata__ is not an object"); goto done; }
            if (out->meta) { st = dm_fail(DM_ERR_FORMAT, "__metadata__ appears twice"); goto done; }
            out->meta = calloc(m->count ? m->count : 1, sizeof *out->meta);
            if (!out->meta) { st = dm_fail(DM_ERR_NOMEM, "out of memory reading metadata"); goto done; }
            for (const dm_json *kv = m->child; kv; kv = kv->next) {
                if (kv->type != DM_JSON_STRING) {
                    st = dm_fail(DM_ERR_FORMAT, "metadata '%s' is not a string", kv->key);
                    goto done;
                }
                dm_meta *md = &out->meta[out->meta_count++];
                md->key = strdup(kv->key);
                md->value = strdup(kv->string);
                if (!md->key || !md->value) { st = dm_fail(DM_ERR_NOMEM, "out of memory reading metadata"); goto done; }
            }
            continue;
        }
        dm_tensor *t = &out->tensors[out->count++];
        t->name = strdup(m->key);
        if (!t->name) { st = dm_fail(DM_ERR_NOMEM, "out of memory reading header"); goto done; }
        if ((st = parse_tensor(m, data, data_size, t)) != DM_OK) goto done;
    }
    if (!(st = dm_tensor_file_index(out))) st = check_overlaps(out);
done:
    dm_json_free(root);
    if (st != DM_OK) dm_tensor_file_close(out);
    return st;
}

static dm_status parse_any(const void *buf, size_t size, int use_ema, dm_tensor_file *out)
{
    (void)use_ema; /* safetensors files hold one set of weights */
    return dm_safetensors_parse(buf, size, out);
}

dm_status dm_safetensors_open(const char *path, dm_tensor_file *out)
{
    return dm_tensor_file_read(path, parse_any, 0, out);
}

/* ------------------------------------------------------------------ write */

dm_status dm_safetensors_write(const char *path, const dm_tensor *tensors, size_t count,
                               const dm_meta *meta, size_t meta_count)
{
    /* The header goes to memory first: its length comes before it. */
    dm_memout m;
    if (dm_memout_open(&m) != 0) return dm_fail(DM_ERR_NOMEM, "out of memory writing %s", path);
    FILE *h = m.f;
    fputc('{', h);
    int first = 1;
    if (meta_count) {
        fputs("\"__metadata__\":{", h);
        for (size_t i = 0; i < meta_count; i++) {
            if (i) fputc(',', h);
            dm_json_write_string(h, meta[i].key);
            fputc(':', h);
            dm_json_write_string(h, meta[i].value);
        }
        fputc('}', h);
        first = 0;
    }
    uint64_t offset = 0;
    for (size_t i = 0; i < count; i++) {
        if (!first) fputc(',', h);
        first = 0;
        dm_json_write_string(h, tensors[i].name);
        fprintf(h, ":{\"dtype\":\"%s\",\"shape\":[", dm_dtype_name(tensors[i].dtype));
        for (int d = 0; d < tensors[i].ndim; d++)
            fprintf(h, "%s%lld", d ? "," : "", (long long)tensors[i].shape[d]);
        fprintf(h, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)offset,
                (unsigned long long)(offset + tensors[i].nbytes));
        offset += tensors[i].nbytes;
    }
    fputc('}', h);
    /* Pad with spaces so the data starts 8-byte aligned. */
    fflush(h);
    for (size_t pad = (8 - (8 + m.len) % 8) % 8; pad; pad--) fputc(' ', h);
    if (dm_memout_close(&m) != 0) return dm_fail(DM_ERR_NOMEM, "out of memory writing %s", path);
    char *header = m.text;
    size_t hsize = m.len;

    dm_outfile out;
    dm_status st = dm_outfile_open(path, &out);
    if (st != DM_OK) {
        free(header);
        return st;
    }
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)((uint64_t)hsize >> (8 * i));
    int ok = fwrite(len8, 1, 8, out.f) == 8 && fwrite(header, 1, hsize, out.f) == hsize;
    for (size_t i = 0; ok && i < count; i++)
        ok = fwrite(tensors[i].data, 1, tensors[i].nbytes, out.f) == tensors[i].nbytes;
    free(header);
    if (!ok) st = dm_fail(DM_ERR_IO, "%s: write failed: %s", path, strerror(errno));
    dm_status finished = dm_outfile_finish(&out, ok);
    return st != DM_OK ? st : finished;
}
