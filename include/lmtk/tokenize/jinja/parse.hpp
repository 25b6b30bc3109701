#pragma once
// The Jinja subset chat templates are written in: lexing (with the whitespace control Hugging
// Face applies: trim_blocks and lstrip_blocks on, `-` and `+` modifiers) and parsing into a tree
// that jinja/template.hpp renders.
//
// Statements: if/elif/else, for (tuple targets, `if` filter, else, loop.*), set (names, tuples,
// namespace attributes, block form), macro (defaults), call-free filter blocks, break/continue
// (the loopcontrols extension HF enables), generation (HF's tag; renders its body).
// Expressions: literals (strings, numbers, lists, dicts, tuples, true/false/none in either case),
// names, .attr, [index], [a:b:c], calls with keyword arguments, filters with arguments, `is`
// tests, not/and/or, comparisons and `in`, + - * / // % ** ~, `a if b else c`.
// Anything else is a parse error naming the construct and its line.
#include <lmtk/tokenize/jinja/value.hpp>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace lmtk::jinja {

struct token {
    enum class kind : std::uint8_t { text, var_begin, var_end, block_begin, block_end, name, string, integer, floating, op, eof } k;
    std::string s;
    std::int64_t i = 0;
    double f = 0;
    int line = 1;
};

// Template source -> tokens. Text between tags is one token; whitespace control is applied here.
inline std::vector<token> lex(std::string_view src) {
    std::vector<token> out;
    std::size_t pos = 0;
    int line = 1;
    bool strip_next = false;  // the previous tag ended with '-'
    auto count_lines = [&](std::string_view s) {
        for (const char c : s) line += c == '\n';
    };
    while (pos <= src.size()) {
        std::size_t start = src.find('{', pos);
        while (start != std::string_view::npos && start + 1 < src.size() && src[start + 1] != '{' && src[start + 1] != '%' &&
               src[start + 1] != '#')
            start = src.find('{', start + 1);
        if (start != std::string_view::npos && start + 1 >= src.size()) start = std::string_view::npos;
        std::string text(src.substr(pos, start == std::string_view::npos ? std::string_view::npos : start - pos));
        if (strip_next) {
            const std::size_t k = text.find_first_not_of(" \t\r\n");
            text.erase(0, k == std::string::npos ? text.size() : k);
            strip_next = false;
        }
        if (start == std::string_view::npos) {
            if (!text.empty()) out.push_back({token::kind::text, text, 0, 0, line});
            break;
        }
        const char opener = src[start + 1];
        std::size_t p = start + 2;
        const bool minus = p < src.size() && src[p] == '-';
        const bool plus = p < src.size() && src[p] == '+';
        if (minus || plus) ++p;
        if (minus) {
            const std::size_t k = text.find_last_not_of(" \t\r\n");
            text.erase(k == std::string::npos ? 0 : k + 1);
        } else if (opener != '{' && !plus) {
            // lstrip_blocks: the blanks between the start of a line and a block or comment tag.
            const std::size_t nl = text.rfind('\n');
            const std::size_t from = nl == std::string::npos ? 0 : nl + 1;
            const bool at_line_start = nl != std::string::npos || pos == 0 || src[pos - 1] == '\n';
            if (at_line_start && text.find_first_not_of(" \t", from) == std::string::npos) text.erase(from);
        }
        if (!text.empty()) {
            out.push_back({token::kind::text, text, 0, 0, line});
        }
        count_lines(src.substr(pos, start - pos));
        if (opener == '#') {
            const std::size_t end = src.find("#}", p);
            if (end == std::string_view::npos) template_error("unterminated comment", line);
            count_lines(src.substr(start, end + 2 - start));
            strip_next = end > p && src[end - 1] == '-';
            pos = end + 2;
            if (!strip_next && pos < src.size() && src[pos] == '\n') ++pos, ++line;  // trim_blocks
            continue;
        }
        const bool is_var = opener == '{';
        out.push_back({is_var ? token::kind::var_begin : token::kind::block_begin, "", 0, 0, line});
        // Tokens until the closing delimiter.
        for (;;) {
            while (p < src.size() && (src[p] == ' ' || src[p] == '\t' || src[p] == '\n' || src[p] == '\r')) line += src[p++] == '\n';
            if (p >= src.size()) template_error(is_var ? "unterminated {{ ... }}" : "unterminated {% ... %}", line);
            const std::string_view rest = src.substr(p);
            const std::string_view closer = is_var ? "}}" : "%}";
            bool end_minus = false;
            if (rest.substr(0, 1) == "-" && rest.substr(1, 2) == closer) end_minus = true;
            if (end_minus || (rest.substr(0, 1) == "+" && rest.substr(1, 2) == closer) || rest.substr(0, 2) == closer) {
                p += (rest[0] == '-' || rest[0] == '+') ? 3 : 2;
                out.push_back({is_var ? token::kind::var_end : token::kind::block_end, "", 0, 0, line});
                strip_next = end_minus;
                if (!is_var && !end_minus && p < src.size() && src[p] == '\n') ++p, ++line;  // trim_blocks
                break;
            }
            const char c = src[p];
            if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_') {
                std::size_t q = p;
                while (q < src.size() && ((src[q] >= 'a' && src[q] <= 'z') || (src[q] >= 'A' && src[q] <= 'Z') ||
                                          (src[q] >= '0' && src[q] <= '9') || src[q] == '_'))
                    ++q;
                out.push_back({token::kind::name, std::string(src.substr(p, q - p)), 0, 0, line});
                p = q;
            } else if (c >= '0' && c <= '9') {
                std::size_t q = p;
                while (q < src.size() && ((src[q] >= '0' && src[q] <= '9') || src[q] == '_')) ++q;
                bool is_float = false;
                if (q + 1 < src.size() && src[q] == '.' && src[q + 1] >= '0' && src[q + 1] <= '9') {
                    is_float = true;
                    ++q;
                    while (q < src.size() && src[q] >= '0' && src[q] <= '9') ++q;
                }
                if (q < src.size() && (src[q] == 'e' || src[q] == 'E')) {
                    std::size_t r = q + 1;
                    if (r < src.size() && (src[r] == '+' || src[r] == '-')) ++r;
                    if (r < src.size() && src[r] >= '0' && src[r] <= '9') {
                        is_float = true;
                        q = r;
                        while (q < src.size() && src[q] >= '0' && src[q] <= '9') ++q;
                    }
                }
                std::string num;
                for (std::size_t k = p; k < q; ++k)
                    if (src[k] != '_') num += src[k];
                token t{is_float ? token::kind::floating : token::kind::integer, num, 0, 0, line};
                if (is_float) t.f = std::strtod(num.c_str(), nullptr);
                else t.i = std::strtoll(num.c_str(), nullptr, 10);
                out.push_back(std::move(t));
                p = q;
            } else if (c == '\'' || c == '"') {
                std::string s;
                std::size_t q = p + 1;
                for (;;) {
                    if (q >= src.size()) template_error("unterminated string", line);
                    const char d = src[q];
                    if (d == c) break;
                    if (d == '\\' && q + 1 < src.size()) {
                        const char e = src[++q];
                        switch (e) {
                            case 'n': s += '\n'; break;
                            case 't': s += '\t'; break;
                            case 'r': s += '\r'; break;
                            case '\\': s += '\\'; break;
                            case '\'': s += '\''; break;
                            case '"': s += '"'; break;
                            case '0': s += '\0'; break;
                            case 'u': {
                                if (q + 4 >= src.size()) template_error("bad \\u escape", line);
                                const std::uint32_t cp = static_cast<std::uint32_t>(std::strtoul(std::string(src.substr(q + 1, 4)).c_str(), nullptr, 16));
                                q += 4;
                                if (cp < 0x80) s += static_cast<char>(cp);
                                else if (cp < 0x800) s += static_cast<char>(0xC0 | (cp >> 6)), s += static_cast<char>(0x80 | (cp & 0x3F));
                                else s += static_cast<char>(0xE0 | (cp >> 12)), s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F)),
                                     s += static_cast<char>(0x80 | (cp & 0x3F));
                                break;
                            }
                            default: s += '\\', s += e;  // Python keeps unknown escapes
                        }
                        ++q;
                        continue;
                    }
                    line += d == '\n';
                    s += d;
                    ++q;
                }
                out.push_back({token::kind::string, s, 0, 0, line});
                p = q + 1;
            } else {
                static constexpr std::string_view two[] = {"==", "!=", "<=", ">=", "//", "**"};
                std::string op(1, c);
                for (const std::string_view t : two)
                    if (rest.substr(0, 2) == t) op = std::string(t);
                if (op.size() == 1 && std::string_view("+-*/%~|.,:()[]{}<>=!").find(c) == std::string_view::npos)
                    template_error(std::string("unexpected character '") + c + "'", line);
                out.push_back({token::kind::op, op, 0, 0, line});
                p += op.size();
            }
        }
        pos = p;
    }
    out.push_back({token::kind::eof, "", 0, 0, line});
    return out;
}

