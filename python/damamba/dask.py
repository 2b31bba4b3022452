"""Classify many images, or extract their features, on a Dask cluster
(``distributed``).

The paths are split into partitions; each partition is one task.  A worker
process loads a model once and keeps it for every later task (a per-process
cache), so a job costs one model load per worker, not per task.  A task
whose worker dies is run again elsewhere by the scheduler, and results are
collected by partition, so nothing is lost or counted twice; written output
is renamed into place whole, so a killed writer leaves no partial file.

    from dask.distributed import Client
    import damamba.dask
    client = Client("tcp://scheduler:8786")
    table = damamba.dask.classify(paths, k=5, client=client)
"""

from __future__ import annotations

import functools
import json
import os
import uuid
from pathlib import Path
from typing import Any, Sequence, Union

import dask
import pandas as pd

from . import Model, PathLike, _checked_count, _checked_threads, format_result

Paths = Union[Sequence[PathLike], "dask.bag.Bag", "dask.dataframe.Series", "dask.dataframe.DataFrame"]


@functools.lru_cache(maxsize=4)
def _cached_model(path: str | None, ema: bool, precision: str) -> Model:
    """This process's copy of a model, loaded on first use."""
    model = Model(path, ema=ema)
    model.precision = precision
    return model


def _run_partition(paths: Any, source: tuple[str | None, bool, str], method: str,
                   options: dict[str, Any]) -> list[dict]:
    """Model.classify or Model.embed over one partition, recording failed files."""
    paths = [os.fsdecode(p) for p in paths]  # bytes too: the rows' files are text
    return getattr(_cached_model(*source), method)(paths, errors="record", **options)


def _json_line(row: dict[str, Any]) -> str:
    if "embedding" in row:
        return json.dumps({"file": row["file"], "embedding": row["embedding"].tolist()})
    return format_result(row, as_json=True)


def _write_partition(rows: list[dict[str, Any]], directory: str, index: int, run: str) -> str:
    """Write one partition's rows as JSON lines, atomically: a temporary
    file of this attempt of this run, renamed to part-NNNNN.jsonl once
    complete."""
    final = os.path.join(directory, f"part-{index:05d}.jsonl")
    temporary = os.path.join(directory, f".part-{index:05d}.jsonl.{run}.{uuid.uuid4().hex}.tmp")
    try:
        with open(temporary, "w", encoding="utf-8") as out:
            out.writelines(_json_line(row) + "\n" for row in rows)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, final)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    return final


def _partitions(paths: Paths, partition_size: int) -> list[Any]:
    """The paths as a list of delayed partitions (lists or pandas Series)."""
    if hasattr(paths, "to_delayed"):  # a dask bag, series or dataframe
        if hasattr(paths, "columns"):
            paths = paths["file"]
        return paths.to_delayed()
    if isinstance(paths, (str, bytes, os.PathLike)):  # one file, as Model.classify takes it
        paths = [paths]
    paths = [os.fsdecode(p) for p in paths]
    return [dask.delayed(paths[i:i + partition_size], pure=True) for i in range(0, len(paths), partition_size)]


def _model_source(model: Model | PathLike | None, ema: bool) -> tuple[str | None, bool, str]:
    """What workers load: a path (None for the built-in model), whether its
    EMA weights, and the precision of its products; a Model is loaded as it
    was, precision included."""
    if isinstance(model, Model):
        if model.path is None and not model.builtin:
            raise ValueError("a model for workers must come from a file: pass its path")
        if ema and not model.ema:
            raise ValueError("ema=True, but the Model was loaded without ema: load it with Model(path, ema=True)")
        return model.path, model.ema, model.precision
    return None if model is None else os.fspath(model), ema, "f32"


def _run(method: str, columns: list[str], paths: Paths, model: Model | PathLike | None, client: Any, ema: bool,
         output: PathLike | None, partition_size: int, options: dict[str, Any]) -> pd.DataFrame | list[str]:
    # Checked here, not first on a worker after the tasks are scheduled.
    _checked_count("partition_size", partition_size)
    for name in ("k", "batch"):
        if name in options:
            _checked_count(name, options[name])
    if options.get("threads") is not None:
        _checked_threads(options["threads"])
    source = _model_source(model, ema)
    # Not pure: the tasks read files, which may change between two calls.
    results = [dask.delayed(_run_partition, pure=False)(part, source, method, options)
               for part in _partitions(paths, partition_size)]
    if output is not None:
        directory = Path(output)
        directory.mkdir(parents=True, exist_ok=True)
        run = uuid.uuid4().hex
        tasks = [dask.delayed(_write_partition, pure=False)(part, os.fspath(directory), i, run)
                 for i, part in enumerate(results)]
        written = _compute(tasks, client)
        for leftover in directory.glob(f".part-*.{run}.*.tmp"):  # this run's attempts whose worker died
            leftover.unlink()
        return written
    rows = [row for part in _compute(results, client) for row in part]
    return pd.DataFrame([{name: row.get(name) for name in columns} for row in rows], columns=columns)


def _compute(tasks: list[Any], client: Any) -> list[Any]:
    if client is None:
        try:
            from distributed import get_client
            client = get_client()
        except (ImportError, ValueError):
            return list(dask.compute(*tasks))
    return client.gather(client.compute(tasks))


def classify(paths: Paths, model: Model | PathLike | None = None, k: int = 5, client: Any = None, *,
             ema: bool = False, output: PathLike | None = None, partition_size: int = 32, batch: int = 32,
             threads: int | None = None) -> pd.DataFrame | list[str]:
    """Classify image files on a cluster.

    paths: a sequence of paths, a dask bag of paths, or a dask series (or a
    dataframe with a column "file") of paths.  model: a file path (every
    worker must be able to read it), a Model loaded from one, or None for
    the built-in model.  client: a distributed.Client; None uses the current
    one (or dask's local scheduler when there is none).  threads: the
    threads of each worker's forward passes (cores per worker is a good
    choice).

    Returns a DataFrame with a row per file in input order: "file", "top"
    (the list of {index, label, prob} that ``damamba classify --json``
    prints) and "error" (None, or why the file could not be read).  With
    output (a directory, created if needed) each partition is written there
    as part-NNNNN.jsonl in the command-line program's JSON lines instead,
    and the list of those files is returned; other files in the directory,
    such as an earlier run's parts, are left alone.
    """
    return _run("classify", ["file", "top", "error"], paths, model, client, ema, output, partition_size,
                dict(k=k, batch=batch, threads=threads))


def embed(paths: Paths, model: Model | PathLike | None = None, client: Any = None, *, ema: bool = False,
          output: PathLike | None = None, partition_size: int = 32, batch: int = 32,
          threads: int | None = None) -> pd.DataFrame | list[str]:
    """Model.embed on a cluster: a DataFrame with "file", "embedding" (the
    features the classification head takes, a float32 array) and "error";
    or, with output, part-NNNNN.jsonl files of {"file", "embedding"}
    objects.  Arguments as for classify()."""
    return _run("embed", ["file", "embedding", "error"], paths, model, client, ema, output, partition_size,
                dict(batch=batch, threads=threads))
