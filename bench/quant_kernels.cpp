// Kernel throughput per format and per xsimd architecture compiled in: dequantize one row,
// matvec at decode shape (one token through a 4096 x 4096 weight, larger than the caches), and
// matmul at prefill shapes (32..512 tokens through 1024 x 4096). Bytes/s counts weight bytes,
// the memory-bound resource at decode; FLOP/s counts 2 * rows * cols * tokens.
//
// Names read bm_<what><format, arch>: the float-activation kernels (weight_ops::matmul) for
// every arch, and for formats with an int8 path the `_act` variants, which include the cost of
// quantizing the activations once per call, as the forward pass pays it. `_interleaved`: the
// kernels over the 16-row layouts a model repacks its weights into at load (what decode and
// prefill run on AVX-512); `_tiles`: the row-major int8 kernels alone.
//
//   bench_quant_kernels --benchmark_filter='matvec<lmtk::quant::q4_0'     one format, all archs
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstddef>
#include <random>
#include <vector>

#include <xsimd/xsimd.hpp>

#include <lmtk/core/mapped_file.hpp>
#include <lmtk/quant/quant.hpp>
#include <lmtk/target/cpu.hpp>

namespace q = lmtk::quant;

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
void set_counters(benchmark::State& state, std::size_t rows, std::size_t cols, std::size_t n_tok) {
    const double weight_bytes = double(rows * cols / P::block_elems * sizeof(typename P::block));
    state.SetBytesProcessed(static_cast<std::int64_t>(double(state.iterations()) * weight_bytes));
    state.counters["FLOP/s"] = benchmark::Counter(2.0 * double(rows * cols * n_tok) * double(state.iterations()),
                                                  benchmark::Counter::kIsRate, benchmark::Counter::kIs1000);
}

template <class P, class Arch>
void run_matmul(benchmark::State& state, std::size_t rows, std::size_t cols, std::size_t n_tok) {
    const q::weight_ops ops = q::ops_of<P, Arch>();
    const auto w = make_weights<P>(rows, cols);
    const auto x = make_activations(n_tok * cols);
    std::vector<float> y(n_tok * rows);
    const auto* wb = reinterpret_cast<const std::byte*>(w.data());
    for (auto _ : state) {
        ops.matmul(wb, cols, 0, rows, x.data(), cols, n_tok, y.data(), rows);
        benchmark::DoNotOptimize(y.data());
        benchmark::ClobberMemory();
    }
    set_counters<P>(state, rows, cols, n_tok);
}

// The prepared-activation path: quantize x, then matmul_act (or another kernel of its shape).
using matmul_act_fn = void (*)(const std::byte*, std::size_t, std::size_t, std::size_t, const std::byte*, std::size_t,
                               std::size_t, float*, std::size_t) noexcept;
template <class P, class Arch>
void run_matmul_act(benchmark::State& state, std::size_t rows, std::size_t cols, std::size_t n_tok,
                    matmul_act_fn kernel = nullptr) {
    const q::weight_ops ops = q::ops_of<P, Arch>();
    if (!ops.matmul_act) {
        state.SkipWithError("no prepared-activation kernels for this format and arch");
        return;
    }
    if (!kernel) kernel = ops.matmul_act;
    const auto w = make_weights<P>(rows, cols);
    const auto x = make_activations(n_tok * cols);
    const std::size_t stride = ops.act_row_bytes(cols);
    std::vector<std::byte> xa(n_tok * stride);
    std::vector<float> y(n_tok * rows);
    const auto* wb = reinterpret_cast<const std::byte*>(w.data());
    for (auto _ : state) {
        for (std::size_t t = 0; t < n_tok; ++t) ops.prepare_row(x.data() + t * cols, xa.data() + t * stride, cols);
        kernel(wb, cols, 0, rows, xa.data(), stride, n_tok, y.data(), rows);
        benchmark::DoNotOptimize(y.data());
        benchmark::ClobberMemory();
    }
    set_counters<P>(state, rows, cols, n_tok);
}

#if LMTK_QUANT_VNNI
// The row-tile kernels alone, for formats whose matmul_act switches to packed panels for
// batches: the two side by side show what packing gains.
template <class P>
void bm_matmul_act_tiles(benchmark::State& state) {
    run_matmul_act<P, xsimd::avx512bw>(state, 1024, 4096, static_cast<std::size_t>(state.range(0)), &q::vnni::matmul_tiles<P>);
}
#endif

