/* fuzz_infer.c - the server's v2 inference request parser, as a request
 * body reaches it: JSON alone, or a JSON header and binary tensors (the
 * first 4 input bytes, little-endian, are the Inference-Header-Content-Length;
 * 0 for none), then the response writer on what it accepted. */
#include "serve.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 4) return 0;
    size_t header_len = (size_t)data[0] | (size_t)data[1] << 8 | (size_t)data[2] << 16 | (size_t)data[3] << 24;
    /* A small grey model: 8 x 8 inputs keep valid FP32 tensors short. */
    serve_model m = {.name = "fuzz", .channels = 1, .h = 8, .w = 8, .classes = 3,
                     .stage_c = {2, 3, 4, 5}, .stage_h = {2, 1, 1, 1}, .stage_w = {2, 1, 1, 1},
                     .max_image_pixels = 1 << 16,
                     .prep = {.size = sizeof(dm_preprocess), .resize = 8, .crop = 8, .interpolation = DM_INTERP_BILINEAR, .channels = 1,
                              .mean = {0.5f}, .std = {0.25f}}};
    serve_request r = {0};
    char *error = NULL;
    if (serve_infer_parse(&r, &m, (const char *)data + 4, size - 4, header_len, 1 << 20, &error) &&
        serve_request_outputs(&r, 1 << 20, &error)) {
        /* Read every input float, as the worker would, and give outputs values. */
        volatile float sink = 0;
        const unsigned char *in = r.job.input;
        for (size_t i = 0; i < (size_t)r.job.n * 64; i++) {
            float v;
            memcpy(&v, in + 4 * i, 4);
            sink += v;
        }
        (void)sink;
        if (r.job.logits) memset(r.job.logits, 0, sizeof(float) * 3 * r.job.n);
        for (int s = 0; s < DM_NUM_STAGES; s++)
            if (r.job.stages[s])
                memset(r.job.stages[s], 0, sizeof(float) * r.job.n * m.stage_c[s] * m.stage_h[s] * m.stage_w[s]);
        char *body;
        size_t json_len, total;
        if (serve_infer_response(&r, &body, &json_len, &total)) free(body);
    }
    free(error);
    serve_request_free(&r);
    return 0;
}
