#pragma once
// AutoAWQ checkpoints, GEMM layout (version "gemm", the common one): 4-bit, a zero point and an
// fp16 scale per (output channel, group of g inputs), w = (q - z) * s with zeros stored as is.
// On disk (../shared/spec/quant-formats.md, 1.3), per linear layer with in inputs, out outputs:
//   qweight int32 [in, out/8]    eight outputs per word, interleaved: nibble k of word c holds
//                                output 8c + order[k], order = 0 2 4 6 1 3 5 7
//   qzeros  int32 [in/g, out/8]  the same packing
//   scales  fp16  [in/g, out]
// The GEMV layout (packed along the input dimension, one row per output) is read too.
// Both are repacked at load into group_layout<4, g>, one block per (output, group).
#include <cstddef>
#include <cstdint>
#include <vector>

#include <lmtk/core/error.hpp>
#include <lmtk/quant/group_layout.hpp>

namespace lmtk::quant {

// AutoAWQ 4-bit with groups of Group inputs (32, 64 or 128).
template <int Group>
struct awq4 {
    static_assert(Group == 32 || Group == 64 || Group == 128, "awq4: AutoAWQ groups are 32, 64 or 128");
    static constexpr group_format format{group_method::awq, 4, Group, false};
    using layout = group_layout<4, std::size_t(Group)>;
};

namespace awq {

// Nibble of each output 8c + j within word c: the inverse of the packing order above.
inline constexpr unsigned nibble_of_output[8] = {0, 4, 1, 5, 2, 6, 3, 7};

// The three tensors of one GEMM-layout linear layer, as mapped bytes (shapes checked by the
// caller against in, out and group).
struct gemm_tensors {
    const std::byte* qweight;
    const std::byte* qzeros;
    const std::byte* scales;
    std::size_t in, out, group;
};

template <std::size_t G>
group_matrix repack_gemm(const gemm_tensors& t) {
    using L = group_layout<4, G>;
    if (t.group != G || t.in % G != 0 || t.out % 8 != 0)
        fail("AWQ: a ", t.in, " x ", t.out, " matrix does not split into groups of ", G, " and words of 8 outputs");
    const std::size_t words = t.out / 8, n_blocks = t.in / G;
    group_matrix m;
    m.blocks.resize(t.out * n_blocks * sizeof(typename L::block));
    auto* out = reinterpret_cast<typename L::block*>(m.blocks.data());
    // Eight outputs (one word column) at a time: their quants for every input, then their blocks.
    std::vector<std::uint8_t> q(8 * t.in);
    for (std::size_t c = 0; c < words; ++c) {
        for (std::size_t i = 0; i < t.in; ++i) {
            const std::uint32_t w = detail::word_at(t.qweight, i * words + c);
            for (std::size_t j = 0; j < 8; ++j) q[j * t.in + i] = (w >> (4 * nibble_of_output[j])) & 0xF;
        }
        for (std::size_t b = 0; b < n_blocks; ++b) {
            const std::uint32_t zw = detail::word_at(t.qzeros, b * words + c);
            for (std::size_t j = 0; j < 8; ++j) {
                const std::size_t o = 8 * c + j;
                const auto z = static_cast<std::uint8_t>((zw >> (4 * nibble_of_output[j])) & 0xF);
                out[o * n_blocks + b] = L::pack(&q[j * t.in + b * G], z, detail::half_at(t.scales, b * t.out + o));
            }
        }
    }
    return m;
}

// GEMV layout (../shared/spec/quant-formats.md, 1.4): qweight int32 [out, in/8] natural order,
// qzeros int32 [out, zw] (nibble k of word c: zero of group 8c + k), scales fp16 [out, 8 zw].
struct gemv_tensors {
    const std::byte* qweight;
    const std::byte* qzeros;
    const std::byte* scales;
    std::size_t in, out, group, zero_words;
};

template <std::size_t G>
group_matrix repack_gemv(const gemv_tensors& t) {
    using L = group_layout<4, G>;
    if (t.group != G || t.in % G != 0 || t.in % 8 != 0 || t.zero_words * 8 < t.in / G)
        fail("AWQ GEMV: a ", t.in, " x ", t.out, " matrix does not match groups of ", G);
    const std::size_t n_blocks = t.in / G, in_words = t.in / 8;
    group_matrix m;
    m.blocks.resize(t.out * n_blocks * sizeof(typename L::block));
    auto* out = reinterpret_cast<typename L::block*>(m.blocks.data());
    std::vector<std::uint8_t> q(t.in);
    for (std::size_t o = 0; o < t.out; ++o) {
        for (std::size_t c = 0; c < in_words; ++c) {
            const std::uint32_t w = detail::word_at(t.qweight, o * in_words + c);
            for (std::size_t k = 0; k < 8; ++k) q[8 * c + k] = (w >> (4 * k)) & 0xF;
        }
        for (std::size_t b = 0; b < n_blocks; ++b) {
            const std::uint32_t zw = detail::word_at(t.qzeros, o * t.zero_words + b / 8);
            const auto z = static_cast<std::uint8_t>((zw >> (4 * (b % 8))) & 0xF);
            out[o * n_blocks + b] = L::pack(&q[b * G], z, detail::half_at(t.scales, o * t.zero_words * 8 + b));
        }
    }
    return m;
}

}  // namespace awq
}  // namespace lmtk::quant