#if LMTK_QUANT_VNNI || LMTK_QUANT_AVX2_INTERLEAVED
// The interleaved layouts a model repacks its weights into at load (quant/interleaved.hpp), with
// the kernels of the highest level this binary targets (AVX-512 VNNI, else AVX2).
// `_stream`: one token through 64 MiB of 4096 x 4096 matrices visited in turn, so every weight
// byte comes from DRAM as at decode (one matrix alone would sit in a 32 MiB L3); compare with
// bm_read_stream, a plain sum over the same amount. `/threads:2`: two threads at once, each
// over its own 64 MiB (bytes/s summed over both): what decode's two threads get.
template <class P>
void run_interleaved(benchmark::State& state, std::size_t rows, std::size_t cols, std::size_t n_tok,
                     std::size_t total_bytes) {
#if LMTK_QUANT_VNNI
    const q::weight_ops ops = q::ops_of<P, xsimd::avx512bw>();
#else
    const q::weight_ops ops = q::ops_of<P, xsimd::default_arch>();
#endif
    const q::weight_ops& il = *ops.interleaved;
    const auto w = make_weights<P>(rows, cols);
    const std::size_t bytes = ops.interleaved_bytes(rows, cols);
    const std::size_t copies = std::max<std::size_t>(1, total_bytes / bytes);
    lmtk::core::anonymous_memory packed(copies * bytes);
    for (std::size_t c = 0; c < copies; ++c)
        for (std::size_t g = 0; g < (rows + 15) / 16; ++g)
            ops.interleave_group(reinterpret_cast<const std::byte*>(w.data()), rows, cols, g, packed.data() + c * bytes);
    const auto x = make_activations(n_tok * cols);
    const std::size_t stride = il.matmul_act ? il.act_row_bytes(cols) : 0;
    std::vector<std::byte> xa(n_tok * stride);
    std::vector<float> y(n_tok * rows);
    std::size_t c = 0;
    for (auto _ : state) {
        if (il.matmul_act) {  // int8 activations, quantized per call as the forward pass does
            for (std::size_t t = 0; t < n_tok; ++t) il.prepare_row(x.data() + t * cols, xa.data() + t * stride, cols);
            il.matmul_act(packed.data() + c * bytes, cols, 0, rows, xa.data(), stride, n_tok, y.data(), rows);
        } else {  // F16: float activations
            il.matmul(packed.data() + c * bytes, cols, 0, rows, x.data(), cols, n_tok, y.data(), rows);
        }
        c = (c + 1) % copies;
        benchmark::DoNotOptimize(y.data());
        benchmark::ClobberMemory();
    }
    set_counters<P>(state, rows, cols, n_tok);
}
// What one core reads from DRAM at best: a sum over the same 64 MiB, for the _stream kernels
// to be read against.
void bm_read_stream(benchmark::State& state) {
    const std::size_t n = (std::size_t{64} << 20) / sizeof(float);
    lmtk::core::anonymous_memory buf(n * sizeof(float));
    auto* p = reinterpret_cast<float*>(buf.data());
    std::fill(p, p + n, 1.0f);
    using batch = xsimd::batch<float>;
    for (auto _ : state) {
        batch a0(0.0f), a1(0.0f), a2(0.0f), a3(0.0f);
        for (std::size_t i = 0; i < n; i += 4 * batch::size) {
            a0 += batch::load_aligned(p + i);
            a1 += batch::load_aligned(p + i + batch::size);
            a2 += batch::load_aligned(p + i + 2 * batch::size);
            a3 += batch::load_aligned(p + i + 3 * batch::size);
        }
        benchmark::DoNotOptimize(xsimd::hadd((a0 + a1) + (a2 + a3)));
    }
    state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * n * sizeof(float)));
}

template <class P>
void bm_matvec_interleaved_stream(benchmark::State& state) {
    run_interleaved<P>(state, 4096, 4096, 1, std::size_t{64} << 20);
}
template <class P>
void bm_matvec_interleaved(benchmark::State& state) {
    run_interleaved<P>(state, 4096, 4096, 1, 0);
}
template <class P>
void bm_matmul_interleaved(benchmark::State& state) {
    run_interleaved<P>(state, 1024, 4096, static_cast<std::size_t>(state.range(0)), 0);
}
#endif

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

template <class P, class Arch>
void bm_matvec(benchmark::State& state) {
    run_matmul<P, Arch>(state, 4096, 4096, 1);
}
template <class P, class Arch>
void bm_matmul(benchmark::State& state) {
    run_matmul<P, Arch>(state, 1024, 4096, static_cast<std::size_t>(state.range(0)));
}
template <class P, class Arch>
void bm_matvec_act(benchmark::State& state) {
    run_matmul_act<P, Arch>(state, 4096, 4096, 1);
}
template <class P, class Arch>
void bm_matmul_act(benchmark::State& state) {
    run_matmul_act<P, Arch>(state, 1024, 4096, static_cast<std::size_t>(state.range(0)));
}

