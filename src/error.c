#include "error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static _Thread_local char last_error[1024];

const char *dm_last_error(void) { return last_error; }

const char *dm_status_string(dm_status status)
{
    switch (status) {
    case DM_OK: return "ok";
    case DM_ERR_ARGUMENT: return "invalid argument";
    case DM_ERR_IO: return "i/o error";
    case DM_ERR_FORMAT: return "format error";
    case DM_ERR_MODEL: return "model error";
    case DM_ERR_NOMEM: return "out of memory";
    case DM_ERR_UNSUPPORTED: return "unsupported";
    case DM_ERR_DEVICE: return "device error";
    }
    return "unknown status";
}

dm_status dm_fail(dm_status status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return status;
}

void dm_error_prefix(const char *fmt, ...)
{
    char prefix[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    size_t np = strlen(prefix), nold = strlen(last_error);
    if (np >= sizeof last_error) np = sizeof last_error - 1;
    if (np + nold >= sizeof last_error) nold = sizeof last_error - 1 - np;
    memmove(last_error + np, last_error, nold);
    memcpy(last_error, prefix, np);
    last_error[np + nold] = '\0';
}
