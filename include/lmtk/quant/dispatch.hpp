#pragma once
// Load-time dispatch: a GGUF tensor's ggml_type -> the compiled kernels of its format, resolved
// once per tensor into plain function pointers so the forward pass has no type switches.
#include <algorithm>
#include <cstddef>
#include <memory>
#include <new>
#include <optional>
#include <span>
#include <type_traits>

#include <boost/hana/ext/std/integral_constant.hpp>
#include <boost/hana/tuple.hpp>
#include <boost/hana/type.hpp>
#include <boost/hana/unpack.hpp>

#include <lmtk/quant/act_q8.hpp>
#include <lmtk/quant/awq.hpp>
#include <lmtk/quant/bf16.hpp>
#include <lmtk/quant/f16.hpp>
#include <lmtk/quant/f32.hpp>
#include <lmtk/quant/ggml_type.hpp>
#include <lmtk/quant/gptq.hpp>
#include <lmtk/quant/group_layout.hpp>
#include <lmtk/quant/interleaved.hpp>
#include <lmtk/quant/interleaved_avx2.hpp>
#include <lmtk/quant/interleaved_neon.hpp>
#include <lmtk/quant/interleaved_f16.hpp>
#include <lmtk/quant/interleaved_vnni.hpp>
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

// The type of weight_ops for a format that is not a GGUF type (the AWQ/GPTQ group layouts): an
// id no GGUF file can name, since the reader accepts only ids of known_types.
inline constexpr ggml_type not_a_gguf_type = static_cast<ggml_type>(0xFFFFFFFFu);

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

    // Optional faster path on prepared activations (nullptr: none; use matmul). The caller
    // converts each input row once with prepare_row into act_row_bytes(cols) bytes and then
    // calls matmul_act with those rows in place of x: the conversion is shared between the
    // projections reading one input (same `act`) and paid once, not once per row of W.
    // Formats that leave these unset work unchanged.
    activation_kind act = activation_kind::f32;
    std::size_t (*act_row_bytes)(std::size_t cols) noexcept = nullptr;
    void (*prepare_row)(const float* x, std::byte* out, std::size_t cols) noexcept = nullptr;
    void (*matmul_act)(const std::byte* w, std::size_t cols, std::size_t r0, std::size_t r1,
                       const std::byte* xa, std::size_t xa_stride, std::size_t n_tok,
                       float* y, std::size_t y_stride) noexcept = nullptr;

    // Rows stored together: 1 for row-major matrices, 16 for an interleaved layout. matmul and
    // matmul_act then take r0 at a multiple of it (threads split a matrix at group boundaries).
    std::size_t row_group = 1;
    // Row r of a whole matrix w (of `cols` columns) in this layout -> out.
    void (*dequantize_row_at)(const std::byte* w, std::size_t cols, std::size_t r, float* out) noexcept = nullptr;

    // Where the format has an interleaved layout with faster kernels on this target (a model
    // repacks into it at load): its ops, its size, and the repacking of group g (rows 16g ..
    // 16g + 15) of a row-major matrix into that group of the interleaved one. nullptr: none.
    const weight_ops* interleaved = nullptr;
    std::size_t (*interleaved_bytes)(std::size_t rows, std::size_t cols) noexcept = nullptr;
    void (*interleave_group)(const std::byte* w, std::size_t rows, std::size_t cols, std::size_t g,
                             std::byte* out) noexcept = nullptr;
};

// The formats compiled into a program. Ids must be distinct: resolve() takes the first match.
template <quant_policy... Ps>
struct set {
    static constexpr auto types = boost::hana::tuple_t<Ps...>;
    static constexpr bool contains(ggml_type t) noexcept { return ((Ps::type_id == t) || ...); }
};

// A set plus the AWQ/GPTQ formats it compiles in (a checkpoint's quantization_config maps onto
// one of them at load, like a GGUF tensor's type onto one of Base's).
template <class Base, group_policy... Gs>
struct with_group_formats : Base {
    static constexpr auto group_types = boost::hana::tuple_t<Gs...>;
    static constexpr bool contains_group(const group_format& f) noexcept { return ((Gs::format == f) || ...); }
};

