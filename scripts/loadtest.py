#!/usr/bin/env python3
"""Load test of `g4 serve` under abuse, on loopback only, bounded in time.

Starts the server itself on a free 127.0.0.1 port, then runs two phases of DURATION seconds:
  1. baseline: NORMAL clients in closed loops (chat completion, temperature 0, fixed prompt);
  2. abuse: the same normal clients plus SLOW slowloris connections (a header byte a second),
     DISC clients that disconnect mid-stream, and BAD clients sending malformed requests.
Every normal answer must equal the reference answer; the server must stay up (same PID);
RSS is sampled every second. Prints p50/p99 latency of normal clients per phase and their
ratio, and exits non-zero if a check fails. Everything stops by itself.

usage: scripts/loadtest.py G4_BINARY MODEL [--duration 60] [--normal 64] [--slow 32] [--disc 16] [--bad 8]
"""
import argparse
import http.client
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import threading
import time

HOST = "127.0.0.1"
BODY = {"messages": [{"role": "user", "content": "Tell me about the jury."}], "max_tokens": 8, "temperature": 0}


def free_port():
    s = socket.socket()
    s.bind((HOST, 0))
    p = s.getsockname()[1]
    s.close()
    return p


def rss_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return -1
    return -1


def chat(conn, body):
    conn.request("POST", "/v1/chat/completions", body=json.dumps(body), headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    data = r.read()
    return r.status, data


class Phase:
    def __init__(self):
        self.lat, self.ok, self.wrong, self.errors = [], 0, 0, []
        self.lock = threading.Lock()


def normal_client(port, expected, end, ph):
    conn = None
    while time.time() < end:
        if conn is None:
            conn = http.client.HTTPConnection(HOST, port, timeout=120)
        t0 = time.time()
        try:
            status, data = chat(conn, BODY)
            dt = time.time() - t0
            text = json.loads(data)["choices"][0]["message"]["content"] if status == 200 else None
            with ph.lock:
                if status == 200 and text == expected:
                    ph.ok += 1
                    ph.lat.append(dt)
                elif status == 200:
                    ph.wrong += 1
                else:
                    ph.errors.append(f"HTTP {status}: {data[:120]!r}")
        except Exception as e:  # a broken connection is an error of the server under test
            with ph.lock:
                ph.errors.append(f"{type(e).__name__}: {e}")
            conn.close()
            conn = None
    if conn:
        conn.close()


def slowloris(port, end, stats):
    while time.time() < end:
        try:
            s = socket.create_connection((HOST, port), timeout=5)
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
            stats["slow_conns"] += 1
            while time.time() < end:
                s.sendall(b"X")
                time.sleep(1.0)
        except OSError:
            stats["slow_closed_by_server"] += 1
            time.sleep(0.2)


def disconnector(port, end, stats):
    body = dict(BODY, stream=True, max_tokens=64)
    while time.time() < end:
        try:
            s = socket.create_connection((HOST, port), timeout=120)
            payload = json.dumps(body).encode()
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: %d\r\n\r\n" % len(payload) + payload)
            got = b""
            while b"data:" not in got and time.time() < end:
                chunk = s.recv(4096)
                if not chunk:
                    break
                got += chunk
            s.close()  # mid-stream
            stats["disconnects"] += 1
        except OSError as e:
            stats["disc_errors"] += 1
        time.sleep(1.0)


BAD_BODIES = [
    b'{"messages": [{"role": "user", "content": "x"}',                       # truncated JSON
    b'{"messages": [{"role": "user", "content": "\xff\xfe"}]}',               # invalid UTF-8
    b'{"messages": "hi"}',                                                    # wrong type
    b'{"messages": [{"role": "user", "content": "x"}], "stream_options": {"include_usage": "yes"}}',
    b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": -5}',
    b'[' * 5000 + b']' * 5000,                                                # deep nesting
    b'{"a":' + b'1,"a":' * 10 + b'1}',                                        # duplicate keys
]


def bad_client(port, end, stats):
    rnd = random.Random(7)
    while time.time() < end:
        try:
            conn = http.client.HTTPConnection(HOST, port, timeout=30)
            if rnd.random() < 0.1:
                body = b"x" * (2 << 20)  # over --max-body-bytes: 413
            else:
                body = rnd.choice(BAD_BODIES)
            conn.request("POST", "/v1/chat/completions", body=body, headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            r.read()
            conn.close()
            stats["bad_sent"] += 1
            if r.status >= 500 or r.status < 400:
                stats["bad_unexpected"] += 1
        except OSError:
            stats["bad_conn_errors"] += 1
        time.sleep(0.05)


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] if xs else float("nan")


def run_phase(name, port, pid, expected, args, abuse):
    end = time.time() + args.duration
    ph = Phase()
    stats = {k: 0 for k in ["slow_conns", "slow_closed_by_server", "disconnects", "disc_errors", "bad_sent",
                            "bad_unexpected", "bad_conn_errors"]}
    threads = [threading.Thread(target=normal_client, args=(port, expected, end, ph)) for _ in range(args.normal)]
    if abuse:
        threads += [threading.Thread(target=slowloris, args=(port, end, stats)) for _ in range(args.slow)]
        threads += [threading.Thread(target=disconnector, args=(port, end, stats)) for _ in range(args.disc)]
        threads += [threading.Thread(target=bad_client, args=(port, end, stats)) for _ in range(args.bad)]
    for t in threads:
        t.daemon = True
        t.start()
    rss = []
    while time.time() < end:
        rss.append(rss_kb(pid))
        time.sleep(1)
    for t in threads:
        t.join(timeout=180)
    p50, p99 = pct(ph.lat, 50), pct(ph.lat, 99)
    print(f"[{name}] normal answers: {ph.ok} correct, {ph.wrong} wrong, {len(ph.errors)} errors; "
          f"latency p50 {p50:.3f} s, p99 {p99:.3f} s, mean {statistics.mean(ph.lat) if ph.lat else float('nan'):.3f} s; "
          f"RSS max {max(rss) / 1024:.1f} MiB (start {rss[0] / 1024:.1f} MiB)")
    if abuse:
        print(f"[{name}] abusers: {stats}")
    for e in ph.errors[:5]:
        print(f"[{name}]   error: {e}")
    return ph, p50, p99, max(rss), stats


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("g4")
    ap.add_argument("model")
    ap.add_argument("--duration", type=float, default=60)
    ap.add_argument("--normal", type=int, default=64)
    ap.add_argument("--slow", type=int, default=32)
    ap.add_argument("--disc", type=int, default=16)
    ap.add_argument("--bad", type=int, default=8)
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--log", default="/tmp/g4-loadtest-server.log")
    args = ap.parse_args()
    port = free_port()
    log = open(args.log, "w")
    srv = subprocess.Popen([args.g4, "serve", "-m", args.model, "--host", HOST, "--port", str(port), "--parallel",
                            str(args.parallel), "--max-queue", "256", "--max-connections", "256"],
                           stdout=log, stderr=log)
    try:
        for _ in range(600):
            try:
                c = http.client.HTTPConnection(HOST, port, timeout=2)
                c.request("GET", "/health")
                if c.getresponse().status == 200:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        conn = http.client.HTTPConnection(HOST, port, timeout=60)
        status, data = chat(conn, BODY)
        assert status == 200, data
        expected = json.loads(data)["choices"][0]["message"]["content"]
        print(f"server pid {srv.pid} on {HOST}:{port}; reference answer {expected!r}")
        base, b50, b99, brss, _ = run_phase("baseline", port, srv.pid, expected, args, abuse=False)
        abuse, a50, a99, arss, stats = run_phase("abuse", port, srv.pid, expected, args, abuse=True)
        alive = srv.poll() is None
        print(f"latency ratio abuse/baseline: p50 {a50 / b50:.2f}x, p99 {a99 / b99:.2f}x; server alive: {alive}, "
              f"same pid: {alive}; RSS max {brss / 1024:.1f} -> {arss / 1024:.1f} MiB")
        ok = (alive and not base.errors and not abuse.errors and base.wrong == 0 and abuse.wrong == 0
              and stats["bad_unexpected"] == 0 and a50 <= 1.5 * b50 and a99 <= 1.5 * b99)
        print("PASS" if ok else "FAIL")
        return 0 if ok else 1
    finally:
        srv.terminate()
        try:
            srv.wait(timeout=60)
        except subprocess.TimeoutExpired:
            srv.kill()
        print(f"server exit code after SIGTERM: {srv.returncode}")


if __name__ == "__main__":
    sys.exit(main())
