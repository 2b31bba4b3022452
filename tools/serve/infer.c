/* infer.c - the Open Inference Protocol's (KServe v2) inference request and
 * response, in JSON and with Triton's binary tensor extension: a request
 * whose Inference-Header-Content-Length header is L carries L bytes of JSON,
 * then the tensors that JSON marks with parameters.binary_data_size, in
 * order; a response does the same for outputs asked for as binary. */
#include "serve.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "internal_api.h"

static const char *const stage_names[DM_NUM_STAGES] = {"stage0", "stage1", "stage2", "stage3"};

/* Set *error to a new message; returns 0 for `return fail(...)`. */
static int fail(char **error, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(char **error, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(error, fmt, ap) < 0) *error = NULL;
    va_end(ap);
    return 0;
}

int serve_base64_decode(const char *text, size_t len, unsigned char **out, size_t *out_len)
{
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    if (len % 4) return 0;
    size_t pad = len && text[len - 1] == '=' ? 1 + (len > 1 && text[len - 2] == '=') : 0;
    size_t n = len / 4 * 3 - pad;
    unsigned char *bytes = malloc(n ? n : 1);
    if (!bytes) return 0;
    size_t o = 0;
    for (size_t i = 0; i < len; i += 4) {
        uint32_t v = 0;
        for (size_t j = 0; j < 4; j++) {
            const char *p = text[i + j] ? strchr(alphabet, text[i + j]) : NULL;
            int is_pad = text[i + j] == '=' && i + j >= len - pad;
            if (!p && !is_pad) {
                free(bytes);
                return 0;
            }
            v = v << 6 | (uint32_t)(p ? p - alphabet : 0);
        }
        for (int j = 0; j < 3 && o < n; j++) bytes[o++] = (unsigned char)(v >> (16 - 8 * j));
    }
    *out = bytes;
    *out_len = n;
    return 1;
}

/* Decode and preprocess an encoded image into slot (channels x h x w),
 * refusing it from its header when it has more than *pixels_left pixels,
 * which it then takes from: the images of one request together have at
 * most --max-image-pixels pixels, so a request of many small files with
 * large headers cannot keep an HTTP thread decoding for long. */
static int decode_image(const serve_model *m, const void *data, size_t len, float *slot, const char *what,
                        int64_t *pixels_left, char **error)
{
    dm_image img = {0};
    int h, w, ok = 0;
    if (*pixels_left < 1)
        return fail(error, "%s: the images before it have all the %d pixels the images of one request may have "
                           "(--max-image-pixels)", what, m->max_image_pixels);
    if (dm_image_load_memory_within(data, len, m->channels, *pixels_left, DM_IMAGE_PIL, &img) != DM_OK) {
        if (*pixels_left < m->max_image_pixels)
            return fail(error, "%s: %s: the images of one request may have %d pixels in all (--max-image-pixels)",
                        what, dm_last_error(), m->max_image_pixels);
        return fail(error, "%s: %s", what, dm_last_error());
    }
    *pixels_left -= (int64_t)img.width * img.height;
    if (dm_preprocess_output_size(&m->prep, img.width, img.height, &h, &w) != DM_OK)
        fail(error, "%s: %s", what, dm_last_error());
    else if (h != m->h || w != m->w)
        fail(error, "%s: preprocessing gives %d x %d pixels, the model serves %d x %d", what, h, w, m->h, m->w);
    else if (dm_image_preprocess(&img, &m->prep, slot) != DM_OK)
        fail(error, "%s: %s", what, dm_last_error());
    else
        ok = 1;
    dm_image_free(&img);
    return ok;
}

static size_t image_floats(const serve_model *m)
{
    return (size_t)m->channels * m->h * m->w;
}

