#!/usr/bin/env bash
# g4 bench against llama-bench (its fastest CPU variant), interleaved, on every low-bit type of issue 20:
# the same source quantized by llama-quantize to each type, then scripts/bench-vs-llama.sh on all files.
#
#   scripts/bench-iq.sh [-r ROUNDS] [-t THREADS] [-p 512] [-n 64] [--src SRC.gguf] [--layers N]
#                       [--types "IQ4_NL IQ4_XS ..."] [--variants "sapphirerapids icelake"] [--work DIR] [--g4 build/g4]
#
# Without --src it writes the synth E2B shape in BF16 (`g4 synth --variant e2b`, --layers to shrink it).
# Every weight gets the type (--pure); the types llama-quantize refuses without an importance matrix
# get a uniform one over every 2-D weight (speed does not depend on its values). Needs the llama.cpp
# peer (../shared/peers/llama-cpp.sh). Run it on a quiet machine: it is a speed benchmark.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
ROUNDS=2 THREADS=2 NP=512 NG=64 SRC="" LAYERS="" G4=$here/build/g4 WORK=${WORK:-/tmp/g4-bench-iq} VARIANTS=()
TYPES="Q4_0 IQ4_NL IQ4_XS MXFP4 IQ3_XXS IQ3_S IQ2_XXS IQ2_XS IQ2_S IQ1_S IQ1_M TQ1_0 TQ2_0"
while (($#)); do
  case $1 in
    -r) ROUNDS=$2; shift 2 ;;
    -t) THREADS=$2; shift 2 ;;
    -p) NP=$2; shift 2 ;;
    -n) NG=$2; shift 2 ;;
    --src) SRC=$2; shift 2 ;;
    --layers) LAYERS=$2; shift 2 ;;
    --types) TYPES=$2; shift 2 ;;
    --variants) VARIANTS=(--variants "$2"); shift 2 ;;  # passed to bench-vs-llama.sh
    --work) WORK=$2; shift 2 ;;
    --g4) G4=$2; shift 2 ;;
    -h|--help) sed -n 2,11p "$0"; exit 0 ;;
    *) echo "bench-iq: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
peer=${LLAMA_PEER:-/tmp/llama-cpp-peer}
[[ -x $peer/run ]] || { echo "bench-iq: no llama.cpp in $peer; run ../shared/peers/llama-cpp.sh first" >&2; exit 2; }
mkdir -p "$WORK"
if [[ -z $SRC ]]; then
  SRC=$WORK/e2b${LAYERS:+-l$LAYERS}-bf16.gguf
  [[ -f $SRC ]] || "$G4" synth --variant e2b ${LAYERS:+--layers $LAYERS} --type bf16 -o "$SRC" >&2
fi
# A uniform importance matrix (legacy .dat, all ones) for every 2-D tensor, from the GGUF header only.
python3 - "$SRC" "$WORK/uniform.dat" <<'PY'
import struct, sys
f = open(sys.argv[1], "rb")
def rd(fmt):
    s = struct.calcsize("<" + fmt); v = struct.unpack("<" + fmt, f.read(s)); return v[0] if len(v) == 1 else v
def rstr(): return f.read(rd("Q")).decode()
sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
def skip(t):
    if t in sizes: f.read(sizes[t])
    elif t == 8: rstr()
    elif t == 9:
        et, n = rd("I"), rd("Q")
        for _ in range(n): skip(et)
assert f.read(4) == b"GGUF", sys.argv[1]
_, n_t, n_kv = rd("I"), rd("Q"), rd("Q")
for _ in range(n_kv): rstr(); skip(rd("I"))
out, n = bytearray(), 0
for _ in range(n_t):
    name = rstr(); dims = [rd("Q") for _ in range(rd("I"))]; rd("I"); rd("Q")
    if len(dims) >= 2:
        nb = name.encode(); n += 1
        out += struct.pack("<i", len(nb)) + nb + struct.pack("<ii", 1, dims[0]) + struct.pack("<f", 1.0) * dims[0]
open(sys.argv[2], "wb").write(struct.pack("<i", n) + out + struct.pack("<ii", 1, 7) + b"uniform")
PY
files=()
base=$(basename "$SRC" .gguf); base=${base%-bf16}
for t in $TYPES; do
  f=$WORK/$base-$t.gguf
  ftype=$t
  [[ $t = MXFP4 ]] && ftype=MXFP4_MOE   # with --pure every weight gets the ftype's default type
  [[ $t = IQ2_S ]] && ftype=IQ2_M       # (IQ2_S's default is IQ2_XS)
  if [[ ! -f $f ]]; then
    echo "bench-iq: quantizing to $t" >&2
    "$peer/run" llama-quantize --pure --imatrix "$WORK/uniform.dat" "$SRC" "$f" "$ftype" "$THREADS" > "$f.log" 2>&1 \
      || { echo "bench-iq: llama-quantize $t failed, see $f.log" >&2; continue; }
  fi
  files+=("$f")
done
exec "$here/scripts/bench-vs-llama.sh" -r "$ROUNDS" -t "$THREADS" -p "$NP" -n "$NG" "${VARIANTS[@]}" --g4 "$G4" "${files[@]}"
