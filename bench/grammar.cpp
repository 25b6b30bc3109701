// The cost of grammar-constrained sampling on a 32k vocabulary: the grammar_constraint stage
// checking every token of llama's SPM vocabulary (../shared/models/vocab/ggml-vocab-llama-spm.gguf,
// 32000 tokens) against llama.cpp's JSON grammar, in three states: at the start (only '{' and
// blanks fit), inside a string (almost everything fits: the worst case) and after a value in
// an object. Also the single check of one sampled token, which is what a step costs when the
// sampled token is accepted. Compare with a decode step of the model being constrained.
//
//   build/bench/bench_grammar [--benchmark_filter=...]     (LMTK_TEST_MODELS for the vocab)
#include <lmtk/sample/grammar.hpp>
#include <lmtk/tokenize/load.hpp>

#include <benchmark/benchmark.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

namespace {

namespace s = lmtk::sample;

std::string models_dir() {
    if (const char* env = std::getenv("LMTK_TEST_MODELS"); env && *env) return env;
    return "../shared/models";
}

const s::json_vocab& vocab() {
    static const s::json_vocab v = [] {
        const auto tok = lmtk::tokenize::load_tokenizer(models_dir() + "/vocab/ggml-vocab-llama-spm.gguf");
        s::json_vocab out;
        for (std::int32_t id = 0; id < std::int32_t(tok.size()); ++id) {
            out.pieces.push_back(tok.piece(id));
            out.is_end.push_back(tok.is_eog(id));
        }
        return out;
    }();
    return v;
}

std::shared_ptr<const s::grammar> json_grammar() {
    static const auto g = [] {
        std::ifstream in(std::filesystem::path(LMTK_SOURCE_DIR) / "tests" / "data" / "grammars" / "json.gbnf");
        std::stringstream ss;
        ss << in.rdbuf();
        return std::make_shared<const s::grammar>(s::parse_gbnf(ss.str()));
    }();
    return g;
}

void mask_all(benchmark::State& state, const char* prefix) {
    const auto& v = vocab();
    s::grammar_matcher m(json_grammar());
    if (!m.accept(prefix)) state.SkipWithError("the prefix does not fit the grammar");
    const s::grammar_constraint stage{&v, &m};
    std::vector<s::candidate> base(v.pieces.size()), c;
    for (std::size_t i = 0; i < base.size(); ++i) base[i] = {std::int32_t(i), 0.0f, 0.0f};
    std::vector<std::int32_t> history;
    s::rng gen(1);
    s::context ctx{history, gen};
    std::size_t allowed = 0;
    for (auto _ : state) {
        c = base;
        stage(c, ctx);
        benchmark::DoNotOptimize(c.data());
    }
    for (const auto& x : c) allowed += x.logit == 0.0f;
    state.counters["tokens_allowed"] = double(allowed);
    state.counters["vocab"] = double(v.pieces.size());
}

void bm_mask_start(benchmark::State& state) { mask_all(state, ""); }
void bm_mask_in_string(benchmark::State& state) { mask_all(state, "{\"name\": \"Lily and"); }
void bm_mask_after_value(benchmark::State& state) { mask_all(state, "{\"name\": \"Lily\", \"age\": 3"); }

// One sampled token checked, as a step costs when the pick is accepted.
void bm_check_one(benchmark::State& state) {
    const auto& v = vocab();
    s::grammar_matcher m(json_grammar());
    m.accept("{\"name\": \"Lily and");
    const s::grammar_constraint stage{&v, &m};
    std::int32_t id = 0;
    for (auto _ : state) {
        benchmark::DoNotOptimize(stage.accepts(id));
        id = (id + 7919) % std::int32_t(v.pieces.size());
    }
}

}  // namespace

BENCHMARK(bm_mask_start)->Unit(benchmark::kMillisecond);
BENCHMARK(bm_mask_in_string)->Unit(benchmark::kMillisecond);
BENCHMARK(bm_mask_after_value)->Unit(benchmark::kMillisecond);
BENCHMARK(bm_check_one)->Unit(benchmark::kMicrosecond);
BENCHMARK_MAIN();
