#pragma once
// GBNF grammars (llama.cpp's syntax, for constrained generation), parsed once into a flat form
// the matcher (grammar.hpp) walks:
//
//   root   ::= "yes" | "no" ws          # a rule: alternatives of sequences; `root` starts
//   ws     ::= [ \t\n]*                 # character classes, ranges, negation [^...], `.` any
//   item   ::= ("a" | [b-d])+ name{2,4}  # groups, * + ? {m} {m,} {m,n}; "\n" "\x41" "\u00e9"
//
// Every alternative is a run of elements ending in `end`: a character set (ranges of code
// points, possibly negated) or a reference to a rule. Literals become one set per code point;
// groups and repetitions become generated rules (x* is R ::= x R | <empty>), so the matcher only
// knows sets, references and ends. A grammar comes from requests, so the parser is bounded:
// nesting depth, repetition counts and total size are limited, and left recursion (which would
// make the matcher loop) is refused with the rule's name, as is a reference to a rule never
// defined. Errors throw lmtk::error with the line and column.
#include <lmtk/core/error.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace lmtk::sample {

struct grammar_element {
    enum kind_t : std::uint8_t { end, chars, rule_ref };
    kind_t kind = end;
    bool negated = false;         // chars: matches a code point in none of the ranges
    std::uint32_t rule = 0;       // rule_ref: the rule
    std::uint32_t first = 0;      // chars: ranges [first, first + count) of grammar::ranges
    std::uint32_t count = 0;
};

struct grammar {
    std::vector<grammar_element> elements;                  // alternatives, each ending in `end`
    std::vector<std::pair<char32_t, char32_t>> ranges;      // inclusive code point ranges
    std::vector<std::vector<std::uint32_t>> alternatives;   // per rule: index of each alternative's first element
    std::vector<std::string> rule_names;                    // generated rules are named after their parent
    std::uint32_t root = 0;
    // Per element: the fewest code points that finish its alternative from there (the element
    // included; 0 at an `end`); unreachable_length where no finite sentence exists. The matcher
    // adds these up over a stack to know how far the text is from a complete sentence.
    std::vector<std::uint32_t> min_tail;
    static constexpr std::uint32_t unreachable_length = 1u << 30;

    // Whether the set element at `i` matches code point c.
    bool matches(std::uint32_t i, char32_t c) const noexcept {
        const grammar_element& e = elements[i];
        bool in = false;
        for (std::uint32_t r = e.first; r < e.first + e.count && !in; ++r) in = ranges[r].first <= c && c <= ranges[r].second;
        return in != e.negated;
    }
    // Whether it may match some code point in [lo, hi] (a character whose last bytes are not
    // known yet).
    bool may_match(std::uint32_t i, char32_t lo, char32_t hi) const noexcept {
        const grammar_element& e = elements[i];
        if (e.negated) {  // false only when one excluded range covers all of [lo, hi]
            for (std::uint32_t r = e.first; r < e.first + e.count; ++r)
                if (ranges[r].first <= lo && hi <= ranges[r].second) return false;
            return true;
        }
        for (std::uint32_t r = e.first; r < e.first + e.count; ++r)
            if (ranges[r].first <= hi && lo <= ranges[r].second) return true;
        return false;
    }
};

namespace gbnf_detail {

// Limits on what a request may ask for: generous for real grammars (llama.cpp's examples and
// JSON-schema grammars use a few hundred elements), small enough that no input can exhaust
// memory or the stack.
inline constexpr std::size_t max_depth = 64;          // nested groups
inline constexpr std::size_t max_repeat = 1000;       // m and n of {m,n}
inline constexpr std::size_t max_elements = 1u << 20; // elements of the flat grammar
inline constexpr std::size_t max_rules = 1u << 16;

struct spec {  // an element while parsing
    grammar_element::kind_t kind = grammar_element::chars;
    bool negated = false;
    std::uint32_t rule = 0;
    std::vector<std::pair<char32_t, char32_t>> ranges;
};
using sequence = std::vector<spec>;

class parser {
public:
    explicit parser(std::string_view text) : s_(text) {}

