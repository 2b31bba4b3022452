/* pool.h - the CPU backend's threads: a workspace's pool runs a loop of
 * pieces on its caller and its workers at once.
 *
 * The caller takes pieces itself and, once none is left, waits only for
 * the pieces workers have already taken, never for a worker that has not
 * started one: on a machine where another process holds a core, a slowed
 * worker does less of the work instead of holding up the pass.  Workers
 * spin briefly for the next loop (a pass runs loops back to back), then
 * sleep.  Each thread starts on its own contiguous share of the pieces, so
 * loops cut alike over the same rows give each thread the rows it last
 * wrote; which piece runs where still depends on timing, so a loop's
 * results must depend only on its pieces, each of which a piece function
 * computes alone. */
#ifndef DM_POOL_H
#define DM_POOL_H

#include <stddef.h>

typedef struct dm_pool dm_pool;

/* Computes piece `piece` of a loop; arg is the loop's argument. */
typedef void (*dm_pool_piece)(void *arg, size_t piece);

/* A pool for `threads` threads in all: the caller and threads - 1 workers
 * (fewer if the system refuses to start them; results are the same).
 * NULL when out of memory. */
dm_pool *dm_pool_create(int threads);

/* Runs piece(arg, i) exactly once for every i in [0, pieces) and returns
 * when all are done.  One caller at a time per pool.  A piece that runs a
 * loop itself (on any pool) runs that loop's pieces alone, in order. */
void dm_pool_run(dm_pool *pool, size_t pieces, dm_pool_piece piece, void *arg);

/* The threads a loop may run on, the caller included. */
int dm_pool_threads(const dm_pool *pool);

/* Stops and joins the workers; no loop may be running.  NULL is allowed.
 * In a child forked after the pool was made, the pool has no workers (fork
 * copies none): its loops run on the caller, and this frees it. */
void dm_pool_destroy(dm_pool *pool);

#endif
