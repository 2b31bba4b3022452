/* pth.c - PyTorch checkpoints: torch.save's zip archive holds
 * <archive>/data.pkl (the object, tensors as persistent ids) and one raw
 * little-endian storage per tensor at <archive>/data/<key>.  Tensors point
 * straight into the archive's bytes; a strided view (a channels_last
 * model's weights, a transpose, an expanded tensor) is gathered into a
 * copy of its own. */
#include "pth.h"

#include "dtype.h"
#include "error.h"
#include "json.h"
#include "unpickle.h"
#include "zip.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>


/* The state dict inside the checkpoint's top object. */
static dm_status select_state_dict(const pk_value *root, int use_ema, const pk_value **out)
{
    if (root->kind != PK_DICT) return dm_fail(DM_ERR_FORMAT, "the checkpoint does not hold a dict");
    const pk_value *model = pk_dict_get(root, "model");
    if (model && model->kind == PK_DICT) {
        *out = use_ema ? pk_dict_get(root, "model_ema") : model;
        if (!*out || (*out)->kind != PK_DICT)
            return dm_fail(DM_ERR_FORMAT, "the checkpoint has no 'model_ema' state dict");
        return DM_OK;
    }
    if (use_ema) return dm_fail(DM_ERR_FORMAT, "the checkpoint has no 'model_ema' state dict (it is not a training checkpoint)");
    const pk_value *sd = pk_dict_get(root, "state_dict");
    *out = sd && sd->kind == PK_DICT ? sd : root;
    return DM_OK;
}

/* Copy a view's elements (element size esize, strides in elements from
 * base) in row-major order. */
static void gather_view(const unsigned char *base, const dm_tensor *t, const pk_value *stride, size_t esize,
                        unsigned char *dst)
{
    int64_t index[DM_MAX_DIMS] = {0};
    for (int64_t i = 0; i < t->numel; i++) {
        int64_t at = 0;
        for (int d = 0; d < t->ndim; d++) at += index[d] * stride->items[d]->integer;
        memcpy(dst + (size_t)i * esize, base + (size_t)at * esize, esize);
        for (int d = t->ndim - 1; d >= 0 && ++index[d] == t->shape[d]; d--) index[d] = 0;
    }
}

static int int_tuple(const pk_value *v, int max)
{
    if (v->kind != PK_TUPLE || v->count > (size_t)max) return 0;
    for (size_t i = 0; i < v->count; i++)
        if (v->items[i]->kind != PK_INT || v->items[i]->integer < 0) return 0;
    return 1;
}

/* Tensors may be views of one storage, as PyTorch allows, but a model's
 * weights overlap little: tensors holding more than twice the archive's
 * bytes are refused, or a small file could ask for gigabytes once its
 * tensors are copied out (a thousand views of one 4 MiB storage, a view
 * expanded a millionfold). */
static uint64_t most_held(const dm_zip *zip) { return 2 * (uint64_t)zip->size + (1u << 20); }

/* Check a _rebuild_tensor_v2(storage, offset, size, stride, ...) call and
 * point t at its bytes in the archive, or at a row-major copy of a strided
 * view.  held: the bytes of the tensors so far, t's added. */
