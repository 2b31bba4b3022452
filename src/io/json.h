/* json.h - a small strict JSON reader for safetensors headers and model
 * metadata (class lists, preprocessing settings).  Its interface is in
 * internal_api.h, since the damamba program's server reads JSON too. */
#ifndef DM_JSON_H
#define DM_JSON_H

#include "internal_api.h"

#endif
