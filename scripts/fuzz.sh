#!/usr/bin/env bash
# Builds the libFuzzer harnesses with clang (ASan + UBSan) and runs each for
# FUZZ_SECONDS (default 600), seeded with the fixtures. Usage: scripts/fuzz.sh [gguf|safetensors|config ...]
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${FUZZ_SECONDS:-600}
targets=("$@")
((${#targets[@]})) || targets=(gguf safetensors config)
command -v clang++ >/dev/null || { apt-get update -qq && apt-get install -y -qq clang libclang-rt-dev >/dev/null; }
cmake -S . -B build-fuzz -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DG4_BUILD_FUZZERS=ON -DG4_BUILD_TESTS=OFF \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-fuzz --target $(printf 'fuzz_%s ' "${targets[@]}")
for t in "${targets[@]}"; do
  corpus=fuzz-out/corpus-$t
  mkdir -p "$corpus" fuzz-out/crashes-$t
  case $t in
    gguf) cp -n tests/fixtures/gguf/tiny-*.gguf "$corpus"/ ;;
    safetensors) cp -n tests/fixtures/tiny-dense/model.safetensors "$corpus"/ ;;
    config) for v in tiny-e tiny-dense tiny-moe brown-mini; do cp -n tests/fixtures/$v/config.json "$corpus/$v.json" 2>/dev/null || true; done
            cp -n models/brown-mini/config.json "$corpus/brown-mini.json" ;;
  esac
  echo "fuzz_$t: ${SECONDS_EACH}s"
  ./build-fuzz/fuzz/fuzz_$t "$corpus" -max_total_time="$SECONDS_EACH" -max_len=65536 -rss_limit_mb=2048 \
    -artifact_prefix=fuzz-out/crashes-$t/ -print_final_stats=1 2>&1 | tail -n 25 | tee "fuzz-out/$t.log"
done