int serve_image_input(serve_request *r, serve_model *m, const void *data, size_t len, char **error)
{
    r->model = m;
    if (!(r->input_owned = malloc(sizeof(float) * image_floats(m)))) return fail(error, "out of memory");
    int64_t pixels_left = m->max_image_pixels;
    if (!decode_image(m, data, len, r->input_owned, "image", &pixels_left, error)) return 0;
    r->job.input = r->input_owned;
    r->job.n = 1;
    r->want_logits = 1;
    return 1;
}

/* Count the numbers of a (possibly nested) JSON array; -1 when something
 * else is in it. */
static int64_t count_numbers(const dm_json *v)
{
    if (v->type == DM_JSON_NUMBER) return 1;
    if (v->type != DM_JSON_ARRAY) return -1;
    int64_t count = 0;
    for (const dm_json *e = v->child; e; e = e->next) {
        int64_t c = count_numbers(e);
        if (c < 0) return -1;
        count += c;
    }
    return count;
}

/* The numbers counted by count_numbers(), in order. */
static float *flatten_numbers(const dm_json *v, float *out)
{
    if (v->type == DM_JSON_NUMBER) {
        *out++ = (float)v->number;
        return out;
    }
    for (const dm_json *e = v->child; e; e = e->next) out = flatten_numbers(e, out);
    return out;
}

/* Shape as integers; returns the number of dimensions, or -1. */
static int read_shape(const dm_json *shape, int64_t *dims, int max)
{
    if (!shape || shape->type != DM_JSON_ARRAY || shape->count > (size_t)max) return -1;
    int n = 0;
    for (const dm_json *e = shape->child; e; e = e->next) {
        if (e->type != DM_JSON_NUMBER || !e->is_integer || e->integer < 0) return -1;
        dims[n++] = e->integer;
    }
    return n;
}

/* A tensor's binary_data_size parameter, or -1 when it has none. */
static int64_t binary_size(const dm_json *tensor)
{
    const dm_json *params = dm_json_get(tensor, "parameters");
    const dm_json *size = params ? dm_json_get(params, "binary_data_size") : NULL;
    if (!size) return -1;
    return size->type == DM_JSON_NUMBER && size->is_integer && size->integer >= 0 ? size->integer : -2;
}

static int flag_parameter(const dm_json *object, const char *name)
{
    const dm_json *params = object ? dm_json_get(object, "parameters") : NULL;
    const dm_json *flag = params ? dm_json_get(params, name) : NULL;
    return flag && flag->type == DM_JSON_BOOL && flag->boolean;
}

/* FP32 input, N x C x H x W: numbers in "data", or raw little-endian floats. */
/* An FP32 input (numel floats at data, which may be unaligned in a body)
 * must be finite: a NaN, an infinity or a JSON number beyond float32
 * (1e999) would only come back as NaNs. */
static int finite_input(const void *data, size_t numel, char **error)
{
    for (size_t i = 0; i < numel; i++) {
        float v;
        memcpy(&v, (const char *)data + i * sizeof v, sizeof v);
        if (!isfinite(v)) return fail(error, "input 'input': element %zu is %g, not a finite float32", i, (double)v);
    }
    return 1;
}

