#pragma once
// AVX-512 VNNI kernels over the row-interleaved layouts of interleaved.hpp, against int8
// activations (act_q8): y[t][r] = dot(row r, token t) for whole groups of 16 rows.
//
// Lane r of every vector is row r. A word of 4 weight bytes per lane meets the 4 activation
// bytes it multiplies, broadcast from memory, in one vpdpbusd; the block's integer dots of all
// 16 rows end in one register, and one convert, one scale and one FMA finish them. Decode
// (one token) runs these kernels over weights repacked at load; a prefill batch over weights
// that stayed row-major packs one group at a time into a thread-local buffer first (the
// group then stays in L1 while every token of the batch passes over it).
//
// The quants are unsigned (u = q + z); sum(u * x) - z * sum(x) is the block's dot, and the
// correction starts the vpdpbusd chain as one broadcast value (all 16 rows share the token).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include <lmtk/quant/intrinsics_warnings.hpp>
#include <lmtk/quant/act_q8.hpp>
#include <lmtk/quant/interleaved.hpp>
#include <lmtk/quant/matmul_vnni.hpp>

namespace lmtk::quant::vnni {

#if LMTK_QUANT_VNNI

LMTK_INTRINSICS_WARNINGS_OFF

namespace detail {

// 4 activation bytes at p in every 32-bit lane.
inline __m512i broadcast_word(const std::int8_t* p) noexcept {
    std::int32_t v;
    std::memcpy(&v, p, 4);
    return _mm512_set1_epi32(v);
}

inline __m512 fp16_lanes(const std::byte* p) noexcept {
    return _mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(p)));
}

inline __m512i load_words(const std::byte* p) noexcept { return _mm512_load_si512(p); }

// Prefetch into L2 of the part of the weights `ahead` bytes past group g that corresponds to
// block b: over a pass through the group, the whole range [g + ahead, g + ahead + group
// bytes) is asked for, a block's share at a time. The hardware prefetchers alone fall behind
// on these streams of a few arrays per group (bench/quant_kernels, _stream: Q4_K read 10 GB/s
// from DRAM on one core without this, 20 with it, against 29 for a plain sum). Addresses past
// the end of the weights are harmless: a prefetch never faults.
struct prefetch_plan {
    std::size_t ahead = 0;  // 0: none (a group packed into L1 per call)
    std::size_t step = 0;   // group bytes per block
};
inline void prefetch_block(const std::byte* g, const prefetch_plan& pf, std::size_t b) noexcept {
    if (!pf.ahead) return;
    const std::byte* p = g + pf.ahead + b * pf.step;
    for (std::size_t off = 0; off < pf.step; off += 64) _mm_prefetch(reinterpret_cast<const char*>(p + off), _MM_HINT_T1);
}

// A thread-local buffer of at least `bytes` bytes on a 64-byte boundary, grown once.
inline std::byte* aligned_scratch(std::size_t bytes) {
    thread_local std::unique_ptr<std::byte[]> buf;
    thread_local std::size_t size = 0;
    if (size < bytes) {
        buf.reset(new std::byte[bytes + 64]);
        size = bytes;
    }
    const auto misalign = reinterpret_cast<std::uintptr_t>(buf.get()) % 64;
    return buf.get() + (misalign ? 64 - misalign : 0);
}

// Each kernel runs one group (16 rows) against T tokens: acc[t] lane r = dot(row r, token t).
// Decode uses T = 1, prefill T = 4 (each unpacked weight vector then serves four tokens).

