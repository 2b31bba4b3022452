/* test_pth.c - the .pth reader: the authors' checkpoint layout (micro.pth)
 * against micro.safetensors and an EMA reference read by Python's own
 * unpickler; mmdetection's (maskrcnn_micro.pth) against its safetensors;
 * small checkpoints written like torch.save (tests/fixtures); and one test
 * per kind of malformed input, built in memory. */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "damamba.h"
#include "model_file.h"
#include "pth.h"
#include "unpickle.h"

static void open_ok(const char *path, int use_ema, dm_tensor_file *f)
{
    dm_status st = dm_model_file_open(path, use_ema, f);
    ck_assert_msg(st == DM_OK, "%s: %s", path, dm_last_error());
}

static void assert_same_tensor(const dm_tensor *got, const dm_tensor *want)
{
    ck_assert_msg(got != NULL, "missing %s", want->name);
    ck_assert_int_eq(got->dtype, want->dtype);
    ck_assert_int_eq(got->ndim, want->ndim);
    for (int d = 0; d < want->ndim; d++) ck_assert_int_eq(got->shape[d], want->shape[d]);
    ck_assert_uint_eq(got->nbytes, want->nbytes);
    ck_assert_msg(memcmp(got->data, want->data, want->nbytes) == 0, "%s differs", want->name);
}

/* The checkpoint's weights are the safetensors file's: the same names,
 * dtypes, shapes and bytes, and no others. */
static void assert_same_weights(const char *pth_name, const char *safetensors_name)
{
    dm_tensor_file pth, st;
    open_ok(test_path(pth_name), 0, &pth);
    test_open(safetensors_name, &st);
    ck_assert_uint_eq(pth.count, st.count);
    for (size_t i = 0; i < st.count; i++)
        assert_same_tensor(dm_tensor_file_find(&pth, st.tensors[i].name), &st.tensors[i]);
    dm_tensor_file_close(&pth);
    dm_tensor_file_close(&st);
}

/* ------------------------------------------------------------ micro.pth */

START_TEST(micro_model_equals_safetensors)
{
    assert_same_weights("micro.pth", "micro.safetensors");
}
END_TEST

START_TEST(micro_ema_matches_python_reader)
{
    dm_tensor_file ema, model, ref;
    open_ok(test_path("micro.pth"), 1, &ema);
    open_ok(test_path("micro.pth"), 0, &model);
    open_ok(test_fixture_path("micro_ema_ref.safetensors"), 0, &ref);
    ck_assert_uint_eq(ema.count, model.count);
    for (size_t i = 0; i < ref.count; i++)
        assert_same_tensor(dm_tensor_file_find(&ema, ref.tensors[i].name), &ref.tensors[i]);
    const dm_tensor *a = dm_tensor_file_find(&ema, "head.fc.weight"), *b = dm_tensor_file_find(&model, "head.fc.weight");
    ck_assert_msg(memcmp(a->data, b->data, a->nbytes) != 0, "model_ema equals model");
    dm_tensor_file_close(&ema);
    dm_tensor_file_close(&model);
    dm_tensor_file_close(&ref);
}
END_TEST

START_TEST(micro_ema_model_loads)
{
    dm_load_options opts = {.size = sizeof(dm_load_options), .use_ema = 1};
    dm_model *ema, *model;
    ck_assert_msg(dm_model_load(test_path("micro.pth"), &opts, &ema) == DM_OK, "%s", dm_last_error());
    ck_assert_msg(dm_model_load(test_path("micro.pth"), NULL, &model) == DM_OK, "%s", dm_last_error());
    const dm_config *c = dm_model_config(ema);
    ck_assert_int_eq(c->num_params, dm_model_config(model)->num_params);
    ck_assert_int_eq(c->num_classes, 10);
    ck_assert_int_eq(c->depths[2], 2);
    dm_model_free(ema);
    dm_model_free(model);
}
END_TEST

/* A checkpoint in memory loads like the file: the same logits, bit for
 * bit, even after the caller's buffer is gone. */
START_TEST(checkpoint_loads_from_memory)
{
    size_t size;
    unsigned char *bytes = test_read("micro.pth", &size);
    dm_model *from_memory, *from_file;
    ck_assert_msg(dm_model_load_buffer(bytes, size, NULL, &from_memory) == DM_OK, "%s", dm_last_error());
    memset(bytes, 0xff, size);
    free(bytes);
    ck_assert_int_eq(dm_model_load(test_path("micro.safetensors"), NULL, &from_file), DM_OK);
    float x[3 * 40 * 40], a[10], b[10];
    for (int i = 0; i < 3 * 40 * 40; i++) x[i] = (float)((i * 37) % 101) / 50.0f - 1.0f;
    dm_workspace *ws;
    ck_assert_int_eq(dm_workspace_create(from_file, 1, 40, 40, &ws), DM_OK);
    dm_outputs oa = {.size = sizeof(dm_outputs), .logits = a}, ob = {.size = sizeof(dm_outputs), .logits = b};
    ck_assert_int_eq(dm_forward(from_memory, ws, x, 1, 40, 40, &oa), DM_OK);
    ck_assert_int_eq(dm_forward(from_file, ws, x, 1, 40, 40, &ob), DM_OK);
    ck_assert_mem_eq(a, b, sizeof a);
    dm_workspace_free(ws);
    dm_model_free(from_memory);
    dm_model_free(from_file);
}
END_TEST

/* ------------------------------------------------ maskrcnn_micro.pth */

/* mmdetection's checkpoint layout ({meta, state_dict}, written by torch 2.0;
 * the golden file's optimizer state left out by make_det_pth.py). */
START_TEST(mmdet_checkpoint_equals_safetensors)
{
    assert_same_weights("maskrcnn_micro.pth", "maskrcnn_micro.safetensors");
}
END_TEST

