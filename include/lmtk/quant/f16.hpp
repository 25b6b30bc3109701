#pragma once
// F16 (GGUF id 1): IEEE binary16 values stored as raw bits; a "block" is one value.
#include <cstddef>
#include <cstdint>
#include <type_traits>

#if defined(__F16C__)
#include <immintrin.h>
#endif

#include <xsimd/xsimd.hpp>

#include <lmtk/core/fp16.hpp>
#include <lmtk/quant/ggml_type.hpp>
#include <lmtk/quant/policy.hpp>

namespace lmtk::quant {

namespace detail {

// batch::size halves at p -> floats, the same bit manipulation as core::fp16_to_f32 done lane-wise
// with integer batches, so it vectorises on every xsimd arch (F16C is x86-only and xsimd 8.1 does
// not expose it).
template <class Arch>
xsimd::batch<float, Arch> load_fp16(const std::uint16_t* p) noexcept {
    using u32 = xsimd::batch<std::uint32_t, Arch>;
    using f32 = xsimd::batch<float, Arch>;
#if defined(__F16C__) && defined(__AVX512F__)
    // x86 converts halves in one instruction (vcvtph2ps); it makes F16 decode memory-bound where
    // the bit manipulation below costs ~10 instructions per vector (bench/quant_kernels.cpp).
    if constexpr (std::is_base_of_v<xsimd::avx512f, Arch>)
        return f32(_mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))));
#endif
#if defined(__F16C__) && defined(__AVX__)
    if constexpr (std::is_base_of_v<xsimd::avx, Arch> && f32::size == 8)
        return f32(_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
#endif
    const u32 h = load_widened<std::uint32_t, Arch>(p);  // each half zero-extended into a lane
    const u32 sign = shift_left<16>(h & u32(0x8000u));
    const u32 rest = shift_left<13>(h & u32(0x7fffu));
    // Rebias the exponent (15 -> 127) by a multiply: subnormal halves come out exact too.
    const u32 finite = xsimd::bitwise_cast<u32>(xsimd::bitwise_cast<f32>(rest) * f32(0x1p112f));
    const u32 inf_nan = rest | u32(0x7f800000u);
    const auto is_inf_nan = (h & u32(0x7c00u)) == u32(0x7c00u);
    return xsimd::bitwise_cast<f32>(xsimd::select(is_inf_nan, inf_nan, finite) | sign);
}

}  // namespace detail

struct f16 {
    static constexpr ggml_type type_id = ggml_type::f16;
    static constexpr std::size_t block_elems = 1;
    struct block {
        std::uint16_t bits;  // binary16
    };
    static_assert(sizeof(block) == 2, "f16: padding");
    static_assert(std::is_trivially_copyable_v<block>);

    // Reference: y[i] = h2f(w[i]).
    static void dequantize_row(const block* w, float* y, std::size_t n_blocks) noexcept {
        for (std::size_t i = 0; i < n_blocks; ++i) y[i] = core::fp16_to_f32(w[i].bits);
    }

    // Round to nearest even; out-of-range values become +-inf.
    static void quantize_row(const float* x, block* out, std::size_t n_blocks) noexcept {
        for (std::size_t i = 0; i < n_blocks; ++i) out[i].bits = core::f32_to_fp16(x[i]);
    }

    template <class Arch>
    static float dot(Arch, const block* w, const float* x, std::size_t n_blocks) noexcept {
        const std::uint16_t* h = reinterpret_cast<const std::uint16_t*>(w);
        return detail::elementwise_dot<Arch>(
            n_blocks, x, [h](std::size_t i) { return detail::load_fp16<Arch>(h + i); },
            [h](std::size_t i) { return core::fp16_to_f32(h[i]); });
    }
};
static_assert(quant_policy<f16>);

}  // namespace lmtk::quant