// Q4_0: per block, 4 words of nibbles; low nibbles are elements 4k.., high ones 16 + 4k...
template <int T>
void group_q4_0(const std::byte* g, std::size_t nb, const prefetch_plan& pf, const act_q8::row (&x)[T],
               __m512 (&acc)[T]) noexcept {
    using L = interleaved<q4_0>;
    const __m512i low4 = _mm512_set1_epi8(0x0F);
    for (int t = 0; t < T; ++t) acc[t] = _mm512_setzero_ps();
    for (std::size_t b = 0; b < nb; ++b) {
        prefetch_block(g, pf, b);
        const std::byte* q = g + L::part(0, nb) + b * 256;
        __m512i lo[4], hi[4];
        for (int k = 0; k < 4; ++k) {
            const __m512i v = load_words(q + 64 * k);
            lo[k] = _mm512_and_si512(v, low4);
            hi[k] = _mm512_and_si512(_mm512_srli_epi16(v, 4), low4);
        }
        const __m512 dw = fp16_lanes(g + L::part(1, nb) + b * 32);
        for (int t = 0; t < T; ++t) {
            const std::int8_t* xq = x[t].qs + b * 32;
            // Two chains, so that the 8 dependent vpdpbusd of a block do not serialise.
            __m512i d0 = _mm512_set1_epi32(-8 * x[t].sum[b]), d1 = _mm512_setzero_si512();
            for (int k = 0; k < 4; ++k) {
                d0 = _mm512_dpbusd_epi32(d0, lo[k], broadcast_word(xq + 4 * k));
                d1 = _mm512_dpbusd_epi32(d1, hi[k], broadcast_word(xq + 16 + 4 * k));
            }
            const __m512i dot = _mm512_add_epi32(d0, d1);
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(dw, _mm512_set1_ps(x[t].d[b])), acc[t]);
        }
    }
}

// Q8_0: per block, 8 words of unsigned quants q + 128.
template <int T>
void group_q8_0(const std::byte* g, std::size_t nb, const prefetch_plan& pf, const act_q8::row (&x)[T],
               __m512 (&acc)[T]) noexcept {
    using L = interleaved<q8_0>;
    for (int t = 0; t < T; ++t) acc[t] = _mm512_setzero_ps();
    for (std::size_t b = 0; b < nb; ++b) {
        prefetch_block(g, pf, b);
        const std::byte* q = g + L::part(0, nb) + b * 512;
        __m512i v[8];
        for (int k = 0; k < 8; ++k) v[k] = load_words(q + 64 * k);
        const __m512 dw = fp16_lanes(g + L::part(1, nb) + b * 32);
        for (int t = 0; t < T; ++t) {
            const std::int8_t* xq = x[t].qs + b * 32;
            __m512i d0 = _mm512_set1_epi32(-128 * x[t].sum[b]), d1 = _mm512_setzero_si512();
            for (int k = 0; k < 8; k += 2) {
                d0 = _mm512_dpbusd_epi32(d0, v[k], broadcast_word(xq + 4 * k));
                d1 = _mm512_dpbusd_epi32(d1, v[k + 1], broadcast_word(xq + 4 * k + 4));
            }
            const __m512i dot = _mm512_add_epi32(d0, d1);
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(dw, _mm512_set1_ps(x[t].d[b])), acc[t]);
        }
    }
}

// Q4_K's 6-bit scale (Min = false) or min (Min = true) of sub-block j in every lane, from the
// 3 words a, b, c of the packed 12 bytes (the layout get_scale_min_k4 reads).
template <int J, bool Min>
__m512i k4_scale(__m512i a, __m512i b, __m512i c) noexcept {
    const __m512i six = _mm512_set1_epi32(63);
    if constexpr (J < 4) {
        return _mm512_and_si512(_mm512_srli_epi32(Min ? b : a, 8 * J), six);
    } else {
        // low 4 bits: nibble of byte J - 4 of c; high 2 bits: top bits of byte J - 4 of a (b).
        const __m512i low = _mm512_and_si512(_mm512_srli_epi32(c, 8 * (J - 4) + (Min ? 4 : 0)), _mm512_set1_epi32(0x0F));
        const __m512i high = _mm512_and_si512(_mm512_srli_epi32(Min ? b : a, 8 * (J - 4) + 2), _mm512_set1_epi32(0x30));
        return _mm512_or_si512(low, high);
    }
}

