#pragma once
// Q4_K (GGUF id 12): super-blocks of 256 weights = 8 sub-blocks of 32. Each sub-block has a
// 6-bit scale and a 6-bit min against the super-block's fp16 d and dmin; each weight is 4 bits:
// w = d * sc * q - dmin * m, q in 0..15. Element 64c + l (c < 4, l < 32) is the low nibble of
// qs[32c + l] (sub-block 2c), element 64c + 32 + l its high nibble (sub-block 2c + 1).
// The 8 scales and 8 mins share 12 bytes (get_scale_min below; also used by Q5_K).
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

namespace detail {

// Sub-block k's (scale, min), each 6 bits, from the 12 packed bytes of Q4_K/Q5_K: k < 4 keep
// both whole in the low 6 bits of bytes k and k + 4; k >= 4 keep their low 4 bits in the
// nibbles of byte k + 4 and their high 2 bits in the top bits of bytes k - 4 and k.
inline std::pair<int, int> get_scale_min_k4(std::size_t k, const std::uint8_t* s) noexcept {
    if (k < 4) return {s[k] & 63, s[k + 4] & 63};
    return {(s[k + 4] & 0xF) | ((s[k - 4] >> 6) << 4), (s[k + 4] >> 4) | ((s[k] >> 6) << 4)};
}

// The inverse: sc[k], mn[k] in 0..63 -> 12 bytes.
inline void pack_scale_min_k4(const std::uint8_t* sc, const std::uint8_t* mn, std::uint8_t* s) noexcept {
    for (std::size_t k = 0; k < 4; ++k) {
        s[k] = static_cast<std::uint8_t>((sc[k] & 63) | ((sc[k + 4] >> 4) << 6));
        s[k + 4] = static_cast<std::uint8_t>((mn[k] & 63) | ((mn[k + 4] >> 4) << 6));
        s[k + 8] = static_cast<std::uint8_t>((sc[k + 4] & 0xF) | ((mn[k + 4] & 0xF) << 4));
    }
}

// The affine K-quant recipe shared by Q4_K and Q5_K: fit each 32-element sub-block, quantize
// the 8 scales and 8 mins to 6 bits against d and dmin, and requantize every weight against
// its decoded scale and min. Returns the quants 0..qmax of the 256 elements in q.
inline void quantize_k4_scales(const float* x, int qmax, std::uint16_t& d_out, std::uint16_t& dmin_out,
                               std::uint8_t* scales, std::uint8_t* q) noexcept {
    constexpr std::size_t n_sub = 8, sub = 32;
    float fs[n_sub], fm[n_sub];
    for (std::size_t k = 0; k < n_sub; ++k) {
        const scale_min f = fit_affine(x + k * sub, sub, qmax, q + k * sub);
        fs[k] = f.scale;
        fm[k] = f.min;
    }
    std::uint8_t sc[n_sub], mn[n_sub];
    d_out = core::f32_to_fp16(quantize_unsigned_scales(fs, n_sub, 6, sc));
    dmin_out = core::f32_to_fp16(quantize_unsigned_scales(fm, n_sub, 6, mn));
    pack_scale_min_k4(sc, mn, scales);
    const float d = core::fp16_to_f32(d_out), dmin = core::fp16_to_f32(dmin_out);
    for (std::size_t k = 0; k < n_sub; ++k)
        quantize_affine(x + k * sub, sub, d * sc[k], dmin * mn[k], qmax, q + k * sub);
}

// sum over one Q4_K/Q5_K super-block of (d sc q - dmin m) x, given its quants in element order.
template <class Arch>
xsimd::batch<float, Arch> dot_k4_block(const std::int8_t* q, const float* x, float d, float dmin,
                                       const std::uint8_t* scales, xsimd::batch<float, Arch> acc) noexcept {
    float scale[8], min[8];
    for (std::size_t k = 0; k < 8; ++k) {
        const auto [sc, mn] = get_scale_min_k4(k, scales);
        scale[k] = d * static_cast<float>(sc);
        min[k] = dmin * static_cast<float>(mn);
    }
    acc = scaled_dot_min<Arch, 32, 8>(q, x, scale, min, acc);
    return acc;
}

}  // namespace detail

