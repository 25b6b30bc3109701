#pragma once
// Q3_K (GGUF id 11): super-blocks of 256 weights = 16 sub-blocks of 16 with signed 6-bit
// scales against one fp16 d; each weight is 3 bits, q in -4..3: w = d * (sc - 32) * q.
// Element e = 128n + 32j + l (n < 2, j < 4, l < 32): its low two bits are bits 2j..2j+1 of
// qs[32n + l]; its high bit is bit 4n + j of hmask[l], and a *clear* high bit subtracts 4
// (q = low2 + 4 * high - 4). Scale k (the sub-block e / 16) is 6 bits stored with +32: the low
// 4 bits in scales[k] (k < 8, low nibble) or scales[k - 8] (high nibble), the high 2 bits in
// bits 2 * (k / 4) of scales[8 + k % 4].
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

struct q3_k {
    static constexpr ggml_type type_id = ggml_type::q3_k;
    static constexpr std::size_t block_elems = 256;
    static constexpr std::size_t sub_elems = 16;
    static constexpr std::size_t n_sub = block_elems / sub_elems;
    struct block {
        std::uint8_t hmask[block_elems / 8];  // high bits
        std::uint8_t qs[block_elems / 4];     // low 2 bits
        std::uint8_t scales[12];              // 16 x 6-bit scales, +32
        std::uint16_t d;                      // super-block scale, fp16 bits
    };
    static_assert(sizeof(block) == block_elems / 8 + block_elems / 4 + 12 + sizeof(std::uint16_t), "q3_k: padding");
    static_assert(std::is_trivially_copyable_v<block>);

    // Sub-block k's signed scale, -32..31 (spec 3.4's scale(k)).
    static int scale(const std::uint8_t* scales, std::size_t k) noexcept {
        const int low4 = k < 8 ? (scales[k] & 0xF) : (scales[k - 8] >> 4);
        const int high2 = (scales[8 + k % 4] >> (2 * (k / 4))) & 3;
        return (low4 | (high2 << 4)) - 32;
    }
    // The inverse over all 16: sc[k] in -32..31.
    static void pack_scales(const int* sc, std::uint8_t* scales) noexcept {
        for (std::size_t i = 0; i < 12; ++i) scales[i] = 0;
        for (std::size_t k = 0; k < n_sub; ++k) {
            const auto u = static_cast<unsigned>(sc[k] + 32);
            if (k < 8) scales[k] = static_cast<std::uint8_t>(scales[k] | (u & 0xF));
            else scales[k - 8] = static_cast<std::uint8_t>(scales[k - 8] | ((u & 0xF) << 4));
            scales[8 + k % 4] = static_cast<std::uint8_t>(scales[8 + k % 4] | ((u >> 4) << (2 * (k / 4))));
        }
    }

    // Reference decoder, the executable spec (spec 3.4's loop).
    static void dequantize_row(const block* w, float* y, std::size_t n_blocks) noexcept {
        for (std::size_t b = 0; b < n_blocks; ++b) {
            const float d = core::fp16_to_f32(w[b].d);
            unsigned m = 1;  // the hmask bit of this 32-element group; hmask itself never advances
            for (std::size_t n = 0; n < 2; ++n) {
                const std::uint8_t* q = w[b].qs + 32 * n;
                for (std::size_t j = 0; j < 4; ++j, m <<= 1) {
                    for (std::size_t half = 0; half < 2; ++half) {
                        const float dl = d * static_cast<float>(scale(w[b].scales, 8 * n + 2 * j + half));
                        for (std::size_t l = 16 * half; l < 16 * half + 16; ++l) {
                            const int v = ((q[l] >> (2 * j)) & 3) - ((w[b].hmask[l] & m) ? 0 : 4);
                            *y++ = dl * static_cast<float>(v);
                        }
                    }
                }
            }
        }
    }

    // Reference quantizer (x finite): per sub-block a symmetric least-squares scale for
    // q in -4..3, the 16 scales to signed 6 bits against d (the largest scale maps to -32),
    // then every weight requantized against its sub-block's decoded scale.
    static void quantize_row(const float* x, block* out, std::size_t n_blocks) noexcept {
        for (std::size_t b = 0; b < n_blocks; ++b, x += block_elems) {
            float s[n_sub];
            std::int8_t q[block_elems];
            for (std::size_t k = 0; k < n_sub; ++k) s[k] = detail::fit_symmetric(x + k * sub_elems, sub_elems, 4, q + k * sub_elems);
            int sc[n_sub];
            block& o = out[b];
            o.d = core::f32_to_fp16(detail::quantize_signed_scales(s, n_sub, 32, sc));
            pack_scales(sc, o.scales);
            const float d = core::fp16_to_f32(o.d);
            for (std::size_t k = 0; k < n_sub; ++k)
                detail::quantize_symmetric(x + k * sub_elems, sub_elems, d * static_cast<float>(sc[k]), 4, q + k * sub_elems);
            for (std::size_t i = 0; i < sizeof o.hmask; ++i) o.hmask[i] = 0;
            for (std::size_t i = 0; i < sizeof o.qs; ++i) o.qs[i] = 0;
            for (std::size_t e = 0; e < block_elems; ++e) {
                const std::size_t n = e / 128, j = (e % 128) / 32, l = e % 32;
                const auto v = static_cast<unsigned>(q[e] + 4);  // 0..7
                o.qs[32 * n + l] = static_cast<std::uint8_t>(o.qs[32 * n + l] | ((v & 3) << (2 * j)));
                if (v & 4) o.hmask[l] = static_cast<std::uint8_t>(o.hmask[l] | (1u << (4 * n + j)));
            }
        }
    }

    // The quants -4..3 of elements 128n + 32j + l, l < 32. n and j are template arguments so
    // that every shift is a constant: x86 has no per-lane variable shift of bytes, and with a
    // variable one the compiler gives up vectorising the loop.
    template <std::size_t n, std::size_t j>
    static void unpack_group(const block& b, std::int8_t* q) noexcept {
        for (std::size_t l = 0; l < 32; ++l)
            q[128 * n + 32 * j + l] = static_cast<std::int8_t>(((b.qs[32 * n + l] >> (2 * j)) & 3) +
                                                               (((b.hmask[l] >> (4 * n + j)) & 1) << 2) - 4);
    }
    static void unpack(const block& b, std::int8_t* q) noexcept {
        [&]<std::size_t... g>(std::index_sequence<g...>) {
            (unpack_group<g / 4, g % 4>(b, q), ...);
        }(std::make_index_sequence<8>{});
    }

    template <class Arch>
    static float dot(Arch, const block* w, const float* x, std::size_t n_blocks) noexcept {
        using batch = xsimd::batch<float, Arch>;
        static_assert(detail::whole_batches<Arch>(sub_elems), "q3_k: a sub-block must be whole batches");
        batch acc(0.0f);
        for (std::size_t b = 0; b < n_blocks; ++b, x += block_elems) {
            alignas(64) std::int8_t q[block_elems];
            unpack(w[b], q);
            const float d = core::fp16_to_f32(w[b].d);
            float sc[n_sub];
            for (std::size_t k = 0; k < n_sub; ++k) sc[k] = d * static_cast<float>(scale(w[b].scales, k));
            acc = detail::scaled_dot<Arch, sub_elems, n_sub>(q, x, sc, acc);
        }
        return xsimd::hadd(acc);
    }
};
static_assert(quant_policy<q3_k>);

}  // namespace lmtk::quant
