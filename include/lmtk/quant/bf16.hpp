#pragma once
// BF16 (GGUF id 30): the top 16 bits of an IEEE binary32; a "block" is one value.
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include <xsimd/xsimd.hpp>

#include <lmtk/core/fp16.hpp>
#include <lmtk/quant/ggml_type.hpp>
#include <lmtk/quant/policy.hpp>

namespace lmtk::quant {

struct bf16 {
    static constexpr ggml_type type_id = ggml_type::bf16;
    static constexpr std::size_t block_elems = 1;
    struct block {
        std::uint16_t bits;  // bfloat16
    };
    static_assert(sizeof(block) == 2, "bf16: padding");
    static_assert(std::is_trivially_copyable_v<block>);

    // Reference: y[i] = float(bits << 16).
    static void dequantize_row(const block* w, float* y, std::size_t n_blocks) noexcept {
        for (std::size_t i = 0; i < n_blocks; ++i) y[i] = core::bf16_to_f32(w[i].bits);
    }

    // Round to nearest even, NaN kept quiet.
    static void quantize_row(const float* x, block* out, std::size_t n_blocks) noexcept {
        for (std::size_t i = 0; i < n_blocks; ++i) out[i].bits = core::f32_to_bf16(x[i]);
    }

    template <class Arch>
    static float dot(Arch, const block* w, const float* x, std::size_t n_blocks) noexcept {
        using f32 = xsimd::batch<float, Arch>;
        const std::uint16_t* b = reinterpret_cast<const std::uint16_t*>(w);
        return detail::elementwise_dot<Arch>(
            n_blocks, x,
            [b](std::size_t i) { return xsimd::bitwise_cast<f32>(detail::shift_left<16>(detail::load_widened<std::uint32_t, Arch>(b + i))); },
            [b](std::size_t i) { return core::bf16_to_f32(b[i]); });
    }
};
static_assert(quant_policy<bf16>);

}  // namespace lmtk::quant