// ---- the tree -------------------------------------------------------------------------------

struct expr;
using expr_ptr = std::unique_ptr<expr>;
struct expr {
    enum class kind : std::uint8_t {
        literal, name, list, tuple, dict, attr, index, slice, call, filter, test, neg, pos, not_, and_, or_, binary, compare, cond
    } k = kind::literal;
    int line = 0;
    value lit;
    std::string name;  // name, attribute, filter, test, operator
    std::vector<expr_ptr> a;                             // operands / arguments (slice: 3, maybe null)
    std::vector<std::pair<std::string, expr_ptr>> kw;  // keyword arguments
    bool negated = false;                               // `is not`, `not in`

    expr() = default;
    expr(const expr&) = delete;
    expr& operator=(const expr&) = delete;
    // Iterative: a hostile template's long operator chain (`a+a+a+...`, left-deep) must not
    // overflow the stack when its tree is destroyed, even one the parser refuses.
    ~expr() {
        std::vector<expr_ptr> pending;
        auto take = [&pending](expr& e) {
            for (expr_ptr& c : e.a)
                if (c) pending.push_back(std::move(c));
            for (auto& k : e.kw)
                if (k.second) pending.push_back(std::move(k.second));
        };
        take(*this);
        while (!pending.empty()) {
            expr_ptr p = std::move(pending.back());
            pending.pop_back();
            take(*p);
        }
    }
};

