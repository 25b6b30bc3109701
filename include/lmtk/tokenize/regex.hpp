#pragma once
// lmtk::tokenize::regex: the regular expressions that BPE pre-tokenizers are written in
// (tokenizer.json's Split patterns, the splits llama.cpp names by `tokenizer.ggml.pre`), matched
// over Unicode code points in time linear in the text, whatever the pattern.
//
// Why not std::regex: it has no \p{..} classes, it backtracks (a hostile pattern from a model
// file, or a long run of spaces, can take exponential time or overflow the stack), and it is
// slow. These patterns need little: classes with Unicode general categories, alternation,
// greedy and lazy quantifiers, groups, case-insensitive groups of ASCII letters, `^`/`$`, and a
// lookahead of one character such as `(?!\S)`.
//
// Semantics are those of Oniguruma and PCRE, which Hugging Face `tokenizers` uses: the leftmost
// match wins, and among matches starting there the first one in the pattern's priority order
// (alternatives left to right, greedy quantifiers taking as much as they can). The matcher is a
// Pike VM (Thompson NFA simulation with thread priorities), which gives exactly that answer
// without backtracking; its cost is O(text x pattern size).
//
// Supported syntax:
//   literals (any UTF-8 character), escapes \t \n \r \f \v \e \0 \xHH \x{H..} \uHHHH and \ before
//     any punctuation; `.` (any character but \n)
//   classes [..] and [^..] with ranges, \p{X} \P{X} (X a general category or one-letter group:
//     L Lu Ll Lt Lm Lo M Mn Mc Me N Nd Nl No P Pc Pd Ps Pe Pi Pf Po S Sm Sc Sk So Z Zs Zl Zp C Cc
//     Cf Cs Co Cn, also as \pL), \s \S \d \D \w \W, inside classes or alone
//   groups (..), (?:..), (?i:..) (ASCII case folding), alternation |
//   quantifiers ? * + {n} {n,} {n,m}, each optionally lazy (?)
//   anchors ^ $ (of the piece being split), \A \z
//   lookahead (?=X) (?!X) where X is one character or class
// Anything else (backreferences, lookbehind, possessive quantifiers, atomic groups, scripts such
// as \p{Han}, \b) is refused when the pattern is compiled, with an error naming it.
#include <lmtk/core/error.hpp>
#include <lmtk/tokenize/unicode.hpp>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace lmtk::tokenize {

// A text prepared for matching: its code points and their general categories.
struct regex_text {
    std::vector<std::uint32_t> cps;  // unicode::invalid for a malformed byte
    std::vector<std::uint8_t> cats;  // unicode_data::category of each

    static regex_text of(std::span<const unicode::code_point> decoded) {
        regex_text t;
        t.cps.reserve(decoded.size());
        t.cats.reserve(decoded.size());
        for (const unicode::code_point& c : decoded) {
            t.cps.push_back(c.cp);
            t.cats.push_back(static_cast<std::uint8_t>(unicode::general_category(c.cp)));
        }
        return t;
    }
};

class regex {
public:
    // The largest compiled program; counted repetition such as \s{512} expands into copies.
    static constexpr std::size_t max_program = 1u << 16;

    explicit regex(std::string_view pattern) : pattern_(pattern) {
        parser p{*this, pattern};
        const node_ptr root = p.parse();
        compile(*root);
        emit({op::match});
    }

    const std::string& pattern() const noexcept { return pattern_; }

    // The matcher's working memory: one per thread that matches (a regex itself is immutable
    // and may be shared).
    class scratch {
    public:
        explicit scratch(const regex& re) { resize(re.prog_.size()); }
        void resize(std::size_t n) {
            a_.resize(n);
            b_.resize(n);
        }

    private:
        friend class regex;
        struct list {
            std::vector<std::pair<std::uint32_t, std::uint32_t>> threads;  // (pc, start)
            std::vector<std::uint32_t> seen;                               // generation stamp per pc
            std::uint32_t generation = 1;
            void resize(std::size_t n) {
                seen.assign(n, 0);
                threads.reserve(n);
            }
            void clear() {
                threads.clear();
                if (++generation == 0) {
                    std::fill(seen.begin(), seen.end(), 0);
                    generation = 1;
                }
            }
            bool mark(std::uint32_t pc) {
                if (seen[pc] == generation) return false;
                seen[pc] = generation;
                return true;
            }
        };
        list a_, b_;
        std::vector<std::uint32_t> stack_;
    };

