#!/usr/bin/python3
"""serve_test.py DAMAMBA SAMPLES_DIR MICRO_MODEL RGB_IMAGE - `damamba serve`
end to end on loopback: every endpoint, error and limit; results against
`damamba classify` on the same images and `damamba run` on the same tensors;
dynamic batching against each request alone; draining on SIGTERM."""
import base64
import http.client
import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve_util import (Server, binary_request, check, finish, kill_quietly, max_abs_diff,  # noqa: E402
                        read_safetensors, split_binary_response, top_k, write_safetensors)

damamba, samples, micro_model, rgb_image = sys.argv[1:5]
tmp = tempfile.mkdtemp()
FMNIST = "/v2/models/fmnist"


def infer_json(n, data, name="input", datatype="FP32", shape=None, outputs=None):
    body = {"id": "r1", "inputs": [{"name": name, "datatype": datatype,
                                    "shape": shape or [n, 1, 28, 28], "data": data}]}
    if outputs is not None:
        body["outputs"] = outputs
    return json.dumps(body)


def classify_cli(model_args, paths, k):
    """{path: [(index, prob)]} from `damamba classify --json`."""
    out = subprocess.run([damamba, "classify", "--json", "-k", str(k)] + model_args + paths,
                         capture_output=True, check=True, text=True).stdout
    result = {}
    for line in out.splitlines():
        rec = json.loads(line)
        result[rec["file"]] = [(t["index"], t["prob"]) for t in rec["top"]]
    return result


def same_top(got, want, what, tol=1e-5):
    check([i for i, _ in got] == [i for i, _ in want], f"{what}: top classes {got} != {want}")
    check(all(abs(a - b) <= tol for (_, a), (_, b) in zip(got, want)), f"{what}: probabilities {got} != {want}")


sample_paths = sorted(os.path.join(samples, f) for f in os.listdir(samples) if f.endswith(".png"))
rng = random.Random(14)
tensors = [[rng.uniform(-2, 2) for _ in range(784)] for _ in range(5)]

# `damamba run` on the same five tensors: the reference for FP32 inputs.
write_safetensors(f"{tmp}/in.safetensors", {"input": ([5, 1, 28, 28], sum(tensors, []))})
subprocess.run([damamba, "run", "-i", f"{tmp}/in.safetensors", "-o", f"{tmp}/out.safetensors"], check=True)
ref = read_safetensors(f"{tmp}/out.safetensors")
ref_logits = [ref["logits"][1][10 * i:10 * i + 10] for i in range(5)]
ref_scale = max(abs(x) for x in ref["logits"][1])

# Usage and start-up errors: a clear message and exit status, no server.
for args, want_rc, want_text in [(["--help"], 0, "usage: damamba serve"),
                                 (["--port", "70000"], 2, "--port expects an integer from 0 to 65535"),
                                 (["--dtype", "f8"], 2, "--dtype expects f32, bf16 or f16, got 'f8'"),
                                 (["-m", f"{tmp}/missing.safetensors"], 1, "missing.safetensors"),
                                 (["-m", "a b=" + micro_model], 2, "model name 'a b' is not usable"),
                                 (["-m", f"x={micro_model}", "-m", f"x={micro_model}"], 2, "model name 'x' is taken"),
                                 # names are checked before any model loads
                                 (["-m", f"{tmp}/missing.safetensors", "-m", "a/b=x"], 2, "'a/b' is not usable"),
                                 (["--host", "256.1.1.1", "--port", "0"], 1, "256.1.1.1")]:
    p = subprocess.run([damamba, "serve"] + args, capture_output=True, text=True, timeout=60)
    check(p.returncode == want_rc and want_text in p.stdout + p.stderr,
          f"serve {' '.join(args)}: exit {p.returncode}, {(p.stdout + p.stderr)[:200]!r}")

