/* test_model_files.c - bad model files get a status and a message naming
 * the problem (and the tensor), never a crash or a read outside the file.
 * Runs under AddressSanitizer in CI, which turns any stray read into a
 * failure. */
#include "testutil.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "damamba.h"
#include "json.h"
#include "model.h"
#include "model_file.h"
#include "safetensors.h"

/* A safetensors image: length prefix, header text, data_size zero bytes.
 * The buffer is exactly as long as the file, so ASan sees overreads. */
static unsigned char *make_file(const char *header, size_t data_size, size_t *size)
{
    size_t h = strlen(header);
    *size = 8 + h + data_size;
    unsigned char *buf = calloc(1, *size);
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)((uint64_t)h >> (8 * i));
    memcpy(buf + 8, header, h);
    return buf;
}

static void expect_parse_error(const char *header, size_t data_size, const char *needle)
{
    size_t size;
    unsigned char *buf = make_file(header, data_size, &size);
    dm_tensor_file f;
    dm_status st = dm_safetensors_parse(buf, size, &f);
    printf("%-28s -> %s\n", needle, dm_last_error());
    ck_assert_int_eq(st, DM_ERR_FORMAT);
    ck_assert_msg(strstr(dm_last_error(), needle) != NULL, "message '%s' lacks '%s'", dm_last_error(), needle);
    free(buf);
}

START_TEST(empty_file)
{
    char path[] = "/tmp/dm_empty_XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    close(fd);
    dm_model *m = (dm_model *)1;
    dm_status st = dm_model_load(path, NULL, &m);
    printf("empty file -> %s\n", dm_last_error());
    ck_assert_int_eq(st, DM_ERR_FORMAT);
    ck_assert_ptr_null(m);
    ck_assert_ptr_nonnull(strstr(dm_last_error(), "too short"));
    ck_assert_ptr_nonnull(strstr(dm_last_error(), path));
    unlink(path);
}
END_TEST

/* Rewrites a file in place, as torch.save, cp or curl -o do, until told to
 * stop: truncated, then written in two halves. */
typedef struct rewriter {
    const char *path;
    const char *bytes;
    size_t size;
    atomic_int stop;
} rewriter;

static void *rewrite_in_place(void *arg)
{
    rewriter *r = arg;
    while (!atomic_load(&r->stop)) {
        int fd = open(r->path, O_WRONLY | O_TRUNC);
        if (fd < 0) break;
        size_t half = r->size / 2;
        int whole = write(fd, r->bytes, half) == (ssize_t)half &&
                    write(fd, r->bytes + half, r->size - half) == (ssize_t)(r->size - half);
        close(fd);
        if (!whole) break;
    }
    return NULL;
}

/* A model file rewritten while it loads gives a model or an error, never a
 * signal: a mapped file cut short ended the process with SIGBUS. */
START_TEST(file_rewritten_while_loading)
{
    char *bytes;
    size_t size;
    ck_assert_msg(dm_read_input(getenv("DM_DEFAULT_MODEL"), SIZE_MAX - 1, "test", &bytes, &size) == DM_OK, "%s",
                  dm_last_error());
    char path[] = "/tmp/dm_rewritten_XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    ck_assert(write(fd, bytes, size) == (ssize_t)size);
    close(fd);
    rewriter r = {.path = path, .bytes = bytes, .size = size};
    pthread_t thread;
    ck_assert_int_eq(pthread_create(&thread, NULL, rewrite_in_place, &r), 0);
    int loaded = 0, refused = 0;
    for (int i = 0; i < 300; i++) {
        dm_model *m;
        if (dm_model_load(path, NULL, &m) == DM_OK) {
            loaded++;
            dm_model_free(m);
        } else {
            refused++;
        }
    }
    atomic_store(&r.stop, 1);
    pthread_join(thread, NULL);
    printf("file rewritten while loading: %d loads, %d refusals\n", loaded, refused);
    dm_model *m;
    ck_assert_msg(dm_model_load(path, NULL, &m) == DM_OK, "%s", dm_last_error());
    dm_model_free(m);
    unlink(path);
    free(bytes);
}
END_TEST

