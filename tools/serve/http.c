/* http.c - the HTTP side of `damamba serve`: libmicrohttpd calls handle()
 * for each request, first with its headers, then with each piece of its
 * body, then once more when the body is complete.  Inference requests are
 * queued on their model's batcher and their connection is suspended until
 * the worker finishes them; everything else is answered at once. */
#include "serve.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "internal_api.h"

/* One request, from its headers to the end of its response. */
typedef struct request_ctx {
    serve_server *server;
    struct MHD_Connection *conn;
    double start;
    serve_endpoint endpoint;
    serve_model *model;   /* the one named in the URL, if any */
    char *url, method[16];
    char *body;
    size_t len, cap;
    enum { READING, QUEUED, QUEUE_FULL, SHUTTING_DOWN, ANSWERED } state;
    int status;           /* of the response, 0 until one is queued */
    size_t response_bytes;
    serve_request req;
    int top;              /* /v1/classify: classes to list */
    char *error;          /* the message of an error reply */
    int error_status;
    int close;            /* the connection closes after the reply */
} request_ctx;

serve_model *serve_find_model(serve_server *s, const char *name)
{
    for (int i = 0; i < s->model_count; i++)
        if (!strcmp(s->models[i].name, name)) return &s->models[i];
    return NULL;
}

/* ------------------------------------------------------------ replies */

/* Queue a response of len bytes of body (taken over) with its status. */
static enum MHD_Result reply(request_ctx *ctx, int status, const char *type, char *body, size_t len,
                             size_t inference_header_len)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    if (status == MHD_HTTP_SERVICE_UNAVAILABLE) MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, "1");
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW,
                                ctx->endpoint == SERVE_EP_INFER || ctx->endpoint == SERVE_EP_CLASSIFY ? "POST"
                                                                                                       : "GET, HEAD");
    if (inference_header_len) {
        char value[32];
        snprintf(value, sizeof value, "%zu", inference_header_len);
        MHD_add_response_header(resp, "Inference-Header-Content-Length", value);
    }
    /* While draining, clients should take their next request elsewhere. */
    if (ctx->server->draining || ctx->close) MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    enum MHD_Result ret = MHD_queue_response(ctx->conn, (unsigned)status, resp);
    MHD_destroy_response(resp);
    ctx->state = ANSWERED;
    if (ret == MHD_YES) {
        ctx->status = status;
        ctx->response_bytes = len;
    }
    return ret;
}

/* Reply with what write() puts in a memory stream; write() returns the
 * status. */
static enum MHD_Result reply_written(request_ctx *ctx, const char *type, int (*write)(request_ctx *ctx, FILE *out))
{
    dm_memout text;
    if (dm_memout_open(&text) != 0) return MHD_NO;
    int status = write(ctx, text.f);
    if (dm_memout_close(&text) != 0) return MHD_NO; /* out of memory: no answer rather than a cut one */
    return reply(ctx, status, type, text.text, text.len, 0);
}

/* {"error": "..."}, as the Open Inference Protocol reports failures. */
static int write_error(request_ctx *ctx, FILE *out)
{
    fputs("{\"error\": ", out);
    dm_json_write_string(out, ctx->error);
    fputs("}\n", out);
    return ctx->error_status;
}

