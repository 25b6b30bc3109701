// CUDA device discovery for the cuda target. The kernels of later issues join this TU set.
#include <lmtk/target/cuda.hpp>

#include <cuda_runtime.h>

namespace lmtk::target::cuda_detail {

int device_count() noexcept {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) return 0;
    return n;
}

}  // namespace lmtk::target::cuda_detail
