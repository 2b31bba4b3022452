/* serve.h - `damamba serve`: an HTTP inference server speaking the Open
 * Inference Protocol (KServe v2) on libmicrohttpd.
 *
 * Pieces: batcher.c queues each model's requests and runs them in batches on
 * one worker thread per model; infer.c turns v2 requests into input tensors
 * and results into v2 responses; metrics.c keeps the Prometheus counters;
 * http.c routes requests and owns the connections; cmd_serve.c parses the
 * options and runs the daemon until SIGTERM or SIGINT. */
#ifndef DM_SERVE_H
#define DM_SERVE_H

#include "cli.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

/* ------------------------------------------------------------ metrics */

/* Histogram bucket upper bounds: latency in seconds, batch size in images. */
#define SERVE_LATENCY_BUCKETS 12
#define SERVE_BATCH_BUCKETS 13 /* 1, 2, 4, ..., 4096 */

typedef enum serve_endpoint {
    SERVE_EP_HEALTH,
    SERVE_EP_SERVER_METADATA,
    SERVE_EP_MODEL_METADATA,
    SERVE_EP_MODEL_READY,
    SERVE_EP_INFER,
    SERVE_EP_CLASSIFY,
    SERVE_EP_METRICS,
    SERVE_EP_UNKNOWN,
    SERVE_EP_COUNT
} serve_endpoint;

#define SERVE_STATUS_KINDS 10 /* the status codes counted one by one, plus "other" */

typedef struct serve_request_counts {
    uint64_t requests[SERVE_EP_COUNT][SERVE_STATUS_KINDS];
    uint64_t latency[SERVE_LATENCY_BUCKETS + 1]; /* the last: above every bound */
    double latency_sum;
    uint64_t latency_count;
} serve_request_counts;

typedef struct serve_metrics {
    pthread_mutex_t lock;
    serve_request_counts counts;
} serve_metrics;

void serve_metrics_init(serve_metrics *m);
void serve_metrics_destroy(serve_metrics *m);
/* One finished request: its endpoint, status (0: closed without a response)
 * and seconds from arrival to the end of the response. */
void serve_metrics_request(serve_metrics *m, serve_endpoint ep, int status, double seconds);
const char *serve_endpoint_name(serve_endpoint ep);

struct serve_server;
/* Every metric of the server and its models. */
void serve_metrics_write(FILE *out, struct serve_server *s);

/* ------------------------------------------------------------ batcher */

/* One request's images on their way through a batcher.  The caller fills the
 * inputs and outputs, submits it, and must not touch it until done() runs
 * (on the worker thread, which does not touch the job afterwards). */
typedef struct serve_job {
    const void *input;                   /* n x C x H x W float32, maybe unaligned */
    int n;
    float *logits;                       /* n x classes, or NULL */
    float *stages[DM_NUM_STAGES];        /* n x C_s x H_s x W_s, or NULL */
    void (*done)(struct serve_job *job); /* once all n ran; error NULL on success */
    void *owner;                         /* for done() */
    char *error;                         /* set on failure: why (free it) */
    int abandoned;                       /* the batcher stopped before running all of it */
    /* The batcher's bookkeeping. */
    struct serve_job *next;
    int taken, finished;
    double arrival;
} serve_job;

typedef struct serve_batch_slot {
    serve_job *job;
    int index;
} serve_batch_slot;

typedef struct serve_batcher {
    const dm_model *model;
    dm_workspace *ws;
    int max_batch, max_delay_ms, queue_limit;
    int channels, h, w, classes;
    size_t stage_size[DM_NUM_STAGES]; /* floats per image */
    float *input, *logits, *stages[DM_NUM_STAGES];
    serve_batch_slot *slots;
    pthread_t thread;
    int started;
    /* Guarded by lock. */
    pthread_mutex_t lock;
    pthread_cond_t wake;
    serve_job *head, *tail;
    int queued_jobs, queued_images, stopping;
    uint64_t batch_hist[SERVE_BATCH_BUCKETS + 1];
    uint64_t batches, images;
    uint64_t images_per_second_ring[10]; /* images finished in each of the last 10 seconds */
    int64_t ring_second;
} serve_batcher;

/* Allocate the workspace and batch buffers for batches of up to max_batch
 * images of channels x h x w and start the worker.  At most queue_limit
 * requests wait.  Prints the error and returns 0 on failure. */