// The height of an expression tree, without recursion.
inline int expr_height(const expr& root) {
    int best = 0;
    std::vector<std::pair<const expr*, int>> todo{{&root, 1}};
    while (!todo.empty()) {
        const auto [e, h] = todo.back();
        todo.pop_back();
        best = std::max(best, h);
        for (const expr_ptr& c : e->a)
            if (c) todo.emplace_back(c.get(), h + 1);
        for (const auto& k : e->kw)
            if (k.second) todo.emplace_back(k.second.get(), h + 1);
    }
    return best;
}

struct stmt;
using body = std::vector<std::unique_ptr<stmt>>;
struct stmt {
    enum class kind : std::uint8_t { text, output, if_, for_, set, set_block, macro, break_, continue_, filter_block, block } k = kind::text;
    int line = 0;
    std::string text;                  // text; set_block/macro name
    expr_ptr e;                        // output, set value, for iterable, filter_block filter (applied to "")
    expr_ptr target;                   // set/for target (name, tuple of names, or attr of a namespace)
    expr_ptr cond;                     // for's `if`
    std::vector<std::pair<expr_ptr, body>> branches;  // if/elif (cond, body); else has cond null
    body b, else_b;                    // for body/else, macro/set_block/block body
    std::vector<std::pair<std::string, expr_ptr>> params;  // macro parameters and defaults
};

inline expr_ptr new_expr(expr::kind k, int line) {
    auto e = std::make_unique<expr>();
    e->k = k;
    e->line = line;
    return e;
}
inline std::unique_ptr<stmt> new_stmt(stmt::kind k, int line) {
    auto s = std::make_unique<stmt>();
    s->k = k;
    s->line = line;
    return s;
}

class parser {
public:
    // Nesting the parser accepts: statements inside statements, parentheses/brackets/unary
    // operators inside expressions, and the height of one expression's tree (operator chains
    // included). Real chat templates stay under 12 and 30; the renderer recurses this deep.
    static constexpr int max_nesting = 128;
    static constexpr int max_expr_height = 200;

    explicit parser(std::vector<token> toks) : t_(std::move(toks)) {}

