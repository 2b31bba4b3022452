/* scan.c - the chunked selective scan: one long sequence shared by threads.
 *
 * The recurrence h_t = a_t h_{t-1} + b_t is linear in the entry state, so a
 * chunk scanned from zero differs from the true scan by the chunk's entry
 * state times the running product of a_t.  Three passes make it exact up to
 * rounding: local scans from zero (recording running products), a short
 * sequential carry of entry states from chunk to chunk, and a fix-up that
 * adds each chunk's entry-state part to its outputs. */
#include "kernels.h"

#include <string.h>

/* Steps of chunk k when L steps are split into `chunks` (some may be empty). */
static void chunk_range(size_t L, size_t chunks, size_t k, size_t *t0, size_t *t1)
{
    *t0 = L * k / chunks;
    *t1 = L * (k + 1) / chunks;
}

void dm_scan_chunked(const dm_kernels *k, const dm_scan_args *args, size_t L, size_t chunks, int threads,
                     float *h, float *states, float *decay, float *y)
{
    size_t C = args->channels;
    memset(states, 0, sizeof(float) * chunks * C);
#pragma omp parallel for num_threads(threads) schedule(static)
    for (long i = 0; i < (long)chunks; i++) {
        size_t t0, t1;
        chunk_range(L, chunks, (size_t)i, &t0, &t1);
        k->scan(args, t0, t1, 0, C, states + (size_t)i * C, decay, y);
    }
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
#pragma omp parallel for num_threads(threads) schedule(static)
    for (long i = 0; i < (long)chunks; i++) {
        size_t t0, t1;
        chunk_range(L, chunks, (size_t)i, &t0, &t1);
        k->scan_fixup(args, t0, t1, 0, C, states + (size_t)i * C, decay, y);
    }
}
