#pragma once
// Load-time dispatch: a GGUF tensor's ggml_type -> the compiled kernels of its format, resolved
// once per tensor into plain function pointers so the forward pass has no type switches.
#include <algorithm>
#include <cstddef>
#include <memory>
#include <new>
#include <optional>

#include <boost/hana/ext/std/integral_constant.hpp>
#include <boost/hana/tuple.hpp>
#include <boost/hana/type.hpp>
#include <boost/hana/unpack.hpp>

#include <lmtk/quant/bf16.hpp>
#include <lmtk/quant/f16.hpp>
#include <lmtk/quant/f32.hpp>
#include <lmtk/quant/ggml_type.hpp>
#include <lmtk/quant/iq4_nl.hpp>
#include <lmtk/quant/policy.hpp>
#include <lmtk/quant/q2_k.hpp>
#include <lmtk/quant/q3_k.hpp>
#include <lmtk/quant/q4_0.hpp>
#include <lmtk/quant/q4_1.hpp>
#include <lmtk/quant/q4_k.hpp>
#include <lmtk/quant/q5_0.hpp>
#include <lmtk/quant/q5_1.hpp>
#include <lmtk/quant/q5_k.hpp>
#include <lmtk/quant/q6_k.hpp>
#include <lmtk/quant/q8_0.hpp>

namespace lmtk::quant {

struct weight_ops {
    ggml_type type;
    std::size_t block_elems, block_bytes;
    // Dequantize the first n values (n % block_elems == 0) of a row starting at `row` into out.
    void (*dequantize_row)(const std::byte* row, float* out, std::size_t n) noexcept;
    // For r in [r0, r1) and t in [0, n_tok): y[t*y_stride + r] = dot(row r of W, x + t*x_stride).
    // W is row-major with `cols` elements per row (row bytes = cols/block_elems*block_bytes).
    void (*matmul)(const std::byte* w, std::size_t cols, std::size_t r0, std::size_t r1,
                   const float* x, std::size_t x_stride, std::size_t n_tok,
                   float* y, std::size_t y_stride) noexcept;
};

// The formats compiled into a program. Ids must be distinct: resolve() takes the first match.
template <quant_policy... Ps>
struct set {
    static constexpr auto types = boost::hana::tuple_t<Ps...>;
    static constexpr bool contains(ggml_type t) noexcept { return ((Ps::type_id == t) || ...); }
};

// Every weight format lmtk reads. Q8_K is left out: ggml only uses it for activations.
using default_set = set<f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q2_k, q3_k, q4_k, q5_k, q6_k, iq4_nl>;

namespace kernels {

template <quant_policy P>
const typename P::block* blocks(const std::byte* p) noexcept {
    // GGUF aligns tensor data to >= 32 bytes and every row is whole blocks, so the bytes of a
    // mapped tensor are an array of blocks.
    return reinterpret_cast<const typename P::block*>(p);
}

template <quant_policy P>
void dequantize_row(const std::byte* row, float* out, std::size_t n) noexcept {
    P::dequantize_row(blocks<P>(row), out, n / P::block_elems);
}

// Prefill visits the rows of W in tiles of about this many bytes (as floats); within a tile
// every token is multiplied before moving on, so each weight byte comes from memory once while
// the tile sits in L2 and the token's activations in L1.
inline constexpr std::size_t row_tile_bytes = 64 * 1024;

template <quant_policy P, class Arch>
void matmul(const std::byte* w, std::size_t cols, std::size_t r0, std::size_t r1, const float* x,
            std::size_t x_stride, std::size_t n_tok, float* y, std::size_t y_stride) noexcept {
    const std::size_t n_blocks = cols / P::block_elems;
    const auto* rows = blocks<P>(w);
    if (n_tok == 1) {  // decode: one pass over the rows, decoding inside the dot
        for (std::size_t r = r0; r < r1; ++r) y[r] = P::dot(Arch{}, rows + r * n_blocks, x, n_blocks);
        return;
    }
    // Prefill: decode each row of a tile to floats once and reuse it for every token, rather
    // than decoding it again per token inside P::dot (twice the speed for Q8_0 at 32 tokens).
    // If the scratch cannot be had, fall back to P::dot: slower, same results up to rounding.
    const std::size_t tile = std::max<std::size_t>(1, row_tile_bytes / (std::max<std::size_t>(1, cols) * sizeof(float)));
    std::unique_ptr<float[]> decoded;
    if constexpr (P::type_id != ggml_type::f32) decoded.reset(new (std::nothrow) float[tile * cols]);
    const auto* decoded_rows = reinterpret_cast<const f32::block*>(decoded.get());
    for (std::size_t rt = r0; rt < r1; rt += tile) {
        const std::size_t rt_end = std::min(r1, rt + tile);
        if (decoded) {
            for (std::size_t r = rt; r < rt_end; ++r)
                P::dequantize_row(rows + r * n_blocks, decoded.get() + (r - rt) * cols, n_blocks);
        }
        for (std::size_t t = 0; t < n_tok; ++t) {
            const float* xt = x + t * x_stride;
            float* yt = y + t * y_stride;
            for (std::size_t r = rt; r < rt_end; ++r) {
                yt[r] = decoded ? f32::dot(Arch{}, decoded_rows + (r - rt) * cols, xt, cols)
                                : P::dot(Arch{}, rows + r * n_blocks, xt, n_blocks);
            }
        }
    }
}

}  // namespace kernels

template <quant_policy P, class Arch>
constexpr weight_ops ops_of() noexcept {
    return weight_ops{P::type_id, P::block_elems, sizeof(typename P::block), &kernels::dequantize_row<P>,
                      &kernels::matmul<P, Arch>};
}

// nullopt when the type is not compiled into Set: the loader turns that into a load error.
template <class Set, class Arch>
std::optional<weight_ops> resolve(ggml_type t) noexcept {
    return boost::hana::unpack(Set::types, [t](auto... p) {
        std::optional<weight_ops> ops;
        // A short-circuit switch over the set: stops at the first format whose id matches.
        static_cast<void>(
            ((decltype(p)::type::type_id == t ? (ops = ops_of<typename decltype(p)::type, Arch>(), true) : false) ||
             ...));
        return ops;
    });
}

}  // namespace lmtk::quant
