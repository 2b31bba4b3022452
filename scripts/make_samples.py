#!/usr/bin/env python3
"""Write data/samples/*.png: for each Fashion-MNIST class, the first image of
tests/golden/fmnist_test.safetensors that PyTorch classified correctly, as an
8-bit greyscale PNG named after its class.  Standard library only."""
import json
import os
import struct
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", {})
    base = 8 + n
    return {k: data[base + v["data_offsets"][0]:base + v["data_offsets"][1]] for k, v in header.items()}, meta


def png(width, height, rows):
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    raw = b"".join(b"\0" + row for row in rows)  # filter type 0 per row
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def main():
    tensors, meta = read_safetensors(os.path.join(ROOT, "tests", "golden", "fmnist_test.safetensors"))
    classes = json.loads(meta["classes"])
    labels = struct.unpack("<%dq" % (len(tensors["labels"]) // 8), tensors["labels"])
    preds = struct.unpack("<%dq" % (len(tensors["torch_pred"]) // 8), tensors["torch_pred"])
    images = tensors["images"]
    for c, name in enumerate(classes):
        i = next(i for i in range(len(labels)) if labels[i] == c and preds[i] == c)
        pixels = images[i * 784:(i + 1) * 784]
        stem = name.split("/")[0].lower().replace(" ", "-")
        with open(os.path.join(ROOT, "data", "samples", stem + ".png"), "wb") as f:
            f.write(png(28, 28, [pixels[r * 28:(r + 1) * 28] for r in range(28)]))
        print(stem, "test image", i)


if __name__ == "__main__":
    main()
