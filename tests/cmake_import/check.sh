#!/usr/bin/env bash
# Installs lmtk into a scratch prefix and builds the streaming example with
# find_package(lmtk CONFIG), and the local-or-remote example against lmtk::serve; builds a lighter program with add_subdirectory; runs both on the
# real model. The consumers build without optimisation (CMAKE_BUILD_TYPE empty): this checks
# packaging and linking, not speed, and -O0 saves about two minutes of the suite.
set -euo pipefail
src=$1; work=$2; model=$3
rm -rf "$work"; mkdir -p "$work"
expect() {  # expect TEXT COMMAND...: the command succeeds and prints TEXT
  local out
  out=$("${@:2}" 2>&1) || { echo "failed: ${*:2}"; echo "$out"; exit 1; }
  [[ "$out" == *"$1"* ]] || { echo "no '$1' in the output of ${*:2}:"; echo "$out"; exit 1; }
}
cmake -S "$src" -B "$work/lmtk" -G Ninja -DLMTK_BUILD_TESTS=OFF -DLMTK_BUILD_TOOLS=OFF -DLMTK_BUILD_EXAMPLES=OFF \
  -DCMAKE_INSTALL_PREFIX="$work/prefix" >/dev/null
cmake --install "$work/lmtk" >/dev/null
cmake -S "$src/tests/cmake_import" -B "$work/by_package" -G Ninja -DCMAKE_BUILD_TYPE= \
  -DCMAKE_PREFIX_PATH="$work/prefix" >/dev/null
cmake --build "$work/by_package" >/dev/null
expect "Once upon a time" "$work/by_package/consumer" "$model" "Once upon a time"
# lmtk::serve is installed and exported too: the example that switches between a local and a
# remote model links it.
cmake -S "$src/tests/cmake_import" -B "$work/by_package_serve" -G Ninja -DCMAKE_BUILD_TYPE= \
  -DCMAKE_PREFIX_PATH="$work/prefix" -DCONSUMER_SOURCE="$src/examples/local_or_remote.cpp" -DCONSUMER_LINK_SERVE=ON >/dev/null
cmake --build "$work/by_package_serve" >/dev/null
expect "Once upon a time" "$work/by_package_serve/consumer" --model "$model" "Once upon a time"
cmake -S "$src/tests/cmake_import" -B "$work/by_subdirectory" -G Ninja -DCMAKE_BUILD_TYPE= \
  -DLMTK_SOURCE_DIR="$src" -DCONSUMER_SOURCE="$src/tests/cmake_import/inspect_model.cpp" >/dev/null
cmake --build "$work/by_subdirectory" >/dev/null
expect "llama 5 tokens: Once upon a time" "$work/by_subdirectory/consumer" "$model" "Once upon a time"
echo "cmake_import: find_package and add_subdirectory consumers built and ran"
