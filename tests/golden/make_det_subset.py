#!/usr/bin/python3
"""Write the subsets of the Mask R-CNN reference vectors the detection tests
read, cropped to stay small:

usage: tests/golden/make_det_subset.py GOLDEN_DIR tests/golden

maskrcnn_micro.io.safetensors, from the file of that name:
Kept as they are: the input and its image metadata, the FPN levels, the RPN
outputs, anchors and proposals, the box head's logits and deltas, the
detections, the 28x28 mask probabilities, the paste boxes, windows and
masks.  Cropped: RoIAlign references of the 27 extra RoIs to their first 16
channels, pasted probabilities to the first 4 detections.  Added:
mask.pred.label_channel (the mask logits of each detection's class),
segm.near_threshold, 1 where the reference probability lies within 1e-3 of
0.5 (where float32 rounding may flip a pixel).

det_transform.safetensors, from det_preprocess.safetensors (the COCO test
pipeline on chelsea.png and coffee.png): NAME.{img,ori,pad}_shape,
NAME.scale_factor, and bands of rows of NAME.input (rows listed in
NAME.rows), the padded columns included."""
import sys

import numpy as np

from make_seg_subset import load, save


def aligned(tensors):
    """The tensors widest elements first, so that each starts aligned to its
    element size (the tests read them in place)."""
    return dict(sorted(tensors.items(), key=lambda kv: -kv[1].dtype.itemsize))


def crop_transform(src, dst):
    full, meta = load(src)
    out = {}
    bands = {'chelsea': [*range(0, 8), *range(396, 404), *range(792, 800)], 'coffee': list(range(0, 8))}
    for name, rows in bands.items():
        for key in ('img_shape', 'ori_shape', 'pad_shape', 'scale_factor'):
            out['%s.%s' % (name, key)] = full['%s.%s' % (name, key)]
        out[name + '.rows'] = np.array(rows, dtype=np.int64)
        out[name + '.input_rows'] = full[name + '.input'][0][:, rows, :]
    meta = dict(meta, source='rows of det_preprocess.safetensors (tests/golden/make_det_subset.py)')
    save(dst, aligned(out), meta)


def main():
    golden, tests = sys.argv[1], sys.argv[2]
    crop_transform(golden + '/det_preprocess.safetensors', tests + '/det_transform.safetensors')
    full, meta = load(golden + '/maskrcnn_micro.io.safetensors')
    keep = ['input', 'meta.img_shape', 'meta.ori_shape', 'meta.pad_shape', 'meta.scale_factor',
            'rpn.proposals.expected', 'rpn.proposal_levels', 'bbox.roi_levels', 'bbox.cls_score.expected',
            'bbox.bbox_pred.expected', 'det.bboxes.expected', 'det.scores.expected', 'det.labels',
            'mask.prob.expected', 'mask.roi_levels', 'segm.paste_boxes.expected', 'segm.windows',
            'segm.masks.expected', 'extra.rois', 'extra.roi_levels']
    out = {k: full[k] for k in keep}
    for lvl in range(2, 7):
        out['neck.p%d.expected' % lvl] = full['neck.p%d.expected' % lvl]
        out['rpn.anchors.p%d' % lvl] = full['rpn.anchors.p%d' % lvl]
        for part in ('cls_score', 'bbox_pred'):
            out['rpn.%s.p%d.expected' % (part, lvl)] = full['rpn.%s.p%d.expected' % (part, lvl)]
    out['extra.roi_feats7.first16ch'] = full['extra.roi_feats7.expected'][:, :16]
    out['extra.roi_feats14.first16ch'] = full['extra.roi_feats14.expected'][:, :16]
    pred = full['mask.pred.expected']
    out['mask.pred.label_channel'] = pred[np.arange(len(pred)), full['det.labels']]
    prob = full['segm.prob.expected']
    out['segm.prob.first4'] = prob[:4]
    out['segm.near_threshold'] = (np.abs(prob - 0.5) < 1e-3).astype(np.uint8)
    kept_meta = {k: v for k, v in meta.items() if not k.startswith('margin.') and not k.startswith('err.')}
    kept_meta['source'] = 'subset of maskrcnn_micro.io.safetensors (tests/golden/make_det_subset.py)'
    save(tests + '/maskrcnn_micro.io.safetensors', aligned(out), kept_meta)


if __name__ == '__main__':
    main()
