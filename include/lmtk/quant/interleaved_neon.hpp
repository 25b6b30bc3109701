#pragma once
// ARM NEON kernels over the 16-row interleaved layouts of interleaved.hpp, for AArch64 with the
// dot-product extension (Armv8.2 DotProd: Apple M1 on, Cortex-A55/A76 on, Graviton 2 on):
// Q4_0, Q8_0, Q4_K and Q6_K against int8 activations (act_q8), F16 against float activations.
// The same layouts as the x86 kernels, so one scalar spec (interleaved<P>::dequantize_row)
// checks every ISA.
//
// Lane r of a layout's 64-byte word vector is row r; NEON holds it as four 128-bit quarters,
// rows 4q .. 4q + 3. SDOT by element (vdotq_laneq_s32) multiplies the 4 bytes of each row in a
// quarter by one 4-byte word of a 16-byte activation register and adds the sum to the row's
// int32 lane: exact, signed by signed, so the weights need no unsigned form and no int16 step
// that could saturate.
//   Q4_0, Q4_K: nibbles 0..15, the zero point (8, or Q4_K's min) applied after the dot
//   Q8_0:       the layout's u = q + 128 with the top bit flipped is q itself
//   Q6_K:       u = q + 32 (0..63), corrected by -32 * sum(x) per 16 elements
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include <lmtk/quant/act_q8.hpp>
#include <lmtk/quant/interleaved.hpp>
#include <lmtk/quant/interleaved_driver.hpp>

#if defined(__aarch64__) && defined(__ARM_NEON) && defined(__ARM_FEATURE_DOTPROD)
#define LMTK_QUANT_NEON_INTERLEAVED 1
#include <arm_neon.h>
#endif

namespace lmtk::quant::neon16 {

// The formats these kernels cover with int8 activations.
template <class P>
inline constexpr bool int8_format =
    std::is_same_v<P, q4_0> || std::is_same_v<P, q8_0> || std::is_same_v<P, q4_k> || std::is_same_v<P, q6_k>;

#if LMTK_QUANT_NEON_INTERLEAVED

namespace detail {

using interleaved_driver::prefetch_block;
using interleaved_driver::prefetch_plan;

// Quarter q (rows 4q .. 4q + 3) of the 64-byte word vector at p.
inline uint8x16_t load_quarter(const std::byte* p, int q) noexcept {
    return vld1q_u8(reinterpret_cast<const std::uint8_t*>(p) + 16 * q);
}
inline float32x4_t fp16_quarter(const std::byte* p, int q) noexcept {
    return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(reinterpret_cast<const std::uint16_t*>(p) + 4 * q)));
}
inline int8x16_t low_nibbles(uint8x16_t v) noexcept { return vreinterpretq_s8_u8(vandq_u8(v, vdupq_n_u8(0x0F))); }
inline int8x16_t high_nibbles(uint8x16_t v) noexcept { return vreinterpretq_s8_u8(vshrq_n_u8(v, 4)); }

// dot += the 4 rows' words w[0..3] times the 4 activation words of x.
inline int32x4_t dot_words(int32x4_t dot, const int8x16_t* w, int8x16_t x) noexcept {
    dot = vdotq_laneq_s32(dot, w[0], x, 0);
    dot = vdotq_laneq_s32(dot, w[1], x, 1);
    dot = vdotq_laneq_s32(dot, w[2], x, 2);
    return vdotq_laneq_s32(dot, w[3], x, 3);
}
// The same for 8 words against the 32 activation bytes at xq.
inline int32x4_t dot_words8(int32x4_t dot, const int8x16_t (&w)[8], const std::int8_t* xq) noexcept {
    return dot_words(dot_words(dot, w, vld1q_s8(xq)), w + 4, vld1q_s8(xq + 16));
}

// Each kernel runs one group (16 rows) against T tokens: acc[t][q] lane i = dot(row 4q + i, token t).

template <int T>
void group_q4_0(const std::byte* g, std::size_t nb, const prefetch_plan& pf, const act_q8::row (&x)[T],
                float32x4_t (&acc)[T][4]) noexcept {
    using L = interleaved<q4_0>;
    for (int t = 0; t < T; ++t)
        for (int q = 0; q < 4; ++q) acc[t][q] = vdupq_n_f32(0);
    for (std::size_t b = 0; b < nb; ++b) {
        prefetch_block(g, pf, b);
        const std::byte* w = g + L::part(0, nb) + b * 256;
        const std::byte* d = g + L::part(1, nb) + b * 32;
        for (int q = 0; q < 4; ++q) {
            int8x16_t lo[4], hi[4];  // word k: elements 4k.. (low nibbles), 16 + 4k.. (high)
            for (int k = 0; k < 4; ++k) {
                const uint8x16_t v = load_quarter(w + 64 * k, q);
                lo[k] = low_nibbles(v);
                hi[k] = high_nibbles(v);
            }
            const float32x4_t dw = fp16_quarter(d, q);
            for (int t = 0; t < T; ++t) {
                const std::int8_t* xq = x[t].qs + b * 32;
                int32x4_t dot = dot_words(vdupq_n_s32(-8 * x[t].sum[b]), lo, vld1q_s8(xq));
                dot = dot_words(dot, hi, vld1q_s8(xq + 16));
                acc[t][q] = vfmaq_f32(acc[t][q], vcvtq_f32_s32(dot), vmulq_n_f32(dw, x[t].d[b]));
            }
        }
    }
}

