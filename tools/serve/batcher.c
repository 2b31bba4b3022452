/* batcher.c - dynamic batching: one worker thread per model gathers the
 * images of requests that arrive together into one forward pass.
 *
 * The queue holds whole requests; a pass takes first the requests that fit
 * whole in it, then fills up from the oldest, so a request larger than the
 * batch spans several passes, shares them with later requests, and a batch
 * may end part-way through a request.  Every image's outputs depend only on
 * that image, so a response equals running its request alone. */
#include "serve.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

double serve_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void *worker(void *arg);

int serve_batcher_start(serve_batcher *b, const dm_model *model, int max_batch, int max_delay_ms, int queue_limit,
                        int h, int w)
{
    const dm_config *cfg = dm_model_config(model);
    *b = (serve_batcher){.model = model, .max_batch = max_batch, .max_delay_ms = max_delay_ms,
                         .queue_limit = queue_limit, .channels = cfg->in_chans, .h = h, .w = w,
                         .classes = cfg->num_classes};
    int ok = 1;
    for (int s = 0; s < DM_NUM_STAGES; s++) {
        int c, sh, sw;
        ok &= dm_stage_shape(model, h, w, s, &c, &sh, &sw) == DM_OK;
        b->stage_size[s] = (size_t)c * sh * sw;
        ok &= (b->stages[s] = malloc(sizeof(float) * b->stage_size[s] * max_batch)) != NULL;
    }
    b->input = malloc(sizeof(float) * b->channels * h * w * max_batch);
    b->logits = malloc(sizeof(float) * (b->classes ? b->classes : 1) * max_batch);
    b->slots = malloc(sizeof(serve_batch_slot) * max_batch);
    if (!ok || !b->input || !b->logits || !b->slots) {
        cli_error("out of memory for batches of %d", max_batch);
        serve_batcher_stop(b);
        return 0;
    }
    if (!(b->ws = cli_workspace_create(model, DM_BACKEND_CPU, max_batch, h, w))) {
        serve_batcher_stop(b);
        return 0;
    }
    pthread_mutex_init(&b->lock, NULL);
    pthread_cond_init(&b->wake, NULL);
    if (pthread_create(&b->thread, NULL, worker, b) != 0) {
        cli_error("cannot start a worker thread");
        pthread_cond_destroy(&b->wake);
        pthread_mutex_destroy(&b->lock);
        serve_batcher_stop(b);
        return 0;
    }
    b->started = 1;
    return 1;
}

int serve_batcher_submit(serve_batcher *b, serve_job *job)
{
    job->next = NULL;
    job->taken = job->finished = 0;
    job->error = NULL;
    job->abandoned = 0;
    job->arrival = serve_now();
    pthread_mutex_lock(&b->lock);
    int accepted = b->queued_jobs < b->queue_limit && !b->stopping;
    if (accepted) {
        if (b->tail) b->tail->next = job;
        else b->head = job;
        b->tail = job;
        b->queued_jobs++;
        b->queued_images += job->n;
        pthread_cond_signal(&b->wake);
    }
    pthread_mutex_unlock(&b->lock);
    return accepted;
}

/* Wait (lock held) until the front request is max_delay_ms old or a batch is
 * full; returns 0 when stopping with nothing queued. */
static int wait_for_batch(serve_batcher *b)
{
    while (!b->head && !b->stopping) pthread_cond_wait(&b->wake, &b->lock);
    if (!b->head) return 0;
    double deadline = b->head->arrival + b->max_delay_ms * 1e-3;
    while (b->queued_images < b->max_batch && !b->stopping) {
        double now = serve_now();
        if (now >= deadline) break;
        /* The condition variable waits on CLOCK_REALTIME: convert the delay. */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        double wake = ts.tv_sec + ts.tv_nsec * 1e-9 + (deadline - now);
        ts.tv_sec = (time_t)wake;
        ts.tv_nsec = (long)((wake - (double)ts.tv_sec) * 1e9);
        if (pthread_cond_timedwait(&b->wake, &b->lock, &ts) == ETIMEDOUT) break;
    }
    return 1;
}

/* Up to `most` of job's images not yet taken into slots from n on. */
static int take_images(serve_batcher *b, serve_job *job, int n, int most)
{
    while (job->taken < job->n && most-- > 0) b->slots[n++] = (serve_batch_slot){job, job->taken++};
    return n;
}

/* Take up to max_batch images (lock held): first every request that fits
 * whole in the room left, in arrival order, then what fills the batch from
 * the oldest on.  A request larger than the batch then shares its passes
 * with those that arrive after it, instead of holding them back until it
 * is done; when it does not fit, one slot is kept for it, so the oldest
 * request advances in every pass. */
static int take_batch(serve_batcher *b)
{
    int n = 0, room = b->max_batch;
    serve_job *oldest = b->head;
    int kept = oldest->n - oldest->taken > room;
    for (serve_job *job = oldest; job && n < room; job = job->next) {
        int left = job->n - job->taken;
        if (left <= room - n - (job == oldest ? 0 : kept)) n = take_images(b, job, n, left);
    }
    for (serve_job *job = oldest; job && n < room; job = job->next) n = take_images(b, job, n, room - n);
    /* the requests wholly taken leave the queue */
    serve_job **link = &b->head;
    b->tail = NULL;
    while (*link) {
        serve_job *job = *link;
        if (job->taken == job->n) {
            *link = job->next;
            b->queued_jobs--;
        } else {
            b->tail = job;
            link = &job->next;
        }
    }
    b->queued_images -= n;
    return n;
}

