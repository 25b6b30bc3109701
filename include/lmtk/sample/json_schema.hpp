#pragma once
// JSON Schema to GBNF: the output of a model constrained by the grammar is a JSON document the
// schema validates. The subset real clients send (Pydantic's model_json_schema(), OpenAI's
// strict json_schema, Ollama's format):
//
//   type (one or a list), enum, const, anyOf / oneOf, $ref to #/$defs/NAME or
//   #/definitions/NAME (recursion allowed), object: properties in declared order, required,
//   additionalProperties (false or absent: none; true or a schema: any number after the
//   declared ones), array: items, prefixItems, minItems, maxItems, string: minLength,
//   maxLength, format date / time / date-time / uuid, integer with minimum / maximum /
//   exclusiveMinimum / exclusiveMaximum (Pydantic's ge, le, gt, lt), number with an integer
//   minimum / maximum (a bounded number is written without an exponent), boolean, null.
//   Annotations (title, description, default, examples, $schema, $id...) are ignored.
//
// Any other keyword that constrains values (pattern, multipleOf, allOf, not, a number's
// exclusive or fractional bounds, ...) is
// refused with lmtk::error naming it: an output the grammar allows must never fail the schema.
// Blanks between tokens are limited as in llama.cpp's JSON grammar (a line break and up to 20
// blanks), so that a model cannot idle in whitespace until its token limit.
#include <lmtk/core/error.hpp>

