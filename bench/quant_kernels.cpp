// Kernel throughput per format: dequantize one row, matvec at decode shape (one token), and
// matmul at prefill shapes (32 and 128 tokens). Bytes/s counts weight bytes, the memory-bound
// resource at decode; FLOP/s counts 2 * rows * cols * tokens.
#include <benchmark/benchmark.h>

#include <cstddef>
#include <random>
#include <vector>

#include <xsimd/xsimd.hpp>

#include <lmtk/quant/quant.hpp>
#include <lmtk/target/cpu.hpp>

namespace q = lmtk::quant;
using arch = lmtk::target::cpu<>::arch;

namespace {

template <class P>
std::vector<typename P::block> make_weights(std::size_t rows, std::size_t cols) {
    std::mt19937 g(42);
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    std::vector<float> x(rows * cols);
    for (float& v : x) v = u(g);
    std::vector<typename P::block> w(rows * cols / P::block_elems);
    P::quantize_row(x.data(), w.data(), w.size());
    return w;
}

std::vector<float> make_activations(std::size_t n) {
    std::mt19937 g(7);
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    std::vector<float> x(n);
    for (float& v : x) v = u(g);
    return x;
}

template <class P>
void run_matmul(benchmark::State& state, std::size_t rows, std::size_t cols, std::size_t n_tok) {
    const auto ops = q::resolve<q::default_set, arch>(P::type_id);
    if (!ops) {
        state.SkipWithError("format not in default_set");
        return;
    }
    const auto w = make_weights<P>(rows, cols);
    const auto x = make_activations(n_tok * cols);
    std::vector<float> y(n_tok * rows);
    const auto* wb = reinterpret_cast<const std::byte*>(w.data());
    for (auto _ : state) {
        ops->matmul(wb, cols, 0, rows, x.data(), cols, n_tok, y.data(), rows);
        benchmark::DoNotOptimize(y.data());
        benchmark::ClobberMemory();
    }
    const double weight_bytes = static_cast<double>(w.size() * sizeof(typename P::block));
    state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * weight_bytes));
    state.counters["FLOP/s"] = benchmark::Counter(2.0 * rows * cols * n_tok * state.iterations(),
                                                  benchmark::Counter::kIsRate, benchmark::Counter::kIs1000);
}

template <class P>
void bm_dequantize_row(benchmark::State& state) {
    const std::size_t cols = 4096;
    const auto w = make_weights<P>(1, cols);
    std::vector<float> y(cols);
    for (auto _ : state) {
        P::dequantize_row(w.data(), y.data(), w.size());
        benchmark::DoNotOptimize(y.data());
        benchmark::ClobberMemory();
    }
    state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * w.size() * sizeof(typename P::block)));
}

// Decode: one token through a 4096 x 4096 weight (larger than the caches for every format).
template <class P>
void bm_matvec(benchmark::State& state) {
    run_matmul<P>(state, 4096, 4096, 1);
}

// Prefill: state.range(0) tokens through a 1024 x 4096 weight.
template <class P>
void bm_matmul(benchmark::State& state) {
    run_matmul<P>(state, 1024, 4096, static_cast<std::size_t>(state.range(0)));
}

}  // namespace

#define LMTK_BENCH_FORMAT(P)                                                              \
    BENCHMARK_TEMPLATE(bm_dequantize_row, q::P);                                          \
    BENCHMARK_TEMPLATE(bm_matvec, q::P)->Unit(benchmark::kMicrosecond);                   \
    BENCHMARK_TEMPLATE(bm_matmul, q::P)->Arg(32)->Arg(128)->Unit(benchmark::kMillisecond)

LMTK_BENCH_FORMAT(f32);
LMTK_BENCH_FORMAT(f16);
LMTK_BENCH_FORMAT(bf16);
LMTK_BENCH_FORMAT(q8_0);
LMTK_BENCH_FORMAT(q4_0);
LMTK_BENCH_FORMAT(q4_1);
LMTK_BENCH_FORMAT(q5_0);
LMTK_BENCH_FORMAT(q5_1);
LMTK_BENCH_FORMAT(iq4_nl);
LMTK_BENCH_FORMAT(q2_k);
LMTK_BENCH_FORMAT(q3_k);
LMTK_BENCH_FORMAT(q4_k);
LMTK_BENCH_FORMAT(q5_k);
LMTK_BENCH_FORMAT(q6_k);

BENCHMARK_MAIN();