// Every weight format lmtk reads. Q8_K is left out: ggml only uses it for activations. The
// AWQ/GPTQ policies share kernels per (bits, block size): awq4<128> and gptq<4, 128, *> are one
// group_layout<4, 128>.
using default_set = with_group_formats<
    set<f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q2_k, q3_k, q4_k, q5_k, q6_k, iq4_nl>,
    awq4<32>, awq4<64>, awq4<128>,
    gptq<4, 32, false>, gptq<4, 64, false>, gptq<4, 128, false>, gptq<4, -1, false>,
    gptq<4, 32, true>, gptq<4, 64, true>, gptq<4, 128, true>, gptq<4, -1, true>,
    gptq<3, 32, false>, gptq<3, 64, false>, gptq<3, 128, false>, gptq<3, -1, false>,
    gptq<3, 32, true>, gptq<3, 64, true>, gptq<3, 128, true>, gptq<3, -1, true>>;

// What the generic kernels below need of a format: a block of block_elems values, a scalar
// decoder and a dot kernel. GGUF policies and the AWQ/GPTQ group layouts both are.
template <class P>
concept block_format = std::is_trivially_copyable_v<typename P::block> &&
                       requires(const typename P::block* w, const float* x, float* y, std::size_t n) {
                           { P::block_elems } -> std::convertible_to<std::size_t>;
                           { P::dequantize_row(w, y, n) } noexcept;
                           { P::dot(xsimd::default_arch{}, w, x, n) } noexcept -> std::same_as<float>;
                       };