    grammar parse() {
        skip_space(true);
        while (pos_ < s_.size()) {
            parse_rule();
            skip_space(true);
        }
        const auto root = names_.find("root");
        if (root == names_.end()) fail("grammar: no rule named 'root'");
        for (std::size_t r = 0; r < rules_.size(); ++r)
            if (!defined_[r]) fail("grammar: rule '", names_of_[r], "' is used but never defined");
        build(root->second);
        check_left_recursion();
        compute_min_tail();
        return std::move(g_);
    }

private:
    [[noreturn]] void error(std::string_view what) const {
        std::size_t line = 1, col = 1;
        for (std::size_t i = 0; i < pos_ && i < s_.size(); ++i) {
            if (s_[i] == '\n') ++line, col = 1;
            else ++col;
        }
        fail("grammar: ", what, " at line ", line, ", column ", col);
    }
    bool at_end() const noexcept { return pos_ >= s_.size(); }
    char peek(std::size_t ahead = 0) const noexcept { return pos_ + ahead < s_.size() ? s_[pos_ + ahead] : '\0'; }

    // Blanks and comments; newlines only where `newlines` (inside groups, after ::= and |).
    void skip_space(bool newlines) {
        while (!at_end()) {
            const char c = peek();
            if (c == ' ' || c == '\t' || c == '\r') ++pos_;
            else if (c == '\n' && newlines) ++pos_;
            else if (c == '#') {
                while (!at_end() && peek() != '\n') ++pos_;
            } else
                break;
        }
    }
    static bool is_name_char(char c) noexcept {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
    }
    std::string_view parse_name() {
        const std::size_t b = pos_;
        while (!at_end() && is_name_char(peek())) ++pos_;
        if (pos_ == b) error("expected a rule name");
        return s_.substr(b, pos_ - b);
    }
    std::uint32_t rule_id(std::string_view name) {
        const auto it = names_.find(name);
        if (it != names_.end()) return it->second;
        if (rules_.size() >= max_rules) error("too many rules");
        const auto id = static_cast<std::uint32_t>(rules_.size());
        names_.emplace(std::string(name), id);
        names_of_.emplace_back(name);
        rules_.emplace_back();
        defined_.push_back(false);
        return id;
    }
    std::uint32_t new_rule(std::uint32_t parent) {
        return rule_id(names_of_[parent] + "-" + std::to_string(rules_.size()));
    }
    void define(std::uint32_t id, std::vector<sequence> alts) {
        std::size_t n = 0;
        for (const auto& a : alts) n += a.size() + 1;
        if ((total_ += n) > max_elements) error("the grammar is too large");
        rules_[id] = std::move(alts);
        defined_[id] = true;
    }

    void parse_rule() {
        const std::string_view name = parse_name();
        const std::uint32_t id = rule_id(name);
        if (defined_[id]) error("rule '" + std::string(name) + "' is defined twice");
        skip_space(false);
        if (s_.substr(pos_, 3) != "::=") error("expected ::=");
        pos_ += 3;
        skip_space(true);
        define(id, parse_alternates(id, 0));
        skip_space(false);
        if (!at_end() && peek() != '\n') error("expected the end of the rule");
    }

    std::vector<sequence> parse_alternates(std::uint32_t rule, std::size_t depth) {
        std::vector<sequence> alts;
        alts.push_back(parse_sequence(rule, depth));
        while (peek() == '|') {
            ++pos_;
            skip_space(true);
            alts.push_back(parse_sequence(rule, depth));
        }
        return alts;
    }

