// JSON Schema to GBNF (include/lmtk/sample/json_schema.hpp), the parts best checked
// exhaustively: numeric bounds. Every integer in a window around each range is offered to the
// grammar of {"type": "integer", bounds} and must be accepted exactly when the bounds hold (the
// arithmetic comparison is the reference); bounded numbers likewise on decimal samples. The
// schemas real clients send are validated end to end by jsonschema in
// tests/reference/test_structured_output.py.
#include <catch2/catch.hpp>

#include <lmtk/sample/grammar.hpp>
#include <lmtk/sample/json_schema.hpp>

#include <cstdint>
#include <memory>
#include <optional>
#include <random>
#include <string>

using namespace lmtk::sample;
using ojson = nlohmann::ordered_json;

namespace {

bool accepts(const ojson& schema, const std::string& text) {
    grammar_matcher m(std::make_shared<const grammar>(parse_gbnf(json_schema_to_gbnf(schema))));
    return m.accept(text) && m.complete();
}

}  // namespace

TEST_CASE("json schema: integer bounds admit exactly the integers within them", "[sample][json_schema]") {
    struct range {
        std::optional<std::int64_t> min, max, xmin, xmax;
    };
    const range ranges[] = {{0, {}, {}, {}},        {{}, 100, {}, {}},     {18, 99, {}, {}},       {-250, 1234, {}, {}},
                            {-1000, -7, {}, {}},    {{}, {}, -5, 5},       {{}, {}, 0, {}},        {7, 7, {}, {}},
                            {100, 999, {}, {}},     {1, 1000, {}, {}},     {-9, 0, {}, {}},        {{}, -120, {}, {}},
                            {199, 2000, {}, {}},    {{}, {}, {}, 1},       {-1, {}, {}, {}}};
    for (const range& r : ranges) {
        ojson schema{{"type", "integer"}};
        if (r.min) schema["minimum"] = *r.min;
        if (r.max) schema["maximum"] = *r.max;
        if (r.xmin) schema["exclusiveMinimum"] = *r.xmin;
        if (r.xmax) schema["exclusiveMaximum"] = *r.xmax;
        INFO(schema.dump());
        auto g = std::make_shared<const grammar>(parse_gbnf(json_schema_to_gbnf(schema)));
        const auto within = [&](std::int64_t v) {
            return (!r.min || v >= *r.min) && (!r.max || v <= *r.max) && (!r.xmin || v > *r.xmin) && (!r.xmax || v < *r.xmax);
        };
        std::mt19937_64 rng(42);
        std::vector<std::int64_t> values;
        for (std::int64_t v = -2100; v <= 2100; ++v) values.push_back(v);
        for (int i = 0; i < 300; ++i) values.push_back(std::int64_t(rng() % 2000000000000ull) - 1000000000000ll);
        for (const std::int64_t v : values) {
            grammar_matcher m(g);
            const bool took = m.accept(std::to_string(v)) && m.complete();
            if (took != within(v)) FAIL_CHECK("value " << v << (took ? " accepted" : " refused"));
        }
        // Never a leading zero, a "-0" or a plus sign.
        grammar_matcher m(g);
        CHECK_FALSE((m.accept("007") && m.complete()));
    }
    CHECK_THROWS_WITH(json_schema_to_gbnf(ojson{{"type", "integer"}, {"minimum", 5}, {"maximum", 4}}), Catch::Contains("admit no value"));
    CHECK_THROWS_WITH(json_schema_to_gbnf(ojson{{"type", "integer"}, {"minimum", "5"}}), Catch::Contains("must be a number"));
}

TEST_CASE("json schema: bounded numbers", "[sample][json_schema]") {
    const ojson unit{{"type", "number"}, {"minimum", 0}, {"maximum", 1}};
    for (const char* ok : {"0", "0.5", "0.999", "1", "1.0", "1.000", "0.0"}) CHECK(accepts(unit, ok));
    for (const char* bad : {"-0.5", "1.5", "1.01", "2", "1e0", "-1"}) CHECK_FALSE(accepts(unit, bad));
    const ojson around{{"type", "number"}, {"minimum", -3}, {"maximum", 250}};
    for (const char* ok : {"-3", "-3.0", "-2.75", "-0.5", "0", "17.25", "249.99", "250", "250.00"}) CHECK(accepts(around, ok));
    for (const char* bad : {"-3.5", "-4", "250.5", "251", "1000"}) CHECK_FALSE(accepts(around, bad));
    const ojson negative{{"type", "number"}, {"maximum", -2}};
    CHECK(accepts(negative, "-2"));
    CHECK(accepts(negative, "-2.5"));
    CHECK(accepts(negative, "-123456.5"));
    CHECK_FALSE(accepts(negative, "-1.5"));
    CHECK_FALSE(accepts(negative, "0"));
    CHECK_THROWS_WITH(json_schema_to_gbnf(ojson{{"type", "number"}, {"exclusiveMinimum", 0}}), Catch::Contains("exclusiveMinimum"));
    CHECK_THROWS_WITH(json_schema_to_gbnf(ojson{{"type", "number"}, {"maximum", 0.5}}), Catch::Contains("maximum"));
}
