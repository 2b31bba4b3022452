/* detect.h - Mask R-CNN inference in stages, with every intermediate kept,
 * so tests can hold each stage against the reference. */
#ifndef DM_DETECT_H
#define DM_DETECT_H

#include "damamba.h"

#define DM_FPN_LEVELS 5     /* P2 .. P6 */
#define DM_ROI_LEVELS 4     /* RoIs are pooled from P2 .. P5 */
#define DM_BOX_ROI 7        /* RoIAlign output of the box head */
#define DM_MASK_ROI 14      /* ... and of the mask head */
#define DM_MASK_SIZE 28     /* mask head output */

/* Everything one image's pass computes; arrays are malloc'ed. */
typedef struct dm_det_state {
    int keep_features;             /* set by the caller: copy the FPN outputs to feat */
    float *feat[DM_FPN_LEVELS];    /* FPN outputs, [h][w][fpn_channels], or NULL */
    int feat_h[DM_FPN_LEVELS], feat_w[DM_FPN_LEVELS];
    float *rpn_cls[DM_FPN_LEVELS]; /* RPN logits [h][w][A] */
    float *rpn_reg[DM_FPN_LEVELS]; /* RPN deltas [h][w][A][4] */
    int num_proposals;
    float *proposals;              /* [N][5]: box, score */
    int *roi_levels;               /* [N] */
    float *cls_score;              /* [N][classes + 1], background last */
    float *bbox_pred;              /* [N][classes][4] */
    int count;                     /* detections */
    float *det_boxes;              /* [D][4], original-image pixels */
    float *det_scores;             /* [D] */
    int *det_labels;               /* [D] */
    double seconds[4];             /* network to the RPN, proposals, box head, mask head */
    float *mask_logit;             /* [D][28][28]: the label's mask logit */
    float *mask_prob;              /* [D][28][28]: its sigmoid */
} dm_det_state;

/* Run the backbone and heads up to the 28 x 28 mask probabilities; st's
 * keep_features is read, everything else written. */
dm_status dm_det_run(const dm_model *model, dm_workspace *ws, const float *input, int h, int w,
                     const dm_det_image *image, const dm_det_settings *settings, dm_det_state *st);

void dm_det_state_free(dm_det_state *st);

/* mmcv's batched_nms: NMS at IoU threshold iou within each group (groups
 * >= 0) of n boxes (x0, y0, x1, y1), never across groups.  keep (n ints)
 * gets the kept boxes' indices by descending score, equal scores in index
 * order; *kept their count. */
dm_status dm_batched_nms(const float *boxes, const float *scores, const int *groups, size_t n, float iou, int *keep,
                         size_t *kept);

/* The RoI level of a box (SingleRoIExtractor, finest scale 56). */
int dm_roi_level(const float box[4]);

/* The box pasting uses (detection box scaled to the input and back) and
 * its window in the original image [x0, x1) x [y0, y1), as mmdetection
 * pastes one mask at a time. */
void dm_paste_window(const float det_box[4], const dm_det_image *image, float paste_box[4], int window[4]);

/* COCO compressed RLE of an h x w 0/1 bitmap (row-major): runs counted in
 * column-major order starting with zeros, written as pycocotools does.
 * Returns a malloc'ed string, or NULL when out of memory. */
char *dm_rle_encode(const uint8_t *mask, int h, int w);

/* The same of a bitmap known to be 0 outside window [x0, x1) x [y0, y1),
 * whose pixels there alone are read. */
char *dm_rle_encode_window(const uint8_t *mask, int h, int w, const int window[4]);

#endif