    sequence parse_sequence(std::uint32_t rule, std::size_t depth) {
        sequence seq;
        std::size_t last = 0;  // where the last unit (the operand of a postfix operator) begins
        bool has_unit = false;
        while (!at_end()) {
            const char c = peek();
            if (c == '"') {
                ++pos_;
                last = seq.size();
                while (peek() != '"') {
                    if (at_end()) error("unterminated string literal");
                    const char32_t cp = parse_char();
                    seq.push_back(spec{grammar_element::chars, false, 0, {{cp, cp}}});
                }
                ++pos_;
                has_unit = true;
            } else if (c == '[') {
                ++pos_;
                spec sp;
                if (peek() == '^') sp.negated = true, ++pos_;
                while (peek() != ']') {
                    if (at_end()) error("unterminated character class");
                    const char32_t lo = parse_char();
                    char32_t hi = lo;
                    if (peek() == '-' && peek(1) != ']' && pos_ + 1 < s_.size()) {
                        ++pos_;
                        hi = parse_char();
                        if (hi < lo) error("a character range runs backwards");
                    }
                    sp.ranges.emplace_back(lo, hi);
                }
                ++pos_;
                last = seq.size();
                seq.push_back(std::move(sp));
                has_unit = true;
            } else if (c == '.') {
                ++pos_;
                last = seq.size();
                seq.push_back(spec{grammar_element::chars, true, 0, {}});  // negation of nothing: any
                has_unit = true;
            } else if (is_name_char(c)) {
                const std::string_view name = parse_name();
                last = seq.size();
                seq.push_back(spec{grammar_element::rule_ref, false, rule_id(name), {}});
                has_unit = true;
            } else if (c == '(') {
                if (depth + 1 > max_depth) error("groups nested too deeply");
                ++pos_;
                skip_space(true);
                const std::uint32_t sub = new_rule(rule);
                define(sub, parse_alternates(sub, depth + 1));
                skip_space(true);
                if (peek() != ')') error("expected )");
                ++pos_;
                last = seq.size();
                seq.push_back(spec{grammar_element::rule_ref, false, sub, {}});
                has_unit = true;
            } else if (c == '*' || c == '+' || c == '?' || c == '{') {
                if (!has_unit) error("a repetition operator with nothing before it");
                std::size_t lo = 0, hi = 0;
                bool unbounded = false;
                ++pos_;
                if (c == '*') unbounded = true;
                else if (c == '+') lo = 1, unbounded = true;
                else if (c == '?') hi = 1;
                else {
                    skip_space(false);
                    lo = parse_count();
                    skip_space(false);
                    if (peek() == ',') {
                        ++pos_;
                        skip_space(false);
                        if (peek() == '}') unbounded = true;
                        else hi = parse_count();
                    } else {
                        hi = lo;
                    }
                    skip_space(false);
                    if (peek() != '}') error("expected } after a repetition count");
                    ++pos_;
                    if (!unbounded && hi < lo) error("a repetition {m,n} with n < m");
                }
                sequence unit(seq.begin() + std::ptrdiff_t(last), seq.end());
                seq.resize(last);
                repeat(rule, std::move(unit), lo, hi, unbounded, seq);
                has_unit = false;  // x** is not allowed, as in llama.cpp
            } else if (c == '|' || c == ')' || c == '\n') {
                break;
            } else {
                error(std::string("unexpected character '") + c + "'");
            }
            skip_space(depth > 0);
        }
        return seq;
    }

    std::size_t parse_count() {
        std::size_t n = 0;
        const std::size_t b = pos_;
        while (peek() >= '0' && peek() <= '9') {
            n = n * 10 + std::size_t(peek() - '0');
            if (n > max_repeat) error("a repetition count above 1000");
            ++pos_;
        }
        if (pos_ == b) error("expected a number");
        return n;
    }