/* Files of other kinds given as a model are named as what they are. */
START_TEST(other_files_named)
{
#define BYTES(literal) literal, sizeof literal - 1
    static const struct { const char *bytes; size_t size; const char *message; } cases[] = {
        {BYTES("\x89PNG\r\n\x1a\n\0\0\0\rIHDR"), "a PNG image, not a model"},
        {BYTES("\xff\xd8\xff\xe0\0\x10JFIF"), "a JPEG image, not a model"},
        {BYTES("RIFF\x1a\0\0\0WEBPVP8L\x0d\0\0\0\x2f"), "a WebP image, not a model"},
        {BYTES("RIFF\x1a\0\0\0WAVEfmt "), "not a model file: neither a .pth checkpoint"},
        {BYTES("# README\n\nSome text.\n"), "not a model file: neither a .pth checkpoint"},
        /* an empty zip archive: NUL bytes once passed for a header's white space */
        {BYTES("PK\5\6\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0"), "not a model file: neither a .pth checkpoint"},
    };
#undef BYTES
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char path[] = "/tmp/dm_other_XXXXXX";
        int fd = mkstemp(path);
        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(write(fd, cases[i].bytes, cases[i].size), (ssize_t)cases[i].size);
        close(fd);
        dm_model *m = (dm_model *)1;
        ck_assert_int_eq(dm_model_load(path, NULL, &m), DM_ERR_FORMAT);
        ck_assert_ptr_null(m);
        ck_assert_msg(strstr(dm_last_error(), cases[i].message), "%s", dm_last_error());
        unlink(path);
    }
}
END_TEST

START_TEST(missing_file)
{
    dm_model *m;
    ck_assert_int_eq(dm_model_load("/nonexistent/model.safetensors", NULL, &m), DM_ERR_IO);
    ck_assert_ptr_nonnull(strstr(dm_last_error(), "/nonexistent/model.safetensors"));
}
END_TEST

START_TEST(truncated_header)
{
    /* The length promises 40 bytes of JSON; the file ends after 10. */
    unsigned char buf[18] = {40, 0, 0, 0, 0, 0, 0, 0};
    memcpy(buf + 8, "{\"a\":{\"dt", 10);
    dm_tensor_file f;
    ck_assert_int_eq(dm_safetensors_parse(buf, sizeof buf, &f), DM_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(dm_last_error(), "runs past the end"));
}
END_TEST

START_TEST(header_length_past_end)
{
    unsigned char buf[16] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, '{', '}'};
    dm_tensor_file f;
    ck_assert_int_eq(dm_safetensors_parse(buf, sizeof buf, &f), DM_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(dm_last_error(), "header length"));
}
END_TEST

START_TEST(invalid_json)
{
    expect_parse_error("{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]", 4, "not valid JSON");
    expect_parse_error("{\"a\": [1, 2,]}", 0, "not valid JSON");
    expect_parse_error("[1, 2]", 0, "not a JSON object");
    /* numbers outside JSON's grammar, which strtod would take */
    static const char *const numbers[] = {"01", "1.", "1e", "1e+", "-", ".5", "-01.5", "1.e5"};
    for (size_t i = 0; i < sizeof numbers / sizeof numbers[0]; i++) {
        char text[96];
        snprintf(text, sizeof text, "{\"w\": {\"dtype\": \"F32\", \"shape\": [%s], \"data_offsets\": [0, 4]}}",
                 numbers[i]);
        expect_parse_error(text, 4, "not valid JSON");
    }
}
END_TEST

START_TEST(offsets_out_of_range)
{
    expect_parse_error("{\"w\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 16]}}", 8,
                       "run past the end");
    expect_parse_error("{\"w\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [8, 4]}}", 16,
                       "begin <= end");
    expect_parse_error("{\"w\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 12]}}", 16,
                       "need 16");
}
END_TEST

START_TEST(offsets_overlap)
{
    expect_parse_error("{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]},"
                       " \"b\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [4, 12]}}",
                       12, "overlap");
}
END_TEST

START_TEST(repeated_metadata)
{
    /* A second __metadata__ once wrote past the first one's array. */
    expect_parse_error("{\"__metadata__\": {\"a\": \"1\"}, \"__metadata__\": {\"b\": \"2\", \"c\": \"3\"},"
                       " \"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}}",
                       4, "__metadata__ appears twice");
}
END_TEST

