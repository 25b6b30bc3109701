#pragma once
// GPTQ checkpoints (AutoGPTQ, GPTQModel, transformers/optimum), 4-bit and 3-bit:
// w = s * (q - z) per (output channel, group), see ../shared/spec/quant-formats.md, 2. On disk,
// per linear layer with in inputs, out outputs and groups of g (g = -1: one group of all inputs):
//   qweight int32 [in*bits/32, out]         packed along the INPUT dimension
//   qzeros  int32 [groups, out*bits/32]     packed along the OUTPUT dimension
//   scales  fp16  [groups, out]
//   g_idx   int32 [in]                      the group of each input (i / g unless act-order)
// 4-bit packs 8 values per word from bit 0; 3-bit packs 32 values in 3 words, value v at bits
// 3v .. 3v+2 of the 96-bit little-endian triple. checkpoint_format "gptq" (v1, every AutoGPTQ
// file) stores z - 1, "gptq_v2" (GPTQModel) stores z.
//
// Act-order (desc_act) files quantized inputs in an order of their own, so the inputs of one
// group are scattered. At load the columns are sorted by group (a stable argsort of g_idx, once),
// which makes every group whole blocks again; the forward pass gathers the activations into the
// same order (one pass over the input vector, shared by every row) instead of looking up a
// group per weight.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <vector>

#include <lmtk/core/error.hpp>
#include <lmtk/quant/group_layout.hpp>

