#pragma once
// Reading request bodies: typed field access that turns every wrong type into a 400 with a
// message naming the field, and the sampling fields the three HTTP APIs share.
//
// Clients mix conventions (llama.cpp fields in OpenAI requests, LangChain's obsolete Ollama
// options), so unknown fields are ignored; a known field with the wrong type is an error, and
// JSON null means "not given".
#include <lmtk/core/json.hpp>
#include <lmtk/sample/gbnf.hpp>
#include <lmtk/sample/json_schema.hpp>
#include <lmtk/serve/engine.hpp>

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace lmtk::serve {

using json = nlohmann::json;

// An error answered with an HTTP status; each API family words the body its own way.
struct http_error : std::runtime_error {
    http_error(int status, std::string message, std::string param = {}, std::string code = {})
        : std::runtime_error(std::move(message)), status(status), param(std::move(param)), code(std::move(code)) {}
    int status;
    std::string param;  // the offending field, when there is one
    std::string code;   // OpenAI-style machine-readable code, e.g. context_length_exceeded
};

[[noreturn]] inline void bad_request(const std::string& param, const std::string& message) {
    throw http_error(400, message, param);
}

// The JSON text of a value for messages; strings quoted, long values cut.
inline std::string show(const json& v) {
    std::string s = v.dump(-1, ' ', false, json::error_handler_t::replace);
    if (s.size() > 40) s = s.substr(0, 37) + "...";
    return s;
}

// Parses a body that must be a JSON object.
inline json parse_body(const std::string& body) {
    std::string why;
    auto parsed = core::try_parse_json(body, core::max_request_json_depth, &why);
    if (!parsed) throw http_error(400, "the request body is " + why);
    json j = std::move(*parsed);
    if (!j.is_object()) throw http_error(400, "the request body must be a JSON object, got " + show(j));
    return j;
}

class fields {
public:
    explicit fields(const json& j, std::string prefix = {}) : j_(j), prefix_(std::move(prefix)) {}

    const json* find(const char* key) const {
        const auto it = j_.find(key);
        return it == j_.end() || it->is_null() ? nullptr : &*it;
    }
    bool has(const char* key) const { return find(key) != nullptr; }

    std::optional<double> number(const char* key) const {
        const json* v = find(key);
        if (!v) return std::nullopt;
        if (!v->is_number()) bad(key, "must be a number", *v);
        return v->get<double>();
    }
    std::optional<float> real(const char* key) const {
        auto v = number(key);
        if (!v) return std::nullopt;
        if (!std::isfinite(*v) || std::fabs(*v) > 1e30) bad(key, "is out of range", *find(key));
        return static_cast<float>(*v);
    }
    // Integers; 3.0 counts as 3 (JavaScript clients cannot tell them apart), 3.5 does not.
    std::optional<std::int64_t> integer(const char* key) const {
        const json* v = find(key);
        if (!v) return std::nullopt;
        if (v->is_number_integer()) {
            if (v->is_number_unsigned() && v->get<std::uint64_t>() > std::uint64_t(std::numeric_limits<std::int64_t>::max()))
                bad(key, "is out of range", *v);
            return v->get<std::int64_t>();
        }
        if (v->is_number_float()) {
            const double d = v->get<double>();
            if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9e15) return static_cast<std::int64_t>(d);
        }
        bad(key, "must be an integer", *v);
    }
    // An integer in [lo, hi].
    std::optional<int> bounded(const char* key, std::int64_t lo, std::int64_t hi) const {
        auto v = integer(key);
        if (!v) return std::nullopt;
        if (*v < lo || *v > hi)
            bad(key, "must be between " + std::to_string(lo) + " and " + std::to_string(hi), *find(key));
        return static_cast<int>(*v);
    }
    std::optional<bool> boolean(const char* key) const {
        const json* v = find(key);
        if (!v) return std::nullopt;
        if (!v->is_boolean()) bad(key, "must be true or false", *v);
        return v->get<bool>();
    }
    std::optional<std::string> string(const char* key) const {
        const json* v = find(key);
        if (!v) return std::nullopt;
        if (!v->is_string()) bad(key, "must be a string", *v);
        return v->get<std::string>();
    }
    // A string or an array of strings (OpenAI `stop`).
    std::vector<std::string> strings(const char* key) const {
        const json* v = find(key);
        if (!v) return {};
        if (v->is_string()) return {v->get<std::string>()};
        if (!v->is_array()) bad(key, "must be a string or an array of strings", *v);
        std::vector<std::string> out;
        for (const json& s : *v) {
            if (!s.is_string()) bad(key, "must be a string or an array of strings", *v);
            out.push_back(s.get<std::string>());
        }
        return out;
    }
    const json* object(const char* key) const {
        const json* v = find(key);
        if (v && !v->is_object()) bad(key, "must be an object", *v);
        return v;
    }
    const json* array(const char* key) const {
        const json* v = find(key);
        if (v && !v->is_array()) bad(key, "must be an array", *v);
        return v;
    }

    [[noreturn]] void bad(const char* key, const std::string& what, const json& v) const {
        bad_request(prefix_ + key, "'" + prefix_ + key + "' " + what + ", got " + show(v));
    }

private:
    const json& j_;
    std::string prefix_;
};

