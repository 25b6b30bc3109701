#pragma once
// Q5_K (GGUF id 13): Q4_K plus a fifth bit per weight, q in 0..31: w = d * sc * q - dmin * m.
// Nibbles and the packed 6-bit scales/mins as Q4_K; the fifth bit of element e (sub-block
// k = e / 32) is bit k of qh[e % 32] (qh is shared by all sub-blocks, never advanced).
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <utility>

#include <xsimd/xsimd.hpp>

#include <lmtk/core/fp16.hpp>
#include <lmtk/quant/block_common.hpp>
#include <lmtk/quant/ggml_type.hpp>
#include <lmtk/quant/policy.hpp>
#include <lmtk/quant/q4_k.hpp>

namespace lmtk::quant {

struct q5_k {
    static constexpr ggml_type type_id = ggml_type::q5_k;
    static constexpr std::size_t block_elems = 256;
    struct block {
        std::uint16_t d;     // super-block scale of the scales, fp16 bits
        std::uint16_t dmin;  // super-block scale of the mins, fp16 bits
        std::uint8_t scales[12];
        std::uint8_t qh[block_elems / 8];  // fifth bits
        std::uint8_t qs[block_elems / 2];  // low 4 bits
    };
    static_assert(sizeof(block) == 2 * sizeof(std::uint16_t) + 12 + block_elems / 8 + block_elems / 2, "q5_k: padding");
    static_assert(std::is_trivially_copyable_v<block>);

    // Reference decoder, the executable spec.
    static void dequantize_row(const block* w, float* y, std::size_t n_blocks) noexcept {
        for (std::size_t b = 0; b < n_blocks; ++b) {
            const float d = core::fp16_to_f32(w[b].d), dmin = core::fp16_to_f32(w[b].dmin);
            for (std::size_t c = 0; c < 4; ++c) {
                const std::uint8_t* q = w[b].qs + 32 * c;
                const auto [s1, m1] = detail::get_scale_min_k4(2 * c, w[b].scales);
                const auto [s2, m2] = detail::get_scale_min_k4(2 * c + 1, w[b].scales);
                const unsigned u1 = 1u << (2 * c), u2 = 1u << (2 * c + 1);
                for (std::size_t l = 0; l < 32; ++l) {
                    const int v = (q[l] & 0xF) + ((w[b].qh[l] & u1) ? 16 : 0);
                    *y++ = d * static_cast<float>(s1) * static_cast<float>(v) - dmin * static_cast<float>(m1);
                }
                for (std::size_t l = 0; l < 32; ++l) {
                    const int v = (q[l] >> 4) + ((w[b].qh[l] & u2) ? 16 : 0);
                    *y++ = d * static_cast<float>(s2) * static_cast<float>(v) - dmin * static_cast<float>(m2);
                }
            }
        }
    }

    // Reference quantizer (x finite): Q4_K's recipe with q in 0..31.
    static void quantize_row(const float* x, block* out, std::size_t n_blocks) noexcept {
        for (std::size_t b = 0; b < n_blocks; ++b, x += block_elems) {
            std::uint8_t q[block_elems];
            detail::quantize_k4_scales(x, 31, out[b].d, out[b].dmin, out[b].scales, q);
            for (std::size_t l = 0; l < 32; ++l) out[b].qh[l] = 0;
            for (std::size_t c = 0; c < 4; ++c)
                for (std::size_t l = 0; l < 32; ++l) {
                    const std::uint8_t lo = q[64 * c + l], hi = q[64 * c + 32 + l];
                    out[b].qs[32 * c + l] = static_cast<std::uint8_t>((lo & 0xF) | ((hi & 0xF) << 4));
                    out[b].qh[l] = static_cast<std::uint8_t>(out[b].qh[l] | ((lo >> 4) << (2 * c)) | ((hi >> 4) << (2 * c + 1)));
                }
        }
    }

    // The quants 0..31 of elements 64c .. 64c + 63. c is a template argument so that every shift
    // is a constant: bytes have no per-lane variable shift on x86, and with one the compiler
    // gives up vectorising the loop.
    template <std::size_t c>
    static void unpack_group(const block& b, std::int8_t* q) noexcept {
        for (std::size_t l = 0; l < 32; ++l) {
            const std::uint8_t h = b.qh[l], v = b.qs[32 * c + l];
            q[64 * c + l] = static_cast<std::int8_t>((v & 0xF) | (((h >> (2 * c)) & 1) << 4));
            q[64 * c + 32 + l] = static_cast<std::int8_t>((v >> 4) | (((h >> (2 * c + 1)) & 1) << 4));
        }
    }
    static void unpack(const block& b, std::int8_t* q) noexcept {
        [&]<std::size_t... c>(std::index_sequence<c...>) { (unpack_group<c>(b, q), ...); }(std::make_index_sequence<4>{});
    }

    template <class Arch>
    static float dot(Arch, const block* w, const float* x, std::size_t n_blocks) noexcept {
        using batch = xsimd::batch<float, Arch>;
        static_assert(detail::whole_batches<Arch>(32), "q5_k: a sub-block must be whole batches");
        batch acc(0.0f);
        for (std::size_t b = 0; b < n_blocks; ++b, x += block_elems) {
            alignas(64) std::int8_t q[block_elems];
            unpack(w[b], q);
            acc = detail::dot_k4_block<Arch>(q, x, core::fp16_to_f32(w[b].d), core::fp16_to_f32(w[b].dmin), w[b].scales, acc);
        }
        return xsimd::hadd(acc);
    }
};
static_assert(quant_policy<q5_k>);

}  // namespace lmtk::quant
