#pragma once
// Integer matmul of Q8_0 / Q4_0 / Q4_K / Q6_K weights against int8 activations (act_q8) with
// AVX-512 VNNI.
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
// tokens and every activation vector for R rows. These row-major tiles serve weights used as
// mapped for fewer than 8 tokens; the faster kernels over 16 interleaved rows, which a model
// uses for its repacked weights and for prefill batches, are in interleaved_vnni.hpp.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include <lmtk/quant/intrinsics_warnings.hpp>
#include <lmtk/quant/act_q8.hpp>
#include <lmtk/quant/q4_0.hpp>
#include <lmtk/quant/q4_k.hpp>
#include <lmtk/quant/q6_k.hpp>
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
    constexpr std::size_t sub = act_q8::block_elems, n_sub = P::block_elems / sub;
    static_assert(P::block_elems % sub == 0);
    double sum = 0.0;
    float deq[P::block_elems];
    for (std::size_t b = 0; b < n_blocks; ++b) {
        P::dequantize_row(w + b, deq, 1);
        for (std::size_t k = 0; k < n_sub; ++k) {
            double s = 0.0;
            for (std::size_t j = 0; j < sub; ++j) s += double(deq[k * sub + j]) * x.qs[(b * n_sub + k) * sub + j];
            sum += s * x.d[b * n_sub + k];
        }
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

LMTK_INTRINSICS_WARNINGS_OFF

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

// Q4_K: super-blocks of 256 = 8 sub-blocks of 32 with 6-bit scales and mins (see q4_k.hpp).
// The nibbles are unsigned already; the min is applied in float per sub-block (dmin * m * the
// activation block's d * sum), so there is no integer correction. Its own tile below.
template <>
struct format<q4_k> {
    static constexpr bool supported = true;
    // 64 elements 64c .. 64c + 63 of a super-block: the low nibbles of qs[32c .. 32c + 31]
    // (sub-block 2c) then their high nibbles (sub-block 2c + 1).
    static __m512i unpack_chunk(const std::uint8_t* qs) noexcept {
        const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qs));
        const __m256i mask = _mm256_set1_epi8(0x0F);
        const __m256i lo = _mm256_and_si256(q, mask), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), mask);
        return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
    }
};

// Q6_K: super-blocks of 256 = 16 sub-blocks of 16 with int8 scales (see q6_k.hpp); u = q + 32
// is unsigned 0..63. The -32 * sum(x) of every 4 elements comes from one more vpdpbusd per
// token against a vector of 32s (act_q8's sums are per 32 elements; the scales per 16).
template <>
struct format<q6_k> {
    static constexpr bool supported = true;
    // Chunk m (0..3) of a super-block, elements 64m .. 64m + 63 = sub-blocks 4m .. 4m + 3: from
    // ql[64n .. 64n + 63] (n = m / 2; low nibbles for even m, high for odd) and the bit pairs
    // 2k, 2k + 1 of qh[32n .. 32n + 31] (k = 2 (m % 2) for the first 32 elements, + 1 after).
    static __m512i unpack_chunk(const q6_k::block& b, std::size_t m) noexcept {
        const std::size_t n = m / 2, odd = m % 2;
        const __m512i ql = _mm512_loadu_si512(b.ql + 64 * n);
        const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qh + 32 * n));
        const __m512i qh2 = _mm512_inserti64x4(_mm512_castsi256_si512(qh), qh, 1);
        const __m512i low = _mm512_and_si512(odd ? _mm512_srli_epi16(ql, 4) : ql, _mm512_set1_epi8(0x0F));
        // Bits 4 (odd) or 0 (even) of qh for the first 32 bytes, 6 or 2 for the last 32.
        const __m512i shift = odd ? _mm512_setr_epi64(4, 4, 4, 4, 6, 6, 6, 6) : _mm512_setr_epi64(0, 0, 0, 0, 2, 2, 2, 2);
        const __m512i high = _mm512_and_si512(_mm512_srlv_epi64(qh2, shift), _mm512_set1_epi8(0x03));
        return _mm512_or_si512(low, _mm512_slli_epi16(high, 4));  // high <= 3: no carry across bytes
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

