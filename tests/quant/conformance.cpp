// Every format, one contract: the SIMD dot agrees with the scalar reference decoder on every
// xsimd architecture this test binary is compiled for, and the reference quantizers meet
// their error bounds.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstddef>
#include <random>
#include <vector>

#include <xsimd/xsimd.hpp>

#include <lmtk/core/fp16.hpp>
#include <lmtk/quant/quant.hpp>

#include "quant/random_blocks.hpp"
#include "support/models.hpp"

using namespace lmtk::quant;

namespace {

struct reference_dot {
    double value = 0.0;      // sum w*x in double: exact enough to be the truth here
    double magnitude = 0.0;  // sum |w*x|: the scale of the float rounding error
};

template <class P>
reference_dot scalar_dot(const std::vector<typename P::block>& w, const std::vector<float>& x) {
    std::vector<float> y(x.size());
    P::dequantize_row(w.data(), y.data(), w.size());
    reference_dot r;
    for (std::size_t i = 0; i < y.size(); ++i) {
        r.value += static_cast<double>(y[i]) * x[i];
        r.magnitude += std::fabs(static_cast<double>(y[i]) * x[i]);
    }
    return r;
}

}  // namespace

TEMPLATE_TEST_CASE("dot<Arch> matches the scalar dequantize + inner product", "[quant][dot]", f32, f16, bf16,
                   q8_0, q4_0) {
    using P = TestType;
    std::mt19937 g(1234);
    // Block counts cover: less than one batch, the scalar tails of the element formats
    // (odd counts), the odd block of the two-accumulator block loop, and a decode-sized row.
    for (std::size_t n_blocks : std::vector<std::size_t>{1, 2, 3, 7, 31, 33, 64, 129, 4099 / P::block_elems + 1}) {
        const auto w = lmtk::test::random_blocks<P>(n_blocks, g);
        const auto x = lmtk::test::random_floats(n_blocks * P::block_elems, g);
        const reference_dot expect = scalar_dot<P>(w, x);
        xsimd::supported_architectures::for_each([&](auto arch) {
            INFO("arch " << decltype(arch)::name() << ", blocks " << n_blocks);
            const float got = P::dot(arch, w.data(), x.data(), n_blocks);
            // The kernel sums in float in a different order (lanes, several accumulators, per-
            // block partial sums) than the double reference, so only rounding error separates
            // them: a few float ulps of sum|w*x| per partial sum. 1e-5 relative to sum|w*x| is
            // ~100 ulps, generous for that yet far below any indexing or decoding bug (which
            // moves the result by a whole term, ~1/n of the magnitude at least).
            CHECK(std::fabs(got - expect.value) <= 1e-5 * expect.magnitude + 1e-30);
        });
    }
}

TEMPLATE_TEST_CASE("dot of zero blocks is zero", "[quant][dot]", f32, f16, bf16, q8_0, q4_0) {
    CHECK(TestType::dot(xsimd::default_arch{}, nullptr, nullptr, 0) == 0.0f);
}

TEMPLATE_TEST_CASE("weight_ops::dequantize_row is the reference decoder", "[quant][dispatch]", f32, f16, bf16,
                   q8_0, q4_0) {
    using P = TestType;
    std::mt19937 g(99);
    const auto w = lmtk::test::random_blocks<P>(40, g);
    const auto ops = resolve<default_set, xsimd::default_arch>(P::type_id);
    REQUIRE(ops);
    std::vector<float> a(40 * P::block_elems), b(a.size(), -1.0f);
    P::dequantize_row(w.data(), a.data(), w.size());
    ops->dequantize_row(reinterpret_cast<const std::byte*>(w.data()), b.data(), a.size());
    CHECK(a == b);
}

