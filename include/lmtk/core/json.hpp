#pragma once
// Untrusted JSON text, read safely: nlohmann's parser keeps its own stack, but copying,
// comparing and dumping a value recurse once per level, so a body of 80,000 '[' would end the
// process in a stack overflow long after parsing. The nesting depth is therefore counted
// (outside strings, in one pass that cannot recurse) before the parser sees the text, and text
// nested deeper than a documented limit is refused.
#include <lmtk/core/error.hpp>

#include <nlohmann/json.hpp>

#include <cstddef>
#include <initializer_list>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace lmtk::core {

// Depth allowed in request bodies and LMTP messages: real requests nest 5 to 10 deep (tools'
// JSON schemas the most); 64 leaves room for deep schemas and none for recursion attacks.
inline constexpr std::size_t max_request_json_depth = 64;

// Depth of [ and { nesting outside strings; stops counting once `limit` is passed.
inline std::size_t json_depth(std::string_view s, std::size_t limit) noexcept {
    std::size_t depth = 0, max_depth = 0;
    bool in_string = false;
    for (std::size_t i = 0; i < s.size(); ++i) {
        const char c = s[i];
        if (in_string) {
            if (c == '\\') ++i;
            else if (c == '"') in_string = false;
        } else if (c == '"') {
            in_string = true;
        } else if (c == '[' || c == '{') {
            if (++depth > max_depth && (max_depth = depth) > limit) return max_depth;
        } else if ((c == ']' || c == '}') && depth > 0) {
            --depth;
        }
    }
    return max_depth;
}

// Parses untrusted JSON text nested at most `max_depth` deep; nullopt with `why` set when the
// text is not JSON or nests deeper. Never throws for bad input.
inline std::optional<nlohmann::json> try_parse_json(std::string_view text, std::size_t max_depth, std::string* why = nullptr) {
    if (json_depth(text, max_depth) > max_depth) {
        if (why) *why = "JSON nested more than " + std::to_string(max_depth) + " levels deep";
        return std::nullopt;
    }
    nlohmann::json j = nlohmann::json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) {
        if (why) *why = "not valid JSON";
        return std::nullopt;
    }
    return j;
}

// Some members of a JSON object's text with every object's keys in document order (tools',
// schemas' and messages' keys keep the order the client wrote; nlohmann::json sorts them). Only
// the top-level members named in `keys` are kept; the text must already have passed
// try_parse_json. Ordered objects find keys by linear search, so an object of more than
// `max_keys` keys is refused (lmtk::error): the work stays linear in the text's size.
inline nlohmann::ordered_json ordered_members(std::string_view text, std::initializer_list<std::string_view> keys,
                                              std::size_t max_keys = 1024) {
    struct too_many {};
    bool keep = false;
    std::vector<std::size_t> counts;  // keys of each open object, innermost last
    auto cb = [&](int depth, nlohmann::ordered_json::parse_event_t event, nlohmann::ordered_json& parsed) {
        using ev = nlohmann::ordered_json::parse_event_t;
        if (depth == 0) return true;  // the top object itself
        if (depth == 1 && event == ev::key) {
            keep = false;
            for (const std::string_view k : keys) keep = keep || (parsed.is_string() && parsed.get_ref<const std::string&>() == k);
            return keep;
        }
        if (!keep) return false;
        if (event == ev::object_start) counts.push_back(0);
        else if (event == ev::object_end && !counts.empty()) counts.pop_back();
        else if (event == ev::key && !counts.empty() && ++counts.back() > max_keys) throw too_many{};
        return true;
    };
    nlohmann::ordered_json j;
    try {
        j = nlohmann::ordered_json::parse(text.begin(), text.end(), cb, /*allow_exceptions=*/false);
    } catch (const too_many&) {
        fail("an object of more than ", max_keys, " keys");
    }
    if (j.is_discarded() || !j.is_object()) return nlohmann::ordered_json::object();
    return j;
}

// Parses an untrusted JSON file's text. Duplicate keys in any object are errors (nlohmann would
// keep the last one silently); `what` names the text in messages. Throws lmtk::error.
inline nlohmann::json parse_json_file(std::string_view text, const std::string& what, std::size_t max_depth) {
    if (json_depth(text, max_depth) > max_depth) fail(what, ": JSON nested more than ", max_depth, " levels deep");
    // One set of keys per open object, innermost last.
    std::vector<std::set<std::string>> keys;
    std::string duplicate;
    auto cb = [&](int /*depth*/, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
        using ev = nlohmann::json::parse_event_t;
        if (event == ev::object_start) keys.emplace_back();
        else if (event == ev::object_end && !keys.empty()) keys.pop_back();
        else if (event == ev::key && !keys.empty() && parsed.is_string()) {
            if (!keys.back().insert(parsed.get<std::string>()).second && duplicate.empty())
                duplicate = parsed.get<std::string>();
        }
        return true;
    };
    nlohmann::json j;
    try {
        j = nlohmann::json::parse(text.begin(), text.end(), cb);
    } catch (const nlohmann::json::exception& e) {
        fail(what, ": invalid JSON: ", e.what());
    }
    if (!duplicate.empty()) fail(what, ": duplicate key '", duplicate, "'");
    return j;
}

}  // namespace lmtk::core
