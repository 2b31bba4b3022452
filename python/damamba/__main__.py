"""python -m damamba classify: the command-line program's classify, same
arguments (FILE, DIR or @LIST) and the same output, text or --json."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Iterator, Sequence

from . import DamambaError, Model, format_result

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tga", ".ppm", ".pgm", ".pnm"}


def image_files(arg: str) -> Iterator[str]:
    """A file as is, the image files under a directory (recursively, in byte
    order of the names, hidden ones left out), or the paths listed in @LIST."""
    if arg.startswith("@"):
        with open(arg[1:], encoding="utf-8", errors="surrogateescape") as listing:
            yield from (line.rstrip("\r\n") for line in listing if line.strip())
    elif os.path.isdir(arg):
        for name in sorted(os.listdir(arg), key=os.fsencode):
            if name.startswith("."):
                continue
            path = os.path.join(arg, name)
            if os.path.isdir(path):
                yield from image_files(path)
            elif os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                yield path
    else:
        yield arg


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m damamba", description="Classify images with DAMamba.")
    commands = parser.add_subparsers(dest="command", required=True)
    classify = commands.add_parser("classify", help="the most probable classes of images")
    classify.add_argument("-m", "--model", help="safetensors or .pth file (default: the built-in model)")
    classify.add_argument("--ema", action="store_true", help="a .pth checkpoint's 'model_ema'")
    classify.add_argument("-k", "--top", type=int, default=5, help="classes per image (default 5)")
    classify.add_argument("-j", "--json", action="store_true", help="one JSON object per line")
    classify.add_argument("-b", "--batch", type=int, default=32, help="images per forward pass (default 32)")
    classify.add_argument("-t", "--threads", type=int, help="threads of a forward pass")
    classify.add_argument("inputs", nargs="+", metavar="FILE|DIR|@LIST")
    args = parser.parse_args(argv)
    for name in ("top", "batch", "threads"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")

    try:
        model = Model(args.model, ema=args.ema)
        paths = [path for arg in args.inputs for path in image_files(arg)]
    except (DamambaError, OSError) as e:
        print(f"damamba: {e}", file=sys.stderr)
        return 1
    status = 0
    for result in model.classify(paths, args.top, batch=args.batch, threads=args.threads, errors="record"):
        if "error" in result:
            print(f"damamba: {result['error']}", file=sys.stderr)
            status = 1
            if not args.json:
                continue
        print(format_result(result, args.json), flush=args.json)
    return status


if __name__ == "__main__":
    sys.exit(main())
