"""damamba.dask on a LocalCluster of 2 worker processes on loopback: the
command-line program's results, and nothing lost or duplicated when a
worker is killed in the middle of a job."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter
from typing import Any

import dask.bag
import numpy as np
import pytest
from distributed import Client, LocalCluster

import damamba
import damamba.dask
from conftest import GOLDEN, run_cli, sample_paths


@pytest.fixture(scope="module")
def client():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        yield client


def json_lines(table) -> list[str]:
    return [damamba.format_result({"file": file, "top": top}, as_json=True)
            for file, top in zip(table.file, table.top)]


def test_results_equal_the_programs(client: Client, cli: str) -> None:
    client.run(damamba.dask._cached_model.cache_clear)
    paths = sample_paths() * 7  # partitions of 32, 32 and 6, as the program's batches
    expected = run_cli(cli, "classify", "--json", "--quiet", "-t", "1", *paths).splitlines()
    table = damamba.dask.classify(paths, k=5, client=client, threads=1)
    assert list(table.columns) == ["file", "top", "error"]
    assert list(table.file) == paths and table.error.isna().all()
    assert json_lines(table) == expected
    # Each worker loaded the model once, however many partitions it ran.
    loads = client.run(lambda: damamba.dask._cached_model.cache_info().misses)
    assert sorted(loads.values()) in ([0, 1], [1, 1])


def test_a_models_ema_weights_reach_the_workers(client: Client) -> None:
    paths = sample_paths()
    ema = damamba.Model(GOLDEN / "micro.pth", ema=True)
    table = damamba.dask.classify(paths, model=ema, client=client, k=3)
    expected = ema.classify(paths, k=3)
    assert list(table.top) == [row["top"] for row in expected]
    assert list(table.top) != [row["top"] for row in damamba.Model(GOLDEN / "micro.pth").classify(paths, k=3)]
    with pytest.raises(ValueError, match="loaded without ema"):
        damamba.dask.classify(paths, model=damamba.Model(GOLDEN / "micro.pth"), ema=True, client=client)


def test_a_models_precision_reaches_the_workers(client: Client) -> None:
    """A Model is loaded on the workers as it was: in its precision too."""
    paths = sample_paths()[:3]
    model = damamba.Model(GOLDEN / "micro.pth")
    model.precision = "bf16"
    table = damamba.dask.classify(paths, model=model, client=client, k=3)
    assert list(table.top) == [row["top"] for row in model.classify(paths, k=3)]
    assert list(table.top) != [row["top"] for row in damamba.Model(GOLDEN / "micro.pth").classify(paths, k=3)]


def test_one_path_and_bytes_paths(client: Client, tmp_path) -> None:
    """A single path is one file, as Model.classify takes it, not a
    sequence of characters; bytes paths come back as text, written or not."""
    path = sample_paths()[0]
    table = damamba.dask.classify(path, client=client, k=1)
    assert list(table.file) == [path] and table.error.isna().all()
    table = damamba.dask.classify([os.fsencode(path)], client=client, k=1)
    assert list(table.file) == [path] and table.error.isna().all()
    written = damamba.dask.classify([os.fsencode(path)], client=client, k=1, output=tmp_path / "out")
    assert len(written) == 1 and os.listdir(tmp_path / "out") == ["part-00000.jsonl"]


def test_bags_dataframes_and_failed_files(client: Client) -> None:
    paths = sample_paths()
    bag = dask.bag.from_sequence(paths + ["missing.png"], npartitions=3)
    table = damamba.dask.classify(bag, client=client, k=2)
    assert list(table.file) == paths + ["missing.png"]
    assert [top[0]["label"] for top in table.top[:-1]] == [
        "Ankle boot", "Bag", "Coat", "Dress", "Pullover", "Sandal", "Shirt", "Sneaker", "T-shirt/top", "Trouser"]
    assert table.top.iloc[-1] is None and "missing.png" in table.error.iloc[-1]
    frame = dask.bag.from_sequence(paths, npartitions=2).map(lambda p: {"file": p}).to_dataframe()
    assert list(damamba.dask.classify(frame, client=client).file) == paths


def test_embeddings(client: Client, tmp_path) -> None:
    paths = sample_paths()
    expected = np.stack([row["embedding"] for row in damamba.Model().embed(paths)])
    table = damamba.dask.embed(paths, client=client, partition_size=3)
    assert list(table.file) == paths and table.error.isna().all()
    np.testing.assert_allclose(np.stack(table.embedding), expected, rtol=0, atol=1e-5 * np.abs(expected).max())
    files = damamba.dask.embed(paths, client=client, partition_size=3, output=tmp_path)
    rows = [json.loads(line) for f in files for line in open(f, encoding="utf-8")]
    assert [row["file"] for row in rows] == paths
    np.testing.assert_array_equal(np.array([row["embedding"] for row in rows], dtype=np.float32),
                                  np.stack(table.embedding))


def test_bad_counts_are_refused_before_scheduling(tmp_path) -> None:
    """No client is needed: the arguments are refused before any task."""
    paths = sample_paths()
    for options, message in [({"partition_size": 0}, "partition_size must be an integer of at least 1, got 0"),
                             ({"batch": -1}, "batch must be an integer of at least 1, got -1"),
                             ({"k": 0}, "k must be an integer of at least 1, got 0"),
                             ({"threads": damamba.MAX_THREADS + 1}, "threads must be an integer from 0 to")]:
        with pytest.raises(ValueError, match=message):
            damamba.dask.classify(paths, output=tmp_path, **options)
    with pytest.raises(ValueError, match="batch must be an integer of at least 1"):
        damamba.dask.embed(paths, batch=0, output=tmp_path)
    assert list(tmp_path.iterdir()) == []


def scheduler_progress(dask_scheduler: Any) -> tuple[int, list[str]]:
    """Partitions finished, and the workers running one."""
    tasks = [ts for key, ts in dask_scheduler.tasks.items() if "_run_partition" in str(key)]
    busy = [ts.processing_on.address for ts in tasks if ts.state == "processing" and ts.processing_on]
    return sum(ts.state == "memory" for ts in tasks), busy


@pytest.mark.parametrize("written", [False, True], ids=["dataframe", "jsonl"])
def test_a_killed_worker_loses_and_duplicates_nothing(client: Client, cli: str, tmp_path, written: bool) -> None:
    model = str(GOLDEN / "damamba_f.safetensors")  # 224 x 224: tasks long enough to kill one
    unique = sample_paths()
    once = run_cli(cli, "classify", "-m", model, "--json", "--quiet", "-t", "1", "-b", "2", *unique).splitlines()
    paths, expected = unique * 6, once * 6  # partitions of 2: the same pairs as the program's batches
    output = tmp_path / "out" if written else None
    outcome: dict[str, Any] = {}

    def job() -> None:
        try:
            outcome["result"] = damamba.dask.classify(paths, model, client=client, output=output,
                                                      partition_size=2, batch=2, threads=1)
        except BaseException as e:  # re-raised by the test
            outcome["error"] = e

    pids = client.run(os.getpid)
    runner = threading.Thread(target=job)
    runner.start()
    deadline = time.monotonic() + 120
    while True:
        finished, busy = client.run_on_scheduler(scheduler_progress)
        if finished >= 2 and busy:
            break
        assert runner.is_alive() and time.monotonic() < deadline, "the job ended before a worker could be killed"
        time.sleep(0.02)
    victim = Counter(busy).most_common(1)[0][0]
    os.kill(pids[victim], signal.SIGKILL)
    runner.join(timeout=240)
    assert not runner.is_alive()
    if "error" in outcome:
        raise outcome["error"]
    assert victim not in client.scheduler_info()["workers"]  # it did die mid-job

    if written:
        files = outcome["result"]
        assert files == [str(output / f"part-{i:05d}.jsonl") for i in range(len(paths) // 2)]
        assert sorted(os.listdir(output)) == sorted(os.path.basename(f) for f in files)
        lines = [line for f in files for line in open(f, encoding="utf-8").read().splitlines()]
    else:
        table = outcome["result"]
        assert list(table.file) == paths
        lines = json_lines(table)
    assert lines == expected
