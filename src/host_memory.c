/* host_memory.c - host buffers held to the process's memory limit
 * (host_memory.h).
 *
 * Each buffer carries its size in a 64-byte header, so that freeing it
 * takes its bytes off the count.  The count alone misses what the process
 * holds elsewhere (the model, the caller's own memory), and resident
 * memory alone misses buffers not yet touched: a buffer is refused when
 * the larger of the two, plus its bytes, passes the limit. */
#include "host_memory.h"

#include "backend/cpu/cgroup.h"

#include <ctype.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define HEADER 64
/* Smaller buffers count the buffers only: reading the resident size takes
 * about 10 us. */
#define RESIDENT_CHECK_BYTES ((size_t)1 << 20)

static size_t limit;
static int limit_unreadable; /* DAMAMBA_MEMORY_LIMIT is not a size */
static char limit_source[160];
static pthread_once_t limit_once = PTHREAD_ONCE_INIT;
static atomic_size_t held;
static _Thread_local char refusal[384];

static size_t physical_bytes(void)
{
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
    if (pages <= 0 || page <= 0 || (unsigned long)pages > SIZE_MAX / (unsigned long)page) return SIZE_MAX;
    return (size_t)pages * (size_t)page;
}

/* A whole number of bytes, or of K, M, G or T (powers of 1024). */
static int parse_size(const char *s, size_t *out)
{
    size_t value = 0;
    const char *p = s;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (value > (SIZE_MAX - 9) / 10) return 0;
        value = value * 10 + (size_t)(*p - '0');
    }
    if (p == s) return 0;
    static const char units[] = "KMGT";
    const char *unit = *p ? strchr(units, toupper((unsigned char)*p)) : NULL;
    if (unit) {
        for (const char *u = units; u <= unit; u++) {
            if (value > SIZE_MAX / 1024) return 0;
            value *= 1024;
        }
        p++;
    }
    if (*p) return 0;
    *out = value;
    return 1;
}

static void read_limit(void)
{
    limit = physical_bytes();
    snprintf(limit_source, sizeof limit_source, "this machine's memory");
    long long group = dm_cgroup_memory_limit("");
    if (group > 0 && (unsigned long long)group < limit) {
        limit = (size_t)group;
        snprintf(limit_source, sizeof limit_source, "the limit of its control group");
    }
    /* The user's setting replaces both: lower to share the machine, or
     * higher where swap holds more. */
    const char *env = getenv("DAMAMBA_MEMORY_LIMIT");
    if (env && *env) {
        if (parse_size(env, &limit)) {
            snprintf(limit_source, sizeof limit_source, "DAMAMBA_MEMORY_LIMIT");
        } else {
            limit = 0;
            limit_unreadable = 1;
            snprintf(limit_source, sizeof limit_source, "DAMAMBA_MEMORY_LIMIT is \"%.40s\", not a size such as 4G or 512M",
                     env);
        }
    }
}

size_t dm_memory_limit(void)
{
    pthread_once(&limit_once, read_limit);
    return limit;
}

/* Resident memory that is not a file's: a mapped model file's pages are
 * the page cache's, which the kernel can drop and read again. */
static size_t resident_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f) return 0;
    unsigned long long size, resident, shared;
    int ok = fscanf(f, "%llu %llu %llu", &size, &resident, &shared) == 3 && shared <= resident;
    fclose(f);
    unsigned long long pages = ok ? resident - shared : 0;
    long page = sysconf(_SC_PAGE_SIZE);
    return page > 0 && pages < SIZE_MAX / (unsigned long)page ? (size_t)pages * (size_t)page : 0;
}

void *dm_host_alloc(size_t bytes)
{
    refusal[0] = '\0';
    size_t most = dm_memory_limit();
    if (limit_unreadable) {
        snprintf(refusal, sizeof refusal, "%s", limit_source);
        return NULL;
    }
    size_t holding = atomic_load(&held);
    if (bytes >= RESIDENT_CHECK_BYTES) {
        size_t resident = resident_bytes();
        if (resident > holding) holding = resident;
    }
    if (bytes > SIZE_MAX - HEADER || holding > most || bytes + HEADER > most - holding) {
        snprintf(refusal, sizeof refusal, "the process holds %.1f MB, and %.1f MB more would pass %.1f MB, %s",
                 holding / 1e6, bytes / 1e6, most / 1e6, limit_source);
        return NULL;
    }
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes + HEADER) != 0) return NULL;
    *(size_t *)p = bytes + HEADER;
    atomic_fetch_add(&held, bytes + HEADER);
    return (char *)p + HEADER;
}

void dm_host_free(void *p)
{
    if (!p) return;
    char *block = (char *)p - HEADER;
    atomic_fetch_sub(&held, *(size_t *)block);
    free(block);
}

void *dm_host_array(size_t n, size_t size)
{
    return dm_host_alloc(size && n > SIZE_MAX / size ? SIZE_MAX : n * size);
}

size_t dm_host_held(void) { return atomic_load(&held); }

dm_status dm_fail_nomem(const char *fmt, ...)
{
    char message[640];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    dm_status status = refusal[0] ? dm_fail(DM_ERR_NOMEM, "%s: %s", message, refusal)
                                  : dm_fail(DM_ERR_NOMEM, "%s", message);
    refusal[0] = '\0';
    return status;
}
