/* scan.c - the chunked selective scan: one long sequence shared by threads.
 *
 * The recurrence h_t = a_t h_{t-1} + b_t is linear in the entry state, so a
 * chunk scanned from zero differs from the true scan by the chunk's entry
 * state times the running product of a_t.  Three passes make it exact up to
 * rounding: local scans from zero (recording running products), a short
 * sequential carry of entry states from chunk to chunk, and a fix-up that
 * adds each chunk's entry-state part to its outputs. */
#include "kernels.h"
#include "pool.h"

#include <string.h>

/* Steps of chunk k when L steps are split into `chunks` (some may be empty). */
static void chunk_range(size_t L, size_t chunks, size_t k, size_t *t0, size_t *t1)
{
    *t0 = L * k / chunks;
    *t1 = L * (k + 1) / chunks;
}

typedef struct chunked_scan {
    const dm_kernels *k;
    const dm_scan_args *args;
    size_t L, chunks;
    float *states, *decay, *y;
} chunked_scan;

static void local_scan(void *arg, size_t i)
{
    const chunked_scan *s = arg;
    size_t t0, t1;
    chunk_range(s->L, s->chunks, i, &t0, &t1);
    s->k->scan(s->args, t0, t1, 0, s->args->channels, s->states + i * s->args->channels, s->decay, s->y);
}

static void fixup(void *arg, size_t i)
{
    const chunked_scan *s = arg;
    size_t t0, t1;
    chunk_range(s->L, s->chunks, i, &t0, &t1);
    s->k->scan_fixup(s->args, t0, t1, 0, s->args->channels, s->states + i * s->args->channels, s->decay, s->y);
}

void dm_scan_chunked(const dm_kernels *k, const dm_scan_args *args, size_t L, size_t chunks, dm_pool *pool,
                     float *h, float *states, float *decay, float *y)
{
    size_t C = args->channels;
    chunked_scan s = {.k = k, .args = args, .L = L, .chunks = chunks, .states = states, .decay = decay, .y = y};
    memset(states, 0, sizeof(float) * chunks * C);
    dm_pool_run(pool, chunks, local_scan, &s);
    /* Carry: states[k] becomes chunk k's entry state; h leaves as the end. */
    for (size_t i = 0; i < chunks; i++) {
        size_t t0, t1;
        chunk_range(L, chunks, i, &t0, &t1);
        if (t0 == t1) continue;
        float *local_end = states + i * C;
        const float *prod = decay + (t1 - 1) * C;
        for (size_t c = 0; c < C; c++) {
            float entry = h[c];
            h[c] = prod[c] * entry + local_end[c];
            local_end[c] = entry;
        }
    }
    dm_pool_run(pool, chunks, fixup, &s);
}