static int parse_fp32(serve_request *r, const serve_model *m, const dm_json *input, const char *bin,
                      int64_t bin_size, char **error)
{
    int64_t dims[4];
    int nd = read_shape(dm_json_get(input, "shape"), dims, 4);
    if (nd != 4 || dims[0] < 1 || dims[1] != m->channels || dims[2] != m->h || dims[3] != m->w)
        return fail(error, "input 'input' must have shape [N, %d, %d, %d] (FP32) for model '%s'", m->channels, m->h,
                    m->w, m->name);
    size_t per_image = image_floats(m);
    if (dims[0] > INT32_MAX / (int64_t)per_image) return fail(error, "input 'input' is too large");
    size_t numel = (size_t)dims[0] * per_image;
    r->job.n = (int)dims[0];
    if (bin) {
        if ((uint64_t)bin_size != numel * sizeof(float))
            return fail(error, "input 'input': binary_data_size is %lld bytes, shape [%lld, %d, %d, %d] needs %zu",
                        (long long)bin_size, (long long)dims[0], m->channels, m->h, m->w, numel * sizeof(float));
        r->job.input = bin;
        return finite_input(bin, numel, error);
    }
    const dm_json *data = dm_json_get(input, "data");
    if (!data || data->type != DM_JSON_ARRAY || count_numbers(data) != (int64_t)numel)
        return fail(error, "input 'input': 'data' must be an array of %zu numbers for shape [%lld, %d, %d, %d]",
                    numel, (long long)dims[0], m->channels, m->h, m->w);
    if (!(r->input_owned = malloc(sizeof(float) * numel))) return fail(error, "out of memory");
    flatten_numbers(data, r->input_owned);
    r->job.input = r->input_owned;
    return finite_input(r->input_owned, numel, error);
}

/* BYTES input, shape [N] or [N, 1]: encoded images, base64 strings in
 * "data", or each a 4-byte little-endian length and its bytes. */
static int parse_bytes(serve_request *r, const serve_model *m, const dm_json *input, const char *bin,
                       int64_t bin_size, size_t max_input_bytes, char **error)
{
    int64_t dims[2];
    int nd = read_shape(dm_json_get(input, "shape"), dims, 2);
    if (nd < 1 || dims[0] < 1 || (nd == 2 && dims[1] != 1))
        return fail(error, "input 'input' of BYTES must have shape [N] or [N, 1]");
    const dm_json *data = dm_json_get(input, "data");
    int64_t n = dims[0];
    if (!bin && (!data || data->type != DM_JSON_ARRAY || data->count != (size_t)n))
        return fail(error, "input 'input': 'data' must hold %lld base64 strings", (long long)n);
    /* Every image takes at least 4 bytes of the body, so n is bounded. */
    if (bin && n > bin_size / 4) return fail(error, "input 'input': binary data is shorter than %lld images", (long long)n);
    size_t per_image = image_floats(m);
    /* Small files can decode to large tensors: the body limit bounds those too. */
    if ((uint64_t)n > max_input_bytes / (sizeof(float) * per_image))
        return fail(error, "input 'input': %lld images of %d x %d x %d floats exceed the limit of %zu bytes",
                    (long long)n, m->channels, m->h, m->w, max_input_bytes);
    if (!(r->input_owned = malloc(sizeof(float) * per_image * (size_t)n))) return fail(error, "out of memory");
    r->job.input = r->input_owned;
    r->job.n = (int)n;
    const dm_json *e = data && !bin ? data->child : NULL;
    size_t at = 0;
    int64_t pixels_left = m->max_image_pixels;
    for (int64_t i = 0; i < n; i++) {
        char what[64];
        snprintf(what, sizeof what, "image %lld of input 'input'", (long long)i);
        float *slot = (float *)r->input_owned + per_image * (size_t)i;
        int ok;
        if (bin) {
            uint32_t size = 0;
            if (bin_size - (int64_t)at < 4) return fail(error, "%s: binary data ends early", what);
            for (int b = 0; b < 4; b++) size |= (uint32_t)(unsigned char)bin[at + b] << (8 * b);
            at += 4;
            if ((uint64_t)size > (uint64_t)bin_size - at) return fail(error, "%s: binary data ends early", what);
            ok = decode_image(m, bin + at, size, slot, what, &pixels_left, error);
            at += size;
        } else {
            unsigned char *bytes;
            size_t size;
            if (e->type != DM_JSON_STRING || !serve_base64_decode(e->string, strlen(e->string), &bytes, &size))
                return fail(error, "%s: not a base64 string", what);
            ok = decode_image(m, bytes, size, slot, what, &pixels_left, error);
            free(bytes);
            e = e->next;
        }
        if (!ok) return 0;
    }
    if (bin && at != (size_t)bin_size)
        return fail(error, "input 'input': %zu bytes of binary data after the last image", (size_t)bin_size - at);
    return 1;
}

