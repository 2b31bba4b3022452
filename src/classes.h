/* classes.h - a model's class names, parsed from its metadata at load. */
#ifndef DM_CLASSES_H
#define DM_CLASSES_H

#include "damamba.h"

/* Parse the metadata "classes" into model->class_names (when there is a head
 * and the metadata has the key); fails when it is not a list of
 * num_classes strings. */
dm_status dm_model_parse_classes(dm_model *model);
void dm_model_free_classes(dm_model *model);

#endif