template <int T>
void group_q8_0(const std::byte* g, std::size_t nb, const prefetch_plan& pf, const act_q8::row (&x)[T],
                float32x4_t (&acc)[T][4]) noexcept {
    using L = interleaved<q8_0>;
    const uint8x16_t flip = vdupq_n_u8(0x80);
    for (int t = 0; t < T; ++t)
        for (int q = 0; q < 4; ++q) acc[t][q] = vdupq_n_f32(0);
    for (std::size_t b = 0; b < nb; ++b) {
        prefetch_block(g, pf, b);
        const std::byte* w = g + L::part(0, nb) + b * 512;
        const std::byte* d = g + L::part(1, nb) + b * 32;
        for (int q = 0; q < 4; ++q) {
            int8x16_t v[8];
            for (int k = 0; k < 8; ++k) v[k] = vreinterpretq_s8_u8(veorq_u8(load_quarter(w + 64 * k, q), flip));
            const float32x4_t dw = fp16_quarter(d, q);
            for (int t = 0; t < T; ++t) {
                const std::int8_t* xq = x[t].qs + b * 32;
                const int32x4_t dot = dot_words8(vdupq_n_s32(0), v, xq);
                acc[t][q] = vfmaq_f32(acc[t][q], vcvtq_f32_s32(dot), vmulq_n_f32(dw, x[t].d[b]));
            }
        }
    }
}

// Q4_K's 6-bit scale (Min = false) or min (Min = true) of sub-block J in every lane, from the
// 3 words a, b, c of the packed 12 bytes (the layout get_scale_min_k4 reads).
template <int N>
uint32x4_t shift_right(uint32x4_t v) noexcept {
    if constexpr (N == 0) return v;  // vshrq_n takes 1..32 only
    else return vshrq_n_u32(v, N);
}
template <int J, bool Min>
float32x4_t k4_scale(uint32x4_t a, uint32x4_t b, uint32x4_t c) noexcept {
    uint32x4_t v;
    if constexpr (J < 4) {
        v = vandq_u32(shift_right<8 * J>(Min ? b : a), vdupq_n_u32(63));
    } else {
        const uint32x4_t low = vandq_u32(shift_right<8 * (J - 4) + (Min ? 4 : 0)>(c), vdupq_n_u32(0x0F));
        const uint32x4_t high = vandq_u32(shift_right<8 * (J - 4) + 2>(Min ? b : a), vdupq_n_u32(0x30));
        v = vorrq_u32(low, high);
    }
    return vcvtq_f32_u32(v);
}

template <int T>
void group_q4_k(const std::byte* g, std::size_t nb, const prefetch_plan& pf, const act_q8::row (&x)[T],
                float32x4_t (&acc)[T][4]) noexcept {
    using L = interleaved<q4_k>;
    for (int t = 0; t < T; ++t)
        for (int q = 0; q < 4; ++q) acc[t][q] = vdupq_n_f32(0);
    for (std::size_t b = 0; b < nb; ++b) {
        prefetch_block(g, pf, b);
        const std::byte* s = g + L::part(1, nb) + b * 192;
        const std::byte* d = g + L::part(2, nb) + b * 64;
        for (int q = 0; q < 4; ++q) {
            const uint32x4_t sa = vreinterpretq_u32_u8(load_quarter(s, q)), sb = vreinterpretq_u32_u8(load_quarter(s + 64, q)),
                             sc = vreinterpretq_u32_u8(load_quarter(s + 128, q));
            const float32x4_t dd = fp16_quarter(d, q), dmin = fp16_quarter(d + 32, q);
            float32x4_t scale[8], min[8];
            const auto decode = [&]<int J>() {
                scale[J] = vmulq_f32(k4_scale<J, false>(sa, sb, sc), dd);
                min[J] = vmulq_f32(k4_scale<J, true>(sa, sb, sc), dmin);
            };
            [&]<int... J>(std::integer_sequence<int, J...>) { (decode.template operator()<J>(), ...); }(
                std::make_integer_sequence<int, 8>{});
            for (std::size_t c = 0; c < 4; ++c) {
                const std::byte* w = g + L::part(0, nb) + b * 2048 + c * 512;
                int8x16_t lo[8], hi[8];  // sub-blocks 2c and 2c + 1
                for (int k = 0; k < 8; ++k) {
                    const uint8x16_t v = load_quarter(w + 64 * k, q);
                    lo[k] = low_nibbles(v);
                    hi[k] = high_nibbles(v);
                }
                const std::size_t a = b * 8 + 2 * c;  // activation block of sub-block 2c; 2c + 1's is a + 1
                for (int t = 0; t < T; ++t) {
                    const std::int8_t* xq = x[t].qs + a * 32;
                    const int32x4_t da = dot_words8(vdupq_n_s32(0), lo, xq);
                    const int32x4_t db = dot_words8(vdupq_n_s32(0), hi, xq + 32);
                    float32x4_t r = vfmaq_f32(acc[t][q], vcvtq_f32_s32(da), vmulq_n_f32(scale[2 * c], x[t].d[a]));
                    r = vfmsq_f32(r, min[2 * c], vdupq_n_f32(x[t].ds[a]));
                    r = vfmaq_f32(r, vcvtq_f32_s32(db), vmulq_n_f32(scale[2 * c + 1], x[t].d[a + 1]));
                    acc[t][q] = vfmsq_f32(r, min[2 * c + 1], vdupq_n_f32(x[t].ds[a + 1]));
                }
            }
        }
    }
}

