// The kernels of every instruction-set level compiled into lmtk::cpu_kernels that this CPU runs
// (quant/cpu_kernels.hpp), checked against the formats' scalar reference decoders: the float
// matmul (decode, and prefill's row tiles) of every GGUF format, and the choice of a level
// (CPUID, LMTK_CPU, load_options::cpu). The int8 and interleaved kernels of each level are
// checked in int8_matmul.cpp, the AWQ/GPTQ layouts in group_formats.cpp.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include <lmtk/core/error.hpp>
#include <lmtk/quant/cpu_kernels.hpp>
#include <lmtk/quant/quant.hpp>

#include "quant/random_blocks.hpp"

using namespace lmtk::quant;
namespace target = lmtk::target;

TEST_CASE("the kernel levels of this build, and the ones this CPU runs", "[quant][levels][list]") {
    const auto compiled = compiled_kernel_tables();
    REQUIRE(!compiled.empty());
    std::string names, ran;
    for (std::size_t i = 0; i < compiled.size(); ++i) {
        if (i) CHECK(compiled[i - 1]->isa < compiled[i]->isa);  // lowest first, each once
        names += std::string(i ? ", " : "") + std::string(target::isa_name(compiled[i]->isa));
    }
    for (const kernel_table* k : runnable_kernel_tables()) ran += std::string(ran.empty() ? "" : ", ") + std::string(target::isa_name(k->isa));
    // The one line CI shows of which paths the tests exercised (scripts/test prints it).
    std::printf("lmtk kernel levels: compiled %s; this CPU (%s) runs and tests %s\n", names.c_str(),
                std::string(target::isa_name(target::host_isa())).c_str(), ran.c_str());
#if defined(__x86_64__)
    // The portable x86 build carries the floor and both SIMD levels.
    CHECK(compiled.front()->isa == target::isa::sse4_2);
    CHECK(compiled.back()->isa == target::isa::avx512_vnni);
    CHECK(target::host_isa() >= target::isa::sse4_2);
#elif defined(__aarch64__)
    // AArch64: the Armv8-A floor and the SDOT level (qemu-aarch64's default CPU has SDOT).
    CHECK(compiled.front()->isa == target::isa::generic);
    CHECK(compiled.back()->isa == target::isa::neon_dotprod);
#endif
    CHECK(!runnable_kernel_tables().empty());
}

TEST_CASE("choose_kernels: the highest level by default, a named one on request, errors otherwise", "[quant][levels]") {
    const char* saved = std::getenv("LMTK_CPU");
    const std::string saved_value = saved ? saved : "";
    ::unsetenv("LMTK_CPU");
    const auto runnable = runnable_kernel_tables();
    CHECK(&choose_kernels() == runnable.back());
    for (const kernel_table* k : runnable) {
        CHECK(&choose_kernels(target::isa_name(k->isa)) == k);
        ::setenv("LMTK_CPU", std::string(target::isa_name(k->isa)).c_str(), 1);
        CHECK(&choose_kernels() == k);
        ::unsetenv("LMTK_CPU");
    }
    CHECK_THROWS_WITH(choose_kernels("pentium"), Catch::Contains("is not a kernel level of this build"));
    for (const kernel_table* k : compiled_kernel_tables())
        if (k->isa > target::host_isa())
            CHECK_THROWS_WITH(choose_kernels(target::isa_name(k->isa)), Catch::Contains("this CPU runs at most"));
    CHECK(target::parse_isa("avx512") == target::isa::avx512_vnni);
    CHECK(target::parse_isa("sse4.2") == target::isa::sse4_2);
    CHECK(target::parse_isa("dotprod") == target::isa::neon_dotprod);
    CHECK_FALSE(target::parse_isa("avx"));
    if (saved) ::setenv("LMTK_CPU", saved_value.c_str(), 1);
}

// y = W x for rows 2 .. 10 of 13 and 1 or 5 tokens at every level, against double-precision dots
// of the reference decoder's rows: within 1e-5 of sum |w x| (float sums in another order; see
// conformance.cpp), and rows outside the range untouched.
TEMPLATE_TEST_CASE("every level's float matmul matches the reference decoder", "[quant][levels]", f32, f16, bf16, q8_0,
                   q4_0, q4_1, q5_0, q5_1, q2_k, q3_k, q4_k, q5_k, q6_k, iq4_nl) {
    using P = TestType;
    std::mt19937 g(123);
    // An odd number of blocks (tails of pair loops) for the 32-element formats.
    const std::size_t cols = P::block_elems == 256 ? 768 : (P::block_elems == 1 ? 200 : 288);
    const std::size_t rows = 13, nb = cols / P::block_elems;
    const auto w = lmtk::test::random_blocks<P>(rows * nb, g);
    std::vector<double> deq_rows(rows * cols);
    {
        std::vector<float> row(cols);
        for (std::size_t r = 0; r < rows; ++r) {
            P::dequantize_row(w.data() + r * nb, row.data(), nb);
            for (std::size_t j = 0; j < cols; ++j) deq_rows[r * cols + j] = row[j];
        }
    }
    for (const kernel_table* k : runnable_kernel_tables()) {
        const auto ops = k->resolve(P::type_id);
        REQUIRE(ops);
        INFO("kernel level " << target::isa_name(k->isa));
        std::vector<float> a(cols), b(cols, -1.0f);
        P::dequantize_row(w.data() + 4 * nb, a.data(), nb);
        ops->dequantize_row(reinterpret_cast<const std::byte*>(w.data() + 4 * nb), b.data(), cols);
        CHECK(a == b);
        for (const std::size_t n_tok : {std::size_t{1}, std::size_t{5}}) {
            const auto x = lmtk::test::random_floats(n_tok * cols, g);
            std::vector<float> y(n_tok * rows, -7.0f);
            ops->matmul(reinterpret_cast<const std::byte*>(w.data()), cols, 2, 11, x.data(), cols, n_tok, y.data(), rows);
            for (std::size_t t = 0; t < n_tok; ++t)
                for (std::size_t r = 0; r < rows; ++r) {
                    INFO("n_tok " << n_tok << " token " << t << " row " << r);
                    if (r < 2 || r >= 11) {
                        CHECK(y[t * rows + r] == -7.0f);
                        continue;
                    }
                    double want = 0.0, mag = 0.0;
                    for (std::size_t j = 0; j < cols; ++j) {
                        const double term = deq_rows[r * cols + j] * x[t * cols + j];
                        want += term;
                        mag += std::fabs(term);
                    }
                    CHECK(std::fabs(y[t * rows + r] - want) <= 1e-5 * mag + 1e-30);
                }
        }
    }
}
