#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "damamba.h"

const char *test_path(const char *name)
{
    static _Thread_local char buf[4096];
    const char *dir = getenv("DM_TEST_DATA");
    snprintf(buf, sizeof buf, "%s/%s", dir ? dir : "tests/golden", name);
    return buf;
}

void test_open(const char *name, dm_tensor_file *file)
{
    dm_status st = dm_safetensors_open(test_path(name), file);
    ck_assert_msg(st == DM_OK, "cannot open %s: %s", name, dm_last_error());
}

const float *test_f32(const dm_tensor_file *file, const char *name, size_t *count)
{
    const dm_tensor *t = dm_tensor_file_find(file, name);
    ck_assert_msg(t != NULL, "golden tensor %s missing", name);
    ck_assert_msg(t->dtype == DM_F32, "golden tensor %s is not F32", name);
    if (count) *count = (size_t)t->numel;
    return t->data;
}

double test_rel_err(const char *label, const float *got, const float *want, size_t n)
{
    double max_err = 0.0, max_ref = 0.0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - want[i]);
        if (!(e <= max_err)) max_err = e; /* NaN counts as the worst */
        if (fabs(want[i]) > max_ref) max_ref = fabs(want[i]);
    }
    double rel = max_ref > 0 ? max_err / max_ref : max_err;
    printf("%-40s max_abs_err %.3e  max|ref| %.3e  rel_err %.3e\n", label, max_err, max_ref, rel);
    fflush(stdout);
    return rel;
}

int test_run(Suite *suite)
{
    SRunner *sr = srunner_create(suite);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