    std::size_t program_size() const noexcept { return prog_.size(); }

    // Calls on_match(first, last) for each non-overlapping match in t[begin, end) (code point
    // indices), left to right, as Oniguruma's search-all does. `^` and `$` mean begin and end.
    // An empty match is reported and the search moves on by one code point. `sc` must have
    // been made for this regex.
    template <class OnMatch>
    void for_each_match(const regex_text& t, std::size_t begin, std::size_t end, scratch& sc, OnMatch&& on_match) const {
        std::size_t pos = begin;
        while (pos <= end) {
            std::size_t s = 0, e = 0;
            if (!search(t, begin, end, pos, sc, s, e)) return;
            on_match(s, e);
            pos = e > s ? e : e + 1;
        }
    }

private:
    enum class op : std::uint8_t { cls, split, jmp, match, at_begin, at_end, look, look_not };
    struct inst {
        op code;
        std::uint32_t x = 0, y = 0;  // cls/look: class index; split: preferred x, then y; jmp: x
    };

    // One item of a class: a code point range, a set of categories, or a property, maybe negated.
    struct item {
        enum class kind : std::uint8_t { range, cats, space, digit, word } k;
        bool negated = false;
        std::uint32_t lo = 0, hi = 0;  // range
        std::uint32_t mask = 0;        // cats
    };
    struct char_class {
        std::vector<item> items;
        bool negated = false;
        std::array<std::uint64_t, 2> ascii{};  // the answer for code points below 128

        static bool item_has(const item& it, std::uint32_t cp, std::uint8_t cat) noexcept {
            bool r = false;
            switch (it.k) {
                case item::kind::range: r = cp >= it.lo && cp <= it.hi; break;
                case item::kind::cats: r = (it.mask >> cat) & 1u; break;
                case item::kind::space: r = unicode::is_whitespace(cp); break;
                case item::kind::digit: r = cat == unicode_data::Nd; break;
                case item::kind::word:
                    r = ((unicode::categories::letter | unicode::categories::mark | unicode::categories::bit(unicode_data::Nd) |
                          unicode::categories::bit(unicode_data::Pc)) >> cat) & 1u;
                    break;
            }
            return r != it.negated;
        }
        bool slow_has(std::uint32_t cp, std::uint8_t cat) const noexcept {
            bool in = false;
            for (const item& it : items)
                if (item_has(it, cp, cat)) {
                    in = true;
                    break;
                }
            return in != negated;
        }
        void finish() {
            for (std::uint32_t c = 0; c < 128; ++c)
                if (slow_has(c, static_cast<std::uint8_t>(unicode::general_category(c)))) ascii[c >> 6] |= std::uint64_t(1) << (c & 63);
        }
        bool has(std::uint32_t cp, std::uint8_t cat) const noexcept {
            if (cp < 128) return (ascii[cp >> 6] >> (cp & 63)) & 1u;
            return slow_has(cp, cat);
        }
    };

    // ---- parsing: pattern -> tree ------------------------------------------------------------
    struct node;
    using node_ptr = std::unique_ptr<node>;
    struct node {
        enum class kind { empty, cls, concat, alt, repeat, at_begin, at_end, look } k;
        std::uint32_t cls = 0;
        std::vector<node_ptr> kids;
        int min = 0, max = 0;  // repeat; max -1: unbounded
        bool greedy = true;
        bool negated = false;  // look
    };

    struct parser {
        regex& re;
        std::string_view s;
        std::size_t i = 0;
        bool icase = false;
        int depth = 0;

        [[noreturn]] void bad(std::string_view what) const {
            fail("pre-tokenizer regex '", re.pattern_, "': ", what, " at offset ", i);
        }
        bool done() const { return i >= s.size(); }
        char peek() const { return done() ? '\0' : s[i]; }
        bool eat(char c) {
            if (peek() != c || done()) return false;
            ++i;
            return true;
        }
        std::uint32_t utf8() {  // one code point of the pattern
            const std::vector<unicode::code_point> cp = unicode::decode_utf8(s.substr(i, std::min<std::size_t>(4, s.size() - i)));
            if (cp.empty() || cp[0].cp == unicode::invalid) bad("malformed UTF-8");
            i += cp[0].len;
            return cp[0].cp;
        }

