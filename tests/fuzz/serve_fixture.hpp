#pragma once
// What the request-decoding harnesses (openai_request, ollama_request, llamacpp_request,
// lmtp_message) share: one real service over the smallest test model, built once per process,
// and the rule for what counts as a finding.
//
// Decoding is what runs between the bytes of a request and the first generated token: JSON
// parsing, field checks, chat formatting, tokenization and the prompt check the routes make
// before anything runs. The harnesses stop there, so no execution waits for the model.
#include <lmtk/lmtk.hpp>
#include <lmtk/serve/service.hpp>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

namespace lmtk::fuzz {

// F32 and F16 only (the test model's formats): every kernel of default_set compiled under
// ASan would cost minutes per harness, and request decoding reaches none of them.
using model_type = model::llama<quant::with_group_formats<quant::set<quant::f32, quant::f16>>, target::cpu<>>;
using engine_type = serve::engine<model_type, model::kv_f32>;
using service_type = serve::service<model_type, model::kv_f32>;

inline std::string test_model_path() {
    if (const char* d = std::getenv("LMTK_TEST_MODELS"); d && *d) return std::string(d) + "/stories260K.gguf";
#ifdef LMTK_TEST_MODELS_DIR
    return LMTK_TEST_MODELS_DIR "/stories260K.gguf";  // fixed by tests/fuzz/CMakeLists.txt
#else
    // The checkout's neighbour, as the tests default to it (__FILE__ is absolute in CMake builds).
    return (std::filesystem::path(__FILE__).parent_path() / "../../../shared/models/stories260K.gguf").lexically_normal().string();
#endif
}

// A small context so that long prompts reach the "does not fit" refusals too.
inline constexpr std::size_t fixture_n_ctx = 256;

struct serve_fixture {
    static serve::engine_options engine_opts() {
        serve::engine_options o;
        o.n_slots = 1;
        o.max_queue = 0;
        o.context.n_ctx = fixture_n_ctx;
        o.context.n_threads = 1;
        return o;
    }
    static serve::server_options server_opts() {
        serve::server_options o;
        o.log_requests = false;
        return o;
    }

    model_type m{test_model_path()};
    serve::tokenizer_t tok = tokenize::load_tokenizer(m.source());
    engine_type eng{m, tok, engine_opts()};
    service_type svc{eng, server_opts()};
};

inline service_type& service() {
    static serve_fixture f;  // loaded once per process: a few ms of every run instead of each input's
    return f.svc;
}

// LMTK_FUZZ_STRICT=1 also counts lmtk::error as a finding: the HTTP routes answer it with a 500,
// so a decoding path that throws it names a refusal that should have been a 400.
inline bool strict() {
    static const bool s = [] {
        const char* v = std::getenv("LMTK_FUZZ_STRICT");
        return v && *v && *v != '0';
    }();
    return s;
}

// Runs one decoding step. The refusals a server turns into clean answers are expected:
// http_error (4xx), queue_full (503), lmtk::error (see strict()). Any other exception escapes
// to libFuzzer, which reports it as a crash: the server would answer it with a 500 or, outside a
// guarded handler, lose the connection.
template <class F>
void decode_only(F&& f) {
    try {
        f();
    } catch (const serve::http_error&) {
    } catch (const serve::queue_full&) {
    } catch (const lmtk::error&) {
        if (strict()) throw;
    }
}

[[noreturn]] inline void violated(const char* what) {
    std::fprintf(stderr, "decoded request breaks an invariant: %s\n", what);
    std::abort();
}
#define LMTK_FUZZ_EXPECT(cond) ((cond) ? void() : ::lmtk::fuzz::violated(#cond))

// What the engine assumes of a request that passed decoding and the route's prompt check.
inline void check_decoded(const serve::request& rq, std::size_t n_vocab, std::size_t n_ctx) {
    LMTK_FUZZ_EXPECT(!rq.prompt.empty());
    LMTK_FUZZ_EXPECT(rq.prompt.size() <= n_ctx);
    for (const std::int32_t t : rq.prompt) LMTK_FUZZ_EXPECT(t >= 0 && std::size_t(t) < n_vocab);
    LMTK_FUZZ_EXPECT(rq.n_scored <= rq.prompt.size());
    LMTK_FUZZ_EXPECT(rq.max_tokens >= -1);
    LMTK_FUZZ_EXPECT(rq.top_logprobs >= -1 && rq.top_logprobs <= 100);
    const auto& s = rq.sampling;
    LMTK_FUZZ_EXPECT(std::isfinite(s.temperature) && s.temperature >= 0.0f);
    LMTK_FUZZ_EXPECT(std::isfinite(s.top_p) && s.top_p >= 0.0f && s.top_p <= 1.0f);
    LMTK_FUZZ_EXPECT(std::isfinite(s.min_p) && s.min_p >= 0.0f && s.min_p <= 1.0f);
    LMTK_FUZZ_EXPECT(std::isfinite(s.repeat_penalty) && s.repeat_penalty > 0.0f);
    LMTK_FUZZ_EXPECT(std::isfinite(s.presence_penalty) && std::isfinite(s.frequency_penalty));
    LMTK_FUZZ_EXPECT(s.top_k >= -1 && s.repeat_last_n >= -1);
    for (const auto& b : s.logit_bias) {
        LMTK_FUZZ_EXPECT(b.id >= 0 && std::size_t(b.id) < n_vocab);
        LMTK_FUZZ_EXPECT(!std::isnan(b.bias));
    }
}

}  // namespace lmtk::fuzz