// Q4_K: per super-block, the 8 scales and mins decoded in registers (shared by every token),
// then 4 chunks of 8 words: low nibbles sub-block 2c, high nibbles sub-block 2c + 1. The min
// term is dmin * m * (d_x * sum(q_x)) per sub-block, in float.
template <int T>
void group_q4_k(const std::byte* g, std::size_t nb, const prefetch_plan& pf, const act_q8::row (&x)[T],
               __m512 (&acc)[T]) noexcept {
    using L = interleaved<q4_k>;
    const __m512i low4 = _mm512_set1_epi8(0x0F);
    for (int t = 0; t < T; ++t) acc[t] = _mm512_setzero_ps();
    for (std::size_t b = 0; b < nb; ++b) {
        prefetch_block(g, pf, b);
        const std::byte* s = g + L::part(1, nb) + b * 192;
        const std::byte* d = g + L::part(2, nb) + b * 64;
        const __m512i sa = load_words(s), sb = load_words(s + 64), sc = load_words(s + 128);
        const __m512 dd = fp16_lanes(d), dmin = fp16_lanes(d + 32);
        __m512 scale[8], min[8];
        const auto decode = [&]<int J>() {
            scale[J] = _mm512_mul_ps(_mm512_cvtepi32_ps(k4_scale<J, false>(sa, sb, sc)), dd);
            min[J] = _mm512_mul_ps(_mm512_cvtepi32_ps(k4_scale<J, true>(sa, sb, sc)), dmin);
        };
        [&]<int... J>(std::integer_sequence<int, J...>) { (decode.template operator()<J>(), ...); }(
            std::make_integer_sequence<int, 8>{});
        for (std::size_t c = 0; c < 4; ++c) {
            const std::byte* q = g + L::part(0, nb) + b * 2048 + c * 512;
            __m512i lo[8], hi[8];
            for (int k = 0; k < 8; ++k) {
                const __m512i v = load_words(q + 64 * k);
                lo[k] = _mm512_and_si512(v, low4);
                hi[k] = _mm512_and_si512(_mm512_srli_epi16(v, 4), low4);
            }
            const std::size_t a = b * 8 + 2 * c;  // activation block of sub-block 2c; 2c + 1's is a + 1
            for (int t = 0; t < T; ++t) {
                const std::int8_t* xq = x[t].qs + a * 32;
                __m512i da = _mm512_setzero_si512(), db = _mm512_setzero_si512();
                for (int k = 0; k < 8; ++k) {
                    da = _mm512_dpbusd_epi32(da, lo[k], broadcast_word(xq + 4 * k));
                    db = _mm512_dpbusd_epi32(db, hi[k], broadcast_word(xq + 32 + 4 * k));
                }
                __m512 r = _mm512_fmadd_ps(_mm512_cvtepi32_ps(da), _mm512_mul_ps(scale[2 * c], _mm512_set1_ps(x[t].d[a])),
                                           acc[t]);
                r = _mm512_fnmadd_ps(min[2 * c], _mm512_set1_ps(x[t].ds[a]), r);
                r = _mm512_fmadd_ps(_mm512_cvtepi32_ps(db), _mm512_mul_ps(scale[2 * c + 1], _mm512_set1_ps(x[t].d[a + 1])), r);
                acc[t] = _mm512_fnmadd_ps(min[2 * c + 1], _mm512_set1_ps(x[t].ds[a + 1]), r);
            }
        }
    }
}

// Q6_K: per sub-block of 16 elements, 2 words of nibbles and 1 of top bits make the 4 words of
// u = q + 32; the chain starts from -32 * sum(x) over the sub-block (sum16, per token).
template <int T>
void group_q6_k(const std::byte* g, std::size_t nb, const prefetch_plan& pf, const act_q8::row (&x)[T],
                const std::int32_t* const (&sum16)[T], __m512 (&acc)[T]) noexcept {
    using L = interleaved<q6_k>;
    const __m512i low4 = _mm512_set1_epi8(0x0F), top2 = _mm512_set1_epi8(0x30);
    // a | (b & c), one vpternlogd
    const auto merge = [](__m512i a, __m512i b, __m512i c) { return _mm512_ternarylogic_epi32(a, b, c, 0xF8); };
    for (int t = 0; t < T; ++t) acc[t] = _mm512_setzero_ps();
    for (std::size_t b = 0; b < nb; ++b) {
        prefetch_block(g, pf, b);
        const std::byte* lo = g + L::part(0, nb) + b * 2048;
        const std::byte* hi = g + L::part(1, nb) + b * 1024;
        const std::byte* scales = g + L::part(2, nb) + b * 256;
        const __m512 dd = fp16_lanes(g + L::part(3, nb) + b * 32);
        for (std::size_t s = 0; s < 16; ++s) {
            const __m128i sc8 = _mm_load_si128(reinterpret_cast<const __m128i*>(scales + s * 16));
            const __m512 scale = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(sc8)), dd);
            const __m512i l0 = load_words(lo + s * 128), l1 = load_words(lo + s * 128 + 64), h = load_words(hi + s * 64);
            const __m512i u0 = merge(_mm512_and_si512(l0, low4), _mm512_slli_epi16(h, 4), top2);
            const __m512i u1 = merge(_mm512_and_si512(_mm512_srli_epi16(l0, 4), low4), _mm512_slli_epi16(h, 2), top2);
            const __m512i u2 = merge(_mm512_and_si512(l1, low4), h, top2);
            const __m512i u3 = merge(_mm512_and_si512(_mm512_srli_epi16(l1, 4), low4), _mm512_srli_epi16(h, 2), top2);
            const std::size_t e = b * 256 + s * 16;  // first element
            for (int t = 0; t < T; ++t) {
                const std::int8_t* xq = x[t].qs + e;
                __m512i d0 = _mm512_set1_epi32(-32 * sum16[t][e / 16]), d1 = _mm512_setzero_si512();
                d0 = _mm512_dpbusd_epi32(d0, u0, broadcast_word(xq));
                d1 = _mm512_dpbusd_epi32(d1, u1, broadcast_word(xq + 4));
                d0 = _mm512_dpbusd_epi32(d0, u2, broadcast_word(xq + 8));
                d1 = _mm512_dpbusd_epi32(d1, u3, broadcast_word(xq + 12));
                const __m512i dot = _mm512_add_epi32(d0, d1);
                acc[t] =
                    _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(scale, _mm512_set1_ps(x[t].d[e / 32])), acc[t]);
            }
        }
    }
}

