#pragma once
// The contract every tensor format meets. A format is a policy type: a block layout, a scalar
// reference (the executable spec), and one SIMD dot kernel written over an xsimd arch tag.
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include <xsimd/xsimd.hpp>

#include <lmtk/quant/ggml_type.hpp>

namespace lmtk::quant {

// P::block is the on-disk unit of P::block_elems values. Its size must agree with the GGUF
// type table, because the loader sizes tensors from that table and the kernels walk blocks.
template <class P>
concept quant_policy =
    std::same_as<std::remove_cv_t<decltype(P::type_id)>, ggml_type> &&
    std::same_as<std::remove_cv_t<decltype(P::block_elems)>, std::size_t> &&
    std::is_trivially_copyable_v<typename P::block> &&
    std::is_standard_layout_v<typename P::block> &&
    P::block_elems == traits_of(P::type_id).block_elems &&
    sizeof(typename P::block) == traits_of(P::type_id).block_bytes &&
    requires(const typename P::block* w, typename P::block* out, const float* x, float* y, std::size_t n_blocks) {
        // Scalar reference decoder: n_blocks blocks -> n_blocks * block_elems floats.
        { P::dequantize_row(w, y, n_blocks) } noexcept;
        // Reference quantizer: n_blocks * block_elems floats -> n_blocks blocks.
        { P::quantize_row(x, out, n_blocks) } noexcept;
        // sum_i w[i] * x[i] over n_blocks blocks; one body for every xsimd architecture.
        { P::dot(xsimd::default_arch{}, w, x, n_blocks) } noexcept -> std::same_as<float>;
    };

namespace detail {

// v << n in every 32-bit lane, spelled as a multiply by 2^n: xsimd 8.1's AVX-512 immediate shift
// trips a false GCC 12 -Wuninitialized inside <avx512fintrin.h> in every TU that uses it.
template <unsigned n, class Arch>
xsimd::batch<std::uint32_t, Arch> shift_left(const xsimd::batch<std::uint32_t, Arch>& v) noexcept {
    static_assert(n < 32);
    return v * xsimd::batch<std::uint32_t, Arch>(std::uint32_t{1} << n);
}

// Dot product for the one-value-per-block formats (F32, F16, BF16): `load(i)` yields weights
// i .. i+batch::size-1 as floats, `at(i)` the single weight i for the scalar tail. Four
// independent accumulators keep the FMA units busy: one chain would stall on FMA latency.
template <class Arch, class Load, class At>
float elementwise_dot(std::size_t n, const float* x, Load load, At at) noexcept {
    using batch = xsimd::batch<float, Arch>;
    constexpr std::size_t width = batch::size;
    batch acc0(0.0f), acc1(0.0f), acc2(0.0f), acc3(0.0f);
    std::size_t i = 0;
    for (; i + 4 * width <= n; i += 4 * width) {
        acc0 = xsimd::fma(load(i), batch::load_unaligned(x + i), acc0);
        acc1 = xsimd::fma(load(i + width), batch::load_unaligned(x + i + width), acc1);
        acc2 = xsimd::fma(load(i + 2 * width), batch::load_unaligned(x + i + 2 * width), acc2);
        acc3 = xsimd::fma(load(i + 3 * width), batch::load_unaligned(x + i + 3 * width), acc3);
    }
    for (; i + width <= n; i += width) acc0 = xsimd::fma(load(i), batch::load_unaligned(x + i), acc0);
    float sum = xsimd::hadd((acc0 + acc1) + (acc2 + acc3));
    for (; i < n; ++i) sum += at(i) * x[i];
    return sum;
}

}  // namespace detail

}  // namespace lmtk::quant
