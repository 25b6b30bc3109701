#pragma once
// Q5_0 (GGUF id 6): 32 weights share one fp16 scale, 5 bits each with an implicit offset of 16.
// The low 4 bits sit in nibbles as in Q4_0 (low nibbles: elements 0..15, high: 16..31); bit j
// of the little-endian u32 qh is the fifth bit of element j:
// w[j] = (((qs[j] & 0xF) | ((h >> j) & 1) << 4) - 16) * d,
// w[j + 16] = (((qs[j] >> 4) | ((h >> (j + 16)) & 1) << 4) - 16) * d, j < 16.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include <xsimd/xsimd.hpp>

#include <lmtk/core/fp16.hpp>
#include <lmtk/quant/block_common.hpp>
#include <lmtk/quant/ggml_type.hpp>
#include <lmtk/quant/policy.hpp>

namespace lmtk::quant {

namespace detail {

// The 32 fifth bits of a Q5 block (a u32 stored as 4 bytes, so the block needs no 4-byte
// alignment) -> bit j of the result is element j's.
inline std::uint32_t load_qh(const std::uint8_t* qh) noexcept {
    std::uint32_t h;
    std::memcpy(&h, qh, sizeof h);  // GGUF is little-endian, as is every host lmtk supports
    return h;
}

// 5-bit quants 0..31 of one Q5_0/Q5_1 block, in element order: the nibbles first, then the
// fifth bits or-ed in from the u32 as a separate loop over 32-bit lanes (one variable shift
// per lane); fused into one byte loop the compiler left it scalar.
inline void unpack_q5(const std::uint8_t* qs, const std::uint8_t* qh, std::uint8_t* q) noexcept {
    for (std::size_t j = 0; j < 16; ++j) {
        q[j] = static_cast<std::uint8_t>(qs[j] & 0xF);
        q[j + 16] = static_cast<std::uint8_t>(qs[j] >> 4);
    }
    const std::uint32_t h = load_qh(qh);
    std::uint32_t high[32];
    for (std::uint32_t j = 0; j < 32; ++j) high[j] = ((h >> j) & 1u) << 4;
    for (std::size_t j = 0; j < 32; ++j) q[j] = static_cast<std::uint8_t>(q[j] | high[j]);
}

// The inverse: 32 quants 0..31 -> nibbles and fifth bits.
inline void pack_q5(const std::uint8_t* q, std::uint8_t* qs, std::uint8_t* qh) noexcept {
    std::uint32_t h = 0;
    for (std::size_t j = 0; j < 16; ++j) {
        qs[j] = static_cast<std::uint8_t>((q[j] & 0xF) | ((q[j + 16] & 0xF) << 4));
        h |= static_cast<std::uint32_t>(q[j] >> 4) << j;
        h |= static_cast<std::uint32_t>(q[j + 16] >> 4) << (j + 16);
    }
    std::memcpy(qh, &h, sizeof h);
}

}  // namespace detail

struct q5_0 {
    static constexpr ggml_type type_id = ggml_type::q5_0;
    static constexpr std::size_t block_elems = 32;
    struct block {
        std::uint16_t d;       // scale, fp16 bits
        std::uint8_t qh[4];    // fifth bits, u32 little-endian
        std::uint8_t qs[16];   // low 4 bits
    };
    static_assert(sizeof(block) == sizeof(std::uint16_t) + 4 + 16, "q5_0: padding");
    static_assert(std::is_trivially_copyable_v<block>);

    // Reference decoder, the executable spec.
    static void dequantize_row(const block* w, float* y, std::size_t n_blocks) noexcept {
        for (std::size_t b = 0; b < n_blocks; ++b, y += block_elems) {
            const float d = core::fp16_to_f32(w[b].d);
            const std::uint32_t h = detail::load_qh(w[b].qh);
            for (std::size_t j = 0; j < 16; ++j) {
                const int lo = (w[b].qs[j] & 0xF) | static_cast<int>(((h >> j) & 1u) << 4);
                const int hi = (w[b].qs[j] >> 4) | static_cast<int>(((h >> (j + 16)) & 1u) << 4);
                y[j] = static_cast<float>(lo - 16) * d;
                y[j + 16] = static_cast<float>(hi - 16) * d;
            }
        }
    }

    // Reference quantizer (x finite), ggml's rule as for Q4_0: the value m of largest magnitude
    // sets d = m / -16 (m lands on quant 0), q = min(31, floor(x / d + 16.5)) against the
    // unrounded d, so the bits match llama.cpp's.
    static void quantize_row(const float* x, block* out, std::size_t n_blocks) noexcept {
        for (std::size_t b = 0; b < n_blocks; ++b, x += block_elems) {
            float amax = 0.0f, m = 0.0f;
            for (std::size_t j = 0; j < block_elems; ++j) {
                if (std::fabs(x[j]) > amax) {
                    amax = std::fabs(x[j]);
                    m = x[j];
                }
            }
            const float d = m / -16.0f;
            const float inv_d = detail::safe_inverse(d);
            out[b].d = core::f32_to_fp16(d);
            std::uint8_t q[block_elems];
            for (std::size_t j = 0; j < block_elems; ++j)
                q[j] = static_cast<std::uint8_t>(std::clamp(std::floor(x[j] * inv_d + 16.5f), 0.0f, 31.0f));
            detail::pack_q5(q, out[b].qs, out[b].qh);
        }
    }

    template <class Arch>
    static float dot(Arch, const block* w, const float* x, std::size_t n_blocks) noexcept {
        using batch = xsimd::batch<float, Arch>;
        static_assert(detail::whole_batches<Arch>(block_elems), "q5_0: a block must be whole batches");
        batch acc(0.0f);
        for (std::size_t b = 0; b < n_blocks; ++b, x += block_elems) {
            alignas(64) std::uint8_t u[block_elems];
            alignas(64) std::int8_t q[block_elems];
            detail::unpack_q5(w[b].qs, w[b].qh, u);
            for (std::size_t j = 0; j < block_elems; ++j) q[j] = static_cast<std::int8_t>(u[j] - 16);
            acc = xsimd::fma(batch(core::fp16_to_f32(w[b].d)), detail::dot_i8<Arch>(q, x, block_elems), acc);
        }
        return xsimd::hadd(acc);
    }
};
static_assert(quant_policy<q5_0>);

}  // namespace lmtk::quant