struct q4_k {
    static constexpr ggml_type type_id = ggml_type::q4_k;
    static constexpr std::size_t block_elems = 256;
    struct block {
        std::uint16_t d;     // super-block scale of the scales, fp16 bits
        std::uint16_t dmin;  // super-block scale of the mins, fp16 bits
        std::uint8_t scales[12];
        std::uint8_t qs[block_elems / 2];
    };
    static_assert(sizeof(block) == 2 * sizeof(std::uint16_t) + 12 + block_elems / 2, "q4_k: padding");
    static_assert(std::is_trivially_copyable_v<block>);

    // Reference decoder, the executable spec (spec 3.4's loop).
    static void dequantize_row(const block* w, float* y, std::size_t n_blocks) noexcept {
        for (std::size_t b = 0; b < n_blocks; ++b) {
            const float d = core::fp16_to_f32(w[b].d), dmin = core::fp16_to_f32(w[b].dmin);
            for (std::size_t c = 0; c < 4; ++c) {
                const std::uint8_t* q = w[b].qs + 32 * c;
                const auto [s1, m1] = detail::get_scale_min_k4(2 * c, w[b].scales);
                const auto [s2, m2] = detail::get_scale_min_k4(2 * c + 1, w[b].scales);
                for (std::size_t l = 0; l < 32; ++l) *y++ = d * static_cast<float>(s1) * static_cast<float>(q[l] & 0xF) - dmin * static_cast<float>(m1);
                for (std::size_t l = 0; l < 32; ++l) *y++ = d * static_cast<float>(s2) * static_cast<float>(q[l] >> 4) - dmin * static_cast<float>(m2);
            }
        }
    }

    // Reference quantizer (x finite): affine least-squares fits per 32-element sub-block, 6-bit
    // scales and mins against d = max scale / 63 and dmin = max min / 63, then requantization.
    static void quantize_row(const float* x, block* out, std::size_t n_blocks) noexcept {
        for (std::size_t b = 0; b < n_blocks; ++b, x += block_elems) {
            std::uint8_t q[block_elems];
            detail::quantize_k4_scales(x, 15, out[b].d, out[b].dmin, out[b].scales, q);
            for (std::size_t c = 0; c < 4; ++c)
                for (std::size_t l = 0; l < 32; ++l)
                    out[b].qs[32 * c + l] = static_cast<std::uint8_t>(q[64 * c + l] | (q[64 * c + 32 + l] << 4));
        }
    }

    template <class Arch>
    static float dot(Arch, const block* w, const float* x, std::size_t n_blocks) noexcept {
        using batch = xsimd::batch<float, Arch>;
        static_assert(detail::whole_batches<Arch>(32), "q4_k: a sub-block must be whole batches");
        batch acc(0.0f);
        for (std::size_t b = 0; b < n_blocks; ++b, x += block_elems) {
            alignas(64) std::int8_t q[block_elems];
            for (std::size_t c = 0; c < 4; ++c)
                for (std::size_t l = 0; l < 32; ++l) {
                    q[64 * c + l] = static_cast<std::int8_t>(w[b].qs[32 * c + l] & 0xF);
                    q[64 * c + 32 + l] = static_cast<std::int8_t>(w[b].qs[32 * c + l] >> 4);
                }
            acc = detail::dot_k4_block<Arch>(q, x, core::fp16_to_f32(w[b].d), core::fp16_to_f32(w[b].dmin), w[b].scales, acc);
        }
        return xsimd::hadd(acc);
    }
};
static_assert(quant_policy<q4_k>);

}  // namespace lmtk::quant