// The 8 six-bit scales and mins of a Q4_K super-block as floats, unpacked in registers (the
// layout of get_scale_min_k4, four sub-blocks per 32-bit word).
struct k4_scales {
    __m256 sc, m;
};
inline k4_scales unpack_k4_scales(const std::uint8_t* s) noexcept {
    std::uint32_t a, b, c;
    std::memcpy(&a, s, 4);
    std::memcpy(&b, s + 4, 4);
    std::memcpy(&c, s + 8, 4);
    const std::uint32_t sc_lo = a & 0x3F3F3F3Fu, m_lo = b & 0x3F3F3F3Fu;
    const std::uint32_t sc_hi = (c & 0x0F0F0F0Fu) | ((a >> 2) & 0x30303030u);
    const std::uint32_t m_hi = ((c >> 4) & 0x0F0F0F0Fu) | ((b >> 2) & 0x30303030u);
    const auto floats = [](std::uint32_t lo, std::uint32_t hi) {
        const __m128i bytes = _mm_cvtsi64_si128(static_cast<long long>(lo | (std::uint64_t(hi) << 32)));
        return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(bytes));
    };
    return {floats(sc_lo, sc_hi), floats(m_lo, m_hi)};
}

// The Q4_K tile: per super-block, 4 chunks of 64 elements (two sub-blocks each) through
// vpdpbusd, scaled per sub-block by d * sc * d_x; the mins as one 8-wide FMA per super-block.
template <int R, int T>
void tile_q4_k(const q4_k::block* const (&w)[R], const act_q8::row (&x)[T], std::size_t n_blocks,
               float (&out)[R][T]) noexcept {
    __m512 acc[R][T];
    __m256 mins[R][T];
    for (int r = 0; r < R; ++r)
        for (int t = 0; t < T; ++t) {
            acc[r][t] = _mm512_setzero_ps();
            mins[r][t] = _mm256_setzero_ps();
        }
    for (std::size_t b = 0; b < n_blocks; ++b) {
        __m512 scale[R];  // d * sc of the 8 sub-blocks in lanes 0..7
        __m256 min[R];    // dmin * m of the 8 sub-blocks
        for (int r = 0; r < R; ++r) {
            const q4_k::block& blk = w[r][b];
            const k4_scales sm = unpack_k4_scales(blk.scales);
            scale[r] = _mm512_castps256_ps512(_mm256_mul_ps(sm.sc, _mm256_set1_ps(_cvtsh_ss(blk.d))));
            min[r] = _mm256_mul_ps(sm.m, _mm256_set1_ps(_cvtsh_ss(blk.dmin)));
        }
        for (std::size_t c = 0; c < 4; ++c) {
            // Lanes 0..7 of a chunk's dot are sub-block 2c, lanes 8..15 sub-block 2c + 1.
            const __m512i pick = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
            const __m512i idx = _mm512_add_epi32(pick, _mm512_set1_epi32(static_cast<int>(2 * c)));
            __m512i wq[R];
            __m512 ws[R];
            for (int r = 0; r < R; ++r) {
                wq[r] = format<q4_k>::unpack_chunk(w[r][b].qs + 32 * c);
                ws[r] = _mm512_permutexvar_ps(idx, scale[r]);
            }
            for (int t = 0; t < T; ++t) {
                const std::size_t sub = b * 8 + 2 * c;  // the chunk's first activation block
                const __m512i xq = _mm512_loadu_si512(x[t].qs + sub * 32);
                const __m512 xd = spread_pair(_mm_castpd_ps(_mm_load_sd(reinterpret_cast<const double*>(x[t].d + sub))));
                for (int r = 0; r < R; ++r) {
                    const __m512i dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wq[r], xq);
                    acc[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(ws[r], xd), acc[r][t]);
                }
            }
        }
        for (int t = 0; t < T; ++t) {
            const __m256 ds = _mm256_loadu_ps(x[t].ds + b * 8);
            for (int r = 0; r < R; ++r) mins[r][t] = _mm256_fmadd_ps(min[r], ds, mins[r][t]);
        }
    }
    for (int r = 0; r < R; ++r)
        for (int t = 0; t < T; ++t) {
            const __m256 m = mins[r][t];
            const __m128 m4 = _mm_add_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
            const __m128 m2 = _mm_add_ps(m4, _mm_movehl_ps(m4, m4));
            const float msum = _mm_cvtss_f32(_mm_add_ss(m2, _mm_movehdup_ps(m2)));
            out[r][t] = _mm512_reduce_add_ps(acc[r][t]) - msum;
        }
}