namespace kernels {

template <block_format P>
const typename P::block* blocks(const std::byte* p) noexcept {
    // GGUF aligns tensor data to >= 32 bytes and every row is whole blocks, so the bytes of a
    // mapped tensor are an array of blocks.
    return reinterpret_cast<const typename P::block*>(p);
}

template <block_format P>
void dequantize_row(const std::byte* row, float* out, std::size_t n) noexcept {
    P::dequantize_row(blocks<P>(row), out, n / P::block_elems);
}

// Prefill visits the rows of W in tiles of about this many bytes (as floats); within a tile
// every token is multiplied before moving on, so each weight byte comes from memory once while
// the tile sits in L2 and the token's activations in L1.
inline constexpr std::size_t row_tile_bytes = 64 * 1024;

// out[r][t] = dot(w[r], x[t]) over n floats for R rows and T tokens at once: each loaded vector
// of weights serves T tokens and each vector of activations R rows, so R + T loads feed R * T
// FMAs (one row against one token needs two loads per FMA and stalls on the load ports).
template <class Arch, int R, int T>
void dot_tile_f32(const float* const (&w)[R], const float* const (&x)[T], std::size_t n, float (&out)[R][T]) noexcept {
    using batch = xsimd::batch<float, Arch>;
    batch acc[R][T];
    for (int r = 0; r < R; ++r)
        for (int t = 0; t < T; ++t) acc[r][t] = batch(0.0f);
    std::size_t k = 0;
    for (; k + batch::size <= n; k += batch::size) {
        batch wv[R];
        for (int r = 0; r < R; ++r) wv[r] = batch::load_unaligned(w[r] + k);
        for (int t = 0; t < T; ++t) {
            const batch xv = batch::load_unaligned(x[t] + k);
            for (int r = 0; r < R; ++r) acc[r][t] = xsimd::fma(wv[r], xv, acc[r][t]);
        }
    }
    for (int r = 0; r < R; ++r)
        for (int t = 0; t < T; ++t) {
            float s = xsimd::hadd(acc[r][t]);
            for (std::size_t j = k; j < n; ++j) s += w[r][j] * x[t][j];
            out[r][t] = s;
        }
}

// Scratch for the decoded rows of a tile: one per thread, grown once, so prefill does not
// allocate per call. Empty if it could not grow (the caller then falls back to P::dot).
inline std::span<float> decode_scratch(std::size_t n) noexcept {
    thread_local std::unique_ptr<float[]> buf;
    thread_local std::size_t size = 0;
    if (size < n) {
        buf.reset(new (std::nothrow) float[n]);
        size = buf ? n : 0;
    }
    return {buf.get(), size};
}

template <block_format P, class Arch>
void matmul(const std::byte* w, std::size_t cols, std::size_t r0, std::size_t r1, const float* x,
            std::size_t x_stride, std::size_t n_tok, float* y, std::size_t y_stride) noexcept {
    const std::size_t n_blocks = cols / P::block_elems;
    const auto* rows = blocks<P>(w);
    if (n_tok == 1) {  // decode: one pass over the rows, decoding inside the dot
        for (std::size_t r = r0; r < r1; ++r) y[r] = P::dot(Arch{}, rows + r * n_blocks, x, n_blocks);
        return;
    }
    // Prefill: decode each row of a tile to floats once (F32 rows are used in place) and reuse it
    // for every token, in register tiles of R rows x T tokens. If the scratch cannot be had, fall
    // back to P::dot: slower, same results up to rounding.
    constexpr bool in_place = [] {
        if constexpr (quant_policy<P>) return P::type_id == ggml_type::f32;
        else return false;
    }();
    const std::size_t tile = std::max<std::size_t>(4, row_tile_bytes / (std::max<std::size_t>(1, cols) * sizeof(float)));
    const std::span<float> decoded = in_place ? std::span<float>() : decode_scratch(tile * cols);
    if (!in_place && decoded.empty()) {
        for (std::size_t t = 0; t < n_tok; ++t)
            for (std::size_t r = r0; r < r1; ++r)
                y[t * y_stride + r] = P::dot(Arch{}, rows + r * n_blocks, x + t * x_stride, n_blocks);
        return;
    }
    constexpr int R = 4, T = xsimd::batch<float, Arch>::size >= 16 ? 4 : 2;  // 16 or 8 accumulators
    for (std::size_t rt = r0; rt < r1; rt += tile) {
        const std::size_t rt_end = std::min(r1, rt + tile);
        const auto row = [&](std::size_t r) -> const float* {
            if constexpr (in_place) return reinterpret_cast<const float*>(rows + r * n_blocks);
            else return decoded.data() + (r - rt) * cols;
        };
        if constexpr (!in_place)
            for (std::size_t r = rt; r < rt_end; ++r)
                P::dequantize_row(rows + r * n_blocks, decoded.data() + (r - rt) * cols, n_blocks);
        const auto run = [&]<int RR, int TT>(std::size_t r, std::size_t t) {
            const float* wr[RR];
            const float* xr[TT];
            float out[RR][TT];
            for (int i = 0; i < RR; ++i) wr[i] = row(r + i);
            for (int j = 0; j < TT; ++j) xr[j] = x + (t + j) * x_stride;
            dot_tile_f32<Arch, RR, TT>(wr, xr, cols, out);
            for (int i = 0; i < RR; ++i)
                for (int j = 0; j < TT; ++j) y[(t + j) * y_stride + r + i] = out[i][j];
        };
        const auto rows_against = [&]<int TT>(std::size_t t) {
            std::size_t r = rt;
            for (; r + R <= rt_end; r += R) run.template operator()<R, TT>(r, t);
            for (; r < rt_end; ++r) run.template operator()<1, TT>(r, t);
        };
        std::size_t t = 0;
        for (; t + T <= n_tok; t += T) rows_against.template operator()<T>(t);
        for (; t < n_tok; ++t) rows_against.template operator()<1>(t);
    }
}

}  // namespace kernels

namespace kernels {
inline std::size_t act_q8_row_bytes(std::size_t cols) noexcept { return act_q8::row_bytes(cols); }

template <block_format P>
void dequantize_row_at(const std::byte* w, std::size_t cols, std::size_t r, float* out) noexcept {
    const std::size_t nb = cols / P::block_elems;
    P::dequantize_row(blocks<P>(w) + r * nb, out, nb);
}

// ---- interleaved layouts (interleaved.hpp) -------------------------------------------------

template <class P>
void dequantize_interleaved_row(const std::byte* w, std::size_t cols, std::size_t r, float* out) noexcept {
    using L = interleaved<P>;
    const std::size_t nb = cols / P::block_elems;
    L::dequantize_row(w + r / L::rows * L::group_bytes(nb), nb, r % L::rows, out);
}

template <class P>
std::size_t interleaved_bytes(std::size_t rows, std::size_t cols) noexcept {
    return interleaved<P>::matrix_bytes(rows, cols / P::block_elems);
}

template <class P>
void interleave_group(const std::byte* w, std::size_t rows, std::size_t cols, std::size_t g, std::byte* out) noexcept {
    using L = interleaved<P>;
    const std::size_t nb = cols / P::block_elems, r0 = g * L::rows;
    L::pack(blocks<P>(w) + r0 * nb, nb, nb, std::min(L::rows, rows - r0), out + g * L::group_bytes(nb));
}

// Float activations against an interleaved matrix: a row decoded at a time. Nothing fast takes
// this path (interleaved weights always come with their int8 kernels); it keeps every
// weight_ops complete.
template <class P, class Arch>
void matmul_interleaved_f32(const std::byte* w, std::size_t cols, std::size_t r0, std::size_t r1, const float* x,
                            std::size_t x_stride, std::size_t n_tok, float* y, std::size_t y_stride) noexcept {
    const std::span<float> row = decode_scratch(cols);
    if (row.empty()) return;
    for (std::size_t r = r0; r < r1; ++r) {
        dequantize_interleaved_row<P>(w, cols, r, row.data());
        for (std::size_t t = 0; t < n_tok; ++t)
            y[t * y_stride + r] = f32::dot(Arch{}, reinterpret_cast<const f32::block*>(row.data()), x + t * x_stride, cols);
    }
}

}  // namespace kernels

