#!/usr/bin/env python3
"""Serving load benchmark: g4 serve against llama-server, same GGUF, same --parallel, same context.

For each model and each server, starts the server on a free 127.0.0.1 port, then for every
concurrency level runs that many clients in closed loops for DURATION seconds: each sends a
streaming /v1/completions request (temperature 0, ignore_eos, MAX_TOKENS tokens, its own
prompt), waits for the end and sends the next. Prints per level: total generated tokens/s
(all clients), time to first token p50/p99, inter-token latency p50/p99, requests and errors.
Loopback only; every server is stopped at the end, and the whole run is bounded (--budget).

  scripts/bench-serving.py [--clients 1,4,16,64] [--duration 30] [--max-tokens 64] [--prompt-words 48 | --prompt-tokens N]
                           [--parallel 64] [--ctx 1024] [--threads N] [--variant sapphirerapids]
                           [--g4 build/g4] [--no-llama] [--budget 3600] MODEL...

MODEL: a .gguf file (both servers) or an HF checkpoint directory such as models/brown-mini
(g4 only: llama.cpp 0.7.0 aborts on brown-mini's KV-share layout). llama-server comes from
../shared/peers/llama-cpp.sh (LLAMA_PEER, default /tmp/llama-cpp-peer); --variant picks its CPU
build via GGML_BACKEND_PATH (default: sapphirerapids where this CPU has AMX, else icelake where it has AVX-512,
the fastest per scripts/bench-vs-llama.sh; 'auto' measures each with llama-bench first and takes the fastest).
Make the synth model outside the repo: ./build/g4 synth --variant e2b --type q4_0 -o /tmp/e2b-q4_0.gguf
"""
import argparse
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

HOST = "127.0.0.1"
WORDS = ("the jury said that county election was conducted with fairness and the city council "
         "should consider new laws about the registration of voters in the coming year").split()


def free_port():
    s = socket.socket()
    s.bind((HOST, 0))
    p = s.getsockname()[1]
    s.close()
    return p


def pct(xs, q):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def llama_root():
    return os.environ.get("LLAMA_PEER", "/tmp/llama-cpp-peer")


def variant_lib(v):
    return f"{llama_root()}/usr/lib/x86_64-linux-gnu/ggml/backends0/libggml-cpu-{v}.so"


def runnable(v):
    flags = next((l for l in open("/proc/cpuinfo") if l.startswith("flags")), "")
    need = {"sapphirerapids": "amx_int8", "zen4": "avx512f", "icelake": "avx512f", "skylakex": "avx512f",
            "alderlake": "avx_vnni", "haswell": "avx2"}.get(v)
    return os.path.exists(variant_lib(v)) and (need is None or f" {need}" in flags)


def pick_variant(arg, gguf, threads):
    if arg and arg != "auto":
        return arg
    cands = [v for v in ("sapphirerapids", "icelake", "zen4", "skylakex", "haswell") if runnable(v)]
    if arg != "auto":
        return cands[0] if cands else ""
    best, best_ts = "", 0.0
    for v in cands:  # decode speed decides: serving is decode-bound
        try:
            out = subprocess.run([f"{llama_root()}/run", "llama-bench", "-m", gguf, "-p", "0", "-n", "16", "-r", "1",
                                  "-t", str(threads), "-o", "json"], env=dict(os.environ, GGML_BACKEND_PATH=variant_lib(v)),
                                 capture_output=True, text=True, timeout=180)
            ts = json.loads(out.stdout)[0]["avg_ts"]
        except Exception:
            continue
        print(f"  llama.cpp variant {v}: tg16 {ts:.2f} t/s", file=sys.stderr)
        if ts > best_ts:
            best, best_ts = v, ts
    return best


