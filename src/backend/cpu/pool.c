/* pool.c - the CPU backend's threads (pool.h).
 *
 * A loop's pieces are dealt into one queue per thread, in contiguous
 * runs: a thread takes its own queue's pieces first, then the others'.
 * Loops over the same rows (a norm, then the product that reads it) then
 * give each thread the rows it has just written, still in its own cache.
 * A queue is a ticket, loop number << 32 | next piece, that threads
 * advance by compare-and-swap: a thread that still holds an earlier
 * loop's ticket cannot take a piece of a later loop.  When a loop is over
 * its tickets are closed before the next loop's piece function and ends
 * are written, so a worker that reads those early finds its stale ticket
 * closed.  Sleeping workers wait on a futex holding the latest loop
 * number.
 *
 * fork() copies a pool but not its workers: in the child a pool made
 * before the fork has none, and its loops run on the caller alone. */
#include "pool.h"

#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

/* A ticket's piece index once its loop is over: nothing left to take. */
#define TICKET_CLOSED UINT32_MAX
/* Pause instructions a thread spins before it sleeps (a worker waiting for
 * the next loop) or yields (the caller waiting for taken pieces): tens of
 * microseconds, longer than the gap between a pass's loops. */
#define SPIN_ROUNDS 4000

/* One thread's share of a loop: pieces [ticket's piece, end). */
typedef struct queue {
    alignas(64) _Atomic uint64_t ticket; /* loop number << 32 | next piece */
    _Atomic size_t end;
} queue;

/* A worker thread and what it knows of itself. */
typedef struct worker {
    struct dm_pool *pool;
    int self; /* its queue; the caller's is 0 */
    pthread_t thread;
} worker;

struct dm_pool {
    queue *queues;                     /* [workers + 1] */
    alignas(64) _Atomic size_t done;   /* pieces of this loop finished */
    alignas(64) _Atomic uint32_t loop; /* futex word: the latest loop number */
    _Atomic int sleepers;              /* workers in (or entering) futex waits */
    _Atomic int stop;
    _Atomic(dm_pool_piece) piece; /* the current loop */
    _Atomic(void *) arg;
    uint32_t last_loop; /* the caller's own count */
    int workers;
    worker *threads;
    unsigned forks; /* the process's forks when it was made */
};

/* Forks in this process's line: a child counts one more than its parent
 * at the fork.  A pool whose count differs was made in an ancestor, and
 * its worker handles name threads that do not exist here (joining one may
 * wait on an unrelated thread that took its place). */
static _Atomic unsigned forks;
static void count_fork(void) { atomic_fetch_add(&forks, 1); }
static void watch_forks(void) { pthread_atfork(NULL, NULL, count_fork); }
static pthread_once_t fork_watch = PTHREAD_ONCE_INIT;

/* The pool's workers that exist in this process. */
static int workers_here(const dm_pool *p)
{
    return p->forks == atomic_load_explicit(&forks, memory_order_relaxed) ? p->workers : 0;
}

/* Set while this thread runs a piece: a loop inside runs alone. */
static _Thread_local int in_piece;

static void cpu_pause(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ volatile("yield");
#endif
}

static void futex_wait(_Atomic uint32_t *word, uint32_t expected)
{
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT_PRIVATE, expected, NULL, NULL, 0);
}

