// The kernels of quant::default_set on the default CPU target, compiled once for all of lmtk's
// own programs in a build (the tool, the tests, the examples); they see them as extern through
// the forced <lmtk/quant/compile_once.hpp> (see CMakeLists.txt, lmtk_default_kernels).
#define LMTK_COMPILE_DEFAULT_KERNELS_HERE
#include <lmtk/quant/compile_once.hpp>
