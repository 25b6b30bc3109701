// Fuzzes the Ollama request decoding of `lmtk serve-model`: the body of POST /api/generate and
// POST /api/chat through parse_body, read_generate / read_chat (include/lmtk/serve/ollama.hpp)
// and the prompt check the routes make before a request runs.
//
// Input: one selector byte, then the request body. Selector % 2: 0 generate, 1 chat (seeds use
// '0' and '1'). A decoded request must satisfy what the engine assumes of it (check_decoded).
#include "serve_fixture.hpp"

#include <lmtk/serve/ollama.hpp>

#include <cstddef>
#include <cstdint>
#include <string>

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    lmtk::fuzz::service();
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    namespace serve = lmtk::serve;
    if (size == 0) return 0;
    auto& svc = lmtk::fuzz::service();
    const bool chat = data[0] % 2 == 1;
    const std::string body(reinterpret_cast<const char*>(data) + 1, size - 1);
    lmtk::fuzz::decode_only([&] {
        const serve::json j = serve::parse_body(body);
        serve::ollama::parsed p = chat ? serve::ollama::read_chat(svc, j, body) : serve::ollama::read_generate(svc, j, body);
        LMTK_FUZZ_EXPECT(p.chat == chat);
        // The route answers an empty generate prompt ("load the model") without running anything.
        if (!chat && p.rq.prompt.empty()) return;
        svc.check_prompt(p.rq);
        lmtk::fuzz::check_decoded(p.rq, svc.n_vocab(), svc.eng().n_ctx());
    });
    return 0;
}
