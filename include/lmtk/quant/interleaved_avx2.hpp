#pragma once
// AVX2 kernels over the 16-row interleaved layouts of interleaved.hpp: Q4_0, Q8_0, Q4_K and Q6_K
// against int8 activations (act_q8), F16 against float activations. The same layouts as the
// AVX-512 kernels (interleaved_vnni.hpp, interleaved_f16.hpp), so a model repacks its weights
// the same way whichever level it runs, and one scalar spec (interleaved<P>::dequantize_row)
// checks both.
//
// Lane r of a layout's 64-byte word vector is row r; AVX2 holds it as two 256-bit halves, rows
// 0-7 and rows 8-15, each multiplied on its own against the same broadcast activation words.
// AVX2 has no vpdpbusd: vpmaddubsw multiplies the unsigned weight bytes by the signed activation
// bytes and adds neighbouring products into int16 lanes, saturating, and vpmaddwd against ones
// adds those pairs into the int32 lane of the row. Where the int16 sums cannot saturate they
// are added first and widened once:
//   Q4_0, Q4_K: u <= 15, |x| <= 127: a pair is at most 3810, 8 pairs (a 32-element sub-block)
//               at most 30480 < 32767: one vpmaddwd per sub-block and row half;
//   Q6_K:       u <= 63: a pair is at most 16002, two pairs 32004: one vpmaddwd per two words;
//   Q8_0:       u = q + 128 would overflow a pair (2 * 255 * 127); the signed quant q meets
//               sign(x, q) as |q| instead (at most 2 * 128 * 127 = 32512 per pair), with no
//               zero-point correction, and each word is widened on its own.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <type_traits>
#include <vector>

#include <lmtk/quant/intrinsics_warnings.hpp>
#include <lmtk/quant/act_q8.hpp>
#include <lmtk/quant/interleaved.hpp>
#include <lmtk/quant/interleaved_driver.hpp>

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define LMTK_QUANT_AVX2_INTERLEAVED 1
#include <immintrin.h>
#endif

namespace lmtk::quant::avx2x16 {

// The formats these kernels cover with int8 activations.
template <class P>
inline constexpr bool int8_format =
    std::is_same_v<P, q4_0> || std::is_same_v<P, q8_0> || std::is_same_v<P, q4_k> || std::is_same_v<P, q6_k>;

#if LMTK_QUANT_AVX2_INTERLEAVED

LMTK_INTRINSICS_WARNINGS_OFF

namespace detail {

// 4 activation bytes at p in every 32-bit lane.
inline __m256i broadcast_word(const std::int8_t* p) noexcept {
    std::int32_t v;
    std::memcpy(&v, p, 4);
    return _mm256_set1_epi32(v);
}

// Half h (rows 8h .. 8h + 7) of the 64-byte word vector at p.
inline __m256i load_half(const std::byte* p, int h) noexcept {
    return _mm256_load_si256(reinterpret_cast<const __m256i*>(p + 32 * h));
}
inline __m256 fp16_half(const std::byte* p, int h) noexcept {
    return _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(p + 16 * h)));
}

// An empty asm that claims to change v, after each step of a running sum: the compiler must
// then hold the sum in a register at that point, and cannot rewrite a block's chain of adds
// into a tree over all the products (which GCC 12 does once the loops are unrolled, spilling
// most of the products to the stack and reading them back).
inline void keep_in_register(__m256i& v) noexcept { asm("" : "+x"(v)); }

// int16 lanes -> int32 lanes, each the sum of its pair.
inline __m256i widen_pairs(__m256i v) noexcept { return _mm256_madd_epi16(v, _mm256_set1_epi16(1)); }

#if defined(__AVXVNNI__)
// With AVX-VNNI one instruction does both steps, without the int16 saturation.
inline __m256i dot_u8i8(__m256i acc, __m256i u, __m256i x) noexcept { return _mm256_dpbusd_avx_epi32(acc, u, x); }
#endif

using interleaved_driver::prefetch_block;
using interleaved_driver::prefetch_plan;

// Each kernel runs one group (16 rows) against T tokens: out[t][h] lane i = dot(row 8h + i,
// token t). It runs as one or two passes over the group's blocks (group_passes below); a pass
// covers NH halves starting at h0 and keeps its accumulators in local variables, written to
// `out` once at the end. (They used to be updated in `out` itself, and since the activations are
// read through int8_t pointers, which may alias anything, the compiler stored every accumulator
// to memory and read it back around every load: most of the kernels' time went there.) Within
// a block the loops run word by word, tokens innermost, so that each unpacked weight vector is
// used by every token while it is in a register, and each token's int32 (or int16) sums stay in
// registers until the block's float step.