    // unit{lo,hi} (hi unbounded when `unbounded`) appended to `seq`: lo copies of the unit, then
    // either R ::= unit R | <empty>, or hi - lo nested optionals R_k ::= unit R_k+1 | <empty>.
    void repeat(std::uint32_t rule, sequence unit, std::size_t lo, std::size_t hi, bool unbounded, sequence& seq) {
        if ((lo + (unbounded ? 1 : hi)) * (unit.size() + 2) + total_ > max_elements) error("the grammar is too large");
        for (std::size_t i = 0; i < lo; ++i) seq.insert(seq.end(), unit.begin(), unit.end());
        if (unbounded) {
            const std::uint32_t r = new_rule(rule);
            sequence again = unit;
            again.push_back(spec{grammar_element::rule_ref, false, r, {}});
            define(r, {std::move(again), {}});
            seq.push_back(spec{grammar_element::rule_ref, false, r, {}});
            return;
        }
        if (hi == lo) return;
        std::uint32_t next = 0;
        bool has_next = false;
        for (std::size_t k = hi - lo; k-- > 0;) {
            const std::uint32_t r = new_rule(rule);
            sequence body = unit;
            if (has_next) body.push_back(spec{grammar_element::rule_ref, false, next, {}});
            define(r, {std::move(body), {}});
            next = r;
            has_next = true;
        }
        seq.push_back(spec{grammar_element::rule_ref, false, next, {}});
    }

    // One character of a literal or class, with escapes; UTF-8 decoded.
    char32_t parse_char() {
        const auto c = static_cast<unsigned char>(peek());
        if (c == '\\') {
            ++pos_;
            const char e = peek();
            ++pos_;
            switch (e) {
                case 'n': return '\n';
                case 'r': return '\r';
                case 't': return '\t';
                case '\\': return '\\';
                case '"': return '"';
                case '[': return '[';
                case ']': return ']';
                case '-': return '-';
                case '^': return '^';
                case '/': return '/';
                case 'x': return parse_hex(2);
                case 'u': return parse_hex(4);
                case 'U': return parse_hex(8);
                default: --pos_; error("unknown escape");
            }
        }
        if (c < 0x80) {
            ++pos_;
            return c;
        }
        const std::size_t n = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 0;
        if (n == 0 || pos_ + n > s_.size()) error("invalid UTF-8");
        char32_t cp = c & (0xFF >> (n + 1));
        for (std::size_t i = 1; i < n; ++i) {
            const auto b = static_cast<unsigned char>(s_[pos_ + i]);
            if ((b & 0xC0) != 0x80) error("invalid UTF-8");
            cp = (cp << 6) | (b & 0x3F);
        }
        pos_ += n;
        return cp;
    }
    char32_t parse_hex(std::size_t digits) {
        char32_t v = 0;
        for (std::size_t i = 0; i < digits; ++i) {
            const char h = peek();
            int d = -1;
            if (h >= '0' && h <= '9') d = h - '0';
            else if (h >= 'a' && h <= 'f') d = h - 'a' + 10;
            else if (h >= 'A' && h <= 'F') d = h - 'A' + 10;
            if (d < 0) error("expected a hexadecimal digit");
            v = v * 16 + char32_t(d);
            ++pos_;
        }
        if (v > 0x10FFFF) error("a code point above U+10FFFF");
        return v;
    }

    void build(std::uint32_t root) {
        g_.root = root;
        g_.rule_names = names_of_;
        g_.alternatives.resize(rules_.size());
        for (std::size_t r = 0; r < rules_.size(); ++r)
            for (const sequence& alt : rules_[r]) {
                g_.alternatives[r].push_back(static_cast<std::uint32_t>(g_.elements.size()));
                for (const spec& sp : alt) {
                    grammar_element e;
                    e.kind = sp.kind;
                    e.negated = sp.negated;
                    e.rule = sp.rule;
                    e.first = static_cast<std::uint32_t>(g_.ranges.size());
                    e.count = static_cast<std::uint32_t>(sp.ranges.size());
                    g_.ranges.insert(g_.ranges.end(), sp.ranges.begin(), sp.ranges.end());
                    g_.elements.push_back(e);
                }
                g_.elements.push_back(grammar_element{});
            }
    }

