// lmtk render-template TEMPLATE CONTEXTS.json: renders a Jinja chat template file with lmtk's
// interpreter (tokenize/jinja/template.hpp) for each context of a JSON list and prints a JSON list
// of {"text": ...} or {"error": ...}, one per context. For checking templates against Python's
// jinja2 (tests/reference/test_chat_templates.py) and for template authors.
#include "args.hpp"
#include "commands.hpp"

#include <lmtk/core/json.hpp>
#include <lmtk/tokenize/jinja/template.hpp>

#include <cstdio>
#include <fstream>
#include <iterator>
#include <optional>
#include <string>

namespace lmtk::cli {

namespace {
std::string read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) fail("lmtk render-template: cannot open ", path);
    return std::string(std::istreambuf_iterator<char>(in), {});
}
}  // namespace

int cmd_render_template(const argv_t& argv) {
    const args a("render-template", argv, {}, {});
    if (a.positional().size() != 2) fail("lmtk render-template: expected TEMPLATE CONTEXTS.json");
    const std::string source = read_file(a.positional()[0]);
    // Ordered: a template's tojson writes keys in the order the client wrote them.
    const std::string ctx_text = read_file(a.positional()[1]);
    if (core::json_depth(ctx_text, core::max_request_json_depth) > core::max_request_json_depth)
        fail("lmtk render-template: ", a.positional()[1], " is nested more than ", core::max_request_json_depth, " levels");
    const nlohmann::ordered_json contexts = nlohmann::ordered_json::parse(ctx_text, nullptr, false);
    if (contexts.is_discarded()) fail("lmtk render-template: ", a.positional()[1], " is not valid JSON");
    if (!contexts.is_array()) fail("lmtk render-template: ", a.positional()[1], " must hold a JSON list of contexts");
    nlohmann::json out = nlohmann::json::array();
    std::optional<jinja::template_program> program;
    std::string parse_error;
    try {
        program.emplace(source);
    } catch (const error& e) {
        parse_error = e.what();
    }
    for (const auto& ctx : contexts) {
        if (!program) {
            out.push_back({{"error", parse_error}});
            continue;
        }
        try {
            out.push_back({{"text", program->render(ctx)}});
        } catch (const error& e) {
            out.push_back({{"error", e.what()}});
        }
    }
    const std::string text = out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
    if (std::fwrite(text.data(), 1, text.size(), stdout) != text.size() || std::fflush(stdout) != 0)
        fail("lmtk render-template: error writing stdout");
    return 0;
}

}  // namespace lmtk::cli
