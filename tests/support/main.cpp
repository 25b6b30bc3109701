#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>

// The kernels of default_set, compiled once for every test program (the other test units get
// <lmtk/quant/compile_once.hpp> forced in; see tests/CMakeLists.txt).
#define LMTK_COMPILE_DEFAULT_KERNELS_HERE
#include <lmtk/quant/compile_once.hpp>
