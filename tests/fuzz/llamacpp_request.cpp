// Fuzzes the llama.cpp-native request decoding of `lmtk serve-model`
// (include/lmtk/serve/llamacpp.hpp): POST /completion through parse_body, read_completion and
// the prompt check; POST /tokenize, /detokenize and /apply-template.
//
// Input: one selector byte, then the request body. Selector % 4: 0 completion, 1 tokenize,
// 2 detokenize, 3 apply-template (seeds use '0' to '3').
//
// /tokenize and /detokenize decode inside their route handlers (add_routes), which need the
// transport; the two branches below make the same calls in the same order (fields, the
// service's tokenizer, piece_json), so the parts that see the input are the server's own.
#include "serve_fixture.hpp"

#include <lmtk/serve/llamacpp.hpp>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    lmtk::fuzz::service();
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    namespace serve = lmtk::serve;
    using serve::json;
    if (size == 0) return 0;
    auto& svc = lmtk::fuzz::service();
    const int route = data[0] % 4;
    const std::string body(reinterpret_cast<const char*>(data) + 1, size - 1);
    lmtk::fuzz::decode_only([&] {
        const json j = serve::parse_body(body);
        const serve::fields f(j);
        switch (route) {
            case 0: {
                serve::llamacpp::parsed p = serve::llamacpp::read_completion(svc, j, body);
                svc.check_prompt(p.rq);
                lmtk::fuzz::check_decoded(p.rq, svc.n_vocab(), svc.eng().n_ctx());
                break;
            }
            case 1: {  // /tokenize
                auto content = f.string("content");
                if (!content) serve::bad_request("content", "'content' is required");
                const bool add_special = f.boolean("add_special").value_or(false);
                const bool pieces = f.boolean("with_pieces").value_or(false);
                json toks = json::array();
                for (const std::int32_t id : svc.tokenize(*content, add_special)) {
                    LMTK_FUZZ_EXPECT(id >= 0 && std::size_t(id) < svc.n_vocab());
                    if (pieces) toks.push_back({{"id", id}, {"piece", serve::llamacpp::piece_json(svc.tokenizer().piece(id))}});
                    else toks.push_back(id);
                }
                (void)serve::dump({{"tokens", toks}});
                break;
            }
            case 2: {  // /detokenize
                std::vector<std::int32_t> ids;
                if (const json* t = f.array("tokens"))
                    for (const json& v : *t) {
                        if (!v.is_number_integer()) serve::bad_request("tokens", "not a token id");
                        const auto id = v.get<std::int64_t>();
                        if (id < 0 || static_cast<std::size_t>(id) >= svc.n_vocab()) serve::bad_request("tokens", "outside");
                        ids.push_back(static_cast<std::int32_t>(id));
                    }
                (void)serve::dump({{"content", svc.tokenizer().decode(ids)}});
                break;
            }
            default:  // /apply-template
                (void)serve::dump({{"prompt", svc.chat_prompt(serve::read_messages(f, "messages", serve::ordered_at(serve::ordered_fields(body, j), {"messages"})), serve::read_tool_request(f, serve::ordered_fields(body, j)))}});
                break;
        }
    });
    return 0;
}