/* meta's CLASSES name the detector's classes, and so its COCO ids. */
START_TEST(mmdet_classes_from_meta)
{
    static const char *const names[] = {"person", "bicycle", "car", "motorcycle", "airplane"};
    static const int coco_ids[] = {1, 2, 3, 4, 5};
    dm_tensor_file pth;
    open_ok(test_path("maskrcnn_micro.pth"), 0, &pth);
    const char *classes = dm_tensor_file_meta(&pth, "classes");
    ck_assert_ptr_nonnull(classes);
    ck_assert_str_eq(classes, "[\"person\", \"bicycle\", \"car\", \"motorcycle\", \"airplane\"]");
    ck_assert_ptr_null(dm_tensor_file_meta(&pth, "palette"));
    dm_tensor_file_close(&pth);
    dm_model *m;
    ck_assert_msg(dm_model_load(test_path("maskrcnn_micro.pth"), NULL, &m) == DM_OK, "%s", dm_last_error());
    ck_assert_int_eq(dm_model_config(m)->det_classes, 5);
    const char *const *got = dm_model_class_names(m);
    ck_assert_ptr_nonnull(got);
    for (int i = 0; i < 5; i++) {
        ck_assert_str_eq(got[i], names[i]);
        ck_assert_int_eq(dm_model_category_ids(m)[i], coco_ids[i]);
    }
    dm_model_free(m);
}
END_TEST

START_TEST(ema_refused_outside_training_checkpoints)
{
    dm_tensor_file f;
    ck_assert_int_eq(dm_model_file_open(test_fixture_path("bare.pth"), 1, &f), DM_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(dm_last_error(), "model_ema"));
    ck_assert_int_eq(dm_model_file_open(test_path("micro.safetensors"), 1, &f), DM_ERR_ARGUMENT);
}
END_TEST

/* What torch.save wrote before 1.6 starts with its magic number pickled:
 * pickle.dumps(0x1950a86a20f9469cfc6c, protocol=p) for p = 1 .. 5. */
static const struct { const char *bytes; size_t len; } legacy_starts[] = {
    {"L119547037146038801333356L\n.", 28},
    {"\x80\x02\x8a\x0a" "l\xfc\x9c" "F\xf9 j\xa8P\x19.", 15},
    {"\x80\x03\x8a\x0a" "l\xfc\x9c" "F\xf9 j\xa8P\x19.", 15},
    {"\x80\x04\x95\x0d\0\0\0\0\0\0\0\x8a\x0a" "l\xfc\x9c" "F\xf9 j\xa8P\x19.", 24},
    {"\x80\x05\x95\x0d\0\0\0\0\0\0\0\x8a\x0a" "l\xfc\x9c" "F\xf9 j\xa8P\x19.", 24},
};

START_TEST(legacy_checkpoint_named)
{
    char path[] = "/tmp/dm_legacy_XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    ssize_t len = (ssize_t)legacy_starts[_i].len;
    ck_assert_int_eq(write(fd, legacy_starts[_i].bytes, (size_t)len), len);
    close(fd);
    dm_tensor_file f;
    ck_assert_int_eq(dm_model_file_open(path, 0, &f), DM_ERR_UNSUPPORTED);
    ck_assert_ptr_nonnull(strstr(dm_last_error(), "legacy (before PyTorch 1.6) checkpoint"));
    remove(path);
}
END_TEST

/* ------------------------------------------------------------- fixtures */

/* make_pth_fixtures.py's values: value(i, k) = (k + 1) / 4 - i / 2. */
static double fixture_value(int i, int k) { return (k + 1) * 0.25 - i * 0.5; }

static void check_fixture(const dm_tensor_file *f)
{
    static const struct { const char *name; dm_dtype dtype; int k, first, numel, ndim; int64_t shape[2]; } want[] = {
        {"f32", DM_F32, 0, 0, 6, 2, {2, 3}},      {"f16", DM_F16, 1, 0, 4, 1, {4}},
        {"bf16", DM_BF16, 2, 0, 4, 2, {2, 2}},    {"f64", DM_F64, 3, 0, 3, 2, {3, 1}},
        {"view.head", DM_F32, 4, 0, 4, 1, {4}},   {"view.tail", DM_F32, 4, 4, 6, 2, {2, 3}},
    };
    ck_assert_uint_eq(f->count, 7);
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const dm_tensor *t = dm_tensor_file_find(f, want[i].name);
        ck_assert_msg(t != NULL, "missing %s", want[i].name);
        ck_assert_int_eq(t->dtype, want[i].dtype);
        ck_assert_int_eq(t->ndim, want[i].ndim);
        for (int d = 0; d < want[i].ndim; d++) ck_assert_int_eq(t->shape[d], want[i].shape[d]);
        float v[8];
        dm_tensor_to_f32(t, v);
        for (int j = 0; j < want[i].numel; j++)
            ck_assert_double_eq(v[j], fixture_value(want[i].first + j, want[i].k));
    }
    const dm_tensor *n = dm_tensor_file_find(f, "bn.num_batches_tracked");
    ck_assert(n && n->dtype == DM_I64 && n->ndim == 0 && n->numel == 1);
    int64_t count;
    memcpy(&count, n->data, 8);
    ck_assert_int_eq(count, 1234567890123);
}

START_TEST(bare_state_dict_all_dtypes_and_views)
{
    dm_tensor_file f;
    open_ok(test_fixture_path("bare.pth"), 0, &f);
    check_fixture(&f);
    dm_tensor_file_close(&f);
}
END_TEST

START_TEST(state_dict_wrapper_protocol4_module_prefix)
{
    dm_tensor_file f;
    open_ok(test_fixture_path("wrapped.pth"), 0, &f);
    check_fixture(&f);
    dm_tensor_file_close(&f);
}
END_TEST

