#pragma once
// The CPU target: an empty tag naming the xsimd architecture the kernels are instantiated for.
#include <xsimd/xsimd.hpp>

namespace lmtk::target {

template <class Arch = xsimd::default_arch>
struct cpu {
    using arch = Arch;
    static_assert(Arch::supported(),
                  "lmtk::target::cpu<Arch>: this translation unit is not compiled for Arch "
                  "(add its -m flags, or use xsimd::default_arch)");
    static constexpr const char* name() noexcept { return Arch::name(); }
};

}  // namespace lmtk::target