// Decode (T == 1) multiplies both halves in one pass: the weights stream once from memory, with
// the prefetch ahead of them. Prefill passes once per half: T tokens' accumulators of one half
// fit in AVX2's 16 registers, and half a group is half the bytes, so it stays in L1 while the
// tokens reread it.
template <int T, class Pass>
void group_passes(Pass&& pass) noexcept {
    if constexpr (T == 1) {
        pass.template operator()<2>(0);
    } else {
        pass.template operator()<1>(0);
        pass.template operator()<1>(1);
    }
}

template <int T, int NH>
void q4_0_pass(const std::byte* g, std::size_t nb, const prefetch_plan& pf, const act_q8::row (&x)[T], int h0,
               __m256 (&out)[T][2]) noexcept {
    using L = interleaved<q4_0>;
    const __m256i low4 = _mm256_set1_epi8(0x0F);
    __m256 acc[T][NH];
    for (int t = 0; t < T; ++t)
        for (int hh = 0; hh < NH; ++hh) acc[t][hh] = _mm256_setzero_ps();
    for (std::size_t b = 0; b < nb; ++b) {
        if (h0 == 0) prefetch_block(g, pf, b);
        const std::byte* q = g + L::part(0, nb) + b * 256;
        const std::byte* d = g + L::part(1, nb) + b * 32;
        // Low nibbles are elements 4k.., high nibbles 16 + 4k..; 8 pairs per int16 lane at most
        // 8 * 2 * 15 * 127 = 30480, so one widening per block.
        __m256i s[T][NH];
#pragma GCC unroll 4
        for (int k = 0; k < 4; ++k) {
            for (int hh = 0; hh < NH; ++hh) {
                const __m256i v = load_half(q + 64 * k, h0 + hh);
                const __m256i lo = _mm256_and_si256(v, low4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low4);
                for (int t = 0; t < T; ++t) {
                    const std::int8_t* xq = x[t].qs + b * 32;
#if defined(__AVXVNNI__)
                    __m256i p = dot_u8i8(k ? s[t][hh] : _mm256_setzero_si256(), lo, broadcast_word(xq + 4 * k));
                    s[t][hh] = dot_u8i8(p, hi, broadcast_word(xq + 16 + 4 * k));
#else
                    const __m256i p = _mm256_add_epi16(_mm256_maddubs_epi16(lo, broadcast_word(xq + 4 * k)),
                                                       _mm256_maddubs_epi16(hi, broadcast_word(xq + 16 + 4 * k)));
                    s[t][hh] = k ? _mm256_add_epi16(s[t][hh], p) : p;
#endif
                    keep_in_register(s[t][hh]);
                }
            }
        }
        for (int hh = 0; hh < NH; ++hh) {
            const __m256 dw = fp16_half(d, h0 + hh);
            for (int t = 0; t < T; ++t) {
#if defined(__AVXVNNI__)
                const __m256i dot = _mm256_add_epi32(s[t][hh], _mm256_set1_epi32(-8 * x[t].sum[b]));
#else
                const __m256i dot = _mm256_add_epi32(widen_pairs(s[t][hh]), _mm256_set1_epi32(-8 * x[t].sum[b]));
#endif
                acc[t][hh] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_mul_ps(dw, _mm256_set1_ps(x[t].d[b])), acc[t][hh]);
            }
        }
    }
    for (int t = 0; t < T; ++t)
        for (int hh = 0; hh < NH; ++hh) out[t][h0 + hh] = acc[t][hh];
}

