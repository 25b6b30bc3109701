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

using greedy_batch = lmtk::batch_pipeline<lmtk::quant::default_set, lmtk::target::cpu<>, s::chain<s::greedy>>;

TEST_CASE("batch_pipeline: each prompt's greedy text equals the single pipeline's, in waves of n_seq", "[pipeline][batch]") {
    // Five prompts through three sequences: the last two start as the first ones finish (the
    // limits differ per prompt through stop strings and the end-of-text token).
    const std::vector<std::string> prompts = {"Once upon a time", "The cat", "Lily and Tom went to the park",
                                              "One day, a little bird", ""};
    const lmtk::generate_options opt{.max_tokens = 40, .stop = {"\n\n"}};
    auto o = two_threads();
    o.context.n_seq = 3;
    greedy_batch b(lmtk::test::model_path("stories260K.gguf"), o);
    std::vector<std::string> streamed(prompts.size());
    const auto out = b.generate(prompts, opt, [&](std::size_t i, std::string_view piece) { streamed.at(i) += piece; });
    REQUIRE(out.size() == prompts.size());
    greedy_pipeline p(lmtk::test::model_path("stories260K.gguf"), two_threads());
    for (std::size_t i = 0; i < prompts.size(); ++i) {
        INFO("prompt " << i << ": " << prompts[i]);
        const auto one = p.generate(prompts[i], opt);
        CHECK(out[i].text == one.text);
        CHECK(out[i].tokens == one.tokens);
        CHECK(out[i].finish == one.finish);
        CHECK(out[i].n_prompt_tokens == one.n_prompt_tokens);
        CHECK(streamed[i] == out[i].text);
        CHECK(!out[i].text.empty());
    }
    // Prompt and generated rows were all counted once.
    std::size_t n_prompt = 0, n_generated = 0;
    for (const auto& c : out) {
        n_prompt += c.n_prompt_tokens;
        n_generated += c.tokens.size();
    }
    CHECK(b.last_timings().n_prompt == n_prompt);
    CHECK(b.last_timings().n_eval <= n_generated);
}

TEST_CASE("batch_pipeline: a prompt that cannot fit fails the call before anything runs", "[pipeline][batch]") {
    auto o = two_threads();
    o.context.n_ctx = 16;
    o.context.n_seq = 2;
    greedy_batch b(lmtk::test::model_path("stories260K.gguf"), o);
    const std::vector<std::string> prompts = {"Once", std::string(400, 'a')};
    CHECK_THROWS_WITH(b.generate(prompts), Catch::Contains("prompt 1") && Catch::Contains("context"));
    CHECK(b.generate(std::vector<std::string>{"Once"}, {.max_tokens = 4}).at(0).tokens.size() <= 4);
}
