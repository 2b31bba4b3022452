"""python -m damamba classify against the command-line program."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import GOLDEN, SAMPLES, run_cli


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


def test_usage_errors_exit_2() -> None:
    assert run_module("classify", "-k", "0", str(SAMPLES)).returncode == 2
    assert run_module().returncode == 2