// Limits on what one request may ask for (README, "Limits"); past one the answer is a 400 that
// names it. Stop strings are matched against the text after every token, so their number and
// length bound that work; a bias list longer than the vocabulary can only repeat ids.
inline constexpr std::size_t max_stop_strings = 16;
inline constexpr std::size_t max_stop_string_bytes = 1024;

// `stop` of any API: a string or an array of strings, within the limits above.
inline std::vector<std::string> read_stop(const fields& f, const char* key = "stop") {
    std::vector<std::string> out = f.strings(key);
    if (out.size() > max_stop_strings)
        bad_request(key, "'" + std::string(key) + "' takes at most " + std::to_string(max_stop_strings) + " strings, got " +
                             std::to_string(out.size()));
    for (const auto& s : out)
        if (s.size() > max_stop_string_bytes)
            bad_request(key, "'" + std::string(key) + "' strings are limited to " + std::to_string(max_stop_string_bytes) +
                                 " bytes, got one of " + std::to_string(s.size()));
    return out;
}

// logit_bias in OpenAI's object form {"123": -100} or llama.cpp's array form [[123, -100],
// [123, false]] (false bans the token). Ids outside the vocabulary are an error: a silently
// ignored mask would hide a tokenizer mismatch on the client side.
inline std::vector<sample::token_bias> read_logit_bias(const fields& f, const char* key, std::size_t n_vocab) {
    const json* v = f.find(key);
    std::vector<sample::token_bias> out;
    if (!v) return out;
    if ((v->is_object() || v->is_array()) && v->size() > n_vocab)
        bad_request(key, "'" + std::string(key) + "' has " + std::to_string(v->size()) + " entries, more than the " +
                             std::to_string(n_vocab) + " tokens of the vocabulary");
    auto add = [&](std::int64_t id, const json& b) {
        if (id < 0 || static_cast<std::size_t>(id) >= n_vocab)
            bad_request(key, "'" + std::string(key) + "' names token " + std::to_string(id) +
                                 ", outside the vocabulary of " + std::to_string(n_vocab));
        float bias = 0.0f;
        if (b.is_boolean() && !b.get<bool>()) bias = -std::numeric_limits<float>::infinity();
        else if (b.is_number() && std::isfinite(b.get<double>())) bias = static_cast<float>(std::clamp(b.get<double>(), -1e6, 1e6));
        else bad_request(key, "'" + std::string(key) + "' values must be numbers (or false to ban), got " + show(b));
        out.push_back({static_cast<std::int32_t>(id), bias});
    };
    if (v->is_object()) {
        for (const auto& [k, b] : v->items()) {
            std::size_t used = 0;
            long long id = -1;
            try {
                id = std::stoll(k, &used);
            } catch (...) {
                used = 0;
            }
            if (used != k.size() || k.empty())
                bad_request(key, "'" + std::string(key) + "' keys must be token ids, got \"" + k + "\"");
            add(id, b);
        }
    } else if (v->is_array()) {
        for (const json& pair : *v) {
            if (!pair.is_array() || pair.size() != 2 || !pair[0].is_number_integer())
                bad_request(key, "'" + std::string(key) + "' entries must be [token_id, bias] pairs, got " + show(pair));
            add(pair[0].get<std::int64_t>(), pair[1]);
        }
    } else {
        f.bad(key, "must be an object of token id -> bias", *v);
    }
    return out;
}

// The sampling fields every API understands, under their common names (llama.cpp, Ollama
// options and OpenAI agree on these). Absent fields keep the server's defaults.
inline void read_sampling(const fields& f, sampling_params& p) {
    if (auto v = f.real("temperature")) {
        if (*v < 0.0f) f.bad("temperature", "must be >= 0", *f.find("temperature"));
        p.temperature = *v;
    }
    if (auto v = f.bounded("top_k", -1, std::numeric_limits<std::int32_t>::max())) p.top_k = *v;
    if (auto v = f.real("top_p")) {
        if (*v < 0.0f || *v > 1.0f) f.bad("top_p", "must be between 0 and 1", *f.find("top_p"));
        p.top_p = *v;
    }
    if (auto v = f.real("min_p")) {
        if (*v < 0.0f || *v > 1.0f) f.bad("min_p", "must be between 0 and 1", *f.find("min_p"));
        p.min_p = *v;
    }
    if (auto v = f.real("repeat_penalty")) {
        if (*v <= 0.0f) f.bad("repeat_penalty", "must be > 0", *f.find("repeat_penalty"));
        p.repeat_penalty = *v;
    }
    if (auto v = f.bounded("repeat_last_n", -1, std::numeric_limits<std::int32_t>::max())) p.repeat_last_n = *v;
    if (auto v = f.real("presence_penalty")) p.presence_penalty = *v;
    if (auto v = f.real("frequency_penalty")) p.frequency_penalty = *v;
    if (const json* v = f.find("seed")) {
        // -1 (llama.cpp, Ollama) means "random": the slot's generator just continues.
        if (v->is_number_unsigned()) p.seed = v->get<std::uint64_t>();
        else if (auto i = f.integer("seed"); i && *i >= 0) p.seed = static_cast<std::uint64_t>(*i);
    }
}

}  // namespace lmtk::serve