// Q6_K: per sub-block of 16 elements, 2 words of nibbles and 1 of top bits make the 4 words of
// u = q + 32 (byte shifts: NEON shifts each byte on its own, so no mask is needed after >> 4).
template <int T>
void group_q6_k(const std::byte* g, std::size_t nb, const prefetch_plan& pf, const act_q8::row (&x)[T],
                const std::int32_t* const (&sum16)[T], float32x4_t (&acc)[T][4]) noexcept {
    using L = interleaved<q6_k>;
    const uint8x16_t low4 = vdupq_n_u8(0x0F), top2 = vdupq_n_u8(0x30);
    for (int t = 0; t < T; ++t)
        for (int q = 0; q < 4; ++q) acc[t][q] = vdupq_n_f32(0);
    for (std::size_t b = 0; b < nb; ++b) {
        prefetch_block(g, pf, b);
        const std::byte* lo = g + L::part(0, nb) + b * 2048;
        const std::byte* hi = g + L::part(1, nb) + b * 1024;
        const auto* scales = reinterpret_cast<const std::int8_t*>(g + L::part(2, nb) + b * 256);
        const std::byte* d = g + L::part(3, nb) + b * 32;
        for (int q = 0; q < 4; ++q) {
            const float32x4_t dd = fp16_quarter(d, q);
            for (std::size_t s = 0; s < 16; ++s) {
                std::int32_t sc4;  // the 4 rows' scales of sub-block s
                std::memcpy(&sc4, scales + s * 16 + 4 * q, 4);
                const int16x8_t sc16 = vmovl_s8(vreinterpret_s8_s32(vdup_n_s32(sc4)));
                const float32x4_t scale = vmulq_f32(vcvtq_f32_s32(vmovl_s16(vget_low_s16(sc16))), dd);
                const uint8x16_t l0 = load_quarter(lo + s * 128, q), l1 = load_quarter(lo + s * 128 + 64, q),
                                 hv = load_quarter(hi + s * 64, q);
                const int8x16_t u[4] = {
                    vreinterpretq_s8_u8(vorrq_u8(vandq_u8(l0, low4), vandq_u8(vshlq_n_u8(hv, 4), top2))),
                    vreinterpretq_s8_u8(vorrq_u8(vshrq_n_u8(l0, 4), vandq_u8(vshlq_n_u8(hv, 2), top2))),
                    vreinterpretq_s8_u8(vorrq_u8(vandq_u8(l1, low4), vandq_u8(hv, top2))),
                    vreinterpretq_s8_u8(vorrq_u8(vshrq_n_u8(l1, 4), vandq_u8(vshrq_n_u8(hv, 2), top2))),
                };
                const std::size_t e = b * 256 + s * 16;  // first element
                for (int t = 0; t < T; ++t) {
                    const int32x4_t dot = dot_words(vdupq_n_s32(-32 * sum16[t][e / 16]), u, vld1q_s8(x[t].qs + e));
                    acc[t][q] = vfmaq_f32(acc[t][q], vcvtq_f32_s32(dot), vmulq_n_f32(scale, x[t].d[e / 32]));
                }
            }
        }
    }
}