using avx512 = xsimd::avx512bw;
using avx2 = xsimd::fma3<xsimd::avx2>;
using sse = xsimd::sse4_2;

}  // namespace

// Prefill batches from 32 to 512 tokens (llama.cpp's default micro-batch is 512).
#define LMTK_BENCH_ARCH(P, A)                                                                  \
    BENCHMARK_TEMPLATE(bm_matvec, q::P, A)->Unit(benchmark::kMicrosecond);                     \
    BENCHMARK_TEMPLATE(bm_matmul, q::P, A)->Arg(32)->Arg(128)->Arg(512)->Unit(benchmark::kMillisecond)

#define LMTK_BENCH_FORMAT(P)                           \
    BENCHMARK_TEMPLATE(bm_dequantize_row, q::P);       \
    LMTK_BENCH_ARCH(P, avx512);                        \
    LMTK_BENCH_ARCH(P, avx2);                          \
    LMTK_BENCH_ARCH(P, sse)

// The int8-activation path, where a format has one (AVX-512 VNNI).
#define LMTK_BENCH_ACT(P)                                                        \
    BENCHMARK_TEMPLATE(bm_matvec_act, q::P, avx512)->Unit(benchmark::kMicrosecond); \
    BENCHMARK_TEMPLATE(bm_matmul_act, q::P, avx512)->Arg(32)->Arg(128)->Arg(512)->Unit(benchmark::kMillisecond)

#if defined(__AVX512BW__) && defined(__AVX2__) && defined(__FMA__) && defined(__SSE4_2__)
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
LMTK_BENCH_ACT(q8_0);
LMTK_BENCH_ACT(q4_0);
LMTK_BENCH_ACT(q4_k);
LMTK_BENCH_ACT(q6_k);
#if LMTK_QUANT_VNNI
BENCHMARK_TEMPLATE(bm_matmul_act_tiles, q::q4_0)->Arg(32)->Arg(128)->Arg(512)->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(bm_matmul_act_tiles, q::q4_k)->Arg(32)->Arg(128)->Arg(512)->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(bm_matmul_act_tiles, q::q8_0)->Arg(32)->Arg(128)->Arg(512)->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(bm_matmul_act_tiles, q::q6_k)->Arg(32)->Arg(128)->Arg(512)->Unit(benchmark::kMillisecond);
#endif
#else
// Built without AVX-512 (LMTK_NATIVE=OFF or another CPU): the default arch only.
#define LMTK_BENCH_DEFAULT(P)                     \
    BENCHMARK_TEMPLATE(bm_dequantize_row, q::P);  \
    LMTK_BENCH_ARCH(P, xsimd::default_arch)
LMTK_BENCH_DEFAULT(f32);
LMTK_BENCH_DEFAULT(f16);
LMTK_BENCH_DEFAULT(bf16);
LMTK_BENCH_DEFAULT(q8_0);
LMTK_BENCH_DEFAULT(q4_0);
LMTK_BENCH_DEFAULT(q4_k);
LMTK_BENCH_DEFAULT(q6_k);
#endif

#if LMTK_QUANT_VNNI || LMTK_QUANT_AVX2_INTERLEAVED
#define LMTK_BENCH_INTERLEAVED(P)                                                                   \
    BENCHMARK_TEMPLATE(bm_matvec_interleaved, q::P)->Unit(benchmark::kMicrosecond);                  \
    BENCHMARK_TEMPLATE(bm_matvec_interleaved_stream, q::P)->Unit(benchmark::kMicrosecond);           \
    BENCHMARK_TEMPLATE(bm_matvec_interleaved_stream, q::P)->Threads(2)->UseRealTime()->Unit(benchmark::kMicrosecond); \
    BENCHMARK_TEMPLATE(bm_matmul_interleaved, q::P)->Arg(32)->Arg(128)->Arg(512)->Unit(benchmark::kMillisecond)
BENCHMARK(bm_read_stream)->Unit(benchmark::kMicrosecond);
BENCHMARK(bm_read_stream)->Threads(2)->UseRealTime()->Unit(benchmark::kMicrosecond);
LMTK_BENCH_INTERLEAVED(q8_0);
LMTK_BENCH_INTERLEAVED(q4_0);
LMTK_BENCH_INTERLEAVED(q4_k);
LMTK_BENCH_INTERLEAVED(q6_k);
LMTK_BENCH_INTERLEAVED(f16);
#endif

BENCHMARK_MAIN();
