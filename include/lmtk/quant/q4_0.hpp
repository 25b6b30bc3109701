#pragma once
// Q4_0 (GGUF id 2): 32 weights share one fp16 scale, 4 bits each with an implicit offset of 8.
// Low nibbles hold the first half of the block, high nibbles the second half (not pairs):
// w[j] = ((qs[j] & 0xF) - 8) * d, w[j + 16] = ((qs[j] >> 4) - 8) * d, j < 16.
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

struct q4_0 {
    static constexpr ggml_type type_id = ggml_type::q4_0;
    static constexpr std::size_t block_elems = 32;
    static constexpr std::size_t half = block_elems / 2;
    struct block {
        std::uint16_t d;  // scale, fp16 bits
        std::uint8_t qs[half];
    };
    static_assert(sizeof(block) == sizeof(std::uint16_t) + half, "q4_0: padding");
    static_assert(std::is_trivially_copyable_v<block>);

    // Reference decoder, the executable spec.
    static void dequantize_row(const block* w, float* y, std::size_t n_blocks) noexcept {
        for (std::size_t b = 0; b < n_blocks; ++b, y += block_elems) {
            const float d = core::fp16_to_f32(w[b].d);
            for (std::size_t j = 0; j < half; ++j) {
                y[j] = static_cast<float>((w[b].qs[j] & 0xF) - 8) * d;
                y[j + half] = static_cast<float>((w[b].qs[j] >> 4) - 8) * d;
            }
        }
    }

    // Reference quantizer (x finite). The value m of largest magnitude (sign kept) sets
    // d = m / -8, so m itself lands exactly on quant 0 (-8 after the offset) and the full
    // negative range is used; values of the other sign reach +8, which clamps to 15.
    // q = min(15, floor(x / d + 8.5)): rounding to nearest with ties up, and x / d computed as
    // x * (1/d) against the unrounded d, as ggml's reference does, so the bits match ggml's.
    static void quantize_row(const float* x, block* out, std::size_t n_blocks) noexcept {
        for (std::size_t b = 0; b < n_blocks; ++b, x += block_elems) {
            float amax = 0.0f, m = 0.0f;
            for (std::size_t j = 0; j < block_elems; ++j) {
                if (std::fabs(x[j]) > amax) {
                    amax = std::fabs(x[j]);
                    m = x[j];
                }
            }
            const float d = m / -8.0f;
            const float inv_d = d != 0.0f ? 1.0f / d : 0.0f;
            out[b].d = core::f32_to_fp16(d);
            const auto quant = [inv_d](float v) noexcept {
                return static_cast<std::uint8_t>(std::clamp(std::floor(v * inv_d + 8.5f), 0.0f, 15.0f));
            };
            for (std::size_t j = 0; j < half; ++j)
                out[b].qs[j] = static_cast<std::uint8_t>(quant(x[j]) | (quant(x[j + half]) << 4));
        }
    }

    template <class Arch>
    static float dot(Arch, const block* w, const float* x, std::size_t n_blocks) noexcept {
        using batch = xsimd::batch<float, Arch>;
        constexpr std::size_t width = batch::size;
        static_assert(block_elems % width == 0, "q4_0: a block must be whole batches");
        batch acc0(0.0f), acc1(0.0f);
        const auto block_sum = [](const block& b, const float* xb) noexcept {
            // Unpack to signed bytes first (a fixed-length byte loop the compiler vectorises),
            // then widen to float as Q8_0 does.
            alignas(64) std::int8_t q[block_elems];
            for (std::size_t j = 0; j < half; ++j) {
                q[j] = static_cast<std::int8_t>((b.qs[j] & 0xF) - 8);
                q[j + half] = static_cast<std::int8_t>((b.qs[j] >> 4) - 8);
            }
            batch s(0.0f);
            for (std::size_t j = 0; j < block_elems; j += width)
                s = xsimd::fma(detail::load_widened<float, Arch>(q + j), batch::load_unaligned(xb + j), s);
            return s;
        };
        std::size_t b = 0;
        for (; b + 2 <= n_blocks; b += 2, x += 2 * block_elems) {
            acc0 = xsimd::fma(batch(core::fp16_to_f32(w[b].d)), block_sum(w[b], x), acc0);
            acc1 = xsimd::fma(batch(core::fp16_to_f32(w[b + 1].d)), block_sum(w[b + 1], x + block_elems), acc1);
        }
        if (b < n_blocks) acc0 = xsimd::fma(batch(core::fp16_to_f32(w[b].d)), block_sum(w[b], x), acc0);
        return xsimd::hadd(acc0 + acc1);
    }
};
static_assert(quant_policy<q4_0>);

}  // namespace lmtk::quant