TEMPLATE_TEST_CASE("element formats round-trip to nearest", "[quant][quantize]", f32, f16, bf16) {
    using P = TestType;
    std::mt19937 g(7);
    const auto x = lmtk::test::random_floats(1000, g, 100.0f);
    std::vector<typename P::block> w(x.size());
    std::vector<float> y(x.size());
    P::quantize_row(x.data(), w.data(), w.size());
    P::dequantize_row(w.data(), y.data(), w.size());
    // Round to nearest: the error is at most half a unit in the last place of the format
    // (2^-11 relative for binary16's 11-bit significand, 2^-8 for bfloat16's 8 bits).
    const double rel = P::type_id == ggml_type::f32 ? 0.0 : P::type_id == ggml_type::f16 ? 0x1p-11 : 0x1p-8;
    for (std::size_t i = 0; i < x.size(); ++i) CHECK(std::fabs(x[i] - y[i]) <= rel * std::fabs(x[i]));
}

TEST_CASE("q8_0 quantize -> dequantize error is at most d/2 per element", "[quant][quantize]") {
    std::mt19937 g(11);
    constexpr std::size_t n_blocks = 500;
    std::vector<float> x;
    std::uniform_real_distribution<float> mag(1e-3f, 1e3f);
    for (std::size_t b = 0; b < n_blocks; ++b) {
        const auto part = lmtk::test::random_floats(q8_0::block_elems, g, mag(g));
        x.insert(x.end(), part.begin(), part.end());
    }
    std::vector<q8_0::block> w(n_blocks);
    std::vector<float> y(x.size());
    q8_0::quantize_row(x.data(), w.data(), n_blocks);
    q8_0::dequantize_row(w.data(), y.data(), n_blocks);
    for (std::size_t b = 0; b < n_blocks; ++b) {
        const float d = lmtk::core::fp16_to_f32(w[b].d);
        float amax = 0.0f;
        for (std::size_t j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[b * 32 + j]));
        CHECK(d == Approx(amax / 127.0f).epsilon(0x1p-11));
        for (std::size_t j = 0; j < 32; ++j) {
            const std::size_t i = b * 32 + j;
            // d/2 from rounding q; storing d as fp16 moves each value by up to |q| * 2^-11 * d,
            // i.e. at most amax * 2^-11.
            CHECK(std::fabs(x[i] - y[i]) <= 0.5f * d + amax * 0x1p-11f + 1e-6f * amax);
        }
    }
}

TEST_CASE("q4_0 quantize -> dequantize error is at most d/2 except where it clamps", "[quant][quantize]") {
    std::mt19937 g(12);
    constexpr std::size_t n_blocks = 500;
    std::vector<float> x;
    std::uniform_real_distribution<float> mag(1e-3f, 1e3f);
    for (std::size_t b = 0; b < n_blocks; ++b) {
        const auto part = lmtk::test::random_floats(q4_0::block_elems, g, mag(g));
        x.insert(x.end(), part.begin(), part.end());
    }
    std::vector<q4_0::block> w(n_blocks);
    std::vector<float> y(x.size());
    q4_0::quantize_row(x.data(), w.data(), n_blocks);
    q4_0::dequantize_row(w.data(), y.data(), n_blocks);
    std::size_t clamped = 0;
    for (std::size_t b = 0; b < n_blocks; ++b) {
        const float d = std::fabs(lmtk::core::fp16_to_f32(w[b].d));
        for (std::size_t j = 0; j < 32; ++j) {
            const std::size_t i = b * 32 + j;
            const int q = j < 16 ? (w[b].qs[j] & 0xF) : (w[b].qs[j - 16] >> 4);
            // Values of the opposite sign to the extreme reach x/d = +8, one past the top
            // quant 15 (= +7): there the error grows to d.
            const float bound = (q == 15 ? 1.0f : 0.5f) * d + 8.0f * d * 0x1p-11f + 1e-6f * d;
            clamped += q == 15 && std::fabs(x[i] - y[i]) > 0.5f * d;
            CHECK(std::fabs(x[i] - y[i]) <= bound);
        }
        // The extreme value itself is exact up to the fp16 rounding of d: it maps to quant 0.
    }
    CHECK(clamped > 0);  // the random data does reach the clamped end
}
