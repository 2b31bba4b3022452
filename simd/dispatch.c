/* dispatch.c - choose the kernel table once: the best instruction set this
 * CPU has, unless DAMAMBA_ISA names one.  A SIMD table may leave entries
 * NULL; those fall back to the scalar reference.  A DAMAMBA_ISA this build
 * or CPU cannot run is refused, never silently replaced. */
#include "kernels.h"

#include "error.h"

#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "simd_tables.h"

/* Copy t, filling the entries it leaves NULL from the scalar table. */
static void complete(const dm_kernels *t, dm_kernels *out)
{
    *out = *t;
#define FALL_BACK(name, params) if (!out->name) out->name = dm_kernels_scalar.name;
    DM_KERNEL_LIST(FALL_BACK)
#undef FALL_BACK
}

static void complete_all(void)
{
    for (size_t i = 0; i < dm_simd_table_count; i++) complete(dm_simd_tables[i].table, &dm_simd_tables[i].completed);
}

const dm_kernels *dm_kernels_by_name(const char *isa)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, complete_all);
    if (strcmp(isa, "scalar") == 0) return &dm_kernels_scalar;
    for (size_t i = 0; i < dm_simd_table_count; i++)
        if (strcmp(dm_simd_tables[i].table->isa, isa) == 0)
            return dm_simd_tables[i].supported() ? &dm_simd_tables[i].completed : NULL;
    return NULL;
}

/* Why the instruction set DAMAMBA_ISA names cannot run, into msg. */
static void explain_refusal(const char *isa, char *msg, size_t size)
{
    for (size_t i = 0; i < dm_simd_table_count; i++)
        if (strcmp(dm_simd_tables[i].table->isa, isa) == 0) {
            snprintf(msg, size, "DAMAMBA_ISA=%s: this CPU does not support %s", isa, isa);
            return;
        }
    int n = snprintf(msg, size, "DAMAMBA_ISA=%s: this build has no such instruction set (it has scalar", isa);
    for (size_t i = 0; i < dm_simd_table_count && n > 0 && (size_t)n < size; i++)
        n += snprintf(msg + n, size - (size_t)n, ", %s", dm_simd_tables[i].table->isa);
    if (n > 0 && (size_t)n < size) snprintf(msg + n, size - (size_t)n, ")");
}

static const dm_kernels *active;
static char refusal[160];

static void choose(void)
{
    const char *forced = getenv("DAMAMBA_ISA");
    if (forced && *forced) {
        /* Never pretend: a forced instruction set runs, or nothing does. */
        active = dm_kernels_by_name(forced);
        if (!active) explain_refusal(forced, refusal, sizeof refusal);
        return;
    }
    /* Tables are listed best first. */
    for (size_t i = 0; i < dm_simd_table_count && !active; i++)
        if (dm_simd_tables[i].supported()) active = dm_kernels_by_name(dm_simd_tables[i].table->isa);
    if (!active) active = &dm_kernels_scalar;
}

const dm_kernels *dm_kernels_active(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, choose);
    return active;
}

dm_status dm_kernels_require(const dm_kernels **out)
{
    *out = dm_kernels_active();
    return *out ? DM_OK : dm_fail(DM_ERR_UNSUPPORTED, "%s", refusal);
}

const char *dm_isa(void)
{
    const dm_kernels *k = dm_kernels_active();
    return k ? k->isa : "none";
}
