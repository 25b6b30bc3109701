// The int8-activation path: act_q8 quantizes within half a step, and every format's matmul_act
// (the AVX-512 VNNI kernels where compiled in) matches the scalar reference over any row range,
// token count and row length, including an odd number of blocks, and writes nothing outside.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstddef>
#include <random>
#include <vector>

#include <lmtk/quant/quant.hpp>
#include <lmtk/target/cpu.hpp>

using namespace lmtk::quant;
using arch = lmtk::target::cpu<>::arch;

namespace {

std::vector<float> random_floats(std::size_t n, std::mt19937& g, float scale = 1.0f) {
    std::normal_distribution<float> u(0.0f, scale);
    std::vector<float> x(n);
    for (float& v : x) v = u(g);
    return x;
}

}  // namespace

TEST_CASE("act_q8 rounds every value to within half a step and records block sums", "[quant][int8]") {
    std::mt19937 g(5);
    const std::size_t cols = 96;
    auto x = random_floats(cols, g);
    x[40] = 0.0f;
    std::fill(x.begin() + 64, x.end(), 0.0f);  // an all-zero block: scale 0, quants 0
    std::vector<std::byte> row(act_q8::row_bytes(cols));
    act_q8::quantize_row(x.data(), row.data(), cols);
    const auto r = act_q8::view(row.data(), cols);
    for (std::size_t b = 0; b < cols / 32; ++b) {
        int sum = 0;
        for (std::size_t j = 0; j < 32; ++j) {
            const std::size_t i = b * 32 + j;
            CHECK(std::fabs(r.d[b] * r.qs[i] - x[i]) <= 0.5f * r.d[b] * 1.0001f);
            sum += r.qs[i];
        }
        CHECK(r.sum[b] == sum);
        CHECK(r.ds[b] == Approx(r.d[b] * float(sum)).margin(1e-6));
    }
    CHECK(r.d[2] == 0.0f);
}

TEMPLATE_TEST_CASE("matmul_act matches the int8 reference", "[quant][int8]", q8_0, q4_0, q4_k, q6_k) {
    const auto ops = resolve<default_set, arch>(TestType::type_id);
    REQUIRE(ops);
    if (!ops->matmul_act) {
        WARN("no int8 kernels for this format on this target; the float path is used");
        return;
    }
    CHECK(ops->act == activation_kind::q8);
    std::mt19937 g(11);
    // 288 = an odd number of 32-blocks (the kernels' pair loop has a tail); K-quant rows are
    // whole 256-element super-blocks.
    const std::size_t odd = TestType::block_elems == 32 ? 288 : 768;
    for (const std::size_t cols : {odd, std::size_t{1024}}) {
        const std::size_t rows = 13, nb = cols / TestType::block_elems;
        const auto wf = random_floats(rows * cols, g, 0.05f);
        std::vector<typename TestType::block> w(rows * nb);
        TestType::quantize_row(wf.data(), w.data(), w.size());
        for (const std::size_t n_tok : {std::size_t{1}, std::size_t{4}, std::size_t{7}, std::size_t{8}, std::size_t{13}}) {
            const auto x = random_floats(n_tok * cols, g);
            const std::size_t stride = ops->act_row_bytes(cols);
            std::vector<std::byte> xa(n_tok * stride);
            for (std::size_t t = 0; t < n_tok; ++t) ops->prepare_row(x.data() + t * cols, xa.data() + t * stride, cols);
            const std::size_t r0 = 1, r1 = rows - 1;  // 11 rows: two 4-row tiles and 3 single rows
            std::vector<float> y(n_tok * rows, -7.0f);
            ops->matmul_act(reinterpret_cast<const std::byte*>(w.data()), cols, r0, r1, xa.data(), stride, n_tok, y.data(),
                            rows);
            for (std::size_t t = 0; t < n_tok; ++t) {
                const auto xr = act_q8::view(xa.data() + t * stride, cols);
                for (std::size_t r = 0; r < rows; ++r) {
                    const float got = y[t * rows + r];
                    if (r < r0 || r >= r1) {
                        CHECK(got == -7.0f);
                        continue;
                    }
                    const float want = vnni::reference_dot<TestType>(w.data() + r * nb, xr, nb);
                    // Scale of the rounding: the sum of |terms|.
                    std::vector<float> deq(cols);
                    TestType::dequantize_row(w.data() + r * nb, deq.data(), nb);
                    double mag = 0.0;
                    for (std::size_t j = 0; j < cols; ++j) mag += std::fabs(deq[j] * x[t * cols + j]);
                    INFO("cols " << cols << " n_tok " << n_tok << " row " << r << " token " << t);
                    CHECK(std::fabs(got - want) <= 1e-5 * mag + 1e-6);
                    // And the int8 activations stay close to the float path.
                    double exact = 0.0;
                    for (std::size_t j = 0; j < cols; ++j) exact += double(deq[j]) * x[t * cols + j];
                    CHECK(std::fabs(got - exact) <= 2e-2 * mag);
                }
            }
        }
    }
}