static void futex_wake_all(_Atomic uint32_t *word)
{
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

/* Takes the next piece of loop `loop` from q; 0 when none is left or the
 * loop is over. */
static int take_from(queue *q, uint32_t loop, size_t *index)
{
    uint64_t t = atomic_load_explicit(&q->ticket, memory_order_acquire);
    for (;;) {
        uint32_t next = (uint32_t)t;
        if ((uint32_t)(t >> 32) != loop || next >= atomic_load_explicit(&q->end, memory_order_acquire)) return 0;
        if (atomic_compare_exchange_weak_explicit(&q->ticket, &t, t + 1, memory_order_acq_rel, memory_order_acquire)) {
            *index = next;
            return 1;
        }
    }
}

/* Runs pieces of loop `loop`, from queue `self` first, until none is left
 * to take. */
static void run_pieces(dm_pool *p, uint32_t loop, int self)
{
    int queues = p->workers + 1;
    size_t i;
    for (int k = 0; k < queues; k++) {
        queue *q = &p->queues[(self + k) % queues];
        while (take_from(q, loop, &i)) {
            dm_pool_piece piece = atomic_load_explicit(&p->piece, memory_order_acquire);
            void *arg = atomic_load_explicit(&p->arg, memory_order_acquire);
            in_piece = 1;
            piece(arg, i);
            in_piece = 0;
            atomic_fetch_add_explicit(&p->done, 1, memory_order_release);
        }
    }
}

/* The next loop number after `seen` (or any, once the pool stops). */
static uint32_t wait_for_loop(dm_pool *p, uint32_t seen)
{
    uint32_t loop;
    for (int spin = 0; spin < SPIN_ROUNDS; spin++) {
        if ((loop = atomic_load_explicit(&p->loop, memory_order_acquire)) != seen) return loop;
        cpu_pause();
    }
    /* The caller publishes the loop number, then counts sleepers; a worker
     * counts itself, then checks the number: one of them sees the other. */
    atomic_fetch_add(&p->sleepers, 1);
    while ((loop = atomic_load(&p->loop)) == seen) futex_wait(&p->loop, seen);
    atomic_fetch_sub(&p->sleepers, 1);
    return loop;
}

static void *worker_main(void *arg)
{
    const worker *me = arg;
    dm_pool *p = me->pool;
    uint32_t seen = 0;
    for (;;) {
        seen = wait_for_loop(p, seen);
        if (atomic_load(&p->stop)) return NULL;
        run_pieces(p, seen, me->self);
    }
}

dm_pool *dm_pool_create(int threads)
{
    pthread_once(&fork_watch, watch_forks);
    dm_pool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->forks = atomic_load(&forks);
    int want = threads > 1 ? threads - 1 : 0;
    p->queues = aligned_alloc(alignof(queue), sizeof(queue) * (size_t)(want + 1));
    p->threads = calloc((size_t)want + 1, sizeof *p->threads); /* + 1: never a request of 0 */
    if (!p->queues || !p->threads) {
        free(p->queues), free(p->threads), free(p);
        return NULL;
    }
    for (int q = 0; q <= want; q++) {
        atomic_init(&p->queues[q].ticket, TICKET_CLOSED);
        atomic_init(&p->queues[q].end, 0);
    }
    /* Workers take no signals: the application's handlers run on its own
     * threads. */
    sigset_t all, saved;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &saved);
    for (; p->workers < want; p->workers++) {
        worker *w = &p->threads[p->workers];
        *w = (worker){.pool = p, .self = p->workers + 1};
        if (pthread_create(&w->thread, NULL, worker_main, w) != 0) break;
    }
    pthread_sigmask(SIG_SETMASK, &saved, NULL);
    return p;
}

int dm_pool_threads(const dm_pool *pool) { return workers_here(pool) + 1; }

void dm_pool_run(dm_pool *p, size_t pieces, dm_pool_piece piece, void *arg)
{
    if (in_piece || workers_here(p) == 0 || pieces <= 1 || pieces >= TICKET_CLOSED) {
        int outer = in_piece;
        in_piece = 1;
        for (size_t i = 0; i < pieces; i++) piece(arg, i);
        in_piece = outer;
        return;
    }
    uint32_t loop = ++p->last_loop;
    int queues = p->workers + 1;
    atomic_store_explicit(&p->piece, piece, memory_order_release);
    atomic_store_explicit(&p->arg, arg, memory_order_release);
    atomic_store_explicit(&p->done, 0, memory_order_relaxed);
    for (int q = 0; q < queues; q++) {
        size_t start = pieces * q / queues, end = pieces * (q + 1) / queues;
        atomic_store_explicit(&p->queues[q].end, end, memory_order_release);
        atomic_store_explicit(&p->queues[q].ticket, (uint64_t)loop << 32 | start, memory_order_release);
    }
    atomic_store(&p->loop, loop);
    if (atomic_load(&p->sleepers) > 0) futex_wake_all(&p->loop);

    run_pieces(p, loop, 0);
    /* Every piece is taken; wait for those still running elsewhere. */
    for (int spin = 0; atomic_load_explicit(&p->done, memory_order_acquire) < pieces; spin++) {
        if (spin < SPIN_ROUNDS) cpu_pause();
        else sched_yield();
    }
    for (int q = 0; q < queues; q++)
        atomic_store_explicit(&p->queues[q].ticket, (uint64_t)loop << 32 | TICKET_CLOSED, memory_order_release);
}

void dm_pool_destroy(dm_pool *p)
{
    if (!p) return;
    atomic_store(&p->stop, 1);
    atomic_store(&p->loop, p->last_loop + 1);
    futex_wake_all(&p->loop);
    for (int i = 0; i < workers_here(p); i++) pthread_join(p->threads[i].thread, NULL);
    free(p->queues), free(p->threads);
    free(p);
}