static enum MHD_Result reply_error(request_ctx *ctx, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static enum MHD_Result reply_error(request_ctx *ctx, int status, const char *fmt, ...)
{
    va_list ap;
    free(ctx->error);
    va_start(ap, fmt);
    int failed = vasprintf(&ctx->error, fmt, ap) < 0;
    va_end(ap);
    if (failed) {
        ctx->error = NULL;
        return MHD_NO;
    }
    ctx->error_status = status;
    return reply_written(ctx, "application/json", write_error);
}

/* ------------------------------------------------------------ routing */

/* Sort the URL into an endpoint and, for /v2/models/NAME/..., a model;
 * returns 0 (and answers 404) when it names no endpoint or model. */
static int route(request_ctx *ctx, const char *url)
{
    serve_server *s = ctx->server;
    static const char models_prefix[] = "/v2/models/";
    ctx->endpoint = SERVE_EP_UNKNOWN;
    if (!strcmp(url, "/v2/health/live") || !strcmp(url, "/v2/health/ready")) ctx->endpoint = SERVE_EP_HEALTH;
    else if (!strcmp(url, "/v2") || !strcmp(url, "/v2/")) ctx->endpoint = SERVE_EP_SERVER_METADATA;
    else if (!strcmp(url, "/v1/classify")) ctx->endpoint = SERVE_EP_CLASSIFY;
    else if (!strcmp(url, "/metrics")) ctx->endpoint = SERVE_EP_METRICS;
    else if (!strncmp(url, models_prefix, sizeof models_prefix - 1)) {
        const char *name = url + sizeof models_prefix - 1, *slash = strchr(name, '/');
        size_t name_len = slash ? (size_t)(slash - name) : strlen(name);
        /* Every model has one version, "1", which URLs may name. */
        static const char version[] = "/versions/1";
        const size_t version_len = sizeof version - 1;
        const char *rest = slash ? slash : "";
        if (!strncmp(rest, version, version_len) && (rest[version_len] == '\0' || rest[version_len] == '/'))
            rest += version_len;
        if (!*rest) ctx->endpoint = SERVE_EP_MODEL_METADATA;
        else if (!strcmp(rest, "/ready")) ctx->endpoint = SERVE_EP_MODEL_READY;
        else if (!strcmp(rest, "/infer")) ctx->endpoint = SERVE_EP_INFER;
        if (ctx->endpoint != SERVE_EP_UNKNOWN) {
            char name_copy[256];
            snprintf(name_copy, sizeof name_copy, "%.*s", (int)(name_len < 255 ? name_len : 255), name);
            if (name_len > 255 || !(ctx->model = serve_find_model(s, name_copy))) {
                reply_error(ctx, MHD_HTTP_NOT_FOUND, "no model '%s' on this server (GET /v2 lists them)", name_copy);
                return 0;
            }
        }
    }
    if (ctx->endpoint == SERVE_EP_UNKNOWN) {
        reply_error(ctx, MHD_HTTP_NOT_FOUND, "no endpoint %s %s", ctx->method, url);
        return 0;
    }
    int wants_post = ctx->endpoint == SERVE_EP_INFER || ctx->endpoint == SERVE_EP_CLASSIFY;
    int ok = wants_post ? !strcmp(ctx->method, "POST") : !strcmp(ctx->method, "GET") || !strcmp(ctx->method, "HEAD");
    if (!ok) {
        reply_error(ctx, MHD_HTTP_METHOD_NOT_ALLOWED, "%s takes %s, not %s", url, wants_post ? "POST" : "GET",
                    ctx->method);
        return 0;
    }
    return 1;
}

/* ----------------------------------------------------- GET endpoints */

static int write_live(request_ctx *ctx, FILE *out)
{
    (void)ctx;
    fputs("{\"live\": true}\n", out);
    return MHD_HTTP_OK;
}

static int write_ready(request_ctx *ctx, FILE *out)
{
    int ready = !ctx->server->draining;
    fprintf(out, "{\"ready\": %s}\n", ready ? "true" : "false");
    return ready ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE;
}

static int write_server_metadata(request_ctx *ctx, FILE *out)
{
    fprintf(out, "{\"name\": \"damamba\", \"version\": \"%s\", \"extensions\": [\"binary_tensor_data\"], "
                 "\"models\": [", dm_version_string());
    for (int i = 0; i < ctx->server->model_count; i++) {
        if (i) fputs(", ", out);
        dm_json_write_string(out, ctx->server->models[i].name);
    }
    fputs("]}\n", out);
    return MHD_HTTP_OK;
}

static int write_model_metadata(request_ctx *ctx, FILE *out)
{
    const serve_model *m = ctx->model;
    fputs("{\"name\": ", out);
    dm_json_write_string(out, m->name);
    fprintf(out, ", \"versions\": [\"1\"], \"platform\": \"damamba\", \"inputs\": [{\"name\": \"input\", "
                 "\"datatype\": \"FP32\", \"shape\": [-1, %d, %d, %d]}], \"outputs\": [",
            m->channels, m->h, m->w);
    if (m->classes) fprintf(out, "{\"name\": \"logits\", \"datatype\": \"FP32\", \"shape\": [-1, %d]}, ", m->classes);
    for (int s = 0; s < DM_NUM_STAGES; s++)
        fprintf(out, "%s{\"name\": \"stage%d\", \"datatype\": \"FP32\", \"shape\": [-1, %d, %d, %d]}", s ? ", " : "",
                s, m->stage_c[s], m->stage_h[s], m->stage_w[s]);
    fputs("], \"parameters\": {\"source\": ", out);
    dm_json_write_string(out, m->source);
    fputs(", \"classes\": [", out);
    for (int i = 0; i < m->classes; i++) {
        char buf[32];
        if (i) fputs(", ", out);
        dm_json_write_string(out, cli_class_name(m->model, i, buf, sizeof buf));
    }
    fputs("]}}\n", out);
    return MHD_HTTP_OK;
}

static int write_model_ready(request_ctx *ctx, FILE *out)
{
    fputs("{\"name\": ", out);
    dm_json_write_string(out, ctx->model->name);
    fputs(", \"ready\": true}\n", out);
    return MHD_HTTP_OK;
}

static int write_metrics(request_ctx *ctx, FILE *out)
{
    serve_metrics_write(out, ctx->server);
    return MHD_HTTP_OK;
}

/* ---------------------------------------------------------- inference */

static void job_done(serve_job *job)
{
    request_ctx *ctx = job->owner;
    MHD_resume_connection(ctx->conn);
}

/* Parse the body into a job and queue it, suspending the connection until
 * the worker has run it. */
static enum MHD_Result start_inference(request_ctx *ctx)
{
    char *error = NULL;
    int ok;
    if (ctx->endpoint == SERVE_EP_CLASSIFY) {
        const char *name = MHD_lookup_connection_value(ctx->conn, MHD_GET_ARGUMENT_KIND, "model");
        const char *top = MHD_lookup_connection_value(ctx->conn, MHD_GET_ARGUMENT_KIND, "top");
        char *end;
        ctx->model = name ? serve_find_model(ctx->server, name) : &ctx->server->models[0];
        if (!ctx->model) return reply_error(ctx, MHD_HTTP_NOT_FOUND, "no model '%s' on this server", name);
        if (!ctx->model->classes)
            return reply_error(ctx, MHD_HTTP_BAD_REQUEST, "model '%s' has no classification head", ctx->model->name);
        long k = top ? strtol(top, &end, 10) : 5;
        if (top && (*end || end == top || k < 1))
            return reply_error(ctx, MHD_HTTP_BAD_REQUEST, "top must be a positive integer, not '%s'", top);
        ctx->top = k < ctx->model->classes ? (int)k : ctx->model->classes;
        ok = serve_image_input(&ctx->req, ctx->model, ctx->body, ctx->len, &error);
    } else {
        const char *hl = MHD_lookup_connection_value(ctx->conn, MHD_HEADER_KIND, "Inference-Header-Content-Length");
        char *end = NULL;
        unsigned long long header_len = hl ? strtoull(hl, &end, 10) : 0;
        if (hl && (*end || end == hl || header_len == 0 || !(*hl >= '0' && *hl <= '9'))) /* strtoull takes "-5" */
            return reply_error(ctx, MHD_HTTP_BAD_REQUEST, "Inference-Header-Content-Length must be a positive integer");
        ok = serve_infer_parse(&ctx->req, ctx->model, ctx->body, ctx->len, (size_t)header_len,
                               ctx->server->opt.max_body, &error);
    }
    ok = ok && serve_request_outputs(&ctx->req, ctx->server->opt.max_body, &error);
    if (!ok) {
        enum MHD_Result ret = reply_error(ctx, MHD_HTTP_BAD_REQUEST, "%s", error ? error : "out of memory");
        free(error);
        return ret;
    }
    ctx->req.job.done = job_done;
    ctx->req.job.owner = ctx;
    /* Suspend first: the worker may finish the job before submit returns. */
    MHD_suspend_connection(ctx->conn);
    ctx->state = QUEUED;
    serve_server *s = ctx->server;
    pthread_mutex_lock(&s->lock);
    int stopped = s->workers_stopped;
    int queued = !stopped && serve_batcher_submit(&ctx->model->batcher, &ctx->req.job);
    pthread_mutex_unlock(&s->lock);
    if (!queued) {
        ctx->state = stopped ? SHUTTING_DOWN : QUEUE_FULL;
        MHD_resume_connection(ctx->conn);
    }
    return MHD_YES;
}

/* The record `classify --json` prints. */
static int write_classification(request_ctx *ctx, FILE *out)
{
    int index[ctx->top];
    float *probs = ctx->req.job.logits; /* done with the logits: softmax in place */
    const char *file = MHD_lookup_connection_value(ctx->conn, MHD_GET_ARGUMENT_KIND, "file");
    dm_softmax(probs, ctx->model->classes, probs);
    dm_top_k(probs, ctx->model->classes, ctx->top, index);
    cli_write_top_json(out, file ? file : "-", ctx->model->model, probs, index, ctx->top);
    fputc('\n', out);
    return MHD_HTTP_OK;
}

static enum MHD_Result finish_inference(request_ctx *ctx)
{
    serve_request *r = &ctx->req;
    if (r->job.abandoned)
        return reply_error(ctx, MHD_HTTP_SERVICE_UNAVAILABLE, "the server is shutting down; the request was not run");
    if (r->job.error) return reply_error(ctx, MHD_HTTP_INTERNAL_SERVER_ERROR, "%s", r->job.error);
    if (ctx->endpoint == SERVE_EP_CLASSIFY) {
        return reply_written(ctx, "application/json", write_classification);
    }
    char *body;
    size_t json_len, total;
    if (!serve_infer_response(r, &body, &json_len, &total))
        return reply_error(ctx, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory");
    if (total == json_len) return reply(ctx, MHD_HTTP_OK, "application/json", body, total, 0);
    return reply(ctx, MHD_HTTP_OK, "application/octet-stream", body, total, json_len);
}

/* ----------------------------------------------------------- handlers */

/* The URL as the access log shows it: libmicrohttpd has unescaped it, so
 * control bytes, quotes and backslashes are written \xHH, or a client could
 * end the line and forge another.  NULL out of memory. */
static char *log_escaped(const char *url)
{
    char *out = malloc(4 * strlen(url) + 1), *o = out;
    if (!out) return NULL;
    for (const unsigned char *u = (const unsigned char *)url; *u; u++) {
        if (*u < 0x20 || *u == 0x7f || *u == '"' || *u == '\\') o += sprintf(o, "\\x%02x", *u);
        else *o++ = (char)*u;
    }
    *o = '\0';
    return out;
}

/* The first call, with the headers: set up the request's context. */
static enum MHD_Result count_content_lengths(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    (void)kind, (void)value;
    if (!strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH)) ++*(int *)cls;
    return MHD_YES;
}

static enum MHD_Result begin_request(serve_server *s, struct MHD_Connection *conn, const char *url,
                                     const char *method, void **con_cls)
{
    request_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx || !(ctx->url = log_escaped(url))) {
        free(ctx);
        return MHD_NO;
    }
    ctx->server = s;
    ctx->conn = conn;
    ctx->start = serve_now();
    snprintf(ctx->method, sizeof ctx->method, "%s", method);
    *con_cls = ctx;
    pthread_mutex_lock(&s->lock);
    s->in_flight++;
    pthread_mutex_unlock(&s->lock);
    if (!route(ctx, url)) return MHD_YES;
    /* A body framed two ways (two Content-Lengths, or one and chunked) is
     * refused and the connection closed: libmicrohttpd takes the first,
     * a proxy in front may have taken another, and the rest of the body
     * would run as a request of its own.  A transfer coding other than
     * chunked is refused too: libmicrohttpd would wait for a body it
     * cannot frame until --timeout. */
    const char *coding = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING);
    if (coding && strcasecmp(coding, "chunked")) {
        ctx->close = 1;
        return reply_error(ctx, MHD_HTTP_BAD_REQUEST, "Transfer-Encoding '%s' is not supported, only chunked", coding);
    }
    int lengths = 0;
    MHD_get_connection_values(conn, MHD_HEADER_KIND, count_content_lengths, &lengths);
    if (lengths > 1 || (lengths && coding)) {
        ctx->close = 1;
        if (lengths > 1) return reply_error(ctx, MHD_HTTP_BAD_REQUEST, "the request has %d Content-Length headers", lengths);
        return reply_error(ctx, MHD_HTTP_BAD_REQUEST, "the request has both Content-Length and Transfer-Encoding");
    }
    /* Refuse a body over the limit before reading any of it. */
    const char *length = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (length && strtoull(length, NULL, 10) > s->opt.max_body)
        return reply_error(ctx, MHD_HTTP_CONTENT_TOO_LARGE, "the body has %s bytes, over the limit of %zu",
                           length, s->opt.max_body);
    return MHD_YES;
}

