// libFuzzer harness: Jinja chat templates (lmtk::jinja), which lmtk reads from model files and
// --chat-template-file, rendered against a conversation.
//
// Input: template source, then optionally NUL and a JSON object used as the render context
// (messages, tools, add_generation_prompt, bos_token...). Without one, or when it does not parse,
// the context is a fixed three-turn conversation with a tool. lmtk::error is the only acceptable
// failure of parse and render; the output must stay within template_program::max_output.
#include <lmtk/core/error.hpp>
#include <lmtk/core/json.hpp>
#include <lmtk/tokenize/jinja/template.hpp>

#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string_view>

namespace {

const nlohmann::ordered_json& default_context() {
    static const nlohmann::ordered_json ctx = nlohmann::ordered_json::parse(R"({
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Weather in Paris? ünïcödé"},
            {"role": "assistant", "content": "", "tool_calls": [
                {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
            {"role": "tool", "content": "18C"},
            {"role": "user", "content": "Thanks"}
        ],
        "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather now",
                   "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}],
        "add_generation_prompt": true,
        "bos_token": "<s>",
        "eos_token": "</s>"
    })");
    return ctx;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view in(reinterpret_cast<const char*>(data), size);
    const std::size_t nul = in.find('\0');
    const std::string_view source = in.substr(0, nul);
    std::optional<nlohmann::ordered_json> ctx;
    if (nul != std::string_view::npos) {
        const std::string_view text = in.substr(nul + 1);
        if (lmtk::core::json_depth(text, lmtk::core::max_request_json_depth) <= lmtk::core::max_request_json_depth) {
            auto j = nlohmann::ordered_json::parse(text, nullptr, /*allow_exceptions=*/false);
            if (!j.is_discarded()) ctx = std::move(j);
        }
    }
    try {
        const lmtk::jinja::template_program t(source);
        try {
            const std::string out = t.render(ctx ? *ctx : default_context());
            if (out.size() > lmtk::jinja::template_program::max_output) std::abort();
        } catch (const lmtk::error&) {
        }
    } catch (const lmtk::error&) {
    }
    return 0;
}
