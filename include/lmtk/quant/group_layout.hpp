#pragma once
// The in-memory layout lmtk repacks AWQ and GPTQ weights into at load.
//
// Both tools store w = s * (q - z) with one fp16 scale s and one integer zero z per (output row,
// group of g inputs), but pack q across rows (AWQ along the output dimension, GPTQ along the
// input dimension with a group index per input) in layouts built for GPU GEMMs. lmtk's kernels
// walk one output row at a time, so at load each group of each row becomes one block here: its
// scale, its zero and its g quants, rows contiguous like a GGUF tensor. The forward pass then
// treats an AWQ or GPTQ matrix exactly like a Q4_1 one. Dequantization stays exact: (q - z) is
// a small integer and s an fp16 value, so (q - z) * s is representable in float.
//
// 4-bit blocks keep ggml's nibble order (low nibbles the first half of the group, high nibbles
// the second); 3-bit blocks split each quant into two low bits (four quarters of the group,
// one per bit pair of a byte) and a high bit (eight eighths, one per bit), so that both unpack
// with fixed-length byte loops the compiler vectorises.
#include <algorithm>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include <xsimd/xsimd.hpp>

#include <lmtk/core/fp16.hpp>
#include <lmtk/quant/block_common.hpp>
#include <lmtk/quant/policy.hpp>

namespace lmtk::quant {

template <unsigned Bits, std::size_t G>
struct group_block;

template <std::size_t G>
struct group_block<4, G> {
    std::uint16_t scale;  // fp16 bits
    std::uint8_t zero;    // 0..16 (GPTQ v1 files can say 16; see gptq.hpp)
    std::uint8_t reserved;
    std::uint8_t qs[G / 2];
};

template <std::size_t G>
struct group_block<3, G> {
    std::uint16_t scale;
    std::uint8_t zero;
    std::uint8_t reserved;
    std::uint8_t ql[G / 4];  // bits 0-1 of quant j: bits 2*(j / (G/4)) of ql[j % (G/4)]
    std::uint8_t qh[G / 8];  // bit 2 of quant j: bit j / (G/8) of qh[j % (G/8)]
};

// One output row's group of G inputs per block. Bits: 3 or 4; G: 32, 64 or 128.
template <unsigned Bits, std::size_t G>
struct group_layout {
    static_assert(Bits == 3 || Bits == 4, "group_layout: 3 or 4 bits");
    static_assert(G == 32 || G == 64 || G == 128, "group_layout: groups of 32, 64 or 128");
    static constexpr unsigned bits = Bits;
    static constexpr std::size_t block_elems = G;
    static constexpr unsigned max_q = (1u << Bits) - 1;
    using block = group_block<Bits, G>;
    static_assert(sizeof(block) == 4 + G * Bits / 8, "group_layout: padding in the block");
    static_assert(std::is_trivially_copyable_v<block> && std::is_standard_layout_v<block>);

    // q[j] (0 .. max_q) of one block.
    static void unpack(const block& b, std::uint8_t* q) noexcept {
        if constexpr (Bits == 4) {
            for (std::size_t j = 0; j < G / 2; ++j) {
                q[j] = b.qs[j] & 0xF;
                q[j + G / 2] = b.qs[j] >> 4;
            }
        } else {
            constexpr std::size_t quarter = G / 4, eighth = G / 8;
            for (std::size_t k = 0; k < 4; ++k)
                for (std::size_t j = 0; j < quarter; ++j) q[k * quarter + j] = (b.ql[j] >> (2 * k)) & 3;
            for (std::size_t k = 0; k < 8; ++k)
                for (std::size_t j = 0; j < eighth; ++j)
                    q[k * eighth + j] = static_cast<std::uint8_t>(q[k * eighth + j] | (((b.qh[j] >> k) & 1) << 2));
        }
    }

    // The inverse: a block from G quants (each <= max_q), a zero and an fp16 scale.
    static block pack(const std::uint8_t* q, std::uint8_t zero, std::uint16_t scale_fp16) noexcept {
        block b{};
        b.scale = scale_fp16;
        b.zero = zero;
        if constexpr (Bits == 4) {
            for (std::size_t j = 0; j < G / 2; ++j)
                b.qs[j] = static_cast<std::uint8_t>((q[j] & 0xF) | ((q[j + G / 2] & 0xF) << 4));
        } else {
            constexpr std::size_t quarter = G / 4, eighth = G / 8;
            for (std::size_t j = 0; j < G; ++j) {
                b.ql[j % quarter] = static_cast<std::uint8_t>(b.ql[j % quarter] | ((q[j] & 3) << (2 * (j / quarter))));
                b.qh[j % eighth] = static_cast<std::uint8_t>(b.qh[j % eighth] | (((q[j] >> 2) & 1) << (j / eighth)));
            }
        }
        return b;
    }