#include <cctype>
#include <utility>
#include <limits>
#include <cmath>
#include <algorithm>
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace lmtk::sample {

namespace json_schema_detail {

using json = nlohmann::ordered_json;  // keeps the properties in the order the schema declares them

// A GBNF string literal holding `bytes` (escaped so the grammar parser reads them back).
inline std::string literal(std::string_view bytes) {
    std::string out = "\"";
    for (const char ch : bytes) {
        const auto c = static_cast<unsigned char>(ch);
        if (c == '"' || c == '\\') {
            out += '\\';
            out += ch;
        } else if (c == '\n') out += "\\n";
        else if (c == '\r') out += "\\r";
        else if (c == '\t') out += "\\t";
        else if (c < 0x20 || c == 0x7F) {
            static const char* hex = "0123456789ABCDEF";
            out += "\\x";
            out += hex[c >> 4];
            out += hex[c & 15];
        } else
            out += ch;
    }
    return out + "\"";
}

class converter {
public:
    static constexpr std::size_t max_depth = 64;
    static constexpr std::size_t max_rules = 4096;

    // `prefix` goes before every rule name (the top rule is prefix + "root"), so that several
    // schemas can live in one grammar; the shared JSON rules (json_common_gbnf) are written only
    // without a prefix, and a caller combining schemas writes them once.
    explicit converter(const json& root, std::string prefix = {}) : root_(root), prefix_(std::move(prefix)) {}

    std::string run() {
        const std::string top_name = prefix_ + "root";
        const std::string top = visit(root_, "root", 0);
        std::string out;
        for (const auto& [name, body] : rules_) out += name + " ::= " + body + "\n";
        // The top rule must exist by that name: visit() may have returned another rule or an inline body.
        if (!rules_.count(top_name)) out += top_name + " ::= " + top + "\n";
        if (prefix_.empty()) out += common_rules();
        return out;
    }

    static const char* common_rules() noexcept {
        return R"(ws ::= | " " | "\n" [ \t]{0,20}
json-string ::= "\"" json-char* "\"" ws
json-char ::= [^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4})
json-integer ::= "-"? ("0" | [1-9] [0-9]{0,15}) ws
json-number ::= "-"? ("0" | [1-9] [0-9]{0,15}) ("." [0-9]{1,16})? ([eE] [-+]? [0-9]{1,3})? ws
json-boolean ::= ("true" | "false") ws
json-null ::= "null" ws
json-value ::= json-object | json-array | json-string | json-number | json-boolean | json-null
json-object ::= "{" ws (json-string ":" ws json-value ("," ws json-string ":" ws json-value)*)? "}" ws
json-array ::= "[" ws (json-value ("," ws json-value)*)? "]" ws
)";
    }

private:
    [[noreturn]] static void unsupported(const std::string& where, const std::string& what) {
        fail("json schema: ", what, " at ", where.empty() ? "the root" : where, " is not supported");
    }

    std::string add_rule(const std::string& hint, const std::string& body) {
        if (rules_.size() >= max_rules) fail("json schema: too large (more than ", max_rules, " rules)");
        std::string name = prefix_;
        for (const char c : hint) name += (std::isalnum(static_cast<unsigned char>(c)) || c == '-') ? c : '-';
        if (name == prefix_) name += "r";
        if (rules_.count(name)) name += "-" + std::to_string(rules_.size());
        rules_[name] = body;
        return name;
    }

    // A literal JSON value (enum / const), followed by blanks.
    static std::string value_literal(const json& v) { return literal(v.dump()) + " ws"; }

    std::string visit(const json& s, const std::string& where, std::size_t depth) {
        if (depth > max_depth) fail("json schema: nested more than ", max_depth, " levels");
        if (s.is_boolean()) {
            if (s.get<bool>()) return "json-value";
            fail("json schema: the schema 'false' at ", where, " admits no value");
        }
        if (!s.is_object()) fail("json schema: a schema must be an object or a boolean at ", where);
        static const std::set<std::string, std::less<>> ignored = {
            "title", "description", "default", "examples", "$schema", "$id", "$comment", "deprecated", "readOnly",
            "writeOnly", "$defs", "definitions", "strict", "name", "discriminator", "contentMediaType", "contentEncoding"};
        static const std::set<std::string, std::less<>> known = {
            "type", "enum", "const", "anyOf", "oneOf", "$ref", "properties", "required", "additionalProperties",
            "items", "prefixItems", "minItems", "maxItems", "minLength", "maxLength", "format",
            "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"};
        for (const auto& [k, v] : s.items()) {
            (void)v;
            if (!known.count(k) && !ignored.count(k)) unsupported(where, "the keyword '" + k + "'");
        }
        if (const auto r = s.find("$ref"); r != s.end()) return ref(*r, where, depth);
        if (const auto e = s.find("enum"); e != s.end()) {
            if (!e->is_array() || e->empty()) fail("json schema: 'enum' at ", where, " must be a non-empty array");
            std::string alts;
            for (const json& v : *e) alts += (alts.empty() ? "" : " | ") + value_literal(v);
            return "(" + alts + ")";
        }
        if (const auto c = s.find("const"); c != s.end()) return value_literal(*c);
        for (const char* key : {"anyOf", "oneOf"})
            if (const auto a = s.find(key); a != s.end()) {
                if (!a->is_array() || a->empty()) fail("json schema: '", key, "' at ", where, " must be a non-empty array");
                if (s.contains("type") || s.contains("properties"))
                    unsupported(where, std::string("'") + key + "' beside 'type' or 'properties'");
                std::string alts;
                for (std::size_t i = 0; i < a->size(); ++i)
                    alts += (alts.empty() ? "" : " | ") + visit((*a)[i], where + "/" + key + "/" + std::to_string(i), depth + 1);
                return "(" + alts + ")";
            }
        const auto t = s.find("type");
        if (t == s.end()) {
            if (s.contains("properties")) return object(s, where, depth);
            if (s.contains("items") || s.contains("prefixItems")) return array(s, where, depth);
            return "json-value";
        }
        if (t->is_array()) {
            if (t->empty()) fail("json schema: 'type' at ", where, " is an empty list");
            std::string alts;
            for (const json& one : *t) alts += (alts.empty() ? "" : " | ") + typed(s, one, where, depth);
            return "(" + alts + ")";
        }
        return typed(s, *t, where, depth);
    }

    std::string typed(const json& s, const json& type, const std::string& where, std::size_t depth) {
        if (!type.is_string()) fail("json schema: 'type' at ", where, " must be a string or a list of strings");
        const std::string& t = type.get_ref<const std::string&>();
        if (t == "object") return object(s, where, depth);
        if (t == "array") return array(s, where, depth);
        if (t == "string") return string(s, where);
        if (t == "integer") return integer(s, where);
        if (t == "number") return number(s, where);
        if (t == "boolean") return "json-boolean";
        if (t == "null") return "json-null";
        fail("json schema: unknown type '", t, "' at ", where);
    }

    // ---- bounded numbers ------------------------------------------------------------------
    // Decimal integers of json-integer's size (16 digits) bound every range.
    static constexpr std::int64_t max_magnitude = 9999999999999999;
    static constexpr std::int64_t unbounded = std::numeric_limits<std::int64_t>::max();

    // A bound's value: a number within json-integer's size.
    static double bound_of(const json& v, const char* key, const std::string& where) {
        if (!v.is_number()) fail("json schema: '", key, "' at ", where, " must be a number");
        const double d = v.get<double>();
        if (!(std::fabs(d) <= double(max_magnitude))) fail("json schema: '", key, "' at ", where, " is out of range");
        return d;
    }

    // The integers [lo, hi] a schema's bounds allow; `for_number`: bounds that are not whole
    // numbers, or exclusive ones, are refused (a number's grammar handles only those).
    static std::pair<std::int64_t, std::int64_t> integer_bounds(const json& s, const std::string& where, bool for_number) {
        std::int64_t lo = -unbounded, hi = unbounded;
        for (const char* key : {"minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"}) {
            const auto it = s.find(key);
            if (it == s.end()) continue;
            const double d = bound_of(*it, key, where);
            const bool exclusive = key[0] == 'e';
            const bool lower = std::string_view(key).find("inimum") != std::string_view::npos;
            if (for_number && (exclusive || d != std::floor(d)))
                unsupported(where, std::string("a number's '") + key + "' other than an inclusive whole number");
            if (lower) lo = std::max(lo, exclusive ? std::int64_t(std::floor(d)) + 1 : std::int64_t(std::ceil(d)));
            else hi = std::min(hi, exclusive ? std::int64_t(std::ceil(d)) - 1 : std::int64_t(std::floor(d)));
        }
        if (lo > hi) fail("json schema: the bounds at ", where.empty() ? "the root" : where, " admit no value");
        return {lo, hi};
    }

    // Digit strings of equal length from x to y (x <= y), as a GBNF sequence.
    static std::string same_length_range(const std::string& x, const std::string& y) {
        if (x.empty()) return "";
        if (x == y) return literal(x);
        const auto digit = [](char a, char b) {
            if (a == b) return std::string("\"") + a + "\"";
            return std::string("[") + a + "-" + b + "]";
        };
        const auto any = [](std::size_t n) { return n == 0 ? std::string() : n == 1 ? std::string("[0-9]") : "[0-9]{" + std::to_string(n) + "}"; };
        const auto join = [](std::string a, const std::string& b) { return b.empty() ? a : a + " " + b; };
        if (x[0] == y[0]) return join(literal(x.substr(0, 1)), same_length_range(x.substr(1), y.substr(1)));
        const std::size_t n = x.size() - 1;
        const bool x_rest_zero = x.find_first_not_of('0', 1) == std::string::npos;
        const bool y_rest_nine = y.find_first_not_of('9', 1) == std::string::npos;
        std::string alts;
        const auto add = [&](const std::string& a) { alts += (alts.empty() ? "" : " | ") + a; };
        char mid_lo = x[0], mid_hi = y[0];
        if (!x_rest_zero) {
            add(join(literal(x.substr(0, 1)), same_length_range(x.substr(1), std::string(n, '9'))));
            ++mid_lo;
        }
        if (!y_rest_nine) --mid_hi;
        if (mid_lo <= mid_hi) add(join(digit(mid_lo, mid_hi), any(n)));
        if (!y_rest_nine) add(join(literal(y.substr(0, 1)), same_length_range(std::string(n, '0'), y.substr(1))));
        return "(" + alts + ")";
    }

    // Decimal integers without sign or leading zeros from a to b (0 <= a <= b <= max_magnitude).
    static std::string magnitude_range(std::int64_t a, std::int64_t b) {
        std::string alts;
        const auto add = [&](const std::string& x) { alts += (alts.empty() ? "" : " | ") + x; };
        if (a == 0) {
            add("\"0\"");
            if (b == 0) return alts;
            a = 1;
        }
        const std::string sa = std::to_string(a), sb = std::to_string(b);
        for (std::size_t len = sa.size(); len <= sb.size(); ++len) {
            const std::string lo = len == sa.size() ? sa : "1" + std::string(len - 1, '0');
            const std::string hi = len == sb.size() ? sb : std::string(len, '9');
            add(same_length_range(lo, hi));
        }
        return "(" + alts + ")";
    }

    // Integers in [lo, hi] (either side may be unbounded).
    static std::string integer_range(std::int64_t lo, std::int64_t hi) {
        std::string alts;
        const auto add = [&](const std::string& x) { alts += (alts.empty() ? "" : " | ") + x; };
        if (hi >= 0) add(magnitude_range(std::max<std::int64_t>(lo, 0), std::min(hi, max_magnitude)));
        if (lo < 0) add("\"-\" " + magnitude_range(hi < 0 ? -hi : 1, std::min(lo == -unbounded ? max_magnitude : -lo, max_magnitude)));
        return "(" + alts + ")";
    }

    std::string integer(const json& s, const std::string& where) {
        const auto [lo, hi] = integer_bounds(s, where, false);
        if (lo == -unbounded && hi == unbounded) return "json-integer";
        return integer_range(lo, hi) + " ws";
    }

    // A number in [lo, hi] (whole bounds): its integer part below the upper bound with any
    // fraction, or equal to it with a fraction of zeros; the negative side mirrored.
    std::string number(const json& s, const std::string& where) {
        const auto [lo, hi] = integer_bounds(s, where, true);
        if (lo == -unbounded && hi == unbounded) return "json-number";
        const std::string frac = "(\".\" [0-9]{1,16})?", zeros = "(\".\" \"0\"{1,16})?";
        const auto side = [&](std::int64_t a, std::int64_t b) {  // magnitudes [a, b], b may be unbounded
            std::string alts;
            const std::int64_t top = std::min(b, max_magnitude);
            if (top > a || b == unbounded) alts = magnitude_range(a, b == unbounded ? top : top - 1) + " " + frac;
            if (b != unbounded) alts += (alts.empty() ? "" : " | ") + magnitude_range(top, top) + " " + zeros;
            return "(" + alts + ")";
        };
        std::string alts;
        if (hi >= 0) alts = side(std::max<std::int64_t>(lo, 0), hi);
        if (lo < 0) alts += (alts.empty() ? "" : " | ") + std::string("\"-\" ") + side(hi >= 0 ? 0 : -hi, lo == -unbounded ? unbounded : -lo);
        return "(" + alts + ") ws";
    }

    std::string ref(const json& r, const std::string& where, std::size_t depth) {
        if (!r.is_string()) fail("json schema: '$ref' at ", where, " must be a string");
        const std::string& target = r.get_ref<const std::string&>();
        std::string name;
        const json* defs = nullptr;
        for (const char* prefix : {"#/$defs/", "#/definitions/"})
            if (target.rfind(prefix, 0) == 0) {
                name = target.substr(std::string_view(prefix).size());
                const auto d = root_.find(std::string_view(prefix).substr(2, std::string_view(prefix).size() - 3));
                if (d != root_.end() && d->is_object()) defs = &*d;
            }
        if (target == "#") {
            refs_["#"] = prefix_ + "root";
            return prefix_ + "root";
        }
        if (!defs || name.empty() || !defs->contains(name)) unsupported(where, "the reference '" + target + "'");
        if (const auto it = refs_.find(target); it != refs_.end()) return it->second;
        // Named before it is visited, so that a recursive reference finds it.
        std::string rule = prefix_ + "def-" + name;
        for (char& c : rule)
            if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-')) c = '-';
        if (rules_.count(rule)) rule += "-" + std::to_string(rules_.size());
        refs_[target] = rule;
        rules_[rule] = "";  // reserved
        rules_[rule] = visit((*defs)[name], target, depth + 1);
        return rule;
    }

    std::string string(const json& s, const std::string& where) {
        if (const auto f = s.find("format"); f != s.end() && f->is_string()) {
            const std::string& fmt = f->get_ref<const std::string&>();
            const std::string date = R"([0-9]{4} "-" ("0" [1-9] | "1" [0-2]) "-" ("0" [1-9] | [12] [0-9] | "3" [01]))";
            const std::string time = R"(([01] [0-9] | "2" [0-3]) ":" [0-5] [0-9] ":" [0-5] [0-9] ("." [0-9]{1,9})? ("Z" | [+-] ([01] [0-9] | "2" [0-3]) ":" [0-5] [0-9]))";
            if (fmt == "date") return "\"\\\"\" " + date + " \"\\\"\" ws";
            if (fmt == "time") return "\"\\\"\" " + time + " \"\\\"\" ws";
            if (fmt == "date-time") return "\"\\\"\" " + date + " \"T\" " + time + " \"\\\"\" ws";
            if (fmt == "uuid")
                return R"("\"" [0-9a-fA-F]{8} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{12} "\"" ws)";
            // Other formats (email, uri, ...) are annotations by default in JSON Schema: any string.
        }
        const auto lo = s.find("minLength"), hi = s.find("maxLength");
        if (lo == s.end() && hi == s.end()) return "json-string";
        const auto bound = [&](const json& v, const char* key) {
            if (!v.is_number_integer() || v.get<std::int64_t>() < 0 || v.get<std::int64_t>() > 1000)
                fail("json schema: '", key, "' at ", where, " must be an integer from 0 to 1000");
            return static_cast<std::size_t>(v.get<std::int64_t>());
        };
        const std::size_t min = lo == s.end() ? 0 : bound(*lo, "minLength");
        const std::string rep = hi == s.end() ? "{" + std::to_string(min) + ",}"
                                              : "{" + std::to_string(min) + "," + std::to_string(bound(*hi, "maxLength")) + "}";
        if (hi != s.end() && bound(*hi, "maxLength") < min) fail("json schema: maxLength < minLength at ", where);
        return "\"\\\"\" json-char" + rep + " \"\\\"\" ws";
    }

    std::string array(const json& s, const std::string& where, std::size_t depth) {
        const auto count = [&](const char* key, std::size_t dflt) {
            const auto v = s.find(key);
            if (v == s.end()) return dflt;
            if (!v->is_number_integer() || v->get<std::int64_t>() < 0 || v->get<std::int64_t>() > 1000)
                fail("json schema: '", key, "' at ", where, " must be an integer from 0 to 1000");
            return static_cast<std::size_t>(v->get<std::int64_t>());
        };
        std::vector<std::string> prefix;
        if (const auto p = s.find("prefixItems"); p != s.end()) {
            if (!p->is_array()) fail("json schema: 'prefixItems' at ", where, " must be an array");
            for (std::size_t i = 0; i < p->size(); ++i)
                prefix.push_back(visit((*p)[i], where + "/prefixItems/" + std::to_string(i), depth + 1));
        }
        std::string item = "json-value";
        bool more = true;
        if (const auto it = s.find("items"); it != s.end()) {
            if (it->is_boolean() && !it->get<bool>()) more = false;
            else item = visit(*it, where + "/items", depth + 1);
        } else if (!prefix.empty()) {
            more = true;  // items absent: anything may follow the prefix
        }
        const std::size_t min = count("minItems", 0);
        const std::size_t max = count("maxItems", static_cast<std::size_t>(-1));
        if (max < min) fail("json schema: maxItems < minItems at ", where);
        if (!prefix.empty() && (min > prefix.size() || s.contains("maxItems")))
            unsupported(where, "'minItems' or 'maxItems' with 'prefixItems'");
        std::string body = "\"[\" ws ";
        if (!prefix.empty()) {
            // The prefix items in order, each optional only with all that follow it.
            std::string tail = more ? "(\",\" ws " + item + ")*" : "";
            std::string inner;
            for (std::size_t i = prefix.size(); i-- > 0;) {
                const std::string rest = i + 1 < prefix.size() ? "(\",\" ws " + inner + ")?" : tail;
                inner = prefix[i] + " " + rest;
            }
            body += min == prefix.size() ? inner : "(" + inner + ")?";
        } else if (more && max > 0) {
            const std::string item_rule = add_rule(where.empty() ? "item" : where + "-item", item);
            if (min == 0) {
                body += "(" + item_rule + " (\",\" ws " + item_rule + ")" +
                        (max == static_cast<std::size_t>(-1) ? std::string("*") : "{0," + std::to_string(max - 1) + "}") + ")?";
            } else {
                body += item_rule + " (\",\" ws " + item_rule + ")" +
                        (max == static_cast<std::size_t>(-1) ? "{" + std::to_string(min - 1) + ",}"
                                                              : "{" + std::to_string(min - 1) + "," + std::to_string(max - 1) + "}");
            }
        } else if (min > 0) {
            fail("json schema: an array at ", where, " needs ", min, " items but allows none");
        }
        return body + " \"]\" ws";
    }

    std::string object(const json& s, const std::string& where, std::size_t depth) {
        std::vector<std::pair<std::string, std::string>> props;  // key literal + ':' + value, in order
        std::vector<bool> required;
        std::set<std::string> req;
        if (const auto r = s.find("required"); r != s.end()) {
            if (!r->is_array()) fail("json schema: 'required' at ", where, " must be an array");
            for (const json& k : *r) {
                if (!k.is_string()) fail("json schema: 'required' at ", where, " must list strings");
                req.insert(k.get<std::string>());
            }
        }
        if (const auto p = s.find("properties"); p != s.end()) {
            if (!p->is_object()) fail("json schema: 'properties' at ", where, " must be an object");
            // nlohmann::json (std::map) sorts keys; the declared order is the one in the text,
            // which ordered_json keeps: the caller parses schemas with ordered_json.
            for (const auto& [k, v] : p->items()) {
                const std::string value = visit(v, where + "/" + k, depth + 1);
                props.emplace_back(k, literal(json(k).dump()) + " ws \":\" ws " + value);
                required.push_back(req.count(k) > 0);
            }
        }
        for (const std::string& k : req) {
            bool found = false;
            for (const auto& p : props) found |= p.first == k;
            if (!found) unsupported(where, "a required property ('" + k + "') without a schema in 'properties'");
        }
        // Other properties: where additionalProperties allows them, or where nothing is declared
        // at all (a bare {"type": "object"} is any object). Absent beside declared properties,
        // none are generated: still valid, and the object closes sooner.
        std::string extra;
        const auto a = s.find("additionalProperties");
        const bool extras = a == s.end() ? props.empty() : !(a->is_boolean() && !a->get<bool>());
        if (extras) {
            const std::string value = a == s.end() || a->is_boolean() ? "json-value" : visit(*a, where + "/additionalProperties", depth + 1);
            extra = add_rule(where.empty() ? "extra" : where + "-extra", "json-string \":\" ws " + value);
        }
        // first_i: properties i.. when none has been written yet; rest_i: after one has.
        const std::size_t n = props.size();
        std::vector<std::string> rest(n + 1), first(n + 1);
        rest[n] = extra.empty() ? "" : "(\",\" ws " + extra + ")*";
        first[n] = extra.empty() ? "" : "(" + extra + " (\",\" ws " + extra + ")*)?";
        const std::string base = where.empty() ? "obj" : where;
        for (std::size_t i = n; i-- > 0;) {
            const std::string kv = add_rule(base + "-" + props[i].first, props[i].second);
            const std::string r_next = rest[i + 1].empty() ? "" : " " + rest[i + 1];
            std::string r = "\",\" ws " + kv + r_next;
            std::string f = kv + r_next;
            if (!required[i]) {
                r = "(" + r + ")" + (rest[i + 1].empty() ? "?" : " | " + rest[i + 1]);
                f = "(" + f + (first[i + 1].empty() ? ")?" : " | " + first[i + 1] + ")");
            }
            rest[i] = add_rule(base + "-rest", r);
            first[i] = add_rule(base + "-first", f);
        }
        return "\"{\" ws " + (first[0].empty() ? std::string() : first[0] + " ") + "\"}\" ws";
    }

    const json& root_;
    std::string prefix_;
    std::map<std::string, std::string> rules_;
    std::map<std::string, std::string> refs_;
};

}  // namespace json_schema_detail

// GBNF text for documents `schema` validates; throws lmtk::error naming what it cannot express.
// Properties come in the order `schema` holds them: the declared order for nlohmann::ordered_json
// (parse the schema's text with it), sorted by key for nlohmann::json.
inline std::string json_schema_to_gbnf(const nlohmann::ordered_json& schema) {
    return json_schema_detail::converter(schema).run();
}
inline std::string json_schema_to_gbnf(const nlohmann::json& schema) {
    return json_schema_to_gbnf(nlohmann::ordered_json::parse(schema.dump()));
}
// The rules of `schema` alone, every name starting with `prefix` (which must be a GBNF name:
// letters, digits, '-'), the top one named prefix + "root"; they refer to the shared JSON rules
// of json_common_gbnf(), which a grammar combining several schemas writes once.
inline std::string json_schema_rules(const nlohmann::ordered_json& schema, const std::string& prefix) {
    if (prefix.empty()) fail("json_schema_rules: the prefix must not be empty");
    return json_schema_detail::converter(schema, prefix).run();
}
inline std::string json_common_gbnf() { return json_schema_detail::converter::common_rules(); }

}  // namespace lmtk::sample
