// The pipeline on the real stories260K model: streaming forms agree, limits and stop strings
// end generation, seeds reproduce, the cached prefix is reused without changing results.
#include <catch2/catch.hpp>

#include "support/models.hpp"

#include <lmtk/lmtk.hpp>

#include <fstream>
#include <sstream>
#include <string>

namespace s = lmtk::sample;
using greedy_pipeline = lmtk::pipeline<lmtk::quant::default_set, lmtk::target::cpu<>, s::chain<s::greedy>>;
using sampling_chain = s::chain<s::top_k, s::top_p, s::temperature, s::dist>;
using sampling_pipeline = lmtk::pipeline<lmtk::quant::default_set, lmtk::target::cpu<>, sampling_chain>;

namespace {
lmtk::pipeline_options two_threads() {
    lmtk::pipeline_options o;
    o.context.n_threads = 2;
    o.context.n_ctx = 512;
    return o;
}
std::string reference_text() {
    std::ifstream in(lmtk::test::model_path("stories260K.greedy200.txt"));
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}
std::string ltrim(std::string s) {
    s.erase(0, s.find_first_not_of(" \n\t"));
    return s;
}
}  // namespace

TEST_CASE("greedy generation from BOS reproduces the reference text", "[pipeline]") {
    greedy_pipeline p(lmtk::test::model_path("stories260K.gguf"), two_threads());
    const auto c = p.generate("", {.max_tokens = 200});
    CHECK(c.finish == lmtk::finish_reason::max_tokens);
    CHECK(c.tokens.size() == 200);
    CHECK(c.n_prompt_tokens == 1);  // BOS only
    const std::string ref = reference_text();
    REQUIRE(ltrim(c.text).substr(0, ref.size()) == ref);
    CHECK(c.time.n_eval == 199);
    CHECK(c.time.n_sample == 200);
}

TEST_CASE("iterator and callback streaming produce the same text", "[pipeline]") {
    greedy_pipeline p(lmtk::test::model_path("stories260K.gguf"), two_threads());
    std::string via_callback;
    const auto c = p.generate("Once upon a time", {.max_tokens = 40}, [&](std::string_view t) { via_callback += t; });
    std::string via_iterator;
    for (const std::string& t : p.stream("Once upon a time", {.max_tokens = 40})) via_iterator += t;
    CHECK(via_callback == c.text);
    CHECK(via_iterator == c.text);
    CHECK_FALSE(c.text.empty());
}

TEST_CASE("stop strings end generation before the stop string", "[pipeline]") {
    greedy_pipeline p(lmtk::test::model_path("stories260K.gguf"), two_threads());
    const auto full = p.generate("", {.max_tokens = 60});
    const std::string stop = "Lily";
    const auto at = full.text.find(stop);
    REQUIRE(at != std::string::npos);
    const auto c = p.generate("", {.max_tokens = 60, .stop = {stop}});
    CHECK(c.finish == lmtk::finish_reason::stop_string);
    CHECK(c.text == full.text.substr(0, at));
}

TEST_CASE("the same seed gives the same text; another seed differs", "[pipeline]") {
    sampling_pipeline p(lmtk::test::model_path("stories260K.gguf"), two_threads(),
                        sampling_chain(s::top_k{40}, s::top_p{0.95f}, s::temperature{1.0f}, s::dist{}));
    const auto a = p.generate("Once upon a time", {.max_tokens = 60, .seed = 42});
    const auto b = p.generate("Once upon a time", {.max_tokens = 60, .seed = 42});
    const auto c = p.generate("Once upon a time", {.max_tokens = 60, .seed = 7});
    CHECK(a.text == b.text);
    CHECK(a.tokens == b.tokens);
    CHECK(a.tokens != c.tokens);
}

TEST_CASE("a prompt that extends the last one reuses the cache and changes nothing", "[pipeline]") {
    greedy_pipeline cached(lmtk::test::model_path("stories260K.gguf"), two_threads());
    greedy_pipeline fresh(lmtk::test::model_path("stories260K.gguf"), two_threads());
    const auto first = cached.generate("Once upon a time, there was", {.max_tokens = 10});
    const std::string longer = "Once upon a time, there was" + first.text + " and";
    const auto reused = cached.generate(longer, {.max_tokens = 20});
    CHECK(reused.time.n_prompt < reused.n_prompt_tokens);  // only the new tail was evaluated
    const auto cold = fresh.generate(longer, {.max_tokens = 20});
    CHECK(cold.time.n_prompt == cold.n_prompt_tokens);
    CHECK(reused.tokens == cold.tokens);
}

TEST_CASE("prompts beyond the context are refused with a clear error", "[pipeline]") {
    lmtk::pipeline_options o = two_threads();
    o.context.n_ctx = 16;
    greedy_pipeline p(lmtk::test::model_path("stories260K.gguf"), o);
    std::string prompt;
    for (int i = 0; i < 20; ++i) prompt += "Once upon a time ";
    CHECK_THROWS_WITH(p.generate(prompt), Catch::Contains("does not fit in the context"));
    // Generation that reaches the end of the context stops there.
    const auto c = p.generate("Once", {.max_tokens = 100});
    CHECK(c.finish == lmtk::finish_reason::context_full);
    CHECK(c.n_prompt_tokens + c.tokens.size() <= 17);
}