    // Reference decoder, the executable spec: w = (q - z) * s.
    static void dequantize_row(const block* w, float* y, std::size_t n_blocks) noexcept {
        std::uint8_t q[G];
        for (std::size_t b = 0; b < n_blocks; ++b, y += G) {
            unpack(w[b], q);
            const float s = core::fp16_to_f32(w[b].scale);
            for (std::size_t j = 0; j < G; ++j) y[j] = static_cast<float>(int(q[j]) - int(w[b].zero)) * s;
        }
    }

    // Round-to-nearest quantizer with AWQ's rule (min/max of the group, asymmetric), for tests and
    // benchmarks; checkpoints come from AWQ/GPTQ tools or tools/pack.
    static void quantize_row(const float* x, block* out, std::size_t n_blocks) noexcept {
        for (std::size_t b = 0; b < n_blocks; ++b, x += G) {
            float mn = x[0], mx = x[0];
            for (std::size_t j = 1; j < G; ++j) mn = std::min(mn, x[j]), mx = std::max(mx, x[j]);
            const float s = std::max((mx - mn) / float(max_q), 1e-5f);
            const std::uint16_t s16 = core::f32_to_fp16(s);
            const float sr = core::fp16_to_f32(s16);
            const int z = std::clamp(-detail::round_int(mn / sr), 0, int(max_q));
            std::uint8_t q[G];
            for (std::size_t j = 0; j < G; ++j) q[j] = static_cast<std::uint8_t>(std::clamp(detail::round_int(x[j] / sr) + z, 0, int(max_q)));
            out[b] = pack(q, static_cast<std::uint8_t>(z), s16);
        }
    }

    // sum_j w[j] x[j] = sum over blocks of s * sum_j (q[j] - z) x[j]; q - z fits a signed byte.
    template <class Arch>
    static float dot(Arch, const block* w, const float* x, std::size_t n_blocks) noexcept {
        using batch = xsimd::batch<float, Arch>;
        static_assert(detail::whole_batches<Arch>(G), "group_layout: a group must be whole batches");
        batch acc0(0.0f), acc1(0.0f);
        alignas(64) std::uint8_t q[G];
        alignas(64) std::int8_t c[G];
        std::size_t b = 0;
        const auto one = [&](std::size_t i, batch& acc) {
            unpack(w[i], q);
            const int z = w[i].zero;
            for (std::size_t j = 0; j < G; ++j) c[j] = static_cast<std::int8_t>(int(q[j]) - z);
            acc = xsimd::fma(batch(core::fp16_to_f32(w[i].scale)), detail::dot_i8<Arch>(c, x + i * G, G), acc);
        };
        for (; b + 2 <= n_blocks; b += 2) {
            one(b, acc0);
            one(b + 1, acc1);
        }
        if (b < n_blocks) one(b, acc0);
        return xsimd::hadd(acc0 + acc1);
    }
};

// What a checkpoint's quantization_config says about one matrix, after load: the runtime value
// that load-time dispatch maps onto one compiled group policy.
enum class group_method : std::uint8_t { awq, gptq };

struct group_format {
    group_method method = group_method::gptq;
    unsigned bits = 4;
    int group = 128;         // -1: one group over the whole input dimension
    bool act_order = false;  // GPTQ desc_act: inputs permuted at load (see gptq.hpp)
    friend constexpr bool operator==(const group_format&, const group_format&) = default;
};

// "AWQ 4-bit g128", "GPTQ 3-bit g-1 act-order": how tools and errors name a format.
inline std::string format_name(const group_format& f) {
    std::string s = f.method == group_method::awq ? "AWQ " : "GPTQ ";
    s += std::to_string(f.bits) + "-bit g" + std::to_string(f.group);
    if (f.act_order) s += " act-order";
    return s;
}

// A format read from AWQ or GPTQ checkpoints: a group_format naming it and the layout its weights
// are repacked into.
template <class P>
concept group_policy = requires {
    { P::format } -> std::convertible_to<group_format>;
    typename P::layout;
} && requires(const typename P::layout::block* w, const float* x, float* y, std::size_t n) {
    { P::layout::dequantize_row(w, y, n) } noexcept;
    { P::layout::dot(xsimd::default_arch{}, w, x, n) } noexcept -> std::same_as<float>;
};

namespace detail {

// Little-endian words and fp16 bits from checkpoint bytes of any alignment (safetensors does
// not align tensors).
inline std::uint32_t word_at(const std::byte* p, std::size_t i) noexcept {
    std::uint32_t v;
    std::memcpy(&v, p + 4 * i, 4);
    return v;
}
inline std::uint16_t half_at(const std::byte* p, std::size_t i) noexcept {
    std::uint16_t v;
    std::memcpy(&v, p + 2 * i, 2);
    return v;
}

}  // namespace detail

// The repacked matrix of one linear layer: `out` rows of `in / G` blocks, and, for GPTQ
// act-order files, the order in which the blocks' columns take the inputs (input_perm[k] is the
// original input index of column k; empty when it is the identity).
struct group_matrix {
    std::vector<std::byte> blocks;
    std::vector<std::uint32_t> input_perm;
};

}  // namespace lmtk::quant
