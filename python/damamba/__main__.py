"""python -m damamba classify: the command-line program's classify, same
arguments (FILE, DIR or @LIST) and the same output, text or --json."""

from __future__ import annotations

import argparse
import os
import re
import signal
import stat
import sys
from typing import Iterator, Sequence

from . import MAX_THREADS, DamambaError, Model, _text, format_result

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tga", ".ppm", ".pgm", ".pnm"}

# The program's limits of the numeric options (tools/cmd_classify.c).
OPTION_LIMITS = {"top": 100000, "batch": 4096, "threads": MAX_THREADS}


def _option_int(value: str, high: int) -> int | None:
    """value as an integer from 1 to high, read as the program's strtol
    reads it (leading space and a sign, nothing after), else None."""
    if not re.fullmatch(r"[ \t\n\v\f\r]*[+-]?[0-9]+", value):
        return None
    number = int(value)
    return number if 1 <= number <= high else None


def _walk(directory: str, visited: set[tuple[int, int]], skipped: list[int], problems: list[str]) -> Iterator[str]:
    """The image files under directory, recursively, in byte order of the
    names, hidden ones left out and each directory once however many links
    lead to it; skipped[0] counts the other files.  A directory that cannot
    be read is reported, added to problems and left out; the walk goes on."""
    status = os.stat(directory)
    if (status.st_dev, status.st_ino) in visited:
        return
    visited.add((status.st_dev, status.st_ino))
    try:
        names = sorted(os.listdir(directory), key=os.fsencode)
    except OSError as e:
        print(f"damamba: {directory}: cannot read directory: {e.strerror}", file=sys.stderr)
        problems.append(directory)
        return
    for name in names:
        if name.startswith("."):
            continue
        path = os.path.join(directory, name)
        if os.path.isdir(path):
            yield from _walk(path, visited, skipped, problems)
        elif os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
            yield path
        else:
            skipped[0] += 1


def _list_lines(name: str, text: str, problems: list[str]) -> list[str]:
    """The paths of a list, as the program reads them: one a line, the
    line's ending (\\n, \\r\\n) taken off, empty lines skipped; a line
    holding a NUL, which no file name can, reported, added to problems and
    skipped."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the last line's newline
    paths = []
    for number, line in enumerate(lines, 1):
        line = line.rstrip("\r")
        if "\0" in line:
            print(f"damamba: {name}: line {number} holds a NUL byte, which no file name can", file=sys.stderr)
            problems.append(name)
        elif line:
            paths.append(line)
    return paths


def _read_list(name: str) -> str:
    """The text of @LIST (standard input for @-), refused as the program
    refuses it: a list must be a regular file or a pipe (a device such as
    /dev/urandom would fill the memory)."""
    if name == "-":
        return sys.stdin.buffer.read().decode("utf-8", "surrogateescape")
    try:
        fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise OSError(f"{name}: cannot open list: {e.strerror}") from None
    mode = os.fstat(fd).st_mode
    refused = ("cannot read list: Is a directory" if stat.S_ISDIR(mode)
               else None if stat.S_ISREG(mode) or stat.S_ISFIFO(mode)
               else "a list must be a regular file or a pipe (@- reads standard input)")
    if refused:
        os.close(fd)
        raise OSError(f"{name}: {refused}")
    with open(fd, encoding="utf-8", errors="surrogateescape", newline="") as listing:
        return listing.read()


def image_files(arg: str, visited: set[tuple[int, int]] | None = None,
                problems: list[str] | None = None) -> list[str]:
    """A file as is, the image files under a directory, or the paths listed
    in @LIST, as the command-line program takes them: a directory or list
    without images is an error (OSError); a directory's other files, the
    directories under it that cannot be read and the lines of a list that
    no file name can be are reported on standard error (the last two also
    added to problems).  visited: the directories walked by earlier
    arguments, which are not walked again."""
    problems = [] if problems is None else problems
    if arg.startswith("@"):
        paths = _list_lines(arg[1:], _read_list(arg[1:]), problems)
    elif os.path.isdir(arg):
        skipped = [0]
        paths = list(_walk(arg, set() if visited is None else visited, skipped, problems))
        if skipped[0]:
            print(f"damamba: {arg}: skipped {skipped[0]} file{'' if skipped[0] == 1 else 's'} without an image "
                  "file name extension", file=sys.stderr)
    else:
        return [arg]
    if not paths:
        raise OSError(f"{arg}: no images in the {'list' if arg.startswith('@') else 'directory'}")
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m damamba", description="Classify images with DAMamba.")
    commands = parser.add_subparsers(dest="command", required=True)
    classify = commands.add_parser("classify", help="the most probable classes of images")
    classify.add_argument("-m", "--model", help="safetensors or .pth file (default: the built-in model)")
    classify.add_argument("--ema", action="store_true", help="a .pth checkpoint's 'model_ema'")
    classify.add_argument("-k", "--top", default="5", help="classes per image (default 5)")
    classify.add_argument("-j", "--json", action="store_true", help="one JSON object per line")
    classify.add_argument("-b", "--batch", default="32", help="images per forward pass (default 32)")
    classify.add_argument("-t", "--threads", help="threads of a forward pass")
    classify.add_argument("inputs", nargs="+", metavar="FILE|DIR|@LIST")
    args = parser.parse_args(argv)
    for name, high in OPTION_LIMITS.items():
        value = getattr(args, name)
        if value is not None:
            number = _option_int(value, high)
            if number is None:
                print(_text(f"damamba: --{name} expects an integer from 1 to {high}, got '{value}'"), file=sys.stderr)
                return 2
            setattr(args, name, number)

    try:
        model = Model(args.model, ema=args.ema)
    except (DamambaError, OSError, ValueError) as e:
        print(f"damamba: {e}", file=sys.stderr)
        return 1
    status, paths, visited, problems = 0, [], set(), []
    for arg in args.inputs:
        try:
            paths += image_files(arg, visited, problems)
        except OSError as e:
            print(f"damamba: {e}", file=sys.stderr)
            status = 1
    if problems:
        status = 1
    if model.config.num_classes == 0:  # a segmentation or detection model
        print("damamba: the model has no classification head", file=sys.stderr)
        return 1
    try:
        results = model.classify(paths, args.top, batch=args.batch, threads=args.threads, errors="record")
    except (DamambaError, ValueError) as e:  # a workspace out of memory, a preprocess without a fixed size
        print(f"damamba: {e}", file=sys.stderr)
        return 1
    for result in results:
        if "error" in result:
            print(f"damamba: {result['error']}", file=sys.stderr)
            status = 1
            if not args.json:
                continue
        print(format_result(result, args.json), flush=args.json)
    return status


if __name__ == "__main__":
    # A reader that goes away (| head) ends the run by SIGPIPE, quietly, as
    # it ends the program, instead of a BrokenPipeError traceback.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    sys.exit(main())
