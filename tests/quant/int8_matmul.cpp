// The int8-activation path: act_q8 quantizes within half a step, and every format's matmul_act
// (the AVX-512 VNNI and AVX2 kernels, at every kernel level this CPU runs) matches the scalar reference over any row range,
// token count and row length, including an odd number of blocks, and writes nothing outside.
// The interleaved layouts (16 rows side by side, repacked at load) hold exactly the values of
// the rows they were made from, and their kernels match the same reference.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstddef>
#include <random>
#include <utility>
#include <vector>

#include <lmtk/quant/cpu_kernels.hpp>
#include <lmtk/quant/quant.hpp>

using namespace lmtk::quant;

namespace {

// Runs f(ops) for the format's kernels at every level compiled into lmtk::cpu_kernels that this
// CPU runs (an AVX-512 machine tests the AVX2 and SSE4.2 kernels too). f returns false where the
// level has no kernels of the kind tested.
template <class F>
void at_every_level(ggml_type type, F&& f) {
    int tested = 0;
    for (const kernel_table* k : runnable_kernel_tables()) {
        const auto ops = k->resolve(type);
        REQUIRE(ops);
        INFO("kernel level " << lmtk::target::isa_name(k->isa));
        tested += f(*ops) ? 1 : 0;
    }
    if (!tested) WARN("no level of this build has such kernels for " << type_name(type) << " on this CPU");
}

std::vector<float> random_floats(std::size_t n, std::mt19937& g, float scale = 1.0f) {
    std::normal_distribution<float> u(0.0f, scale);
    std::vector<float> x(n);
    for (float& v : x) v = u(g);
    return x;
}

// Checks y (n_tok x rows, written for rows r0 .. r1 only; -7 elsewhere) against the int8
// reference of each row of w and token of x, prepared as xa: within 1e-5 of the sum of |terms|
// (float rounding of the kernels' sums), and within 2e-2 of it from the float dot (what int8
// activations cost).
template <class P>
void check_int8_rows(const typename P::block* w, std::size_t cols, std::size_t rows, const std::vector<float>& x,
                     const std::byte* xa, std::size_t stride, std::size_t n_tok, const std::vector<float>& y,
                     std::size_t r0, std::size_t r1) {
    const std::size_t nb = cols / P::block_elems;
    std::vector<float> deq(cols);
    for (std::size_t t = 0; t < n_tok; ++t) {
        const auto xr = act_q8::view(xa + t * stride, cols);
        for (std::size_t r = 0; r < rows; ++r) {
            const float got = y[t * rows + r];
            if (r < r0 || r >= r1) {
                CHECK(got == -7.0f);
                continue;
            }
            const float want = vnni::reference_dot<P>(w + r * nb, xr, nb);
            P::dequantize_row(w + r * nb, deq.data(), nb);
            double mag = 0.0, exact = 0.0;
            for (std::size_t j = 0; j < cols; ++j) {
                mag += std::fabs(deq[j] * x[t * cols + j]);
                exact += double(deq[j]) * x[t * cols + j];
            }
            INFO("cols " << cols << " n_tok " << n_tok << " rows " << r0 << ".." << r1 << " row " << r << " token " << t);
            CHECK(std::fabs(got - want) <= 1e-5 * mag + 1e-6);
            CHECK(std::fabs(got - exact) <= 2e-2 * mag);
        }
    }
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
    at_every_level(TestType::type_id, [](const weight_ops& level_ops) {
        const weight_ops* ops = &level_ops;
        if (!ops->matmul_act) return false;
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
                check_int8_rows<TestType>(w.data(), cols, rows, x, xa.data(), stride, n_tok, y, r0, r1);
            }
        }
        return true;
    });
}

TEMPLATE_TEST_CASE("interleaved layouts keep every row's values exactly", "[quant][interleaved]", q8_0, q4_0, q4_k,
                   q6_k, f16) {
    at_every_level(TestType::type_id, [](const weight_ops& level_ops) {
        const weight_ops* ops = &level_ops;
        if (!ops->interleaved) return false;
        std::mt19937 g(23);
        // 37 rows: two whole groups of 16 and a last one with 5 real rows and 11 of padding.
        const std::size_t rows = 37, cols = 512, nb = cols / TestType::block_elems;
        const auto wf = random_floats(rows * cols, g, 0.05f);
        std::vector<typename TestType::block> w(rows * nb);
        TestType::quantize_row(wf.data(), w.data(), w.size());
        const auto* src = reinterpret_cast<const std::byte*>(w.data());
        std::vector<std::byte> packed(ops->interleaved_bytes(rows, cols) + 64);
        std::byte* p = packed.data() + (64 - reinterpret_cast<std::uintptr_t>(packed.data()) % 64) % 64;
        CHECK(ops->interleaved_bytes(rows, cols) % 64 == 0);
        CHECK(ops->interleaved_bytes(rows, cols) >= rows * nb * sizeof(typename TestType::block));
        for (std::size_t gi = 0; gi < 3; ++gi) ops->interleave_group(src, rows, cols, gi, p);
        const weight_ops& il = *ops->interleaved;
        CHECK(il.row_group == 16);
        std::vector<float> want(cols), got(cols);
        for (std::size_t r = 0; r < rows; ++r) {
            TestType::dequantize_row(w.data() + r * nb, want.data(), nb);
            il.dequantize_row_at(p, cols, r, got.data());
            INFO("row " << r);
            CHECK(std::equal(want.begin(), want.end(), got.begin()));
        }
        // The padding rows have zero scales: they decode to zeros.
        il.dequantize_row_at(p, cols, rows, got.data());
        CHECK(std::all_of(got.begin(), got.end(), [](float v) { return v == 0.0f; }));
        return true;
    });
}

