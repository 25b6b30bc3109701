// The one translation unit of the tool that compiles the kernels of every format it reads
// (see lmtk/quant/compile_once.hpp).
#define LMTK_COMPILE_DEFAULT_KERNELS_HERE
#include <lmtk/quant/compile_once.hpp>
