#pragma once
// Pieces shared by the block formats beyond Q8_0/Q4_0 (Q4_1 ... Q6_K, IQ4_NL, Q8_K): the dot
// kernels' inner loop over unpacked quants, and the scale searches of the reference quantizers.
//
// Every dot kernel here works the same way: unpack a block's quants to signed bytes (a fixed-
// length byte loop the compiler vectorises), widen them to float in registers and fma against
// the activations one sub-block at a time; the sub-block's scale (and min) multiply the
// sub-block's partial sums, never each term.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>

#include <xsimd/xsimd.hpp>

#include <lmtk/quant/policy.hpp>

namespace lmtk::quant::detail {

// sum_j q[j] * x[j] for j < n, n a multiple of the batch size, as a vector of lane sums.
template <class Arch>
xsimd::batch<float, Arch> dot_i8(const std::int8_t* q, const float* x, std::size_t n) noexcept {
    using batch = xsimd::batch<float, Arch>;
    batch s(0.0f);
    for (std::size_t j = 0; j < n; j += batch::size)
        s = xsimd::fma(load_widened<float, Arch>(q + j), batch::load_unaligned(x + j), s);
    return s;
}

// Both sum_j q[j] * x[j] and sum_j x[j]: formats with a per-sub-block minimum pay it once per
// sub-block as min * sum(x) rather than once per weight.
template <class Arch>
void dot_i8_and_sum(const std::int8_t* q, const float* x, std::size_t n, xsimd::batch<float, Arch>& qx,
                    xsimd::batch<float, Arch>& sx) noexcept {
    using batch = xsimd::batch<float, Arch>;
    qx = batch(0.0f);
    sx = batch(0.0f);
    for (std::size_t j = 0; j < n; j += batch::size) {
        const batch xv = batch::load_unaligned(x + j);
        qx = xsimd::fma(load_widened<float, Arch>(q + j), xv, qx);
        sx += xv;
    }
}

// sum over sub-blocks k < n_sub of scale[k] * sum_j q[sub k + j] x[sub k + j], added to acc.
// Two named accumulators in turn (an array of batches indexed at run time lands on the stack):
// one would serialise the sub-blocks on the fma latency.
template <class Arch, std::size_t sub, std::size_t n_sub>
xsimd::batch<float, Arch> scaled_dot(const std::int8_t* q, const float* x, const float* scale,
                                     xsimd::batch<float, Arch> acc) noexcept {
    using batch = xsimd::batch<float, Arch>;
    static_assert(n_sub % 2 == 0);
    batch acc1(0.0f);
    for (std::size_t k = 0; k < n_sub; k += 2) {
        acc = xsimd::fma(batch(scale[k]), dot_i8<Arch>(q + sub * k, x + sub * k, sub), acc);
        acc1 = xsimd::fma(batch(scale[k + 1]), dot_i8<Arch>(q + sub * (k + 1), x + sub * (k + 1), sub), acc1);
    }
    return acc + acc1;
}

// The same minus min[k] * sum_j x[sub k + j] per sub-block (the K-quants with a minimum).
template <class Arch, std::size_t sub, std::size_t n_sub>
xsimd::batch<float, Arch> scaled_dot_min(const std::int8_t* q, const float* x, const float* scale, const float* min,
                                         xsimd::batch<float, Arch> acc) noexcept {
    using batch = xsimd::batch<float, Arch>;
    batch mins(0.0f);
    for (std::size_t k = 0; k < n_sub; ++k) {
        batch qx, sx;
        dot_i8_and_sum<Arch>(q + sub * k, x + sub * k, sub, qx, sx);
        acc = xsimd::fma(batch(scale[k]), qx, acc);
        mins = xsimd::fma(batch(min[k]), sx, mins);
    }
    return acc - mins;
}

// The sub-block sizes below (16 and 32) must be whole batches on every arch the dot is built for.
template <class Arch>
inline constexpr bool whole_batches(std::size_t n) noexcept {
    return n % xsimd::batch<float, Arch>::size == 0;
}

// --- reference quantizer helpers -----------------------------------------------------------------

// Round to nearest, ties to even (the current rounding mode, round-to-nearest by default); the
// callers clamp afterwards, so only finite inputs in int range matter.
inline int round_int(float v) noexcept { return static_cast<int>(std::lrintf(v)); }

// 1 / d, or 0 where that is not a finite number (d = 0, or d so small that 1 / d overflows):
// the quantizers then map every value to the zero point instead of computing 0 * inf = NaN,
// whose conversion to an integer is undefined. Only all-zero or denormal blocks take this path.
inline float safe_inverse(float d) noexcept {
    const float inv = d != 0.0f ? 1.0f / d : 0.0f;
    return std::isfinite(inv) ? inv : 0.0f;
}

// Relative steps around the plain max-based scale that the searches try: a scale a little off
// the one that maps the extreme onto the end of the grid often fits the other values better.
inline constexpr int search_steps = 10;
inline constexpr float search_step = 0.1f;

// Symmetric fit x[j] ~= s * q[j] with integers q in [-nmax, nmax - 1], by least squares over a
// few candidate grids: for each candidate, quantize, then take the s that minimises
// sum (x - s q)^2 for those q (s = sum(xq) / sum(q^2)); keep the candidate with the smallest
// error (the largest sum(xq)^2 / sum(q^2)). The candidates map the value of largest magnitude
// to about -nmax (the end of the grid with room), so s takes the opposite sign of that value.
// Returns s (0 for an all-zero input) and writes q.
inline float fit_symmetric(const float* x, std::size_t n, int nmax, std::int8_t* q) noexcept {
    float amax = 0.0f, extreme = 0.0f;
    for (std::size_t j = 0; j < n; ++j) {
        if (std::fabs(x[j]) > amax) {
            amax = std::fabs(x[j]);
            extreme = x[j];
        }
    }
    if (amax == 0.0f) {
        std::fill(q, q + n, std::int8_t{0});
        return 0.0f;
    }
    float best_s = 0.0f, best_gain = -1.0f;
    std::int8_t trial[256];
    for (int t = -search_steps; t <= search_steps; ++t) {
        const float iscale = -(static_cast<float>(nmax) + search_step * static_cast<float>(t)) / extreme;
        double sxq = 0.0, sqq = 0.0;
        for (std::size_t j = 0; j < n; ++j) {
            const int v = std::clamp(round_int(iscale * x[j]), -nmax, nmax - 1);
            trial[j] = static_cast<std::int8_t>(v);
            sxq += static_cast<double>(x[j]) * v;
            sqq += static_cast<double>(v) * v;
        }
        if (sqq == 0.0) continue;
        const double gain = sxq * sxq / sqq;  // the error is sum(x^2) - gain
        if (gain > best_gain) {
            best_gain = static_cast<float>(gain);
            best_s = static_cast<float>(sxq / sqq);
            std::copy(trial, trial + n, q);
        }
    }
    return best_s;
}

// The same once s is fixed (after it was rounded into the block's own scale format).
inline void quantize_symmetric(const float* x, std::size_t n, float s, int nmax, std::int8_t* q) noexcept {
    const float inv = safe_inverse(s);
    for (std::size_t j = 0; j < n; ++j) q[j] = static_cast<std::int8_t>(std::clamp(round_int(x[j] * inv), -nmax, nmax - 1));
}

struct scale_min {
    float scale;  // >= 0
    float min;    // >= 0: the decoded value is scale * q - min
};

// Affine fit x[j] ~= scale * q[j] - min with integers q in [0, qmax], scale >= 0 and min >= 0
// (the K-quants store both unsigned; min >= 0 means the grid always reaches down to <= 0, so a
// sub-block of positive values keeps 0 representable). For each of a few candidate grids over
// [min(x, 0), max(x)], quantize, then fit scale and min by two-parameter least squares for
// those q (one-parameter when the fitted min comes out negative); keep the smallest error.
inline scale_min fit_affine(const float* x, std::size_t n, int qmax, std::uint8_t* q) noexcept {
    float lo = x[0], hi = x[0];
    for (std::size_t j = 1; j < n; ++j) {
        lo = std::min(lo, x[j]);
        hi = std::max(hi, x[j]);
    }
    lo = std::min(lo, 0.0f);
    if (hi <= lo) {  // every value is the same non-positive number: q = 0 and min = -x
        std::fill(q, q + n, std::uint8_t{0});
        return {0.0f, -lo};
    }
    double sx = 0.0;
    for (std::size_t j = 0; j < n; ++j) sx += x[j];
    // Start from the plain min/max grid: scale = (hi - lo) / qmax, min = -lo.
    scale_min best{(hi - lo) / static_cast<float>(qmax), -lo};
    double best_err = 0.0;
    {
        const float inv = safe_inverse(best.scale);
        for (std::size_t j = 0; j < n; ++j) {
            const int v = std::clamp(round_int((x[j] - lo) * inv), 0, qmax);
            q[j] = static_cast<std::uint8_t>(v);
            const double e = static_cast<double>(best.scale) * v - best.min - x[j];
            best_err += e * e;
        }
    }
    std::uint8_t trial[256];
    for (int t = -search_steps; t <= search_steps; ++t) {
        const float iscale = (static_cast<float>(qmax) + search_step * static_cast<float>(t)) / (hi - lo);
        double sq = 0.0, sqq = 0.0, sxq = 0.0;
        for (std::size_t j = 0; j < n; ++j) {
            const int v = std::clamp(round_int((x[j] - lo) * iscale), 0, qmax);
            trial[j] = static_cast<std::uint8_t>(v);
            sq += v;
            sqq += static_cast<double>(v) * v;
            sxq += static_cast<double>(v) * x[j];
        }
        const double nn = static_cast<double>(n), det = nn * sqq - sq * sq;
        if (det <= 0.0) continue;  // all q equal: no line to fit
        double a = (nn * sxq - sq * sx) / det;  // x ~= a q + b
        double b = (sqq * sx - sq * sxq) / det;
        if (b > 0.0) {  // min would be negative: fit through the origin instead
            b = 0.0;
            a = sxq / sqq;
        }
        if (!(a > 0.0)) continue;
        double err = 0.0;
        for (std::size_t j = 0; j < n; ++j) {
            const double e = a * trial[j] + b - x[j];
            err += e * e;
        }
        if (err < best_err) {
            best_err = err;
            best = {static_cast<float>(a), static_cast<float>(-b)};
            std::copy(trial, trial + n, q);
        }
    }
    return best;
}

// The same once scale and min are fixed: q = round((x + min) / scale) in [0, qmax].
inline void quantize_affine(const float* x, std::size_t n, float scale, float min, int qmax, std::uint8_t* q) noexcept {
    const float inv = safe_inverse(scale);
    for (std::size_t j = 0; j < n; ++j)
        q[j] = static_cast<std::uint8_t>(std::clamp(round_int((x[j] + min) * inv), 0, qmax));
}

// Non-negative sub-block values v[k] -> unsigned integers of `bits` bits against one super-block
// step d = max(v) / (2^bits - 1): returns d (0 when every v is 0) and writes the integers.
inline float quantize_unsigned_scales(const float* v, std::size_t n, int bits, std::uint8_t* out) noexcept {
    const int top = (1 << bits) - 1;
    float vmax = 0.0f;
    for (std::size_t k = 0; k < n; ++k) vmax = std::max(vmax, v[k]);
    if (!(vmax > 0.0f)) {
        std::fill(out, out + n, std::uint8_t{0});
        return 0.0f;
    }
    const float inv = static_cast<float>(top) / vmax;
    for (std::size_t k = 0; k < n; ++k) out[k] = static_cast<std::uint8_t>(std::clamp(round_int(v[k] * inv), 0, top));
    return vmax / static_cast<float>(top);
}

// Signed sub-block scales s[k] -> integers in [-half, half - 1] against one super-block step d
// that maps the scale of largest magnitude onto -half (so d has the opposite sign of it).
inline float quantize_signed_scales(const float* s, std::size_t n, int half, int* out) noexcept {
    float amax = 0.0f, extreme = 0.0f;
    for (std::size_t k = 0; k < n; ++k) {
        if (std::fabs(s[k]) > amax) {
            amax = std::fabs(s[k]);
            extreme = s[k];
        }
    }
    if (amax == 0.0f) {
        std::fill(out, out + n, 0);
        return 0.0f;
    }
    const float iscale = -static_cast<float>(half) / extreme;
    for (std::size_t k = 0; k < n; ++k) out[k] = std::clamp(round_int(s[k] * iscale), -half, half - 1);
    return 1.0f / iscale;
}

}  // namespace lmtk::quant::detail
