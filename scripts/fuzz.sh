#!/usr/bin/env bash
# Builds the libFuzzer harnesses with clang (ASan + UBSan) and runs each for
# FUZZ_SECONDS (default 600), seeded with the repo corpus (fuzz/corpus/<target>: seeds and
# the regression inputs of crashes found) and the fixtures. FUZZ_PARALLEL=1 runs the
# targets at the same time (each single-threaded). Crashes land in fuzz-out/crashes-<target>.
# Usage: scripts/fuzz.sh [gguf|safetensors|config|request|tokenizer_json|chat|kld_base ...]
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${FUZZ_SECONDS:-600}
ALL=(gguf safetensors config request tokenizer_json chat kld_base)
targets=("$@")
((${#targets[@]})) || targets=("${ALL[@]}")
command -v clang++ >/dev/null || { apt-get update -qq && apt-get install -y -qq clang libclang-rt-dev >/dev/null; }
cmake -S . -B build-fuzz -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DG4_BUILD_FUZZERS=ON -DG4_BUILD_TESTS=OFF \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-fuzz --target $(printf 'fuzz_%s ' "${targets[@]}")

run_one() {
  local t=$1 corpus=fuzz-out/corpus-$1
  mkdir -p "$corpus" "fuzz-out/crashes-$t"
  [ -d "fuzz/corpus/$t" ] && cp -n fuzz/corpus/$t/* "$corpus"/ 2>/dev/null || true
  case $t in
    gguf) cp -n tests/fixtures/gguf/tiny-*.gguf tests/fixtures/fuzz-*.bin "$corpus"/ ;;
    safetensors) cp -n tests/fixtures/tiny-dense/model.safetensors "$corpus"/ ;;
    config) for v in tiny-e tiny-dense tiny-moe; do cp -n tests/fixtures/$v/config.json "$corpus/$v.json" 2>/dev/null || true; done
            cp -n models/brown-mini/config.json "$corpus/brown-mini.json" ;;
  esac
  ./build-fuzz/fuzz/fuzz_$t "$corpus" -max_total_time="$SECONDS_EACH" -max_len=65536 -rss_limit_mb=2048 \
    -timeout=10 -artifact_prefix=fuzz-out/crashes-$t/ -print_final_stats=1 >"fuzz-out/$t.full.log" 2>&1 || true
  tail -n 25 "fuzz-out/$t.full.log" > "fuzz-out/$t.log"
  echo "fuzz_$t: $(grep -o 'stat::number_of_executed_units: *[0-9]*' "fuzz-out/$t.log" | grep -o '[0-9]*$') executions," \
       "$(ls fuzz-out/crashes-$t | wc -l) crash file(s)"
}
mkdir -p fuzz-out
if [ "${FUZZ_PARALLEL:-0}" = 1 ]; then
  for t in "${targets[@]}"; do run_one "$t" & done
  wait
else
  for t in "${targets[@]}"; do run_one "$t"; done
fi
