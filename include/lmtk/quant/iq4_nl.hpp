#pragma once
// IQ4_NL (GGUF id 20): 32 weights share one fp16 scale; each 4-bit index picks one of 16
// non-uniform levels (denser near zero, where trained weights cluster). Nibble layout as Q4_0:
// w[j] = d * K[qs[j] & 0xF], w[j + 16] = d * K[qs[j] >> 4], j < 16.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include <xsimd/xsimd.hpp>

#include <lmtk/core/fp16.hpp>
#include <lmtk/quant/block_common.hpp>
#include <lmtk/quant/ggml_type.hpp>
#include <lmtk/quant/policy.hpp>

namespace lmtk::quant {

struct iq4_nl {
    static constexpr ggml_type type_id = ggml_type::iq4_nl;
    static constexpr std::size_t block_elems = 32;
    static constexpr std::size_t half = block_elems / 2;
    // The codebook (spec 3.4), ascending; int8 so the dot can widen it like any quant.
    static constexpr std::array<std::int8_t, 16> levels = {-127, -104, -83, -65, -49, -35, -22, -10,
                                                           1,    13,   25,  38,  53,  69,  89,  113};
    struct block {
        std::uint16_t d;  // scale, fp16 bits
        std::uint8_t qs[half];
    };
    static_assert(sizeof(block) == sizeof(std::uint16_t) + half, "iq4_nl: padding");
    static_assert(std::is_trivially_copyable_v<block>);

    // Reference decoder, the executable spec.
    static void dequantize_row(const block* w, float* y, std::size_t n_blocks) noexcept {
        for (std::size_t b = 0; b < n_blocks; ++b, y += block_elems) {
            const float d = core::fp16_to_f32(w[b].d);
            for (std::size_t j = 0; j < half; ++j) {
                y[j] = d * static_cast<float>(levels[w[b].qs[j] & 0xF]);
                y[j + half] = d * static_cast<float>(levels[w[b].qs[j] >> 4]);
            }
        }
    }

    // The index of the level nearest to v (in units of d).
    static int nearest_level(float v) noexcept {
        const auto it = std::lower_bound(levels.begin(), levels.end(), v,
                                         [](std::int8_t l, float x) { return static_cast<float>(l) < x; });
        if (it == levels.begin()) return 0;
        if (it == levels.end()) return 15;
        const auto i = static_cast<int>(it - levels.begin());
        return v - static_cast<float>(levels[i - 1]) <= static_cast<float>(levels[i]) - v ? i - 1 : i;
    }

    // Reference quantizer (x finite). The levels are not evenly spaced, so no formula gives
    // the best d: try candidate scales that put the value of largest magnitude at or near
    // either end of the codebook, pick the nearest level for every value, refit d by least
    // squares for those levels (d = sum(x K) / sum(K^2)), and keep the candidate with the
    // smallest squared error; the levels are then chosen again against the fp16-rounded d.
    static void quantize_row(const float* x, block* out, std::size_t n_blocks) noexcept {
        for (std::size_t b = 0; b < n_blocks; ++b, x += block_elems) {
            float amax = 0.0f, extreme = 0.0f;
            for (std::size_t j = 0; j < block_elems; ++j) {
                if (std::fabs(x[j]) > amax) {
                    amax = std::fabs(x[j]);
                    extreme = x[j];
                }
            }
            float best_d = 0.0f;
            double best_gain = -1.0;
            if (amax > 0.0f) {
                for (const float end : {static_cast<float>(levels.front()), static_cast<float>(levels.back())}) {
                    for (int t = -detail::search_steps; t <= detail::search_steps; ++t) {
                        // The extreme maps to `end` scaled by 1 +- up to 10%.
                        const float inv = end * (1.0f + 0.01f * static_cast<float>(t)) / extreme;
                        double sxk = 0.0, skk = 0.0;
                        for (std::size_t j = 0; j < block_elems; ++j) {
                            const float k = levels[static_cast<std::size_t>(nearest_level(x[j] * inv))];
                            sxk += static_cast<double>(x[j]) * k;
                            skk += static_cast<double>(k) * k;
                        }
                        const double gain = sxk * sxk / skk;  // skk > 0: no level is 0
                        if (gain > best_gain) {
                            best_gain = gain;
                            best_d = static_cast<float>(sxk / skk);
                        }
                    }
                }
            }
            out[b].d = core::f32_to_fp16(best_d);
            const float d = core::fp16_to_f32(out[b].d);
            const float inv_d = detail::safe_inverse(d);
            const auto index = [&](float v) noexcept { return static_cast<std::uint8_t>(nearest_level(v * inv_d)); };
            for (std::size_t j = 0; j < half; ++j)
                out[b].qs[j] = static_cast<std::uint8_t>(index(x[j]) | (index(x[j + half]) << 4));
        }
    }

    // The levels of the 32 indices of one block, in element order.
    static void unpack(const block& b, std::int8_t* q) noexcept {
#if defined(__GNUC__) && !defined(__clang__)
        // A 16-entry byte table lookup is one byte shuffle (pshufb, tbl) on every SIMD target;
        // GCC lowers __builtin_shuffle with a variable selector to it. A scalar lookup per
        // index ran at a quarter of Q4_0's speed.
        using bytes16 [[gnu::vector_size(16)]] = std::int8_t;
        using ubytes16 [[gnu::vector_size(16)]] = std::uint8_t;
        bytes16 table;
        std::memcpy(&table, levels.data(), sizeof table);
        ubytes16 packed;
        std::memcpy(&packed, b.qs, sizeof packed);
        const bytes16 lo = __builtin_shuffle(table, packed & 0xF), hi = __builtin_shuffle(table, packed >> 4);
        std::memcpy(q, &lo, sizeof lo);
        std::memcpy(q + half, &hi, sizeof hi);
#else
        for (std::size_t j = 0; j < half; ++j) {
            q[j] = levels[b.qs[j] & 0xF];
            q[j + half] = levels[b.qs[j] >> 4];
        }
#endif
    }

    template <class Arch>
    static float dot(Arch, const block* w, const float* x, std::size_t n_blocks) noexcept {
        using batch = xsimd::batch<float, Arch>;
        static_assert(detail::whole_batches<Arch>(block_elems), "iq4_nl: a block must be whole batches");
        batch acc0(0.0f), acc1(0.0f);  // two chains: each fma waits on the previous one's result
        std::size_t b = 0;
        alignas(64) std::int8_t q[block_elems];
        for (; b + 2 <= n_blocks; b += 2, x += 2 * block_elems) {
            unpack(w[b], q);
            acc0 = xsimd::fma(batch(core::fp16_to_f32(w[b].d)), detail::dot_i8<Arch>(q, x, block_elems), acc0);
            unpack(w[b + 1], q);
            acc1 = xsimd::fma(batch(core::fp16_to_f32(w[b + 1].d)), detail::dot_i8<Arch>(q, x + block_elems, block_elems), acc1);
        }
        if (b < n_blocks) {
            unpack(w[b], q);
            acc0 = xsimd::fma(batch(core::fp16_to_f32(w[b].d)), detail::dot_i8<Arch>(q, x, block_elems), acc0);
        }
        return xsimd::hadd(acc0 + acc1);
    }
};
static_assert(quant_policy<iq4_nl>);

}  // namespace lmtk::quant