main = limits = None
try:
    main = Server(damamba, ["-m", f"fmnist={os.path.dirname(samples)}/damamba_fmnist.safetensors",
                            "-m", f"micro={micro_model}", "-b", "4", "--max-delay-ms", "30", "-t", "2"],
                  f"{tmp}/main.log")

    # ---------------------------------------------------- metadata and health
    status, body = main.json("GET", "/v2/health/live")
    check(status == 200 and body == {"live": True}, f"live: {status} {body}")
    status, body = main.json("GET", "/v2/health/ready")
    check(status == 200 and body == {"ready": True}, f"ready: {status} {body}")
    status, body = main.json("GET", "/v2")
    check(status == 200 and body["models"] == ["fmnist", "micro"] and "binary_tensor_data" in body["extensions"],
          f"server metadata: {body}")
    status, body = main.json("GET", FMNIST)
    check(status == 200 and body["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 28, 28]}],
          f"fmnist inputs: {body}")
    check([o["name"] for o in body["outputs"]] == ["logits", "stage0", "stage1", "stage2", "stage3"] and
          body["outputs"][0]["shape"] == [-1, 10], f"fmnist outputs: {body['outputs']}")
    check(body["outputs"][1]["shape"] == [-1] + ref["stage0"][0][1:], f"stage0 shape {body['outputs'][1]}")
    check(body["parameters"]["classes"][7] == "Sneaker", "fmnist class names")
    status, body = main.json("GET", "/v2/models/micro")
    check(status == 200 and body["inputs"][0]["shape"] == [-1, 3, 224, 224], f"micro metadata: {body}")
    status, body = main.json("GET", FMNIST + "/ready")
    check(status == 200 and body == {"name": "fmnist", "ready": True}, f"model ready: {body}")
    status, body = main.json("GET", FMNIST + "/versions/1/ready")
    check(status == 200 and body["ready"], f"version 1 ready: {body}")
    status, body = main.json("GET", FMNIST + "/versions/1")
    check(status == 200 and body["versions"] == ["1"], f"version 1 metadata: {body}")

    # ------------------------------------------------ /v1/classify vs classify
    cli = classify_cli(["-m", f"{os.path.dirname(samples)}/damamba_fmnist.safetensors"], sample_paths, 5)
    for path in sample_paths:
        status, body = main.json("POST", f"/v1/classify?file={os.path.basename(path)}",
                                 open(path, "rb").read())
        check(status == 200 and body["file"] == os.path.basename(path), f"classify {path}: {status} {body}")
        same_top([(t["index"], t["prob"]) for t in body["top"]], cli[path], f"/v1/classify {path}")
        check(body["top"][0]["label"].split("/")[0].lower().replace(" ", "-") ==
              os.path.basename(path)[:-4], f"{path} labelled {body['top'][0]['label']}")
    cli_rgb = classify_cli(["-m", micro_model], [rgb_image], 3)
    status, body = main.json("POST", "/v1/classify?model=micro&top=3", open(rgb_image, "rb").read())
    check(status == 200 and len(body["top"]) == 3, f"micro classify: {status} {body}")
    same_top([(t["index"], t["prob"]) for t in body["top"]], cli_rgb[rgb_image], "/v1/classify?model=micro")

    # ----------------------------------------- v2 infer, FP32 vs damamba run
    status, body = main.json("POST", FMNIST + "/infer", infer_json(5, sum(tensors, [])))
    check(status == 200 and body["id"] == "r1" and body["model_name"] == "fmnist", f"infer: {status}")
    out = body["outputs"][0]
    check(out["name"] == "logits" and out["shape"] == [5, 10], f"logits shape {out['shape']}")
    diff = max_abs_diff(out["data"], ref["logits"][1])
    print(f"FP32 JSON infer vs damamba run: max |logit diff| {diff:.3g} (largest logit {ref_scale:.3g})")
    check(diff <= 1e-5 * ref_scale, f"FP32 logits differ from damamba run by {diff}")
    # Finite inputs the model overflows: logits it has none for are null.
    status, body = main.json("POST", FMNIST + "/infer", infer_json(1, [3e38] * 784))
    check(status == 200 and body["outputs"][0]["data"] == [None] * 10, f"overflowing input: {status} {body}")
    # Nested data arrays are accepted as well as flat ones.
    nested = [[[tensors[0][r * 28:(r + 1) * 28] for r in range(28)]]]
    status, body = main.json("POST", FMNIST + "/infer", infer_json(1, nested))
    check(status == 200 and max_abs_diff(body["outputs"][0]["data"], ref_logits[0]) <= 1e-5 * ref_scale,
          f"nested data: {status}")

    # Binary tensors in and out, with every stage output.
    header = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [5, 1, 28, 28],
                          "parameters": {"binary_data_size": 5 * 784 * 4}}],
              "outputs": [{"name": n, "parameters": {"binary_data": True}}
                          for n in ["logits", "stage0", "stage1", "stage2", "stage3"]]}
    body, headers = binary_request(header, [struct.pack("<3920f", *sum(tensors, []))])
    status, rh, data = main.request("POST", FMNIST + "/versions/1/infer", body, headers)
    check(status == 200 and "inference-header-content-length" in rh, f"binary infer: {status} {data[:200]}")
    if status == 200:
        meta, blob = split_binary_response(rh, data)
        at = 0
        for o in meta["outputs"]:
            size = o["parameters"]["binary_data_size"]
            got = list(struct.unpack(f"<{size // 4}f", blob[at:at + size]))
            at += size
            want_shape, want = ref[o["name"]]
            check(o["shape"] == want_shape, f"{o['name']} shape {o['shape']} != {want_shape}")
            scale = max(abs(x) for x in want)
            d = max_abs_diff(got, want)
            print(f"binary {o['name']}: max |diff| vs damamba run {d:.3g} (largest {scale:.3g})")
            check(d <= 1e-5 * scale, f"binary {o['name']} differs by {d}")
        check(at == len(blob), "binary response length")
    # A stage output in JSON, asked for by name.
    status, body = main.json("POST", FMNIST + "/infer", infer_json(1, tensors[0], outputs=[{"name": "stage3"}]))
    check(status == 200 and [o["name"] for o in body["outputs"]] == ["stage3"] and
          max_abs_diff(body["outputs"][0]["data"], ref["stage3"][1][:len(body["outputs"][0]["data"])]) <=
          1e-5 * max(abs(x) for x in ref["stage3"][1]), "stage3 as JSON")

    # ------------------------------------------------- BYTES: encoded images
    images = [open(p, "rb").read() for p in sample_paths[:4]]
    status, body = main.json("POST", FMNIST + "/infer", json.dumps(
        {"inputs": [{"name": "input", "datatype": "BYTES", "shape": [4],
                     "data": [base64.b64encode(b).decode() for b in images]}]}))
    check(status == 200 and body["outputs"][0]["shape"] == [4, 10], f"BYTES JSON: {status} {body}")
    for i, p in enumerate(sample_paths[:4]):
        same_top(top_k(body["outputs"][0]["data"][10 * i:10 * i + 10], 5), cli[p], f"BYTES image {p}")
    body, headers = binary_request(
        {"inputs": [{"name": "input", "datatype": "BYTES", "shape": [4, 1],
                     "parameters": {"binary_data_size": sum(4 + len(b) for b in images)}}],
         "parameters": {"binary_data_output": True}},
        [struct.pack("<I", len(b)) + b for b in images])
    status, rh, data = main.request("POST", FMNIST + "/infer", body, headers)
    check(status == 200, f"BYTES binary: {status} {data[:200]}")
    if status == 200:
        meta, blob = split_binary_response(rh, data)
        logits = list(struct.unpack("<40f", blob))
        for i, p in enumerate(sample_paths[:4]):
            same_top(top_k(logits[10 * i:10 * i + 10], 5), cli[p], f"binary BYTES image {p}")

    # --------------------------------------------------------- bad requests
    def bad(url, body, want_status, want_text, headers=None, method="POST"):
        status, _, data = main.request(method, url, body, headers)
        try:
            message = json.loads(data)["error"]
        except (ValueError, KeyError):
            message = data.decode(errors="replace")
        check(status == want_status and want_text in message,
              f"{method} {url}: got {status} '{message}', want {want_status} '{want_text}'")

    bad(FMNIST + "/infer", "{\"inputs\": [", 400, "malformed JSON")
    bad(FMNIST + "/infer", "[]", 400, "must be a JSON object")
    bad(FMNIST + "/infer", "{}", 400, "'inputs' must be an array")
    bad(FMNIST + "/infer", infer_json(1, [0] * 784, datatype="INT8"), 400, "datatype FP32 or BYTES")
    bad(FMNIST + "/infer", infer_json(1, [0] * 784, shape=[1, 3, 28, 28]), 400, "shape [N, 1, 28, 28]")
    bad(FMNIST + "/infer", infer_json(1, [0] * 783), 400, "784 numbers")
    bad(FMNIST + "/infer", infer_json(1, [0] * 783 + ["x"]), 400, "784 numbers")
    bad(FMNIST + "/infer", infer_json(1, [0] * 784, name="pixels"), 400, "one input, 'input'")
    # numbers beyond float32, or outside JSON's grammar
    bad(FMNIST + "/infer", infer_json(1, [0] * 783 + [1e39]), 400, "element 783 is inf, not a finite float32")
    bad(FMNIST + "/infer", infer_json(1, [0] * 784).replace("0, 0", "01, 0", 1), 400, "malformed JSON")
    bad(FMNIST + "/infer", infer_json(1, [0] * 784, outputs=[{"name": "probs"}]), 400, "no output 'probs'")
    bad(FMNIST + "/infer", json.dumps({"inputs": [{"name": "input", "datatype": "BYTES", "shape": [1],
                                                   "data": ["not base64!"]}]}), 400, "not a base64 string")
    bad(FMNIST + "/infer", json.dumps({"inputs": [{"name": "input", "datatype": "BYTES", "shape": [1],
                                                   "data": [base64.b64encode(images[0][:100]).decode()]}]}),
        400, "image 0 of input 'input'")
    bad("/v1/classify", b"GIF89a garbage", 400, "image")
    bad("/v1/classify?top=x", images[0], 400, "top must be a positive integer")
    bad("/v1/classify?model=nope", images[0], 404, "no model 'nope'")
    body, headers = binary_request({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 28, 28],
                                                "parameters": {"binary_data_size": 3136}}]}, [b"\0" * 3000])
    bad(FMNIST + "/infer", body, 400, "binary_data_size is 3136", headers)
    body, headers = binary_request({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 28, 28],
                                                "parameters": {"binary_data_size": 3136}}]},
                                   [struct.pack("<784f", *([0.0] * 10 + [float("nan")] + [0.0] * 773))])
    bad(FMNIST + "/infer", body, 400, "element 10 is nan, not a finite float32", headers)
    bad(FMNIST + "/infer", b"{}", 400, "Inference-Header-Content-Length is 99",
        {"Inference-Header-Content-Length": "99"})
    body, _ = binary_request({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 28, 28],
                                          "parameters": {"binary_data_size": 3136}}]}, [])
    bad(FMNIST + "/infer", body, 400, "binary_data_size needs the Inference-Header-Content-Length header")
    for value in ("x", "-5", "+5"):
        bad(FMNIST + "/infer", b"{}", 400, "Inference-Header-Content-Length must be",
            {"Inference-Header-Content-Length": value})
    bad("/v2/models/nope/infer", "{}", 404, "no model 'nope'")
    bad("/v2/models/nope", None, 404, "no model 'nope'", method="GET")
    bad("/v3/anything", None, 404, "no endpoint GET /v3/anything", method="GET")
    # %00 is not unescaped: a NUL would cut the path short to a route
    bad("/v2/health/live%00junk", None, 404, "no endpoint GET /v2/health/live%00junk", method="GET")
    bad(FMNIST + "/versions/2/infer", "{}", 404, "no endpoint POST /v2/models/fmnist/versions/2/infer")
    bad(FMNIST + "/infer", None, 405, "takes POST", method="GET")
    bad("/metrics", "x", 405, "takes GET")
    status, _, _ = main.request("GET", "/v2/health/live")
    check(status == 200, "server answers after the bad requests")
    status, _, data = main.request("GET", "/v2/health/%6Cive")  # other escapes are unescaped
    check(status == 200 and data == b'{"live": true}\n', f"an escaped path: {status} {data}")
    # An unescaped newline cannot end the request's log line and forge another.
    status, _, _ = main.request("GET", "/v2/x%0a2026-01-01T00:00:00Z%2010.0.0.1%20%22GET%20/admin%22%20200%201%200.1")
    check(status == 404, f"a path with a newline: {status}")
    escaped = '"GET /v2/x\\x0a2026-01-01T00:00:00Z 10.0.0.1 \\x22GET /admin\\x22 200 1 0.1" 404 '
    deadline = time.time() + 5  # the line is written once the answer has gone
    while escaped not in main.log_text() and time.time() < deadline:
        time.sleep(0.05)
    check(escaped in main.log_text() and not any(l.startswith("2026-01-01T") for l in main.log_text().splitlines()),
          "a newline in the path forged a log line")
    # Clients that close in the middle of their bodies are seen gone at once
    # (code 0), not held until --timeout (30 s here).
    unanswered = '"POST /v1/classify" 0 0 '
    before = main.log_text().count(unanswered)
    for _ in range(20):
        s = socket.create_connection(("127.0.0.1", main.port), timeout=10)
        s.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nabc")
        s.close()
    deadline = time.time() + 5
    while main.log_text().count(unanswered) - before < 20 and time.time() < deadline:
        time.sleep(0.05)
    gone = main.log_text().count(unanswered) - before
    check(gone == 20, f"{gone} of 20 clients gone in the middle of a body were seen within 5 s")

    # ------------------------------------ dynamic batching == each one alone
    alone = {}
    for i in range(5):
        status, body = main.json("POST", FMNIST + "/infer", infer_json(1, tensors[i]))
        alone[i] = body["outputs"][0]["data"]
    before = main.metrics()
    results = {}

    def client(i):
        # Requests of 1 to 3 images, so batches also split requests.
        idx = [(i + j) % 5 for j in range(1 + i % 3)]
        status, body = main.json("POST", FMNIST + "/infer", infer_json(len(idx), sum((tensors[j] for j in idx), [])))
        results[i] = (idx, status, body)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    after = main.metrics()
    worst = 0.0
    for i, (idx, status, body) in results.items():
        check(status == 200, f"concurrent request {i}: {status}")
        if status != 200:
            continue
        data = body["outputs"][0]["data"]
        for k, j in enumerate(idx):
            got, want = top_k(data[10 * k:10 * k + 10], 10), top_k(alone[j], 10)
            check([a for a, _ in got] == [a for a, _ in want], f"batched request {i} image {k}: top-k differs")
            worst = max(worst, max(abs(a - b) for (_, a), (_, b) in zip(got, want)))
    print(f"batched vs alone: largest probability difference {worst:.3g}")
    check(worst <= 1e-5, f"batched probabilities differ from alone by {worst}")
    key = 'damamba_batch_size_bucket{model="fmnist",le="1"}'
    count = 'damamba_batch_size_count{model="fmnist"}'
    batches = after[count] - before[count]
    singles = after[key] - before[key]
    run = after['damamba_images_total{model="fmnist"}'] - before['damamba_images_total{model="fmnist"}']
    print(f"12 concurrent requests, {run:.0f} images: {batches:.0f} forward passes, {singles:.0f} of one image")
    check(run == sum(len(r[0]) for r in results.values()), f"images_total grew by {run}")
    check(batches < run, "concurrent requests were not batched")
    check(after['damamba_batch_size_bucket{model="fmnist",le="4"}'] == after[count], "a batch over -b 4")

    # A request much larger than the batch does not hold back one that
    # arrives after it: passes take requests that fit whole first.  The
    # small request goes in once the large one is queued, and is answered
    # while most of the large one's images still wait (first in, first out
    # answered it after them all).
    big_n = 3000
    big_header = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [big_n, 1, 28, 28],
                              "parameters": {"binary_data_size": big_n * 784 * 4}}]}
    big_body, big_headers = binary_request(big_header, [struct.pack("<784f", *tensors[0]) * big_n])
    done = {}

    def big_client():
        done["big"] = main.request("POST", FMNIST + "/infer", big_body, big_headers)[0]

    big = threading.Thread(target=big_client)
    big.start()
    deadline = time.monotonic() + 60
    while main.metrics().get('damamba_queue_images{model="fmnist"}', 0) == 0 and big.is_alive() and \
            time.monotonic() < deadline:
        time.sleep(0.002)
    status, body = main.json("POST", FMNIST + "/infer", infer_json(1, tensors[1]))
    waiting = main.metrics().get('damamba_queue_images{model="fmnist"}', 0)
    big.join()
    check(status == 200 and done["big"] == 200, f"large and small requests: {status}, {done}")
    print(f"a small request answered while {waiting:.0f} of a large one's {big_n} images waited")
    check(waiting > 0, "a request queued behind a larger one waited for all of it")
    check(status == 200 and max_abs_diff(body["outputs"][0]["data"], alone[1]) <= 1e-5,
          "the small request beside a large one differs from alone")

    # A response the client does not take whole (it reads a few bytes,
    # then resets the connection) is logged and counted as none, code 0.
    cut_key = 'damamba_requests_total{endpoint="infer",code="0"}'
    cut_before = main.metrics().get(cut_key, 0)
    cut_body = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [500, 1, 28, 28],
                                       "data": [0.5] * (500 * 784)}],
                           "outputs": [{"name": f"stage{k}"} for k in range(4)]}).encode()
    s = socket.create_connection(("127.0.0.1", main.port), timeout=60)
    s.sendall(f"POST {FMNIST}/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {len(cut_body)}\r\n\r\n".encode() +
              cut_body)
    check(s.recv(12) == b"HTTP/1.1 200", "the response to be cut off")
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
    deadline = time.time() + 30
    while main.metrics().get(cut_key, 0) == cut_before and time.time() < deadline:
        time.sleep(0.05)
    check(main.metrics().get(cut_key, 0) == cut_before + 1, "a response cut off was not counted as code 0")
    check(f'"POST {FMNIST}/infer" 0 0 ' in main.log_text(), "a response cut off was not logged as code 0")

    # -------------------------------------------------------------- metrics
    m = main.metrics()
    check(m.get('damamba_requests_total{endpoint="classify",code="200"}') == 11, "classify 200 count")
    check(m.get('damamba_requests_total{endpoint="infer",code="400"}', 0) >= 12, "infer 400 count")
    check(m.get('damamba_requests_total{endpoint="unknown",code="404"}') == 4, "unknown 404 count")
    check(m.get('damamba_requests_total{endpoint="health",code="200"}', 0) >= 3, "health count")
    check(m.get("damamba_request_duration_seconds_count", 0) >= 50, "latency histogram count")
    check(m.get('damamba_queue_requests{model="fmnist"}') == 0, "queue depth gauge")
    check('damamba_images_per_second{model="fmnist"}' in m, "images per second gauge")
    check(m.get('damamba_images_total{model="micro"}') == 1, "micro images_total")

    # ------------------------------------------------- SIGTERM drains, exit 0
    slow = {}
    slow_body = infer_json(256, sum(tensors, []) * 51 + tensors[0])
    images_key = 'damamba_images_total{model="fmnist"}'
    infer_ok_key = 'damamba_requests_total{endpoint="infer",code="200"}'
    before_slow = main.metrics()
    images_before = before_slow[images_key]

    def slow_request():
        try:
            slow["r"] = main.json("POST", FMNIST + "/infer", slow_body)
        except OSError as e:
            slow["r"] = (str(e),)

    t = threading.Thread(target=slow_request)
    t.start()
    # A keep-alive connection opened before the stop.
    kept = http.client.HTTPConnection("127.0.0.1", main.port, timeout=30)
    kept.request("GET", "/v2/health/ready")
    kept.getresponse().read()
    # SIGTERM once the worker has started on it.
    deadline = time.time() + 30
    while (last := main.metrics())[images_key] == images_before and time.time() < deadline:
        time.sleep(0.01)
    main.proc.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    # While draining, new connections are refused (checked only if the
    # request is still in flight, as the check needs it).
    try:
        socket.create_connection(("127.0.0.1", main.port), timeout=2).close()
        check(not t.is_alive(), "a new connection was accepted while draining")
    except OSError:
        print("draining: new connection refused" + (" while the request was in flight" if t.is_alive() else ""))
    # On a connection already open, ready turns false and the connection closes.
    # (Only while the request is in flight: the server exits once it is done.)
    in_flight = t.is_alive()
    if in_flight:
        try:
            kept.request("GET", "/v2/health/ready")
            resp = kept.getresponse()
            status, body = resp.status, resp.read()
        except (OSError, http.client.HTTPException):
            # The request ended between the two looks and the server closed
            # the connection unanswered on its way out: nothing to check.
            status, in_flight = None, False
            print("draining: the request ended before ready could be asked")
        if status is not None:
            check(status == 503 and json.loads(body) == {"ready": False} and
                  resp.getheader("Connection", "").lower() == "close", f"ready while draining: {status} {body}")
            print("draining: ready is false on an open connection")
    kept.close()
    t.join()
    rc = main.stop()
    check(rc == 0, f"server exited {rc} after SIGTERM")
    check(slow.get("r", (0,))[0] == 200, f"request in flight at SIGTERM: {slow.get('r', (None,))[0]}")
    log = main.log_text()
    lines = [l for l in log.splitlines() if '" ' in l and l[:4].isdigit()]
    # Every request counted before the last /metrics, that one, the slow one
    # unless it was done and counted by then (a fast machine runs all its
    # batches between two looks) and the ready check while draining.
    slow_counted = last.get(infer_ok_key, 0) > before_slow.get(infer_ok_key, 0)
    want = int(last["damamba_request_duration_seconds_count"]) + 1 + (not slow_counted) + in_flight
    if slow_counted:
        print("SIGTERM: the slow request was already done")
    check(len(lines) == want, f"{len(lines)} log lines, not {want}")
    check(any('"POST /v1/classify?' in l or '"POST /v1/classify"' in l for l in lines), "log names the URL")
    try:
        socket.create_connection(("127.0.0.1", main.port), timeout=2).close()
        check(False, "still accepting connections after exit")
    except OSError:
        pass

    # ------------------------- a second SIGTERM: stop now, 503 what was not run
    # Three requests of 2000 images, one at a time: seconds of work.  A
    # second signal ends the 30 s drain at once: the batch running ends,
    # every request gets an answer (200 if it ran whole, else 503), and the
    # server exits 0 well before the drain's limit.
    hurry = Server(damamba, ["-b", "1", "-t", "1", "--max-delay-ms", "0"], f"{tmp}/hurry.log")
    # binary, so that each is read and parsed in a moment, even under the
    # sanitizers: a request still arriving when the server stops is closed
    big_body, big_headers = binary_request(
        {"inputs": [{"name": "input", "datatype": "FP32", "shape": [2000, 1, 28, 28],
                     "parameters": {"binary_data_size": 2000 * 784 * 4}}]},
        [struct.pack(f"<{5 * 784}f", *sum(tensors, [])) * 400])
    answers = [None] * 3

    def big_request(i):
        try:
            answers[i] = hurry.request("POST", "/v2/models/damamba_fmnist/infer", big_body, big_headers,
                                       timeout=60)[::2]
        except (OSError, http.client.HTTPException) as e:
            answers[i] = (repr(e), b"")

    threads = [threading.Thread(target=big_request, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    deadline = time.time() + 30
    while hurry.metrics()['damamba_images_total{model="damamba_fmnist"}'] == 0 and time.time() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    hurry.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    hurry.proc.send_signal(signal.SIGTERM)
    rc = hurry.stop()
    took = time.monotonic() - started
    for thread in threads:
        thread.join()
    check(rc == 0, f"server exited {rc} after two SIGTERMs")
    check(took < 10, f"two SIGTERMs took {took:.1f} s to stop the server")
    statuses = sorted(str(a[0]) for a in answers)
    check(all(a[0] in (200, 503) for a in answers) and 503 in [a[0] for a in answers],
          f"requests cut short by the stop: {statuses}")
    for status, body in answers:
        if status == 503:
            check(b"the server is shutting down" in body, f"503 body: {body[:200]}")
    # The request whose images were running ran whole or was answered unrun;
    # the others may not have been queued yet when the stop came.
    check(any(a[0] == 200 or b"the request was not run" in a[1] for a in answers),
          f"the request that was running: {answers}")
    print(f"two SIGTERMs: stopped in {took:.2f} s, answers {statuses}")

    # ---------------------------------------------------------------- limits
    limits = Server(damamba, ["-b", "1", "--max-delay-ms", "0", "--queue", "1", "--max-body-mb", "1",
                              "--max-image-pixels", "784", "--timeout", "2", "-t", "1", "--dtype", "f16"],
                    f"{tmp}/limits.log")
    url = "/v2/models/damamba_fmnist/infer"
    # --dtype f16: what `damamba classify --dtype f16` gives, not float32's
    cli_f16 = classify_cli(["--dtype", "f16"], sample_paths[:1], 3)
    status, body = limits.json("POST", "/v1/classify?top=3", open(sample_paths[0], "rb").read())
    check(status == 200, f"classify in f16: {status} {body}")
    same_top([(t["index"], t["prob"]) for t in body["top"]], cli_f16[sample_paths[0]], "/v1/classify in f16")
    check(body["top"][0]["prob"] != cli[sample_paths[0]][0][1], "the f16 server gave float32's probabilities")
    # --max-image-pixels 784: the 28 x 28 samples pass; a 35-byte GIF whose
    # screen is 30209 x 1792 around a 1 x 1 image is refused from its header
    gif = bytes([0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x76, 0x00, 0x07, 0x80, 0, 0, 10, 200, 30, 255, 255, 255,
                 0x2c, 0, 0, 0, 0, 1, 0, 1, 0, 0, 2, 2, 0x44, 0x01, 0, 0x3b])
    started = time.monotonic()
    status, _, data = limits.request("POST", "/v1/classify", gif)
    check(status == 400 and b"30209 x 1792 pixels is over the limit of 784 pixels" in data,
          f"an image over --max-image-pixels: {status} {data}")
    check(time.monotonic() - started < 0.5, f"refusing it took {time.monotonic() - started:.2f} s")
    # The images of one request share the limit: two 28 x 28 samples have
    # 1568 pixels, so the second is refused from its header.
    status, _, data = limits.request("POST", url, json.dumps(
        {"inputs": [{"name": "input", "datatype": "BYTES", "shape": [2],
                     "data": [base64.b64encode(images[0]).decode()] * 2}]}))
    check(status == 400 and b"image 1 of input 'input': the images before it have all the 784 pixels" in data,
          f"two images over --max-image-pixels together: {status} {data}")
    # 413 from the headers alone: the body is never sent.
    s = socket.create_connection(("127.0.0.1", limits.port), timeout=10)
    s.sendall(f"POST {url} HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n".encode())
    reply = s.recv(65536).decode(errors="replace")
    s.close()
    check(reply.startswith("HTTP/1.1 413") and "over the limit" in reply, f"413 before the body: {reply[:80]}")
    # A body framed two ways is refused and the connection closed: what
    # follows the first length never runs as a request of its own.
    hidden = b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n"
    for framing, message in ((b"Content-Length: 2\r\nContent-Length: %d\r\n" % (2 + len(hidden)),
                              b"the request has 2 Content-Length headers"),
                             (b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n",
                              b"both Content-Length and Transfer-Encoding")):
        s = socket.create_connection(("127.0.0.1", limits.port), timeout=10)
        s.sendall(b"POST " + url.encode() + b" HTTP/1.1\r\nHost: x\r\n" + framing + b"\r\n{}" + hidden)
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
        s.close()
        check(reply.startswith(b"HTTP/1.1 400") and message in reply and reply.count(b"HTTP/1.1") == 1,
              f"a body framed two ways: {reply[:300]}")
    # A chunked body (no Content-Length) that grows over the limit: the
    # connection is closed once the limit is passed, before the body ends.
    # The body offered (64 MB) is far more than the socket buffers between
    # client and server hold (a few MB on loopback), so a server that kept
    # reading would take it all; one that closed makes the sending fail
    # when the buffers fill, however late it gets to run.
    s = socket.create_connection(("127.0.0.1", limits.port), timeout=10)
    s.sendall(f"POST {url} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
    sent = 0
    try:
        for _ in range(1024):
            s.sendall(b"10000\r\n" + b"0" * 65536 + b"\r\n")
            sent += 65536
        reply = s.recv(65536)
    except OSError:
        reply = b""
    s.close()
    check(reply == b"" and sent < 64 << 20, f"chunked body over the limit: {reply[:80]}, {sent} bytes taken")
    # A transfer coding other than chunked is refused at once, not waited on.
    s = socket.create_connection(("127.0.0.1", limits.port), timeout=10)
    s.sendall(f"POST {url} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nhello".encode())
    reply = s.recv(65536)
    s.close()
    check(reply.startswith(b"HTTP/1.1 400") and b"Transfer-Encoding 'gzip' is not supported" in reply,
          f"Transfer-Encoding gzip: {reply[:200]}")
    # Nor may an answer take more than --max-body-mb: stage 0 of 40 images
    # as JSON text (up to 17 bytes a float) would, as binary data it does not.
    stage0 = 1
    for d in ref["stage0"][0][1:]:
        stage0 *= d
    n = (1 << 20) // (17 * stage0) + 1
    check(n * stage0 * 4 < 1 << 20, "the binary answer fits")
    status, _, data = limits.request("POST", url, infer_json(n, [0] * (784 * n), outputs=[{"name": "stage0"}]))
    check(status == 400 and b"over the limit of 1.0 MB (--max-body-mb)" in data,
          f"an answer too large: {status} {data[:200]}")
    status, _, data = limits.request("POST", url, infer_json(n, [0] * (784 * n), outputs=[
        {"name": "stage0", "parameters": {"binary_data": True}}]))
    check(status == 200 and len(data) > n * stage0 * 4, f"the same as binary data: {status} {data[:100]}")
    # Small images may not decode to more tensor than --max-body-mb either:
    # 400 of them are 1.25 MB of floats.
    status, _, data = limits.request("POST", url, json.dumps(
        {"inputs": [{"name": "input", "datatype": "BYTES", "shape": [400],
                     "data": [base64.b64encode(images[0]).decode()] * 400}]}))
    check(status == 400 and b"exceed the limit of 1048576 bytes" in data, f"decoded size limit: {status} {data}")
    # A full queue: 503 with Retry-After; the others are answered, and the
    # queue takes requests again once it has drained.  The first request
    # to arrive holds the queue's one place until the worker has taken its
    # last image (one a pass, -b 1); whether a later one arrives after that
    # depends on how fast this machine parses against how fast it computes,
    # so only one 200 is certain.  The body is made once and the threads
    # send together: built in each thread under the GIL, the bodies could
    # reach a loaded machine one after another, each after the last had
    # been answered, so that the queue never filled.
    codes, retry = [], []
    flood_body = infer_json(32, sum(tensors, []) * 6 + sum(tensors[:2], []))
    together = threading.Barrier(8)

    def flood():
        together.wait()
        status, h, _ = limits.request("POST", url, flood_body)
        codes.append(status)
        retry.append(h.get("retry-after"))

    threads = [threading.Thread(target=flood) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print("8 requests at once against --queue 1:", sorted(codes))
    check(set(codes) <= {200, 503} and codes.count(503) >= 1 and codes.count(200) >= 1, f"queue full: {codes}")
    check(all(r == "1" for c, r in zip(codes, retry) if c == 503), f"Retry-After: {retry}")
    status, _, _ = limits.request("POST", url, infer_json(1, tensors[0]))
    check(status == 200, f"after a full queue has drained: {status}")
    # A stalled client is closed after --timeout; a slow-loris one too.
    s = socket.create_connection(("127.0.0.1", limits.port), timeout=10)
    s.sendall(b"POST " + url.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
    t0 = time.time()
    try:
        closed = s.recv(100) == b""
    except OSError:
        closed = True
    s.close()
    waited = time.time() - t0
    check(closed and waited < 8, f"stalled body: closed={closed} after {waited:.1f} s")
    status, _, _ = limits.request("GET", "/v2/health/ready")
    check(status == 200, "answers after the stalled client")
    rc = limits.stop(signal.SIGINT)
    check(rc == 0, f"limits server exited {rc} after SIGINT")
    m_log = limits.log_text()
    check(" 413 " in m_log and " 503 " in m_log, "413 and 503 in the log")
finally:
    kill_quietly(main)
    kill_quietly(limits)

finish("serve_test")
