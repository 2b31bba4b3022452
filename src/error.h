/* error.h - the library's error reporting: a status plus a message kept per
 * thread for dm_last_error(). */
#ifndef DM_ERROR_H
#define DM_ERROR_H

#include "damamba.h"

#if defined(__GNUC__)
#define DM_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define DM_PRINTF(a, b)
#endif

/* Record a failure and return its status, so callers can write
 * `return dm_fail(DM_ERR_FORMAT, "...", ...);`. */
dm_status dm_fail(dm_status status, const char *fmt, ...) DM_PRINTF(2, 3);

/* Prefix the current message with context ("model.pth: "). */
void dm_error_prefix(const char *fmt, ...) DM_PRINTF(1, 2);

#endif
