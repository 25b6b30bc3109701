#pragma once
// Integer matmul of Q8_0 / Q4_0 weights against int8 activations (act_q8) with AVX-512 VNNI.
//
// Why intrinsics: vpdpbusd multiplies 64 unsigned by 64 signed bytes and adds each group of four
// products into an int32 lane, one instruction for what the float path does with 4 widenings
// and 4 FMAs; xsimd 8.1 has no VNNI. bench/quant_kernels.cpp shows the gain (decode and prefill
// both), and tests/quant/int8_matmul.cpp checks these kernels against the scalar reference below.
// Other CPUs keep the portable float kernels (weight_ops::matmul).
//
// The shape of the computation: the weights' quants are made unsigned (u = q + z: Q8_0 flips
// the sign bit, z = 128; Q4_0 keeps its nibbles, z = 8), two blocks (64 bytes) at a time, so that
// sum(u * x) - z * sum(x) is the block's integer dot; the correction is folded into the
// accumulator vpdpbusd starts from. Each block's int32 partial sums are then converted and scaled
// by d_w * d_x in float. A tile of R rows x T tokens reuses every unpacked weight vector for T
// tokens and every activation vector for R rows: decode runs 4 x 1 tiles, prefill 4 x 4.
#include <algorithm>
#include <cstddef>
#include <cstdint>

#include <lmtk/quant/act_q8.hpp>
#include <lmtk/quant/q4_0.hpp>
#include <lmtk/quant/q8_0.hpp>

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512VNNI__) && \
    defined(__F16C__)
#define LMTK_QUANT_VNNI 1
#include <immintrin.h>
#endif

namespace lmtk::quant::vnni {

// Scalar reference of the int8 path: the exact value the kernels compute up to float rounding,
// sum over blocks of sum_j w[j] * d_x * q_x[j] with w from the format's reference decoder.
template <class P>
float reference_dot(const typename P::block* w, const act_q8::row& x, std::size_t n_blocks) noexcept {
    static_assert(P::block_elems == act_q8::block_elems);
    double sum = 0.0;
    float deq[P::block_elems];
    for (std::size_t b = 0; b < n_blocks; ++b) {
        P::dequantize_row(w + b, deq, 1);
        double s = 0.0;
        for (std::size_t j = 0; j < P::block_elems; ++j) s += double(deq[j]) * x.qs[b * P::block_elems + j];
        sum += s * x.d[b];
    }
    return static_cast<float>(sum);
}

// How a weight format's blocks become unsigned bytes for vpdpbusd; only formats with a
// specialisation get the int8 path.
template <class P>
struct format {
    static constexpr bool supported = false;
};

#if LMTK_QUANT_VNNI

// GCC 12's AVX-512 intrinsics start from _mm512_undefined_*() (`__m512 __Y = __Y;`), which it
// then reports as uninitialised in every function they are inlined into: a false positive.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

template <>
struct format<q8_0> {
    static constexpr bool supported = true;
    static constexpr int zero_shift = 7;  // z = 128: q + 128 is q with its sign bit flipped
    static __m512i unpack_pair(const q8_0::block* b) noexcept {
        const __m256i lo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[0].qs));
        const __m256i hi = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[1].qs));
        const __m512i q = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
        return _mm512_xor_si512(q, _mm512_set1_epi8(static_cast<char>(0x80)));
    }
};

template <>
struct format<q4_0> {
    static constexpr bool supported = true;
    static constexpr int zero_shift = 3;  // z = 8: the nibbles are q + 8 already
    static __m512i unpack_pair(const q4_0::block* b) noexcept {
        // [b0.qs | b1.qs] -> [b0.qs, b0.qs, b1.qs, b1.qs] -> low nibbles in lanes 0 and 2, high
        // nibbles (shifted down) in lanes 1 and 3: the element order of the two blocks.
        const __m128i q0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b[0].qs));
        const __m128i q1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b[1].qs));
        const __m256i q = _mm256_inserti128_si256(_mm256_castsi128_si256(q0), q1, 1);
        const __m512i dup = _mm512_permutexvar_epi64(_mm512_setr_epi64(0, 1, 0, 1, 2, 3, 2, 3), _mm512_castsi256_si512(q));
        const __m512i shift = _mm512_setr_epi64(0, 0, 0x0004000400040004, 0x0004000400040004, 0, 0,
                                                0x0004000400040004, 0x0004000400040004);
        return _mm512_and_si512(_mm512_srlv_epi16(dup, shift), _mm512_set1_epi8(0x0F));
    }
};

namespace detail {

// 16 lanes: the first 8 hold v[0], the last 8 v[1] (one float per block of a pair).
inline __m512 spread_pair(__m128 v) noexcept {
    const __m512i idx = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    return _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(v));
}

