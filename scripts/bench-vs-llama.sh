#!/usr/bin/env bash
# g4 against llama.cpp's FASTEST CPU build, interleaved, same GGUF, same threads.
#
#   scripts/bench-vs-llama.sh [-r ROUNDS] [-t THREADS] [-p 512] [-n 64] [-d DEPTH] [--variants "sapphirerapids zen4"]
#                             [--no-warmup] [--g4 build/g4] [--g4-old OLD_G4] FILE.gguf...
#
# llama.cpp comes from ../shared/peers/llama-cpp.sh (Debian's binaries unpacked outside
# the repo; set LLAMA_PEER to its root, default /tmp/llama-cpp-peer). Every CPU variant
# it ships that this CPU can run (`GGML_BACKEND_PATH` selects one) is measured, by default
# the AVX-512/AVX2 ones; per row the fastest is the comparison. Each round runs g4 and
# every variant back to back, so machine drift hits all of them alike. `--g4-old` adds a
# second g4 binary (e.g. the previous commit) to the same rounds, for regression checks.
# The table reports mean t/s over the rounds (each round itself is llama-bench/g4 bench
# with -r 1 after a warm-up; --no-warmup skips it in both, for 16K-token runs of minutes),
# the ratio g4 / best llama.cpp, and decode's fraction of the read bandwidth
# `g4 bench --membw` measured in the same run (before every file in every round, since this
# VM's bandwidth drifts by 20% within an hour: each row's fraction uses the median of its probes).
set -euo pipefail
ROUNDS=2 THREADS=2 NP=512 NG=64 DEPTH=0 G4=build/g4 G4_OLD="" WARMUP=() VARIANTS="sapphirerapids zen4 icelake skylakex haswell"
files=()
while (($#)); do
  case $1 in
    -r) ROUNDS=$2; shift 2 ;;
    -t) THREADS=$2; shift 2 ;;
    -p) NP=$2; shift 2 ;;
    -n) NG=$2; shift 2 ;;
    -d) DEPTH=$2; shift 2 ;;  # context already in the cache (llama-bench -d)
    --variants) VARIANTS=$2; shift 2 ;;
    --no-warmup) WARMUP=(--no-warmup); shift ;;
    --g4) G4=$2; shift 2 ;;
    --g4-old) G4_OLD=$2; shift 2 ;;
    -h|--help) sed -n 2,17p "$0"; exit 0 ;;
    *) files+=("$1"); shift ;;
  esac
