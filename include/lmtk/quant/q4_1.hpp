#pragma once
// Q4_1 (GGUF id 3): 32 weights share an fp16 scale d and an fp16 offset m, 4 bits each.
// Low nibbles hold the first half of the block, high nibbles the second half:
// w[j] = (qs[j] & 0xF) * d + m, w[j + 16] = (qs[j] >> 4) * d + m, j < 16.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include <xsimd/xsimd.hpp>

#include <lmtk/core/fp16.hpp>
#include <lmtk/quant/block_common.hpp>
#include <lmtk/quant/ggml_type.hpp>
#include <lmtk/quant/policy.hpp>

namespace lmtk::quant {

struct q4_1 {
    static constexpr ggml_type type_id = ggml_type::q4_1;
    static constexpr std::size_t block_elems = 32;
    static constexpr std::size_t half = block_elems / 2;
    struct block {
        std::uint16_t d;  // scale, fp16 bits
        std::uint16_t m;  // offset (the block minimum), fp16 bits
        std::uint8_t qs[half];
    };
    static_assert(sizeof(block) == 2 * sizeof(std::uint16_t) + half, "q4_1: padding");
    static_assert(std::is_trivially_copyable_v<block>);

    // Reference decoder, the executable spec.
    static void dequantize_row(const block* w, float* y, std::size_t n_blocks) noexcept {
        for (std::size_t b = 0; b < n_blocks; ++b, y += block_elems) {
            const float d = core::fp16_to_f32(w[b].d), m = core::fp16_to_f32(w[b].m);
            for (std::size_t j = 0; j < half; ++j) {
                y[j] = static_cast<float>(w[b].qs[j] & 0xF) * d + m;
                y[j + half] = static_cast<float>(w[b].qs[j] >> 4) * d + m;
            }
        }
    }

    // Reference quantizer (x finite), ggml's rule so files match llama.cpp's bit for bit:
    // m = min(x), d = (max(x) - m) / 15, q = min(15, trunc((x - m) / d + 0.5)), with the quants
    // computed against the unrounded d and m before both are stored as fp16.
    static void quantize_row(const float* x, block* out, std::size_t n_blocks) noexcept {
        for (std::size_t b = 0; b < n_blocks; ++b, x += block_elems) {
            const auto [lo, hi] = std::minmax_element(x, x + block_elems);
            const float mn = *lo, d = (*hi - mn) / 15.0f;
            const float inv_d = detail::safe_inverse(d);
            out[b].d = core::f32_to_fp16(d);
            out[b].m = core::f32_to_fp16(mn);
            const auto quant = [&](float v) noexcept {
                return static_cast<std::uint8_t>(std::min(15.0f, std::trunc((v - mn) * inv_d + 0.5f)));
            };
            for (std::size_t j = 0; j < half; ++j)
                out[b].qs[j] = static_cast<std::uint8_t>(quant(x[j]) | (quant(x[j + half]) << 4));
        }
    }

    template <class Arch>
    static float dot(Arch, const block* w, const float* x, std::size_t n_blocks) noexcept {
        using batch = xsimd::batch<float, Arch>;
        static_assert(detail::whole_batches<Arch>(block_elems), "q4_1: a block must be whole batches");
        // sum (q d + m) x = d * sum(q x) + m * sum(x), both per block.
        batch acc(0.0f);
        for (std::size_t b = 0; b < n_blocks; ++b, x += block_elems) {
            alignas(64) std::int8_t q[block_elems];
            for (std::size_t j = 0; j < half; ++j) {
                q[j] = static_cast<std::int8_t>(w[b].qs[j] & 0xF);
                q[j + half] = static_cast<std::int8_t>(w[b].qs[j] >> 4);
            }
            batch qx, sx;
            detail::dot_i8_and_sum<Arch>(q, x, block_elems, qx, sx);
            acc = xsimd::fma(batch(core::fp16_to_f32(w[b].d)), qx, acc);
            acc = xsimd::fma(batch(core::fp16_to_f32(w[b].m)), sx, acc);
        }
        return xsimd::hadd(acc);
    }
};
static_assert(quant_policy<q4_1>);

}  // namespace lmtk::quant