    body parse_template() {
        body b = parse_body({});
        if (peek().k != token::kind::eof) template_error("unexpected end tag", peek().line);
        return b;
    }

private:
    const token& peek(std::size_t ahead = 0) const { return t_[std::min(i_ + ahead, t_.size() - 1)]; }
    const token& next() { return t_[std::min(i_++, t_.size() - 1)]; }
    bool is_op(std::string_view op, std::size_t ahead = 0) const { return peek(ahead).k == token::kind::op && peek(ahead).s == op; }
    bool is_name(std::string_view n, std::size_t ahead = 0) const { return peek(ahead).k == token::kind::name && peek(ahead).s == n; }
    void expect_op(std::string_view op) {
        if (!is_op(op)) template_error("expected '" + std::string(op) + "', found '" + peek().s + "'", peek().line);
        ++i_;
    }
    std::string expect_name() {
        if (peek().k != token::kind::name) template_error("expected a name, found '" + peek().s + "'", peek().line);
        return next().s;
    }
    void expect_block_end() {
        if (peek().k != token::kind::block_end) template_error("expected '%}', found '" + peek().s + "'", peek().line);
        ++i_;
    }

    // Statements until a block tag whose name is in `ends` (left unconsumed after {%).
    body parse_body(std::initializer_list<std::string_view> ends) {
        body out;
        for (;;) {
            const token& t = peek();
            if (t.k == token::kind::eof) {
                if (ends.size() != 0) template_error("missing {% " + std::string(*(ends.end() - 1)) + " %}", t.line);
                return out;
            }
            if (t.k == token::kind::text) {
                auto s = new_stmt(stmt::kind::text, t.line);
                s->text = t.s;
                out.push_back(std::move(s));
                ++i_;
                continue;
            }
            if (t.k == token::kind::var_begin) {
                ++i_;
                auto s = new_stmt(stmt::kind::output, t.line);
                s->e = parse_expr();
                if (peek().k != token::kind::var_end) template_error("expected '}}', found '" + peek().s + "'", peek().line);
                ++i_;
                out.push_back(std::move(s));
                continue;
            }
            if (t.k != token::kind::block_begin) template_error("unexpected '" + t.s + "'", t.line);
            const token& kw = peek(1);
            for (const std::string_view e : ends)
                if (kw.k == token::kind::name && kw.s == e) return out;
            ++i_;
            out.push_back(parse_statement());
        }
    }

    // Counts one level of recursion in the parser; too many is a clear error, not a stack overflow.
    struct nesting {
        parser& p;
        nesting(parser& pp, int line) : p(pp) {
            if (++p.nest_ > max_nesting) template_error("the template nests too deeply", line);
        }
        ~nesting() { --p.nest_; }
        nesting(const nesting&) = delete;
        nesting& operator=(const nesting&) = delete;
    };

