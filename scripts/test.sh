#!/usr/bin/env bash
# Builds (installing dependencies if needed) and runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
ctest --test-dir "${BUILD_DIR:-build}" --output-on-failure -j2 --timeout 600
# The portable core cross-compiled for aarch64 and tested under qemu (README, "Portable build").
[[ "${G4_SKIP_AARCH64:-0}" == 1 ]] || ./scripts/test-aarch64.sh
