// resolve(): every compiled format is found with the geometry of the GGUF table; formats that
// are not compiled in are nullopt; the matmul kernel is the per-row dot over any row range and
// token count, writing nothing outside it.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstddef>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <xsimd/xsimd.hpp>

#include <lmtk/quant/quant.hpp>
#include <lmtk/target/cpu.hpp>

#include "quant/random_blocks.hpp"
#include "support/models.hpp"

using namespace lmtk::quant;
using arch = lmtk::target::cpu<>::arch;

TEMPLATE_TEST_CASE("resolve finds every format of default_set", "[quant][dispatch]", f32, f16, bf16, q8_0, q4_0) {
    const auto ops = resolve<default_set, arch>(TestType::type_id);
    REQUIRE(ops);
    CHECK(ops->type == TestType::type_id);
    CHECK(ops->block_elems == traits_of(TestType::type_id).block_elems);
    CHECK(ops->block_bytes == traits_of(TestType::type_id).block_bytes);
    CHECK(ops->dequantize_row != nullptr);
    CHECK(ops->matmul != nullptr);
    STATIC_REQUIRE(default_set::contains(TestType::type_id));
}

TEST_CASE("resolve is nullopt for formats not compiled in", "[quant][dispatch]") {
    for (ggml_type t : {ggml_type::q8_k, ggml_type::q8_1, ggml_type::iq4_xs, ggml_type::iq2_xxs, ggml_type::f64,
                        ggml_type::i32})
        CHECK_FALSE(resolve<default_set, arch>(t));
    // A narrower set knows only its own formats.
    using only_q8 = set<q8_0>;
    CHECK(resolve<only_q8, arch>(ggml_type::q8_0));
    CHECK_FALSE(resolve<only_q8, arch>(ggml_type::f32));
    CHECK_FALSE(resolve<set<>, arch>(ggml_type::f32));
}

TEST_CASE("target::cpu names its arch", "[quant][dispatch]") {
    CHECK(std::string(lmtk::target::cpu<>::name()) == xsimd::default_arch::name());
}

TEMPLATE_TEST_CASE("matmul equals the per-row dot", "[quant][dispatch]", f32, f16, bf16, q8_0, q4_0) {
    using P = TestType;
    std::mt19937 g(2024);
    const auto ops = resolve<default_set, arch>(P::type_id);
    REQUIRE(ops);
    // Small rows keep the whole range inside one row tile; 4096-element F32/F16 rows make tiles
    // of a few rows, so an odd range crosses tile boundaries.
    for (std::size_t cols : {std::size_t{96}, std::size_t{4096}}) {
        const std::size_t rows = 41, n_blocks = cols / P::block_elems;
        const auto w = lmtk::test::random_blocks<P>(rows * n_blocks, g);
        const std::size_t x_stride = cols + 5;  // padded activations
        const std::size_t y_stride = rows + 3;  // padded outputs
        for (std::size_t n_tok : {std::size_t{1}, std::size_t{5}}) {
            for (auto [r0, r1] : {std::pair<std::size_t, std::size_t>{0, rows}, {3, 37}, {7, 8}, {40, 41}, {9, 9}}) {
                INFO("cols " << cols << ", n_tok " << n_tok << ", rows [" << r0 << ", " << r1 << ")");
                const auto x = lmtk::test::random_floats(n_tok * x_stride, g);
                constexpr float untouched = -12345.0f;
                std::vector<float> y(n_tok * y_stride, untouched);
                ops->matmul(reinterpret_cast<const std::byte*>(w.data()), cols, r0, r1, x.data(), x_stride, n_tok,
                            y.data(), y_stride);
                for (std::size_t t = 0; t < n_tok; ++t) {
                    for (std::size_t r = 0; r < y_stride; ++r) {
                        const float got = y[t * y_stride + r];
                        if (r < r0 || r >= r1) {
                            CHECK(got == untouched);
                        } else {
                            const float* xt = x.data() + t * x_stride;
                            const float expect = P::dot(arch{}, w.data() + r * n_blocks, xt, n_blocks);
                            if (n_tok == 1) {
                                CHECK(got == expect);  // decode calls P::dot itself: bit-identical
                            } else {
                                // Prefill decodes the row to floats, then an F32 dot: the same
                                // products summed in another order (Q8_0/Q4_0 scale each term
                                // instead of each block sum), so the dot test's tolerance.
                                std::vector<float> row(cols);
                                P::dequantize_row(w.data() + r * n_blocks, row.data(), n_blocks);
                                double magnitude = 0.0;
                                for (std::size_t i = 0; i < cols; ++i) magnitude += std::fabs(double(row[i]) * xt[i]);
                                CHECK(std::fabs(got - expect) <= 1e-5 * magnitude + 1e-30);
                            }
                        }
                    }
                }
            }
        }
    }
}
