// The kernels of quant::default_set for one instruction-set level. CMake compiles this file once
// per level (LMTK_KERNEL_LEVEL = sse4_2, avx2, avx512_vnni, neon_dotprod or generic, with that level's -m flags)
// and renames every symbol of each copy apart except its entry point (cmake/isolate_kernels.cmake),
// so no code compiled for one level can be linked into another's path.
#include <memory>
#include <type_traits>

#include <lmtk/quant/cpu_kernels.hpp>

#ifndef LMTK_KERNEL_LEVEL
#error "LMTK_KERNEL_LEVEL names the level this copy is compiled for"
#endif

#define LMTK_CONCAT_(a, b) a##b
#define LMTK_CONCAT(a, b) LMTK_CONCAT_(a, b)

#if defined(LMTK_QUANT_VNNI) && defined(LMTK_QUANT_F16_INTERLEAVED)
#define LMTK_HAS_AVX512_KERNELS true
#else
#define LMTK_HAS_AVX512_KERNELS false
#endif

namespace {

using arch = xsimd::default_arch;
constexpr auto level = lmtk::target::isa::LMTK_KERNEL_LEVEL;

// The flags CMake gives this copy must reach the level it claims, or the table would promise
// kernels it does not hold.
static_assert(level != lmtk::target::isa::sse4_2 || std::is_base_of_v<xsimd::sse4_2, arch>);
static_assert(level != lmtk::target::isa::avx2 || std::is_base_of_v<xsimd::avx2, arch>);
static_assert(level != lmtk::target::isa::avx512_vnni ||
              (std::is_base_of_v<xsimd::avx512bw, arch> && LMTK_HAS_AVX512_KERNELS));
#if defined(LMTK_QUANT_NEON_INTERLEAVED)
static_assert(std::is_base_of_v<xsimd::neon64, arch>);
#else
static_assert(level != lmtk::target::isa::neon_dotprod, "the neon_dotprod copy needs -march=armv8.2-a+dotprod");
#endif

template <class KV>
std::unique_ptr<lmtk::model::attention_pass<KV>> make_attention(const lmtk::model::llama_hparams& hp, std::size_t n_ctx,
                                                                std::size_t n_batch, lmtk::core::thread_pool& pool) {
    return std::make_unique<lmtk::model::attention<KV, arch>>(hp, n_ctx, n_batch, pool);
}

constexpr lmtk::quant::kernel_table table{level, &lmtk::quant::resolve<lmtk::quant::default_set, arch>,
                                          &lmtk::quant::resolve_group<lmtk::quant::default_set, arch>,
                                          &make_attention<lmtk::model::kv_f32>, &make_attention<lmtk::model::kv_f16>};

}  // namespace

extern "C" const lmtk::quant::kernel_table* LMTK_CONCAT(lmtk_cpu_kernels_, LMTK_KERNEL_LEVEL)() noexcept { return &table; }