class Server:
    def __init__(self, kind, model, args, log):
        self.kind, self.port = kind, free_port()
        self.log = open(log, "w")
        env = dict(os.environ)
        if kind == "g4":
            cmd = [args.g4, "serve", "-m", model, "--host", HOST, "--port", str(self.port), "--parallel", str(args.parallel),
                   "--ctx", str(args.ctx), "--max-queue", "1024", "--max-tokens-limit", str(max(4096, args.max_tokens))]
            if args.threads:
                env["OMP_NUM_THREADS"] = str(args.threads)
        else:
            # llama-server splits -c among its slots: the same per-request context is ctx * parallel.
            cmd = [f"{llama_root()}/run", "llama-server", "-m", model, "--host", HOST, "--port", str(self.port),
                   "-np", str(args.parallel), "-c", str(args.ctx * args.parallel)]
            if args.threads:
                cmd += ["-t", str(args.threads)]
            if args.variant_used:
                env["GGML_BACKEND_PATH"] = variant_lib(args.variant_used)
        self.cmd = cmd
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def wait_ready(self, timeout):
        end = time.time() + timeout
        while time.time() < end:
            if self.proc.poll() is not None:
                return False
            try:
                c = http.client.HTTPConnection(HOST, self.port, timeout=2)
                c.request("GET", "/health")
                ok = c.getresponse().status == 200
                c.close()
                if ok:
                    return True
            except OSError:
                pass
            time.sleep(0.2)
        return False

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


def one_request(port, prompt, max_tokens, timeout):
    """Streams one completion; returns (tokens, ttft, [inter-token gaps]) or raises."""
    body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True, "stream": True,
            "stream_options": {"include_usage": True}}
    c = http.client.HTTPConnection(HOST, port, timeout=timeout)
    t0 = time.time()
    c.request("POST", "/v1/completions", body=json.dumps(body), headers={"Content-Type": "application/json"})
    r = c.getresponse()
    if r.status != 200:
        raise RuntimeError(f"HTTP {r.status}: {r.read()[:200]!r}")
    times, usage, buf = [], None, b""
    while True:
        line = r.fp.readline()
        if not line:
            break
        line = line.strip()
        if not line.startswith(b"data: "):
            continue
        data = line[6:]
        if data == b"[DONE]":
            break
        j = json.loads(data)
        if "error" in j:
            raise RuntimeError(f"error event: {j['error'].get('message')}")
        if j.get("usage"):
            usage = j["usage"].get("completion_tokens")
        for ch in j.get("choices", []):
            if ch.get("text"):
                times.append(time.time())
    c.close()
    if not times:
        raise RuntimeError("no text streamed")
    n = usage if usage else len(times)
    # Pieces may carry more than one token: spread each gap over the tokens it covers.
    gaps = []
    if len(times) > 1:
        per = (times[-1] - times[0]) / max(1, n - 1)
        gaps = [b - a for a, b in zip(times, times[1:])] if n == len(times) else [per] * (n - 1)
    return n, times[0] - t0, gaps