/* Which outputs to return, and which of them as binary data. */
static int parse_outputs(serve_request *r, const serve_model *m, const dm_json *root, char **error)
{
    int all_binary = flag_parameter(root, "binary_data_output");
    const dm_json *outputs = dm_json_get(root, "outputs");
    if (!outputs || (outputs->type == DM_JSON_ARRAY && outputs->count == 0)) {
        /* The logits, or the stage outputs of a model without a head. */
        r->want_logits = r->binary_logits = m->classes > 0;
        r->binary_logits &= all_binary;
        for (int s = 0; s < DM_NUM_STAGES && !m->classes; s++) r->want_stage[s] = 1, r->binary_stage[s] = all_binary;
        return 1;
    }
    if (outputs->type != DM_JSON_ARRAY) return fail(error, "'outputs' must be an array");
    for (const dm_json *o = outputs->child; o; o = o->next) {
        const dm_json *name = o->type == DM_JSON_OBJECT ? dm_json_get(o, "name") : NULL;
        if (!name || name->type != DM_JSON_STRING) return fail(error, "each of 'outputs' needs a 'name'");
        int binary = all_binary || flag_parameter(o, "binary_data"), found = 0;
        if (!strcmp(name->string, "logits") && m->classes) {
            r->want_logits = found = 1;
            r->binary_logits = binary;
        }
        for (int s = 0; s < DM_NUM_STAGES; s++)
            if (!strcmp(name->string, stage_names[s])) {
                r->want_stage[s] = found = 1;
                r->binary_stage[s] = binary;
            }
        if (!found)
            return fail(error, "model '%s' has no output '%s' (it has %sstage0, stage1, stage2, stage3)", m->name,
                        name->string, m->classes ? "logits, " : "");
    }
    return 1;
}

static int parse_request(serve_request *r, serve_model *m, const char *body, size_t len, size_t header_len,
                         size_t max_input_bytes, char **error)
{
    r->model = m;
    if (header_len > len)
        return fail(error, "Inference-Header-Content-Length is %zu, but the body has %zu bytes", header_len, len);
    size_t json_len = header_len ? header_len : len;
    char err[160];
    dm_json *root = dm_json_parse(body, json_len, err, sizeof err);
    if (!root) return fail(error, "malformed JSON: %s", err);
    int ok = 0;
    const dm_json *inputs = dm_json_get(root, "inputs"), *id = dm_json_get(root, "id");
    const dm_json *input = inputs && inputs->type == DM_JSON_ARRAY ? inputs->child : NULL;
    const dm_json *name = input ? dm_json_get(input, "name") : NULL;
    const dm_json *datatype = input ? dm_json_get(input, "datatype") : NULL;
    int64_t bin_size = input ? binary_size(input) : -1;
    if (root->type != DM_JSON_OBJECT)
        fail(error, "the request must be a JSON object");
    else if (id && id->type != DM_JSON_STRING)
        fail(error, "'id' must be a string");
    else if (id && !(r->id = strdup(id->string)))
        fail(error, "out of memory");
    else if (!input || inputs->count != 1 || input->type != DM_JSON_OBJECT)
        fail(error, "'inputs' must be an array of one tensor, 'input'");
    else if (!name || name->type != DM_JSON_STRING || strcmp(name->string, "input"))
        fail(error, "model '%s' has one input, 'input'", m->name);
    else if (bin_size == -2)
        fail(error, "input 'input': binary_data_size must be a non-negative integer");
    else if (bin_size >= 0 && !header_len)
        fail(error, "input 'input': binary_data_size needs the Inference-Header-Content-Length header to say where "
                    "the JSON ends");
    else if (bin_size >= 0 && (uint64_t)bin_size != len - header_len)
        fail(error, "input 'input': binary_data_size is %lld, but %zu bytes follow the JSON header", (long long)bin_size,
             len - json_len);
    else if (bin_size < 0 && header_len && len > header_len)
        fail(error, "%zu bytes follow the JSON header, but no input has binary_data_size", len - header_len);
    else if (!datatype || datatype->type != DM_JSON_STRING ||
             (strcmp(datatype->string, "FP32") && strcmp(datatype->string, "BYTES")))
        fail(error, "input 'input' must have datatype FP32 or BYTES");
    else if (!strcmp(datatype->string, "FP32"))
        ok = parse_fp32(r, m, input, bin_size >= 0 ? body + header_len : NULL, bin_size, error);
    else
        ok = parse_bytes(r, m, input, bin_size >= 0 ? body + header_len : NULL, bin_size, max_input_bytes, error);
    ok = ok && parse_outputs(r, m, root, error);
    dm_json_free(root);
    return ok;
}