        node_ptr make(node::kind k) {
            auto n = std::make_unique<node>();
            n->k = k;
            return n;
        }
        node_ptr class_node(char_class c) {
            c.finish();
            auto n = make(node::kind::cls);
            n->cls = static_cast<std::uint32_t>(re.classes_.size());
            re.classes_.push_back(std::move(c));
            return n;
        }

        node_ptr parse() {
            node_ptr n = alternation();
            if (!done()) bad(peek() == ')' ? "unbalanced ')'" : "unexpected character");
            return n;
        }
        node_ptr alternation() {
            if (++depth > 200) bad("groups nested too deeply");
            node_ptr first = sequence();
            if (peek() != '|') {
                --depth;
                return first;
            }
            auto n = make(node::kind::alt);
            n->kids.push_back(std::move(first));
            while (eat('|')) n->kids.push_back(sequence());
            --depth;
            return n;
        }
        node_ptr sequence() {
            auto n = make(node::kind::concat);
            while (!done() && peek() != '|' && peek() != ')') n->kids.push_back(quantified());
            return n;
        }
        int number() {
            if (!(peek() >= '0' && peek() <= '9')) bad("expected a number in {..}");
            long v = 0;
            while (peek() >= '0' && peek() <= '9') {
                v = v * 10 + (s[i++] - '0');
                if (v > 100000) bad("repetition count too large");
            }
            return static_cast<int>(v);
        }
        node_ptr quantified() {
            node_ptr a = atom();
            for (;;) {
                int lo = 0, hi = 0;
                const std::size_t at = i;
                if (eat('?')) lo = 0, hi = 1;
                else if (eat('*')) lo = 0, hi = -1;
                else if (eat('+')) lo = 1, hi = -1;
                else if (peek() == '{' && i + 1 < s.size() && s[i + 1] >= '0' && s[i + 1] <= '9') {
                    ++i;
                    lo = hi = number();
                    if (eat(',')) hi = peek() == '}' ? -1 : number();
                    if (!eat('}')) bad("unterminated {..}");
                    if (hi != -1 && hi < lo) bad("{n,m} with m < n");
                } else {
                    return a;
                }
                if (a->k == node::kind::at_begin || a->k == node::kind::at_end || a->k == node::kind::look)
                    i = at, bad("quantifier after an assertion");
                auto r = make(node::kind::repeat);
                r->min = lo;
                r->max = hi;
                if (eat('?')) r->greedy = false;
                else if (peek() == '+') bad("possessive quantifiers are not supported");
                r->kids.push_back(std::move(a));
                a = std::move(r);
            }
        }
        node_ptr atom() {
            const char c = peek();
            if (c == '(') return group();
            if (c == '[') return bracket();
            if (c == '.') {
                ++i;
                char_class cc;
                cc.negated = true;
                cc.items.push_back({item::kind::range, false, '\n', '\n'});
                return class_node(std::move(cc));
            }
            if (c == '^') {
                ++i;
                return make(node::kind::at_begin);
            }
            if (c == '$') {
                ++i;
                return make(node::kind::at_end);
            }
            if (c == '*' || c == '+' || c == '?') bad("quantifier with nothing to repeat");
            if (c == '\\') {
                ++i;
                if (eat('A')) return make(node::kind::at_begin);
                if (eat('z') || eat('Z')) return make(node::kind::at_end);
                char_class cc;
                escape(cc, false);
                return class_node(std::move(cc));
            }
            char_class cc;
            literal(cc, utf8());
            return class_node(std::move(cc));
        }
        // A literal character, both cases of it inside (?i:..) (ASCII letters only).
        void literal(char_class& cc, std::uint32_t cp) const { range(cc, cp, cp); }
        void range(char_class& cc, std::uint32_t lo, std::uint32_t hi) const {
            cc.items.push_back({item::kind::range, false, lo, hi});
            if (!icase) return;
            const std::uint32_t a = std::max<std::uint32_t>(lo, 'A'), b = std::min<std::uint32_t>(hi, 'Z');
            if (a <= b) cc.items.push_back({item::kind::range, false, a + 32, b + 32});
            const std::uint32_t c = std::max<std::uint32_t>(lo, 'a'), d = std::min<std::uint32_t>(hi, 'z');
            if (c <= d) cc.items.push_back({item::kind::range, false, c - 32, d - 32});
        }
        node_ptr group() {
            ++i;  // (
            const bool saved = icase;
            node_ptr inner;
            if (eat('?')) {
                if (eat(':')) {
                    inner = alternation();
                } else if (peek() == 'i' && i + 1 < s.size() && s[i + 1] == ':') {
                    i += 2;
                    icase = true;
                    inner = alternation();
                } else if (peek() == '=' || peek() == '!') {
                    const bool neg = s[i++] == '!';
                    node_ptr body = alternation();
                    // Only one character (a class or a literal) may be looked at: that keeps
                    // the matcher linear, and it is all pre-tokenizers use ((?!\S)).
                    const node* one = body.get();
                    while (one->k == node::kind::concat && one->kids.size() == 1) one = one->kids[0].get();
                    if (one->k != node::kind::cls) bad("lookahead of more than one character is not supported");
                    auto n = make(node::kind::look);
                    n->cls = one->cls;
                    n->negated = neg;
                    inner = std::move(n);
                } else if (peek() == '<') {
                    bad("lookbehind and named groups are not supported");
                } else if (peek() == '>') {
                    bad("atomic groups are not supported");
                } else {
                    bad("unsupported group flag");
                }
            } else {
                inner = alternation();  // a capture; captures are not reported
            }
            icase = saved;
            if (!eat(')')) bad("missing ')'");
            return inner;
        }
        node_ptr bracket() {
            ++i;  // [
            char_class cc;
            if (eat('^')) cc.negated = true;
            bool first = true;
            for (;;) {
                if (done()) bad("missing ']'");
                if (peek() == ']' && !first) {
                    ++i;
                    break;
                }
                first = false;
                if (peek() == '[') bad("nested classes and POSIX [:name:] are not supported");
                std::uint32_t lo = 0;
                if (eat('\\')) {
                    if (!escape(cc, true)) continue;  // a property, not a character
                    lo = cc.items.back().lo;
                    cc.items.pop_back();
                } else {
                    lo = utf8();
                }
                if (peek() == '-' && i + 1 < s.size() && s[i + 1] != ']') {
                    ++i;
                    std::uint32_t hi = 0;
                    if (eat('\\')) {
                        char_class tmp;
                        if (!escape(tmp, true)) bad("a class range ends in a property");
                        hi = tmp.items.back().lo;
                    } else {
                        hi = utf8();
                    }
                    if (hi < lo) bad("class range out of order");
                    range(cc, lo, hi);
                } else {
                    literal(cc, lo);
                }
            }
            return class_node(std::move(cc));
        }
        std::uint32_t hex(std::size_t digits_min, std::size_t digits_max) {
            std::uint32_t v = 0;
            std::size_t n = 0;
            while (n < digits_max && !done()) {
                const char c = peek();
                const int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
                if (d < 0) break;
                v = v * 16 + static_cast<std::uint32_t>(d);
                ++i, ++n;
            }
            if (n < digits_min || v > 0x10FFFF) bad("bad hexadecimal escape");
            return v;
        }
        // After a backslash: adds the escape to cc. Returns true when it was one character (its
        // range item is the last one added), false for a property such as \s or \p{L}.
        bool escape(char_class& cc, bool in_class) {
            if (done()) bad("pattern ends in a backslash");
            const char c = s[i++];
            auto prop = [&](item::kind k, bool neg) {
                cc.items.push_back({k, neg, 0, 0, 0});
                return false;
            };
            auto chr = [&](std::uint32_t cp) {
                if (in_class) cc.items.push_back({item::kind::range, false, cp, cp});
                else literal(cc, cp);
                return true;
            };
            switch (c) {
                case 's': return prop(item::kind::space, false);
                case 'S': return prop(item::kind::space, true);
                case 'd': return prop(item::kind::digit, false);
                case 'D': return prop(item::kind::digit, true);
                case 'w': return prop(item::kind::word, false);
                case 'W': return prop(item::kind::word, true);
                case 'p':
                case 'P': {
                    std::string name;
                    if (eat('{')) {
                        while (!done() && peek() != '}') name.push_back(s[i++]);
                        if (!eat('}')) bad("unterminated \\p{..}");
                    } else if (!done()) {
                        name.push_back(s[i++]);
                    }
                    bool neg = c == 'P';
                    if (!name.empty() && name[0] == '^') neg = !neg, name.erase(0, 1);
                    const std::uint32_t m = category_mask(name);
                    if (m == 0) bad("unsupported property \\p{" + name + "} (general categories only)");
                    cc.items.push_back({item::kind::cats, neg, 0, 0, m});
                    return false;
                }
                case 't': return chr('\t');
                case 'n': return chr('\n');
                case 'r': return chr('\r');
                case 'f': return chr('\f');
                case 'v': return chr('\v');
                case 'e': return chr(0x1B);
                case 'a': return chr(0x07);
                case '0': return chr(0);
                case 'x':
                    if (eat('{')) {
                        const std::uint32_t v = hex(1, 8);
                        if (!eat('}')) bad("unterminated \\x{..}");
                        return chr(v);
                    }
                    return chr(hex(2, 2));
                case 'u': return chr(hex(4, 4));
                case 'b':
                    if (in_class) return chr(0x08);
                    bad("word boundaries (\\b) are not supported");
                default:
                    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
                        --i, bad(std::string("unsupported escape \\") + c);
                    --i;
                    return chr(utf8());  // \ before punctuation or any non-ASCII character
            }
        }
        static std::uint32_t category_mask(std::string_view name) {
            namespace c = unicode::categories;
            if (name == "L" || name == "Letter") return c::letter;
            if (name == "M" || name == "Mark") return c::mark;
            if (name == "N" || name == "Number") return c::number;
            if (name == "P" || name == "Punctuation") return c::punctuation;
            if (name == "S" || name == "Symbol") return c::symbol;
            if (name == "Z" || name == "Separator") return c::separator;
            if (name == "C" || name == "Other") return c::other;
            static constexpr std::string_view names[] = {"Lu", "Ll", "Lt", "Lm", "Lo", "Mn", "Mc", "Me", "Nd", "Nl",
                                                         "No", "Pc", "Pd", "Ps", "Pe", "Pi", "Pf", "Po", "Sm", "Sc",
                                                         "Sk", "So", "Zs", "Zl", "Zp", "Cc", "Cf", "Cs", "Co", "Cn"};
            for (std::size_t k = 0; k < std::size(names); ++k)
                if (name == names[k]) return std::uint32_t(1) << k;
            return 0;
        }
    };

