"""Images per second of damamba.dask.classify on a LocalCluster of 1, 2, ...
worker processes (one thread each), over the bundled samples repeated.

    build-python/venv/bin/python bench/dask_throughput.py [--model M] [--images N]

Each configuration first classifies a few images on every worker (the model
load), then times --runs passes over all images and keeps the fastest, since
other work on the machine only ever slows a run down.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from distributed import Client, LocalCluster

import damamba.dask

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "tests/golden/damamba_f.safetensors"),
                        help="model file (default: DAMamba-F, 224 x 224 inputs); 'builtin' for the built-in one")
    parser.add_argument("--images", type=int, default=160)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--partition-size", type=int, default=8)
    args = parser.parse_args()
    model = None if args.model == "builtin" else args.model
    samples = sorted(str(p) for p in (ROOT / "data/samples").glob("*.png"))
    paths = (samples * (args.images // len(samples) + 1))[:args.images]
    for workers in args.workers:
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                          dashboard_address=":0") as cluster, Client(cluster) as client:
            options = dict(client=client, threads=1, partition_size=args.partition_size, batch=args.partition_size)
            damamba.dask.classify(paths[:workers * args.partition_size], model, **options)
            times = []
            for _ in range(args.runs):
                start = time.perf_counter()
                damamba.dask.classify(paths, model, **options)
                times.append(time.perf_counter() - start)
            best = min(times)
            print(f"workers={workers} images={len(paths)} best_s={best:.2f} images_per_s={len(paths) / best:.1f}",
                  flush=True)


if __name__ == "__main__":
    main()
