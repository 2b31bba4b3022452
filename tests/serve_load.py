#!/usr/bin/python3
"""serve_load.py DAMAMBA IMAGE [--no-rss] - a bounded load test of `damamba
serve` with wrk on loopback: throughput and p50/p99 latency of POST
/v1/classify at 1, 8 and 64 connections with zero failed requests; resident
memory after 10,000 requests within 10% of after 1,000; and, under load,
clients disconnecting mid-request, 1,000 connections opened at once and
slow-loris clients, after which the server still answers.

--no-rss leaves out the memory comparison, for sanitizer builds (whose
allocator holds freed memory back on purpose; LeakSanitizer checks leaks
when the server exits there)."""
import os
import re
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve_util import Server, check, finish, kill_quietly  # noqa: E402

damamba, image = sys.argv[1:3]
check_rss = "--no-rss" not in sys.argv[3:]
tmp = tempfile.mkdtemp()
URL = "/v1/classify"


def seconds(text):
    value, unit = re.match(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(value) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[unit]


script = f"{tmp}/post.lua"
with open(script, "w") as f:
    f.write(f'wrk.method = "POST"\nlocal f = io.open("{os.path.abspath(image)}", "rb")\n'
            'wrk.body = f:read("*a")\nf:close()\n')


def wrk(server, connections, duration):
    """requests, requests/s, p50 and p99 seconds, failed requests."""
    out = subprocess.run(["wrk", "-t", str(min(connections, 2)), "-c", str(connections), "-d", f"{duration}s",
                          "--latency", "-s", script, f"http://127.0.0.1:{server.port}{URL}"],
                         capture_output=True, text=True, timeout=duration + 60).stdout
    # The latency distribution's lines, not the "+/- Stdev" percentages.
    p50, p99 = (re.search(rf"^\s+{p}%\s+([\d.]+(?:us|ms|s|m))\s*$", out, re.M) for p in (50, 99))
    if not (p50 and p99 and re.search(r"Requests/sec:", out)):
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    total = int(re.search(r"(\d+) requests in", out).group(1))
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50, p99 = seconds(p50.group(1)), seconds(p99.group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    failed = (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, errors.groups())) if errors else 0)
    return total, rate, p50, p99, failed, out


def answered(server):
    """The count of /v1/classify requests answered 200 so far."""
    return int(server.metrics().get('damamba_requests_total{endpoint="classify",code="200"}', 0))


def abandon_mid_request(server, n):
    """Clients that send half a body, or a whole request, and hang up."""
    body = open(image, "rb").read()
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        head = f"POST {URL} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        s.sendall(head + (body[:len(body) // 2] if i % 2 else body))
        s.close()


def thousand_connections(server, results):
    """1,000 connections opened at once, each then asking /v2/health/live."""
    socks = []
    try:
        for _ in range(1000):
            socks.append(socket.create_connection(("127.0.0.1", server.port), timeout=30))
        for s in socks:
            s.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        ok = 0
        for s in socks:
            data = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            ok += data.startswith(b"HTTP/1.1 200")
        results["ok"] = ok
    except OSError as e:
        results["error"] = str(e)
    finally:
        for s in socks:
            s.close()


def slow_loris(server, stop):
    """Clients that send their headers a byte at a time."""
    socks = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(20)]
    request = f"POST {URL} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\nX-Padding: ".encode()
    i = 0
    while not stop.is_set() and i < len(request):
        for s in socks:
            try:
                s.send(request[i:i + 1])
            except OSError:
                pass
        i += 1
        time.sleep(0.2)
    for s in socks:
        s.close()


def faults(server, duration):
    """All three faults while 64 connections keep the server busy."""
    result = {}
    load = threading.Thread(target=lambda: result.update(wrk=wrk(server, 64, duration)))
    stop = threading.Event()
    loris = threading.Thread(target=slow_loris, args=(server, stop))
    load.start()
    loris.start()
    time.sleep(0.5)
    abandon_mid_request(server, 100)
    crowd = {}
    thousand_connections(server, crowd)
    load.join()
    stop.set()
    loris.join()
    total, rate, p50, p99, failed, out = result["wrk"]
    print(f"under faults, 64 connections: {rate:.1f} requests/s, p50 {p50 * 1e3:.2f} ms, p99 {p99 * 1e3:.2f} ms, "
          f"{failed} failed; 1,000 connections at once: {crowd}", flush=True)
    check(failed == 0, f"{failed} failed requests under faults:\n{out}")
    check(crowd.get("ok") == 1000, f"1,000 connections at once: {crowd}")
    status, _, _ = server.request("GET", "/v2/health/ready")
    check(status == 200, f"ready after the faults: {status}")


soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
server = None
try:
    # One thread per forward pass: sharing a 28 x 28 image's loops among
    # threads costs more than it gains.
    server = Server(damamba, ["-b", "8", "--max-delay-ms", "2", "-t", "1", "--timeout", "5",
                                     "--queue", "1024"], f"{tmp}/load.log")
    # Warm up with load and one round of faults to at least 1,000 answered
    # requests (so the allocator has seen the peak), then take the baseline.
    deadline = time.time() + 60
    while answered(server) < 1000 and time.time() < deadline:
        wrk(server, 8, 1)
    faults(server, 2)
    rss_1000, n_1000 = server.rss_kib(), answered(server)

    for connections in (1, 8, 64):
        total, rate, p50, p99, failed, out = wrk(server, connections, 3)
        print(f"{connections:3d} connections: {rate:8.1f} requests/s, p50 {p50 * 1e3:7.2f} ms, "
              f"p99 {p99 * 1e3:7.2f} ms, {total} requests, {failed} failed", flush=True)
        check(failed == 0, f"{failed} failed requests at {connections} connections:\n{out}")
    faults(server, 5)

    # On to 10,000 answered requests, then compare memory.
    deadline = time.time() + 60
    while answered(server) < 10000 and time.time() < deadline:
        wrk(server, 64, 2)
    rss_10000, n_10000 = server.rss_kib(), answered(server)
    print(f"resident memory: {rss_1000} KiB after {n_1000} requests, {rss_10000} KiB after {n_10000}")
    check(n_10000 >= 10000, f"only {n_10000} requests answered in the time allowed")
    if check_rss:
        check(rss_10000 <= 1.1 * rss_1000, "resident memory grew by more than 10%")
    rc = server.stop()
    check(rc == 0, f"server exited {rc}")
finally:
    kill_quietly(server)

finish("serve_load")