START_TEST(overlap_behind_empty_tensor)
{
    /* Sorted by offset: a [0, 8), e empty at 2, b [4, 12): a and b are not
     * neighbours, yet they overlap. */
    expect_parse_error("{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]},"
                       " \"e\": {\"dtype\": \"F32\", \"shape\": [0], \"data_offsets\": [2, 2]},"
                       " \"b\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [4, 12]}}",
                       12, "overlap");
}
END_TEST

/* A header of n empty tensors "t0", "t1", ..., the last one named like the
 * first when duplicate is set. */
static char *many_tensors_header(int n, int duplicate)
{
    size_t cap = (size_t)n * 64 + 16, len = 0;
    char *h = malloc(cap);
    ck_assert_ptr_nonnull(h);
    h[len++] = '{';
    for (int i = 0; i < n; i++)
        len += (size_t)snprintf(h + len, cap - len, "%s\"t%d\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}",
                                i ? "," : "", duplicate && i == n - 1 ? 0 : i);
    snprintf(h + len, cap - len, "}");
    return h;
}

START_TEST(many_tensors_in_n_log_n)
{
    /* 200,000 names took 113 s when each was compared with all before it;
     * sorted, it takes well under a second (the test timeout catches a
     * quadratic check). */
    char *header = many_tensors_header(200000, 0);
    size_t size;
    unsigned char *buf = make_file(header, 0, &size);
    dm_tensor_file f;
    ck_assert_int_eq(dm_safetensors_parse(buf, size, &f), DM_OK);
    ck_assert_uint_eq(f.count, 200000);
    dm_tensor_file_close(&f);
    free(buf);
    free(header);
    header = many_tensors_header(200000, 1);
    expect_parse_error(header, 0, "tensor 't0' appears twice");
    free(header);
}
END_TEST

START_TEST(header_memory_bounded)
{
    /* A megabyte of "0," costs 48 bytes of tree per byte unchecked. */
    size_t n = 1 << 20;
    char *header = malloc(2 * n + 16);
    strcpy(header, "{\"a\":[");
    size_t len = strlen(header);
    for (size_t i = 0; i < n; i++, len += 2) memcpy(header + len, "0,", 2);
    strcpy(header + len, "0]}");
    expect_parse_error(header, 0, "per byte of text");
    /* Something not an object is refused before it is parsed. */
    expect_parse_error("  [0, 1]", 0, "not a JSON object");
    free(header);
}
END_TEST

/* A header whose tree cannot be allocated is out of memory, not invalid
 * JSON: 20,000 tensors (about 10 MB of tree) with 1 MB to spare. */
static int parse_under_limit(void *file)
{
    const unsigned char *buf = file;
    size_t h = 0;
    for (int i = 0; i < 8; i++) h |= (size_t)buf[i] << (8 * i);
    dm_tensor_file f;
    dm_status st = dm_safetensors_parse(buf, 8 + h, &f);
    if (st == DM_OK) dm_tensor_file_close(&f);
    return st == DM_ERR_NOMEM && strstr(dm_last_error(), "out of memory") ? 0 : st == DM_OK ? 1 : 2;
}

START_TEST(header_out_of_memory_is_not_a_format_error)
{
    char *header = many_tensors_header(20000, 0);
    size_t size;
    unsigned char *buf = make_file(header, 0, &size);
    int got = test_with_spare_memory(1 << 20, parse_under_limit, buf);
    ck_assert_msg(got <= 0, "parsing under a memory limit %s", got == 1 ? "succeeded" : "failed, not as out of memory");
    free(buf);
    free(header);
}
END_TEST

START_TEST(json_strings_written_as_valid_utf8)
{
    static const struct { const char *in, *out; } cases[] = {
        {"plain", "\"plain\""},
        {"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\""}, /* e-acute, euro, emoji */
        {"a\xff" "b", "\"a\\udcff" "b\""},                       /* not UTF-8 at all */
        {"\xc0\x80", "\"\\udcc0\\udc80\""},                     /* overlong NUL */
        {"\xed\xa0\x80", "\"\\udced\\udca0\\udc80\""},        /* a surrogate */
        {"\xf4\x90\x80\x80", "\"\\udcf4\\udc90\\udc80\\udc80\""}, /* above U+10FFFF */
        {"\xe2\x82", "\"\\udce2\\udc82\""},                     /* cut short */
        {"q\"\\\n\x1b\x7f", "\"q\\\"\\\\\\u000a\\u001b\\u007f\""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *text = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&text, &len);
        ck_assert(dm_json_write_string(f, cases[i].in));
        fclose(f);
        ck_assert_str_eq(text, cases[i].out);
        free(text);
    }
}
END_TEST

