#!/usr/bin/env bash
# Installs lmtk into a scratch prefix, builds a consumer with find_package(lmtk CONFIG) and
# another with add_subdirectory, and runs each on the real model.
set -euo pipefail
src=$1; work=$2; model=$3
rm -rf "$work"; mkdir -p "$work"
cmake -S "$src" -B "$work/lmtk" -G Ninja -DLMTK_BUILD_TESTS=OFF -DLMTK_BUILD_TOOLS=OFF -DLMTK_BUILD_EXAMPLES=OFF \
  -DCMAKE_INSTALL_PREFIX="$work/prefix" >/dev/null
cmake --install "$work/lmtk" >/dev/null
cmake -S "$src/tests/cmake_import" -B "$work/by_package" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$work/prefix" >/dev/null
cmake --build "$work/by_package" >/dev/null
"$work/by_package/consumer" "$model" "Once upon a time" 2>/dev/null | grep -q "Once upon a time"
cmake -S "$src/tests/cmake_import" -B "$work/by_subdirectory" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DLMTK_SOURCE_DIR="$src" >/dev/null
cmake --build "$work/by_subdirectory" >/dev/null
"$work/by_subdirectory/consumer" "$model" "Once upon a time" 2>/dev/null | grep -q "Once upon a time"
echo "cmake_import: find_package and add_subdirectory consumers built and ran"
