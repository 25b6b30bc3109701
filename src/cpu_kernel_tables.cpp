// The list of kernel levels compiled into lmtk::cpu_kernels (one LMTK_HAS_LEVEL_<name> per copy
// of cpu_kernels.cpp, set by CMake), lowest first.
#include <lmtk/quant/cpu_kernels.hpp>

#define LMTK_LEVEL_ENTRY(name) extern "C" const lmtk::quant::kernel_table* lmtk_cpu_kernels_##name() noexcept;
#ifdef LMTK_HAS_LEVEL_generic
LMTK_LEVEL_ENTRY(generic)
#endif
#ifdef LMTK_HAS_LEVEL_sse4_2
LMTK_LEVEL_ENTRY(sse4_2)
#endif
#ifdef LMTK_HAS_LEVEL_avx2
LMTK_LEVEL_ENTRY(avx2)
#endif
#ifdef LMTK_HAS_LEVEL_avx512_vnni
LMTK_LEVEL_ENTRY(avx512_vnni)
#endif
#ifdef LMTK_HAS_LEVEL_neon_dotprod
LMTK_LEVEL_ENTRY(neon_dotprod)
#endif

extern "C" const lmtk::quant::kernel_table* const* lmtk_cpu_kernel_tables(std::size_t* count) noexcept {
    static const lmtk::quant::kernel_table* const tables[] = {
#ifdef LMTK_HAS_LEVEL_generic
        lmtk_cpu_kernels_generic(),
#endif
#ifdef LMTK_HAS_LEVEL_sse4_2
        lmtk_cpu_kernels_sse4_2(),
#endif
#ifdef LMTK_HAS_LEVEL_avx2
        lmtk_cpu_kernels_avx2(),
#endif
#ifdef LMTK_HAS_LEVEL_avx512_vnni
        lmtk_cpu_kernels_avx512_vnni(),
#endif
#ifdef LMTK_HAS_LEVEL_neon_dotprod
        lmtk_cpu_kernels_neon_dotprod(),
#endif
    };
    *count = sizeof tables / sizeof tables[0];
    return tables;
}