namespace lmtk::quant {

// GPTQ with Bits (3 or 4) and groups of Group inputs (32, 64, 128, or -1 for one group per
// output channel); ActOrder: the inputs are permuted (desc_act with a non-trivial g_idx).
// Per-channel scales are repacked into blocks of 32 that repeat the channel's scale and zero.
template <unsigned Bits, int Group, bool ActOrder>
struct gptq {
    static_assert(Bits == 3 || Bits == 4, "gptq: 3 or 4 bits");
    static_assert(Group == 32 || Group == 64 || Group == 128 || Group == -1, "gptq: groups of 32, 64, 128 or -1");
    static constexpr group_format format{group_method::gptq, Bits, Group, ActOrder};
    using layout = group_layout<Bits, Group == -1 ? 32 : std::size_t(Group)>;
};
// The names of the design card.
template <int Group, bool ActOrder = false>
using gptq4 = gptq<4, Group, ActOrder>;
template <int Group, bool ActOrder = false>
using gptq3 = gptq<3, Group, ActOrder>;

namespace gptq_format {

// Value v (0..31) of a 3-bit triple of words.
inline unsigned value_of_triple(std::uint32_t w0, std::uint32_t w1, std::uint32_t w2, unsigned v) noexcept {
    const std::uint64_t lo = std::uint64_t(w0) | (std::uint64_t(w1) << 32);
    const unsigned bit = 3 * v;
    if (bit + 3 <= 64) return static_cast<unsigned>((lo >> bit) & 7);
    if (bit >= 64) return (w2 >> (bit - 64)) & 7;
    return static_cast<unsigned>(((lo >> bit) | (std::uint64_t(w2) << (64 - bit))) & 7);  // straddles w1/w2
}

struct tensors {
    const std::byte* qweight;
    const std::byte* qzeros;
    const std::byte* scales;
    const std::byte* g_idx;  // nullptr: i / group
    std::size_t in, out;
    int group;               // -1: one group
    unsigned bits;
    bool v1;                 // checkpoint_format "gptq": stored zeros are z - 1
};

inline std::size_t group_size(const tensors& t) noexcept { return t.group == -1 ? t.in : std::size_t(t.group); }
inline std::size_t n_groups(const tensors& t) noexcept { return (t.in + group_size(t) - 1) / group_size(t); }

// The group of every input, checked against the number of groups.
inline std::vector<std::uint32_t> groups_of_inputs(const tensors& t) {
    std::vector<std::uint32_t> g(t.in);
    const std::size_t gs = group_size(t), ng = n_groups(t);
    for (std::size_t i = 0; i < t.in; ++i) {
        if (!t.g_idx) {
            g[i] = static_cast<std::uint32_t>(i / gs);
            continue;
        }
        const auto v = static_cast<std::int32_t>(detail::word_at(t.g_idx, i));
        if (v < 0 || std::size_t(v) >= ng) fail("GPTQ: g_idx[", i, "] = ", v, " is not one of the ", ng, " groups");
        g[i] = static_cast<std::uint32_t>(v);
    }
    return g;
}

// True when g_idx is not plain i / group, i.e. the columns must be reordered (act-order).
inline bool needs_reorder(const tensors& t, const std::vector<std::uint32_t>& g) noexcept {
    const std::size_t gs = group_size(t);
    for (std::size_t i = 0; i < g.size(); ++i)
        if (g[i] != i / gs) return true;
    return false;
}

template <unsigned Bits, std::size_t G>
group_matrix repack(const tensors& t) {
    using L = group_layout<Bits, G>;
    if (t.bits != Bits) fail("GPTQ: ", t.bits, "-bit tensors given to the ", Bits, "-bit repacker");
    if (t.in % G != 0 || (Bits == 4 && t.out % 8 != 0) || (Bits == 3 && (t.in % 32 != 0 || t.out % 32 != 0)))
        fail("GPTQ: a ", t.in, " x ", t.out, " matrix does not fit ", Bits, "-bit words and blocks of ", G);
    const std::vector<std::uint32_t> g = groups_of_inputs(t);
    group_matrix m;
    std::vector<std::uint32_t> order(t.in);
    std::iota(order.begin(), order.end(), 0u);
    if (needs_reorder(t, g)) {
        std::stable_sort(order.begin(), order.end(), [&](std::uint32_t a, std::uint32_t b) { return g[a] < g[b]; });
        m.input_perm = order;
    }
    const std::size_t n_blocks = t.in / G;
    // Every block of G sorted columns must be one group: a scale per block.
    for (std::size_t b = 0; b < n_blocks; ++b)
        for (std::size_t j = 1; j < G; ++j)
            if (g[order[b * G + j]] != g[order[b * G]])
                fail("GPTQ: the groups of g_idx are not runs of ", G, " inputs (group ", g[order[b * G]], " has ",
                     std::count(g.begin(), g.end(), g[order[b * G]]), ")");

    const std::size_t zero_words = t.out * Bits / 32;
    const auto zero_of = [&](std::size_t grp, std::size_t o) -> unsigned {
        const std::byte* row = t.qzeros + 4 * grp * zero_words;
        unsigned z;
        if constexpr (Bits == 4) {
            z = (detail::word_at(row, o / 8) >> (4 * (o % 8))) & 0xF;
        } else {
            const std::size_t c = 3 * (o / 32);
            z = value_of_triple(detail::word_at(row, c), detail::word_at(row, c + 1), detail::word_at(row, c + 2),
                                static_cast<unsigned>(o % 32));
        }
        // v1 stores z - 1 (the masked field plus one, as AutoGPTQ's CUDA kernels read it).
        return t.v1 ? z + 1 : z;
    };

    m.blocks.resize(t.out * n_blocks * sizeof(typename L::block));
    auto* out = reinterpret_cast<typename L::block*>(m.blocks.data());
    // Sixteen outputs (one cache line of each qweight row) at a time: their quants for every
    // input, then their blocks.
    constexpr std::size_t chunk = 16;
    std::vector<std::uint8_t> q(chunk * t.in), sorted(G);
    for (std::size_t o0 = 0; o0 < t.out; o0 += chunk) {
        const std::size_t n_o = std::min(chunk, t.out - o0);
        if constexpr (Bits == 4) {
            for (std::size_t r = 0; r < t.in / 8; ++r)
                for (std::size_t j = 0; j < n_o; ++j) {
                    const std::uint32_t w = detail::word_at(t.qweight, r * t.out + o0 + j);
                    for (std::size_t k = 0; k < 8; ++k) q[j * t.in + 8 * r + k] = (w >> (4 * k)) & 0xF;
                }
        } else {
            for (std::size_t r = 0; r < t.in / 32; ++r)
                for (std::size_t j = 0; j < n_o; ++j) {
                    const std::size_t o = o0 + j;
                    const std::uint32_t w0 = detail::word_at(t.qweight, (3 * r) * t.out + o),
                                        w1 = detail::word_at(t.qweight, (3 * r + 1) * t.out + o),
                                        w2 = detail::word_at(t.qweight, (3 * r + 2) * t.out + o);
                    for (unsigned v = 0; v < 32; ++v)
                        q[j * t.in + 32 * r + v] = static_cast<std::uint8_t>(value_of_triple(w0, w1, w2, v));
                }
        }
        for (std::size_t j = 0; j < n_o; ++j) {
            const std::size_t o = o0 + j;
            for (std::size_t b = 0; b < n_blocks; ++b) {
                const std::uint32_t grp = g[order[b * G]];
                for (std::size_t k = 0; k < G; ++k) sorted[k] = q[j * t.in + order[b * G + k]];
                out[o * n_blocks + b] = L::pack(sorted.data(), static_cast<std::uint8_t>(zero_of(grp, o)),
                                                detail::half_at(t.scales, grp * t.out + o));
            }
        }
    }
    return m;
}

}  // namespace gptq_format
}  // namespace lmtk::quant
