// lmtk::sample::json_prefix and the json_constraint stage. The recogniser is checked against an
// independent JSON parser (nlohmann::json::accept) on thousands of random documents and
// one-byte mutations of them, and on hand-picked cases; the stage on a small vocabulary.
#include "support/random_json.hpp"
#include <lmtk/sample/json_constraint.hpp>
#include <lmtk/sample/sample.hpp>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <cmath>
#include <random>
#include <string>
#include <vector>

using lmtk::sample::json_prefix;

namespace {

// Accepted as a whole and complete.
bool complete_object(std::string_view s) {
    json_prefix p;
    return p.feed(s) && p.complete();
}
// Accepted as a prefix (every byte can still continue an object).
bool viable(std::string_view s) {
    json_prefix p;
    return p.feed(s);
}

// The reference: one JSON object, nothing after it, blank runs and depth within the limits.
bool reference(const std::string& s) {
    if (s.empty() || s.back() != '}' || !nlohmann::json::accept(s)) return false;
    const auto j = nlohmann::json::parse(s);
    if (!j.is_object()) return false;
    int run = 0, breaks = 0, depth = 0, max_depth = 0;
    bool in_str = false, esc = false;
    for (const char c : s) {
        if (in_str) {
            if (esc) esc = false;
            else if (c == '\\') esc = true;
            else if (c == '"') in_str = false;
            continue;
        }
        if (c == ' ' || c == '\n' || c == '\t' || c == '\r') {
            if ((c == '\n' || c == '\r') && ++breaks > 1) return false;
            if (++run > json_prefix::max_blank_run) return false;
            continue;
        }
        run = breaks = 0;
        if (c == '"') in_str = true;
        if (c == '{' || c == '[') max_depth = std::max(max_depth, ++depth);
        if (c == '}' || c == ']') --depth;
    }
    return max_depth <= json_prefix::max_depth;
}

}  // namespace

TEST_CASE("json_prefix accepts objects and their prefixes, and only those", "[sample][json]") {
    for (const char* ok : {"{}", " {}", "{\"a\":1}", "{ \"a\" : [1, -2.5e+3, true, false, null, \"x\\u00e9\\n\"] }",
                           "{\"a\":{\"b\":{\"c\":[[],{}]}}}", "{\"n\":0.0,\"m\":-0,\"e\":1E5}"}) {
        CAPTURE(ok);
        CHECK(complete_object(ok));
        const std::string s(ok);
        for (std::size_t i = 0; i < s.size(); ++i) CHECK(viable(s.substr(0, i)));
    }
    for (const char* bad : {"[]", "1", "\"s\"", "{}}", "{} ", "{\"a\"}", "{\"a\":}", "{\"a\":01}", "{\"a\":1.}", "{\"a\":.5}",
                            "{\"a\":tru}", "{\"a\":\"\\x\"}", "{a:1}", "{\"a\":1,}", "{\"a\":[1,]}", "{\"a\":[1}",
                            "{\"a\":\"\x01\"}", "{\"a\":-}", "{\"a\":1e}", "{\"a\":nul"}) {
        CAPTURE(bad);
        CHECK_FALSE(complete_object(bad));
    }
    CHECK_FALSE(viable("x"));
    CHECK_FALSE(viable("{\"a\":1]"));
    CHECK_FALSE(viable(std::string(21, ' ')));
    CHECK_FALSE(viable("{\n\n"));                 // one line break per blank run
    CHECK(viable("{\n  \"a\": 1,\n  \"b\""));
    CHECK(viable(std::string(20, ' ') + "{"));
    CHECK_FALSE(viable(std::string(33, '[')));
    CHECK_FALSE(viable("{\"a\":" + std::string(32, '[')));   // 33 levels
    CHECK(viable("{\"a\":" + std::string(31, '[')));          // 32 levels
}

TEST_CASE("json_prefix agrees with nlohmann::json on random documents and mutations", "[sample][json]") {
    std::mt19937 g(20261122);
    const std::string alphabet = "{}[]\":,0123456789-+.eEtrufalsn \n\\\x01xa";
    int valid = 0, invalid = 0;
    for (int round = 0; round < 3000; ++round) {
        nlohmann::json doc = nlohmann::json::object();
        for (unsigned i = 0, n = g() % 5; i < n; ++i) doc["key" + std::to_string(i)] = lmtk::test::random_json_value(g, 1, {.exponents = true, .multibyte = false});
        std::string s = g() % 3 == 0 ? doc.dump(g() % 3) : doc.dump();
        std::vector<std::string> cases = {s};
        for (int m = 0; m < 4 && !s.empty(); ++m) {
            std::string t = s;
            const std::size_t at = g() % t.size();
            const char c = alphabet[g() % alphabet.size()];
            switch (g() % 3) {
                case 0: t[at] = c; break;
                case 1: t.insert(t.begin() + std::ptrdiff_t(at), c); break;
                default: t.erase(at, 1); break;
            }
            cases.push_back(t);
        }
        for (const std::string& t : cases) {
            // A number too big for a double is valid syntax that nlohmann refuses (out_of_range
            // 406); the recogniser checks syntax only, so such cases say nothing here.
            try {
                (void)nlohmann::json::parse(t);
            } catch (const nlohmann::json::out_of_range&) {
                continue;
            } catch (const nlohmann::json::exception&) {
            }
            const bool want = reference(t);
            CAPTURE(t);
            REQUIRE(complete_object(t) == want);
            (want ? valid : invalid) += 1;
            // A valid document's every prefix is viable.
            if (want)
                for (std::size_t i = 0; i < t.size(); i += 1 + t.size() / 16) REQUIRE(viable(t.substr(0, i)));
        }
    }
    CHECK(valid > 3000);
    CHECK(invalid > 3000);
}

TEST_CASE("json_constraint bans what cannot continue the object and the end until it is closed", "[sample][json]") {
    using namespace lmtk::sample;
    json_vocab v;
    v.pieces = {"", "{", "}", "\"a\"", ":", "1", "x", " ", ", \"b\":2}"};
    v.is_end = {true, false, false, false, false, false, false, false, false};
    json_prefix state;
    chain<json_constraint, greedy> ch;
    ch.get<json_constraint>() = {&v, &state};
    rng gen(1);
    std::vector<std::int32_t> history;
    context ctx{history, gen};
    // Logits favour the wrong tokens; the constraint leaves only the ones that fit.
    auto pick = [&](std::vector<float> logits) { return ch(std::span<const float>(logits), ctx); };
    const std::vector<float> prefer_end = {9, 1, 1, 1, 1, 1, 8, 2, 1};
    CHECK(pick(prefer_end) == 7);  // a blank is allowed before '{'; the end and 'x' are not
    REQUIRE(state.feed(" "));
    std::vector<float> l = prefer_end;
    l[7] = 0;
    CHECK(pick(l) == 1);  // '{'
    REQUIRE(state.feed("{"));
    CHECK(pick({9, 1, 1, 2, 1, 1, 8, 0, 5}) == 3);  // "a" (the bigger ", "b":2}" does not fit yet)
    REQUIRE(state.feed("\"a\":1"));
    CHECK(pick({9, 1, 1, 2, 1, 1, 8, 0, 5}) == 8);  // now it does
    REQUIRE(state.feed(", \"b\":2}"));
    CHECK(state.complete());
    CHECK(pick({0, 1, 9, 2, 1, 1, 8, 7, 5}) == 0);  // closed: only the end remains
    ch.get<json_constraint>() = {};
    CHECK(pick({0, 1, 9, 2, 1, 1, 8, 7, 5}) == 2);  // off: untouched
}
