#pragma once
// The CPU targets: empty tags naming the xsimd architecture the forward pass is instantiated for.
#include <xsimd/xsimd.hpp>

namespace lmtk::target {

// Every kernel compiled for Arch in the including translation unit: what a header-only user gets.
template <class Arch = xsimd::default_arch>
struct cpu {
    using arch = Arch;
    static_assert(Arch::supported(),
                  "lmtk::target::cpu<Arch>: this translation unit is not compiled for Arch "
                  "(add its -m flags, or use xsimd::default_arch)");
    static constexpr const char* name() noexcept { return Arch::name(); }
};

// The weights' kernels chosen when a model loads, among the instruction-set levels compiled into
// lmtk::cpu_kernels (quant/cpu_kernels.hpp), by CPUID or LMTK_CPU; the rest of the forward pass
// (norms, attention, sampling) runs on Arch. What lmtk's own programs use: one binary that takes
// the AVX-512 kernels where the CPU has them and runs on an SSE4.2 one too. A program that names
// it links lmtk::cpu_kernels; the set of formats is then quant::default_set.
template <class Arch = xsimd::default_arch>
struct cpu_dispatch : cpu<Arch> {
    static constexpr bool kernels_at_load = true;
};

template <class Target>
concept chooses_kernels_at_load = requires { requires Target::kernels_at_load; };

}  // namespace lmtk::target