// The layout stores u = q + 128; flipping the top bit gives q back (|q| meets sign(x, q): see
// the top of this file).
template <int T, int NH>
void q8_0_pass(const std::byte* g, std::size_t nb, const prefetch_plan& pf, const act_q8::row (&x)[T], int h0,
               __m256 (&out)[T][2]) noexcept {
    using L = interleaved<q8_0>;
    const __m256i flip = _mm256_set1_epi8(static_cast<char>(0x80));
    __m256 acc[T][NH];
    for (int t = 0; t < T; ++t)
        for (int hh = 0; hh < NH; ++hh) acc[t][hh] = _mm256_setzero_ps();
    for (std::size_t b = 0; b < nb; ++b) {
        if (h0 == 0) prefetch_block(g, pf, b);
        const std::byte* q = g + L::part(0, nb) + b * 512;
        const std::byte* d = g + L::part(1, nb) + b * 32;
        __m256i s[T][NH];
#pragma GCC unroll 8
        for (int k = 0; k < 8; ++k) {
            for (int hh = 0; hh < NH; ++hh) {
                const __m256i w = _mm256_xor_si256(load_half(q + 64 * k, h0 + hh), flip);
                const __m256i mag = _mm256_abs_epi8(w);
                for (int t = 0; t < T; ++t) {
                    const __m256i xs = _mm256_sign_epi8(broadcast_word(x[t].qs + b * 32 + 4 * k), w);
#if defined(__AVXVNNI__)
                    s[t][hh] = dot_u8i8(k ? s[t][hh] : _mm256_setzero_si256(), mag, xs);
#else
                    const __m256i p = widen_pairs(_mm256_maddubs_epi16(mag, xs));
                    s[t][hh] = k ? _mm256_add_epi32(s[t][hh], p) : p;
#endif
                    keep_in_register(s[t][hh]);
                }
            }
        }
        for (int hh = 0; hh < NH; ++hh) {
            const __m256 dw = fp16_half(d, h0 + hh);
            for (int t = 0; t < T; ++t)
                acc[t][hh] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s[t][hh]), _mm256_mul_ps(dw, _mm256_set1_ps(x[t].d[b])),
                                             acc[t][hh]);
        }
    }
    for (int t = 0; t < T; ++t)
        for (int hh = 0; hh < NH; ++hh) out[t][h0 + hh] = acc[t][hh];
}

// Q4_K's 6-bit scale (Min = false) or min (Min = true) of sub-block J in every lane, from the
// 3 words a, b, c of the packed 12 bytes (the layout get_scale_min_k4 reads).
template <int J, bool Min>
__m256i k4_scale(__m256i a, __m256i b, __m256i c) noexcept {
    const __m256i six = _mm256_set1_epi32(63);
    if constexpr (J < 4) {
        return _mm256_and_si256(_mm256_srli_epi32(Min ? b : a, 8 * J), six);
    } else {
        const __m256i low = _mm256_and_si256(_mm256_srli_epi32(c, 8 * (J - 4) + (Min ? 4 : 0)), _mm256_set1_epi32(0x0F));
        const __m256i high = _mm256_and_si256(_mm256_srli_epi32(Min ? b : a, 8 * (J - 4) + 2), _mm256_set1_epi32(0x30));
        return _mm256_or_si256(low, high);
    }
}

