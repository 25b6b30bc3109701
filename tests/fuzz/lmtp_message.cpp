// Fuzzes the decoding of one LMTP message ("COMMAND JSON" in a WebSocket text frame) as
// lmtk serve-model's LMTP sessions do it: lmtp::decode (include/lmtk/serve/lmtp.hpp) turns the
// text into a command, a refusal, or a GENERATE / SCORE request for the engine.
//
// Input: the message text. decode() must never throw: a session calls it outside any handler
// that could turn an exception into an answer. What it accepts must satisfy what the engine
// assumes of a request (check_decoded), and its refusals must serialise as the session sends them.
#include "serve_fixture.hpp"

#include <lmtk/serve/lmtp.hpp>

#include <cstddef>
#include <cstdint>
#include <string_view>

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    lmtk::fuzz::service();
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    namespace serve = lmtk::serve;
    auto& svc = lmtk::fuzz::service();
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    const serve::lmtp::command c = serve::lmtp::decode(svc, text);
    LMTK_FUZZ_EXPECT(c.name == text.substr(0, text.find(' ')));
    if (!c.known()) {
        (void)serve::dump(serve::json{{"stream_id", c.stream_id}, {"error", "Unknown command: " + c.name}});
        return 0;
    }
    if (!c.error.empty()) {
        (void)serve::dump(serve::json::array({serve::json{{"stream_id", c.stream_id}, {"error", c.error}}}));
        return 0;
    }
    LMTK_FUZZ_EXPECT(c.stream_id >= 0);
    if (c.name == "MODEL_INFO") return 0;
    const std::size_t n_ctx = svc.eng().n_ctx();
    lmtk::fuzz::check_decoded(c.rq, svc.n_vocab(), n_ctx);
    if (c.name == "GENERATE") {
        LMTK_FUZZ_EXPECT(c.rq.n_scored == 0 && c.rq.max_tokens >= 1);
        LMTK_FUZZ_EXPECT(c.rq.prompt.size() + std::size_t(c.rq.max_tokens) <= n_ctx);
    } else {
        LMTK_FUZZ_EXPECT(c.rq.n_scored >= 1);
    }
    return 0;
}