    // A rule that can reach itself before consuming a character would send the matcher round
    // forever: refused. Nullable rules are found first (a fixpoint), then the "starts with"
    // graph (A starts with B when an alternative of A reaches a reference to B through nullable
    // references only) is searched for a cycle.
    void check_left_recursion() const {
        const std::size_t n = g_.alternatives.size();
        std::vector<bool> nullable(n, false);
        for (bool changed = true; changed;) {
            changed = false;
            for (std::size_t r = 0; r < n; ++r) {
                if (nullable[r]) continue;
                for (const std::uint32_t a : g_.alternatives[r]) {
                    std::uint32_t i = a;
                    while (g_.elements[i].kind == grammar_element::rule_ref && nullable[g_.elements[i].rule]) ++i;
                    if (g_.elements[i].kind == grammar_element::end) {
                        nullable[r] = changed = true;
                        break;
                    }
                }
            }
        }
        std::vector<std::vector<std::uint32_t>> starts(n);
        for (std::size_t r = 0; r < n; ++r)
            for (const std::uint32_t a : g_.alternatives[r])
                for (std::uint32_t i = a; g_.elements[i].kind == grammar_element::rule_ref; ++i) {
                    starts[r].push_back(g_.elements[i].rule);
                    if (!nullable[g_.elements[i].rule]) break;
                }
        // Iterative depth-first search with colours (no recursion: the graph comes from a request).
        std::vector<std::uint8_t> colour(n, 0);  // 0 new, 1 on the path, 2 done
        std::vector<std::pair<std::uint32_t, std::size_t>> path;
        for (std::uint32_t s = 0; s < n; ++s) {
            if (colour[s]) continue;
            path.push_back({s, 0});
            colour[s] = 1;
            while (!path.empty()) {
                auto& [r, k] = path.back();
                if (k < starts[r].size()) {
                    const std::uint32_t t = starts[r][k++];
                    if (colour[t] == 1) fail("grammar: rule '", g_.rule_names[t], "' is left-recursive");
                    if (colour[t] == 0) {
                        colour[t] = 1;
                        path.push_back({t, 0});
                    }
                } else {
                    colour[r] = 2;
                    path.pop_back();
                }
            }
        }
    }

    // Fewest code points of each rule (a fixpoint: every alternative's elements summed, the
    // smallest taken), then of each element's tail within its alternative.
    void compute_min_tail() {
        constexpr std::uint32_t inf = grammar::unreachable_length;
        const auto add = [](std::uint32_t a, std::uint32_t b) { return std::min(grammar::unreachable_length, a + b); };
        std::vector<std::uint32_t> rule_min(g_.alternatives.size(), inf);
        for (bool changed = true; changed;) {
            changed = false;
            for (std::size_t r = 0; r < rule_min.size(); ++r)
                for (const std::uint32_t a : g_.alternatives[r]) {
                    std::uint32_t len = 0;
                    for (std::uint32_t i = a; g_.elements[i].kind != grammar_element::end; ++i)
                        len = add(len, g_.elements[i].kind == grammar_element::chars ? 1 : rule_min[g_.elements[i].rule]);
                    if (len < rule_min[r]) rule_min[r] = len, changed = true;
                }
        }
        g_.min_tail.assign(g_.elements.size(), 0);
        for (std::size_t i = g_.elements.size(); i-- > 0;) {
            const grammar_element& e = g_.elements[i];
            if (e.kind == grammar_element::end) continue;
            g_.min_tail[i] = add(e.kind == grammar_element::chars ? 1 : rule_min[e.rule], g_.min_tail[i + 1]);
        }
    }

    std::string_view s_;
    std::size_t pos_ = 0, total_ = 0;
    std::map<std::string, std::uint32_t, std::less<>> names_;
    std::vector<std::string> names_of_;
    std::vector<std::vector<sequence>> rules_;
    std::vector<bool> defined_;
    grammar g_;
};

}  // namespace gbnf_detail

// Parses GBNF text; throws lmtk::error saying what is wrong and where.
inline grammar parse_gbnf(std::string_view text) { return gbnf_detail::parser(text).parse(); }

}  // namespace lmtk::sample