static dm_status bind_tensor(dm_zip *zip, const char *prefix, size_t prefix_len,
                             const pk_value *value, dm_tensor *t, uint64_t *held)
{
    const char *name = t->name;
    if (value->kind != PK_TENSOR) return dm_fail(DM_ERR_FORMAT, "entry '%s' is not a tensor", name);
    const pk_value *args = value->args;
    if (args->count < 4)
        return dm_fail(DM_ERR_FORMAT, "tensor '%s': _rebuild_tensor_v2 got %zu arguments, needs at least 4", name, args->count);
    const pk_value *storage = args->items[0], *offset = args->items[1], *size = args->items[2], *stride = args->items[3];
    if (storage->kind != PK_STORAGE) return dm_fail(DM_ERR_FORMAT, "tensor '%s': its first argument is not a storage", name);
    if (offset->kind != PK_INT || offset->integer < 0)
        return dm_fail(DM_ERR_FORMAT, "tensor '%s': storage offset is not a non-negative integer", name);
    if (!int_tuple(size, DM_MAX_DIMS) || !int_tuple(stride, DM_MAX_DIMS) || stride->count != size->count)
        return dm_fail(DM_ERR_FORMAT, "tensor '%s': size and stride must be tuples of at most %d non-negative integers of equal length",
                       name, DM_MAX_DIMS);
    t->dtype = storage->dtype;
    t->ndim = (int)size->count;
    t->numel = 1;
    for (int d = 0; d < t->ndim; d++) {
        int64_t n = size->items[d]->integer;
        if (n && t->numel > INT64_MAX / n) return dm_fail(DM_ERR_FORMAT, "tensor '%s': shape product overflows", name);
        t->shape[d] = n;
        t->numel *= n;
    }
    /* Row-major strides (size-1 dims may have any) read the elements in
     * place; others are gathered.  Either way every element read lies in
     * the storage: the last one read is offset + sum (size - 1) * stride. */
    int64_t expect = 1, last = 0;
    int row_major = 1;
    for (int d = t->ndim - 1; d >= 0 && t->numel; d--) {
        int64_t n = t->shape[d] - 1, s = stride->items[d]->integer;
        if (t->shape[d] != 1 && s != expect) row_major = 0;
        if (n && s > (INT64_MAX - last) / n) return dm_fail(DM_ERR_FORMAT, "tensor '%s': its strides overflow", name);
        last += n * s;
        expect *= t->shape[d];
    }
    size_t esize = dm_dtype_size(t->dtype);
    if (t->numel && (offset->integer >= storage->integer || last > storage->integer - 1 - offset->integer))
        return dm_fail(DM_ERR_FORMAT, "tensor '%s': needs elements [%lld, %llu) of a storage of %lld",
                       name, (long long)offset->integer,
                       (unsigned long long)offset->integer + (unsigned long long)last + 1, /* all >= 0: no wrap */
                       (long long)storage->integer);
    if (!t->numel && offset->integer > storage->integer)
        return dm_fail(DM_ERR_FORMAT, "tensor '%s': its offset %lld lies past a storage of %lld", name,
                       (long long)offset->integer, (long long)storage->integer);
    if ((uint64_t)storage->integer > UINT64_MAX / esize)
        return dm_fail(DM_ERR_FORMAT, "tensor '%s': storage size overflows", name);
    char member[300];
    if (prefix_len + 5 + storage->len >= sizeof member)
        return dm_fail(DM_ERR_FORMAT, "tensor '%s': storage key too long", name);
    memcpy(member, prefix, prefix_len);
    memcpy(member + prefix_len, "data/", 5);
    memcpy(member + prefix_len + 5, storage->str, storage->len);
    size_t member_len = prefix_len + 5 + storage->len;
    dm_zip_entry *e = dm_zip_find(zip, member, member_len);
    if (!e) return dm_fail(DM_ERR_FORMAT, "tensor '%s': storage '%.*s' is not in the archive", name, (int)member_len, member);
    if (e->size < (uint64_t)storage->integer * esize)
        return dm_fail(DM_ERR_FORMAT, "tensor '%s': storage '%.*s' holds %llu bytes, but %lld %s elements need %llu",
                       name, (int)member_len, member, (unsigned long long)e->size, (long long)storage->integer,
                       dm_dtype_name(t->dtype), (unsigned long long)storage->integer * esize);
    const unsigned char *data;
    dm_status st = dm_zip_data(zip, e, &data);
    if (st) return st;
    if ((uint64_t)t->numel > (most_held(zip) - *held) / esize)
        return dm_fail(DM_ERR_FORMAT, "the state dict's tensors up to '%s' hold %llu MB, over twice the archive's "
                       "%llu MB: they share storage beyond what a model's weights do", name,
                       (unsigned long long)((*held + (uint64_t)t->numel * esize) >> 20),
                       (unsigned long long)(zip->size >> 20));
    t->data = data + (size_t)offset->integer * esize;
    t->nbytes = (size_t)t->numel * esize;
    *held += t->nbytes;
    if (row_major) return DM_OK;
    if (!(t->owned = malloc(t->nbytes)))
        return dm_fail(DM_ERR_NOMEM, "out of memory for tensor '%s' (%.1f MB)", name, t->nbytes / 1e6);
    gather_view(t->data, t, stride, esize, t->owned);
    t->data = t->owned;
    return DM_OK;
}

