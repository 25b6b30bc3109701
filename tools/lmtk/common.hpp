#pragma once
// What the lmtk tool compiles in: every format of quant::default_set on this machine's CPU, two
// sampler chains (greedy and the usual llama.cpp order), and f32 or f16 KV caches. The runtime
// flags (--temp, --kv-type) choose among these instantiations once, before anything runs.
#include "args.hpp"

#include <lmtk/lmtk.hpp>
// Every format's kernels are compiled once (src/default_kernels.cpp), not once per subcommand.
#include <lmtk/quant/compile_once.hpp>

#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <thread>

namespace lmtk::cli {

using cli_set = quant::default_set;  // compile_once.hpp covers exactly this set and target
using cli_target = target::cpu_dispatch<>;  // weight kernels chosen by CPUID (or --cpu / LMTK_CPU) at load
using greedy_chain = sample::chain<sample::repetition_penalty, sample::greedy>;
using sampling_chain = sample::chain<sample::repetition_penalty, sample::top_k, sample::top_p, sample::min_p,
                                     sample::temperature, sample::dist>;
using cli_model = model::llama<cli_set, cli_target>;


// --no-interleave: use every weight as mapped (no repacking at load), for comparisons.
// --cpu LEVEL: the weights' kernels of that instruction-set level (sse4.2, avx2, avx512-vnni)
// instead of the highest this CPU runs; LMTK_CPU does the same for every command.
inline model::load_options load_options_from(const args& a) {
    model::load_options o;
    o.interleave = !a.has("--no-interleave");
    o.cpu = a.get("--cpu").value_or("");
    return o;
}

inline model::context_options context_options_from(const args& a, std::size_t default_ctx = 0) {
    model::context_options o;
    o.n_threads = a.number<std::size_t>("-t", 0);
    if (o.n_threads == 0) o.n_threads = std::max(1u, std::thread::hardware_concurrency());
    if (o.n_threads > 1024) fail("-t ", o.n_threads, " is not a sensible thread count");
    o.n_ctx = a.number<std::size_t>("-c", default_ctx);
    o.n_batch = a.number<std::size_t>("-b", model::context_options{}.n_batch);
    return o;
}

// Calls f.template operator()<KV>() with the KV cache type named by --kv-type.
template <class F>
int with_kv_type(const args& a, F&& f) {
    const std::string kv = a.get("--kv-type").value_or("f32");
    if (kv == "f32") return f.template operator()<model::kv_f32>();
    if (kv == "f16") return f.template operator()<model::kv_f16>();
    fail("--kv-type must be f32 or f16, not '", kv, "'");
}

inline std::string read_file(const std::string& path) {
    std::FILE* f = std::fopen(path.c_str(), "rb");
    if (!f) fail(path, ": cannot open");
    std::string out;
    char buf[1 << 16];
    for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, f)) > 0;) out.append(buf, n);
    const bool bad = std::ferror(f);
    std::fclose(f);
    if (bad) fail(path, ": read error");
    return out;
}

}  // namespace lmtk::cli