// The Q6_K tile: per super-block, 4 chunks of 64 elements through vpdpbusd starting from
// -32 * sum(x) per 4 elements, scaled per lane by d * sc[sub-block] * d_x[block].
template <int R, int T>
void tile_q6_k(const q6_k::block* const (&w)[R], const act_q8::row (&x)[T], std::size_t n_blocks,
               float (&out)[R][T]) noexcept {
    __m512 acc[R][T];
    for (int r = 0; r < R; ++r)
        for (int t = 0; t < T; ++t) acc[r][t] = _mm512_setzero_ps();
    // Lane i of a chunk's dot covers elements 4i .. 4i + 3: sub-block i / 4, activation block i / 8.
    const __m512i quarter = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
    const __m512i thirty_two = _mm512_set1_epi8(32);
    for (std::size_t b = 0; b < n_blocks; ++b) {
        __m512 scale[R];  // d * sc of the 16 sub-blocks
        for (int r = 0; r < R; ++r) {
            const q6_k::block& blk = w[r][b];
            const __m128i sc = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk.scales));
            scale[r] = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(sc)), _mm512_set1_ps(_cvtsh_ss(blk.d)));
        }
        for (std::size_t m = 0; m < 4; ++m) {
            const __m512i idx = _mm512_add_epi32(quarter, _mm512_set1_epi32(static_cast<int>(4 * m)));
            __m512i wq[R];
            __m512 ws[R];
            for (int r = 0; r < R; ++r) {
                wq[r] = format<q6_k>::unpack_chunk(w[r][b], m);
                ws[r] = _mm512_permutexvar_ps(idx, scale[r]);
            }
            for (int t = 0; t < T; ++t) {
                const std::size_t sub = b * 8 + 2 * m;  // the chunk's first activation block
                const __m512i xq = _mm512_loadu_si512(x[t].qs + sub * 32);
                const __m512 xd = spread_pair(_mm_castpd_ps(_mm_load_sd(reinterpret_cast<const double*>(x[t].d + sub))));
                const __m512i start = _mm512_sub_epi32(_mm512_setzero_si512(),
                                                       _mm512_dpbusd_epi32(_mm512_setzero_si512(), thirty_two, xq));
                for (int r = 0; r < R; ++r) {
                    const __m512i dot = _mm512_dpbusd_epi32(start, wq[r], xq);
                    acc[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(ws[r], xd), acc[r][t]);
                }
            }
        }
    }
    for (int r = 0; r < R; ++r)
        for (int t = 0; t < T; ++t) out[r][t] = _mm512_reduce_add_ps(acc[r][t]);
}

}  // namespace detail

// Rows are visited in tiles of about this many weight bytes, which stay in L2 while every token
// of the batch passes over them.
inline constexpr std::size_t row_tile_bytes = 256 * 1024;

// The row-tile path: y[t * y_stride + r] = dot(row r, activation row t), weights as stored.
template <class P>
void matmul_tiles(const std::byte* w, std::size_t cols, std::size_t r0, std::size_t r1, const std::byte* xa,
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
        if constexpr (std::is_same_v<P, q4_k>) detail::tile_q4_k<R, T>(wr, xr, nb, out);
        else if constexpr (std::is_same_v<P, q6_k>) detail::tile_q6_k<R, T>(wr, xr, nb, out);
        else detail::tile<P, R, T>(wr, xr, nb, out);
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

LMTK_INTRINSICS_WARNINGS_ON

#endif  // LMTK_QUANT_VNNI

}  // namespace lmtk::quant::vnni
