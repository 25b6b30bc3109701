#pragma once
// Q2_K (GGUF id 10): super-blocks of 256 weights = 16 sub-blocks of 16. Each sub-block has a
// 4-bit scale and a 4-bit min (one byte: scale low, min high) against the super-block's fp16
// d and dmin; each weight is 2 bits: w = d * sc * q - dmin * m, q in 0..3.
// Element e = 128n + 32j + l (n < 2, j < 4, l < 32) is bits 2j..2j+1 of qs[32n + l]; its
// sub-block is e / 16.
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <utility>

#include <xsimd/xsimd.hpp>

#include <lmtk/core/fp16.hpp>
#include <lmtk/quant/block_common.hpp>
#include <lmtk/quant/ggml_type.hpp>
#include <lmtk/quant/policy.hpp>

namespace lmtk::quant {

struct q2_k {
    static constexpr ggml_type type_id = ggml_type::q2_k;
    static constexpr std::size_t block_elems = 256;
    static constexpr std::size_t sub_elems = 16;
    static constexpr std::size_t n_sub = block_elems / sub_elems;
    struct block {
        std::uint8_t scales[n_sub];  // low nibble: scale, high nibble: min
        std::uint8_t qs[block_elems / 4];
        std::uint16_t d;     // super-block scale of the scales, fp16 bits
        std::uint16_t dmin;  // super-block scale of the mins, fp16 bits
    };
    static_assert(sizeof(block) == n_sub + block_elems / 4 + 2 * sizeof(std::uint16_t), "q2_k: padding");
    static_assert(std::is_trivially_copyable_v<block>);

    // The 2-bit quant of element e (0..255).
    static int quant(const block& b, std::size_t e) noexcept {
        const std::size_t n = e / 128, j = (e % 128) / 32, l = e % 32;
        return (b.qs[32 * n + l] >> (2 * j)) & 3;
    }

    // Reference decoder, the executable spec (spec 3.4's loop).
    static void dequantize_row(const block* w, float* y, std::size_t n_blocks) noexcept {
        for (std::size_t b = 0; b < n_blocks; ++b) {
            const float d = core::fp16_to_f32(w[b].d), dmin = core::fp16_to_f32(w[b].dmin);
            for (std::size_t n = 0; n < 2; ++n) {
                const std::uint8_t* q = w[b].qs + 32 * n;
                for (std::size_t j = 0; j < 4; ++j) {
                    const std::size_t is = 8 * n + 2 * j;
                    for (std::size_t half = 0; half < 2; ++half) {
                        const std::uint8_t sc = w[b].scales[is + half];
                        const float dl = d * static_cast<float>(sc & 0xF), ml = dmin * static_cast<float>(sc >> 4);
                        for (std::size_t l = 0; l < 16; ++l)
                            *y++ = dl * static_cast<float>((q[l + 16 * half] >> (2 * j)) & 3) - ml;
                    }
                }
            }
        }
    }

    // Reference quantizer (x finite): per sub-block an affine least-squares fit (scale, min),
    // then the 16 scales and 16 mins to 4 bits against d = max scale / 15, dmin = max min / 15,
    // then every weight requantized against its sub-block's decoded scale and min.
    static void quantize_row(const float* x, block* out, std::size_t n_blocks) noexcept {
        for (std::size_t b = 0; b < n_blocks; ++b, x += block_elems) {
            float scales[n_sub], mins[n_sub];
            std::uint8_t q[block_elems];
            for (std::size_t s = 0; s < n_sub; ++s) {
                const detail::scale_min f = detail::fit_affine(x + s * sub_elems, sub_elems, 3, q + s * sub_elems);
                scales[s] = f.scale;
                mins[s] = f.min;
            }
            std::uint8_t sc[n_sub], mn[n_sub];
            block& o = out[b];
            o.d = core::f32_to_fp16(detail::quantize_unsigned_scales(scales, n_sub, 4, sc));
            o.dmin = core::f32_to_fp16(detail::quantize_unsigned_scales(mins, n_sub, 4, mn));
            const float d = core::fp16_to_f32(o.d), dmin = core::fp16_to_f32(o.dmin);
            for (std::size_t s = 0; s < n_sub; ++s) {
                o.scales[s] = static_cast<std::uint8_t>(sc[s] | (mn[s] << 4));
                detail::quantize_affine(x + s * sub_elems, sub_elems, d * sc[s], dmin * mn[s], 3, q + s * sub_elems);
            }
            for (std::size_t i = 0; i < block_elems / 4; ++i) o.qs[i] = 0;
            for (std::size_t e = 0; e < block_elems; ++e) {
                const std::size_t n = e / 128, j = (e % 128) / 32, l = e % 32;
                o.qs[32 * n + l] = static_cast<std::uint8_t>(o.qs[32 * n + l] | (q[e] << (2 * j)));
            }
        }
    }

    // The quants of elements 128n + 32j + l, l < 32. n and j are template arguments so that
    // every shift is a constant (see Q3_K).
    template <std::size_t n, std::size_t j>
    static void unpack_group(const block& b, std::int8_t* q) noexcept {
        for (std::size_t l = 0; l < 32; ++l)
            q[128 * n + 32 * j + l] = static_cast<std::int8_t>((b.qs[32 * n + l] >> (2 * j)) & 3);
    }
    static void unpack(const block& b, std::int8_t* q) noexcept {
        [&]<std::size_t... g>(std::index_sequence<g...>) {
            (unpack_group<g / 4, g % 4>(b, q), ...);
        }(std::make_index_sequence<8>{});
    }

    template <class Arch>
    static float dot(Arch, const block* w, const float* x, std::size_t n_blocks) noexcept {
        using batch = xsimd::batch<float, Arch>;
        static_assert(detail::whole_batches<Arch>(sub_elems), "q2_k: a sub-block must be whole batches");
        batch acc(0.0f);
        for (std::size_t b = 0; b < n_blocks; ++b, x += block_elems) {
            alignas(64) std::int8_t q[block_elems];
            unpack(w[b], q);
            const float d = core::fp16_to_f32(w[b].d), dmin = core::fp16_to_f32(w[b].dmin);
            float scale[n_sub], min[n_sub];
            for (std::size_t s = 0; s < n_sub; ++s) {
                scale[s] = d * static_cast<float>(w[b].scales[s] & 0xF);
                min[s] = dmin * static_cast<float>(w[b].scales[s] >> 4);
            }
            acc = detail::scaled_dot_min<Arch, sub_elems, n_sub>(q, x, scale, min, acc);
        }
        return xsimd::hadd(acc);
    }
};
static_assert(quant_policy<q2_k>);

}  // namespace lmtk::quant
