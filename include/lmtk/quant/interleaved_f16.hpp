#pragma once
// AVX-512 kernels for F16 weights in their interleaved layout (interleaved.hpp: column k of 16
// rows is one vector of halves) against float activations.
//
// At every column a vector of 16 rows' weights is converted once (vcvtph2ps) and multiplied
// by the broadcast activation x[t][k] of each token: no horizontal sums, and in prefill one
// weight vector serves 12 tokens and one broadcast two vectors of rows, 24 FMAs per 2 loads,
// 2 conversions and 12 broadcasts, which keeps the FMA units close to busy (the row tiles of
// dispatch.hpp, decoding halves a row at a time and reducing every dot, reached half of that).
// Decode reads the weights once, four chains of FMAs deep, with the next weights prefetched
// into L2 as the int8 kernels do.
#include <algorithm>
#include <cstddef>
#include <cstdint>

#include <lmtk/quant/intrinsics_warnings.hpp>
#include <lmtk/quant/interleaved.hpp>

#if defined(__AVX512F__) && defined(__F16C__)
#define LMTK_QUANT_F16_INTERLEAVED 1
#include <immintrin.h>
#endif

namespace lmtk::quant::f16x16 {

#if LMTK_QUANT_F16_INTERLEAVED

LMTK_INTRINSICS_WARNINGS_OFF

namespace detail {

inline __m512 column(const std::uint16_t* g, std::size_t k) noexcept {
    return _mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(g + k * interleave_rows)));
}

// One group, one token: y lanes = the 16 rows' dots.
inline __m512 group_one_token(const std::uint16_t* g, std::size_t cols, const float* x, std::size_t ahead) noexcept {
    __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    const auto* bytes = reinterpret_cast<const char*>(g);
    std::size_t k = 0;
    for (; k + 4 <= cols; k += 4) {
        // Two columns are one 64-byte line: prefetch the line `ahead` bytes on, twice per step.
        _mm_prefetch(bytes + k * 32 + ahead, _MM_HINT_T1);
        _mm_prefetch(bytes + k * 32 + 64 + ahead, _MM_HINT_T1);
        for (std::size_t j = 0; j < 4; ++j) acc[j] = _mm512_fmadd_ps(column(g, k + j), _mm512_set1_ps(x[k + j]), acc[j]);
    }
    for (; k < cols; ++k) acc[0] = _mm512_fmadd_ps(column(g, k), _mm512_set1_ps(x[k]), acc[0]);
    return _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
}

// G groups (16 G rows) against T tokens.
template <int G, int T>
void groups_tokens(const std::uint16_t* const (&g)[G], std::size_t cols, const float* const (&x)[T],
                   __m512 (&acc)[G][T]) noexcept {
    for (int i = 0; i < G; ++i)
        for (int t = 0; t < T; ++t) acc[i][t] = _mm512_setzero_ps();
    for (std::size_t k = 0; k < cols; ++k) {
        __m512 w[G];
        for (int i = 0; i < G; ++i) w[i] = column(g[i], k);
        for (int t = 0; t < T; ++t) {
            const __m512 xb = _mm512_set1_ps(x[t][k]);
            for (int i = 0; i < G; ++i) acc[i][t] = _mm512_fmadd_ps(w[i], xb, acc[i][t]);
        }
    }
}

inline void store_rows(float* y, std::size_t n, __m512 v) noexcept {
    _mm512_mask_storeu_ps(y, static_cast<__mmask16>((1u << std::min<std::size_t>(n, 16)) - 1), v);
}

}  // namespace detail

// weight_ops::matmul over an F16 matrix in the interleaved layout (w: its first group; rows
// r0 .. r1, r0 a multiple of 16): y[t * y_stride + r] = dot(row r, x + t * x_stride).
inline void matmul(const std::byte* w, std::size_t cols, std::size_t r0, std::size_t r1, const float* x,
                   std::size_t x_stride, std::size_t n_tok, float* y, std::size_t y_stride) noexcept {
    constexpr std::size_t R = interleave_rows;
    const std::size_t gb = interleaved<f16>::group_bytes(cols);
    const auto group = [&](std::size_t r) { return reinterpret_cast<const std::uint16_t*>(w + r / R * gb); };
    if (n_tok < 4) {
        for (std::size_t r = r0; r < r1; r += R)
            for (std::size_t t = 0; t < n_tok; ++t)
                detail::store_rows(y + t * y_stride + r, r1 - r,
                                   detail::group_one_token(group(r), cols, x + t * x_stride, interleave_prefetch_distance));
        return;
    }
    // Prefill: two groups (32 rows) against 12 tokens, then 4, then 1.
    const auto run = [&]<int G, int T>(std::size_t r, std::size_t t) {
        const std::uint16_t* gs[G];
        const float* xs[T];
        for (int i = 0; i < G; ++i) gs[i] = group(r + std::size_t(i) * R);
        for (int j = 0; j < T; ++j) xs[j] = x + (t + std::size_t(j)) * x_stride;
        __m512 acc[G][T];
        detail::groups_tokens<G, T>(gs, cols, xs, acc);
        for (int i = 0; i < G; ++i)
            for (int j = 0; j < T; ++j) {
                const std::size_t row = r + std::size_t(i) * R;
                detail::store_rows(y + (t + std::size_t(j)) * y_stride + row, r1 - row, acc[i][j]);
            }
    };
    const auto tokens = [&]<int G>(std::size_t r) {
        std::size_t t = 0;
        for (; t + 12 <= n_tok; t += 12) run.template operator()<G, 12>(r, t);
        for (; t + 4 <= n_tok; t += 4) run.template operator()<G, 4>(r, t);
        for (; t < n_tok; ++t) run.template operator()<G, 1>(r, t);
    };
    std::size_t r = r0;
    for (; r + 2 * R <= r1; r += 2 * R) tokens.template operator()<2>(r);
    for (; r < r1; r += R) tokens.template operator()<1>(r);
}

LMTK_INTRINSICS_WARNINGS_ON

#endif  // LMTK_QUANT_F16_INTERLEAVED

}  // namespace lmtk::quant::f16x16
