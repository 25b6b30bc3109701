#pragma once
// The CUDA compute target: a policy tag like target::cpu. Its kernels are compiled in the
// optional CUDA translation unit(s) under src/cuda (CMake option LMTK_CUDA, target lmtk::cuda);
// this header only declares them, so host code compiles without nvcc.
namespace lmtk::target {

namespace cuda_detail {
// Number of CUDA devices visible to this process (0 when none or no driver).
int device_count() noexcept;
}  // namespace cuda_detail

struct cuda {
    static constexpr const char* name() noexcept { return "cuda"; }
};

}  // namespace lmtk::target
