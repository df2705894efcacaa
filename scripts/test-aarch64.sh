#!/usr/bin/env bash
# Cross-compiles the portable core of g4 for aarch64 (Debian's g++-aarch64-linux-gnu) and runs
# the forward, quant, tokenizer and kernel tests under qemu-user. Installs what is missing.
# The library is built for plain ARMv8 (NEON kernels with vmull/vpadal); g4_dotprod_tests runs
# the kernel and decoder tests again with fast_neon.cc built for ARMv8.2-A + dot product (vdotq).
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(g++-aarch64-linux-gnu qemu-user cmake ninja-build googletest nlohmann-json3-dev libfmt-dev)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "test-aarch64: installing ${missing[*]}"
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

BUILD_DIR=${AARCH64_BUILD_DIR:-build-aarch64}
SYSROOT=/usr/aarch64-linux-gnu
# fmt and nlohmann-json header-only: only their headers, never the host's /usr/include.
DEPS="$PWD/$BUILD_DIR/deps/include"
mkdir -p "$DEPS"
ln -sfn /usr/include/fmt "$DEPS/fmt"
ln -sfn /usr/include/nlohmann "$DEPS/nlohmann"

MARCH=${G4_AARCH64_MARCH:-armv8-a}
start=$(date +%s)
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_SYSTEM_NAME=Linux -DCMAKE_SYSTEM_PROCESSOR=aarch64 \
  -DCMAKE_CXX_COMPILER=aarch64-linux-gnu-g++ -DCMAKE_C_COMPILER=aarch64-linux-gnu-gcc \
  -DCMAKE_CXX_FLAGS="-march=$MARCH" \
  -DCMAKE_FIND_ROOT_PATH="$SYSROOT" -DCMAKE_FIND_ROOT_PATH_MODE_PROGRAM=NEVER \
  -DCMAKE_FIND_ROOT_PATH_MODE_LIBRARY=ONLY -DCMAKE_FIND_ROOT_PATH_MODE_INCLUDE=ONLY \
  -DG4_CORE_ONLY=ON -DG4_HEADER_ONLY_DEPS="$DEPS" -DG4_GTEST_SOURCE=/usr/src/googletest >/dev/null
cmake --build "$BUILD_DIR" -j"$(nproc)" --target g4_core_tests g4_alloc_tests g4_dotprod_tests
built=$(date +%s)

# The subset that runs under qemu in a few minutes (README, "Portable build"): every kernel
# test, the tiny-model and GGUF forward passes against the gold, the tokenizer, and the
# quantizer's bit-exactness and edge cases. Left out: the brown-mini perplexity runs and
# full-size forward passes (minutes each under emulation); they run natively in scripts/test.sh.
FILTER='Blocks.*:FastKernels.*:*/TinyForward.*:*/GgufForward.F32GgufMatchesGold*:Tokenizer.*'
FILTER+=':Quantize.Q8_0BitExactWithLlamaCpp:Quantize.Q4_0BitExactWithLlamaCpp:Quantize.ReferenceQuantizersEdgeCases'
FILTER+=':Quantize.F32RoundTripGivesIdenticalLogits'
QEMU=(qemu-aarch64 -L "$SYSROOT")
OMP_NUM_THREADS=2 "${QEMU[@]}" "$BUILD_DIR/tests/g4_alloc_tests"
OMP_NUM_THREADS=2 "${QEMU[@]}" "$BUILD_DIR/tests/g4_core_tests" --gtest_filter="$FILTER"
OMP_NUM_THREADS=2 "${QEMU[@]}" "$BUILD_DIR/tests/g4_dotprod_tests" --gtest_filter='FastKernels.*:Blocks.*'
end=$(date +%s)
echo "test-aarch64 ($MARCH): build $((built - start)) s, qemu tests $((end - built)) s"
