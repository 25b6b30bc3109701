#pragma once
// Q8_0 (GGUF id 8): 32 weights share one fp16 scale; w[j] = d * qs[j].
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include <xsimd/xsimd.hpp>

#include <lmtk/core/fp16.hpp>
#include <lmtk/quant/ggml_type.hpp>
#include <lmtk/quant/policy.hpp>

namespace lmtk::quant {

struct q8_0 {
    static constexpr ggml_type type_id = ggml_type::q8_0;
    static constexpr std::size_t block_elems = 32;
    struct block {
        std::uint16_t d;  // scale, fp16 bits
        std::int8_t qs[block_elems];
    };
    static_assert(sizeof(block) == sizeof(std::uint16_t) + block_elems, "q8_0: padding");
    static_assert(std::is_trivially_copyable_v<block>);

    // Reference decoder, the executable spec: y[j] = d * qs[j].
    static void dequantize_row(const block* w, float* y, std::size_t n_blocks) noexcept {
        for (std::size_t b = 0; b < n_blocks; ++b) {
            const float d = core::fp16_to_f32(w[b].d);
            for (std::size_t j = 0; j < block_elems; ++j) *y++ = d * static_cast<float>(w[b].qs[j]);
        }
    }

    // Reference quantizer (x finite): d = amax / 127, q = round(x / d), ties away from zero.
    // Like ggml, the quants are computed against the unrounded d (as x * (1/d)) and only then
    // is d stored as fp16, so files quantized here match ggml's bit for bit.
    static void quantize_row(const float* x, block* out, std::size_t n_blocks) noexcept {
        for (std::size_t b = 0; b < n_blocks; ++b, x += block_elems) {
            float amax = 0.0f;
            for (std::size_t j = 0; j < block_elems; ++j) amax = std::max(amax, std::fabs(x[j]));
            const float d = amax / 127.0f;
            const float inv_d = d != 0.0f ? 1.0f / d : 0.0f;
            out[b].d = core::f32_to_fp16(d);
            for (std::size_t j = 0; j < block_elems; ++j) {
                // |x * inv_d| <= 127 up to one rounding, so the clamp only guards the cast.
                const float q = std::clamp(std::round(x[j] * inv_d), -127.0f, 127.0f);
                out[b].qs[j] = static_cast<std::int8_t>(q);
            }
        }
    }

    template <class Arch>
    static float dot(Arch, const block* w, const float* x, std::size_t n_blocks) noexcept {
        using batch = xsimd::batch<float, Arch>;
        constexpr std::size_t width = batch::size;
        static_assert(block_elems % width == 0, "q8_0: a block must be whole batches");
        // Each block's partial sum is scaled into a running vector sum; the horizontal add is
        // paid once per row. Two block accumulators break the cross-block dependency chain.
        const auto block_sum = [](const block& b, const float* xb) noexcept {
            batch s(0.0f);
            for (std::size_t j = 0; j < block_elems; j += width)
                s = xsimd::fma(detail::load_widened<float, Arch>(b.qs + j), batch::load_unaligned(xb + j), s);
            return s;
        };
        batch acc0(0.0f), acc1(0.0f);
        std::size_t b = 0;
        for (; b + 2 <= n_blocks; b += 2, x += 2 * block_elems) {
            acc0 = xsimd::fma(batch(core::fp16_to_f32(w[b].d)), block_sum(w[b], x), acc0);
            acc1 = xsimd::fma(batch(core::fp16_to_f32(w[b + 1].d)), block_sum(w[b + 1], x + block_elems), acc1);
        }
        if (b < n_blocks) acc0 = xsimd::fma(batch(core::fp16_to_f32(w[b].d)), block_sum(w[b], x), acc0);
        return xsimd::hadd(acc0 + acc1);
    }
};
static_assert(quant_policy<q8_0>);

}  // namespace lmtk::quant