// Sums of every 16 activation quants of n_tok rows (Q6_K's zero point applies per 16 elements;
// act_q8 keeps sums per 32), in a thread-local buffer reused across calls.
inline const std::int32_t* sums_of_16(const std::byte* xa, std::size_t xa_stride, std::size_t cols, std::size_t n_tok) {
    thread_local std::vector<std::int32_t> sums;
    if (sums.size() < n_tok * cols / 16) sums.resize(n_tok * cols / 16);
    for (std::size_t t = 0; t < n_tok; ++t) {
        const std::int8_t* q = act_q8::view(xa + t * xa_stride, cols).qs;
        std::int32_t* out = sums.data() + t * (cols / 16);
        for (std::size_t s = 0; s < cols / 16; ++s) {
            std::int32_t sum = 0;
            for (std::size_t j = 0; j < 16; ++j) sum += q[16 * s + j];
            out[s] = sum;
        }
    }
    return sums.data();
}

// Groups per decode step: enough concurrent streams of weights to keep a core's reads in
// flight, few enough that the unpacked words and scales stay in registers (measured with
// bench/quant_kernels' _stream benchmarks: Q4_0 reads 1.3x faster with 4 than with 1; the
// formats with more work per byte peak at 2).
// What a kernel call needs besides the weights: the activations and where results go.
struct group_args {
    std::size_t nb, cols;
    const std::byte* xa;
    std::size_t xa_stride;
    const std::int32_t* sum16;  // Q6_K only
    float* y;                   // y[t * y_stride + r], r counted from the first group's first row
    std::size_t y_stride;
    prefetch_plan pf;
};

// One group (its rows counted from `row`; n_rows of all of them real) against tokens t0 ..
// t0 + T - 1.
template <class P, int T>
void run_group(const std::byte* g, std::size_t row, std::size_t n_rows, std::size_t t0, const group_args& a) noexcept {
    act_q8::row xr[T];
    __m512 acc[T];
    for (int j = 0; j < T; ++j) xr[j] = act_q8::view(a.xa + (t0 + std::size_t(j)) * a.xa_stride, a.cols);
    if constexpr (std::is_same_v<P, q4_0>) {
        group_q4_0<T>(g, a.nb, a.pf, xr, acc);
    } else if constexpr (std::is_same_v<P, q8_0>) {
        group_q8_0<T>(g, a.nb, a.pf, xr, acc);
    } else if constexpr (std::is_same_v<P, q4_k>) {
        group_q4_k<T>(g, a.nb, a.pf, xr, acc);
    } else {
        static_assert(std::is_same_v<P, q6_k>);
        const std::int32_t* s16[T];
        for (int j = 0; j < T; ++j) s16[j] = a.sum16 + (t0 + std::size_t(j)) * (a.cols / 16);
        group_q6_k<T>(g, a.nb, a.pf, xr, s16, acc);
    }
    const std::size_t real = std::min(interleave_rows, n_rows - row);
    const __mmask16 keep = static_cast<__mmask16>((1u << real) - 1);
    for (int j = 0; j < T; ++j) _mm512_mask_storeu_ps(a.y + (t0 + std::size_t(j)) * a.y_stride + row, keep, acc[j]);
}