    // ---- compiling: tree -> program --------------------------------------------------------
    std::uint32_t emit(inst in) {
        if (prog_.size() >= max_program)
            fail("pre-tokenizer regex '", pattern_, "': compiles to more than ", max_program, " instructions");
        prog_.push_back(in);
        return static_cast<std::uint32_t>(prog_.size() - 1);
    }
    std::uint32_t here() const { return static_cast<std::uint32_t>(prog_.size()); }

    void compile(const node& n) {
        switch (n.k) {
            case node::kind::empty: break;
            case node::kind::cls: emit({op::cls, n.cls}); break;
            case node::kind::at_begin: emit({op::at_begin}); break;
            case node::kind::at_end: emit({op::at_end}); break;
            case node::kind::look: emit({n.negated ? op::look_not : op::look, n.cls}); break;
            case node::kind::concat:
                for (const node_ptr& k : n.kids) compile(*k);
                break;
            case node::kind::alt: {
                // split L1, next; L1: a; jmp end; next: split L2, ...; last alternative
                std::vector<std::uint32_t> jumps;
                for (std::size_t k = 0; k < n.kids.size(); ++k) {
                    if (k + 1 < n.kids.size()) {
                        const std::uint32_t sp = emit({op::split});
                        prog_[sp].x = here();
                        compile(*n.kids[k]);
                        jumps.push_back(emit({op::jmp}));
                        prog_[sp].y = here();
                    } else {
                        compile(*n.kids[k]);
                    }
                }
                for (const std::uint32_t j : jumps) prog_[j].x = here();
                break;
            }
            case node::kind::repeat: {
                const node& body = *n.kids[0];
                for (int k = 0; k < n.min; ++k) compile(body);
                // A split that prefers entering the body when greedy, leaving it when lazy.
                auto split_to = [&](std::uint32_t sp, std::uint32_t enter, std::uint32_t leave) {
                    prog_[sp].x = n.greedy ? enter : leave;
                    prog_[sp].y = n.greedy ? leave : enter;
                };
                if (n.max == -1) {
                    const std::uint32_t sp = emit({op::split});
                    compile(body);
                    emit({op::jmp, sp});
                    split_to(sp, sp + 1, here());
                } else {
                    std::vector<std::uint32_t> splits;
                    for (int k = n.min; k < n.max; ++k) {
                        splits.push_back(emit({op::split}));
                        compile(body);
                    }
                    for (const std::uint32_t sp : splits) split_to(sp, sp + 1, here());
                }
                break;
            }
        }
    }

