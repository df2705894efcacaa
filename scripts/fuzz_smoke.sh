#!/usr/bin/env bash
# The test suite's libFuzzer smoke run: when clang is installed, builds the harnesses
# (ASan + UBSan) in BUILD_DIR and fuzzes each for FUZZ_SECONDS (default 3), starting from
# the repo corpus. Exits 77 (ctest: skipped) without clang.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v clang++ >/dev/null || { echo "clang++ not installed: fuzz smoke run skipped"; exit 77; }
BUILD=${1:?usage: fuzz_smoke.sh BUILD_DIR}
OUT=$BUILD/fuzz-smoke
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DG4_BUILD_FUZZERS=ON -DG4_BUILD_TESTS=OFF \
  -DG4_BUILD_BENCHMARKS=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
targets=(gguf safetensors config request tokenizer_json chat kld_base)
cmake --build "$BUILD" -j2 --target $(printf 'fuzz_%s ' "${targets[@]}") >/dev/null
fails=0
for t in "${targets[@]}"; do
  rm -rf "$OUT/$t" && mkdir -p "$OUT/$t/corpus" "$OUT/$t/crashes"
  if ! "$BUILD/fuzz/fuzz_$t" "$OUT/$t/corpus" fuzz/corpus/$t -max_total_time="${FUZZ_SECONDS:-3}" -max_len=65536 \
       -rss_limit_mb=2048 -timeout=10 -artifact_prefix="$OUT/$t/crashes/" >"$OUT/$t/log" 2>&1; then
    echo "FAIL fuzz_$t:"; tail -n 30 "$OUT/$t/log"; fails=$((fails + 1))
  else
    echo "ok   fuzz_$t: $(grep -o 'Done [0-9]* runs' "$OUT/$t/log" || tail -n 1 "$OUT/$t/log")"
  fi
done
exit $fails