done
((${#files[@]})) || { echo "bench-vs-llama: name at least one .gguf file (see --help)" >&2; exit 2; }
ROOT=${LLAMA_PEER:-/tmp/llama-cpp-peer}
[[ -x $ROOT/run ]] || { echo "bench-vs-llama: no llama.cpp in $ROOT; run ../shared/peers/llama-cpp.sh first" >&2; exit 2; }
LIBDIR=$ROOT/usr/lib/x86_64-linux-gnu/ggml/backends0
flags=$(grep -m1 '^flags' /proc/cpuinfo)
runnable() {  # can this CPU run the variant?
  case $1 in
    sapphirerapids) [[ $flags == *amx_int8* ]] ;;
    zen4|icelake|skylakex|cascadelake|cooperlake|cannonlake) [[ $flags == *avx512f* ]] ;;
    alderlake) [[ $flags == *avx_vnni* ]] ;;
    haswell) [[ $flags == *avx2* ]] ;;
    *) true ;;
  esac
}
vars=()
for v in $VARIANTS; do [[ -f $LIBDIR/libggml-cpu-$v.so ]] && runnable "$v" && vars+=("$v"); done
out=$(mktemp -d)
echo "bench-vs-llama: llama.cpp $(${ROOT}/run llama-bench --version 2>&1 | grep -m1 version); CPU $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2); variants: ${vars[*]}; threads $THREADS; pp$NP tg$NG; $ROUNDS rounds" >&2
# One measurement: g4, g4old or a llama.cpp variant on file $f, round $r.
measure() {
  case $1 in
    g4) "$G4" bench -m "$f" -p "$NP" -n "$NG" -d "$DEPTH" -r 1 -t "$THREADS" "${WARMUP[@]}" --json > "$out/g4.$b.$r.json" ;;
    g4old) "$G4_OLD" bench -m "$f" -p "$NP" -n "$NG" -d "$DEPTH" -r 1 -t "$THREADS" "${WARMUP[@]}" --json > "$out/g4old.$b.$r.json" ;;
    *) GGML_BACKEND_PATH=$LIBDIR/libggml-cpu-$1.so "$ROOT/run" llama-bench -m "$f" -p "$NP" -n "$NG" -d "$DEPTH" -r 1 -t "$THREADS" "${WARMUP[@]}" -o json \
         > "$out/llama-$1.$b.$r.json" 2>/dev/null || echo "  llama.cpp $1 failed on $b" >&2 ;;
  esac
}
jobs=(g4)
[[ -n $G4_OLD ]] && jobs+=(g4old)
jobs+=("${vars[@]}")
# Each round starts one place further along the list: on this VM the first run of a round was
# measured up to 8% slower than its later runs (stop 41), which would always hit the same one.
for ((r = 1; r <= ROUNDS; r++)); do
  for f in "${files[@]}"; do
    b=$(basename "$f")
    echo "round $r: $b" >&2
    "$G4" bench -m "$f" -p 0 -n 0 --membw --json -t "$THREADS" > "$out/membw.$b.$r.json" 2>/dev/null || true
    for ((j = 0; j < ${#jobs[@]}; j++)); do measure "${jobs[(j + r - 1) % ${#jobs[@]}]}"; done
  done
done
python3 - "$out" "$NP" "$NG" "$G4_OLD" "$DEPTH" "${files[@]}" <<'PY'
import json, os, sys, glob, statistics as st
out, NP, NG, old, DEPTH = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
files = [os.path.basename(f) for f in sys.argv[6:]]
at = f" @ d{DEPTH}" if DEPTH else ""
def load(p):
    try: return json.load(open(p))
    except Exception: return None
def probes(pattern):
    return [j.get("memory_read_gbps", 0) for j in (load(p) for p in glob.glob(f"{out}/membw.{pattern}.json")) if j]
def g4(prefix, b, key):
    v = [j[key] for j in (load(p) for p in sorted(glob.glob(f"{out}/{prefix}.{b}.*.json"))) if j]
    return (st.mean(v), min(v), max(v)) if v else None
def llama(b):
    best = {}
    for p in glob.glob(f"{out}/llama-*.{b}.*.json"):
        v = os.path.basename(p).split(".")[0][len("llama-"):]
        for row in load(p) or []:
            test = "pp" if row.get("n_prompt") == NP and row.get("n_gen") == 0 else "tg" if row.get("n_gen") == NG and row.get("n_prompt") == 0 else None
            if test: best.setdefault(test, {}).setdefault(v, []).append(row["avg_ts"])
    res = {}
    for test, per in best.items():
        v, ts = max(per.items(), key=lambda kv: st.mean(kv[1]))
        res[test] = (st.mean(ts), min(ts), max(ts), v)
    return res
allbw = probes("*")
if allbw: print(f"memory read bandwidth (g4 bench --membw, before each file in each round): median {st.median(allbw):.1f} GB/s, {min(allbw):.1f}-{max(allbw):.1f} over {len(allbw)} probes\n")
hdr = "| GGUF | test | g4 t/s | llama.cpp best t/s (variant) | g4 / llama.cpp |" + (" g4 old t/s | new / old |" if old else "") + " decode GB/s (% of that file's median probe) |"
print(hdr); print("|" + "---|" * (hdr.count("|") - 1))
for b in files:
    L = llama(b)
    for test, key in (("pp", "pp_tps"), ("tg", "tg_tps")):
        n = NP if test == "pp" else NG
        if n == 0: continue  # -p 0 or -n 0: that test was not run
        g = g4("g4", b, key)
        if not g: continue
        l = L.get(test)
        row = f"| {b} | {test}{n}{at} | {g[0]:.2f} ({g[1]:.2f}-{g[2]:.2f}) | "
        row += f"{l[0]:.2f} ({l[1]:.2f}-{l[2]:.2f}) {l[3]} | {g[0]/l[0]:.2f}x |" if l else "failed | - |"
        if old:
            o = g4("g4old", b, key)
            row += f" {o[0]:.2f} | {g[0]/o[0]:.3f} |" if o else " - | - |"
        if test == "tg":
            gbps = g4("g4", b, "decode_gbps")[0]
            bw = st.median(probes(f"{b}.*") or [0])
            row += f" {gbps:.1f} ({100*gbps/bw:.0f}%) |" if bw else f" {gbps:.1f} |"
        else:
            row += " |"
        print(row)
PY
rm -rf "$out"
