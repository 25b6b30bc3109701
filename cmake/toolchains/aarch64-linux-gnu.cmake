# Cross-compiling lmtk for 64-bit ARM Linux with Debian's g++-aarch64-linux-gnu; the programs run
# under qemu-aarch64 (Debian's qemu-user), which ctest uses as the emulator. scripts/test-aarch64
# drives it.
#
# lmtk's dependencies are header-only (xsimd, xtensor, Boost, nlohmann_json, Catch2 2.x): their
# host packages' CMake files serve the target as well, so packages are looked up on the host too;
# libraries and headers come from the cross sysroot only.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
set(CMAKE_LIBRARY_ARCHITECTURE aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE BOTH)
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64;-L;/usr/aarch64-linux-gnu)