/* A tensor of strided.pth, as float32 in row-major order, is value(i) at
 * its i-th element. */
static void expect_values(const dm_tensor_file *f, const char *name, int64_t numel, float (*value)(int64_t))
{
    const dm_tensor *t = dm_tensor_file_find(f, name);
    ck_assert_msg(t != NULL, "no tensor %s", name);
    ck_assert_int_eq(t->numel, numel);
    float *got = malloc(sizeof(float) * (size_t)numel);
    dm_tensor_to_f32(t, got);
    for (int64_t i = 0; i < numel; i++)
        ck_assert_msg(got[i] == value(i), "%s[%lld] is %g, expected %g", name, (long long)i, got[i], value(i));
    free(got);
}

static float index_value(int64_t i) { return (float)i; }
/* arange(6) as 3 x 2, transposed: element (r, c) of the 2 x 3 is 2c + r */
static float transposed_value(int64_t i) { return (float)(2 * (i % 3) + i / 3); }
static float every_other_value(int64_t i) { return (float)(2 * i); }
static float expanded_value(int64_t i) { return (void)i, 7.0f; }
/* arange(24) as 4 x 6, rows 1..3, columns 2..5 */
static float sliced_value(int64_t i) { return (float)((1 + i / 4) * 6 + 2 + i % 4); }

/* Views that are not row-major, written by torch.save itself (a model
 * trained channels_last saves its convolutions so), read as PyTorch reads
 * them: each element where its strides put it. */
START_TEST(strided_views_read_as_torch_reads_them)
{
    dm_tensor_file f;
    open_ok(test_fixture_path("strided.pth"), 0, &f);
    ck_assert_uint_eq(f.count, 7);
    expect_values(&f, "conv", 24, index_value);
    expect_values(&f, "conv_half", 24, index_value);
    expect_values(&f, "transposed", 6, transposed_value);
    expect_values(&f, "every_other", 10, every_other_value);
    expect_values(&f, "expanded", 4, expanded_value);
    expect_values(&f, "sliced", 12, sliced_value);
    const dm_tensor *conv = dm_tensor_file_find(&f, "conv");
    ck_assert(conv->ndim == 4 && conv->shape[0] == 2 && conv->shape[1] == 3 && conv->shape[3] == 2);
    /* an nn.Parameter (keep_vars=True): its data, not an object refused */
    expect_values(&f, "parameter", 5, index_value);
    dm_tensor_file_close(&f);
}
END_TEST

/* ------------------------------------------------- archives built here */

typedef struct bytes {
    unsigned char *p;
    size_t n, cap;
} bytes;

static void put(bytes *b, const void *s, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = 2 * (b->n + n) + 64;
        b->p = realloc(b->p, b->cap);
        ck_assert_ptr_nonnull(b->p);
    }
    if (n) memcpy(b->p + b->n, s, n); /* s may be NULL when n is 0 */
    b->n += n;
}

static void put_le(bytes *b, uint64_t v, int n)
{
    for (int i = 0; i < n; i++) {
        unsigned char c = (unsigned char)(v >> (8 * i));
        put(b, &c, 1);
    }
}

static void put_op(bytes *b, unsigned char op) { put(b, &op, 1); }

static void put_str(bytes *b, const char *s)
{
    put_op(b, 'X');
    put_le(b, strlen(s), 4);
    put(b, s, strlen(s));
}

/* Integers and False as pickle protocol 1 writes them (INT and LONG in
 * text), and no PROTO opcode, instead of protocol 2's. */
static int protocol_1;

static void put_int(bytes *b, int64_t v)
{
    if (protocol_1) {
        char text[32];
        int fits = v >= INT32_MIN && v <= INT32_MAX;
        put(b, text, (size_t)snprintf(text, sizeof text, "%c%lld%s\n", fits ? 'I' : 'L', (long long)v, fits ? "" : "L"));
        return;
    }
    put_op(b, 0x8a); /* LONG1, 8 bytes */
    put_op(b, 8);
    put_le(b, (uint64_t)v, 8);
}

static void put_global(bytes *b, const char *module, const char *name)
{
    put_op(b, 'c');
    put(b, module, strlen(module));
    put_op(b, '\n');
    put(b, name, strlen(name));
    put_op(b, '\n');
}

/* One tensor, pickled the way torch.save does. */
typedef struct tensor_spec {
    const char *name;
    int64_t numel, offset; /* storage elements; tensor offset into them */
    int ndim;
    int64_t size[4], stride[4];
} tensor_spec;

static const tensor_spec plain = {"w", 6, 0, 2, {2, 3}, {3, 1}};

/* name: _rebuild_tensor_v2((storage), offset, size, stride, False, {}) */
static void put_tensor_entry(bytes *b, const tensor_spec *t)
{
    put_str(b, t->name);
    put_global(b, "torch._utils", "_rebuild_tensor_v2");
    put_op(b, '(');
    put_op(b, '(');
    put_str(b, "storage");
    put_global(b, "torch", "FloatStorage");
    put_str(b, "0");
    put_str(b, "cpu");
    put_int(b, t->numel);
    put_op(b, 't');
    put_op(b, 'Q');
    put_int(b, t->offset);
    put_op(b, '(');
    for (int d = 0; d < t->ndim; d++) put_int(b, t->size[d]);
    put_op(b, 't');
    put_op(b, '(');
    for (int d = 0; d < t->ndim; d++) put_int(b, t->stride[d]);
    put_op(b, 't');
    if (protocol_1) put(b, "I00\n", 4); /* False */
    else put_op(b, 0x89);                /* NEWFALSE */
    put_op(b, '}');
    put_op(b, 't');
    put_op(b, 'R');
}