// Each 32-element sub-block j (low nibbles of chunk j / 2 for even j, high for odd) is one int16
// sum per token (8 pairs of 15 * 127: at most 30480), widened once and scaled in floats by its
// own scale and min. The super-block's 8 scales and mins are decoded to floats once per half.
template <int T, int NH>
void q4_k_pass(const std::byte* g, std::size_t nb, const prefetch_plan& pf, const act_q8::row (&x)[T], int h0,
               __m256 (&out)[T][2]) noexcept {
    using L = interleaved<q4_k>;
    const __m256i low4 = _mm256_set1_epi8(0x0F);
    __m256 acc[T][NH];
    for (int t = 0; t < T; ++t)
        for (int hh = 0; hh < NH; ++hh) acc[t][hh] = _mm256_setzero_ps();
    for (std::size_t b = 0; b < nb; ++b) {
        if (h0 == 0) prefetch_block(g, pf, b);
        const std::byte* s = g + L::part(1, nb) + b * 192;
        const std::byte* d = g + L::part(2, nb) + b * 64;
        __m256 scale[NH][8], min[NH][8];
        for (int hh = 0; hh < NH; ++hh) {
            const int h = h0 + hh;
            const __m256i sa = load_half(s, h), sb = load_half(s + 64, h), sc = load_half(s + 128, h);
            const __m256 dd = fp16_half(d, h), dmin = fp16_half(d + 32, h);
            const auto decode = [&]<int J>() {
                scale[hh][J] = _mm256_mul_ps(_mm256_cvtepi32_ps(k4_scale<J, false>(sa, sb, sc)), dd);
                min[hh][J] = _mm256_mul_ps(_mm256_cvtepi32_ps(k4_scale<J, true>(sa, sb, sc)), dmin);
            };
            [&]<int... J>(std::integer_sequence<int, J...>) { (decode.template operator()<J>(), ...); }(
                std::make_integer_sequence<int, 8>{});
        }
        for (int j = 0; j < 8; ++j) {
            const std::byte* q = g + L::part(0, nb) + b * 2048 + std::size_t(j / 2) * 512;
            const int shift = (j % 2) * 4;
            const std::size_t a = b * 8 + std::size_t(j);  // the activation block of sub-block j
            __m256i sum[T][NH];
#pragma GCC unroll 8
            for (int k = 0; k < 8; ++k) {
                for (int hh = 0; hh < NH; ++hh) {
                    const __m256i u = _mm256_and_si256(_mm256_srli_epi16(load_half(q + 64 * k, h0 + hh), shift), low4);
                    for (int t = 0; t < T; ++t) {
                        const __m256i xw = broadcast_word(x[t].qs + a * 32 + 4 * k);
#if defined(__AVXVNNI__)
                        sum[t][hh] = dot_u8i8(k ? sum[t][hh] : _mm256_setzero_si256(), u, xw);
#else
                        const __m256i p = _mm256_maddubs_epi16(u, xw);
                        sum[t][hh] = k ? _mm256_add_epi16(sum[t][hh], p) : p;
#endif
                        keep_in_register(sum[t][hh]);
                    }
                }
            }
            for (int hh = 0; hh < NH; ++hh)
                for (int t = 0; t < T; ++t) {
#if defined(__AVXVNNI__)
                    const __m256i dot = sum[t][hh];
#else
                    const __m256i dot = widen_pairs(sum[t][hh]);
#endif
                    const __m256 r = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot),
                                                     _mm256_mul_ps(scale[hh][j], _mm256_set1_ps(x[t].d[a])), acc[t][hh]);
                    acc[t][hh] = _mm256_fnmadd_ps(min[hh][j], _mm256_set1_ps(x[t].ds[a]), r);
                }
        }
    }
    for (int t = 0; t < T; ++t)
        for (int hh = 0; hh < NH; ++hh) out[t][h0 + hh] = acc[t][hh];
}

// Q6_K: per sub-block of 16 elements, 2 words of nibbles and 1 of top bits make the 4 words of
// u = q + 32; the dot is corrected by -32 * sum(x) over the sub-block (sum16, per token).
template <int T, int NH>
void q6_k_pass(const std::byte* g, std::size_t nb, const prefetch_plan& pf, const act_q8::row (&x)[T],
               const std::int32_t* const (&sum16)[T], int h0, __m256 (&out)[T][2]) noexcept {
    using L = interleaved<q6_k>;
    const __m256i low4 = _mm256_set1_epi8(0x0F), top2 = _mm256_set1_epi8(0x30);
    const auto merge = [](__m256i a, __m256i b, __m256i c) { return _mm256_or_si256(a, _mm256_and_si256(b, c)); };
    __m256 acc[T][NH];
    for (int t = 0; t < T; ++t)
        for (int hh = 0; hh < NH; ++hh) acc[t][hh] = _mm256_setzero_ps();
    for (std::size_t b = 0; b < nb; ++b) {
        if (h0 == 0) prefetch_block(g, pf, b);
        const std::byte* lo = g + L::part(0, nb) + b * 2048;
        const std::byte* hi = g + L::part(1, nb) + b * 1024;
        const std::byte* scales = g + L::part(2, nb) + b * 256;
        const std::byte* d = g + L::part(3, nb) + b * 32;
        for (std::size_t s = 0; s < 16; ++s) {
            const std::size_t e = b * 256 + s * 16;  // first element
            for (int hh = 0; hh < NH; ++hh) {
                const int h = h0 + hh;
                const __m128i sc8 = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(scales + s * 16 + 8 * h));
                const __m256 scale = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(sc8)), fp16_half(d, h));
                const __m256i l0 = load_half(lo + s * 128, h), l1 = load_half(lo + s * 128 + 64, h), hv = load_half(hi + s * 64, h);
                const __m256i u0 = merge(_mm256_and_si256(l0, low4), _mm256_slli_epi16(hv, 4), top2);
                const __m256i u1 = merge(_mm256_and_si256(_mm256_srli_epi16(l0, 4), low4), _mm256_slli_epi16(hv, 2), top2);
                const __m256i u2 = merge(_mm256_and_si256(l1, low4), hv, top2);
                const __m256i u3 = merge(_mm256_and_si256(_mm256_srli_epi16(l1, 4), low4), _mm256_srli_epi16(hv, 2), top2);
                for (int t = 0; t < T; ++t) {
                    const std::int8_t* xq = x[t].qs + e;
#if defined(__AVXVNNI__)
                    __m256i dot = _mm256_set1_epi32(-32 * sum16[t][e / 16]);
                    dot = dot_u8i8(dot, u0, broadcast_word(xq));
                    dot = dot_u8i8(dot, u1, broadcast_word(xq + 4));
                    dot = dot_u8i8(dot, u2, broadcast_word(xq + 8));
                    dot = dot_u8i8(dot, u3, broadcast_word(xq + 12));
#else
                    const __m256i p01 = _mm256_add_epi16(_mm256_maddubs_epi16(u0, broadcast_word(xq)),
                                                         _mm256_maddubs_epi16(u1, broadcast_word(xq + 4)));
                    const __m256i p23 = _mm256_add_epi16(_mm256_maddubs_epi16(u2, broadcast_word(xq + 8)),
                                                         _mm256_maddubs_epi16(u3, broadcast_word(xq + 12)));
                    const __m256i dot = _mm256_add_epi32(_mm256_add_epi32(widen_pairs(p01), widen_pairs(p23)),
                                                         _mm256_set1_epi32(-32 * sum16[t][e / 16]));
#endif
                    acc[t][hh] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_mul_ps(scale, _mm256_set1_ps(x[t].d[e / 32])),
                                                 acc[t][hh]);
                }
            }
        }
    }
    for (int t = 0; t < T; ++t)
        for (int hh = 0; hh < NH; ++hh) out[t][h0 + hh] = acc[t][hh];
}