/* \u escapes read back: pairs as one character; U+DC80..U+DCFF as the
 * byte dm_json_write_string escaped so (Python's surrogateescape), so
 * names round-trip; any other lone surrogate as U+FFFD, never as the
 * surrogate's own (invalid) UTF-8 bytes. */
START_TEST(json_strings_read_back)
{
    static const struct { const char *in, *out; } cases[] = {
        {"\"\\ud83d\\ude00\"", "\xf0\x9f\x98\x80"},
        {"\"a\\udcffb\"", "a\xff" "b"},
        {"\"\\udced\\udca0\\udc80\"", "\xed\xa0\x80"},
        {"\"\\ud800\"", "\xef\xbf\xbd"},
        {"\"\\ud800x\"", "\xef\xbf\xbdx"},
        {"\"\\ud800\\u0041\"", "\xef\xbf\xbd" "A"},
        {"\"\\ud800\\ud800\\udc00\"", "\xef\xbf\xbd\xf0\x90\x80\x80"},
        {"\"\\udc00\\udfff\"", "\xef\xbf\xbd\xef\xbf\xbd"},
    };
    char err[256];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        dm_json *v = dm_json_parse(cases[i].in, strlen(cases[i].in), err, sizeof err);
        ck_assert_msg(v && v->type == DM_JSON_STRING, "%s: %s", cases[i].in, err);
        ck_assert_msg(strcmp(v->string, cases[i].out) == 0, "%s read as %s", cases[i].in, v->string);
        dm_json_free(v);
    }
    /* what dm_json_write_string writes reads back as it was */
    static const char *const names[] = {"a\xff" "b", "\xc0\x80", "\xed\xa0\x80", "\xe2\x82", "\xc3\xa9 q\"\n"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char *text = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&text, &len);
        ck_assert(dm_json_write_string(f, names[i]));
        fclose(f);
        dm_json *v = dm_json_parse(text, len, err, sizeof err);
        ck_assert_msg(v && strcmp(v->string, names[i]) == 0, "%s did not read back", text);
        dm_json_free(v);
        free(text);
    }
    ck_assert_ptr_null(dm_json_parse("\"\\ud800\\uzzzz\"", 14, err, sizeof err));
    /* a NUL would end the C string early: "a\u0000b" would read as "a" */
    ck_assert_ptr_null(dm_json_parse("[\"a\\u0000b\"]", 12, err, sizeof err));
    ck_assert_msg(strstr(err, "\\u0000 in a string"), "%s", err);
}
END_TEST

START_TEST(many_blocks_in_n_log_n)
{
    /* 80,000 blocks: counting them looked each name up in the whole list
     * (30 s); with the sorted index it is n log n. */
    int blocks = 80000;
    size_t cap = (size_t)blocks * 128 + 256, len = 0;
    char *h = malloc(cap);
    len += (size_t)snprintf(h, cap, "{\"stem.0.weight\":{\"dtype\":\"F32\",\"shape\":[1,3,1,1],\"data_offsets\":[0,12]}");
    for (int i = 0; i < blocks; i++)
        len += (size_t)snprintf(h + len, cap - len,
                                ",\"stages.0.blocks.%d.norm1.norm.weight\":{\"dtype\":\"F32\",\"shape\":[1],"
                                "\"data_offsets\":[%d,%d]}", i, 12 + 4 * i, 16 + 4 * i);
    snprintf(h + len, cap - len, "}");
    size_t size;
    unsigned char *buf = make_file(h, 12 + 4 * (size_t)blocks, &size);
    dm_tensor_file f;
    ck_assert_msg(dm_safetensors_parse(buf, size, &f) == DM_OK, "%s", dm_last_error());
    dm_model *m;
    ck_assert_int_eq(dm_model_from_file(&f, &m), DM_ERR_MODEL);
    ck_assert_msg(strstr(dm_last_error(), "stages.0.blocks.0.mlp.fc1.weight") != NULL, "%s", dm_last_error());
    dm_tensor_file_close(&f);
    free(buf);
    free(h);
}
END_TEST

