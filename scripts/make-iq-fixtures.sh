#!/usr/bin/env bash
# Makes tests/fixtures/iq/: for each IQ/ternary/MXFP4 type, llama.cpp's llama-quantize output for
# two brown-mini tensors (blk.0.attn_q [256x256], blk.0.ffn_down [768x256]), and expected.json with
# llama.cpp's own dequantization of them and of random.gguf (64 blocks of random bytes per type) (libggml-base.so's to_float: FNV-1a 64 of the f32 bits and
# the first 64 values). tests/test_iq.cc decodes the same bytes with g4 and compares bit for bit.
#
#   bash scripts/make-iq-fixtures.sh            (needs bash /work/shared/peers/llama-cpp.sh first)
#
# --pure puts every weight in the type (brown-mini's widths are multiples of 256; the one tensor
# whose rows are 192 wide, per_layer_token_embd, falls back). IQ3_*, IQ2_* and IQ1_* need an importance
# matrix in llama-quantize; they get a synthetic one (iq_fixtures.py imatrix-dat), since llama.cpp
# 0.7.0 cannot run brown-mini to compute a real one. IQ4_NL/IQ4_XS are made without one, so that
# g4's writer can be checked byte for byte against them from the same bf16 weights.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
peer=${LLAMA_PEER:-/tmp/llama-cpp-peer}
work=${WORK:-/tmp/g4-iq-fixtures}
out=$here/tests/fixtures/iq
mkdir -p "$work" "$out"
src=$here/tests/fixtures/gguf/brown-mini-bf16.gguf
python3 "$here/scripts/iq_fixtures.py" imatrix-dat "$src" "$work/synth.dat"
L=$peer/usr/lib/x86_64-linux-gnu
pyrun() { "$peer/lib64/ld-linux-x86-64.so.2" --library-path "$L:$L/ggml:$peer/usr/lib64:/lib/x86_64-linux-gnu" /usr/bin/python3 "$@"; }
files=()
for t in IQ4_NL IQ4_XS MXFP4 IQ3_XXS IQ3_S IQ2_XXS IQ2_XS IQ2_S IQ1_S IQ1_M TQ1_0 TQ2_0; do
  args=(--pure)
  case $t in IQ3_*|IQ2_*|IQ1_*) args+=(--imatrix "$work/synth.dat") ;; esac
  ftype=$t   # with --pure every weight gets the ftype's default type:
  [ $t = MXFP4 ] && ftype=MXFP4_MOE   # MXFP4
  [ $t = IQ2_S ] && ftype=IQ2_M       # IQ2_S (ftype IQ2_S's default is IQ2_XS)
  "$peer/run" llama-quantize "${args[@]}" "$src" "$work/brown-mini-$t.gguf" $ftype 2 > "$work/$t.log" 2>&1
  python3 "$here/scripts/iq_fixtures.py" subset "$work/brown-mini-$t.gguf" "$out/brown-mini-$t.gguf" $t \
    blk.0.attn_q.weight blk.0.ffn_down.weight
  files+=("$out/brown-mini-$t.gguf")
done
python3 "$here/scripts/iq_fixtures.py" random "$out/random.gguf" IQ4_NL IQ4_XS MXFP4 IQ3_XXS IQ3_S IQ2_XXS IQ2_XS IQ2_S \
  IQ1_S IQ1_M TQ1_0 TQ2_0
files+=("$out/random.gguf")
pyrun "$here/scripts/iq_fixtures.py" expect "$out/expected.json" "${files[@]}"
# IQ4_NL/IQ4_XS with the synthetic importance matrix, for g4's --imatrix path; the matrix itself in
# both of llama.cpp's formats (legacy .dat, and GGUF).
cp "$work/synth.dat" "$out/synth-imatrix.dat"
python3 "$here/scripts/iq_fixtures.py" imatrix-gguf "$out/synth-imatrix.dat" "$out/synth-imatrix.gguf"
for t in IQ4_NL IQ4_XS; do
  "$peer/run" llama-quantize --pure --imatrix "$work/synth.dat" "$src" "$work/brown-mini-$t-imatrix.gguf" $t 2 > "$work/$t-imatrix.log" 2>&1
  python3 "$here/scripts/iq_fixtures.py" subset "$work/brown-mini-$t-imatrix.gguf" "$out/brown-mini-$t-imatrix.gguf" $t \
    blk.0.attn_q.weight blk.0.ffn_down.weight
done
# A split GGUF as llama.cpp writes it (one tensor per part), for tests/test_split.cc.
mkdir -p "$out/split"
"$peer/run" llama-gguf-split --split --split-max-tensors 1 "$out/brown-mini-IQ4_NL.gguf" "$out/split/brown-mini-IQ4_NL" > /dev/null
ls -la "$out" "$out/split"