    // ---- matching ---------------------------------------------------------------------------
    bool class_at(std::uint32_t cls, const regex_text& t, std::size_t pos) const noexcept {
        return classes_[cls].has(t.cps[pos], t.cats[pos]);
    }

    // Follows jumps, splits and assertions from pc at position pos, appending the threads that
    // wait on a character (or match) to l, in priority order.
    void add(scratch::list& l, std::vector<std::uint32_t>& stack, std::uint32_t pc0, std::size_t pos, std::uint32_t start,
             const regex_text& t, std::size_t begin, std::size_t end) const {
        stack.clear();
        stack.push_back(pc0);
        while (!stack.empty()) {
            const std::uint32_t pc = stack.back();
            stack.pop_back();
            if (!l.mark(pc)) continue;
            const inst& in = prog_[pc];
            switch (in.code) {
                case op::jmp: stack.push_back(in.x); break;
                case op::split:
                    stack.push_back(in.y);
                    stack.push_back(in.x);
                    break;
                case op::at_begin:
                    if (pos == begin) stack.push_back(pc + 1);
                    break;
                case op::at_end:
                    if (pos == end) stack.push_back(pc + 1);
                    break;
                case op::look:
                    if (pos < end && class_at(in.x, t, pos)) stack.push_back(pc + 1);
                    break;
                case op::look_not:
                    if (!(pos < end && class_at(in.x, t, pos))) stack.push_back(pc + 1);
                    break;
                case op::cls:
                case op::match: l.threads.emplace_back(pc, start); break;
            }
        }
    }

    // The leftmost-first match starting at or after `from`; false when there is none.
    bool search(const regex_text& t, std::size_t begin, std::size_t end, std::size_t from, scratch& sc, std::size_t& ms,
                std::size_t& me) const {
        if (sc.a_.seen.size() != prog_.size()) sc.resize(prog_.size());
        scratch::list* cur = &sc.a_;
        scratch::list* next = &sc.b_;
        cur->clear();
        bool matched = false;
        for (std::size_t pos = from;; ++pos) {
            // A new attempt starts here, behind every earlier (leftmost) one, until one matched.
            if (!matched) add(*cur, sc.stack_, 0, pos, static_cast<std::uint32_t>(pos), t, begin, end);
            if (cur->threads.empty()) {
                if (matched || pos >= end) break;
                cur->clear();  // forget this position's marks; try the next one
                continue;
            }
            next->clear();
            for (const auto& [pc, start] : cur->threads) {
                const inst& in = prog_[pc];
                if (in.code == op::match) {
                    matched = true;
                    ms = start;
                    me = pos;
                    break;  // threads of lower priority lose to this match
                }
                if (pos < end && class_at(in.x, t, pos)) add(*next, sc.stack_, pc + 1, pos + 1, start, t, begin, end);
            }
            std::swap(cur, next);
            if (pos >= end) break;
        }
        return matched;
    }

    std::string pattern_;
    std::vector<char_class> classes_;
    std::vector<inst> prog_;
};

}  // namespace lmtk::tokenize