namespace lmtk::serve {

// Output constraints from requests: a GBNF grammar's text or a JSON schema, turned into the
// grammar the engine runs. A grammar that does not parse, a schema lmtk cannot express, or one
// this model's vocabulary cannot begin to write is a 400 naming the field and the reason, never
// a silently unconstrained answer. Grammar text is limited like every other request field.
inline constexpr std::size_t max_grammar_bytes = 256 * 1024;

template <class Engine>
std::shared_ptr<const sample::grammar> read_grammar(const Engine& eng, const std::string& param, const std::string& text) {
    if (text.size() > max_grammar_bytes)
        bad_request(param, "'" + param + "' is larger than " + std::to_string(max_grammar_bytes) + " bytes");
    std::shared_ptr<const sample::grammar> g;
    try {
        g = std::make_shared<const sample::grammar>(sample::parse_gbnf(text));
    } catch (const error& e) {
        bad_request(param, "'" + param + "': " + e.what());
    }
    if (const std::string why = eng.grammar_unusable(g); !why.empty()) bad_request(param, "'" + param + "': " + why);
    return g;
}

// The value at `path` (object keys) in an ordered body, or null when it is not there.
inline const nlohmann::ordered_json* ordered_at(const nlohmann::ordered_json& j, std::initializer_list<const char*> path) {
    const nlohmann::ordered_json* at = &j;
    for (const char* k : path) {
        if (!at->is_object()) return nullptr;
        const auto it = at->find(k);
        if (it == at->end()) return nullptr;
        at = &*it;
    }
    return at;
}

// `schema`: nlohmann::ordered_json keeps the properties in the client's order (the order the
// output writes them); nlohmann::json would sort them.
template <class Engine, class Json>
std::shared_ptr<const sample::grammar> read_json_schema(const Engine& eng, const std::string& param, const Json& schema) {
    std::string text;
    try {
        text = sample::json_schema_to_gbnf(schema);
    } catch (const error& e) {
        bad_request(param, "'" + param + "': " + e.what());
    }
    return read_grammar(eng, param, text);
}

// llama-server's constraint fields, read on its native /completion and on the OpenAI routes
// as llama-server does: `grammar` (GBNF text) or `json_schema` (a schema), not both.
// `ordered`: the body's members in the client's key order (service.hpp ordered_fields).
template <class Engine>
void read_grammar_fields(const Engine& eng, const fields& f, std::shared_ptr<const sample::grammar>& out,
                         const nlohmann::ordered_json& ordered = nlohmann::ordered_json()) {
    if (auto g = f.string("grammar"); g && !g->empty()) {
        if (out) bad_request("grammar", "give one output constraint: 'grammar', 'json_schema' or 'response_format'");
        out = read_grammar(eng, "grammar", *g);
    }
    if (const json* js = f.find("json_schema"); js && !js->is_null()) {
        if (out) bad_request("json_schema", "give one output constraint: 'grammar', 'json_schema' or 'response_format'");
        if (const auto* o = ordered_at(ordered, {"json_schema"})) out = read_json_schema(eng, "json_schema", *o);
        else out = read_json_schema(eng, "json_schema", *js);
    }
}

// JSON mode (OpenAI json_object, Ollama "json"): any one JSON object, as the grammar of the
// schema {"type": "object"}, so that it closes before the token limit like any other grammar.
// Refused for a vocabulary that cannot write '{'.
template <class Engine>
std::shared_ptr<const sample::grammar> json_object_grammar(const Engine& eng, const std::string& param) {
    static const std::shared_ptr<const sample::grammar> g = std::make_shared<const sample::grammar>(
        sample::parse_gbnf(sample::json_schema_to_gbnf(nlohmann::ordered_json{{"type", "object"}})));
    if (const std::string why = eng.grammar_unusable(g); !why.empty())
        bad_request(param, "'" + param + "': JSON output: " + why + " ('{')");
    return g;
}

}  // namespace lmtk::serve
