#pragma once
// The contract every tensor format meets. A format is a policy type: a block layout, a scalar
// reference (the executable spec), and one SIMD dot kernel written over an xsimd arch tag.
#include <bit>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstring>
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

#if defined(__GNUC__)
// An integer vector of n lanes -> the same values in lanes of `bytes` bytes. GCC 12 lowers a
// conversion that more than doubles the lane size (int8 -> int32) to scalar code, but each
// doubling to one instruction (vpmovsxbw, vpmovsxwd, sxtl, ...), so widen a doubling at a time.
template <std::size_t bytes, std::size_t n, class Vector>
auto widen_to_size(const Vector& v) noexcept {
    using lane = std::remove_cvref_t<decltype(v[0])>;
    if constexpr (sizeof(lane) == bytes) {
        return v;
    } else {
        using twice = std::conditional_t<sizeof(lane) == 1, std::int16_t,
                                         std::conditional_t<sizeof(lane) == 2, std::int32_t, std::int64_t>>;
        using next = std::conditional_t<std::is_signed_v<lane>, twice, std::make_unsigned_t<twice>>;
        using next_vector [[gnu::vector_size(n * sizeof(next))]] = next;
        return widen_to_size<bytes, n>(__builtin_convertvector(v, next_vector));
    }
}
#endif

// batch<To, Arch>::size values at p, each converted from From (a narrower integer) to To.
// xsimd 8.1 does such a load through a stack buffer filled by a scalar copy, which compiles to
// narrow stores and a wide reload that stalls on store forwarding (Q8_0 ran at a third of its
// speed). GCC and Clang's generic vectors convert in registers on every target instead.
template <class To, class Arch, class From>
xsimd::batch<To, Arch> load_widened(const From* p) noexcept {
    using batch = xsimd::batch<To, Arch>;
#if defined(__GNUC__)
    constexpr std::size_t n = batch::size;
    using from_vector [[gnu::vector_size(n * sizeof(From))]] = From;
    using to_vector [[gnu::vector_size(n * sizeof(To))]] = To;
    static_assert(sizeof(to_vector) == sizeof(typename batch::register_type));
    from_vector narrow;
    std::memcpy(&narrow, p, sizeof narrow);
    return batch(std::bit_cast<typename batch::register_type>(
        __builtin_convertvector(widen_to_size<sizeof(To), n>(narrow), to_vector)));
#else
    return batch::load_unaligned(p);
#endif
}

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