START_TEST(unknown_dtype)
{
    expect_parse_error("{\"w\": {\"dtype\": \"F8_E4M3\", \"shape\": [4], \"data_offsets\": [0, 4]}}", 4,
                       "unknown dtype 'F8_E4M3'");
}
END_TEST

START_TEST(shape_overflow)
{
    expect_parse_error("{\"w\": {\"dtype\": \"F32\", \"shape\": [4294967296, 4294967296], \"data_offsets\": [0, 4]}}",
                       4, "overflows");
}
END_TEST

/* Model-level errors: start from the valid micro model and break one thing. */
static dm_tensor_file micro;

static void open_micro(void) { test_open("micro.safetensors", &micro); }
static void close_micro(void) { dm_tensor_file_close(&micro); }

static dm_tensor *find_mut(dm_tensor_file *f, const char *name)
{
    return (dm_tensor *)dm_tensor_file_find(f, name);
}

static void expect_model_error(const dm_tensor_file *f, const char *needle)
{
    dm_model *m = (dm_model *)1;
    dm_status st = dm_model_from_file(f, &m);
    printf("%-28s -> %s\n", needle, dm_last_error());
    ck_assert_int_eq(st, DM_ERR_MODEL);
    ck_assert_ptr_null(m);
    ck_assert_msg(strstr(dm_last_error(), needle) != NULL, "message '%s' lacks '%s'", dm_last_error(), needle);
}

START_TEST(valid_micro_loads)
{
    dm_model *m;
    ck_assert_int_eq(dm_model_from_file(&micro, &m), DM_OK);
    ck_assert_int_eq(dm_model_config(m)->num_classes, 10);
    dm_model_free(m);
}
END_TEST

START_TEST(missing_tensor)
{
    dm_tensor *t = find_mut(&micro, "stages.2.blocks.1.token_mixer.Ds");
    ck_assert_ptr_nonnull(t);
    char *saved = t->name;
    t->name = "renamed";
    ck_assert_int_eq(dm_tensor_file_index(&micro), DM_OK); /* names changed: sort them again */
    expect_model_error(&micro, "missing tensor 'stages.2.blocks.1.token_mixer.Ds'");
    t->name = saved;
    ck_assert_int_eq(dm_tensor_file_index(&micro), DM_OK);
}
END_TEST

START_TEST(unexpected_tensor)
{
    dm_tensor_file f = micro;
    dm_tensor *copy = malloc((micro.count + 1) * sizeof *copy);
    memcpy(copy, micro.tensors, micro.count * sizeof *copy);
    copy[micro.count] = copy[0];
    copy[micro.count].name = "stages.0.blocks.0.extra.weight";
    f.tensors = copy;
    f.count = micro.count + 1;
    f.by_name = NULL;
    ck_assert_int_eq(dm_tensor_file_index(&f), DM_OK);
    expect_model_error(&f, "unexpected tensor 'stages.0.blocks.0.extra.weight'");
    free(f.by_name);
    free(copy);
}
END_TEST

START_TEST(wrong_shape)
{
    dm_tensor *t = find_mut(&micro, "stages.1.blocks.0.mlp.fc2.weight");
    ck_assert_ptr_nonnull(t);
    dm_tensor saved = *t;
    /* same bytes, other shape: [64, 256, 1, 1] -> [128, 128, 1, 1] */
    t->shape[0] = 128;
    t->shape[1] = 128;
    expect_model_error(&micro, "tensor 'stages.1.blocks.0.mlp.fc2.weight' has shape [128, 128, 1, 1], expected [64, 256, 1, 1]");
    *t = saved;
}
END_TEST

START_TEST(inconsistent_stage_shapes)
{
    dm_tensor *t = find_mut(&micro, "stages.2.downsample.0.weight");
    ck_assert_ptr_nonnull(t);
    dm_tensor saved = *t;
    t->shape[1] = 32; /* takes 32 channels, but stage 1 has 64 */
    t->shape[2] = 6;
    expect_model_error(&micro, "inconsistent stage shapes");
    ck_assert_ptr_nonnull(strstr(dm_last_error(), "stages.2.downsample.0.weight"));
    *t = saved;
}
END_TEST

START_TEST(integer_weights)
{
    dm_tensor *t = find_mut(&micro, "head.fc.bias");
    dm_tensor saved = *t;
    t->dtype = DM_I32;
    expect_model_error(&micro, "tensor 'head.fc.bias' has dtype I32");
    *t = saved;
}
END_TEST