def run_level(port, n_clients, args):
    end = time.time() + args.duration
    lock = threading.Lock()
    res = {"tokens": 0, "ttft": [], "itl": [], "requests": 0, "errors": [], "t_last": time.time()}

    def client(i):
        k = 0
        while time.time() < end:
            # Each client its own prompt (no shared prefix beyond the first words), fresh each request.
            if args.prompt_tokens:  # token ids: the same prompt length on any vocabulary
                prompt = [2] + [(i * 7919 + k * 104729 + j * 31) % 3000 + 1000 for j in range(args.prompt_tokens - 1)]
            else:
                words = [WORDS[(i * 7 + k * 3 + j) % len(WORDS)] for j in range(args.prompt_words)]
                prompt = f"Client {i} request {k}: " + " ".join(words)
            k += 1
            try:
                n, ttft, gaps = one_request(port, prompt, args.max_tokens, timeout=max(60, args.duration * 4))
                with lock:
                    res["tokens"] += n
                    res["ttft"].append(ttft)
                    res["itl"] += gaps
                    res["requests"] += 1
                    res["t_last"] = max(res["t_last"], time.time())
            except Exception as e:
                with lock:
                    res["errors"].append(str(e)[:160])
                time.sleep(0.2)

    t0 = time.time()
    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(n_clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(args.duration * 5 + 120)  # bounded even if a server hangs
    res["elapsed"] = max(1e-9, res["t_last"] - t0)
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+")
    ap.add_argument("--clients", default="1,4,16,64")
    ap.add_argument("--duration", type=float, default=30, help="seconds per concurrency level")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--prompt-words", type=int, default=48)
    ap.add_argument("--prompt-tokens", type=int, default=0,
                    help="send prompts of this many token ids instead of words: a synth model's byte-level vocabulary "
                         "makes a 52-word prompt 386 tokens, where Gemma 4's tokenizer makes ~65")
    ap.add_argument("--parallel", type=int, default=0, help="--parallel / -np of both servers (default: the most clients)")
    ap.add_argument("--ctx", type=int, default=1024, help="context per request")
    ap.add_argument("--threads", type=int, default=0, help="threads for both (default: each server's own)")
    ap.add_argument("--variant", default="", help="llama.cpp CPU variant, or 'auto' to measure")
    ap.add_argument("--g4", default="build/g4")
    ap.add_argument("--no-llama", action="store_true")
    ap.add_argument("--budget", type=float, default=3600, help="stop starting new levels after this many seconds")
    args = ap.parse_args()
    levels = [int(x) for x in args.clients.split(",")]
    args.parallel = args.parallel or max(levels)
    start = time.time()
    have_llama = not args.no_llama and os.path.exists(f"{llama_root()}/run")
    if not args.no_llama and not have_llama:
        print(f"bench-serving: no llama.cpp in {llama_root()} (run ../shared/peers/llama-cpp.sh); g4 only", file=sys.stderr)
    rows = []
    for model in args.models:
        name = os.path.basename(model.rstrip("/"))
        kinds = ["g4"] + (["llama"] if have_llama and model.endswith(".gguf") else [])
        args.variant_used = pick_variant(args.variant, model, args.threads or os.cpu_count()) if "llama" in kinds else ""
        for kind in kinds:
            log = f"/tmp/bench-serving-{kind}-{os.getpid()}.log"
            srv = Server(kind, model, args, log)
            label = kind if kind == "g4" else f"llama-server ({args.variant_used or 'default'})"
            try:
                if not srv.wait_ready(300):
                    print(f"bench-serving: {label} did not start on {name}; see {log}", file=sys.stderr)
                    rows.append((name, label, None, None))
                    continue
                print(f"{name}: {label} ready: {' '.join(srv.cmd)}", file=sys.stderr)
                run_level(srv.port, 1, argparse.Namespace(**dict(vars(args), duration=min(5, args.duration))))  # warm-up
                for n in levels:
                    if time.time() - start > args.budget:
                        print("bench-serving: --budget reached; skipping the rest", file=sys.stderr)
                        break
                    r = run_level(srv.port, n, args)
                    rows.append((name, label, n, r))
                    print(f"  {n} clients: {r['tokens'] / r['elapsed']:.1f} t/s, {r['requests']} requests, "
                          f"{len(r['errors'])} errors", file=sys.stderr)
            finally:
                srv.stop()
    what = f"{args.prompt_tokens} token ids" if args.prompt_tokens else f"~{args.prompt_words + 4} words"
    print(f"\nmax_tokens {args.max_tokens}, prompts of {what}, {args.duration:g} s per level, "
          f"--parallel {args.parallel}, context {args.ctx} per request, threads {args.threads or 'default'}\n")
    print("| model | server | clients | total t/s | per client t/s | TTFT p50 / p99 (s) | ITL p50 / p99 (ms) | requests | errors |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, label, n, r in rows:
        if r is None:
            print(f"| {name} | {label} | - | failed to start | | | | | |")
            continue
        tps = r["tokens"] / r["elapsed"]
        print(f"| {name} | {label} | {n} | {tps:.1f} | {tps / n:.1f} | {pct(r['ttft'], .5):.3f} / {pct(r['ttft'], .99):.3f} | "
              f"{1000 * pct(r['itl'], .5):.1f} / {1000 * pct(r['itl'], .99):.1f} | {r['requests']} | {len(r['errors'])} |")
        if r["errors"]:
            print(f"|  |  |  | first error: {r['errors'][0]} | | | | | |")


if __name__ == "__main__":
    main()
