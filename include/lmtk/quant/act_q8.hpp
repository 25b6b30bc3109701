#pragma once
// Activations quantized to int8 in blocks of 32 ("Q8 blocks of x"): the second operand of the
// integer matmul kernels of the quantized weight formats. llama.cpp does the same (its Q8_0 and
// Q4_0 dot products multiply against q8_0 activations), so int8 activations cost no more
// accuracy than the reference runtime accepts. F32/F16/BF16 weights never take this path:
// their results are checked against a float reference at 1e-4, which int8 x would not meet.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>

namespace lmtk::quant {

// Which activations a weight's fast matmul wants; the forward pass prepares each kind once per
// input and shares it between the projections that read the same input.
enum class activation_kind : std::uint8_t { f32, q8 };

struct act_q8 {
    static constexpr std::size_t block_elems = 32;
    static constexpr std::size_t align = 64;  // one cache line; every part below starts on one

    // One row of `cols` values (cols % 32 == 0), nb = cols / 32 blocks:
    //   int8_t  qs[cols]   quants: x[j] ~= d[j / 32] * qs[j]
    //   float   d[nb]      block scales
    //   float   ds[nb]     d * sum(qs) of each block: weights stored as unsigned quants u = q + z
    //                      need sum(u * x) - z * sum(x), and this is the second term's factor
    //   int32_t sum[nb]    sum(qs): the same correction for kernels that apply it in integers
    // The quants come first and contiguous so that a kernel loads 64 of them with one load.
    struct row {
        const std::int8_t* qs;
        const float* d;
        const float* ds;
        const std::int32_t* sum;
    };

    static constexpr std::size_t round_up(std::size_t n) noexcept { return (n + align - 1) / align * align; }
    static constexpr std::size_t row_bytes(std::size_t cols) noexcept {
        return round_up(cols) + 3 * round_up(cols / block_elems * 4);
    }

    static row view(const std::byte* p, std::size_t cols) noexcept {
        const std::size_t part = round_up(cols / block_elems * 4);
        const std::byte* scales = p + round_up(cols);
        return row{reinterpret_cast<const std::int8_t*>(p), reinterpret_cast<const float*>(scales),
                   reinterpret_cast<const float*>(scales + part), reinterpret_cast<const std::int32_t*>(scales + 2 * part)};
    }

    // d = amax / 127 and q = round(x / d) per block of 32, as ggml's quantize_row_q8_0 (but the
    // scale stays a float: it never goes to disk). Written as plain loops over fixed-size
    // blocks, which GCC and Clang vectorise.
    static void quantize_row(const float* x, std::byte* out, std::size_t cols) noexcept {
        const std::size_t nb = cols / block_elems, part = round_up(nb * 4);
        auto* qs = reinterpret_cast<std::int8_t*>(out);
        auto* d = reinterpret_cast<float*>(out + round_up(cols));
        auto* ds = reinterpret_cast<float*>(out + round_up(cols) + part);
        auto* sum = reinterpret_cast<std::int32_t*>(out + round_up(cols) + 2 * part);
        for (std::size_t b = 0; b < nb; ++b, x += block_elems, qs += block_elems) {
            float amax = 0.0f;
            for (std::size_t j = 0; j < block_elems; ++j) amax = std::max(amax, std::fabs(x[j]));
            const float scale = amax / 127.0f;
            const float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
            std::int32_t s = 0;
            for (std::size_t j = 0; j < block_elems; ++j) {
                const auto q = static_cast<std::int32_t>(std::nearbyint(x[j] * inv));  // |q| <= 127
                qs[j] = static_cast<std::int8_t>(q);
                s += q;
            }
            d[b] = scale;
            ds[b] = scale * static_cast<float>(s);
            sum[b] = s;
        }
    }
};

}  // namespace lmtk::quant