/* Sizes read from a tensor's shape are bounded where they are read: a head
 * of 2^30 classes declared by an empty tensor is malformed, not "out of
 * memory" (or, at 2^31, cut to a negative int).  A stem without its last
 * convolution is named. */
START_TEST(inferred_sizes_checked)
{
    dm_tensor *t = find_mut(&micro, "head.fc.weight");
    dm_tensor saved = *t;
    const int64_t classes[] = {(int64_t)1 << 30, (int64_t)1 << 31, (int64_t)1 << 40, 0};
    for (int i = 0; i < 4; i++) {
        t->shape[0] = classes[i];
        t->shape[1] = 0;
        t->numel = 0;
        expect_model_error(&micro, "malformed tensor 'head.fc.weight'");
    }
    *t = saved;
    t = find_mut(&micro, "stem.9.weight");
    char *name = t->name;
    t->name = "stem.9.moved";
    ck_assert_int_eq(dm_tensor_file_index(&micro), DM_OK);
    expect_model_error(&micro, "missing or malformed tensor 'stem.9.weight'");
    t->name = name;
    ck_assert_int_eq(dm_tensor_file_index(&micro), DM_OK);
}
END_TEST

/* A classifier's head on the backbone of a checkpoint with dense heads
 * was bound as a classifier, and the model then failed as neither. */
START_TEST(classifier_head_in_a_dense_checkpoint)
{
    static const char *const files[] = {"maskrcnn_micro.safetensors", "upernet_micro.pth"};
    static const char *const kinds[] = {"detection", "segmentation"};
    for (int k = 0; k < 2; k++) {
        dm_tensor_file f;
        ck_assert_msg(dm_model_file_open(test_path(files[k]), 0, &f) == DM_OK, "%s", dm_last_error());
        dm_tensor_file with = f;
        dm_tensor *copy = malloc((f.count + 2) * sizeof *copy);
        memcpy(copy, f.tensors, f.count * sizeof *copy);
        /* any float data of the right size will do: the shapes are what is read */
        copy[f.count] = *dm_tensor_file_find(&micro, "head.fc.weight");
        copy[f.count].name = "backbone.head.fc.weight";
        copy[f.count + 1] = *dm_tensor_file_find(&micro, "head.fc.bias");
        copy[f.count + 1].name = "backbone.head.fc.bias";
        with.tensors = copy;
        with.count = f.count + 2;
        with.by_name = NULL;
        ck_assert_int_eq(dm_tensor_file_index(&with), DM_OK);
        char needle[128];
        snprintf(needle, sizeof needle, "a classifier's head in a %s checkpoint", kinds[k]);
        expect_model_error(&with, needle);
        ck_assert_ptr_nonnull(strstr(dm_last_error(), "'backbone.head.fc.weight'"));
        free(with.by_name);
        free(copy);
        dm_tensor_file_close(&f);
    }
}
END_TEST

/* The heads' tensors of a segmentation and a detection checkpoint, each
 * broken in four ways in turn: removed, flattened or given a rank more,
 * its first two dimensions swapped, read as integers.  Every one is
 * refused with a message naming the tensor as the file does, or, where
 * its shape was read as another width, a tensor of the heads that
 * disagrees with it (under ASan in CI: nothing is read out of place on
 * the way). */