static enum MHD_Result append_body(request_ctx *ctx, const char *data, size_t size)
{
    size_t limit = ctx->server->opt.max_body;
    /* A chunked body (no Content-Length) grew over the limit: libmicrohttpd
     * cannot answer in the middle of a body, so the connection is closed. */
    if (size > limit - ctx->len) return MHD_NO;
    if (ctx->len + size > ctx->cap) {
        /* Room that doubles as the body arrives, up to its announced size:
         * a client that announces 64 MB and sends a byte holds 64 kB. */
        const char *length = MHD_lookup_connection_value(ctx->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        size_t announced = length ? (size_t)strtoull(length, NULL, 10) : 0;
        size_t cap = ctx->cap ? ctx->cap : 65536;
        while (cap < ctx->len + size) cap = cap > limit / 2 ? limit : 2 * cap;
        if (announced >= ctx->len + size && cap > announced) cap = announced;
        char *p = realloc(ctx->body, cap);
        if (!p) return MHD_NO;
        ctx->body = p;
        ctx->cap = cap;
    }
    memcpy(ctx->body + ctx->len, data, size);
    ctx->len += size;
    return MHD_YES;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                              const char *version, const char *upload_data, size_t *upload_data_size,
                              void **con_cls)
{
    (void)version;
    request_ctx *ctx = *con_cls;
    if (!ctx) return begin_request(cls, conn, url, method, con_cls);
    if (*upload_data_size) {
        size_t size = *upload_data_size;
        *upload_data_size = 0;
        /* Once answered (404, 413, ...), the rest of the body is dropped. */
        return ctx->state == ANSWERED ? MHD_YES : append_body(ctx, upload_data, size);
    }
    switch (ctx->state) {
    case ANSWERED: return MHD_YES;
    case QUEUED: return finish_inference(ctx);
    case SHUTTING_DOWN: return reply_error(ctx, MHD_HTTP_SERVICE_UNAVAILABLE, "the server is shutting down");
    case QUEUE_FULL:
        return reply_error(ctx, MHD_HTTP_SERVICE_UNAVAILABLE, "the queue of model '%s' is full; retry later",
                           ctx->model->name);
    case READING: break;
    }
    switch (ctx->endpoint) {
    case SERVE_EP_HEALTH:
        return reply_written(ctx, "application/json", !strcmp(url, "/v2/health/live") ? write_live : write_ready);
    case SERVE_EP_SERVER_METADATA: return reply_written(ctx, "application/json", write_server_metadata);
    case SERVE_EP_MODEL_METADATA: return reply_written(ctx, "application/json", write_model_metadata);
    case SERVE_EP_MODEL_READY: return reply_written(ctx, "application/json", write_model_ready);
    case SERVE_EP_METRICS: return reply_written(ctx, "text/plain; version=0.0.4", write_metrics);
    case SERVE_EP_INFER:
    case SERVE_EP_CLASSIFY: return start_inference(ctx);
    default: return reply_error(ctx, MHD_HTTP_NOT_FOUND, "no endpoint %s %s", method, url);
    }
}

/* The end of a request, answered or not: log it, count it, free it. */
static void completed(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode why)
{
    serve_server *s = cls;
    request_ctx *ctx = *con_cls;
    if (!ctx) return;
    double seconds = serve_now() - ctx->start;
    /* A response cut off (the client gone, the idle timeout, shutdown)
     * counts as none: status 0, as for a request closed before one. */
    if (why != MHD_REQUEST_TERMINATED_COMPLETED_OK) ctx->status = 0, ctx->response_bytes = 0;
    serve_metrics_request(&s->metrics, ctx->endpoint, ctx->status, seconds);
    char client[INET6_ADDRSTRLEN] = "-", stamp[32];
    const union MHD_ConnectionInfo *info = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (info && info->client_addr)
        getnameinfo(info->client_addr,
                    info->client_addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in),
                    client, sizeof client, NULL, 0, NI_NUMERICHOST);
    time_t now = time(NULL);
    struct tm tm;
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&now, &tm));
    /* One write per line, so lines of concurrent requests do not mix; the
     * URL is escaped (log_escaped). */
    fprintf(stderr, "%s %s \"%s %s\" %d %zu %.3f\n", stamp, client, ctx->method, ctx->url, ctx->status,
            ctx->response_bytes, seconds * 1e3);
    serve_request_free(&ctx->req);
    free(ctx->error);
    free(ctx->body);
    free(ctx->url);
    free(ctx);
    *con_cls = NULL;
    pthread_mutex_lock(&s->lock);
    s->in_flight--;
    pthread_cond_broadcast(&s->idle);
    pthread_mutex_unlock(&s->lock);
}