/* A bare state dict of n tensors over one storage, as torch.save writes it. */
static void put_state_dict(bytes *b, const tensor_spec *t, size_t n)
{
    if (!protocol_1) put(b, "\x80\x02", 2);
    put(b, "}(", 2);
    for (size_t i = 0; i < n; i++) put_tensor_entry(b, &t[i]);
    put(b, "u.", 2);
}

/* A stored zip of `count` members (at most 4), in that order; with zip64,
 * the directory uses zip64 records throughout. */
static bytes make_zip(const char *const *names, const void *const *data, const size_t *sizes, int count, int zip64)
{
    size_t offsets[4];
    bytes z = {0}, cd = {0};
    uint32_t crcs[4];
    ck_assert_int_le(count, 4);
    for (int m = 0; m < count; m++) {
        offsets[m] = z.n;
        crcs[m] = test_crc32(data[m], sizes[m]);
        put_le(&z, 0x04034b50, 4);
        put_le(&z, 20, 2); put_le(&z, 0, 2); put_le(&z, 0, 2); put_le(&z, 0, 4); put_le(&z, crcs[m], 4);
        put_le(&z, sizes[m], 4); put_le(&z, sizes[m], 4);
        put_le(&z, strlen(names[m]), 2); put_le(&z, 0, 2);
        put(&z, names[m], strlen(names[m]));
        put(&z, data[m], sizes[m]);
    }
    for (int m = 0; m < count; m++) {
        uint64_t sat = zip64 ? 0xFFFFFFFF : 0;
        put_le(&cd, 0x02014b50, 4);
        put_le(&cd, 45, 2); put_le(&cd, 45, 2); put_le(&cd, 0, 2); put_le(&cd, 0, 2); put_le(&cd, 0, 4); put_le(&cd, crcs[m], 4);
        put_le(&cd, sat ? sat : sizes[m], 4); put_le(&cd, sat ? sat : sizes[m], 4);
        put_le(&cd, strlen(names[m]), 2); put_le(&cd, zip64 ? 28 : 0, 2); put_le(&cd, 0, 2);
        put_le(&cd, 0, 2); put_le(&cd, 0, 2); put_le(&cd, 0, 4);
        put_le(&cd, sat ? sat : offsets[m], 4);
        put(&cd, names[m], strlen(names[m]));
        if (zip64) {
            put_le(&cd, 1, 2); put_le(&cd, 24, 2);
            put_le(&cd, sizes[m], 8); put_le(&cd, sizes[m], 8); put_le(&cd, offsets[m], 8);
        }
    }
    size_t cd_offset = z.n;
    put(&z, cd.p, cd.n);
    if (zip64) {
        size_t rec = z.n;
        put_le(&z, 0x06064b50, 4); put_le(&z, 44, 8); put_le(&z, 45, 2); put_le(&z, 45, 2);
        put_le(&z, 0, 4); put_le(&z, 0, 4); put_le(&z, count, 8); put_le(&z, count, 8);
        put_le(&z, cd.n, 8); put_le(&z, cd_offset, 8);
        put_le(&z, 0x07064b50, 4); put_le(&z, 0, 4); put_le(&z, rec, 8); put_le(&z, 1, 4);
    }
    put_le(&z, 0x06054b50, 4);
    put_le(&z, 0, 2); put_le(&z, 0, 2);
    put_le(&z, zip64 ? 0xFFFF : (uint64_t)count, 2); put_le(&z, zip64 ? 0xFFFF : (uint64_t)count, 2);
    put_le(&z, zip64 ? 0xFFFFFFFF : cd.n, 4); put_le(&z, zip64 ? 0xFFFFFFFF : cd_offset, 4);
    put_le(&z, 0, 2);
    free(cd.p);
    return z;
}

/* storage_bytes of floats whose byte i is i + seed. */
static unsigned char *storage_of(size_t storage_bytes, int seed)
{
    unsigned char *storage = malloc(storage_bytes ? storage_bytes : 1);
    ck_assert_ptr_nonnull(storage);
    for (size_t i = 0; i < storage_bytes; i++) storage[i] = (unsigned char)(i + (size_t)seed);
    return storage;
}

/* A stored zip of the pickle as a/data.pkl and storage_bytes of floats as
 * a/data/0; with zip64, the directory uses zip64 records throughout. */
static bytes make_archive(const bytes *pkl, size_t storage_bytes, int zip64)
{
    static const char *const names[2] = {"a/data.pkl", "a/data/0"};
    unsigned char *storage = storage_of(storage_bytes, 0);
    const void *data[2] = {pkl->p, storage};
    size_t sizes[2] = {pkl->n, storage_bytes};
    bytes z = make_zip(names, data, sizes, 2, zip64);
    free(storage);
    return z;
}

/* Parse buf; expect status and an error message containing `says`. */
static void expect_error(const bytes *buf, dm_status status, const char *says)
{
    dm_tensor_file f;
    dm_status st = dm_pth_parse(buf->p, buf->n, 0, &f);
    ck_assert_msg(st == status, "status %d, expected %d (%s)", st, status, st ? dm_last_error() : "ok");
    ck_assert_msg(strstr(dm_last_error(), says), "error '%s' does not say '%s'", dm_last_error(), says);
    ck_assert_uint_eq(f.count, 0);
}

static void expect_tensor_error(const tensor_spec *t, size_t storage_bytes, const char *says)
{
    bytes pkl = {0};
    put_state_dict(&pkl, t, 1);
    bytes z = make_archive(&pkl, storage_bytes, 0);
    expect_error(&z, DM_ERR_FORMAT, says);
    free(pkl.p);
    free(z.p);
}