static void break_each_head_tensor(const char *name)
{
    dm_tensor_file f;
    ck_assert_msg(dm_model_file_open(test_path(name), 0, &f) == DM_OK, "%s", dm_last_error());
    size_t tried = 0;
    for (size_t i = 0; i < f.count; i++) {
        dm_tensor *t = &f.tensors[i];
        /* the backbone's are tested above; BatchNorm's counters and the
         * training-only auxiliary head are not read */
        if (strncmp(t->name, "backbone.", 9) == 0 || strncmp(t->name, "auxiliary_head.", 15) == 0 ||
            strstr(t->name, "num_batches_tracked"))
            continue;
        dm_tensor saved = *t;
        char renamed[300];
        for (int how = 0; how < 4; how++) {
            if (how == 0) {
                snprintf(renamed, sizeof renamed, "%s.moved", saved.name);
                t->name = renamed;
            } else if (how == 1 && t->ndim > 1) {
                t->shape[0] = t->numel;
                t->ndim = 1;
            } else if (how == 1) {
                t->shape[1] = t->shape[0];
                t->shape[0] = 1;
                t->ndim = 2;
            } else if (how == 2) {
                if (t->ndim < 2 || t->shape[0] == t->shape[1]) continue;
                t->shape[0] = saved.shape[1];
                t->shape[1] = saved.shape[0];
            } else {
                if (dm_dtype_size(t->dtype) != 4) continue;
                t->dtype = DM_I32;
            }
            if (how == 0) ck_assert_int_eq(dm_tensor_file_index(&f), DM_OK);
            dm_model *m = (dm_model *)1;
            dm_status st = dm_model_from_file(&f, &m);
            ck_assert_msg(st == DM_ERR_MODEL && m == NULL, "%s: %s broken (%d) was not refused: %d %s", name,
                          saved.name, how, (int)st, dm_last_error());
            /* it names the tensor, or one of the heads' that disagrees with
             * it, as the checkpoint names them */
            const char *msg = dm_last_error(), *quote = strstr(msg, "tensor '");
            int heads = quote && (strncmp(quote + 8, "decode_head.", 12) == 0 || strncmp(quote + 8, "neck.", 5) == 0 ||
                                  strncmp(quote + 8, "rpn_head.", 9) == 0 || strncmp(quote + 8, "roi_head.", 9) == 0);
            ck_assert_msg(strstr(msg, saved.name) || heads,
                          "%s: %s broken (%d): the message names no tensor of the file: %s", name, saved.name, how,
                          msg);
            *t = saved;
            if (how == 0) ck_assert_int_eq(dm_tensor_file_index(&f), DM_OK);
            tried++;
        }
    }
    printf("%s: %zu broken heads refused\n", name, tried);
    ck_assert_uint_gt(tried, 40);
    dm_model *m;
    ck_assert_msg(dm_model_from_file(&f, &m) == DM_OK, "%s", dm_last_error()); /* restored */
    dm_model_free(m);
    dm_tensor_file_close(&f);
}

START_TEST(broken_segmentation_heads) { break_each_head_tensor("upernet_micro.pth"); }
END_TEST

START_TEST(broken_detection_heads) { break_each_head_tensor("maskrcnn_micro.safetensors"); }
END_TEST

int main(void)
{
    Suite *s = suite_create("model_files");
    TCase *tc = tcase_create("safetensors");
    tcase_add_test(tc, empty_file);
    tcase_add_test(tc, file_rewritten_while_loading);
    tcase_add_test(tc, other_files_named);
    tcase_add_test(tc, missing_file);
    tcase_add_test(tc, truncated_header);
    tcase_add_test(tc, header_length_past_end);
    tcase_add_test(tc, invalid_json);
    tcase_add_test(tc, offsets_out_of_range);
    tcase_add_test(tc, offsets_overlap);
    tcase_add_test(tc, repeated_metadata);
    tcase_add_test(tc, overlap_behind_empty_tensor);
    tcase_add_test(tc, many_tensors_in_n_log_n);
    tcase_add_test(tc, header_memory_bounded);
    tcase_add_test(tc, header_out_of_memory_is_not_a_format_error);
    tcase_add_test(tc, json_strings_written_as_valid_utf8);
    tcase_add_test(tc, json_strings_read_back);
    tcase_add_test(tc, many_blocks_in_n_log_n);
    tcase_add_test(tc, unknown_dtype);
    tcase_add_test(tc, shape_overflow);
    suite_add_tcase(s, tc);
    TCase *tm = tcase_create("model");
    tcase_add_unchecked_fixture(tm, open_micro, close_micro);
    tcase_add_test(tm, valid_micro_loads);
    tcase_add_test(tm, missing_tensor);
    tcase_add_test(tm, unexpected_tensor);
    tcase_add_test(tm, wrong_shape);
    tcase_add_test(tm, inconsistent_stage_shapes);
    tcase_add_test(tm, integer_weights);
    tcase_add_test(tm, inferred_sizes_checked);
    tcase_add_test(tm, classifier_head_in_a_dense_checkpoint);
    tcase_add_test(tm, broken_segmentation_heads);
    tcase_add_test(tm, broken_detection_heads);
    suite_add_tcase(s, tm);
    return test_run(s);
}
