"""Helpers for the server tests: start `damamba serve` on a free loopback
port, talk HTTP to it, read and write safetensors files."""
import http.client
import json
import re
import signal
import struct
import subprocess
import sys
import time

failures = []


def check(cond, what):
    """Record a failed check and go on, so one run reports every failure."""
    if not cond:
        failures.append(what)
        print("FAIL:", what, flush=True)


def finish(name):
    print(f"{name}: {len(failures)} failure(s)")
    sys.exit(1 if failures else 0)


class Server:
    """`damamba serve ARGS --port 0`, its port read from its first line."""

    def __init__(self, damamba, args, log_path):
        self.log_path = log_path
        self.log = open(log_path, "w+b")
        self.proc = subprocess.Popen([damamba, "serve", "--port", "0"] + args,
                                     stdout=subprocess.DEVNULL, stderr=self.log)
        deadline = time.time() + 60
        self.port = None
        while self.port is None:
            text = open(log_path, "rb").read().decode(errors="replace")
            m = re.search(r"listening on http://127\.0\.0\.1:(\d+)/", text)
            if m:
                self.port = int(m.group(1))
            elif self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("server did not start: " + text)
            else:
                time.sleep(0.05)

    def request(self, method, url, body=None, headers=None, timeout=60):
        """(status, headers dict with lower-case names, body bytes)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, url, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def json(self, method, url, body=None, headers=None):
        status, _, data = self.request(method, url, body, headers)
        return status, json.loads(data)

    def rss_kib(self):
        for line in open(f"/proc/{self.proc.pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def metrics(self):
        """{'name{labels}': value} of GET /metrics."""
        status, _, data = self.request("GET", "/metrics")
        assert status == 200, status
        out = {}
        for line in data.decode().splitlines():
            if line and not line.startswith("#"):
                key, value = line.rsplit(" ", 1)
                out[key] = float(value)
        return out

    def stop(self, signo=signal.SIGTERM):
        """SIGTERM (or signo), then the exit status (the server must drain and exit 0)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signo)
        try:
            return self.proc.wait(timeout=60)
        finally:
            self.log.close()

    def log_text(self):
        return open(self.log_path, "rb").read().decode(errors="replace")


def write_safetensors(path, tensors):
    """tensors: {name: (shape, list of floats)} as F32."""
    header, blobs, offset = {}, [], 0
    for name, (shape, values) in tensors.items():
        blob = struct.pack(f"<{len(values)}f", *values)
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def read_safetensors(path):
    """{name: (shape, list of floats)} of the F32 tensors of a file."""
    data = open(path, "rb").read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    out = {}
    for name, t in header.items():
        if name == "__metadata__" or t["dtype"] != "F32":
            continue
        a, b = t["data_offsets"]
        out[name] = (t["shape"], list(struct.unpack(f"<{(b - a) // 4}f", data[8 + n + a:8 + n + b])))
    return out


def binary_request(header, tensors):
    """The body and headers of a request in Triton's binary tensor extension."""
    text = json.dumps(header).encode()
    return text + b"".join(tensors), {"Inference-Header-Content-Length": str(len(text)),
                                      "Content-Type": "application/octet-stream"}


def split_binary_response(headers, body):
    """(JSON header, the bytes after it)."""
    n = int(headers["inference-header-content-length"])
    return json.loads(body[:n]), body[n:]


def softmax(logits):
    import math
    m = max(logits)
    e = [math.exp(x - m) for x in logits]
    s = sum(e)
    return [x / s for x in e]


def top_k(logits, k):
    probs = softmax(logits)
    order = sorted(range(len(logits)), key=lambda i: (-logits[i], i))[:k]
    return [(i, probs[i]) for i in order]


def max_abs_diff(a, b):
    assert len(a) == len(b), (len(a), len(b))
    return max(abs(x - y) for x, y in zip(a, b))


def kill_quietly(server):
    if server and server.proc.poll() is None:
        server.proc.kill()
        server.proc.wait()
