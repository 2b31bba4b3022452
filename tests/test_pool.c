/* test_pool.c - the CPU backend's thread pool: every piece of a loop runs
 * exactly once, whatever the thread count, nesting, or how many pools run
 * at once; the caller finishes a loop alone while a worker is held up;
 * pools are destroyed cleanly whether their workers spin or sleep. */
#include "testutil.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "pool.h"

/* Counts how often each piece ran. */
typedef struct counted {
    _Atomic int *runs;
    size_t pieces;
} counted;

static void count_piece(void *arg, size_t i)
{
    counted *c = arg;
    ck_assert_uint_lt(i, c->pieces);
    atomic_fetch_add(&c->runs[i], 1);
}

/* Runs a loop of `pieces` on pool and checks that each ran exactly once. */
static void expect_each_once(dm_pool *pool, size_t pieces)
{
    counted c = {.runs = calloc(pieces ? pieces : 1, sizeof *c.runs), .pieces = pieces};
    ck_assert_ptr_nonnull(c.runs);
    dm_pool_run(pool, pieces, count_piece, &c);
    for (size_t i = 0; i < pieces; i++) ck_assert_msg(c.runs[i] == 1, "piece %zu of %zu ran %d times", i, pieces, c.runs[i]);
    free(c.runs);
}

static void sleep_ms(int ms)
{
    struct timespec t = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
}

START_TEST(every_piece_once)
{
    static const int threads[] = {1, 2, 3, 8};
    static const size_t pieces[] = {0, 1, 2, 3, 8, 33, 1000};
    for (int t = 0; t < 4; t++) {
        dm_pool *pool = dm_pool_create(threads[t]);
        ck_assert_ptr_nonnull(pool);
        ck_assert_int_eq(dm_pool_threads(pool), threads[t]);
        /* Loops back to back, as a pass runs them, and after the workers
         * have gone to sleep. */
        for (int round = 0; round < 200; round++) expect_each_once(pool, pieces[round % 7]);
        sleep_ms(20);
        for (int p = 0; p < 7; p++) expect_each_once(pool, pieces[p]);
        dm_pool_destroy(pool);
    }
}
END_TEST

/* Each outer piece runs an inner loop on its own pool and on another. */
typedef struct nested {
    dm_pool *own, *other;
    _Atomic int *inner_runs; /* [outer][inner] */
    size_t inner;
} nested;

typedef struct inner_piece_args {
    nested *n;
    size_t outer;
} inner_piece_args;

static void inner_piece(void *arg, size_t i)
{
    inner_piece_args *a = arg;
    atomic_fetch_add(&a->n->inner_runs[a->outer * a->n->inner + i], 1);
}

static void outer_piece(void *arg, size_t outer)
{
    nested *n = arg;
    inner_piece_args a = {.n = n, .outer = outer};
    dm_pool_run(n->own, n->inner, inner_piece, &a);
    dm_pool_run(n->other, n->inner, inner_piece, &a);
}

START_TEST(nested_loops_run_alone)
{
    size_t outer = 16, inner = 5;
    nested n = {.own = dm_pool_create(3), .other = dm_pool_create(2), .inner = inner};
    n.inner_runs = calloc(outer * inner, sizeof *n.inner_runs);
    ck_assert_ptr_nonnull(n.own);
    ck_assert_ptr_nonnull(n.other);
    dm_pool_run(n.own, outer, outer_piece, &n);
    for (size_t i = 0; i < outer * inner; i++) ck_assert_int_eq(n.inner_runs[i], 2);
    /* The pools still work as usual afterwards. */
    expect_each_once(n.own, 100);
    expect_each_once(n.other, 100);
    free(n.inner_runs);
    dm_pool_destroy(n.own);
    dm_pool_destroy(n.other);
}
END_TEST

/* The first piece a worker takes waits until every other piece is done:
 * the caller must run them all itself rather than wait for the worker. */
typedef struct held {
    pthread_t caller;
    size_t pieces;
    _Atomic size_t finished;
    _Atomic int worker_pieces;
} held;

