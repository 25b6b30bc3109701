#pragma once
// The values of lmtk's Jinja interpreter (jinja/template.hpp): what chat templates compute with.
// Python's semantics where a template can see them: truthiness, `str()` of every type (None,
// True, 1.0, ['a'], {'k': 1}), comparisons, and json.dumps for the `tojson` filter (as Hugging
// Face's apply_chat_template defines it: non-ASCII kept, ", " and ": " separators).
//
// Lists and dicts are shared (copying a value copies a pointer); templates run sandboxed, as in
// transformers, so nothing but a namespace() is ever changed after it is made.
#include <lmtk/core/error.hpp>

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <algorithm>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace lmtk::jinja {

class value;
using value_list = std::vector<value>;
using value_dict = std::vector<std::pair<std::string, value>>;  // insertion order, as Python's dict
using kwargs = std::vector<std::pair<std::string, value>>;
using function = std::function<value(value_list& args, kwargs& kw)>;

// A template error: the message says what and where (line of the template).
[[noreturn]] inline void template_error(std::string_view what, int line = 0) {
    if (line > 0) fail("chat template, line ", line, ": ", what);
    fail("chat template: ", what);
}

class value {
public:
    enum class type : std::uint8_t { undefined, none, boolean, integer, floating, string, list, dict, ns, callable };

    value() = default;  // undefined
    static value none() { return value(type::none); }
    value(bool b) : t_(type::boolean), i_(b) {}
    value(int i) : t_(type::integer), i_(i) {}
    value(std::int64_t i) : t_(type::integer), i_(i) {}
    value(double d) : t_(type::floating), f_(d) {}
    value(std::string s) : t_(type::string), s_(std::make_shared<const std::string>(std::move(s))) {}
    value(const char* s) : value(std::string(s)) {}
    value(std::string_view s) : value(std::string(s)) {}
    value(value_list l) : t_(type::list) {
        for (const value& x : l) take_nesting(x);
        l_ = std::make_shared<value_list>(std::move(l));
    }
    value(value_dict d, bool is_namespace = false) : t_(is_namespace ? type::ns : type::dict) {
        for (const auto& kv : d) take_nesting(kv.second);
        holds_ns_ = holds_ns_ || is_namespace;
        d_ = std::make_shared<value_dict>(std::move(d));
    }

    // Lists and dicts nest at most this deep: str(), tojson and the destructors recurse, and a
    // hostile template could otherwise build `[[[...]]]` a million levels deep in a loop.
    static constexpr int max_nesting = 256;
    // Whether a namespace is inside (or is) this value: a namespace attribute may not hold one,
    // which is what keeps values free of cycles.
    bool holds_namespace() const noexcept { return holds_ns_; }
    value(function f) : t_(type::callable), fn_(std::make_shared<function>(std::move(f))) {}

    // From parsed JSON; an nlohmann::ordered_json keeps the keys in the order they were written,
    // which a template's tojson shows (Python's dicts keep insertion order).
    template <class Json>
    static value from_json(const Json& j) {
        switch (j.type()) {
            case Json::value_t::null: return none();
            case Json::value_t::boolean: return value(j.template get<bool>());
            case Json::value_t::number_integer: return value(j.template get<std::int64_t>());
            case Json::value_t::number_unsigned:
                return value(static_cast<std::int64_t>(std::min<std::uint64_t>(j.template get<std::uint64_t>(), INT64_MAX)));
            case Json::value_t::number_float: return value(j.template get<double>());
            case Json::value_t::string: return value(j.template get<std::string>());
            case Json::value_t::array: {
                value_list l;
                l.reserve(j.size());
                for (const auto& x : j) l.push_back(from_json(x));
                return value(std::move(l));
            }
            case Json::value_t::object: {
                value_dict d;
                d.reserve(j.size());
                for (auto it = j.begin(); it != j.end(); ++it) d.emplace_back(it.key(), from_json(it.value()));
                return value(std::move(d));
            }
            default: return none();
        }
    }

    // Python generators (what jinja2's select, reject, selectattr, rejectattr and map return):
    // iterable, always true, but without a length, a str() or a JSON form; `|list` makes a list.
    static value generator(value_list l) {
        value v(std::move(l));
        v.generator_ = true;
        return v;
    }
    bool is_generator() const noexcept { return generator_; }
    value as_list() const {
        value v = *this;
        v.generator_ = false;
        v.tuple_ = false;
        return v;
    }
    // Python tuples (tuple literals, dict items): a list that prints as (a, b) and (a,).
    static value tuple(value_list l) {
        value v(std::move(l));
        v.tuple_ = true;
        return v;
    }
    bool is_tuple() const noexcept { return tuple_; }
    // Markup (jinja2's safe strings): adding a plain string to one HTML-escapes the plain one.
    static value markup(std::string s) {
        value v(std::move(s));
        v.markup_ = true;
        return v;
    }
    bool is_markup() const noexcept { return markup_; }
    static std::string html_escape(std::string_view s) {
        std::string out;
        for (const char c : s) {
            switch (c) {
                case '&': out += "&amp;"; break;
                case '<': out += "&lt;"; break;
                case '>': out += "&gt;"; break;
                case '"': out += "&#34;"; break;
                case '\'': out += "&#39;"; break;
                default: out += c;
            }
        }
        return out;
    }

    type kind() const noexcept { return t_; }
    bool is_undefined() const noexcept { return t_ == type::undefined; }
    bool is_none() const noexcept { return t_ == type::none; }
    bool is_bool() const noexcept { return t_ == type::boolean; }
    bool is_int() const noexcept { return t_ == type::integer; }
    bool is_float() const noexcept { return t_ == type::floating; }
    bool is_number() const noexcept { return t_ == type::integer || t_ == type::floating; }
    bool is_string() const noexcept { return t_ == type::string; }
    bool is_list() const noexcept { return t_ == type::list; }
    bool is_dict() const noexcept { return t_ == type::dict || t_ == type::ns; }
    bool is_namespace() const noexcept { return t_ == type::ns; }
    bool is_callable() const noexcept { return t_ == type::callable; }

    bool as_bool() const noexcept { return i_ != 0; }
    std::int64_t as_int() const noexcept {
        if (t_ != type::floating) return i_;
        // Python's int(x) truncates; outside 64 bits (and NaN) lmtk saturates rather than invoke UB.
        if (std::isnan(f_)) return 0;
        if (f_ >= 9.2233720368547758e18) return INT64_MAX;
        if (f_ <= -9.2233720368547758e18) return INT64_MIN;
        return static_cast<std::int64_t>(f_);
    }
    double as_float() const noexcept { return t_ == type::floating ? f_ : static_cast<double>(i_); }
    const std::string& str() const noexcept {
        static const std::string empty;
        return s_ ? *s_ : empty;
    }
    const value_list& list() const noexcept {
        static const value_list empty;
        return l_ ? *l_ : empty;
    }
    const value_dict& dict() const noexcept {
        static const value_dict empty;
        return d_ ? *d_ : empty;
    }
    value_dict& mutable_namespace() const { return *d_; }
    value call(value_list& args, kwargs& kw) const { return (*fn_)(args, kw); }

    // dict[key]; undefined when absent.
    value get(std::string_view key) const {
        for (const auto& [k, v] : dict())
            if (k == key) return v;
        return {};
    }
    bool has(std::string_view key) const {
        for (const auto& kv : dict())
            if (kv.first == key) return true;
        return false;
    }

    // Python's truthiness.
    bool truthy() const noexcept {
        if (generator_) return true;
        switch (t_) {
            case type::undefined:
            case type::none: return false;
            case type::boolean:
            case type::integer: return i_ != 0;
            case type::floating: return f_ != 0.0;
            case type::string: return !str().empty();
            case type::list: return !list().empty();
            case type::dict:
            case type::ns: return !dict().empty();
            case type::callable: return true;
        }
        return false;
    }

    std::size_t length() const {
        if (generator_) template_error("object of type 'generator' has no len()");
        switch (t_) {
            case type::undefined: return 0;  // jinja2's Undefined is an empty sequence
            case type::string: return utf8_length(str());
            case type::list: return list().size();
            case type::dict:
            case type::ns: return dict().size();
            default: template_error(std::string("object of type ") + type_name() + " has no length");
        }
    }

    const char* type_name() const noexcept {
        switch (t_) {
            case type::undefined: return "undefined";
            case type::none: return "NoneType";
            case type::boolean: return "bool";
            case type::integer: return "int";
            case type::floating: return "float";
            case type::string: return "str";
            case type::list: return "list";
            case type::dict: return "dict";
            case type::ns: return "Namespace";
            case type::callable: return "function";
        }
        return "?";
    }

    // Python's str(): what {{ x }} prints.
    std::string to_string() const {
        switch (t_) {
            case type::undefined: return "";
            case type::string: return str();
            default: return repr();
        }
    }

    // Python's repr(), used inside lists and dicts.
    std::string repr() const {
        if (generator_) template_error("a generator (the result of select/map/...) cannot be printed; add |list");
        switch (t_) {
            case type::undefined: return "";
            case type::none: return "None";
            case type::boolean: return i_ ? "True" : "False";
            case type::integer: return std::to_string(i_);
            case type::floating: return float_repr(f_);
            case type::string: return string_repr(str());
            case type::list: {
                std::string out = tuple_ ? "(" : "[";
                for (std::size_t k = 0; k < list().size(); ++k) out += (k ? ", " : "") + list()[k].repr();
                if (tuple_ && list().size() == 1) out += ',';
                return out + (tuple_ ? ")" : "]");
            }
            case type::dict: {
                std::string out = "{";
                bool first = true;
                for (const auto& [key, v] : dict()) {
                    out += (first ? "" : ", ") + string_repr(key) + ": " + v.repr();
                    first = false;
                }
                return out + "}";
            }
            case type::ns: return "<Namespace>";
            case type::callable: return "<function>";
        }
        return "";
    }

    // json.dumps(x, ensure_ascii=False, indent=indent, separators=...) as Python writes it.
    std::string to_json(int indent = -1, std::string_view item_sep = "", std::string_view key_sep = ": ", bool sort_keys = false,
                        bool ensure_ascii = false) const {
        std::string out;
        ensure_ascii_ = ensure_ascii;
        const std::string_view isep = !item_sep.empty() ? item_sep : (indent >= 0 ? std::string_view(",") : std::string_view(", "));
        dump_json(out, indent, 0, isep, key_sep, sort_keys);
        return out;
    }

    // Python's float repr: the shortest text that reads back as the same double, ".0" added
    // to integral values, exponent form past 1e16.
    static std::string float_repr(double d) {
        if (std::isnan(d)) return "nan";
        if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
        if (d == 0.0) return std::signbit(d) ? "-0.0" : "0.0";
        // The fewest significant digits that read back as d.
        char buf[48];
        int prec = 1;
        for (; prec <= 17; ++prec) {
            std::snprintf(buf, sizeof buf, "%.*e", prec - 1, d);
            if (std::strtod(buf, nullptr) == d) break;
        }
        const std::string e_form = buf;  // [-]d.ddde[+-]xx
        const std::size_t epos = e_form.find('e');
        const int exp = std::atoi(e_form.c_str() + epos + 1);
        std::string digits;
        for (std::size_t k = 0; k < epos; ++k)
            if (e_form[k] >= '0' && e_form[k] <= '9') digits += e_form[k];
        const std::string sign = d < 0 ? "-" : "";
        if (exp < -4 || exp >= 16) {  // Python's repr switches to exponent form here
            std::string m = digits.substr(0, 1);
            if (digits.size() > 1) m += "." + digits.substr(1);
            char eb[16];
            std::snprintf(eb, sizeof eb, "e%c%02d", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
            return sign + m + eb;
        }
        std::string out;
        if (exp < 0) {
            out = "0." + std::string(static_cast<std::size_t>(-exp - 1), '0') + digits;
        } else if (static_cast<std::size_t>(exp) + 1 >= digits.size()) {
            out = digits + std::string(static_cast<std::size_t>(exp) + 1 - digits.size(), '0') + ".0";
        } else {
            out = digits.substr(0, static_cast<std::size_t>(exp) + 1) + "." + digits.substr(static_cast<std::size_t>(exp) + 1);
        }
        return sign + out;
    }

    static std::string string_repr(const std::string& s) {
        const bool dq = s.find('\'') != std::string::npos && s.find('"') == std::string::npos;
        const char q = dq ? '"' : '\'';
        std::string out(1, q);
        for (const char c : s) {
            switch (c) {
                case '\\': out += "\\\\"; break;
                case '\n': out += "\\n"; break;
                case '\r': out += "\\r"; break;
                case '\t': out += "\\t"; break;
                default:
                    if (c == q) {
                        out += '\\';
                        out += c;
                    } else if (static_cast<unsigned char>(c) < 0x20 || c == 0x7F) {
                        char b[8];
                        std::snprintf(b, sizeof b, "\\x%02x", static_cast<unsigned char>(c));
                        out += b;
                    } else {
                        out += c;
                    }
            }
        }
        return out + q;
    }

    static std::size_t utf8_length(std::string_view s) noexcept {
        std::size_t n = 0;
        for (const char c : s) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
        return n;
    }

private:
    explicit value(type t) : t_(t) {}

    static inline thread_local bool ensure_ascii_ = false;  // json.dumps(ensure_ascii=...) of the dump under way

    static void json_string(std::string& out, std::string_view s) {
        out += '"';
        if (ensure_ascii_) {
            for (std::size_t k = 0; k < s.size();) {
                const auto b = static_cast<unsigned char>(s[k]);
                if (b < 0x80) {
                    json_string_ascii(out, s[k]);
                    ++k;
                    continue;
                }
                const int n = b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : b >= 0xC0 ? 2 : 1;
                std::uint32_t cp = n == 4 ? (b & 0x07u) : n == 3 ? (b & 0x0Fu) : n == 2 ? (b & 0x1Fu) : b;
                for (int m = 1; m < n && k + static_cast<std::size_t>(m) < s.size(); ++m) cp = (cp << 6) | (static_cast<unsigned char>(s[k + static_cast<std::size_t>(m)]) & 0x3Fu);
                k += static_cast<std::size_t>(n);
                char buf[16];
                if (cp >= 0x10000) {
                    cp -= 0x10000;
                    std::snprintf(buf, sizeof buf, "\\u%04x\\u%04x", 0xD800 + (cp >> 10), 0xDC00 + (cp & 0x3FF));
                } else {
                    std::snprintf(buf, sizeof buf, "\\u%04x", cp);
                }
                out += buf;
            }
            out += '"';
            return;
        }
        for (const char c : s) json_string_ascii(out, c);
        out += '"';
    }
    static void json_string_ascii(std::string& out, char c) {
        {
            switch (c) {
                case '"': out += "\\\""; break;
                case '\\': out += "\\\\"; break;
                case '\n': out += "\\n"; break;
                case '\r': out += "\\r"; break;
                case '\t': out += "\\t"; break;
                case '\b': out += "\\b"; break;
                case '\f': out += "\\f"; break;
                default:
                    if (static_cast<unsigned char>(c) < 0x20) {
                        char b[8];
                        std::snprintf(b, sizeof b, "\\u%04x", static_cast<unsigned char>(c));
                        out += b;
                    } else {
                        out += c;
                    }
            }
        }
    }

    void dump_json(std::string& out, int indent, int depth, std::string_view isep, std::string_view ksep, bool sort_keys) const {
        if (depth > 64) template_error("tojson: value nested too deeply");
        if (generator_) template_error("tojson: Object of type generator is not JSON serializable");
        auto newline = [&](int d) {
            if (indent < 0) return;
            out += '\n';
            out.append(static_cast<std::size_t>(indent * d), ' ');
        };
        switch (t_) {
            case type::undefined:
            case type::none: out += "null"; break;
            case type::boolean: out += i_ ? "true" : "false"; break;
            case type::integer: out += std::to_string(i_); break;
            case type::floating:
                out += std::isnan(f_) ? "NaN" : std::isinf(f_) ? (f_ > 0 ? "Infinity" : "-Infinity") : float_repr(f_);
                break;
            case type::string: json_string(out, str()); break;
            case type::list:
                if (list().empty()) {
                    out += "[]";
                    break;
                }
                out += '[';
                for (std::size_t k = 0; k < list().size(); ++k) {
                    if (k) out += isep;
                    newline(depth + 1);
                    list()[k].dump_json(out, indent, depth + 1, isep, ksep, sort_keys);
                }
                newline(depth);
                out += ']';
                break;
            case type::dict:
            case type::ns: {
                if (dict().empty()) {
                    out += "{}";
                    break;
                }
                std::vector<const std::pair<std::string, value>*> items;
                for (const auto& kv : dict()) items.push_back(&kv);
                if (sort_keys) std::sort(items.begin(), items.end(), [](auto* a, auto* b) { return a->first < b->first; });
                out += '{';
                bool first = true;
                for (const auto* kv : items) {
                    if (!first) out += isep;
                    first = false;
                    newline(depth + 1);
                    json_string(out, kv->first);
                    out += ksep;
                    kv->second.dump_json(out, indent, depth + 1, isep, ksep, sort_keys);
                }
                newline(depth);
                out += '}';
                break;
            }
            case type::callable: template_error("tojson: a function is not JSON serializable");
        }
    }

    void take_nesting(const value& child) {
        if (child.nesting_ + 1 > max_nesting) template_error("a list or dict nests too deeply (more than 256 levels)");
        nesting_ = std::max<std::uint16_t>(nesting_, static_cast<std::uint16_t>(child.nesting_ + 1));
        holds_ns_ = holds_ns_ || child.holds_ns_;
    }

    type t_ = type::undefined;
    std::uint16_t nesting_ = 0;  // levels of lists/dicts inside this one
    bool holds_ns_ = false;
    bool tuple_ = false;      // a list that Python would hold as a tuple (repr only)
    bool generator_ = false;  // a list made lazily by select/map/...: Python cannot print or dump it
    bool markup_ = false;     // a string marked safe: `+` escapes plain strings joined to it
    std::int64_t i_ = 0;
    double f_ = 0.0;
    std::shared_ptr<const std::string> s_;
    std::shared_ptr<value_list> l_;
    std::shared_ptr<value_dict> d_;
    std::shared_ptr<function> fn_;
};

}  // namespace lmtk::jinja