// The first n (<= 16) of the 16 rows' results.
inline void store_rows(float* y, std::size_t n, const float32x4_t (&v)[4]) noexcept {
    if (n >= 16) {
        for (int q = 0; q < 4; ++q) vst1q_f32(y + 4 * q, v[q]);
        return;
    }
    float tmp[16];
    for (int q = 0; q < 4; ++q) vst1q_f32(tmp + 4 * q, v[q]);
    std::memcpy(y, tmp, n * sizeof(float));
}

// F16: quarter q of column k of the 16 rows, as floats.
inline float32x4_t f16_column(const std::uint16_t* g, std::size_t k, int q) noexcept {
    return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(g + k * interleave_rows + 4 * q)));
}

}  // namespace detail

// The kernel set of interleaved_driver.hpp.
struct kernels {
    using acc = float32x4_t[4];  // rows 0-3, 4-7, 8-11, 12-15
    template <class P, int T>
    static void group(const std::byte* g, std::size_t nb, const detail::prefetch_plan& pf, const act_q8::row (&x)[T],
                      const std::int32_t* const (&sum16)[T], acc (&out)[T]) noexcept {
        if constexpr (std::is_same_v<P, q4_0>) {
            detail::group_q4_0<T>(g, nb, pf, x, out);
        } else if constexpr (std::is_same_v<P, q8_0>) {
            detail::group_q8_0<T>(g, nb, pf, x, out);
        } else if constexpr (std::is_same_v<P, q4_k>) {
            detail::group_q4_k<T>(g, nb, pf, x, out);
        } else {
            static_assert(std::is_same_v<P, q6_k>);
            detail::group_q6_k<T>(g, nb, pf, x, sum16, out);
        }
    }
    static void store_rows(float* y, std::size_t n, const acc& v) noexcept { detail::store_rows(y, n, v); }
};

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
// each column's 16 halves are converted once and multiplied by the broadcast activation of each
// token. Decode runs 2 chains per quarter; prefill 6 tokens per pass (24 accumulators and 4
// weight registers of NEON's 32).
inline void matmul_f16(const std::byte* w, std::size_t cols, std::size_t r0, std::size_t r1, const float* x,
                       std::size_t x_stride, std::size_t n_tok, float* y, std::size_t y_stride) noexcept {
    constexpr std::size_t R = interleave_rows;
    const std::size_t gb = interleaved<f16>::group_bytes(cols);
    const auto group = [&](std::size_t r) { return reinterpret_cast<const std::uint16_t*>(w + r / R * gb); };
    const auto one_token = [&](std::size_t r, std::size_t t) {
        const std::uint16_t* g = group(r);
        const float* xt = x + t * x_stride;
        float32x4_t acc[2][4];
        for (auto& chain : acc)
            for (auto& a : chain) a = vdupq_n_f32(0);
        std::size_t k = 0;
        for (; k + 2 <= cols; k += 2) {
            __builtin_prefetch(reinterpret_cast<const char*>(g + k * R) + interleave_prefetch_distance, 0, 2);
            for (std::size_t j = 0; j < 2; ++j)
                for (int q = 0; q < 4; ++q) acc[j][q] = vfmaq_n_f32(acc[j][q], detail::f16_column(g, k + j, q), xt[k + j]);
        }
        for (; k < cols; ++k)
            for (int q = 0; q < 4; ++q) acc[0][q] = vfmaq_n_f32(acc[0][q], detail::f16_column(g, k, q), xt[k]);
        float32x4_t out[4];
        for (int q = 0; q < 4; ++q) out[q] = vaddq_f32(acc[0][q], acc[1][q]);
        detail::store_rows(y + t * y_stride + r, r1 - r, out);
    };
    const auto six_tokens = [&](std::size_t r, std::size_t t) {
        constexpr int T = 6;
        const std::uint16_t* g = group(r);
        const float* xs[T];
        for (int j = 0; j < T; ++j) xs[j] = x + (t + std::size_t(j)) * x_stride;
        float32x4_t acc[T][4];
        for (auto& tok : acc)
            for (auto& a : tok) a = vdupq_n_f32(0);
        for (std::size_t k = 0; k < cols; ++k) {
            float32x4_t wq[4];
            for (int q = 0; q < 4; ++q) wq[q] = detail::f16_column(g, k, q);
            for (int j = 0; j < T; ++j)
                for (int q = 0; q < 4; ++q) acc[j][q] = vfmaq_n_f32(acc[j][q], wq[q], xs[j][k]);
        }
        for (int j = 0; j < T; ++j) detail::store_rows(y + (t + std::size_t(j)) * y_stride + r, r1 - r, acc[j]);
    };
    for (std::size_t r = r0; r < r1; r += R) {
        std::size_t t = 0;
        for (; t + 6 <= n_tok; t += 6) six_tokens(r, t);
        for (; t < n_tok; ++t) one_token(r, t);
    }
}

#endif  // LMTK_QUANT_NEON_INTERLEAVED

}  // namespace lmtk::quant::neon16