TEMPLATE_TEST_CASE("interleaved matmul_act matches the int8 reference", "[quant][interleaved]", q8_0, q4_0, q4_k, q6_k) {
    at_every_level(TestType::type_id, [](const weight_ops& level_ops) {
        const weight_ops* ops = &level_ops;
        if (!ops->interleaved) return false;
        const weight_ops& il = *ops->interleaved;
        std::mt19937 g(29);
        // 85 rows = 6 groups, the last with 5 real rows.
        const std::size_t rows = 85, cols = 768, nb = cols / TestType::block_elems;
        const auto wf = random_floats(rows * cols, g, 0.05f);
        std::vector<typename TestType::block> w(rows * nb);
        TestType::quantize_row(wf.data(), w.data(), w.size());
        std::vector<std::byte> packed(ops->interleaved_bytes(rows, cols) + 64);
        std::byte* p = packed.data() + (64 - reinterpret_cast<std::uintptr_t>(packed.data()) % 64) % 64;
        for (std::size_t gi = 0; gi < 6; ++gi) ops->interleave_group(reinterpret_cast<const std::byte*>(w.data()), rows, cols, gi, p);
        for (const std::size_t n_tok : {std::size_t{1}, std::size_t{3}, std::size_t{4}, std::size_t{9}}) {
            const auto x = random_floats(n_tok * cols, g);
            const std::size_t stride = il.act_row_bytes(cols);
            std::vector<std::byte> xa(n_tok * stride + 64);
            for (std::size_t t = 0; t < n_tok; ++t) il.prepare_row(x.data() + t * cols, xa.data() + t * stride, cols);
            // Row ranges as threads get them: from a group boundary to one, or to the last row.
            for (const auto& [r0, r1] : {std::pair<std::size_t, std::size_t>{0, 16}, {16, 85}, {0, 85}, {32, 80}, {64, 85}}) {
                std::vector<float> y(n_tok * rows, -7.0f);
                il.matmul_act(p, cols, r0, r1, xa.data(), stride, n_tok, y.data(), rows);
                check_int8_rows<TestType>(w.data(), cols, rows, x, xa.data(), stride, n_tok, y, r0, r1);
            }
        }
        return true;
    });
}

TEST_CASE("interleaved F16 matmul matches a double-precision dot", "[quant][interleaved]") {
    at_every_level(f16::type_id, [](const weight_ops& level_ops) {
        const weight_ops* ops = &level_ops;
        if (!ops->interleaved) return false;
        const weight_ops& il = *ops->interleaved;
        CHECK(il.act == activation_kind::f32);
        std::mt19937 g(31);
        const std::size_t rows = 85, cols = 200;  // 6 groups, the last with 5 real rows; any width
        const auto wf = random_floats(rows * cols, g, 0.05f);
        std::vector<f16::block> w(rows * cols);
        f16::quantize_row(wf.data(), w.data(), w.size());
        std::vector<std::byte> packed(ops->interleaved_bytes(rows, cols) + 64);
        std::byte* p = packed.data() + (64 - reinterpret_cast<std::uintptr_t>(packed.data()) % 64) % 64;
        for (std::size_t gi = 0; gi < 6; ++gi) ops->interleave_group(reinterpret_cast<const std::byte*>(w.data()), rows, cols, gi, p);
        // 1 and 3 tokens: decode; 4, 13 and 29: prefill in blocks of 12, 4 and 1 tokens.
        for (const std::size_t n_tok : {std::size_t{1}, std::size_t{3}, std::size_t{4}, std::size_t{13}, std::size_t{29}}) {
            const auto x = random_floats(n_tok * cols, g);
            for (const auto& [r0, r1] : {std::pair<std::size_t, std::size_t>{0, 16}, {16, 85}, {0, 85}, {32, 80}}) {
                std::vector<float> y(n_tok * rows, -7.0f);
                il.matmul(p, cols, r0, r1, x.data(), cols, n_tok, y.data(), rows);
                for (std::size_t t = 0; t < n_tok; ++t)
                    for (std::size_t r = 0; r < rows; ++r) {
                        const float got = y[t * rows + r];
                        if (r < r0 || r >= r1) {
                            CHECK(got == -7.0f);
                            continue;
                        }
                        double want = 0.0, mag = 0.0;
                        for (std::size_t k = 0; k < cols; ++k) {
                            const double term = double(lmtk::core::fp16_to_f32(w[r * cols + k].bits)) * x[t * cols + k];
                            want += term;
                            mag += std::fabs(term);
                        }
                        INFO("n_tok " << n_tok << " rows " << r0 << ".." << r1 << " row " << r << " token " << t);
                        // Float rounding: at most ~53 additions in a chain (4 chains over 200 columns,
                        // then their sum), each off by 2^-24 of the running magnitude.
                        CHECK(std::fabs(got - want) <= 4e-6 * mag + 1e-7);
                    }
            }
        }
        return true;
    });
}
