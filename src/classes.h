/* classes.h - a model's class names, parsed from its metadata at load. */
#ifndef DM_CLASSES_H
#define DM_CLASSES_H

#include "damamba.h"

/* Parse the metadata "classes" into model->class_names (when there is a head
 * and the metadata has the key); fails when it is not a list of
 * num_classes strings.  A detector's may also be one name per line (as mmcv
 * checkpoints give them, colours after a tab ignored) or names separated by
 * commas; it gets category ids too. */
dm_status dm_model_parse_classes(dm_model *model);
void dm_model_free_classes(dm_model *model);

#endif