// Every token against one group: tokens 4 at a time, then one by one.
template <class P>
void run_group_all_tokens(const std::byte* g, std::size_t row, std::size_t n_rows, std::size_t n_tok,
                          const group_args& a) noexcept {
    std::size_t t = 0;
    for (; t + 4 <= n_tok; t += 4) run_group<P, 4>(g, row, n_rows, t, a);
    for (; t < n_tok; ++t) run_group<P, 1>(g, row, n_rows, t, a);
}

}  // namespace detail


// weight_ops::matmul_act over a matrix in P's interleaved layout (w: its first group; rows
// r0 .. r1, r0 a multiple of 16). Rows past r1 in the last group are computed and not stored.
template <class P>
void matmul_interleaved(const std::byte* w, std::size_t cols, std::size_t r0, std::size_t r1, const std::byte* xa,
                        std::size_t xa_stride, std::size_t n_tok, float* y, std::size_t y_stride) noexcept {
    using L = interleaved<P>;
    const std::size_t nb = cols / P::block_elems, gb = L::group_bytes(nb);
    const std::int32_t* sum16 = std::is_same_v<P, q6_k> ? detail::sums_of_16(xa, xa_stride, cols, n_tok) : nullptr;
    const detail::group_args a{nb, cols, xa, xa_stride, sum16, y + r0, y_stride, {interleave_prefetch_distance, gb / nb}};
    const std::byte* first = w + r0 / interleave_rows * gb;
    const std::size_t n_rows = r1 - r0, groups = (n_rows + interleave_rows - 1) / interleave_rows;
    for (std::size_t i = 0; i < groups; ++i) detail::run_group_all_tokens<P>(first + i * gb, i * interleave_rows, n_rows, n_tok, a);
}

// The same over row-major weights (as mapped from GGUF): each group of 16 rows is interleaved
// into a thread-local buffer first, which pays from about 8 tokens on (bench/quant_kernels).
template <class P>
void matmul_packed(const std::byte* w, std::size_t cols, std::size_t r0, std::size_t r1, const std::byte* xa,
                   std::size_t xa_stride, std::size_t n_tok, float* y, std::size_t y_stride) noexcept {
    using L = interleaved<P>;
    const std::size_t nb = cols / P::block_elems;
    std::byte* group = detail::aligned_scratch(L::group_bytes(nb));
    const auto* rows = reinterpret_cast<const typename P::block*>(w);
    const std::int32_t* sum16 = std::is_same_v<P, q6_k> ? detail::sums_of_16(xa, xa_stride, cols, n_tok) : nullptr;
    const detail::group_args a{nb, cols, xa, xa_stride, sum16, y + r0, y_stride, {}};
    for (std::size_t r = r0; r < r1; r += interleave_rows) {
        L::pack(rows + r * nb, nb, nb, std::min(interleave_rows, r1 - r), group);
        detail::run_group_all_tokens<P>(group, r - r0, r1 - r0, n_tok, a);
    }
}

// From this many tokens on, packing row-major weights per call pays (bench/quant_kernels).
inline constexpr std::size_t packed_min_tokens = 8;

// weight_ops::matmul_act for row-major P: y[t * y_stride + r] = dot(row r, activation row t).
// Packed groups for a batch of tokens, row tiles for a few.
template <class P>
void matmul(const std::byte* w, std::size_t cols, std::size_t r0, std::size_t r1, const std::byte* xa,
            std::size_t xa_stride, std::size_t n_tok, float* y, std::size_t y_stride) noexcept {
    if constexpr (has_interleaved<P>) {
        if (n_tok >= packed_min_tokens) {
            matmul_packed<P>(w, cols, r0, r1, xa, xa_stride, n_tok, y, y_stride);
            return;
        }
    }
    matmul_tiles<P>(w, cols, r0, r1, xa, xa_stride, n_tok, y, y_stride);
}

LMTK_INTRINSICS_WARNINGS_ON

#endif  // LMTK_QUANT_VNNI

}  // namespace lmtk::quant::vnni