    std::unique_ptr<stmt> parse_statement() {
        const int line = peek().line;
        const nesting guard(*this, line);
        const std::string kw = expect_name();
        auto s = new_stmt(stmt::kind::text, line);
        if (kw == "if") {
            s->k = stmt::kind::if_;
            expr_ptr c = parse_expr();
            expect_block_end();
            for (;;) {
                body b = parse_body({"elif", "else", "endif"});
                s->branches.emplace_back(std::move(c), std::move(b));
                ++i_;  // {%
                const std::string which = next().s;
                if (which == "elif") {
                    c = parse_expr();
                    expect_block_end();
                } else if (which == "else") {
                    expect_block_end();
                    s->branches.emplace_back(nullptr, parse_body({"endif"}));
                    i_ += 2;
                    expect_block_end();
                    break;
                } else {
                    expect_block_end();
                    break;
                }
            }
        } else if (kw == "for") {
            s->k = stmt::kind::for_;
            s->target = parse_target();
            if (!is_name("in")) template_error("expected 'in' in for", peek().line);
            ++i_;
            s->e = parse_expr(/*no_cond=*/true);
            if (is_name("if")) {
                ++i_;
                s->cond = parse_expr(true);
            }
            if (is_name("recursive")) template_error("recursive for loops are not supported", line);
            expect_block_end();
            s->b = parse_body({"else", "endfor"});
            ++i_;
            if (next().s == "else") {
                expect_block_end();
                s->else_b = parse_body({"endfor"});
                i_ += 2;
            }
            expect_block_end();
        } else if (kw == "set") {
            s->target = parse_target();
            if (is_op("=")) {
                ++i_;
                s->k = stmt::kind::set;
                s->e = parse_expr();
                if (is_op(",")) {  // set a = 1, 2 -> a tuple
                    auto tup = new_expr(expr::kind::tuple, line);
                    tup->a.push_back(std::move(s->e));
                    while (is_op(",")) {
                        ++i_;
                        tup->a.push_back(parse_expr());
                    }
                    s->e = std::move(tup);
                }
                expect_block_end();
            } else {
                s->k = stmt::kind::set_block;
                if (s->target->k != expr::kind::name) template_error("block set needs a plain name", line);
                if (is_op("|")) template_error("filtered block set is not supported", line);
                expect_block_end();
                s->b = parse_body({"endset"});
                i_ += 2;
                expect_block_end();
            }
        } else if (kw == "macro") {
            s->k = stmt::kind::macro;
            s->text = expect_name();
            expect_op("(");
            while (!is_op(")")) {
                std::string p = expect_name();
                expr_ptr def;
                if (is_op("=")) {
                    ++i_;
                    def = parse_expr();
                }
                s->params.emplace_back(std::move(p), std::move(def));
                if (!is_op(",")) break;
                ++i_;
            }
            expect_op(")");
            expect_block_end();
            s->b = parse_body({"endmacro"});
            i_ += 2;
            if (peek().k == token::kind::name) ++i_;  // {% endmacro name %}
            expect_block_end();
        } else if (kw == "break" || kw == "continue") {
            s->k = kw == "break" ? stmt::kind::break_ : stmt::kind::continue_;
            expect_block_end();
        } else if (kw == "filter") {
            s->k = stmt::kind::filter_block;
            auto f = new_expr(expr::kind::literal, line);
            f->lit = value(std::string());
            s->e = parse_filters(std::move(f), /*first_without_bar=*/true);
            expect_block_end();
            s->b = parse_body({"endfilter"});
            i_ += 2;
            expect_block_end();
        } else if (kw == "generation") {  // transformers' assistant-mask tag: renders its body
            s->k = stmt::kind::block;
            expect_block_end();
            s->b = parse_body({"endgeneration"});
            i_ += 2;
            expect_block_end();
        } else {
            template_error("unsupported statement '" + kw + "'", line);
        }
        return s;
    }

    // A for/set target: name, name.attr (set only), or names separated by commas.
    expr_ptr parse_target() {
        const int line = peek().line;
        auto one = [&]() -> expr_ptr {
            auto n = new_expr(expr::kind::name, line);
            n->name = expect_name();
            if (is_op(".")) {
                ++i_;
                auto a = new_expr(expr::kind::attr, line);
                a->name = expect_name();
                a->a.push_back(std::move(n));
                return a;
            }
            return n;
        };
        const bool paren = is_op("(");
        if (paren) ++i_;
        expr_ptr first = one();
        if (!is_op(",")) {
            if (paren) expect_op(")");
            return first;
        }
        auto tup = new_expr(expr::kind::tuple, line);
        tup->a.push_back(std::move(first));
        while (is_op(",")) {
            ++i_;
            tup->a.push_back(one());
        }
        if (paren) expect_op(")");
        return tup;
    }

    expr_ptr make(expr::kind k, int line) { return new_expr(k, line); }

