/* test_topk.c - dm_top_k against a full sort: order by score, ties to the
 * lower class, any k; and k = classes = 100,000 in well under a second (the
 * command line's selection once took k^2 x classes steps, an insertion
 * k x classes). */
#include "testutil.h"

#include <math.h>
#include <stdlib.h>

#include "damamba.h"

typedef struct ranked {
    float logit;
    int index;
} ranked;

static int by_rank(const void *a, const void *b)
{
    const ranked *x = a, *y = b;
    if (x->logit != y->logit) return x->logit > y->logit ? -1 : 1;
    return (x->index > y->index) - (x->index < y->index);
}

/* Logits with many ties: small integers. */
static float *random_logits(int classes, unsigned seed)
{
    float *l = malloc(sizeof(float) * (size_t)classes);
    srand(seed);
    for (int i = 0; i < classes; i++) l[i] = (float)(rand() % 17) - 8.0f;
    return l;
}

static void check_against_sort(int classes, int k, unsigned seed)
{
    float *logits = random_logits(classes, seed);
    ranked *sorted = malloc(sizeof *sorted * (size_t)classes);
    for (int i = 0; i < classes; i++) sorted[i] = (ranked){logits[i], i};
    qsort(sorted, (size_t)classes, sizeof *sorted, by_rank);
    int *index = malloc(sizeof(int) * (size_t)k);
    ck_assert_int_eq(dm_top_k(logits, classes, k, index), DM_OK);
    for (int j = 0; j < k; j++)
        ck_assert_msg(index[j] == sorted[j].index, "classes %d, k %d: rank %d is %d, expected %d", classes, k, j,
                      index[j], sorted[j].index);
    free(index);
    free(sorted);
    free(logits);
}

START_TEST(matches_a_full_sort)
{
    static const int classes[] = {1, 2, 3, 10, 17, 1000};
    for (size_t c = 0; c < sizeof classes / sizeof classes[0]; c++)
        for (int k = 1; k <= classes[c]; k += k < 8 ? 1 : classes[c] / 7 + 1)
            check_against_sort(classes[c], k, 7u + (unsigned)k);
}
END_TEST

/* NaN ranks above every number (torch.topk's order), NaNs by index: one
 * order whatever their places (it once depended on where a NaN stood). */
START_TEST(nan_ranks_first)
{
    static const struct { float scores[4]; int n, want[4]; } cases[] = {
        {{NAN, 1, 2}, 3, {0, 2, 1}},
        {{1, NAN, 2}, 3, {1, 2, 0}},
        {{1, 2, NAN}, 3, {2, 1, 0}},
        {{NAN, 1, NAN, 2}, 4, {0, 2, 3, 1}},
        {{2, NAN, -INFINITY, NAN}, 4, {1, 3, 0, 2}},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        for (int k = 1; k <= cases[c].n; k++) {
            int index[4];
            ck_assert_int_eq(dm_top_k(cases[c].scores, cases[c].n, k, index), DM_OK);
            for (int j = 0; j < k; j++)
                ck_assert_msg(index[j] == cases[c].want[j], "case %zu, k %d: rank %d is %d, expected %d", c, k, j,
                              index[j], cases[c].want[j]);
        }
}
END_TEST

START_TEST(large_k_is_fast)
{
    check_against_sort(100000, 100000, 1);
    check_against_sort(100000, 5, 2);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("topk");
    TCase *tc = tcase_create("topk");
    tcase_add_test(tc, matches_a_full_sort);
    tcase_add_test(tc, nan_ranks_first);
    tcase_add_test(tc, large_k_is_fast);
    suite_add_tcase(s, tc);
    return test_run(s);
}
