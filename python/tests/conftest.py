"""Shared test data: the repository's golden vectors and sample images, the
command-line program to compare with, and an independent safetensors reader."""

from __future__ import annotations

import json
import os
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "golden"
SAMPLES = REPO / "data" / "samples"

_DTYPES = {"F32": "<f4", "F64": "<f8", "F16": "<f2", "I64": "<i8", "U8": "u1"}


def read_safetensors(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The tensors and metadata of a safetensors file."""
    data = path.read_bytes()
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + size])
    metadata = header.pop("__metadata__", {})
    tensors = {}
    for name, entry in header.items():
        start, end = entry["data_offsets"]
        raw = data[8 + size + start:8 + size + end]
        tensors[name] = np.frombuffer(raw, dtype=_DTYPES[entry["dtype"]]).reshape(entry["shape"])
    return tensors, metadata


def sample_paths() -> list[str]:
    return sorted(str(p) for p in SAMPLES.glob("*.png"))


@pytest.fixture(scope="session")
def cli() -> str:
    """The damamba program of the native build (DAMAMBA_CLI names another)."""
    path = os.environ.get("DAMAMBA_CLI", str(REPO / "build" / "tools" / "damamba"))
    if not os.access(path, os.X_OK):
        raise FileNotFoundError(f"{path}: build the command-line program first (ninja -C build) or set DAMAMBA_CLI")
    return path


def run_cli(cli: str, *args: str) -> str:
    """The program's standard output; fails the test on a non-zero exit."""
    done = subprocess.run([cli, *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout
