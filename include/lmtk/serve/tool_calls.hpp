#pragma once
// Tool calling: OpenAI `tools` / `tool_choice` and Ollama `tools`.
//
// A request's tools reach the model in its own chat template when the template knows tools,
// and in a system message of lmtk's generic format when it does not. Which syntax the model
// answers in follows from the template (detect_tool_syntax):
//
//   hermes   <tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>   Hermes 2/3, Qwen 2.5/3
//   llama3   {"name": ..., "parameters": {...}}                            Llama 3.1 / 3.2 / 3.3
//   mistral  [TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]           Mistral Nemo / Small
//   generic  {"tool_calls": [{"name": ..., "arguments": {...}}]} or {"response": "..."}
//
// The output is constrained by a grammar built from the tools' parameter schemas
// (sample/json_schema.hpp), so every call names a declared tool and its arguments validate:
//   - tool_choice "required" or a named function: the grammar holds from the first token;
//   - "auto": for the generic format the grammar lets the model choose a call or a response;
//     for the others the model writes free text, and the grammar takes over from the moment
//     its output contains the syntax's opening (the trigger: "<tool_call>", "[TOOL_CALLS]",
//     "{\"name\""), as llama.cpp's lazy grammars do;
//   - "none": no grammar, and the output is never read as calls.
// parse_tool_output() reads the finished text back into content and calls; tool_stream holds
// back, while streaming, what may turn out to be a call.
#include <lmtk/core/error.hpp>
#include <lmtk/sample/json_schema.hpp>
#include <lmtk/serve/chat_template.hpp>
#include <lmtk/serve/params.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