static void held_piece(void *arg, size_t i)
{
    held *h = arg;
    (void)i;
    if (!pthread_equal(pthread_self(), h->caller)) {
        atomic_fetch_add(&h->worker_pieces, 1);
        while (atomic_load(&h->finished) < h->pieces - 1) sleep_ms(1);
    }
    atomic_fetch_add(&h->finished, 1);
}

START_TEST(caller_does_not_wait_for_a_held_worker)
{
    dm_pool *pool = dm_pool_create(2);
    ck_assert_ptr_nonnull(pool);
    for (int round = 0; round < 20; round++) {
        held h = {.caller = pthread_self(), .pieces = 64};
        dm_pool_run(pool, h.pieces, held_piece, &h);
        ck_assert_uint_eq(atomic_load(&h.finished), h.pieces);
        ck_assert_int_le(atomic_load(&h.worker_pieces), 1);
    }
    dm_pool_destroy(pool);
}
END_TEST

/* Several callers, each with its own pool, at once. */
static void *loops_on_own_pool(void *arg)
{
    (void)arg;
    dm_pool *pool = dm_pool_create(3);
    ck_assert_ptr_nonnull(pool);
    for (int round = 0; round < 300; round++) expect_each_once(pool, (size_t)(round % 17) * 3);
    dm_pool_destroy(pool);
    return NULL;
}

START_TEST(many_pools_at_once)
{
    pthread_t callers[6];
    for (int i = 0; i < 6; i++) ck_assert_int_eq(pthread_create(&callers[i], NULL, loops_on_own_pool, NULL), 0);
    for (int i = 0; i < 6; i++) pthread_join(callers[i], NULL);
}
END_TEST

START_TEST(destroy_while_idle)
{
    /* Workers still starting, spinning, and asleep. */
    dm_pool_destroy(dm_pool_create(4));
    dm_pool *pool = dm_pool_create(4);
    expect_each_once(pool, 10);
    dm_pool_destroy(pool);
    pool = dm_pool_create(4);
    expect_each_once(pool, 10);
    sleep_ms(20);
    dm_pool_destroy(pool);
    dm_pool_destroy(NULL);
}
END_TEST

/* fork() copies a pool but not its workers.  In the child a pool made
 * before runs its loops alone, and frees without joining the parent's
 * workers: their handles were copied, and a thread created in the child
 * (here the workers of a new pool) takes a dead one's place, so joining
 * it waited forever. */
START_TEST(pools_across_fork)
{
    if (getenv("DM_TEST_NO_FORK")) { /* an emulator that cannot fork threads */
        printf("fork not tested under %s\n", getenv("DM_TEST_NO_FORK"));
        return;
    }
    dm_pool *before = dm_pool_create(3);
    ck_assert_ptr_nonnull(before);
    expect_each_once(before, 40);
    pid_t child = fork();
    ck_assert_int_ge(child, 0);
    if (child == 0) {
        alarm(10);
        dm_pool *after = dm_pool_create(3);
        int ok = after && dm_pool_threads(before) == 1 && dm_pool_threads(after) == 3;
        for (int round = 0; ok && round < 20; round++) {
            expect_each_once(before, 40);
            expect_each_once(after, 40);
        }
        dm_pool_destroy(before);
        dm_pool_destroy(after);
        _exit(ok ? 0 : 1);
    }
    int status;
    ck_assert_int_eq(waitpid(child, &status, 0), child);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the child %s %d",
                  WIFSIGNALED(status) ? "was killed by signal" : "exited with",
                  WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
    expect_each_once(before, 40); /* the parent's workers are still there */
    ck_assert_int_eq(dm_pool_threads(before), 3);
    dm_pool_destroy(before);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("pool");
    TCase *tc = tcase_create("pool");
    tcase_add_test(tc, every_piece_once);
    tcase_add_test(tc, nested_loops_run_alone);
    tcase_add_test(tc, caller_does_not_wait_for_a_held_worker);
    tcase_add_test(tc, many_pools_at_once);
    tcase_add_test(tc, destroy_while_idle);
    tcase_add_test(tc, pools_across_fork);
    suite_add_tcase(s, tc);
    return test_run(s);
}
