/* consumer.c - a program outside the project that uses libdamamba as
 * installed (pkg-config) or as a Meson subproject: classify one image with
 * the built-in model and print its best class. */
#include <damamba.h>

#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: consumer IMAGE\n");
        return 2;
    }
    if (dm_version() != DM_VERSION) {
        fprintf(stderr, "header %s, library %s\n", DM_VERSION_STRING, dm_version_string());
        return 1;
    }
    dm_model *model = NULL;
    dm_workspace *ws = NULL;
    dm_image image = {0};
    dm_preprocess prep = DM_PREPROCESS_INIT;
    float *input = NULL, *logits = NULL;
    int h, w, best, status = 1;
    if (dm_model_load_default(&model) != DM_OK || dm_preprocess_default(model, &prep) != DM_OK ||
        dm_image_load(argv[1], prep.channels, &image) != DM_OK ||
        dm_preprocess_output_size(&prep, image.width, image.height, &h, &w) != DM_OK)
        goto done;
    int classes = dm_model_config(model)->num_classes;
    input = malloc(sizeof(float) * prep.channels * h * w);
    logits = malloc(sizeof(float) * classes);
    dm_outputs out = {.size = sizeof out, .logits = logits};
    if (!input || !logits || dm_image_preprocess(&image, &prep, input) != DM_OK ||
        dm_workspace_create(model, 1, h, w, &ws) != DM_OK || dm_forward(model, ws, input, 1, h, w, &out) != DM_OK ||
        dm_softmax(logits, classes, logits) != DM_OK || dm_top_k(logits, classes, 1, &best) != DM_OK)
        goto done;
    printf("%s %.4f (libdamamba %s)\n", dm_model_class_names(model)[best], logits[best], dm_version_string());
    status = 0;
done:
    if (status) fprintf(stderr, "consumer: %s\n", dm_last_error());
    free(input);
    free(logits);
    dm_workspace_free(ws);
    dm_image_free(&image);
    dm_model_free(model);
    return status;
}
