#pragma once
// Q5_1 (GGUF id 7): 32 weights share an fp16 scale d and an fp16 offset m, 5 bits each, laid
// out as Q5_0 (nibbles + a u32 of fifth bits) without the -16: w = q * d + m.
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
#include <lmtk/quant/q5_0.hpp>

namespace lmtk::quant {

struct q5_1 {
    static constexpr ggml_type type_id = ggml_type::q5_1;
    static constexpr std::size_t block_elems = 32;
    struct block {
        std::uint16_t d;      // scale, fp16 bits
        std::uint16_t m;      // offset (the block minimum), fp16 bits
        std::uint8_t qh[4];   // fifth bits, u32 little-endian
        std::uint8_t qs[16];  // low 4 bits
    };
    static_assert(sizeof(block) == 2 * sizeof(std::uint16_t) + 4 + 16, "q5_1: padding");
    static_assert(std::is_trivially_copyable_v<block>);

    // Reference decoder, the executable spec.
    static void dequantize_row(const block* w, float* y, std::size_t n_blocks) noexcept {
        for (std::size_t b = 0; b < n_blocks; ++b, y += block_elems) {
            const float d = core::fp16_to_f32(w[b].d), m = core::fp16_to_f32(w[b].m);
            const std::uint32_t h = detail::load_qh(w[b].qh);
            for (std::size_t j = 0; j < 16; ++j) {
                const int lo = (w[b].qs[j] & 0xF) | static_cast<int>(((h >> j) & 1u) << 4);
                const int hi = (w[b].qs[j] >> 4) | static_cast<int>(((h >> (j + 16)) & 1u) << 4);
                y[j] = static_cast<float>(lo) * d + m;
                y[j + 16] = static_cast<float>(hi) * d + m;
            }
        }
    }

    // Reference quantizer (x finite), ggml's rule: m = min(x), d = (max(x) - m) / 31,
    // q = min(31, trunc((x - m) / d + 0.5)) against the unrounded d and m.
    static void quantize_row(const float* x, block* out, std::size_t n_blocks) noexcept {
        for (std::size_t b = 0; b < n_blocks; ++b, x += block_elems) {
            const auto [lo, hi] = std::minmax_element(x, x + block_elems);
            const float mn = *lo, d = (*hi - mn) / 31.0f;
            const float inv_d = detail::safe_inverse(d);
            out[b].d = core::f32_to_fp16(d);
            out[b].m = core::f32_to_fp16(mn);
            std::uint8_t q[block_elems];
            for (std::size_t j = 0; j < block_elems; ++j)
                q[j] = static_cast<std::uint8_t>(std::min(31.0f, std::trunc((x[j] - mn) * inv_d + 0.5f)));
            detail::pack_q5(q, out[b].qs, out[b].qh);
        }
    }

    template <class Arch>
    static float dot(Arch, const block* w, const float* x, std::size_t n_blocks) noexcept {
        using batch = xsimd::batch<float, Arch>;
        static_assert(detail::whole_batches<Arch>(block_elems), "q5_1: a block must be whole batches");
        batch acc(0.0f);
        for (std::size_t b = 0; b < n_blocks; ++b, x += block_elems) {
            alignas(64) std::uint8_t u[block_elems];
            detail::unpack_q5(w[b].qs, w[b].qh, u);
            batch qx, sx;
            detail::dot_i8_and_sum<Arch>(reinterpret_cast<const std::int8_t*>(u), x, block_elems, qx, sx);  // 0..31 fit
            acc = xsimd::fma(batch(core::fp16_to_f32(w[b].d)), qx, acc);
            acc = xsimd::fma(batch(core::fp16_to_f32(w[b].m)), sx, acc);
        }
        return xsimd::hadd(acc);
    }
};
static_assert(quant_policy<q5_1>);

}  // namespace lmtk::quant
