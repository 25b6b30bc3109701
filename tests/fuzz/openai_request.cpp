// Fuzzes the OpenAI request decoding of `lmtk serve-model`: the body of POST /v1/chat/completions
// and POST /v1/completions through parse_body, read_chat / read_completion and the prompt check
// the routes make before a request runs (include/lmtk/serve/openai.hpp, params.hpp).
//
// Input: one selector byte, then the request body. Selector % 2: 0 chat, 1 completions (seeds
// use '0' and '1'). A decoded request must satisfy what the engine assumes of it
// (serve_fixture.hpp: check_decoded); chat messages are also rendered in a second chat format
// chosen by the selector's high bits, as a server with another model's template would.
#include "serve_fixture.hpp"

#include <lmtk/serve/openai.hpp>

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
    const std::uint8_t selector = data[0];
    const std::string body(reinterpret_cast<const char*>(data) + 1, size - 1);
    lmtk::fuzz::decode_only([&] {
        const serve::json j = serve::parse_body(body);
        if (selector % 2 == 0) {
            serve::openai::parsed p = serve::openai::read_chat(svc, j, body);
            svc.check_prompt(p.rq);
            LMTK_FUZZ_EXPECT(p.n >= 1 && p.n <= 16);
            lmtk::fuzz::check_decoded(p.rq, svc.n_vocab(), svc.eng().n_ctx());
            const auto other = static_cast<serve::chat_format>((selector >> 1) % 8);
            (void)svc.tokenize(serve::format_chat(other, serve::read_messages(serve::fields(j))));
            // The tool-call reader on hostile text, in every syntax: content and calls, no crash;
            // every call it returns names a declared tool and has an object for arguments.
            if (!p.tools.tools.empty())
                for (const auto syntax : {serve::tool_syntax::generic, serve::tool_syntax::hermes, serve::tool_syntax::llama3,
                                          serve::tool_syntax::mistral})
                    for (const auto& c : serve::parse_tool_output(syntax, body, p.tools.tools).calls)
                        LMTK_FUZZ_EXPECT(c.arguments.is_object() && !c.name.empty());
        } else {
            serve::openai::parsed p = serve::openai::read_completion(svc, j, body);
            svc.check_prompt(p.rq);
            LMTK_FUZZ_EXPECT(p.n >= 1 && p.n <= 16);
            LMTK_FUZZ_EXPECT(p.rq.stop.size() <= 16);
            lmtk::fuzz::check_decoded(p.rq, svc.n_vocab(), svc.eng().n_ctx());
        }
    });
    return 0;
}