#if LMTK_QUANT_VNNI
// Int8 activations where the format has VNNI kernels and the target is an AVX-512 one.
template <class P, class Arch>
inline constexpr bool uses_vnni = vnni::format<P>::supported && std::is_base_of_v<xsimd::avx512bw, Arch>;

template <quant_policy P, class Arch>
constexpr weight_ops interleaved_ops_of() noexcept {
    weight_ops ops{P::type_id, P::block_elems, sizeof(typename P::block), nullptr,
                   &kernels::matmul_interleaved_f32<P, Arch>};
    ops.act = activation_kind::q8;
    ops.act_row_bytes = &kernels::act_q8_row_bytes;
    ops.prepare_row = &act_q8::quantize_row;
    ops.matmul_act = &vnni::matmul_interleaved<P>;
    ops.row_group = interleaved<P>::rows;
    ops.dequantize_row_at = &kernels::dequantize_interleaved_row<P>;
    return ops;
}
template <quant_policy P, class Arch>
inline constexpr weight_ops interleaved_ops_v = interleaved_ops_of<P, Arch>();
#endif

#if LMTK_QUANT_F16_INTERLEAVED
// F16 interleaved: float activations, the kernels of interleaved_f16.hpp.
template <class Arch>
inline constexpr bool uses_f16_interleaved = std::is_base_of_v<xsimd::avx512f, Arch>;
constexpr weight_ops interleaved_f16_ops_of() noexcept {
    weight_ops ops{f16::type_id, f16::block_elems, sizeof(f16::block), nullptr, &f16x16::matmul};
    ops.row_group = interleaved<f16>::rows;
    ops.dequantize_row_at = &kernels::dequantize_interleaved_row<f16>;
    return ops;
}
inline constexpr weight_ops interleaved_f16_ops_v = interleaved_f16_ops_of();
#endif

// The kernels over the same interleaved layouts for ISAs with narrower registers (AVX2:
// interleaved_avx2.hpp; NEON with DotProd: interleaved_neon.hpp). Matmul: the level's F16
// float matmul for F16, its int8 matmul_act for the others.
template <quant_policy P, class Arch, auto Matmul>
constexpr weight_ops narrow_interleaved_ops_of() noexcept {
    if constexpr (std::is_same_v<P, f16>) {
        weight_ops ops{f16::type_id, f16::block_elems, sizeof(f16::block), nullptr, Matmul};
        ops.row_group = interleaved<f16>::rows;
        ops.dequantize_row_at = &kernels::dequantize_interleaved_row<f16>;
        return ops;
    } else {
        weight_ops ops{P::type_id, P::block_elems, sizeof(typename P::block), nullptr,
                       &kernels::matmul_interleaved_f32<P, Arch>};
        ops.act = activation_kind::q8;
        ops.act_row_bytes = &kernels::act_q8_row_bytes;
        ops.prepare_row = &act_q8::quantize_row;
        ops.matmul_act = Matmul;
        ops.row_group = interleaved<P>::rows;
        ops.dequantize_row_at = &kernels::dequantize_interleaved_row<P>;
        return ops;
    }
}
template <quant_policy P, class Arch, auto Matmul>
inline constexpr weight_ops narrow_interleaved_ops_v = narrow_interleaved_ops_of<P, Arch, Matmul>();