/* Parsing a JSON document takes up to DM_JSON_BYTES_PER_BYTE bytes per
 * byte of its text (a list of one-digit numbers).  The documents parsed at
 * once share what one body at the limit may take: a parse waits until its
 * text fits beside the others', so the server's parsing memory does not
 * grow with its HTTP threads. */
static pthread_mutex_t parse_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t parse_done = PTHREAD_COND_INITIALIZER;
static size_t parse_text; /* bytes of the documents being parsed */

static void parse_take(size_t bytes, size_t limit)
{
    pthread_mutex_lock(&parse_lock);
    while (parse_text && parse_text + bytes > limit) pthread_cond_wait(&parse_done, &parse_lock);
    parse_text += bytes;
    pthread_mutex_unlock(&parse_lock);
}

static void parse_give(size_t bytes)
{
    pthread_mutex_lock(&parse_lock);
    parse_text -= bytes;
    pthread_cond_broadcast(&parse_done);
    pthread_mutex_unlock(&parse_lock);
}

int serve_infer_parse(serve_request *r, serve_model *m, const char *body, size_t len, size_t header_len,
                      size_t max_input_bytes, char **error)
{
    size_t json_len = header_len && header_len <= len ? header_len : len;
    parse_take(json_len, max_input_bytes);
    int ok = parse_request(r, m, body, len, header_len, max_input_bytes, error);
    parse_give(json_len);
    return ok;
}

/* Bytes of an answer a float may take: 4 as binary data, as JSON text up
 * to 17 ("-1.23456789e-38, "). */
#define BINARY_FLOAT_BYTES 4
#define JSON_FLOAT_BYTES 17

int serve_request_outputs(serve_request *r, size_t max_answer, char **error)
{
    const serve_model *m = r->model;
    size_t n = (size_t)r->job.n;
    /* The outputs are held from now until the answer is sent, and their
     * text is made whole: a request may not ask for more than the body
     * limit's worth, or 15 MB of images asking for stages as JSON would
     * take 200 MB, times the requests queued. */
    double answer = r->want_logits ? (double)n * m->classes * (r->binary_logits ? BINARY_FLOAT_BYTES : JSON_FLOAT_BYTES) : 0;
    for (int s = 0; s < DM_NUM_STAGES; s++)
        if (r->want_stage[s])
            answer += (double)n * m->stage_c[s] * m->stage_h[s] * m->stage_w[s] *
                      (r->binary_stage[s] ? BINARY_FLOAT_BYTES : JSON_FLOAT_BYTES);
    if (answer > (double)max_answer)
        return fail(error, "the outputs asked for would make an answer of up to %.1f MB, over the limit of %.1f MB "
                    "(--max-body-mb): ask for fewer images or outputs, or for binary_data",
                    answer / 1e6, max_answer / 1e6);
    if (r->want_logits && !(r->job.logits = malloc(sizeof(float) * n * m->classes)))
        return fail(error, "out of memory");
    for (int s = 0; s < DM_NUM_STAGES; s++)
        if (r->want_stage[s] &&
            !(r->job.stages[s] = malloc(sizeof(float) * n * m->stage_c[s] * m->stage_h[s] * m->stage_w[s])))
            return fail(error, "out of memory");
    return 1;
}

