#pragma once
// The element-wise and row-wise operations of a transformer block, shared by every
// architecture: RMS normalisation, rotary position embedding, SwiGLU, biases and residual
// additions. Each works on n rows laid out one after another ([n][width]).
#include <lmtk/core/thread_pool.hpp>

#include <cmath>
#include <cstddef>
#include <span>
#include <vector>

#include <xsimd/xsimd.hpp>

namespace lmtk::model::ops {

// y[t] = x[t] / rms(x[t]) * g for n rows of d, the rows split across the pool's threads.
inline void rmsnorm(core::thread_pool& pool, float* y, const float* x, const float* g, std::size_t n, std::size_t d,
                    float eps) noexcept {
    pool.run_sized(n * d, [&](std::size_t i, std::size_t nt) noexcept {
        const auto [t0, t1] = core::thread_pool::split(n, i, nt);
        for (std::size_t t = t0; t < t1; ++t) {
            const float* xr = x + t * d;
            float* yr = y + t * d;
            double ss = 0.0;  // double: this sum sets the scale of the whole row
            for (std::size_t j = 0; j < d; ++j) ss += double(xr[j]) * xr[j];
            const float scale = static_cast<float>(1.0 / std::sqrt(ss / double(d) + double(eps)));
            for (std::size_t j = 0; j < d; ++j) yr[j] = xr[j] * scale * g[j];
        }
    });
}

// cos/sin [n][inv_freq.size()] of every (row, frequency) pair, row t at position pos[t];
// angles in double because position * frequency loses digits in float at long contexts.
inline void rope_angles(std::span<const double> inv_freq, const std::size_t* pos, std::size_t n, float freq_scale,
                        float* cos_out, float* sin_out) noexcept {
    const std::size_t half = inv_freq.size();
    for (std::size_t t = 0; t < n; ++t) {
        const double p = double(pos[t]) * double(freq_scale);
        for (std::size_t i = 0; i < half; ++i) {
            const double a = p * inv_freq[i];
            cos_out[t * half + i] = static_cast<float>(std::cos(a));
            sin_out[t * half + i] = static_cast<float>(std::sin(a));
        }
    }
}

// Rotates the first 2 * half dimensions of each head of n rows of [n_heads][head_dim], with the
// angles of rope_angles(). Normal (GPT-J) style rotates pairs (2i, 2i+1); NeoX style rotates
// pairs (i, i + half).
inline void apply_rope(float* v, std::size_t n, std::size_t n_heads, std::size_t head_dim, std::size_t half, bool neox,
                       const float* cos_in, const float* sin_in) noexcept {
    for (std::size_t t = 0; t < n; ++t) {
        const float* c = cos_in + t * half;
        const float* s = sin_in + t * half;
        for (std::size_t h = 0; h < n_heads; ++h) {
            float* x = v + (t * n_heads + h) * head_dim;
            for (std::size_t i = 0; i < half; ++i) {
                const std::size_t a = neox ? i : 2 * i, b = neox ? i + half : 2 * i + 1;
                const float x0 = x[a], x1 = x[b];
                x[a] = x0 * c[i] - x1 * s[i];
                x[b] = x0 * s[i] + x1 * c[i];
            }
        }
    }
}

// y[t] += b for n rows of b.size(); nothing when the layer has no such bias.
inline void add_bias(float* y, const std::vector<float>& b, std::size_t n) noexcept {
    for (std::size_t t = 0; t < n; ++t)
        for (std::size_t i = 0; i < b.size(); ++i) y[t * b.size() + i] += b[i];
}

inline void add_in_place(float* x, const float* y, std::size_t n) noexcept {
    for (std::size_t i = 0; i < n; ++i) x[i] += y[i];
}

// g = silu(g) * u over n values.
template <class Arch>
void swiglu(float* g, const float* u, std::size_t n) noexcept {
    using batch = xsimd::batch<float, Arch>;
    // xsimd's exp keeps this vectorised: std::exp is a call per value, a visible share of a
    // decode step at n_ff = 2816 x 16 layers.
    std::size_t i = 0;
    for (; i + batch::size <= n; i += batch::size) {
        const batch gv = batch::load_unaligned(g + i);
        (gv / (batch(1.0f) + xsimd::exp(-gv)) * batch::load_unaligned(u + i)).store_unaligned(g + i);
    }
    for (; i < n; ++i) g[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
}

}  // namespace lmtk::model::ops
