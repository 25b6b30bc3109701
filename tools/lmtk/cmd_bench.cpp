// lmtk bench: prompt processing (pp) and token generation (tg) speed in tokens/s, measured the
// way llama-bench does (random tokens, an empty cache per run, a warm-up run, mean and standard
// deviation over -r runs), plus what decode speed means for memory: the bytes the forward pass
// reads per generated token and the share of this machine's read bandwidth that reaches. The
// bandwidth is measured in the same run, with the same thread count, so that both figures see
// the same machine load.
#include "commands.hpp"
#include "common.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <xsimd/xsimd.hpp>

#include <sys/resource.h>

namespace lmtk::cli {

namespace {

struct stats {
    double mean = 0, stddev = 0;
    std::vector<double> samples;
};
stats summarize(std::vector<double> v) {
    stats s;
    s.samples = v;
    for (double x : v) s.mean += x;
    s.mean /= double(v.size());
    if (v.size() > 1) {
        for (double x : v) s.stddev += (x - s.mean) * (x - s.mean);
        s.stddev = std::sqrt(s.stddev / double(v.size() - 1));
    }
    return s;
}

std::vector<std::size_t> parse_list(const std::string& s, const char* flag) {
    std::vector<std::size_t> out;
    std::size_t start = 0;
    while (start <= s.size()) {
        const std::size_t comma = std::min(s.find(',', start), s.size());
        const std::string item = s.substr(start, comma - start);
        char* end = nullptr;
        const unsigned long long v = std::strtoull(item.c_str(), &end, 10);
        if (item.empty() || *end != '\0') fail("lmtk bench: ", flag, " expects numbers separated by commas, got '", s, "'");
        out.push_back(static_cast<std::size_t>(v));
        start = comma + 1;
    }
    return out;
}

// The process's peak resident set so far (Linux VmHWM; getrusage elsewhere), in bytes.
std::uint64_t peak_rss_bytes() {
    if (std::FILE* f = std::fopen("/proc/self/status", "r")) {
        char line[256];
        unsigned long long kb = 0;
        while (std::fgets(line, sizeof line, f))
            if (std::sscanf(line, "VmHWM: %llu kB", &kb) == 1) break;
        std::fclose(f);
        if (kb) return kb * 1024;
    }
    rusage u{};
    getrusage(RUSAGE_SELF, &u);
    return std::uint64_t(u.ru_maxrss) * 1024;
}

// STREAM-style read bandwidth: every thread sums its share of a buffer far larger than the
// caches; the best of several passes, in bytes/s. Reading is what decode does to the weights.
double read_bandwidth(core::thread_pool& pool) {
    constexpr std::size_t bytes = std::size_t{512} << 20;
    using batch = xsimd::batch<float>;
    const std::size_t n = bytes / sizeof(float);
    std::unique_ptr<float[]> buf(new float[n]);
    pool.run([&](std::size_t i, std::size_t nt) noexcept {  // first touch by the reading thread
        const auto [b, e] = core::thread_pool::split(n, i, nt);
        std::fill(buf.get() + b, buf.get() + e, 1.0f);
    });
    std::vector<float> sums(pool.size());
    double best = 0;
    for (int pass = 0; pass < 6; ++pass) {
        const stopwatch sw;
        pool.run([&](std::size_t i, std::size_t nt) noexcept {
            auto [b, e] = core::thread_pool::split(n / (4 * batch::size), i, nt);
            const float* p = buf.get() + b * 4 * batch::size;
            batch a0(0.0f), a1(0.0f), a2(0.0f), a3(0.0f);
            for (std::size_t k = b; k < e; ++k, p += 4 * batch::size) {
                a0 += batch::load_unaligned(p);
                a1 += batch::load_unaligned(p + batch::size);
                a2 += batch::load_unaligned(p + 2 * batch::size);
                a3 += batch::load_unaligned(p + 3 * batch::size);
            }
            sums[i] = xsimd::hadd((a0 + a1) + (a2 + a3));
        });
        const double s = sw.ms() / 1e3;
        if (sums[0] < 0) std::fputs("", stderr);  // keeps the sums alive
        best = std::max(best, double(bytes) / s);
    }
    return best;
}

std::string human_params(std::uint64_t n) {
    char buf[32];
    if (n >= 1000000000ull) std::snprintf(buf, sizeof buf, "%.2fB", double(n) / 1e9);
    else std::snprintf(buf, sizeof buf, "%.0fM", double(n) / 1e6);
    return buf;
}

std::string file_type_name(const gguf::file* f) {
    if (!f) return "?";
    switch (f->get_or<std::uint32_t>("general.file_type", 9999)) {
        case 0: return "F32";
        case 1: return "F16";
        case 2: return "Q4_0";
        case 3: return "Q4_1";
        case 7: return "Q8_0";
        case 8: return "Q5_0";
        case 9: return "Q5_1";
        case 10: return "Q2_K";
        case 11: return "Q3_K_S";
        case 12: return "Q3_K_M";
        case 13: return "Q3_K_L";
        case 14: return "Q4_K_S";
        case 15: return "Q4_K_M";
        case 16: return "Q5_K_S";
        case 17: return "Q5_K_M";
        case 18: return "Q6_K";
        case 32: return "BF16";
        default: return "?";
    }
}

struct result {
    std::size_t n_prompt = 0, n_gen = 0;
    stats ts, ns;
    double bytes_per_token = 0;  // tg only
};

}  // namespace

int cmd_bench(const argv_t& argv) {
    const args a("bench", argv, {"-m|--model", "-p|--n-prompt", "-n|--n-gen", "-t|--threads", "-r|--repetitions",
                                 "-o|--output", "-b|--batch-size", "--kv-type", "--cpu"},
                 {"--no-bandwidth", "--no-interleave"});
    const std::vector<std::size_t> pps = parse_list(a.get("-p").value_or("128,512"), "-p");
    const std::vector<std::size_t> tgs = parse_list(a.get("-n").value_or("64"), "-n");
    const std::size_t reps = std::max<std::size_t>(1, a.number<std::size_t>("-r", 5));
    const std::string fmt = a.get("-o").value_or("md");
    if (fmt != "md" && fmt != "json") fail("lmtk bench: -o must be md or json");

    return with_kv_type(a, [&]<class KV>() {
        const std::string path = a.require("-m");
        const stopwatch load;
        const cli_model m(path, load_options_from(a));
        const double load_ms = load.ms();
        std::size_t max_tokens = 1;
        for (std::size_t p : pps) max_tokens = std::max(max_tokens, p);
        for (std::size_t n : tgs) max_tokens = std::max(max_tokens, n);
        model::context_options co = context_options_from(a, max_tokens);
        model::llama_context<cli_model, KV> ctx(m, co);
        const std::size_t n_threads = ctx.n_threads();

        std::uint64_t n_params = 0, model_size = 0;
        if (const gguf::file* f = m.source().gguf_file())
            for (const auto& t : f->tensors()) {
                n_params += t.n_elements;
                model_size += t.n_bytes;
            }

        std::mt19937 g(42);
        std::uniform_int_distribution<std::int32_t> tok(0, static_cast<std::int32_t>(m.n_vocab()) - 1);
        std::vector<std::int32_t> tokens(max_tokens);
        for (auto& t : tokens) t = tok(g);

        // One test = a warm-up run and `reps` timed runs, each on an empty cache.
        const auto time_runs = [&](auto&& body) {
            std::vector<double> ns;
            for (std::size_t r = 0; r <= reps; ++r) {
                ctx.truncate(0);
                const stopwatch sw;
                body();
                if (r > 0) ns.push_back(sw.ms() * 1e6);
            }
            return ns;
        };
        std::vector<result> results;
        const auto add = [&](std::size_t np, std::size_t ng, const std::vector<double>& ns) {
            result res{np, ng, {}, summarize(ns), 0};
            std::vector<double> ts;
            for (double x : ns) ts.push_back(1e9 * double(np + ng) / x);
            res.ts = summarize(ts);
            results.push_back(res);
            return &results.back();
        };
        for (std::size_t p : pps)
            if (p) add(p, 0, time_runs([&] { ctx.decode(std::span(tokens.data(), p)); }));
        const auto& hp = m.hparams();
        for (std::size_t n : tgs) {
            if (!n) continue;
            result* r = add(0, n, time_runs([&] {
                for (std::size_t i = 0; i < n; ++i) ctx.decode(std::span(tokens.data() + i, 1));
            }));
            // Weights once per token, plus the K and V rows attention reads (on average half of
            // the n positions cached by the end).
            const double kv_bytes = 2.0 * hp.n_layer * hp.kv_dim() * sizeof(typename KV::storage) * (double(n) + 1) / 2;
            r->bytes_per_token = double(m.weight_bytes()) + kv_bytes;
        }

        // Peak resident memory of everything so far (load and every run), read before the
        // bandwidth test's buffer exists. The budget it is compared with: the model file (mmapped:
        // its pages count once they are read) plus the KV cache.
        const std::uint64_t peak_rss = peak_rss_bytes();
        std::error_code ec;
        std::uint64_t file_bytes = std::filesystem::is_regular_file(path, ec) ? std::filesystem::file_size(path, ec) : 0;
        if (ec || file_bytes == 0) file_bytes = model_size;
        const std::uint64_t kv_budget = model::kv_cache<KV>::bytes_needed(hp.n_layer, ctx.n_ctx(), hp.kv_dim());
        const double rss_ratio = double(peak_rss) / double(file_bytes + kv_budget);

        double bw = 0;
        if (!a.has("--no-bandwidth")) {
            core::thread_pool pool(n_threads);
            bw = read_bandwidth(pool);
        }

        const std::string ftype = file_type_name(m.source().gguf_file());
        const std::string model_type = hp.arch + " " + human_params(n_params) + " " + ftype;
        const std::string isa(m.kernel_isa());  // the kernels' instruction-set level, chosen at load
        if (fmt == "json") {
            std::printf("[\n");
            for (std::size_t i = 0; i < results.size(); ++i) {
                const result& r = results[i];
                std::printf("  {\n    \"build_commit\": \"lmtk\",\n    \"cpu_info\": \"%s\",\n", isa.c_str());
                std::printf("    \"model_filename\": \"%s\",\n    \"model_type\": \"%s\",\n", path.c_str(), model_type.c_str());
                std::printf("    \"model_size\": %llu,\n    \"model_n_params\": %llu,\n", (unsigned long long)model_size,
                            (unsigned long long)n_params);
                std::printf("    \"n_batch\": %zu,\n    \"n_ubatch\": %zu,\n    \"n_threads\": %zu,\n", co.n_batch, co.n_batch,
                            n_threads);
                std::printf("    \"type_k\": \"%s\",\n    \"type_v\": \"%s\",\n", std::string(KV::name).c_str(),
                            std::string(KV::name).c_str());
                std::printf("    \"n_prompt\": %zu,\n    \"n_gen\": %zu,\n", r.n_prompt, r.n_gen);
                std::printf("    \"avg_ns\": %.0f,\n    \"stddev_ns\": %.0f,\n", r.ns.mean, r.ns.stddev);
                std::printf("    \"avg_ts\": %.6f,\n    \"stddev_ts\": %.6f,\n", r.ts.mean, r.ts.stddev);
                std::printf("    \"samples_ts\": [");
                for (std::size_t k = 0; k < r.ts.samples.size(); ++k) std::printf("%s%.6f", k ? ", " : "", r.ts.samples[k]);
                std::printf("],\n    \"load_ms\": %.3f,\n    \"read_bw_gbs\": %.3f", load_ms, bw / 1e9);
                std::printf(",\n    \"peak_rss_bytes\": %llu,\n    \"rss_over_file_and_kv\": %.4f", (unsigned long long)peak_rss,
                            rss_ratio);
                if (r.n_gen) {
                    std::printf(",\n    \"bytes_per_token\": %.0f,\n    \"bw_share\": %.4f", r.bytes_per_token,
                                bw > 0 ? r.bytes_per_token * r.ts.mean / bw : 0.0);
                }
                std::printf("\n  }%s\n", i + 1 < results.size() ? "," : "");
            }
            std::printf("]\n");
            return 0;
        }
        std::printf("| model | size | params | backend | threads | test | t/s | GB/s | of read BW |\n");
        std::printf("| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |\n");
        for (const result& r : results) {
            char test[32];
            if (r.n_gen) std::snprintf(test, sizeof test, "tg%zu", r.n_gen);
            else std::snprintf(test, sizeof test, "pp%zu", r.n_prompt);
            std::printf("| %s | %.2f MiB | %s | CPU (%s) | %zu | %s | %.2f ± %.2f |", model_type.c_str(),
                        double(model_size) / (1 << 20), human_params(n_params).c_str(), isa.c_str(), n_threads, test,
                        r.ts.mean, r.ts.stddev);
            if (r.n_gen) {
                const double gbs = r.bytes_per_token * r.ts.mean;
                std::printf(" %.1f | %s |\n", gbs / 1e9, bw > 0 ? (std::to_string(int(std::lround(100 * gbs / bw))) + "%").c_str() : "-");
            } else {
                std::printf(" | |\n");
            }
        }
        std::printf("\nload %.1f ms; bytes read per generated token: weights %.1f MiB", load_ms, double(m.weight_bytes()) / (1 << 20));
        if (bw > 0) std::printf("; read bandwidth (%zu threads, STREAM-style sum): %.1f GB/s", n_threads, bw / 1e9);
        std::printf("\npeak RSS %.1f MiB = %.3f x (model file %.1f MiB + KV cache %.1f MiB)\n", double(peak_rss) / (1 << 20),
                    rss_ratio, double(file_bytes) / (1 << 20), double(kv_budget) / (1 << 20));
        return 0;
    });
}

}  // namespace lmtk::cli