int serve_batcher_start(serve_batcher *b, const dm_model *model, int max_batch, int max_delay_ms, int queue_limit,
                        int h, int w);

/* Queue a job; returns 0 (and queues nothing) when the queue is full. */
int serve_batcher_submit(serve_batcher *b, serve_job *job);

/* Queue depth, images per second over the last 10 s, and the batch-size
 * histogram, copied under the lock. */
typedef struct serve_batcher_stats {
    int queued_jobs, queued_images;
    double images_per_second;
    uint64_t batch_hist[SERVE_BATCH_BUCKETS + 1];
    uint64_t batches, images;
} serve_batcher_stats;
void serve_batcher_stats_get(serve_batcher *b, serve_batcher_stats *out);

/* Stop the worker once the batch it runs is done and free everything; the
 * requests still queued are not run: each is marked abandoned and done. */
void serve_batcher_stop(serve_batcher *b);

/* -------------------------------------------------------------- models */

typedef struct serve_model {
    char *name;
    const char *source; /* file, or the embedded model's name */
    dm_model *model;
    dm_preprocess prep;
    int channels, h, w, classes;
    int stage_c[DM_NUM_STAGES], stage_h[DM_NUM_STAGES], stage_w[DM_NUM_STAGES];
    int max_image_pixels; /* an image over this many is refused from its header */
    serve_batcher batcher;
} serve_model;

/* -------------------------------------------------------------- server */

typedef struct serve_options {
    const char *host;
    int port;
    int max_batch, max_delay_ms, queue_limit;
    size_t max_body;
    int max_image_pixels;
    int timeout_s, max_connections, http_threads;
} serve_options;

typedef struct serve_server {
    serve_options opt;
    serve_model *models;
    int model_count;
    serve_metrics metrics;
    struct MHD_Daemon *daemon;
    pthread_mutex_t lock;
    pthread_cond_t idle;
    int in_flight; /* requests between arrival and the end of their response */
    atomic_int draining; /* health/ready says no; responses close their connection */
    int workers_stopped; /* no job may be submitted any more */
} serve_server;

/* Start listening; prints the error and returns 0 on failure. */
int serve_http_start(serve_server *s);
/* Stop accepting connections, wait up to grace_s seconds for the requests in
 * flight (less if a byte arrives on hurry_fd: a second signal), answer those
 * still queued 503, then close everything. */
void serve_http_stop(serve_server *s, int grace_s, int hurry_fd);

serve_model *serve_find_model(serve_server *s, const char *name);

/* --------------------------------------------------------------- infer */

/* A parsed v2 inference request (or a /v1/classify image) as one job. */
typedef struct serve_request {
    serve_model *model;
    serve_job job;
    void *input_owned;  /* the tensor, when decoded here rather than in the body */
    char *id;           /* the request's "id", echoed */
    int want_logits, want_stage[DM_NUM_STAGES];
    int binary_logits, binary_stage[DM_NUM_STAGES];
} serve_request;

/* Parse a v2 infer body (JSON, or JSON + binary tensors after header_len
 * bytes when header_len > 0) for model m; encoded images may decode to at
 * most max_input_bytes of input tensor.  On failure returns 0 and an
 * allocated message in *error. */
int serve_infer_parse(serve_request *r, serve_model *m, const char *body, size_t len, size_t header_len,
                      size_t max_input_bytes, char **error);

/* Decode and preprocess one encoded image as the job's only input. */
int serve_image_input(serve_request *r, serve_model *m, const void *data, size_t len, char **error);

/* Allocate the job's outputs, once their answer is known to fit in
 * max_answer bytes. */
int serve_request_outputs(serve_request *r, size_t max_answer, char **error);

/* The v2 response of a finished request: *json (its length *json_len) is
 * the JSON part; binary outputs follow it in the same buffer, *total bytes in
 * all.  Returns 0 when out of memory. */
int serve_infer_response(const serve_request *r, char **body, size_t *json_len, size_t *total);

void serve_request_free(serve_request *r);

/* Base64 (RFC 4648, with padding) to bytes; returns 0 on malformed text. */
int serve_base64_decode(const char *text, size_t len, unsigned char **out, size_t *out_len);

/* Current monotonic time in seconds. */
double serve_now(void);

#endif
