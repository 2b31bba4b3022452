/* metrics.c - the counters behind GET /metrics, in Prometheus' text
 * exposition format (version 0.0.4). */
#include "serve.h"

#include <string.h>

static const double latency_bounds[SERVE_LATENCY_BUCKETS] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                             0.1,   0.25,   0.5,   1,    2.5,   10};
/* Status codes counted one by one; 0 is a connection closed without a whole
 * response; the last kind is every other code. */
static const int counted_status[SERVE_STATUS_KINDS - 1] = {0, 200, 400, 404, 405, 408, 413, 500, 503};

static const char *const endpoint_names[SERVE_EP_COUNT] = {
    [SERVE_EP_HEALTH] = "health",          [SERVE_EP_SERVER_METADATA] = "server_metadata",
    [SERVE_EP_MODEL_METADATA] = "model_metadata", [SERVE_EP_MODEL_READY] = "model_ready",
    [SERVE_EP_INFER] = "infer",            [SERVE_EP_CLASSIFY] = "classify",
    [SERVE_EP_METRICS] = "metrics",        [SERVE_EP_UNKNOWN] = "unknown",
};

const char *serve_endpoint_name(serve_endpoint ep)
{
    return endpoint_names[ep];
}

void serve_metrics_init(serve_metrics *m)
{
    memset(m, 0, sizeof *m);
    pthread_mutex_init(&m->lock, NULL);
}

void serve_metrics_destroy(serve_metrics *m)
{
    pthread_mutex_destroy(&m->lock);
}

void serve_metrics_request(serve_metrics *m, serve_endpoint ep, int status, double seconds)
{
    int kind = SERVE_STATUS_KINDS - 1, bucket = 0;
    for (int i = 0; i < SERVE_STATUS_KINDS - 1; i++)
        if (counted_status[i] == status) kind = i;
    while (bucket < SERVE_LATENCY_BUCKETS && seconds > latency_bounds[bucket]) bucket++;
    pthread_mutex_lock(&m->lock);
    m->counts.requests[ep][kind]++;
    m->counts.latency[bucket]++;
    m->counts.latency_sum += seconds;
    m->counts.latency_count++;
    pthread_mutex_unlock(&m->lock);
}

/* Cumulative "le" buckets of a histogram whose counts[] are per bucket. */
static void write_histogram(FILE *out, const char *name, const char *labels, const uint64_t *counts,
                            int nbounds, const double *bounds, double sum, uint64_t count)
{
    uint64_t cumulative = 0;
    const char *sep = *labels ? "," : "";
    for (int i = 0; i < nbounds; i++) {
        cumulative += counts[i];
        fprintf(out, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, labels, sep, bounds[i],
                (unsigned long long)cumulative);
    }
    fprintf(out, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, sep, (unsigned long long)count);
    fprintf(out, "%s_sum%s%s%s %.17g\n", name, *labels ? "{" : "", labels, *labels ? "}" : "", sum);
    fprintf(out, "%s_count%s%s%s %llu\n", name, *labels ? "{" : "", labels, *labels ? "}" : "",
            (unsigned long long)count);
}

void serve_metrics_write(FILE *out, struct serve_server *s)
{
    serve_request_counts copy;
    pthread_mutex_lock(&s->metrics.lock);
    copy = s->metrics.counts;
    pthread_mutex_unlock(&s->metrics.lock);

    fputs("# HELP damamba_requests_total HTTP requests by endpoint and status code (0: closed without "
          "a whole response).\n# TYPE damamba_requests_total counter\n",
          out);
    for (int ep = 0; ep < SERVE_EP_COUNT; ep++)
        for (int k = 0; k < SERVE_STATUS_KINDS; k++)
            if (copy.requests[ep][k]) {
                char code[16];
                if (k < SERVE_STATUS_KINDS - 1) snprintf(code, sizeof code, "%d", counted_status[k]);
                else strcpy(code, "other");
                fprintf(out, "damamba_requests_total{endpoint=\"%s\",code=\"%s\"} %llu\n", endpoint_names[ep],
                        code, (unsigned long long)copy.requests[ep][k]);
            }
    fputs("# HELP damamba_request_duration_seconds Time from a request's arrival to the end of its "
          "response.\n# TYPE damamba_request_duration_seconds histogram\n",
          out);
    write_histogram(out, "damamba_request_duration_seconds", "", copy.latency, SERVE_LATENCY_BUCKETS,
                    latency_bounds, copy.latency_sum, copy.latency_count);

    double batch_bounds[SERVE_BATCH_BUCKETS];
    for (int i = 0; i < SERVE_BATCH_BUCKETS; i++) batch_bounds[i] = (double)(1 << i);
    fputs("# HELP damamba_batch_size Images per forward pass.\n# TYPE damamba_batch_size histogram\n", out);
    serve_batcher_stats st[s->model_count];
    for (int i = 0; i < s->model_count; i++) {
        serve_batcher_stats_get(&s->models[i].batcher, &st[i]);
        char labels[300];
        snprintf(labels, sizeof labels, "model=\"%s\"", s->models[i].name);
        write_histogram(out, "damamba_batch_size", labels, st[i].batch_hist, SERVE_BATCH_BUCKETS, batch_bounds,
                        (double)st[i].images, st[i].batches);
    }
    fputs("# HELP damamba_queue_requests Requests waiting for a forward pass.\n"
          "# TYPE damamba_queue_requests gauge\n",
          out);
    for (int i = 0; i < s->model_count; i++)
        fprintf(out, "damamba_queue_requests{model=\"%s\"} %d\n", s->models[i].name, st[i].queued_jobs);
    fputs("# HELP damamba_queue_images Images waiting for a forward pass.\n# TYPE damamba_queue_images gauge\n",
          out);
    for (int i = 0; i < s->model_count; i++)
        fprintf(out, "damamba_queue_images{model=\"%s\"} %d\n", s->models[i].name, st[i].queued_images);
    fputs("# HELP damamba_images_total Images run through the model.\n# TYPE damamba_images_total counter\n",
          out);
    for (int i = 0; i < s->model_count; i++)
        fprintf(out, "damamba_images_total{model=\"%s\"} %llu\n", s->models[i].name,
                (unsigned long long)st[i].images);
    fputs("# HELP damamba_images_per_second Images per second over the last 10 seconds.\n"
          "# TYPE damamba_images_per_second gauge\n",
          out);
    for (int i = 0; i < s->model_count; i++)
        fprintf(out, "damamba_images_per_second{model=\"%s\"} %g\n", s->models[i].name,
                st[i].images_per_second);
}