namespace lmtk::serve {

enum class tool_syntax { generic, hermes, llama3, mistral };

constexpr std::string_view to_string(tool_syntax s) noexcept {
    switch (s) {
        case tool_syntax::generic: return "generic";
        case tool_syntax::hermes: return "hermes";
        case tool_syntax::llama3: return "llama3";
        case tool_syntax::mistral: return "mistral";
    }
    return "generic";
}

// From the chat template's source: the syntax its tool instructions and tool-call turns use.
// A template that never mentions tools gets the generic format, whatever its family.
inline tool_syntax detect_tool_syntax(std::string_view tmpl) noexcept {
    const auto has = [&](std::string_view s) { return tmpl.find(s) != std::string_view::npos; };
    if (!has("tools")) return tool_syntax::generic;
    if (has("<tool_call>")) return tool_syntax::hermes;
    if (has("[TOOL_CALLS]")) return tool_syntax::mistral;
    if (has("<|start_header_id|>") && has("\"parameters\"")) return tool_syntax::llama3;
    return tool_syntax::generic;
}

// Where the syntax's calls begin: the text that switches a lazy ("auto") grammar on.
constexpr std::string_view tool_trigger(tool_syntax s) noexcept {
    switch (s) {
        case tool_syntax::hermes: return "<tool_call>";
        case tool_syntax::mistral: return "[TOOL_CALLS]";
        case tool_syntax::llama3: return "{\"name\"";
        case tool_syntax::generic: return "";
    }
    return "";
}

struct tool_choice {
    enum kind_t { automatic, none, required, named } kind = automatic;
    std::string name;  // kind == named
};

// One tool as the request declared it (its `function` object).
struct tool_def {
    std::string name;
    std::string description;
    nlohmann::ordered_json parameters;  // a JSON Schema for the arguments object
};

struct tool_call {
    std::string id;
    std::string name;
    nlohmann::ordered_json arguments;  // an object, keys in the order the model wrote them
};

// What a request asked for about tools.
struct tool_request {
    std::vector<tool_def> tools;
    nlohmann::ordered_json sent;  // `tools` as the client wrote it, for the chat template
    tool_choice choice;
    bool parallel = true;  // parallel_tool_calls: more than one call per answer
    bool active() const noexcept { return !tools.empty() && choice.kind != tool_choice::none; }
};

// tools: [{type: "function", function: {name, description, parameters}}]; `where` names the
// field in errors. Ordered JSON keeps each schema's properties in the order they were sent.
inline std::vector<tool_def> read_tool_defs(const nlohmann::ordered_json& tools, const std::string& where = "tools") {
    std::vector<tool_def> out;
    if (tools.is_null()) return out;
    if (!tools.is_array()) bad_request(where, "'" + where + "' must be an array");
    if (tools.size() > 128) bad_request(where, "'" + where + "' holds more than 128 tools");
    for (std::size_t i = 0; i < tools.size(); ++i) {
        const std::string at = where + "[" + std::to_string(i) + "]";
        const auto& t = tools[i];
        if (!t.is_object()) bad_request(at, "'" + at + "' must be an object");
        if (auto ty = t.find("type"); ty != t.end() && !(ty->is_string() && *ty == "function"))
            bad_request(at + ".type", "'" + at + ".type': only \"function\" tools are supported");
        const auto fn = t.find("function");
        if (fn == t.end() || !fn->is_object()) bad_request(at + ".function", "'" + at + ".function' must be an object");
        tool_def d;
        const auto name = fn->find("name");
        if (name == fn->end() || !name->is_string() || name->get_ref<const std::string&>().empty())
            bad_request(at + ".function.name", "'" + at + ".function.name' must be a non-empty string");
        d.name = name->get<std::string>();
        if (auto desc = fn->find("description"); desc != fn->end() && desc->is_string()) d.description = desc->get<std::string>();
        d.parameters = nlohmann::ordered_json{{"type", "object"}};
        if (auto params = fn->find("parameters"); params != fn->end() && !params->is_null()) {
            if (!params->is_object()) bad_request(at + ".function.parameters", "'" + at + ".function.parameters' must be an object");
            d.parameters = *params;
        }
        for (const tool_def& o : out)
            if (o.name == d.name) bad_request(at + ".function.name", "two tools are named '" + d.name + "'");
        out.push_back(std::move(d));
    }
    return out;
}

// OpenAI tool_choice: "auto" | "none" | "required" | {"type": "function", "function": {"name"}}.
inline tool_choice read_tool_choice(const json* v, const std::vector<tool_def>& tools) {
    tool_choice c;
    if (!v || v->is_null()) return c;
    if (v->is_string()) {
        const std::string& s = v->get_ref<const std::string&>();
        if (s == "auto") c.kind = tool_choice::automatic;
        else if (s == "none") c.kind = tool_choice::none;
        else if (s == "required" || s == "any") c.kind = tool_choice::required;
        else bad_request("tool_choice", "'tool_choice' must be \"auto\", \"none\", \"required\" or a function, got " + show(*v));
    } else if (v->is_object()) {
        const auto fn = v->find("function");
        const json* name = fn != v->end() && fn->is_object() && fn->contains("name") ? &(*fn)["name"] : nullptr;
        if (!name && v->contains("name")) name = &(*v)["name"];
        if (!name || !name->is_string()) bad_request("tool_choice", "'tool_choice.function.name' must be a string");
        c.kind = tool_choice::named;
        c.name = name->get<std::string>();
        bool known = false;
        for (const tool_def& t : tools) known = known || t.name == c.name;
        if (!known) bad_request("tool_choice", "'tool_choice' names '" + c.name + "', which is not among 'tools'");
    } else {
        bad_request("tool_choice", "'tool_choice' must be a string or an object, got " + show(*v));
    }
    if (tools.empty() && c.kind != tool_choice::automatic && c.kind != tool_choice::none)
        bad_request("tool_choice", "'tool_choice' needs 'tools'");
    return c;
}

// The system text of the generic format: the tools, one compact JSON line each (a prompt's
// length is what a small model pays for most), and how to answer.
inline std::string generic_tool_prompt(const tool_request& tr) {
    std::string s = "Tools you can call (name, description, JSON Schema of the arguments):\n";
    for (const tool_def& t : tr.tools) {
        if (tr.choice.kind == tool_choice::named && t.name != tr.choice.name) continue;
        nlohmann::ordered_json one{{"name", t.name}};
        if (!t.description.empty()) one["description"] = t.description;
        one["parameters"] = t.parameters;
        s += one.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace) + "\n";
    }
    s += "To call tools, answer with only the JSON {\"tool_calls\": [{\"name\": <tool name>, \"arguments\": <arguments>}]}.";
    if (tr.choice.kind == tool_choice::automatic)
        s += " To answer without a tool, answer with only the JSON {\"response\": <your answer>}.";
    return s;
}

// Adds the generic format's instructions to a conversation: appended to its system message,
// or as a new one in front.
inline void add_generic_tool_prompt(std::vector<chat_message>& msgs, const tool_request& tr) {
    const std::string text = generic_tool_prompt(tr);
    if (!msgs.empty() && msgs.front().role == "system") msgs.front().content += "\n\n" + text;
    else msgs.insert(msgs.begin(), chat_message{"system", text, json()});
}