/* ------------------------------------------------------------ daemon */

/* libmicrohttpd's unescaping of the path and the query, except that a text
 * holding %00 stays as written: a NUL would end it early, so that
 * "/v2/health/live%00junk" would be read as "/v2/health/live". */
static size_t unescape_keeping_nul(void *cls, struct MHD_Connection *conn, char *text)
{
    (void)cls, (void)conn;
    return strstr(text, "%00") ? strlen(text) : MHD_http_unescape(text);
}

int serve_http_start(serve_server *s)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *addr;
    char port[16];
    snprintf(port, sizeof port, "%d", s->opt.port);
    int rc = getaddrinfo(s->opt.host, port, &hints, &addr);
    if (rc != 0) {
        cli_error("--host %s: %s", s->opt.host, gai_strerror(rc));
        return 0;
    }
    /* poll, not epoll (what AUTO picks on Linux): libmicrohttpd's epoll
     * loop missed a client closing in the middle of its body, which then
     * held its connection, and the drain on SIGTERM, until --timeout. */
    unsigned flags = MHD_USE_POLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG |
                     (addr->ai_family == AF_INET6 ? MHD_USE_IPv6 : 0);
    s->daemon = MHD_start_daemon(flags, 0, NULL, NULL, handle, s,
                                 MHD_OPTION_SOCK_ADDR, addr->ai_addr,
                                 MHD_OPTION_THREAD_POOL_SIZE, (unsigned)s->opt.http_threads,
                                 MHD_OPTION_CONNECTION_LIMIT, (unsigned)s->opt.max_connections,
                                 MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)s->opt.timeout_s,
                                 MHD_OPTION_LISTEN_BACKLOG_SIZE, 1024u,
                                 /* Over 32 KiB, libmicrohttpd maps each connection's
                                  * memory on its own and unmaps it at close, so a
                                  * burst of connections leaves nothing behind. */
                                 MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)64 << 10,
                                 MHD_OPTION_NOTIFY_COMPLETED, completed, s,
                                 MHD_OPTION_UNESCAPE_CALLBACK, unescape_keeping_nul, NULL,
                                 MHD_OPTION_END);
    freeaddrinfo(addr);
    if (!s->daemon) {
        cli_error("cannot listen on %s port %d (in use, or not an address of this machine?)", s->opt.host,
                  s->opt.port);
        return 0;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
    s->opt.port = info ? info->port : s->opt.port;
    return 1;
}

