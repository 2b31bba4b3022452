/* error.h - the library's error reporting: a status plus a message kept per
 * thread for dm_last_error() (dm_fail() is in internal_api.h). */
#ifndef DM_ERROR_H
#define DM_ERROR_H

#include "internal_api.h"

/* Prefix the current message with context ("model.pth: "). */
void dm_error_prefix(const char *fmt, ...) DM_PRINTF(1, 2);

#endif