static dm_status read_state_dict(dm_zip *zip, const char *prefix, size_t prefix_len,
                                 const pk_value *sd, dm_tensor_file *out)
{
    size_t n = sd->count / 2;
    if (!(out->tensors = calloc(n ? n : 1, sizeof *out->tensors))) return dm_fail(DM_ERR_NOMEM, "out of memory");
    uint64_t held = 0;
    for (size_t i = 0; i < n; i++) {
        const pk_value *key = sd->items[2 * i], *value = sd->items[2 * i + 1];
        if (key->kind != PK_STRING) return dm_fail(DM_ERR_FORMAT, "state dict entry %zu has a key that is not a string", i);
        const char *name = key->str;
        size_t len = key->len;
        /* DistributedDataParallel saves its wrapped module's keys prefixed. */
        if (len > 7 && memcmp(name, "module.", 7) == 0) name += 7, len -= 7;
        dm_tensor *t = &out->tensors[out->count++];
        if (!(t->name = strndup(name, len))) return dm_fail(DM_ERR_NOMEM, "out of memory");
        if (strlen(t->name) != len) return dm_fail(DM_ERR_FORMAT, "state dict key %zu contains a NUL byte", i);
        dm_status st = bind_tensor(zip, prefix, prefix_len, value, t, &held);
        if (st) return st;
    }
    /* Two keys can name the same tensor once 'module.' is removed. */
    return dm_tensor_file_index(out);
}

/* A list or tuple of n items? */
static int is_sequence(const pk_value *v, size_t n)
{
    return v && (v->kind == PK_LIST || v->kind == PK_TUPLE) && (n == 0 || v->count == n);
}

/* An [r, g, b] entry of 0..255 integers? */
static int is_colour(const pk_value *v)
{
    if (!is_sequence(v, 3)) return 0;
    for (size_t i = 0; i < 3; i++)
        if (v->items[i]->kind != PK_INT || v->items[i]->integer < 0 || v->items[i]->integer > 255) return 0;
    return 1;
}

/* Add metadata key = the text m holds, closing it; 0 when out of memory
 * (while it was written, too). */
static int add_meta(dm_tensor_file *out, const char *key, dm_memout *m)
{
    if (dm_memout_close(m) != 0) return 0;
    dm_meta *grown = realloc(out->meta, (out->meta_count + 1) * sizeof *grown);
    if (grown) out->meta = grown;
    char *k = grown ? strdup(key) : NULL;
    if (!k) {
        free(m->text);
        return 0;
    }
    out->meta[out->meta_count++] = (dm_meta){k, m->text};
    return 1;
}

/* mmcv checkpoints name their classes in meta: CLASSES (names) and PALETTE
 * ([r, g, b] per class).  They become the metadata "classes" and
 * "palette", JSON lists as in a safetensors file's metadata.  Malformed
 * ones are left out: they only label the output. */
static dm_status read_classes(const pk_value *root, dm_tensor_file *out)
{
    const pk_value *meta = pk_dict_get(root, "meta");
    const pk_value *names = meta && meta->kind == PK_DICT ? pk_dict_get(meta, "CLASSES") : NULL;
    if (!is_sequence(names, 0) || names->count == 0) return DM_OK;
    const pk_value *palette = pk_dict_get(meta, "PALETTE");
    int colours = is_sequence(palette, names->count);
    for (size_t i = 0; i < names->count; i++) {
        if (names->items[i]->kind != PK_STRING || memchr(names->items[i]->str, 0, names->items[i]->len)) return DM_OK;
        colours = colours && is_colour(palette->items[i]);
    }
    dm_memout m;
    if (dm_memout_open(&m) != 0) return dm_fail(DM_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < names->count; i++) {
        char *name = strndup(names->items[i]->str, names->items[i]->len);
        if (!name) m.failed = 1; /* rather than a list with a name left out */
        fputs(i ? ", " : "[", m.f);
        if (name) dm_json_write_string(m.f, name);
        free(name);
    }
    fputs("]", m.f);
    if (!add_meta(out, "classes", &m)) return dm_fail(DM_ERR_NOMEM, "out of memory");
    if (!colours) return DM_OK;
    if (dm_memout_open(&m) != 0) return dm_fail(DM_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < names->count; i++) {
        pk_value **c = palette->items[i]->items;
        fprintf(m.f, "%s[%d, %d, %d]", i ? ", " : "[", (int)c[0]->integer, (int)c[1]->integer, (int)c[2]->integer);
    }
    fputs("]", m.f);
    return add_meta(out, "palette", &m) ? DM_OK : dm_fail(DM_ERR_NOMEM, "out of memory");
}

