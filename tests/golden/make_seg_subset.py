#!/usr/bin/env python3
"""Cut the lean subsets of the segmentation golden files the tests read.

    python3 tests/golden/make_seg_subset.py ../shared/golden tests/golden

seg_preprocess.safetensors (18 MB) is cut down: each case's 8-bit keep-ratio
resize (`resized`) becomes a lossless PNG (RGB, from OpenCV's BGR), and
seg_transform.safetensors keeps every case's scale factor, the normalized
`img` of the exact 2x reduction, and the top 32 rows of the flipped case's
(`chelsea_r075_flip.img_top`).  upernet_micro.io.safetensors (16 MB) ->
upernet_io.safetensors: the whole, slide, single-scale and multi-scale
cases' inputs (except the 512 x 689 single-scale one, which the tests make
from seg_small.png), expected logits, probabilities and label maps.  JPEG fixtures: a crop of chelsea.png
encoded by Pillow (4:2:0 and grey), with Pillow's own decoding of them
(libjpeg-turbo) as PNG: the reference for the library's JPEG decoder.
"""
import io
import json
import struct
import sys

import numpy as np
from PIL import Image

DTYPES = {'U8': np.uint8, 'F32': np.float32, 'I64': np.int64, 'F64': np.float64}
NAMES = {np.dtype(v): k for k, v in DTYPES.items()}


def load(path):
    raw = open(path, 'rb').read()
    n = struct.unpack('<Q', raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    meta = header.pop('__metadata__', {})
    out = {}
    for k, v in header.items():
        s, e = v['data_offsets']
        out[k] = np.frombuffer(raw[8 + n + s:8 + n + e], dtype=DTYPES[v['dtype']]).reshape(v['shape'])
    return out, meta


def save(path, tensors, meta):
    header, blobs, off = {}, [], 0
    for k, v in tensors.items():
        b = np.ascontiguousarray(v).tobytes()
        header[k] = {'dtype': NAMES[v.dtype], 'shape': list(v.shape), 'data_offsets': [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    header['__metadata__'] = meta
    h = json.dumps(header).encode()
    h += b' ' * (-len(h) % 8)
    with open(path, 'wb') as f:
        f.write(struct.pack('<Q', len(h)) + h + b''.join(blobs))


def main(src, dst):
    pre, meta = load(f'{src}/seg_preprocess.safetensors')
    keep = {}
    for case in ('chelsea', 'coffee', 'chelsea_r075_flip', 'coffee_r0390625'):
        Image.fromarray(pre[f'{case}.resized'][:, :, ::-1].copy()).save(f'{dst}/seg_{case}_resized.png')
        keep[f'{case}.scale_factor'] = pre[f'{case}.scale_factor']
    keep['coffee_r0390625.img'] = pre['coffee_r0390625.img']
    keep['chelsea_r075_flip.img_top'] = np.ascontiguousarray(pre['chelsea_r075_flip.img'][:, :32, :])
    save(f'{dst}/seg_transform.safetensors', keep, {k: meta[k] for k in meta if k.startswith(('chelsea', 'coffee'))})

    io_, io_meta = load(f'{src}/upernet_micro.io.safetensors')
    keys = ['input', 'decode_logits.expected', 'seg_logits.expected', 'seg_pred',
            'slide.input', 'slide.seg_logits.expected', 'slide.seg_pred',
            'ss.probs.expected', 'ss.seg_pred', 'ms.probs.expected', 'ms.seg_pred']
    save(f'{dst}/upernet_io.safetensors', {k: io_[k] for k in keys},
         {k: io_meta[k] for k in ('whole', 'slide', 'ss', 'ms', 'mmseg', 'mmcv')})

    photo = Image.open(f'{src}/chelsea.png').convert('RGB').crop((100, 60, 261, 181))
    for name, img in (('jpeg_colour', photo), ('jpeg_grey', photo.convert('L'))):
        buf = io.BytesIO()
        img.save(buf, 'JPEG', quality=87, subsampling=2)
        open(f'{dst}/{name}.jpg', 'wb').write(buf.getvalue())
        Image.open(io.BytesIO(buf.getvalue())).save(f'{dst}/{name}_pillow.png')


if __name__ == '__main__':
    main(sys.argv[1], sys.argv[2])
