#pragma once
// Random JSON values for the tests that check a recogniser against nlohmann::json: nesting up to
// a few levels, every value type, strings with escapes, control and multi-byte characters.
// Numbers are integers and binary fractions; with `exponents` also values whose shortest form
// has an exponent (1.52587890625e-05), which llama.cpp's json.gbnf does not all accept. With
// `multibyte`, strings also hold UTF-8 characters of 2 to 4 bytes.
#include <nlohmann/json.hpp>

#include <cmath>
#include <random>
#include <string>

namespace lmtk::test {

struct random_json_options {
    bool exponents = false;
    bool multibyte = true;
};

inline nlohmann::json random_json_value(std::mt19937& g, int depth, random_json_options opt) {
    std::uniform_int_distribution<int> kind(0, depth > 3 ? 5 : 7);
    switch (kind(g)) {
        case 0: return nullptr;
        case 1: return g() % 2 == 0;
        case 2: return static_cast<int>(g() % 2000) - 1000;
        case 3:
            if (opt.exponents) return std::ldexp(static_cast<double>(g() % 100000) - 50000.0, static_cast<int>(g() % 40) - 20);
            return (static_cast<double>(g() % 100000) - 50000.0) / 64.0;
        case 4: {
            static const char* strings[] = {"", "a", "tab\there", "quote\"q", "back\\slash", "line\nfeed", "ctl\x01",
                                            "caf\xc3\xa9", "\xe6\x97\xa5\xe6\x9c\xac", "emoji \xf0\x9f\x98\x80"};
            return strings[g() % (opt.multibyte ? 10 : 7)];
        }
        case 5: return "word" + std::to_string(g() % 100);
        case 6: {
            nlohmann::json a = nlohmann::json::array();
            for (unsigned i = 0, n = g() % 4; i < n; ++i) a.push_back(random_json_value(g, depth + 1, opt));
            return a;
        }
        default: {
            nlohmann::json o = nlohmann::json::object();
            for (unsigned i = 0, n = g() % 4; i < n; ++i) o["k" + std::to_string(g() % 10)] = random_json_value(g, depth + 1, opt);
            return o;
        }
    }
}

}  // namespace lmtk::test
