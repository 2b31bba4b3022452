#!/usr/bin/python3
"""serve_bench.py DAMAMBA MODEL VARIANT [BATCH [THREADS [SECONDS [ROUNDS]]]]

Served images per second at saturation against `damamba bench` at the same
batch size, and latency at low load.  MODEL is a model file of the official
VARIANT (F, T, S or B), so that `damamba bench -v VARIANT` runs the same
network.  The server gets one-image requests (binary FP32 tensors, so no
image decoding) from wrk: 2 x BATCH connections keep batches full, one
connection measures latency.  Rounds alternate between the server and
`damamba bench`; the best round of each is reported, since on a shared
machine other work only ever slows a run down."""
import json
import os
import re
import struct
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from serve_util import Server  # noqa: E402

if len(sys.argv) < 4 or len(sys.argv) > 8 or sys.argv[1] in ("-h", "--help"):
    print(__doc__.split("\n\n")[0], file=sys.stdout if len(sys.argv) > 1 else sys.stderr)
    sys.exit(0 if len(sys.argv) > 1 and sys.argv[1] in ("-h", "--help") else 2)
damamba, model, variant = sys.argv[1:4]
batch, threads, seconds, rounds = (int(a) for a in (sys.argv[4:] + ["8", "2", "10", "3"][len(sys.argv[4:]):]))
tmp = tempfile.mkdtemp()


def wrk(port, connections, body_path, header_len):
    script = f"{tmp}/post.lua"
    with open(script, "w") as f:
        f.write(f'wrk.method = "POST"\nlocal f = io.open("{body_path}", "rb")\nwrk.body = f:read("*a")\nf:close()\n'
                f'wrk.headers["Inference-Header-Content-Length"] = "{header_len}"\n'
                'wrk.headers["Content-Type"] = "application/octet-stream"\n')
    out = subprocess.run(["wrk", "-t", "1", "-c", str(connections), "-d", f"{seconds}s", "--timeout", "60s",
                          "--latency", "-s", script,
                          f"http://127.0.0.1:{port}/v2/models/bench/infer"], capture_output=True, text=True).stdout
    if "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(out)

    def ms(p):
        value, unit = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()
        return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]

    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)), ms("50"), ms("99")


def bench(n):
    out = subprocess.run([damamba, "bench", "-v", variant, "-b", str(n), "-t", str(threads), "-n", "5"],
                         capture_output=True, text=True, check=True).stdout
    fields = dict(kv.split("=") for kv in out.strip().splitlines()[-1].split())
    return float(fields["images_per_s"]), float(fields["ms_per_batch"])


server = Server(damamba, ["-m", f"bench={model}", "-b", str(batch), "--max-delay-ms", "5", "-t", str(threads),
                          "--queue", "1024"], f"{tmp}/server.log")
try:
    _, meta = server.json("GET", "/v2/models/bench")
    shape = [1] + meta["inputs"][0]["shape"][1:]
    numel = shape[1] * shape[2] * shape[3]
    header = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": shape,
                                     "parameters": {"binary_data_size": 4 * numel}}],
                         "parameters": {"binary_data_output": True}}).encode()
    body_path = f"{tmp}/body.bin"
    with open(body_path, "wb") as f:
        f.write(header + struct.pack(f"<{numel}f", *((i % 255) / 255.0 - 0.5 for i in range(numel))))
    served, direct, low, single = [], [], [], []
    for r in range(rounds):
        served.append(wrk(server.port, 2 * batch, body_path, len(header)))
        direct.append(bench(batch))
        low.append(wrk(server.port, 1, body_path, len(header)))
        single.append(bench(1))
    best_served = max(s[0] for s in served)
    best_direct = max(d[0] for d in direct)
    print(f"DAMamba-{variant} {shape[2]}x{shape[3]}, batch {batch}, {threads} threads, {rounds} rounds of {seconds} s")
    print(f"served at saturation ({2 * batch} connections): {best_served:.1f} images/s "
          f"(rounds: {', '.join(f'{s[0]:.1f}' for s in served)})")
    print(f"damamba bench -b {batch}: {best_direct:.1f} images/s (rounds: {', '.join(f'{d[0]:.1f}' for d in direct)})")
    print(f"server overhead at saturation: {100 * (1 - best_served / best_direct):.1f}%")
    p50 = min(x[1] for x in low)
    p99 = min(x[2] for x in low)
    print(f"low load (1 connection): p50 {p50:.1f} ms, p99 {p99:.1f} ms; "
          f"damamba bench -b 1: {min(s[1] for s in single):.1f} ms per image")
finally:
    server.stop()