/* One output tensor: its JSON description, with the numbers unless binary. */
static void write_output(FILE *out, const char *name, const float *data, const int64_t *shape, int ndim,
                         int binary, int first)
{
    size_t numel = 1;
    fprintf(out, "%s{\"name\": \"%s\", \"datatype\": \"FP32\", \"shape\": [", first ? "" : ", ", name);
    for (int d = 0; d < ndim; d++) {
        fprintf(out, "%s%lld", d ? ", " : "", (long long)shape[d]);
        numel *= (size_t)shape[d];
    }
    if (binary) {
        fprintf(out, "], \"parameters\": {\"binary_data_size\": %zu}}", numel * sizeof(float));
        return;
    }
    fputs("], \"data\": [", out);
    for (size_t i = 0; i < numel; i++) {
        if (i) fputs(", ", out);
        dm_json_write_number(out, "%.9g", data[i]);
    }
    fputs("]}", out);
}

int serve_infer_response(const serve_request *r, char **body, size_t *json_len, size_t *total)
{
    const serve_model *m = r->model;
    int64_t n = r->job.n;
    dm_memout json;
    if (dm_memout_open(&json) != 0) return 0;
    FILE *out = json.f;
    fputs("{\"model_name\": ", out);
    dm_json_write_string(out, m->name);
    if (r->id) {
        fputs(", \"id\": ", out);
        dm_json_write_string(out, r->id);
    }
    fputs(", \"outputs\": [", out);
    size_t binary_bytes = 0;
    int first = 1;
    if (r->want_logits) {
        int64_t shape[2] = {n, m->classes};
        write_output(out, "logits", r->job.logits, shape, 2, r->binary_logits, first);
        binary_bytes += r->binary_logits ? sizeof(float) * n * m->classes : 0;
        first = 0;
    }
    for (int s = 0; s < DM_NUM_STAGES; s++)
        if (r->want_stage[s]) {
            int64_t shape[4] = {n, m->stage_c[s], m->stage_h[s], m->stage_w[s]};
            write_output(out, stage_names[s], r->job.stages[s], shape, 4, r->binary_stage[s], first);
            binary_bytes += r->binary_stage[s] ? sizeof(float) * n * m->stage_c[s] * m->stage_h[s] * m->stage_w[s] : 0;
            first = 0;
        }
    fputs("]}", out);
    if (dm_memout_close(&json) != 0) return 0; /* out of memory: no answer rather than a cut one */
    char *text = json.text;
    size_t size = json.len;
    char *all = realloc(text, size + binary_bytes + 1);
    if (!all) {
        free(text);
        return 0;
    }
    /* The binary outputs follow the JSON in the order it lists them. */
    size_t at = size;
    if (r->want_logits && r->binary_logits) {
        memcpy(all + at, r->job.logits, sizeof(float) * n * m->classes);
        at += sizeof(float) * n * m->classes;
    }
    for (int s = 0; s < DM_NUM_STAGES; s++)
        if (r->want_stage[s] && r->binary_stage[s]) {
            size_t bytes = sizeof(float) * n * m->stage_c[s] * m->stage_h[s] * m->stage_w[s];
            memcpy(all + at, r->job.stages[s], bytes);
            at += bytes;
        }
    *body = all;
    *json_len = size;
    *total = at;
    return 1;
}

void serve_request_free(serve_request *r)
{
    free(r->input_owned);
    free(r->id);
    free(r->job.logits);
    free(r->job.error);
    for (int s = 0; s < DM_NUM_STAGES; s++) free(r->job.stages[s]);
    *r = (serve_request){0};
}