// The fp16 scales of blocks b[0] and b[1] as floats in lanes 0 and 1.
template <class Block>
__m128 scales_pair(const Block* b) noexcept {
    const auto bits = static_cast<std::uint32_t>(b[0].d) | (static_cast<std::uint32_t>(b[1].d) << 16);
    return _mm_cvtph_ps(_mm_cvtsi32_si128(static_cast<int>(bits)));
}

// R rows x T tokens over every block of the rows: out[r][t] = dot(row r, token t).
template <class P, int R, int T>
void tile(const typename P::block* const (&w)[R], const act_q8::row (&x)[T], std::size_t n_blocks,
          float (&out)[R][T]) noexcept {
    using fmt = format<P>;
    __m512 acc[R][T];
    for (int r = 0; r < R; ++r)
        for (int t = 0; t < T; ++t) acc[r][t] = _mm512_setzero_ps();
    std::size_t b = 0;
    for (; b + 2 <= n_blocks; b += 2) {
        __m512i wq[R];
        __m512 wd[R];
        for (int r = 0; r < R; ++r) {
            wq[r] = fmt::unpack_pair(w[r] + b);
            wd[r] = spread_pair(scales_pair(w[r] + b));
        }
        for (int t = 0; t < T; ++t) {
            const __m512i xq = _mm512_loadu_si512(x[t].qs + b * 32);
            const __m512 xd = spread_pair(_mm_castpd_ps(_mm_load_sd(reinterpret_cast<const double*>(x[t].d + b))));
            // -z * sum(x) of each block in the first lane of its half: where vpdpbusd starts.
            const __m512i sums = _mm512_maskz_expand_epi32(
                0x0101, _mm512_castsi128_si512(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(x[t].sum + b))));
            const __m512i start = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_slli_epi32(sums, fmt::zero_shift));
            for (int r = 0; r < R; ++r) {
                const __m512i dot = _mm512_dpbusd_epi32(start, wq[r], xq);
                acc[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(wd[r], xd), acc[r][t]);
            }
        }
    }
    for (int r = 0; r < R; ++r)
        for (int t = 0; t < T; ++t) {
            out[r][t] = _mm512_reduce_add_ps(acc[r][t]);
            // An odd last block (rows of 288 values, say) is not worth a half-width kernel.
            if (b < n_blocks) {
                const act_q8::row tail{x[t].qs + b * 32, x[t].d + b, x[t].ds + b, x[t].sum + b};
                out[r][t] += reference_dot<P>(w[r] + b, tail, 1);
            }
        }
}

}  // namespace detail

// Rows are visited in tiles of about this many weight bytes, which stay in L2 while every token
// of the batch passes over them.
inline constexpr std::size_t row_tile_bytes = 256 * 1024;

// weight_ops::matmul_act for P: y[t * y_stride + r] = dot(row r, activation row t).
template <class P>
void matmul(const std::byte* w, std::size_t cols, std::size_t r0, std::size_t r1, const std::byte* xa,
            std::size_t xa_stride, std::size_t n_tok, float* y, std::size_t y_stride) noexcept {
    using block = typename P::block;
    const std::size_t nb = cols / P::block_elems;
    const auto* rows = reinterpret_cast<const block*>(w);
    const auto act = [&](std::size_t t) { return act_q8::view(xa + t * xa_stride, cols); };
    const auto run = [&]<int R, int T>(std::size_t r, std::size_t t) {
        const block* wr[R];
        act_q8::row xr[T];
        float out[R][T];
        for (int i = 0; i < R; ++i) wr[i] = rows + (r + i) * nb;
        for (int j = 0; j < T; ++j) xr[j] = act(t + j);
        detail::tile<P, R, T>(wr, xr, nb, out);
        for (int i = 0; i < R; ++i)
            for (int j = 0; j < T; ++j) y[(t + j) * y_stride + r + i] = out[i][j];
    };
    // Rows in groups of R, each group against the tokens in groups of T; leftovers one by one.
    const auto rows_against = [&]<int T>(std::size_t rt0, std::size_t rt1, std::size_t t) {
        std::size_t r = rt0;
        for (; r + 4 <= rt1; r += 4) run.template operator()<4, T>(r, t);
        for (; r < rt1; ++r) run.template operator()<1, T>(r, t);
    };
    const std::size_t tile = std::max<std::size_t>(4, row_tile_bytes / (nb * sizeof(block)));
    for (std::size_t rt = r0; rt < r1; rt += tile) {
        const std::size_t rt1 = std::min(r1, rt + tile);
        std::size_t t = 0;
        for (; t + 4 <= n_tok; t += 4) rows_against.template operator()<4>(rt, rt1, t);
        for (; t < n_tok; ++t) rows_against.template operator()<1>(rt, rt1, t);
    }
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

#endif  // LMTK_QUANT_VNNI

}  // namespace lmtk::quant::vnni