START_TEST(built_archive_reads_with_and_without_zip64)
{
    bytes pkl = {0};
    put_state_dict(&pkl, &plain, 1);
    for (int zip64 = 0; zip64 < 2; zip64++) {
        bytes z = make_archive(&pkl, 24, zip64);
        dm_tensor_file f;
        ck_assert_msg(dm_pth_parse(z.p, z.n, 0, &f) == DM_OK, "zip64 %d: %s", zip64, dm_last_error());
        ck_assert_uint_eq(f.count, 1);
        const dm_tensor *t = &f.tensors[0];
        ck_assert_str_eq(t->name, "w");
        ck_assert(t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 3 && t->nbytes == 24);
        for (int i = 0; i < 24; i++) ck_assert_int_eq(((const unsigned char *)t->data)[i], i);
        dm_tensor_file_close(&f);
        free(z.p);
    }
    free(pkl.p);
}
END_TEST

/* The directory fields of bare.pth, read here to aim the mutations. */
static bytes read_fixture(const char *name)
{
    FILE *f = fopen(test_fixture_path(name), "rb");
    ck_assert_ptr_nonnull(f);
    bytes b = {0};
    unsigned char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) put(&b, chunk, n);
    fclose(f);
    return b;
}

static uint64_t get_le(const unsigned char *p, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

static size_t first_central_entry(const bytes *b)
{
    const unsigned char *eocd = b->p + b->n - 22;
    ck_assert(eocd[0] == 'P' && eocd[1] == 'K' && eocd[2] == 5 && eocd[3] == 6);
    size_t cd = (size_t)get_le(eocd + 16, 4);
    ck_assert(memcmp(b->p + cd, "PK\1\2", 4) == 0);
    return cd;
}

/* Where a member's bytes start, found through the central directory, with
 * the directory's size and CRC-32 of it (the local header's may be zeros,
 * followed by a data descriptor, as torch.save writes them). */
typedef struct member {
    size_t offset, size;
    uint32_t crc;
} member;

static size_t central_count(const bytes *b) { return (size_t)get_le(b->p + b->n - 22 + 10, 2); }

static size_t next_central_entry(const bytes *b, size_t cd)
{
    const unsigned char *e = b->p + cd;
    return cd + 46 + get_le(e + 28, 2) + get_le(e + 30, 2) + get_le(e + 32, 2);
}

static unsigned char *local_header(const bytes *b, size_t cd)
{
    unsigned char *local = b->p + get_le(b->p + cd + 42, 4);
    ck_assert(memcmp(local, "PK\3\4", 4) == 0);
    return local;
}

static member find_member(const bytes *b, const char *name)
{
    size_t cd = first_central_entry(b);
    for (size_t i = 0; i < central_count(b); i++, cd = next_central_entry(b, cd)) {
        const unsigned char *e = b->p + cd, *local = local_header(b, cd);
        size_t nlen = (size_t)get_le(e + 28, 2);
        if (nlen == strlen(name) && memcmp(e + 46, name, nlen) == 0)
            return (member){(size_t)(local - b->p) + 30 + get_le(local + 26, 2) + get_le(local + 28, 2),
                            (size_t)get_le(e + 24, 4), (uint32_t)get_le(e + 16, 4)};
    }
    ck_abort_msg("no member %s", name);
    return (member){0};
}

/* Flip a byte in the middle of a member of a checkpoint that loads: the
 * load fails naming the member, its stored CRC-32 and the one of the
 * damaged bytes. */
static void expect_damage_found(bytes *b, const char *name)
{
    dm_tensor_file f;
    ck_assert_msg(dm_pth_parse(b->p, b->n, 0, &f) == DM_OK, "%s", dm_last_error());
    dm_tensor_file_close(&f);
    member m = find_member(b, name);
    ck_assert_uint_gt(m.size, 0);
    ck_assert_uint_eq(test_crc32(b->p + m.offset, m.size), m.crc);
    b->p[m.offset + m.size / 2] ^= 0x10;
    uint32_t damaged = test_crc32(b->p + m.offset, m.size);
    ck_assert_uint_ne(damaged, m.crc);
    char says[200];
    snprintf(says, sizeof says, "zip: member '%s': CRC-32 mismatch (stored 0x%08x, computed 0x%08x)", name,
             (unsigned)m.crc, (unsigned)damaged);
    expect_error(b, DM_ERR_FORMAT, says);
}

START_TEST(damaged_storage)
{
    bytes b = read_fixture("bare.pth");
    expect_damage_found(&b, "bare/data/0");
    free(b.p);
}
END_TEST

START_TEST(damaged_pickle)
{
    bytes b = read_fixture("bare.pth");
    expect_damage_found(&b, "bare/data.pkl");
    free(b.p);
}
END_TEST

/* torch.save under torch.serialization.set_crc32_options(False) writes 0
 * for every CRC, and torch.load reads the file: so does this reader. */
START_TEST(no_crcs_recorded)
{
    bytes b = read_fixture("bare.pth");
    size_t cd = first_central_entry(&b);
    for (size_t i = 0; i < central_count(&b); i++, cd = next_central_entry(&b, cd)) {
        memset(b.p + cd + 16, 0, 4);
        memset(local_header(&b, cd) + 14, 0, 4);
    }
    dm_tensor_file f;
    ck_assert_msg(dm_pth_parse(b.p, b.n, 0, &f) == DM_OK, "%s", dm_last_error());
    check_fixture(&f);
    dm_tensor_file_close(&f);
    free(b.p);
}
END_TEST

/* torch.save's own archive: data descriptors after each member, the CRCs
 * in the central directory alone. */
START_TEST(damaged_storage_after_data_descriptor)
{
    bytes b;
    b.p = test_read("micro.pth", &b.n);
    b.cap = b.n;
    expect_damage_found(&b, "micro/data/17");
    free(b.p);
}
END_TEST

START_TEST(truncated_zip)
{
    bytes b = read_fixture("bare.pth");
    b.n /= 2;
    expect_error(&b, DM_ERR_FORMAT, "no end-of-central-directory record");
    free(b.p);
}
END_TEST

START_TEST(bad_central_directory)
{
    bytes b = read_fixture("bare.pth");
    b.p[first_central_entry(&b) + 1] = 'X';
    expect_error(&b, DM_ERR_FORMAT, "central directory entry 0 is missing or damaged");
    free(b.p);
}
END_TEST

START_TEST(central_directory_outside_file)
{
    bytes b = read_fixture("bare.pth");
    b.p[b.n - 22 + 19] = 0x7F; /* directory offset */
    expect_error(&b, DM_ERR_FORMAT, "lies outside the file");
    free(b.p);
}
END_TEST

START_TEST(member_offset_outside_file)
{
    bytes b = read_fixture("bare.pth");
    size_t cd = first_central_entry(&b); /* bare/data.pkl */
    b.p[cd + 45] = 0x7F;
    expect_error(&b, DM_ERR_FORMAT, "outside the file");
    free(b.p);
}
END_TEST

START_TEST(member_data_past_end)
{
    bytes b = read_fixture("bare.pth");
    size_t cd = first_central_entry(&b);
    b.p[cd + 23] = b.p[cd + 27] = 0x40; /* compressed and stored sizes: 1 GiB more */
    expect_error(&b, DM_ERR_FORMAT, "runs past the end of the file");
    free(b.p);
}
END_TEST

START_TEST(compressed_member)
{
    bytes b = read_fixture("bare.pth");
    b.p[first_central_entry(&b) + 10] = 8; /* deflate */
    expect_error(&b, DM_ERR_UNSUPPORTED, "is compressed (method 8)");
    free(b.p);
}
END_TEST

START_TEST(not_a_torch_archive)
{
    bytes pkl = {0};
    bytes z = make_archive(&pkl, 0, 0);
    memcpy(z.p + 30 + 2, "other", 5); /* a/data.pkl -> a/other.pkl, in the local header */
    size_t cd = first_central_entry(&z);
    memcpy(z.p + cd + 46 + 2, "other", 5);
    expect_error(&z, DM_ERR_FORMAT, "no a/data.pkl");
    free(z.p);
}
END_TEST

/* torch.load reads the records of the folder of the central directory's
 * first entry: an archive of two folders gives the weights of the one
 * listed first, not of the one whose name sorts first. */
START_TEST(records_of_the_first_folder)
{
    bytes pkl = {0};
    put_state_dict(&pkl, &plain, 1);
    unsigned char *a = storage_of(24, 0), *b = storage_of(24, 100);
    static const char *const names[4] = {"b/data.pkl", "b/data/0", "a/data.pkl", "a/data/0"};
    const void *data[4] = {pkl.p, b, pkl.p, a};
    size_t sizes[4] = {pkl.n, 24, pkl.n, 24};
    bytes z = make_zip(names, data, sizes, 4, 0);
    dm_tensor_file f;
    ck_assert_msg(dm_pth_parse(z.p, z.n, 0, &f) == DM_OK, "%s", dm_last_error());
    ck_assert_uint_eq(f.count, 1);
    ck_assert_msg(memcmp(f.tensors[0].data, b, 24) == 0, "the weights of folder b/");
    dm_tensor_file_close(&f);
    /* a first entry in no folder: not an archive torch.save writes */
    static const char *const flat[2] = {"data.pkl", "data/0"};
    free(z.p);
    z = make_zip(flat, data, sizes, 2, 0);
    expect_error(&z, DM_ERR_FORMAT, "its first member 'data.pkl' is in no folder");
    free(z.p);
    free(pkl.p);
    free(a);
    free(b);
}
END_TEST

/* torch.save(..., pickle_protocol=1) writes integers that do not fit in
 * 32 bits as LONG text and False as INT 00: the tensor reads as protocol
 * 2's does.  Its size-1 dimension has a stride of 2^40. */
START_TEST(pickle_protocol_1)
{
    static const tensor_spec wide = {"w", 6, 0, 3, {1, 2, 3}, {(int64_t)1 << 40, 3, 1}};
    dm_tensor_file f[2];
    bytes pkl[2] = {{0}}, z[2];
    for (int p = 0; p < 2; p++) {
        protocol_1 = p;
        put_state_dict(&pkl[p], &wide, 1);
        z[p] = make_archive(&pkl[p], 24, 0);
        ck_assert_msg(dm_pth_parse(z[p].p, z[p].n, 0, &f[p]) == DM_OK, "protocol %d: %s", p ? 1 : 2, dm_last_error());
    }
    protocol_1 = 0;
    ck_assert_uint_eq(f[1].count, 1);
    assert_same_tensor(&f[1].tensors[0], &f[0].tensors[0]);
    ck_assert_int_eq(f[1].tensors[0].ndim, 3);
    for (int p = 0; p < 2; p++) {
        dm_tensor_file_close(&f[p]);
        free(pkl[p].p);
        free(z[p].p);
    }
}
END_TEST

/* Entries whose members share bytes are refused: each would have them
 * read and checked again, and 20,000 entries over one 8 MB member took
 * 51 s.  Here the storage's entry points at the pickle's local header. */
START_TEST(members_sharing_bytes)
{
    bytes pkl = {0};
    put_state_dict(&pkl, &plain, 1);
    bytes z = make_archive(&pkl, 24, 0);
    size_t cd = next_central_entry(&z, first_central_entry(&z));
    for (int i = 0; i < 4; i++) z.p[cd + 42 + i] = 0;
    expect_error(&z, DM_ERR_FORMAT, "members 'a/data.pkl' and 'a/data/0' share bytes at offset 0");
    free(z.p);
    free(pkl.p);
}
END_TEST

/* Hostile pickles, one per kind of problem. */
static const struct { const char *pickle; size_t len; const char *says; } bad_pickles[] = {
    {"\x80\x02\x85.", 4, "stack underflow"},              /* TUPLE1 on an empty stack */
    {"\x80\x02N(\x85.", 6, "stack underflow"},            /* TUPLE1 reaching below a mark */
    {"\x80\x02t.", 4, "no mark on the stack"},             /* TUPLE without MARK */
    {"\x80\x02\xff.", 4, "byte 2 (opcode 0xff): unknown or unsupported opcode"},
    {"\x80\x02X\xff\xff\xff\x7f", 7, "string of 2147483647 bytes runs past the end"},
    {"\x80\x02\x8b\xff\xff\xff\x7f", 7, "integer of 2147483647 bytes runs past the end"},
    {"\x80\x02Nr\xff\xff\xff\x7f.", 9, "memo index 2147483647 is absurd"},
    {"\x80\x02h\x05.", 4, "memo entry 5 was never set"},
    {"\x80\x02}", 3, "ends without STOP"},
    {"\x80\x02K\x01Q.", 6, "persistent id is not"},
    {"\x80\x02N.", 4, "does not hold a dict"},
    {"\x80\x02](e.", 6, "does not hold a dict"},            /* APPENDS of nothing */
    {"\x80\x02}(X\x01\0\0\0wNu.", 14, "entry 'w' is not a tensor"},
};

START_TEST(hostile_pickle)
{
    bytes pkl = {0};
    put(&pkl, bad_pickles[_i].pickle, bad_pickles[_i].len);
    bytes z = make_archive(&pkl, 0, 0);
    expect_error(&z, DM_ERR_FORMAT, bad_pickles[_i].says);
    free(pkl.p);
    free(z.p);
}
END_TEST

/* A megabyte of one opcode, after PROTO 2 and `first`, ending in STOP:
 * each byte once cost a value, a stack slot and a container (up to 210
 * bytes); the unpickler now refuses what exceeds its budget per byte. */
START_TEST(long_opcode_runs)
{
    static const struct { char first, op; } runs[] = {{']', ']'}, {'N', 'N'}, {'N', '\x85'}, {']', '2'}};
    size_t n = 1 << 20;
    unsigned char *pkl = malloc(n + 4);
    pkl[0] = 0x80;
    pkl[1] = 2;
    pkl[2] = (unsigned char)runs[_i].first;
    memset(pkl + 3, runs[_i].op, n);
    pkl[n + 3] = '.';
    dm_pickle p;
    dm_status st = dm_unpickle(pkl, n + 4, &p);
    if (runs[_i].op == '2') {
        /* DUP costs one stack slot: 8 bytes per byte, within the budget. */
        ck_assert_msg(st == DM_OK, "%s", dm_last_error());
        dm_pickle_free(&p);
    } else {
        ck_assert_int_eq(st, DM_ERR_FORMAT);
        ck_assert_msg(strstr(dm_last_error(), "per byte of input") != NULL, "%s", dm_last_error());
    }
    free(pkl);
}
END_TEST

/* A kilobyte string referenced 100,000 times through the memo, or
 * duplicated on the stack, in a list: 200 KB of pickle that stood for
 * 100 MB of keys or class names to copy (a state dict of such keys took
 * gigabytes).  Each reference after the first is charged its length. */
START_TEST(repeated_strings_are_charged)
{
    size_t refs = 100000, len = 1000;
    unsigned char *pkl = malloc(16 + len + 2 * refs), *p = pkl;
    *p++ = 0x80, *p++ = 2, *p++ = ']', *p++ = '(', *p++ = 'X';
    for (int i = 0; i < 4; i++) *p++ = (unsigned char)(len >> (8 * i));
    memset(p, 'k', len), p += len;
    *p++ = 'q', *p++ = 0; /* BINPUT 0 */
    for (size_t i = 1; i < refs; i++) *p++ = _i ? '2' : 'h', *p++ = _i ? '2' : 0; /* DUP DUP, or BINGET 0 */
    *p++ = 'e', *p++ = '.';
    dm_pickle out;
    ck_assert_int_eq(dm_unpickle(pkl, (size_t)(p - pkl), &out), DM_ERR_FORMAT);
    ck_assert_msg(strstr(dm_last_error(), "per byte of input") != NULL, "%s", dm_last_error());
    /* twenty repetitions are within the budget */
    size_t few = 5 + 4 + len + 2 + 2 * 20;
    pkl[few] = 'e', pkl[few + 1] = '.';
    ck_assert_msg(dm_unpickle(pkl, few + 2, &out) == DM_OK, "%s", dm_last_error());
    ck_assert_uint_eq(out.root->count, _i ? 41 : 21);
    dm_pickle_free(&out);
    free(pkl);
}
END_TEST

START_TEST(storage_shorter_than_tensor)
{
    expect_tensor_error(&plain, 20, "holds 20 bytes, but 6 F32 elements need 24");
}
END_TEST

START_TEST(tensor_past_its_storage)
{
    tensor_spec t = plain;
    t.offset = 2;
    expect_tensor_error(&t, 24, "needs elements [2, 8) of a storage of 6");
}
END_TEST

START_TEST(shape_product_overflows)
{
    tensor_spec t = {"w", 6, 0, 3, {1LL << 30, 1LL << 30, 1LL << 30}, {1LL << 60, 1LL << 30, 1}};
    expect_tensor_error(&t, 24, "tensor 'w': shape product overflows");
}
END_TEST

START_TEST(strided_view_past_its_storage)
{
    tensor_spec t = {"w", 6, 0, 2, {3, 2}, {1, 4}}; /* its last element is 2 + 4 */
    expect_tensor_error(&t, 24, "tensor 'w': needs elements [0, 7) of a storage of 6");
}
END_TEST

START_TEST(strides_overflow)
{
    tensor_spec t = {"w", 6, 0, 2, {3, 2}, {1LL << 62, 1}};
    expect_tensor_error(&t, 24, "tensor 'w': its strides overflow");
}
END_TEST

/* One element expanded 2^40 times would be 4 TB once copied: refused
 * before anything is allocated for it. */
START_TEST(expanded_view_beyond_the_archive)
{
    tensor_spec t = {"w", 6, 0, 1, {1LL << 40}, {0}};
    expect_tensor_error(&t, 24, "the state dict's tensors up to 'w' hold 4194304 MB, over twice the archive's 0 MB");
}
END_TEST

START_TEST(missing_storage_member)
{
    bytes pkl = {0};
    put_state_dict(&pkl, &plain, 1);
    unsigned char *key = memmem(pkl.p, pkl.n, "X\x01\0\0\0" "0", 6); /* storage key "0" -> "9" */
    ck_assert_ptr_nonnull(key);
    key[5] = '9';
    bytes z = make_archive(&pkl, 24, 0);
    expect_error(&z, DM_ERR_FORMAT, "storage 'a/data/9' is not in the archive");
    free(pkl.p);
    free(z.p);
}
END_TEST

START_TEST(duplicate_after_module_prefix)
{
    tensor_spec two[2] = {plain, plain};
    two[0].name = "module.w";
    bytes pkl = {0};
    put_state_dict(&pkl, two, 2);
    bytes z = make_archive(&pkl, 24, 0);
    expect_error(&z, DM_ERR_FORMAT, "tensor 'w' appears twice");
    free(pkl.p);
    free(z.p);
}
END_TEST

START_TEST(views_beyond_the_archive)
{
    /* Views of one 1 MiB storage: two hold 2 MiB and load; eight would
     * copy out 8 MiB from a file of 1 MiB, more than twice it (plus
     * 1 MiB), and are refused. */
    enum { FLOATS = 1 << 18 };
    tensor_spec views[8];
    char names[8][8];
    for (int i = 0; i < 8; i++) {
        snprintf(names[i], sizeof names[i], "w%d", i);
        views[i] = (tensor_spec){names[i], FLOATS, 0, 1, {FLOATS}, {1}};
    }
    for (int n = 2; n <= 8; n += 6) {
        bytes pkl = {0};
        put_state_dict(&pkl, views, (size_t)n);
        bytes z = make_archive(&pkl, 4 * FLOATS, 0);
        if (n == 2) {
            dm_tensor_file f;
            ck_assert_msg(dm_pth_parse(z.p, z.n, 0, &f) == DM_OK, "%s", dm_last_error());
            ck_assert_uint_eq(f.count, 2);
            dm_tensor_file_close(&f);
        } else {
            expect_error(&z, DM_ERR_FORMAT, "the state dict's tensors up to 'w3' hold 4 MB, over twice the archive's 1 MB");
        }
        free(pkl.p);
        free(z.p);
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("pth");
    TCase *tc = tcase_create("checkpoints");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, micro_model_equals_safetensors);
    tcase_add_test(tc, micro_ema_matches_python_reader);
    tcase_add_test(tc, micro_ema_model_loads);
    tcase_add_test(tc, mmdet_checkpoint_equals_safetensors);
    tcase_add_test(tc, mmdet_classes_from_meta);
    tcase_add_test(tc, checkpoint_loads_from_memory);
    tcase_add_test(tc, ema_refused_outside_training_checkpoints);
    tcase_add_loop_test(tc, legacy_checkpoint_named, 0, sizeof legacy_starts / sizeof legacy_starts[0]);
    tcase_add_test(tc, bare_state_dict_all_dtypes_and_views);
    tcase_add_test(tc, strided_views_read_as_torch_reads_them);
    tcase_add_test(tc, state_dict_wrapper_protocol4_module_prefix);
    tcase_add_test(tc, built_archive_reads_with_and_without_zip64);
    suite_add_tcase(s, tc);
    TCase *bad = tcase_create("malformed");
    tcase_add_test(bad, truncated_zip);
    tcase_add_test(bad, bad_central_directory);
    tcase_add_test(bad, central_directory_outside_file);
    tcase_add_test(bad, member_offset_outside_file);
    tcase_add_test(bad, member_data_past_end);
    tcase_add_test(bad, compressed_member);
    tcase_add_test(bad, damaged_storage);
    tcase_add_test(bad, damaged_pickle);
    tcase_add_test(bad, damaged_storage_after_data_descriptor);
    tcase_add_test(bad, no_crcs_recorded);
    tcase_add_test(bad, not_a_torch_archive);
    tcase_add_test(bad, records_of_the_first_folder);
    tcase_add_test(bad, members_sharing_bytes);
    tcase_add_test(bad, pickle_protocol_1);
    tcase_add_loop_test(bad, hostile_pickle, 0, sizeof bad_pickles / sizeof bad_pickles[0]);
    tcase_add_loop_test(bad, long_opcode_runs, 0, 4);
    tcase_add_loop_test(bad, repeated_strings_are_charged, 0, 2);
    tcase_add_test(bad, storage_shorter_than_tensor);
    tcase_add_test(bad, tensor_past_its_storage);
    tcase_add_test(bad, shape_product_overflows);
    tcase_add_test(bad, strided_view_past_its_storage);
    tcase_add_test(bad, strides_overflow);
    tcase_add_test(bad, expanded_view_beyond_the_archive);
    tcase_add_test(bad, missing_storage_member);
    tcase_add_test(bad, duplicate_after_module_prefix);
    tcase_add_test(bad, views_beyond_the_archive);
    suite_add_tcase(s, bad);
    return test_run(s);
}