/* Wait (lock held) until no request is in flight, the deadline passes or
 * a byte arrives on hurry_fd (-1: none); returns the requests left. */
static int wait_idle(serve_server *s, double deadline, int hurry_fd)
{
    struct pollfd hurry = {.fd = hurry_fd, .events = POLLIN};
    while (s->in_flight > 0 && serve_now() < deadline && !(hurry_fd >= 0 && poll(&hurry, 1, 0) > 0)) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 100000000;
        if (ts.tv_nsec >= 1000000000) ts.tv_sec++, ts.tv_nsec -= 1000000000;
        pthread_cond_timedwait(&s->idle, &s->lock, &ts);
    }
    return s->in_flight;
}

/* Seconds the 503s of requests abandoned at shutdown have to go out. */
#define ABANDONED_REPLY_SECONDS 2

void serve_http_stop(serve_server *s, int grace_s, int hurry_fd)
{
    s->draining = 1;
    /* The listening socket is ours once quiesced: close it, so that new
     * connections are refused rather than left waiting in its backlog. */
    MHD_socket listener = MHD_quiesce_daemon(s->daemon);
    if (listener != MHD_INVALID_SOCKET) close(listener);
    pthread_mutex_lock(&s->lock);
    int left = wait_idle(s, serve_now() + grace_s, hurry_fd);
    s->workers_stopped = 1;
    pthread_mutex_unlock(&s->lock);
    if (left) fprintf(stderr, "damamba serve: %d requests still open; answering those not run 503\n", left);
    /* The batches running finish; what is queued is answered unrun, so no
     * connection stays suspended and none waits for work never sent. */
    for (int i = 0; i < s->model_count; i++) serve_batcher_stop(&s->models[i].batcher);
    pthread_mutex_lock(&s->lock);
    wait_idle(s, serve_now() + ABANDONED_REPLY_SECONDS, -1);
    pthread_mutex_unlock(&s->lock);
    MHD_stop_daemon(s->daemon);
    s->daemon = NULL;
}
