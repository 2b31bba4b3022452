/* scan_chunked.c - the chunked selective scan: one long sequence shared by threads.
 *
 * The recurrence h_t = a_t h_{t-1} + b_t is linear in the entry state: a
 * chunk's end state is its entry state times the product of its a_t, plus
 * the end state of the chunk scanned from zero.  Three passes: every chunk
 * but the last scanned from zero for its end state and product (no
 * outputs), a short sequential carry of entry states from chunk to chunk,
 * and every chunk scanned again from its entry state, writing its outputs.
 * The first chunk's outputs are those of the plain scan; the others differ
 * by the rounding of their entry states.  Nothing is stored per step
 * beyond the outputs, so a thread scanning every chunk does under twice a
 * plain scan's arithmetic and no more of its memory traffic. */
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
    size_t L, chunks, block, blocks;
    float *states, *decays, *y;
} chunked_scan;

/* Piece i: chunk i / blocks, the channels of block i % blocks. */
static void scan_piece(const chunked_scan *s, size_t i, float *decays, float *y)
{
    size_t C = s->args->channels, chunk = i / s->blocks, t0, t1;
    size_t c0 = i % s->blocks * s->block, c1 = C - c0 < s->block ? C : c0 + s->block;
    chunk_range(s->L, s->chunks, chunk, &t0, &t1);
    s->k->scan(s->args, t0, t1, c0, c1, s->states + chunk * C, decays ? decays + chunk * C : NULL, y);
}

static void end_state(void *arg, size_t i)
{
    const chunked_scan *s = arg;
    scan_piece(s, i, s->decays, NULL);
}

static void outputs(void *arg, size_t i)
{
    const chunked_scan *s = arg;
    scan_piece(s, i, NULL, s->y);
}

void dm_scan_chunked(const dm_kernels *k, const dm_scan_args *args, size_t L, size_t chunks, size_t block,
                     dm_pool *pool, float *h, float *states, float *decays, float *y)
{
    size_t C = args->channels;
    if (chunks == 0) chunks = 1;
    if (block == 0 || block > C) block = C;
    chunked_scan s = {.k = k, .args = args, .L = L, .chunks = chunks, .block = block, .blocks = (C + block - 1) / block,
                      .states = states, .decays = decays, .y = y};
    memset(states, 0, sizeof(float) * chunks * C);
    dm_pool_run(pool, (chunks - 1) * s.blocks, end_state, &s);
    /* Carry: states[k] becomes chunk k's entry state. */
    for (size_t c = 0; c < C; c++) {
        float entry = h[c];
        for (size_t i = 0; i < chunks; i++) {
            float local_end = states[i * C + c];
            states[i * C + c] = entry;
            if (i + 1 < chunks) entry = decays[i * C + c] * entry + local_end;
        }
    }
    dm_pool_run(pool, chunks * s.blocks, outputs, &s);
    memcpy(h, states + (chunks - 1) * C, sizeof(float) * C);
}