#if LMTK_QUANT_AVX2_INTERLEAVED
// AVX2 targets without the AVX-512 kernels.
template <class Arch>
inline constexpr bool avx2_without_avx512 = std::is_base_of_v<xsimd::avx2, Arch> && !std::is_base_of_v<xsimd::avx512f, Arch>;
template <quant_policy P>
constexpr auto avx2_matmul() noexcept {
    if constexpr (std::is_same_v<P, f16>) return &avx2x16::matmul_f16;
    else return &avx2x16::matmul_interleaved<P>;
}
#endif

#if LMTK_QUANT_NEON_INTERLEAVED
template <quant_policy P>
constexpr auto neon_matmul() noexcept {
    if constexpr (std::is_same_v<P, f16>) return &neon16::matmul_f16;
    else return &neon16::matmul_interleaved<P>;
}
#endif

template <quant_policy P, class Arch>
constexpr weight_ops ops_of() noexcept {
    weight_ops ops{P::type_id, P::block_elems, sizeof(typename P::block), &kernels::dequantize_row<P>,
                   &kernels::matmul<P, Arch>};
    ops.dequantize_row_at = &kernels::dequantize_row_at<P>;
#if LMTK_QUANT_VNNI
    if constexpr (uses_vnni<P, Arch>) {
        ops.act = activation_kind::q8;
        ops.act_row_bytes = &kernels::act_q8_row_bytes;
        ops.prepare_row = &act_q8::quantize_row;
        ops.matmul_act = &vnni::matmul<P>;
        if constexpr (has_interleaved<P>) {
            ops.interleaved = &interleaved_ops_v<P, Arch>;
            ops.interleaved_bytes = &kernels::interleaved_bytes<P>;
            ops.interleave_group = &kernels::interleave_group<P>;
        }
    }
#endif
#if LMTK_QUANT_F16_INTERLEAVED
    if constexpr (std::is_same_v<P, f16> && uses_f16_interleaved<Arch>) {
        ops.interleaved = &interleaved_f16_ops_v;
        ops.interleaved_bytes = &kernels::interleaved_bytes<P>;
        ops.interleave_group = &kernels::interleave_group<P>;
    }
#endif
#if LMTK_QUANT_AVX2_INTERLEAVED
    if constexpr (avx2_without_avx512<Arch> && (avx2x16::int8_format<P> || std::is_same_v<P, f16>)) {
        static_assert(has_interleaved<P>);
        ops.interleaved = &narrow_interleaved_ops_v<P, Arch, avx2_matmul<P>()>;
        ops.interleaved_bytes = &kernels::interleaved_bytes<P>;
        ops.interleave_group = &kernels::interleave_group<P>;
    }
#endif
#if LMTK_QUANT_NEON_INTERLEAVED
    if constexpr (neon16::int8_format<P> || std::is_same_v<P, f16>) {
        static_assert(has_interleaved<P>);
        ops.interleaved = &narrow_interleaved_ops_v<P, Arch, neon_matmul<P>()>;
        ops.interleaved_bytes = &kernels::interleaved_bytes<P>;
        ops.interleave_group = &kernels::interleave_group<P>;
    }
#endif
    return ops;
}

// The kernels of an AWQ/GPTQ group layout (float activations only, for now).
template <class Layout, class Arch>
constexpr weight_ops ops_of_layout() noexcept {
    weight_ops ops{not_a_gguf_type, Layout::block_elems, sizeof(typename Layout::block),
                   &kernels::dequantize_row<Layout>, &kernels::matmul<Layout, Arch>};
    ops.dequantize_row_at = &kernels::dequantize_row_at<Layout>;
    return ops;
}

// nullopt when the format is not compiled into Set (or Set has no group formats).
template <class Set, class Arch>
std::optional<weight_ops> resolve_group(const group_format& f) noexcept {
    if constexpr (requires { Set::group_types; }) {
        return boost::hana::unpack(Set::group_types, [&f](auto... p) {
            std::optional<weight_ops> ops;
            static_cast<void>(((decltype(p)::type::format == f
                                    ? (ops = ops_of_layout<typename decltype(p)::type::layout, Arch>(), true)
                                    : false) ||
                               ...));
            return ops;
        });
    } else {
        return std::nullopt;
    }
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