    expr_ptr parse_expr(bool no_cond = false) {
        const int line = peek().line;
        const nesting guard(*this, line);
        const bool outermost = expr_nest_++ == 0;
        struct leave {
            int& n;
            ~leave() { --n; }
        } left{expr_nest_};
        expr_ptr e = parse_or();
        if (!no_cond && is_name("if")) {
            ++i_;
            auto c = make(expr::kind::cond, line);
            c->a.push_back(parse_or());  // condition
            c->a.push_back(std::move(e));  // then
            if (is_name("else")) {
                ++i_;
                c->a.push_back(parse_expr());
            }
            e = std::move(c);
        }
        if (outermost && expr_height(*e) > max_expr_height) template_error("an expression nests too deeply", line);
        return e;
    }
    expr_ptr parse_or() {
        expr_ptr e = parse_and();
        while (is_name("or")) {
            auto n = make(expr::kind::or_, next().line);
            n->a.push_back(std::move(e));
            n->a.push_back(parse_and());
            e = std::move(n);
        }
        return e;
    }
    expr_ptr parse_and() {
        expr_ptr e = parse_not();
        while (is_name("and")) {
            auto n = make(expr::kind::and_, next().line);
            n->a.push_back(std::move(e));
            n->a.push_back(parse_not());
            e = std::move(n);
        }
        return e;
    }
    expr_ptr parse_not() {
        const nesting guard(*this, peek().line);
        if (is_name("not")) {
            auto n = make(expr::kind::not_, next().line);
            n->a.push_back(parse_not());
            return n;
        }
        return parse_compare();
    }
    expr_ptr parse_compare() {
        expr_ptr e = parse_add();
        for (;;) {
            std::string op;
            bool neg = false;
            if (peek().k == token::kind::op && (peek().s == "==" || peek().s == "!=" || peek().s == "<" || peek().s == ">" ||
                                                peek().s == "<=" || peek().s == ">=")) {
                op = next().s;
            } else if (is_name("in")) {
                ++i_;
                op = "in";
            } else if (is_name("not") && is_name("in", 1)) {
                i_ += 2;
                op = "in";
                neg = true;
            } else {
                return e;
            }
            auto n = make(expr::kind::compare, peek().line);
            n->name = op;
            n->negated = neg;
            n->a.push_back(std::move(e));
            n->a.push_back(parse_add());
            e = std::move(n);
        }
    }
    expr_ptr binary(expr_ptr l, std::string op, expr_ptr r, int line) {
        auto n = make(expr::kind::binary, line);
        n->name = std::move(op);
        n->a.push_back(std::move(l));
        n->a.push_back(std::move(r));
        return n;
    }
    expr_ptr parse_add() {
        expr_ptr e = parse_concat();
        while (is_op("+") || is_op("-")) {
            const token& t = next();
            e = binary(std::move(e), t.s, parse_concat(), t.line);
        }
        return e;
    }
    expr_ptr parse_concat() {
        expr_ptr e = parse_mul();
        while (is_op("~")) {
            const token& t = next();
            e = binary(std::move(e), "~", parse_mul(), t.line);
        }
        return e;
    }
    expr_ptr parse_mul() {
        expr_ptr e = parse_pow();
        while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
            const token& t = next();
            e = binary(std::move(e), t.s, parse_pow(), t.line);
        }
        return e;
    }
    expr_ptr parse_pow() {
        expr_ptr e = parse_unary();
        while (is_op("**")) {
            const token& t = next();
            e = binary(std::move(e), "**", parse_unary(), t.line);
        }
        return e;
    }
    expr_ptr parse_unary() {
        const nesting guard(*this, peek().line);
        if (is_op("-") || is_op("+")) {
            const token& t = next();
            auto n = make(t.s == "-" ? expr::kind::neg : expr::kind::pos, t.line);
            n->a.push_back(parse_unary());
            return n;
        }
        return parse_filters(parse_postfix(parse_primary()), false);
    }

    // Arguments of a call: (a, b, key=c).
    void parse_args(expr& call) {
        expect_op("(");
        while (!is_op(")")) {
            if (peek().k == token::kind::name && is_op("=", 1)) {
                std::string k = next().s;
                ++i_;
                call.kw.emplace_back(std::move(k), parse_expr());
            } else {
                call.a.push_back(parse_expr());
            }
            if (!is_op(",")) break;
            ++i_;
        }
        expect_op(")");
    }

    expr_ptr parse_filters(expr_ptr e, bool first_without_bar) {
        for (;;) {
            if (is_op("|") || first_without_bar) {
                if (!first_without_bar) ++i_;
                first_without_bar = false;
                auto f = make(expr::kind::filter, peek().line);
                f->name = expect_name();
                while (is_op(".")) {  // dotted filter names do not exist in the subset
                    template_error("unsupported filter name", peek().line);
                }
                f->a.push_back(std::move(e));
                if (is_op("(")) parse_args(*f);
                e = std::move(f);
            } else if (is_name("is")) {
                auto t = make(expr::kind::test, next().line);
                if (is_name("not")) {
                    ++i_;
                    t->negated = true;
                }
                if (peek().k == token::kind::name) t->name = next().s;
                else if (is_op("==") || is_op("!=") || is_op("<") || is_op(">") || is_op("<=") || is_op(">=")) t->name = next().s;
                else template_error("expected a test name after 'is'", peek().line);
                t->a.push_back(std::move(e));
                if (is_op("(")) {
                    parse_args(*t);
                } else if (peek().k == token::kind::string || peek().k == token::kind::integer || peek().k == token::kind::floating ||
                           (peek().k == token::kind::name && !is_name("and") && !is_name("or") && !is_name("else") &&
                            !is_name("if") && !is_name("in") && !is_name("not") && !is_name("is"))) {
                    t->a.push_back(parse_primary());  // `x is divisibleby 3`, `x is sameas y`
                }
                e = std::move(t);
            } else {
                return e;
            }
        }
    }

    expr_ptr parse_postfix(expr_ptr e) {
        for (;;) {
            if (is_op(".")) {
                const int line = next().line;
                auto a = make(expr::kind::attr, line);
                if (peek().k == token::kind::integer) a->name = std::to_string(next().i);
                else a->name = expect_name();
                a->a.push_back(std::move(e));
                e = std::move(a);
            } else if (is_op("[")) {
                const int line = next().line;
                expr_ptr lo, hi, step;
                bool slice = false;
                if (!is_op(":")) lo = parse_expr();
                if (is_op(":")) {
                    slice = true;
                    ++i_;
                    if (!is_op("]") && !is_op(":")) hi = parse_expr();
                    if (is_op(":")) {
                        ++i_;
                        if (!is_op("]")) step = parse_expr();
                    }
                }
                expect_op("]");
                auto n = make(slice ? expr::kind::slice : expr::kind::index, line);
                n->a.push_back(std::move(e));
                n->a.push_back(std::move(lo));
                if (slice) {
                    n->a.push_back(std::move(hi));
                    n->a.push_back(std::move(step));
                }
                e = std::move(n);
            } else if (is_op("(")) {
                auto c = make(expr::kind::call, peek().line);
                c->a.push_back(std::move(e));
                parse_args(*c);
                e = std::move(c);
            } else {
                return e;
            }
        }
    }

    expr_ptr parse_primary() {
        const token& t = peek();
        switch (t.k) {
            case token::kind::string: {
                auto n = make(expr::kind::literal, t.line);
                std::string s = next().s;
                while (peek().k == token::kind::string) s += next().s;  // adjacent literals concatenate
                n->lit = value(std::move(s));
                return n;
            }
            case token::kind::integer: {
                auto n = make(expr::kind::literal, t.line);
                n->lit = value(next().i);
                return n;
            }
            case token::kind::floating: {
                auto n = make(expr::kind::literal, t.line);
                n->lit = value(next().f);
                return n;
            }
            case token::kind::name: {
                auto n = make(expr::kind::literal, t.line);
                const std::string& s = t.s;
                if (s == "true" || s == "True") n->lit = value(true);
                else if (s == "false" || s == "False") n->lit = value(false);
                else if (s == "none" || s == "None") n->lit = value::none();
                else {
                    n->k = expr::kind::name;
                    n->name = s;
                }
                ++i_;
                return n;
            }
            case token::kind::op:
                if (t.s == "(") {
                    ++i_;
                    if (is_op(")")) {
                        ++i_;
                        return make(expr::kind::tuple, t.line);
                    }
                    expr_ptr e = parse_expr();
                    if (is_op(",")) {
                        auto tup = make(expr::kind::tuple, t.line);
                        tup->a.push_back(std::move(e));
                        while (is_op(",")) {
                            ++i_;
                            if (is_op(")")) break;
                            tup->a.push_back(parse_expr());
                        }
                        e = std::move(tup);
                    }
                    expect_op(")");
                    return e;
                }
                if (t.s == "[") {
                    ++i_;
                    auto l = make(expr::kind::list, t.line);
                    while (!is_op("]")) {
                        l->a.push_back(parse_expr());
                        if (!is_op(",")) break;
                        ++i_;
                    }
                    expect_op("]");
                    return l;
                }
                if (t.s == "{") {
                    ++i_;
                    auto d = make(expr::kind::dict, t.line);
                    while (!is_op("}")) {
                        d->a.push_back(parse_expr());
                        expect_op(":");
                        d->a.push_back(parse_expr());
                        if (!is_op(",")) break;
                        ++i_;
                    }
                    expect_op("}");
                    return d;
                }
                break;
            default: break;
        }
        template_error("unexpected '" + t.s + "' in an expression", t.line);
    }

    std::vector<token> t_;
    std::size_t i_ = 0;
    int nest_ = 0;       // parser recursion (nesting)
    int expr_nest_ = 0;  // parse_expr calls in progress: 1 is a whole expression
};

}  // namespace lmtk::jinja