// The GBNF grammar of the calls a syntax allows (starting with the trigger for the lazy kinds).
// Throws lmtk::error when a tool's parameter schema cannot be expressed (a 400 for the caller).
inline std::string tool_call_gbnf(tool_syntax syntax, const tool_request& tr) {
    using sample::json_schema_detail::literal;
    const std::string args_key = syntax == tool_syntax::llama3 ? "parameters" : "arguments";
    std::string rules, alts;
    for (std::size_t i = 0; i < tr.tools.size(); ++i) {
        const tool_def& t = tr.tools[i];
        if (tr.choice.kind == tool_choice::named && t.name != tr.choice.name) continue;
        const std::string prefix = "tool" + std::to_string(i) + "-";
        try {
            rules += sample::json_schema_rules(t.parameters, prefix);
        } catch (const error& e) {
            fail("tool '", t.name, "': ", e.what());
        }
        const std::string call = "tc-call" + std::to_string(i);
        rules += call + " ::= \"{\" ws " + literal("\"name\"") + " ws \":\" ws " + literal(json(t.name).dump()) + " ws \",\" ws " +
                 literal("\"" + args_key + "\"") + " ws \":\" ws " + prefix + "root \"}\" ws\n";
        alts += (alts.empty() ? "" : " | ") + call;
    }
    rules += "tc-call ::= " + alts + "\n";
    // More calls after the first only with parallel_tool_calls.
    const auto more = [&](const std::string& next) { return tr.parallel ? " (" + next + ")*" : std::string(); };
    switch (syntax) {
        case tool_syntax::hermes:
            rules += "tc-one ::= \"<tool_call>\\n\" tc-call \"\\n</tool_call>\"\n";
            rules += "root ::= tc-one" + more("\"\\n\" tc-one") + "\n";
            break;
        case tool_syntax::mistral:
            rules += "root ::= \"[TOOL_CALLS]\" \"[\" ws tc-call" + more("\",\" ws tc-call") + " \"]\" ws\n";
            break;
        case tool_syntax::llama3:
            rules += "root ::= tc-call\n";
            break;
        case tool_syntax::generic: {
            const std::string calls = "\"{\" ws " + literal("\"tool_calls\"") + " ws \":\" ws \"[\" ws tc-call" +
                                      more("\",\" ws tc-call") + " \"]\" ws \"}\" ws";
            if (tr.choice.kind == tool_choice::automatic)
                rules += "root ::= " + calls + " | \"{\" ws " + literal("\"response\"") + " ws \":\" ws json-string \"}\" ws\n";
            else
                rules += "root ::= " + calls + "\n";
            break;
        }
    }
    return rules + sample::json_common_gbnf();
}

// Whether the grammar waits for the trigger (auto with a native syntax) or holds from the start.
inline bool tool_grammar_is_lazy(tool_syntax syntax, const tool_request& tr) noexcept {
    return tr.choice.kind == tool_choice::automatic && syntax != tool_syntax::generic;
}

// ---- reading the output back -------------------------------------------------------------------

struct tool_output {
    std::string content;            // text that is not a call (may be empty)
    std::vector<tool_call> calls;
};

namespace tool_detail {

inline std::optional<nlohmann::ordered_json> parse_json(std::string_view text) {
    if (core::json_depth(text, core::max_request_json_depth) > core::max_request_json_depth) return std::nullopt;
    auto j = nlohmann::ordered_json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) return std::nullopt;
    return j;
}

// {"name": "...", "arguments" | "parameters": {...}} naming a declared tool.
inline std::optional<tool_call> call_of(const nlohmann::ordered_json& j, const std::vector<tool_def>& tools) {
    if (!j.is_object()) return std::nullopt;
    const auto name = j.find("name");
    if (name == j.end() || !name->is_string()) return std::nullopt;
    bool known = false;
    for (const tool_def& t : tools) known = known || t.name == name->get_ref<const std::string&>();
    if (!known) return std::nullopt;
    tool_call c;
    c.name = name->get<std::string>();
    auto args = j.find("arguments");
    if (args == j.end()) args = j.find("parameters");
    c.arguments = args == j.end() ? nlohmann::ordered_json::object() : *args;
    if (c.arguments.is_string())  // some models write the arguments as a JSON string
        if (auto inner = parse_json(c.arguments.get_ref<const std::string&>())) c.arguments = std::move(*inner);
    if (!c.arguments.is_object()) return std::nullopt;
    return c;
}

// Every element of a JSON array of calls, appended to `out`; false when one is not a call.
inline bool calls_of(const nlohmann::ordered_json& list, const std::vector<tool_def>& tools, std::vector<tool_call>& out) {
    if (!list.is_array() || list.empty()) return false;
    for (const auto& c : list) {
        auto one = call_of(c, tools);
        if (!one) return false;
        out.push_back(std::move(*one));
    }
    return true;
}

inline std::string_view trim(std::string_view s) {
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
    return s;
}

}  // namespace tool_detail

