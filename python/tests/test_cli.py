"""python -m damamba classify and Model.offsets against the command-line program."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import pytest

import damamba
from conftest import GOLDEN, SAMPLES, read_safetensors, run_cli


def run_module(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "damamba", *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("options", [["--json"], ["-k", "3"], ["--json", "-b", "4", "-t", "1"]])
def test_classify_prints_what_the_program_prints(cli: str, options: list[str]) -> None:
    expected = run_cli(cli, "classify", "--quiet", *options, str(SAMPLES))
    done = run_module("classify", *options, str(SAMPLES))
    assert done.returncode == 0, done.stderr
    assert done.stdout == expected


def test_classify_reports_a_bad_file(tmp_path) -> None:
    listing = tmp_path / "list.txt"
    listing.write_text(f"{SAMPLES / 'bag.png'}\n{GOLDEN / 'micro.safetensors'}\n")
    done = run_module("classify", "--json", f"@{listing}")
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert len(lines) == 2 and '"label": "Bag"' in lines[0] and '"error": ' in lines[1]
    assert "micro.safetensors" in done.stderr


def test_a_model_without_a_head_or_a_fixed_size_is_reported_as_the_program_reports_it(cli: str, tmp_path) -> None:
    """A segmentation model, and a model whose transform gives no fixed
    input size: one line on standard error, exit 1, no traceback."""
    metadata = {"preprocess": '{"resize": 64, "crop": 0}'}
    no_crop = tmp_path / "no_crop.safetensors"
    no_crop.write_bytes(damamba._safetensors.encode(read_safetensors(GOLDEN / "micro.safetensors")[0], metadata))
    for model in (GOLDEN / "upernet_micro.pth", no_crop):
        args = ["classify", "-m", str(model), str(SAMPLES / "bag.png")]
        done = run_module(*args)
        program = subprocess.run([cli, *args], capture_output=True, text=True, timeout=300)
        assert (done.stdout, done.returncode) == ("", 1), done.stderr
        assert done.stderr == program.stderr and program.returncode == 1
    assert done.stderr == "damamba: preprocess metadata: 'crop' must be a size from 1 to 65536\n"
    # the head is checked before any file is read
    with pytest.raises(damamba.ModelError, match="no classification head"):
        damamba.Model(GOLDEN / "upernet_micro.pth").classify([str(tmp_path / "missing.png")])


def test_usage_errors_exit_2() -> None:
    assert run_module("classify", "-k", "0", str(SAMPLES)).returncode == 2
    assert run_module("classify", "-t", str(damamba.MAX_THREADS + 1), str(SAMPLES)).returncode == 2
    assert run_module().returncode == 2


def test_numeric_options_within_the_programs_limits(cli: str) -> None:
    """--top, --batch and --threads refused as the program refuses them
    (the same message, exit 2); read as it reads them within its limits."""
    image = str(SAMPLES / "bag.png")
    for option, value in (("-k", "0"), ("-k", "100001"), ("-b", "4097"), ("-b", "-3"), ("-t", "1025"),
                          ("-t", "abc"), ("-k", "7 "), ("-b", "1_0"), ("-k", "")):
        done = run_module("classify", option, value, image)
        program = subprocess.run([cli, "classify", option, value, image], capture_output=True, text=True, timeout=300)
        assert (done.stdout, done.stderr, done.returncode) == (program.stdout, program.stderr, 2), (option, value)
    assert done.stderr == "damamba: --top expects an integer from 1 to 100000, got ''\n"
    for options in (["-k", "100000", "-b", "4096"], ["-k", " +3", "-t", "+2"]):
        done = run_module("classify", *options, image)
        assert done.returncode == 0, done.stderr
        assert done.stdout == run_cli(cli, "classify", "--quiet", *options, image), options


def test_directories_as_the_program_walks_them(cli: str, tmp_path) -> None:
    """Each directory once however many links lead to it; a directory
    without images, and a directory's other files, reported."""
    top = tmp_path / "top"
    (top / "sub").mkdir(parents=True)
    (top / "sub" / "bag.png").write_bytes((SAMPLES / "bag.png").read_bytes())
    (top / "sub" / "notes.txt").write_text("not an image")
    (top / "sub" / "loop").symlink_to(top)
    (tmp_path / "empty").mkdir()
    args = ["classify", "--json", str(top), str(tmp_path / "empty")]
    done = run_module(*args)
    program = subprocess.run([cli, *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == program.returncode == 1
    assert done.stdout == program.stdout and len(done.stdout.splitlines()) == 1
    for message in ("top: skipped 1 file without", "empty: no images in the directory"):
        assert message in done.stderr and message in program.stderr


def test_an_unreadable_directory_is_left_out_as_the_program_leaves_it(cli: str) -> None:
    """Reported, exit 1, and the walk goes on past it.  Root reads any
    directory, so as root both run as nobody, in a folder nobody can reach
    (not pytest's, which only its owner can)."""
    top = pathlib.Path(tempfile.mkdtemp())
    for name, sample in (("a", "bag.png"), ("b", "coat.png"), ("c", "dress.png")):
        (top / name).mkdir()
        (top / name / sample).write_bytes((SAMPLES / sample).read_bytes())
        (top / name).chmod(0o755)
    top.chmod(0o755)
    (top / "b").chmod(0)
    as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if os.getuid() == 0 else []
    try:
        args = ["classify", "--json", str(top)]
        done = subprocess.run([*as_nobody, sys.executable, "-m", "damamba", *args], capture_output=True, text=True,
                              timeout=300, env={**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(
                                  damamba.__file__))})
        program = subprocess.run([*as_nobody, cli, *args], capture_output=True, text=True, timeout=300)
    finally:
        (top / "b").chmod(0o755)
        shutil.rmtree(top)
    assert done.returncode == program.returncode == 1, (done.stderr, program.stderr)
    assert done.stdout == program.stdout and len(done.stdout.splitlines()) == 2
    assert "dress.png" in done.stdout
    message = f"{top / 'b'}: cannot read directory: Permission denied"
    assert message in done.stderr and message in program.stderr


def test_odd_names_and_lists_as_the_program_prints_them(cli: str, tmp_path) -> None:
    """Byte for byte: a control character in a name escaped (\\x09 in text,
    \\u0009 in JSON), UTF-8 as it is; a list's line holding a NUL reported
    and skipped, a line of spaces a path like any other (exit 1 both)."""
    folder = tmp_path / "odd"
    folder.mkdir()
    for name in ("tab\t.png", "\u00fc.png"):
        (folder / name).write_bytes((SAMPLES / "bag.png").read_bytes())
    listing = tmp_path / "list.txt"
    listing.write_bytes(f"{SAMPLES / 'bag.png'}\nab\0c.png\n   \r\n\n{SAMPLES / 'coat.png'}\n".encode())
    for args in (["classify", str(folder)], ["classify", "--json", str(folder)], ["classify", "--json", f"@{listing}"]):
        done = run_module(*args)
        program = subprocess.run([cli, *args], capture_output=True, text=True, timeout=300)
        assert done.stdout == program.stdout, args
        assert done.returncode == program.returncode, (args, done.stderr, program.stderr)
    assert "line 2 holds a NUL byte, which no file name can" in done.stderr
    assert done.returncode == 1 and len(done.stdout.splitlines()) == 3  # bag, "   " (an error), coat
    # the list on standard input (@-), and lists that cannot be read, as the program reads and refuses them
    listed = subprocess.run([sys.executable, "-m", "damamba", "classify", "--json", "@-"], input=listing.read_bytes(),
                            capture_output=True, timeout=300)
    assert listed.stdout.decode() == program.stdout and listed.returncode == 1
    for arg in (f"@{tmp_path / 'missing.txt'}", f"@{tmp_path}", "@/dev/zero"):
        done = run_module("classify", arg, str(SAMPLES / "bag.png"))
        program = subprocess.run([cli, "classify", "-q", arg, str(SAMPLES / "bag.png")], capture_output=True, text=True,
                                 timeout=300)
        assert (done.stdout, done.stderr, done.returncode) == (program.stdout, program.stderr, program.returncode)
    # a path no file can have is recorded as such a file's error is
    rows = damamba.Model().classify(["a\0b.png", str(SAMPLES / "bag.png")], errors="record")
    assert "NUL" in rows[0]["error"] and rows[1]["top"][0]["label"] == "Bag"


def test_a_reader_that_goes_away_ends_it_quietly(cli: str, tmp_path) -> None:
    """As the program: SIGPIPE, nothing on standard error."""
    listing = tmp_path / "list.txt"
    # 2,000 results, well over what the pipe and head's read take in, so
    # the writer always meets the closed pipe
    listing.write_text("".join(f"{path}\n" for path in sorted(SAMPLES.glob("*.png"))) * 200)
    for command in ([sys.executable, "-m", "damamba"], [cli]):
        reader = subprocess.Popen(["head", "-c", "1"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        done = subprocess.run([*command, "classify", f"@{listing}"], stdout=reader.stdin, stderr=subprocess.PIPE,
                              text=True, timeout=300)
        reader.stdin.close()
        reader.wait()
        assert done.returncode == -13 and "Traceback" not in done.stderr, (command, done.returncode, done.stderr)


@pytest.mark.parametrize("stage, block", [(0, 0), (2, 1)])
def test_offsets_are_where_the_programs_scan_map_samples(cli: str, tmp_path, stage: int, block: int) -> None:
    """The scan map's point p of group g lies at step * (grid position + offset)."""
    image = SAMPLES / "sneaker.png"
    out = tmp_path / "map.json"
    run_cli(cli, "scanmap", str(image), "-o", str(out), "--json", "--stride", "1", "--group", "all",
            "--stage", str(stage), "--block", str(block))
    scan = json.loads(out.read_text())
    model = damamba.Model()
    offsets = model.offsets(model.preprocess(image)[None], stage, block)[0]
    grid_h, grid_w, groups, _ = offsets.shape
    assert scan["grid"] == [grid_h, grid_w] and len(scan["groups"]) == groups
    for entry in scan["groups"]:
        g = entry["group"]
        points = np.array([(p["x"], p["y"]) for p in entry["points"]])
        index = np.arange(grid_h * grid_w)
        grid = np.stack([index % grid_w, index // grid_w], axis=1)
        expected = scan["step"] * (grid + offsets[:, :, g].reshape(-1, 2))
        np.testing.assert_allclose(points, expected, rtol=1e-6, atol=1e-5)