// The first n (<= 16) of the 16 rows' results.
inline void store_rows(float* y, std::size_t n, const __m256 (&v)[2]) noexcept {
    if (n >= 16) {
        _mm256_storeu_ps(y, v[0]);
        _mm256_storeu_ps(y + 8, v[1]);
        return;
    }
    alignas(32) float tmp[16];
    _mm256_store_ps(tmp, v[0]);
    _mm256_store_ps(tmp + 8, v[1]);
    std::copy(tmp, tmp + n, y);
}

}  // namespace detail

// The kernel set of interleaved_driver.hpp.
struct kernels {
    using acc = __m256[2];  // rows 0-7, rows 8-15
    template <class P, int T>
    static void group(const std::byte* g, std::size_t nb, const detail::prefetch_plan& pf, const act_q8::row (&x)[T],
                      const std::int32_t* const (&sum16)[T], acc (&out)[T]) noexcept {
        detail::group_passes<T>([&]<int NH>(int h0) {
            if constexpr (std::is_same_v<P, q4_0>) {
                detail::q4_0_pass<T, NH>(g, nb, pf, x, h0, out);
            } else if constexpr (std::is_same_v<P, q8_0>) {
                detail::q8_0_pass<T, NH>(g, nb, pf, x, h0, out);
            } else if constexpr (std::is_same_v<P, q4_k>) {
                detail::q4_k_pass<T, NH>(g, nb, pf, x, h0, out);
            } else {
                static_assert(std::is_same_v<P, q6_k>);
                detail::q6_k_pass<T, NH>(g, nb, pf, x, sum16, h0, out);
            }
        });
    }
    static void store_rows(float* y, std::size_t n, const acc& v) noexcept { detail::store_rows(y, n, v); }
};

namespace detail {

// F16: column k of the 16 rows, half h, as floats.
inline __m256 f16_column(const std::uint16_t* g, std::size_t k, int h) noexcept {
    return _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(g + k * interleave_rows + 8 * h)));
}

}  // namespace detail

// weight_ops::matmul_act over a matrix in P's interleaved layout, and over row-major weights
// packed a group at a time (interleaved_driver.hpp).
template <class P>
void matmul_interleaved(const std::byte* w, std::size_t cols, std::size_t r0, std::size_t r1, const std::byte* xa,
                        std::size_t xa_stride, std::size_t n_tok, float* y, std::size_t y_stride) noexcept {
    interleaved_driver::matmul_interleaved<kernels, P>(w, cols, r0, r1, xa, xa_stride, n_tok, y, y_stride);
}
template <class P>
void matmul_packed(const std::byte* w, std::size_t cols, std::size_t r0, std::size_t r1, const std::byte* xa,
                   std::size_t xa_stride, std::size_t n_tok, float* y, std::size_t y_stride) noexcept {
    interleaved_driver::matmul_packed<kernels, P>(w, cols, r0, r1, xa, xa_stride, n_tok, y, y_stride);
}