/* The archive's records live under one folder, which torch.load takes
 * from the central directory's first entry: <folder>/data.pkl. */
static dm_status find_pickle(dm_zip *zip, dm_zip_entry **pickle, size_t *prefix_len)
{
    const char *slash = zip->count ? memchr(zip->first_name, '/', zip->first_name_len) : NULL;
    if (!slash)
        return dm_fail(DM_ERR_FORMAT, "not a torch.save checkpoint: its first member '%.*s' is in no folder",
                       (int)(zip->count ? zip->first_name_len : 0), zip->count ? zip->first_name : "");
    *prefix_len = (size_t)(slash - zip->first_name) + 1;
    char name[300];
    static const char data_pkl[] = "data.pkl";
    size_t tail = sizeof data_pkl - 1;
    if (*prefix_len + tail > sizeof name)
        return dm_fail(DM_ERR_FORMAT, "not a torch.save checkpoint: a folder name of %zu bytes", *prefix_len - 1);
    memcpy(name, zip->first_name, *prefix_len);
    memcpy(name + *prefix_len, data_pkl, tail);
    if (!(*pickle = dm_zip_find(zip, name, *prefix_len + tail)))
        return dm_fail(DM_ERR_FORMAT, "no %.*sdata.pkl: not a torch.save checkpoint", (int)*prefix_len, name);
    return DM_OK;
}

static dm_status check_byteorder(dm_zip *zip, const char *prefix, size_t prefix_len)
{
    char name[300];
    if (prefix_len + 9 >= sizeof name) return DM_OK;
    memcpy(name, prefix, prefix_len);
    memcpy(name + prefix_len, "byteorder", 9);
    dm_zip_entry *e = dm_zip_find(zip, name, prefix_len + 9);
    const unsigned char *data;
    if (!e) return DM_OK; /* older torch: always little-endian */
    dm_status st = dm_zip_data(zip, e, &data);
    if (st) return st;
    if (e->size >= 3 && memcmp(data, "big", 3) == 0)
        return dm_fail(DM_ERR_UNSUPPORTED, "the checkpoint's storages are big-endian");
    return DM_OK;
}

dm_status dm_pth_parse(const void *buf, size_t size, int use_ema, dm_tensor_file *out)
{
    memset(out, 0, sizeof *out);
    dm_zip zip;
    dm_status st = dm_zip_open(buf, size, &zip);
    if (st) return st;
    size_t prefix_len = 0;
    dm_zip_entry *pkl = NULL;
    const unsigned char *bytes;
    dm_pickle pickle = {0};
    const pk_value *sd = NULL;
    if (!(st = find_pickle(&zip, &pkl, &prefix_len)) && !(st = check_byteorder(&zip, pkl->name, prefix_len)) && !(st = dm_zip_data(&zip, pkl, &bytes)) &&
             !(st = dm_unpickle(bytes, (size_t)pkl->size, &pickle)) &&
             !(st = select_state_dict(pickle.root, use_ema, &sd)))
        if (!(st = read_state_dict(&zip, pkl->name, prefix_len, sd, out))) st = read_classes(pickle.root, out);
    dm_pickle_free(&pickle);
    dm_zip_close(&zip);
    if (st) dm_tensor_file_close(out);
    return st;
}