// Splits finished output into content and calls. Text that does not parse as the syntax's
// calls stays content, whole: nothing the model wrote is dropped.
inline tool_output parse_tool_output(tool_syntax syntax, std::string_view text, const std::vector<tool_def>& tools) {
    using namespace tool_detail;
    tool_output out;
    const auto all_content = [&] {
        tool_output o;
        o.content = std::string(text);
        return o;
    };
    switch (syntax) {
        case tool_syntax::generic: {
            const auto j = parse_json(trim(text));
            if (!j || !j->is_object()) return all_content();
            if (auto r = j->find("response"); r != j->end() && r->is_string() && j->size() == 1) {
                out.content = r->get<std::string>();
                return out;
            }
            const auto calls = j->find("tool_calls");
            if (calls == j->end() || !calls_of(*calls, tools, out.calls)) return all_content();
            return out;
        }
        case tool_syntax::hermes: {
            const std::string_view open = "<tool_call>", close = "</tool_call>";
            std::size_t at = text.find(open);
            if (at == std::string_view::npos) return all_content();
            out.content = std::string(text.substr(0, at));
            while (at != std::string_view::npos) {
                const std::size_t body = at + open.size();
                const std::size_t end = text.find(close, body);
                auto j = parse_json(trim(text.substr(body, end == std::string_view::npos ? std::string_view::npos : end - body)));
                auto one = j ? call_of(*j, tools) : std::nullopt;
                if (!one) return all_content();
                out.calls.push_back(std::move(*one));
                if (end == std::string_view::npos) break;
                at = text.find(open, end + close.size());
                if (at == std::string_view::npos && !trim(text.substr(end + close.size())).empty()) return all_content();
            }
            return out;
        }
        case tool_syntax::mistral: {
            const std::string_view open = "[TOOL_CALLS]";
            const std::size_t at = text.find(open);
            if (at == std::string_view::npos) return all_content();
            const auto j = parse_json(trim(text.substr(at + open.size())));
            if (!j || !calls_of(*j, tools, out.calls)) return all_content();
            out.content = std::string(text.substr(0, at));
            return out;
        }
        case tool_syntax::llama3: {
            // The call is the JSON object that opens with "name" (blanks allowed inside the brace),
            // after an optional <|python_tag|>; what comes before it is content.
            std::size_t at = std::string_view::npos;
            for (std::size_t b = text.find('{'); b != std::string_view::npos; b = text.find('{', b + 1)) {
                const std::string_view after = trim(text.substr(b + 1));
                if (after.substr(0, 6) == "\"name\"") {
                    at = b;
                    break;
                }
            }
            if (at == std::string_view::npos) return all_content();
            const auto j = parse_json(trim(text.substr(at)));
            auto one = j ? call_of(*j, tools) : std::nullopt;
            if (!one) return all_content();
            out.content = std::string(text.substr(0, at));
            if (const std::size_t tag = out.content.find("<|python_tag|>"); tag != std::string::npos) out.content.erase(tag);
            out.calls.push_back(std::move(*one));
            return out;
        }
    }
    return all_content();
}

// Streaming: which text may be shown as content now. With a lazy grammar, text before the
// trigger is content and goes out at once, except a tail that could be the trigger's start;
// once the trigger appears, or for a grammar from the start, everything waits for the end
// (the finished output is then parsed; content not yet shown goes out with the calls).
class tool_stream {
public:
    tool_stream(tool_syntax syntax, bool lazy) : trigger_(tool_trigger(syntax)), lazy_(lazy) {}

    // Text to show now.
    std::string feed(std::string_view text) {
        all_ += text;
        if (!lazy_ || triggered_) return {};
        const std::size_t t = all_.find(trigger_, shown_);
        if (t != std::string::npos) {
            triggered_ = true;
            return take(t);
        }
        // Hold back the longest tail that is a prefix of the trigger.
        std::size_t keep = 0;
        for (std::size_t k = std::min(trigger_.size() - 1, all_.size() - shown_); k > 0; --k)
            if (std::string_view(all_).substr(all_.size() - k) == trigger_.substr(0, k)) {
                keep = k;
                break;
            }
        return take(all_.size() - keep);
    }
    // What has been shown as content so far.
    std::string_view shown() const noexcept { return std::string_view(all_).substr(0, shown_); }
    // The rest of the final content: what parse_tool_output found minus what was shown.
    std::string rest_of(const std::string& content) const {
        const std::string_view s = shown();
        if (content.size() >= s.size() && std::string_view(content).substr(0, s.size()) == s) return content.substr(s.size());
        return {};
    }

private:
    std::string take(std::size_t upto) {
        std::string out = all_.substr(shown_, upto - shown_);
        shown_ = upto;
        return out;
    }
    std::string all_;
    std::string_view trigger_;
    std::size_t shown_ = 0;
    bool lazy_;
    bool triggered_ = false;
};

inline std::string new_tool_call_id() {
    thread_local std::mt19937_64 g{std::random_device{}()};
    static constexpr char alnum[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    std::string s = "call_";
    for (int i = 0; i < 24; ++i) s += alnum[g() % 62];
    return s;
}

}  // namespace lmtk::serve
