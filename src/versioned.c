#include "versioned.h"

#include <string.h>

#include "error.h"

int dm_version(void) { return DM_VERSION; }

const char *dm_version_string(void) { return DM_VERSION_STRING; }

dm_status dm_struct_import(void *full, size_t full_size, const void *caller, size_t min_size, const char *name)
{
    if (!caller) return dm_fail(DM_ERR_ARGUMENT, "%s is NULL", name);
    size_t size;
    memcpy(&size, caller, sizeof size);
    if (size < min_size)
        return dm_fail(DM_ERR_ARGUMENT, "%s.size is %zu: set it to sizeof(%s)", name, size, name);
    memset(full, 0, full_size);
    memcpy(full, caller, size < full_size ? size : full_size);
    return DM_OK;
}

void dm_struct_export(void *caller, const void *full, size_t full_size)
{
    size_t size;
    memcpy(&size, caller, sizeof size);
    memcpy(caller, full, size < full_size ? size : full_size);
    memcpy(caller, &size, sizeof size);
}
