#pragma once
// Q8_K (GGUF id 15): 256 int8 quants with one fp32 scale, plus the sums of each 16 quants.
// ggml uses it for activations inside K-quant dot products, not for weights in model files;
// it is here so that files and tools that carry it can be read and produced.
// w[j] = d * qs[j]; bsums[i] = sum of qs[16i .. 16i + 15].
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include <xsimd/xsimd.hpp>

#include <lmtk/quant/block_common.hpp>
#include <lmtk/quant/ggml_type.hpp>
#include <lmtk/quant/policy.hpp>

namespace lmtk::quant {

struct q8_k {
    static constexpr ggml_type type_id = ggml_type::q8_k;
    static constexpr std::size_t block_elems = 256;
    struct block {
        float d;  // scale, fp32 (not fp16, unlike every other block format)
        std::int8_t qs[block_elems];
        std::int16_t bsums[block_elems / 16];
    };
    static_assert(sizeof(block) == sizeof(float) + block_elems + block_elems / 16 * sizeof(std::int16_t), "q8_k: padding");
    static_assert(std::is_trivially_copyable_v<block>);

    // Reference decoder, the executable spec: bsums do not enter it.
    static void dequantize_row(const block* w, float* y, std::size_t n_blocks) noexcept {
        for (std::size_t b = 0; b < n_blocks; ++b)
            for (std::size_t j = 0; j < block_elems; ++j) *y++ = w[b].d * static_cast<float>(w[b].qs[j]);
    }

    // Reference quantizer (x finite): d = amax / 127, q = round(x / d); bsums filled in.
    static void quantize_row(const float* x, block* out, std::size_t n_blocks) noexcept {
        for (std::size_t b = 0; b < n_blocks; ++b, x += block_elems) {
            float amax = 0.0f;
            for (std::size_t j = 0; j < block_elems; ++j) amax = std::max(amax, std::fabs(x[j]));
            const float d = amax / 127.0f;
            const float inv_d = detail::safe_inverse(d);
            out[b].d = d;
            for (std::size_t j = 0; j < block_elems; ++j)
                out[b].qs[j] = static_cast<std::int8_t>(std::clamp(detail::round_int(x[j] * inv_d), -127, 127));
            for (std::size_t i = 0; i < block_elems / 16; ++i) {
                int s = 0;
                for (std::size_t j = 0; j < 16; ++j) s += out[b].qs[16 * i + j];
                out[b].bsums[i] = static_cast<std::int16_t>(s);
            }
        }
    }

    template <class Arch>
    static float dot(Arch, const block* w, const float* x, std::size_t n_blocks) noexcept {
        using batch = xsimd::batch<float, Arch>;
        static_assert(detail::whole_batches<Arch>(block_elems), "q8_k: a block must be whole batches");
        batch acc(0.0f);
        for (std::size_t b = 0; b < n_blocks; ++b, x += block_elems)
            acc = xsimd::fma(batch(w[b].d), detail::dot_i8<Arch>(w[b].qs, x, block_elems), acc);
        return xsimd::hadd(acc);
    }
};
static_assert(quant_policy<q8_k>);

}  // namespace lmtk::quant