// weight_ops::matmul over an F16 matrix in the interleaved layout against float activations:
// at every column the 16 rows' halves are converted once and multiplied by the broadcast
// activation of each token. Decode runs 4 chains per row half; prefill 6 tokens per pass, so
// each converted column serves 6 tokens (12 accumulators, within AVX2's 16 registers).
inline void matmul_f16(const std::byte* w, std::size_t cols, std::size_t r0, std::size_t r1, const float* x,
                       std::size_t x_stride, std::size_t n_tok, float* y, std::size_t y_stride) noexcept {
    constexpr std::size_t R = interleave_rows;
    const std::size_t gb = interleaved<f16>::group_bytes(cols);
    const auto group = [&](std::size_t r) { return reinterpret_cast<const std::uint16_t*>(w + r / R * gb); };
    const auto one_token = [&](std::size_t r, std::size_t t) {
        const std::uint16_t* g = group(r);
        const float* xt = x + t * x_stride;
        const auto* bytes = reinterpret_cast<const char*>(g);
        __m256 acc[2][2] = {{_mm256_setzero_ps(), _mm256_setzero_ps()}, {_mm256_setzero_ps(), _mm256_setzero_ps()}};
        std::size_t k = 0;
        for (; k + 2 <= cols; k += 2) {
            _mm_prefetch(bytes + k * 32 + interleave_prefetch_distance, _MM_HINT_T1);
            for (std::size_t j = 0; j < 2; ++j) {
                const __m256 xb = _mm256_set1_ps(xt[k + j]);
                acc[j][0] = _mm256_fmadd_ps(detail::f16_column(g, k + j, 0), xb, acc[j][0]);
                acc[j][1] = _mm256_fmadd_ps(detail::f16_column(g, k + j, 1), xb, acc[j][1]);
            }
        }
        for (; k < cols; ++k) {
            const __m256 xb = _mm256_set1_ps(xt[k]);
            acc[0][0] = _mm256_fmadd_ps(detail::f16_column(g, k, 0), xb, acc[0][0]);
            acc[0][1] = _mm256_fmadd_ps(detail::f16_column(g, k, 1), xb, acc[0][1]);
        }
        const __m256 out[2] = {_mm256_add_ps(acc[0][0], acc[1][0]), _mm256_add_ps(acc[0][1], acc[1][1])};
        detail::store_rows(y + t * y_stride + r, r1 - r, out);
    };
    const auto six_tokens = [&](std::size_t r, std::size_t t) {
        constexpr int T = 6;
        const std::uint16_t* g = group(r);
        const float* xs[T];
        for (int j = 0; j < T; ++j) xs[j] = x + (t + std::size_t(j)) * x_stride;
        __m256 acc[T][2];
        for (int j = 0; j < T; ++j) acc[j][0] = acc[j][1] = _mm256_setzero_ps();
        for (std::size_t k = 0; k < cols; ++k) {
            const __m256 w0 = detail::f16_column(g, k, 0), w1 = detail::f16_column(g, k, 1);
            for (int j = 0; j < T; ++j) {
                const __m256 xb = _mm256_set1_ps(xs[j][k]);
                acc[j][0] = _mm256_fmadd_ps(w0, xb, acc[j][0]);
                acc[j][1] = _mm256_fmadd_ps(w1, xb, acc[j][1]);
            }
        }
        for (int j = 0; j < T; ++j) detail::store_rows(y + (t + std::size_t(j)) * y_stride + r, r1 - r, acc[j]);
    };
    for (std::size_t r = r0; r < r1; r += R) {
        std::size_t t = 0;
        if (n_tok >= 6)
            for (; t + 6 <= n_tok; t += 6) six_tokens(r, t);
        for (; t < n_tok; ++t) one_token(r, t);
    }
}

LMTK_INTRINSICS_WARNINGS_ON

#endif  // LMTK_QUANT_AVX2_INTERLEAVED

}  // namespace lmtk::quant::avx2x16
