#pragma once
// F32 (GGUF id 0): plain IEEE binary32 values; a "block" is one value.
#include <cstddef>
#include <cstring>
#include <type_traits>

#include <xsimd/xsimd.hpp>

#include <lmtk/quant/ggml_type.hpp>
#include <lmtk/quant/policy.hpp>

namespace lmtk::quant {

struct f32 {
    static constexpr ggml_type type_id = ggml_type::f32;
    static constexpr std::size_t block_elems = 1;
    struct block {
        float value;
    };
    static_assert(sizeof(block) == 4, "f32: padding");
    static_assert(std::is_trivially_copyable_v<block>);

    // Reference: y[i] = w[i].
    static void dequantize_row(const block* w, float* y, std::size_t n_blocks) noexcept {
        for (std::size_t i = 0; i < n_blocks; ++i) y[i] = w[i].value;
    }

    static void quantize_row(const float* x, block* out, std::size_t n_blocks) noexcept {
        for (std::size_t i = 0; i < n_blocks; ++i) out[i].value = x[i];
    }

    template <class Arch>
    static float dot(Arch, const block* w, const float* x, std::size_t n_blocks) noexcept {
        // block is standard layout with one float member, so the array is an array of floats.
        const float* v = reinterpret_cast<const float*>(w);
        return detail::elementwise_dot<Arch>(
            n_blocks, x, [v](std::size_t i) { return xsimd::batch<float, Arch>::load_unaligned(v + i); },
            [v](std::size_t i) { return v[i]; });
    }
};
static_assert(quant_policy<f32>);

}  // namespace lmtk::quant
