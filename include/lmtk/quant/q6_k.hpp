#pragma once
// Q6_K (GGUF id 14): super-blocks of 256 weights = 16 sub-blocks of 16 with int8 scales
// against one fp16 d; each weight is 6 bits with an offset of 32: w = d * sc * (q - 32).
// Element e = 128n + 32k + l (n < 2, k < 4, l < 32): its low 4 bits are the low (k < 2) or
// high (k >= 2) nibble of ql[64n + 32(k % 2) + l], its high 2 bits are bits 2k..2k+1 of
// qh[32n + l]; its scale is scales[e / 16].
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include <xsimd/xsimd.hpp>

#include <lmtk/core/fp16.hpp>
#include <lmtk/quant/block_common.hpp>
#include <lmtk/quant/ggml_type.hpp>
#include <lmtk/quant/policy.hpp>

namespace lmtk::quant {

struct q6_k {
    static constexpr ggml_type type_id = ggml_type::q6_k;
    static constexpr std::size_t block_elems = 256;
    static constexpr std::size_t sub_elems = 16;
    static constexpr std::size_t n_sub = block_elems / sub_elems;
    struct block {
        std::uint8_t ql[block_elems / 2];  // low 4 bits
        std::uint8_t qh[block_elems / 4];  // high 2 bits
        std::int8_t scales[n_sub];
        std::uint16_t d;  // super-block scale, fp16 bits
    };
    static_assert(sizeof(block) == block_elems / 2 + block_elems / 4 + n_sub + sizeof(std::uint16_t), "q6_k: padding");
    static_assert(std::is_trivially_copyable_v<block>);

    // Reference decoder, the executable spec (spec 3.4's loop).
    static void dequantize_row(const block* w, float* y, std::size_t n_blocks) noexcept {
        for (std::size_t b = 0; b < n_blocks; ++b, y += block_elems) {
            const float d = core::fp16_to_f32(w[b].d);
            for (std::size_t n = 0; n < 2; ++n) {
                const std::uint8_t* ql = w[b].ql + 64 * n;
                const std::uint8_t* qh = w[b].qh + 32 * n;
                const std::int8_t* sc = w[b].scales + 8 * n;
                float* yn = y + 128 * n;
                for (std::size_t l = 0; l < 32; ++l) {
                    const std::size_t is = l / 16;
                    const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
                    const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                    const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                    const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                    yn[l] = d * static_cast<float>(sc[is + 0]) * static_cast<float>(q1);
                    yn[l + 32] = d * static_cast<float>(sc[is + 2]) * static_cast<float>(q2);
                    yn[l + 64] = d * static_cast<float>(sc[is + 4]) * static_cast<float>(q3);
                    yn[l + 96] = d * static_cast<float>(sc[is + 6]) * static_cast<float>(q4);
                }
            }
        }
    }

    // Reference quantizer (x finite): per sub-block a symmetric least-squares scale for
    // q - 32 in -32..31, the 16 scales to int8 against d (the largest scale maps to -128), then
    // every weight requantized against its sub-block's decoded scale.
    static void quantize_row(const float* x, block* out, std::size_t n_blocks) noexcept {
        for (std::size_t b = 0; b < n_blocks; ++b, x += block_elems) {
            float s[n_sub];
            std::int8_t q[block_elems];
            for (std::size_t k = 0; k < n_sub; ++k) s[k] = detail::fit_symmetric(x + k * sub_elems, sub_elems, 32, q + k * sub_elems);
            int sc[n_sub];
            block& o = out[b];
            o.d = core::f32_to_fp16(detail::quantize_signed_scales(s, n_sub, 128, sc));
            const float d = core::fp16_to_f32(o.d);
            for (std::size_t k = 0; k < n_sub; ++k) {
                o.scales[k] = static_cast<std::int8_t>(sc[k]);
                detail::quantize_symmetric(x + k * sub_elems, sub_elems, d * static_cast<float>(sc[k]), 32, q + k * sub_elems);
            }
            for (std::size_t i = 0; i < sizeof o.ql; ++i) o.ql[i] = 0;
            for (std::size_t i = 0; i < sizeof o.qh; ++i) o.qh[i] = 0;
            for (std::size_t e = 0; e < block_elems; ++e) {
                const std::size_t n = e / 128, k = (e % 128) / 32, l = e % 32;
                const auto v = static_cast<unsigned>(q[e] + 32);  // 0..63
                std::uint8_t& lo = o.ql[64 * n + 32 * (k % 2) + l];
                lo = static_cast<std::uint8_t>(lo | ((v & 0xF) << (4 * (k / 2))));
                o.qh[32 * n + l] = static_cast<std::uint8_t>(o.qh[32 * n + l] | ((v >> 4) << (2 * k)));
            }
        }
    }

    template <class Arch>
    static float dot(Arch, const block* w, const float* x, std::size_t n_blocks) noexcept {
        using batch = xsimd::batch<float, Arch>;
        static_assert(detail::whole_batches<Arch>(sub_elems), "q6_k: a sub-block must be whole batches");
        batch acc(0.0f);
        for (std::size_t b = 0; b < n_blocks; ++b, x += block_elems) {
            alignas(64) std::int8_t q[block_elems];
            for (std::size_t n = 0; n < 2; ++n) {
                const std::uint8_t* ql = w[b].ql + 64 * n;
                const std::uint8_t* qh = w[b].qh + 32 * n;
                std::int8_t* qn = q + 128 * n;
                for (std::size_t l = 0; l < 32; ++l) {
                    qn[l] = static_cast<std::int8_t>(((ql[l] & 0xF) | ((qh[l] & 3) << 4)) - 32);
                    qn[l + 32] = static_cast<std::int8_t>(((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32);
                    qn[l + 64] = static_cast<std::int8_t>(((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
                    qn[l + 96] = static_cast<std::int8_t>(((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
                }
            }
            const float d = core::fp16_to_f32(w[b].d);
            float sc[n_sub];
            for (std::size_t k = 0; k < n_sub; ++k) sc[k] = d * static_cast<float>(w[b].scales[k]);
            acc = detail::scaled_dot<Arch, sub_elems, n_sub>(q, x, sc, acc);
        }
        return xsimd::hadd(acc);
    }
};
static_assert(quant_policy<q6_k>);

}  // namespace lmtk::quant
