/* json.h - a small strict JSON reader for safetensors headers and model
 * metadata (class lists, preprocessing settings); declared in
 * internal_api.h, which the program shares for annotation files. */
#ifndef DM_JSON_H
#define DM_JSON_H

#include <stddef.h>
#include <stdio.h>
#include <stdint.h>

#include "internal_api.h"

#endif