static void record_batch(serve_batcher *b, int n)
{
    int bucket = 0;
    while (bucket < SERVE_BATCH_BUCKETS && n > (1 << bucket)) bucket++;
    int64_t second = (int64_t)serve_now();
    pthread_mutex_lock(&b->lock);
    b->batch_hist[bucket]++;
    b->batches++;
    b->images += (uint64_t)n;
    /* Clear the seconds the ring skipped since the last batch. */
    for (int64_t s = b->ring_second + 1; s <= second && s <= b->ring_second + 10; s++)
        b->images_per_second_ring[s % 10] = 0;
    b->ring_second = second;
    b->images_per_second_ring[second % 10] += (uint64_t)n;
    pthread_mutex_unlock(&b->lock);
}

/* Forward one batch and hand each image's outputs to its request. */
static void run_batch(serve_batcher *b, int n)
{
    size_t chw = (size_t)b->channels * b->h * b->w;
    int want_stages = 0;
    for (int i = 0; i < n; i++) {
        const serve_job *job = b->slots[i].job;
        memcpy(b->input + i * chw, (const char *)job->input + sizeof(float) * chw * b->slots[i].index,
               sizeof(float) * chw);
        for (int s = 0; s < DM_NUM_STAGES; s++) want_stages |= job->stages[s] != NULL;
    }
    dm_outputs out = DM_OUTPUTS_INIT;
    out.logits = b->classes ? b->logits : NULL;
    for (int s = 0; want_stages && s < DM_NUM_STAGES; s++) out.stages[s] = b->stages[s];
    const char *error = NULL;
    if (dm_forward(b->model, b->ws, b->input, n, b->h, b->w, &out) != DM_OK) error = dm_last_error();
    record_batch(b, n);
    for (int i = 0; i < n; i++) {
        serve_job *job = b->slots[i].job;
        int k = b->slots[i].index;
        if (error && !job->error && !(job->error = strdup(error))) job->error = strdup("out of memory");
        if (!error && job->logits)
            memcpy(job->logits + (size_t)k * b->classes, b->logits + (size_t)i * b->classes,
                   sizeof(float) * b->classes);
        for (int s = 0; !error && s < DM_NUM_STAGES; s++)
            if (job->stages[s])
                memcpy(job->stages[s] + k * b->stage_size[s], b->stages[s] + i * b->stage_size[s],
                       sizeof(float) * b->stage_size[s]);
        /* The last of its images: the request is done and no longer ours. */
        if (++job->finished == job->n) job->done(job);
    }
}

/* Hand back every queued request unrun (lock held, released while their
 * done() runs): the server is stopping and will not wait for them. */
static void abandon_queue(serve_batcher *b)
{
    serve_job *job = b->head;
    b->head = b->tail = NULL;
    b->queued_jobs = b->queued_images = 0;
    pthread_mutex_unlock(&b->lock);
    while (job) {
        serve_job *next = job->next; /* done() may free the job */
        job->abandoned = 1;
        job->finished = job->taken = job->n; /* its earlier batches have all finished */
        job->done(job);
        job = next;
    }
    pthread_mutex_lock(&b->lock);
}

static void *worker(void *arg)
{
    serve_batcher *b = arg;
    pthread_mutex_lock(&b->lock);
    while (wait_for_batch(b)) {
        if (b->stopping) {
            abandon_queue(b);
            continue;
        }
        int n = take_batch(b);
        pthread_mutex_unlock(&b->lock);
        run_batch(b, n);
        pthread_mutex_lock(&b->lock);
    }
    pthread_mutex_unlock(&b->lock);
    return NULL;
}

void serve_batcher_stats_get(serve_batcher *b, serve_batcher_stats *out)
{
    int64_t second = (int64_t)serve_now();
    pthread_mutex_lock(&b->lock);
    *out = (serve_batcher_stats){.queued_jobs = b->queued_jobs, .queued_images = b->queued_images,
                                 .batches = b->batches, .images = b->images};
    memcpy(out->batch_hist, b->batch_hist, sizeof out->batch_hist);
    /* The 10 whole seconds before this one. */
    uint64_t sum = 0;
    for (int64_t s = second - 10; s < second; s++)
        if (s > b->ring_second - 10 && s <= b->ring_second) sum += b->images_per_second_ring[s % 10];
    out->images_per_second = sum / 10.0;
    pthread_mutex_unlock(&b->lock);
}

void serve_batcher_stop(serve_batcher *b)
{
    if (b->started) {
        pthread_mutex_lock(&b->lock);
        b->stopping = 1;
        pthread_cond_signal(&b->wake);
        pthread_mutex_unlock(&b->lock);
        pthread_join(b->thread, NULL);
        pthread_cond_destroy(&b->wake);
        pthread_mutex_destroy(&b->lock);
    }
    dm_workspace_free(b->ws);
    for (int s = 0; s < DM_NUM_STAGES; s++) free(b->stages[s]);
    free(b->input);
    free(b->logits);
    free(b->slots);
    *b = (serve_batcher){0};
}
