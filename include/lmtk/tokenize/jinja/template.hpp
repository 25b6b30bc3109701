#pragma once
// lmtk::jinja::template_program: renders a model's own Jinja chat template (GGUF
// tokenizer.chat_template, tokenizer_config.json's chat_template) as transformers'
// apply_chat_template does: a sandboxed Jinja2 environment with trim_blocks and lstrip_blocks,
// loop controls, HF's tojson (json.dumps, non-ASCII kept), raise_exception and strftime_now.
//
//   const jinja::template_program t(source);          // parses; a parse error throws
//   std::string prompt = t.render(context);           // context: JSON object (messages, tools,
//                                                     // add_generation_prompt, bos_token, ...)
//
// A template is code from a model file: rendering is bounded (loop iterations, output size,
// call depth) and every unsupported construct is an lmtk::error naming it, never a crash.
#include <lmtk/tokenize/jinja/parse.hpp>
#include <lmtk/tokenize/jinja/value.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <ctime>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace lmtk::jinja {

class template_program {
public:
    // Limits on what one render may do: a template is untrusted code.
    static constexpr std::size_t max_output = 8u << 20;
    static constexpr std::size_t max_steps = 1'000'000;   // statements and loop iterations
    static constexpr int max_depth = 64;                   // macro calls and nested expressions

    explicit template_program(std::string_view source) : body_(parser(lex(source)).parse_template()) {}

    // `context`: a JSON object (nlohmann::json or ordered_json: see value::from_json).
    template <class Json>
    std::string render(const Json& context) const {
        renderer r;
        r.scopes.emplace_back();
        install_globals(r.scopes.back());
        if (context.is_object())
            for (auto it = context.begin(); it != context.end(); ++it) r.scopes.back()[it.key()] = value::from_json(it.value());
        r.scopes.emplace_back();  // the template's own variables
        std::string out;
        r.out = &out;
        r.exec(body_);
        return out;
    }

private:
    enum class flow { normal, break_, continue_ };
    using scope = std::map<std::string, value, std::less<>>;

    static void install_globals(scope& g) {
        g["raise_exception"] = value(function([](value_list& a, kwargs&) -> value {
            template_error("raise_exception: " + (a.empty() ? std::string() : a[0].to_string()));
        }));
        g["strftime_now"] = value(function([](value_list& a, kwargs&) -> value {
            const std::time_t now = std::time(nullptr);
            std::tm tm{};
            localtime_r(&now, &tm);
            char buf[256];
            const std::string fmt = a.empty() ? std::string("%Y-%m-%d") : a[0].to_string();
            const std::size_t n = std::strftime(buf, sizeof buf, fmt.c_str(), &tm);
            return value(std::string(buf, n));
        }));
        g["range"] = value(function([](value_list& a, kwargs&) -> value {
            std::int64_t lo = 0, hi = 0, step = 1;
            if (a.size() == 1) hi = a[0].as_int();
            else if (a.size() >= 2) lo = a[0].as_int(), hi = a[1].as_int();
            if (a.size() >= 3) step = a[2].as_int();
            if (step == 0) template_error("range() step must not be zero");
            value_list l;
            for (std::int64_t k = lo; step > 0 ? k < hi : k > hi; k += step) {
                if (l.size() >= 1'000'000) template_error("range() too long");
                l.emplace_back(k);
            }
            return value(std::move(l));
        }));
        g["namespace"] = value(function([](value_list& a, kwargs& kw) -> value {
            value_dict d;
            if (!a.empty() && a[0].is_dict()) d = a[0].dict();
            for (auto& [k, v] : kw) d.emplace_back(k, v);
            return value(std::move(d), /*is_namespace=*/true);
        }));
        g["dict"] = value(function([](value_list& a, kwargs& kw) -> value {
            value_dict d;
            if (!a.empty() && a[0].is_dict()) d = a[0].dict();
            for (auto& [k, v] : kw) d.emplace_back(k, v);
            return value(std::move(d));
        }));
    }

    struct renderer {
        std::vector<scope> scopes;
        std::string* out = nullptr;
        std::size_t steps = 0;
        int depth = 0;

        void tick(int line) {
            if (++steps > max_steps) template_error("the template runs too long", line);
        }
        void emit(std::string_view s, int line) {
            if (out->size() + s.size() > max_output) template_error("the rendered text is too long", line);
            out->append(s);
        }
        value lookup(const std::string& name) const {
            for (auto it = scopes.rbegin(); it != scopes.rend(); ++it)
                if (const auto f = it->find(name); f != it->end()) return f->second;
            return {};
        }

        flow exec(const body& b) {
            for (const auto& s : b) {
                const flow f = exec(*s);
                if (f != flow::normal) return f;
            }
            return flow::normal;
        }

        void assign(const expr& target, const value& v, int line) {
            if (target.k == expr::kind::name) {
                scopes.back()[target.name] = v;
            } else if (target.k == expr::kind::attr) {
                const value ns = eval(*target.a[0]);
                if (!ns.is_namespace()) template_error("cannot set an attribute of a " + std::string(ns.type_name()) + " (only of a namespace)", line);
                if (v.holds_namespace()) template_error("a namespace attribute cannot hold a namespace", line);
                value_dict& d = ns.mutable_namespace();
                for (auto& kv : d)
                    if (kv.first == target.name) {
                        kv.second = v;
                        return;
                    }
                d.emplace_back(target.name, v);
            } else if (target.k == expr::kind::tuple) {
                if (!v.is_list() || v.list().size() != target.a.size())
                    template_error("cannot unpack " + std::string(v.type_name()) + " into " + std::to_string(target.a.size()) + " names", line);
                for (std::size_t k = 0; k < target.a.size(); ++k) assign(*target.a[k], v.list()[k], line);
            } else {
                template_error("cannot assign to this expression", line);
            }
        }

        flow exec(const stmt& s) {
            tick(s.line);
            switch (s.k) {
                case stmt::kind::text: emit(s.text, s.line); break;
                case stmt::kind::output: emit(eval(*s.e).to_string(), s.line); break;
                case stmt::kind::if_:
                    for (const auto& [c, b] : s.branches)
                        if (!c || eval(*c).truthy()) return exec(b);
                    break;
                case stmt::kind::for_: return exec_for(s);
                case stmt::kind::set: assign(*s.target, eval(*s.e), s.line); break;
                case stmt::kind::set_block: {
                    std::string captured;
                    std::string* saved = out;
                    out = &captured;
                    exec(s.b);
                    out = saved;
                    scopes.back()[s.target->name] = value(std::move(captured));
                    break;
                }
                case stmt::kind::macro: scopes.back()[s.text] = make_macro(s); break;
                case stmt::kind::break_: return flow::break_;
                case stmt::kind::continue_: return flow::continue_;
                case stmt::kind::filter_block: {
                    std::string captured;
                    std::string* saved = out;
                    out = &captured;
                    exec(s.b);
                    out = saved;
                    // The filter chain was parsed onto an empty string literal: apply it to the body.
                    emit(apply_filter_chain(*s.e, value(std::move(captured))).to_string(), s.line);
                    break;
                }
                case stmt::kind::block: return exec(s.b);
            }
            return flow::normal;
        }

        value apply_filter_chain(const expr& e, value v) {
            if (e.k != expr::kind::filter) return v;
            depth_guard g(*this, e.line);
            value inner = apply_filter_chain(*e.a[0], std::move(v));
            return call_filter(e, inner);
        }

        flow exec_for(const stmt& s) {
            const value seq = eval(*s.e);
            value_list items;
            if (seq.is_list()) items = seq.list();
            else if (seq.is_dict()) for (const auto& kv : seq.dict()) items.emplace_back(kv.first);
            else if (seq.is_string()) for (const std::string& ch : utf8_chars(seq.str())) items.emplace_back(ch);
            else if (seq.is_undefined()) items.clear();  // jinja2's Undefined iterates as empty
            else if (seq.is_none()) template_error("cannot loop over None", s.line);
            else template_error(std::string("cannot loop over a ") + seq.type_name(), s.line);
            scopes.emplace_back();
            if (s.cond) {  // `for x in xs if cond`: filtered before loop.* is computed
                value_list kept;
                for (const value& it : items) {
                    assign(*s.target, it, s.line);
                    if (eval(*s.cond).truthy()) kept.push_back(it);
                }
                items = std::move(kept);
            }
            const auto n = static_cast<std::int64_t>(items.size());
            for (std::int64_t k = 0; k < n; ++k) {
                tick(s.line);
                assign(*s.target, items[static_cast<std::size_t>(k)], s.line);
                value_dict loop{{"index", value(k + 1)},
                                {"index0", value(k)},
                                {"first", value(k == 0)},
                                {"last", value(k == n - 1)},
                                {"length", value(n)},
                                {"revindex", value(n - k)},
                                {"revindex0", value(n - k - 1)},
                                {"previtem", k > 0 ? items[static_cast<std::size_t>(k - 1)] : value()},
                                {"nextitem", k + 1 < n ? items[static_cast<std::size_t>(k + 1)] : value()}};
                loop.emplace_back("cycle", value(function([k](value_list& a, kwargs&) -> value {
                    if (a.empty()) return value();
                    return a[static_cast<std::size_t>(k) % a.size()];
                })));
                scopes.back()["loop"] = value(std::move(loop));
                const flow f = exec(s.b);
                if (f == flow::break_) break;
            }
            if (n == 0 && !s.else_b.empty()) exec(s.else_b);
            scopes.pop_back();
            return flow::normal;
        }

        value make_macro(const stmt& s) {
            const stmt* m = &s;
            renderer* self = this;
            return value(function([m, self](value_list& args, kwargs& kw) -> value {
                if (++self->depth > max_depth) template_error("macros call each other too deeply", m->line);
                self->scopes.emplace_back();
                for (std::size_t k = 0; k < m->params.size(); ++k) {
                    const std::string& name = m->params[k].first;  // not a structured binding: clang 14 cannot capture one
                    const expr_ptr& def = m->params[k].second;
                    value v;
                    if (k < args.size()) v = args[k];
                    else if (const auto it = std::find_if(kw.begin(), kw.end(), [&](auto& p) { return p.first == name; }); it != kw.end())
                        v = it->second;
                    else if (def) v = self->eval(*def);
                    self->scopes.back()[name] = v;
                }
                std::string captured;
                std::string* saved = self->out;
                self->out = &captured;
                self->exec(m->b);
                self->out = saved;
                self->scopes.pop_back();
                --self->depth;
                return value(std::move(captured));
            }));
        }

        static std::vector<std::string> utf8_chars(const std::string& s) {
            std::vector<std::string> out;
            for (std::size_t k = 0; k < s.size();) {
                std::size_t n = 1;
                while (k + n < s.size() && (static_cast<unsigned char>(s[k + n]) & 0xC0) == 0x80) ++n;
                out.push_back(s.substr(k, n));
                k += n;
            }
            return out;
        }

        // ---- expressions ---------------------------------------------------------------------
        struct depth_guard {
            renderer& r;
            explicit depth_guard(renderer& rr, int line) : r(rr) {
                if (++r.depth > max_depth * 4) template_error("expression nested too deeply", line);
            }
            ~depth_guard() { --r.depth; }
        };

        value eval(const expr& e) {
            depth_guard g(*this, e.line);
            switch (e.k) {
                case expr::kind::literal: return e.lit;
                case expr::kind::name: return lookup(e.name);
                case expr::kind::list:
                case expr::kind::tuple: {
                    value_list l;
                    for (const auto& x : e.a) l.push_back(eval(*x));
                    return e.k == expr::kind::tuple ? value::tuple(std::move(l)) : value(std::move(l));
                }
                case expr::kind::dict: {
                    value_dict d;
                    for (std::size_t k = 0; k + 1 < e.a.size(); k += 2) {
                        const value key = eval(*e.a[k]);
                        set_key(d, key.to_string(), eval(*e.a[k + 1]));
                    }
                    return value(std::move(d));
                }
                case expr::kind::attr: return attribute(eval(*e.a[0]), e.name, e.line);
                case expr::kind::index: return subscript(eval(*e.a[0]), eval(*e.a[1]), e.line);
                case expr::kind::slice: return slice(e);
                case expr::kind::call: return call(e);
                case expr::kind::filter: return call_filter(e, eval(*e.a[0]));
                case expr::kind::test: {
                    const bool r = run_test(e);
                    return value(e.negated ? !r : r);
                }
                case expr::kind::neg: {
                    const value v = eval(*e.a[0]);
                    if (v.is_int() || v.is_bool()) return value(checked(0, v.as_int(), '-', e.line));
                    if (v.is_float()) return value(-v.as_float());
                    template_error(std::string("bad operand for unary -: ") + v.type_name(), e.line);
                }
                case expr::kind::pos: return eval(*e.a[0]);
                case expr::kind::not_: return value(!eval(*e.a[0]).truthy());
                case expr::kind::and_: {
                    value l = eval(*e.a[0]);
                    return l.truthy() ? eval(*e.a[1]) : l;
                }
                case expr::kind::or_: {
                    value l = eval(*e.a[0]);
                    return l.truthy() ? l : eval(*e.a[1]);
                }
                case expr::kind::binary: return binary(e.name, eval(*e.a[0]), eval(*e.a[1]), e.line);
                case expr::kind::compare: {
                    const value l = eval(*e.a[0]), r = eval(*e.a[1]);
                    if (e.name == "in") return value(contains(r, l, e.line) != e.negated);
                    return value(compare(e.name, l, r, e.line));
                }
                case expr::kind::cond:
                    if (eval(*e.a[0]).truthy()) return eval(*e.a[1]);
                    return e.a.size() > 2 ? eval(*e.a[2]) : value();
            }
            return {};
        }

        static void set_key(value_dict& d, const std::string& k, value v) {
            for (auto& kv : d)
                if (kv.first == k) {
                    kv.second = std::move(v);
                    return;
                }
            d.emplace_back(k, std::move(v));
        }

        value attribute(const value& obj, const std::string& name, int line) {
            if (obj.is_undefined()) template_error("'" + name + "' of an undefined value", line);
            if (obj.is_dict()) {
                value v = obj.get(name);
                if (!v.is_undefined()) return v;
            }
            if (obj.is_list() && !name.empty() && name[0] >= '0' && name[0] <= '9') return subscript(obj, value(static_cast<std::int64_t>(std::stoll(name))), line);
            return {};  // methods are resolved at the call (see call())
        }

        value subscript(const value& obj, const value& key, int line) {
            if (obj.is_undefined()) template_error("subscript of an undefined value", line);
            if (obj.is_dict()) return obj.get(key.to_string());
            if (obj.is_list() || obj.is_string()) {
                if (!key.is_int() && !key.is_bool()) return {};
                const std::int64_t n = obj.is_list() ? static_cast<std::int64_t>(obj.list().size()) : static_cast<std::int64_t>(obj.length());
                std::int64_t k = key.as_int();
                if (k < 0) k += n;
                if (k < 0 || k >= n) return {};
                if (obj.is_list()) return obj.list()[static_cast<std::size_t>(k)];
                return value(utf8_chars(obj.str())[static_cast<std::size_t>(k)]);
            }
            return {};
        }

        value slice(const expr& e) {
            const value obj = eval(*e.a[0]);
            if (!obj.is_list() && !obj.is_string()) template_error(std::string("cannot slice a ") + obj.type_name(), e.line);
            value_list items;
            if (obj.is_list()) items = obj.list();
            else for (const auto& ch : utf8_chars(obj.str())) items.emplace_back(ch);
            const auto n = static_cast<std::int64_t>(items.size());
            const std::int64_t step = e.a[3] ? eval(*e.a[3]).as_int() : 1;
            if (step == 0) template_error("slice step cannot be zero", e.line);
            auto bound = [&](const expr_ptr& x, std::int64_t dflt) {
                if (!x) return dflt;
                const value v = eval(*x);
                if (v.is_none()) return dflt;
                std::int64_t k = v.as_int();
                if (k < 0) k += n;
                if (step > 0) return std::clamp<std::int64_t>(k, 0, n);
                return std::clamp<std::int64_t>(k, -1, n - 1);
            };
            const std::int64_t lo = bound(e.a[1], step > 0 ? 0 : n - 1);
            const std::int64_t hi = bound(e.a[2], step > 0 ? n : -1);
            value_list out;
            for (std::int64_t k = lo; step > 0 ? k < hi : k > hi; k += step) out.push_back(items[static_cast<std::size_t>(k)]);
            if (obj.is_list()) return value(std::move(out));
            std::string s;
            for (const value& v : out) s += v.str();
            return value(std::move(s));
        }

        bool contains(const value& hay, const value& needle, int line) {
            if (hay.is_string()) return hay.str().find(needle.to_string()) != std::string::npos;
            if (hay.is_list()) {
                for (const value& v : hay.list())
                    if (equal(v, needle)) return true;
                return false;
            }
            if (hay.is_dict()) return hay.has(needle.to_string());
            if (hay.is_undefined()) return false;  // an empty sequence, as in jinja2
            if (hay.is_none()) template_error("'in' on None", line);
            template_error(std::string("'in' on a ") + hay.type_name(), line);
        }

        static bool equal(const value& a, const value& b) {
            if (a.is_number() && b.is_number()) return a.as_float() == b.as_float();
            if ((a.is_bool() || a.is_number()) && (b.is_bool() || b.is_number())) return a.as_float() == b.as_float();
            if (a.kind() != b.kind()) return false;
            switch (a.kind()) {
                case value::type::undefined:
                case value::type::none: return true;
                case value::type::boolean: return a.as_bool() == b.as_bool();
                case value::type::string: return a.str() == b.str();
                case value::type::list:
                    if (a.list().size() != b.list().size()) return false;
                    for (std::size_t k = 0; k < a.list().size(); ++k)
                        if (!equal(a.list()[k], b.list()[k])) return false;
                    return true;
                case value::type::dict:
                case value::type::ns:
                    if (a.dict().size() != b.dict().size()) return false;
                    for (const auto& [k, v] : a.dict())
                        if (!b.has(k) || !equal(v, b.get(k))) return false;
                    return true;
                default: return false;
            }
        }

        static bool compare(const std::string& op, const value& l, const value& r, int line) {
            if (op == "==") return equal(l, r);
            if (op == "!=") return !equal(l, r);
            int c = 0;
            if ((l.is_number() || l.is_bool()) && (r.is_number() || r.is_bool())) c = l.as_float() < r.as_float() ? -1 : l.as_float() > r.as_float() ? 1 : 0;
            else if (l.is_string() && r.is_string()) c = l.str().compare(r.str());
            else template_error(std::string("cannot compare ") + l.type_name() + " with " + r.type_name() + " using " + op, line);
            if (op == "<") return c < 0;
            if (op == ">") return c > 0;
            if (op == "<=") return c <= 0;
            return c >= 0;
        }

        // Python's integers do not overflow; lmtk's are 64-bit and refuse to (never UB).
        static std::int64_t checked(std::int64_t a, std::int64_t b, char op, int line) {
            std::int64_t out = 0;
            const bool over = op == '+' ? __builtin_add_overflow(a, b, &out)
                              : op == '-' ? __builtin_sub_overflow(a, b, &out)
                                          : __builtin_mul_overflow(a, b, &out);
            if (over) template_error("integer overflow (lmtk's integers are 64-bit)", line);
            return out;
        }

        static value binary(const std::string& op, const value& l, const value& r, int line) {
            if (op == "~") return value(l.to_string() + r.to_string());
            const bool nums = (l.is_number() || l.is_bool()) && (r.is_number() || r.is_bool());
            const bool ints = nums && !l.is_float() && !r.is_float();
            if (op == "+") {
                if (ints) return value(checked(l.as_int(), r.as_int(), '+', line));
                if (nums) return value(l.as_float() + r.as_float());
                if (l.is_string() && r.is_string()) {
                    // Markup + str escapes the str (markupsafe), as a template's "..."|safe + x does.
                    if (l.is_markup() && !r.is_markup()) return value::markup(l.str() + value::html_escape(r.str()));
                    if (r.is_markup() && !l.is_markup()) return value::markup(value::html_escape(l.str()) + r.str());
                    return l.is_markup() ? value::markup(l.str() + r.str()) : value(l.str() + r.str());
                }
                if (l.is_list() && r.is_list()) {
                    value_list out = l.list();
                    out.insert(out.end(), r.list().begin(), r.list().end());
                    return value(std::move(out));
                }
            } else if (op == "-") {
                if (ints) return value(checked(l.as_int(), r.as_int(), '-', line));
                if (nums) return value(l.as_float() - r.as_float());
            } else if (op == "*") {
                if (ints) return value(checked(l.as_int(), r.as_int(), '*', line));
                if (nums) return value(l.as_float() * r.as_float());
                const value& s = l.is_string() ? l : r;
                const value& n = l.is_string() ? r : l;
                if (s.is_string() && (n.is_int() || n.is_bool())) {
                    if (n.as_int() > 0 && s.str().size() > 0 && static_cast<std::uint64_t>(n.as_int()) > max_output / s.str().size())
                        template_error("string repetition too long", line);
                    std::string out;
                    for (std::int64_t k = 0; k < n.as_int(); ++k) out += s.str();
                    return value(std::move(out));
                }
            } else if (op == "/") {
                if (nums) {
                    if (r.as_float() == 0.0) template_error("division by zero", line);
                    return value(l.as_float() / r.as_float());
                }
            } else if (op == "//" || op == "%") {
                if (ints) {
                    const std::int64_t a = l.as_int(), b = r.as_int();
                    if (b == 0) template_error("integer division or modulo by zero", line);
                    if (a == INT64_MIN && b == -1) template_error("integer overflow (lmtk's integers are 64-bit)", line);
                    std::int64_t q = a / b, m = a % b;
                    if (m != 0 && ((m < 0) != (b < 0))) --q, m += b;  // Python floors
                    return value(op == "//" ? q : m);
                }
                if (nums) {
                    if (r.as_float() == 0.0) template_error("float division or modulo by zero", line);
                    const double q = std::floor(l.as_float() / r.as_float());
                    return op == "//" ? value(q) : value(l.as_float() - q * r.as_float());
                }
                if (op == "%" && l.is_string()) return value(percent_format(l.str(), r, line));
            } else if (op == "**") {
                if (ints && r.as_int() >= 0) {
                    std::int64_t out = 1;
                    for (std::int64_t k = 0; k < r.as_int() && k < 64; ++k) out = checked(out, l.as_int(), '*', line);
                    return value(out);
                }
                if (nums) return value(std::pow(l.as_float(), r.as_float()));
            }
            template_error("unsupported operand types for " + op + ": " + l.type_name() + " and " + r.type_name(), line);
        }

        // "%s ... %d" % x (a value or a list of values).
        static std::string percent_format(const std::string& fmt, const value& args, int line) {
            const value_list list = args.is_list() ? args.list() : value_list{args};
            std::string out;
            std::size_t next = 0;
            for (std::size_t k = 0; k < fmt.size(); ++k) {
                if (fmt[k] != '%' || k + 1 >= fmt.size()) {
                    out += fmt[k];
                    continue;
                }
                const char c = fmt[++k];
                if (c == '%') {
                    out += '%';
                    continue;
                }
                if (next >= list.size()) template_error("not enough arguments for format string", line);
                const value& v = list[next++];
                if (c == 's') out += v.to_string();
                else if (c == 'd' || c == 'i') out += std::to_string(v.as_int());
                else if (c == 'r') out += v.repr();
                else template_error(std::string("unsupported format %") + c, line);
            }
            return out;
        }

        // Evaluated arguments of a call/filter/test node (from index `skip` of e.a).
        void args_of(const expr& e, std::size_t skip, value_list& args, kwargs& kw) {
            for (std::size_t k = skip; k < e.a.size(); ++k) args.push_back(eval(*e.a[k]));
            for (const auto& [name, x] : e.kw) kw.emplace_back(name, eval(*x));
        }
        static value arg(value_list& a, kwargs& kw, std::size_t pos, std::string_view name, value dflt = {}) {
            for (auto& [k, v] : kw)
                if (k == name) return v;
            return pos < a.size() ? a[pos] : dflt;
        }

        value call(const expr& e) {
            const expr& callee = *e.a[0];
            value_list args;
            kwargs kw;
            if (callee.k == expr::kind::attr) {
                const value obj = eval(*callee.a[0]);
                if (!(obj.is_dict() && obj.get(callee.name).is_callable())) {
                    args_of(e, 1, args, kw);
                    return method(obj, callee.name, args, kw, e.line);
                }
            }
            const value f = eval(callee);
            if (!f.is_callable()) {
                const std::string what = callee.k == expr::kind::name ? "'" + callee.name + "'" : std::string("this value");
                template_error(what + " is not a function (undefined or unsupported)", e.line);
            }
            args_of(e, 1, args, kw);
            return f.call(args, kw);
        }

        // Python methods of strings, dicts and lists that templates call.
        value method(const value& obj, const std::string& name, value_list& a, kwargs& kw, int line) {
            if (obj.is_string()) {
                const std::string& s = obj.str();
                if (name == "strip" || name == "lstrip" || name == "rstrip") {
                    const value chars = arg(a, kw, 0, "chars");
                    const std::string set = chars.is_string() ? chars.str() : std::string(" \t\n\r\f\v");
                    std::size_t b = 0, en = s.size();
                    if (name != "rstrip") while (b < en && set.find(s[b]) != std::string::npos) ++b;
                    if (name != "lstrip") while (en > b && set.find(s[en - 1]) != std::string::npos) --en;
                    return value(s.substr(b, en - b));
                }
                if (name == "upper" || name == "lower") {
                    std::string out = s;
                    for (char& c : out) c = static_cast<char>(name == "upper" ? std::toupper(static_cast<unsigned char>(c)) : std::tolower(static_cast<unsigned char>(c)));
                    return value(std::move(out));
                }
                if (name == "title" || name == "capitalize") return filter_case(name, obj);
                if (name == "startswith" || name == "endswith") {
                    const value p = arg(a, kw, 0, "prefix");
                    auto test = [&](const std::string& x) {
                        if (x.size() > s.size()) return false;
                        return name == "startswith" ? s.compare(0, x.size(), x) == 0 : s.compare(s.size() - x.size(), x.size(), x) == 0;
                    };
                    if (p.is_list()) {
                        for (const value& x : p.list())
                            if (test(x.to_string())) return value(true);
                        return value(false);
                    }
                    return value(test(p.to_string()));
                }
                if (name == "split" || name == "rsplit") {
                    const value sep = arg(a, kw, 0, "sep");
                    const std::int64_t maxsplit = arg(a, kw, 1, "maxsplit", value(-1)).as_int();
                    return value(split(s, sep, maxsplit, name == "rsplit"));
                }
                if (name == "replace") {
                    const std::string from = arg(a, kw, 0, "old").to_string(), to = arg(a, kw, 1, "new").to_string();
                    return value(replace_all(s, from, to, arg(a, kw, 2, "count", value(-1)).as_int(), line));
                }
                if (name == "find" || name == "count" || name == "index" || name == "rfind") {
                    const std::string x = arg(a, kw, 0, "sub").to_string();
                    if (name == "count") {
                        if (x.empty()) return value(static_cast<std::int64_t>(value::utf8_length(s) + 1));
                        std::int64_t c = 0;
                        for (std::size_t p = s.find(x); p != std::string::npos; p = s.find(x, p + x.size())) ++c;
                        return value(c);
                    }
                    const std::size_t p = name == "rfind" ? s.rfind(x) : s.find(x);
                    if (p == std::string::npos) {
                        if (name == "index") template_error("substring not found", line);
                        return value(-1);
                    }
                    return value(static_cast<std::int64_t>(value::utf8_length(std::string_view(s).substr(0, p))));
                }
                if (name == "join") {
                    const value items = arg(a, kw, 0, "iterable");
                    std::string out;
                    bool first = true;
                    for (const value& v : items.list()) {
                        if (!first) out += s;
                        out += v.to_string();
                        first = false;
                    }
                    return value(std::move(out));
                }
                if (name == "splitlines") {
                    value_list out;
                    std::size_t b = 0;
                    for (std::size_t k = 0; k < s.size(); ++k)
                        if (s[k] == '\n') {
                            out.emplace_back(s.substr(b, k - b - (k > b && s[k - 1] == '\r')));
                            b = k + 1;
                        }
                    if (b < s.size()) out.emplace_back(s.substr(b));
                    return value(std::move(out));
                }
                if (name == "isdigit" || name == "isspace" || name == "isalpha" || name == "isalnum" || name == "isupper" ||
                    name == "islower") {
                    if (s.empty()) return value(false);
                    bool ok = true, cased = false;
                    for (const char ch : s) {
                        const auto c = static_cast<unsigned char>(ch);
                        if (name == "isdigit") ok = ok && std::isdigit(c);
                        else if (name == "isspace") ok = ok && std::isspace(c);
                        else if (name == "isalpha") ok = ok && std::isalpha(c);
                        else if (name == "isalnum") ok = ok && std::isalnum(c);
                        else if (name == "isupper") ok = ok && !std::islower(c), cased = cased || std::isupper(c);
                        else ok = ok && !std::isupper(c), cased = cased || std::islower(c);
                    }
                    if (name == "isupper" || name == "islower") ok = ok && cased;
                    return value(ok);
                }
                if (name == "format") {
                    std::string out;
                    std::size_t next = 0;
                    for (std::size_t k = 0; k < s.size(); ++k) {
                        if (s[k] == '{' && k + 1 < s.size() && s[k + 1] == '}') {
                            out += next < a.size() ? a[next++].to_string() : std::string();
                            ++k;
                        } else {
                            out += s[k];
                        }
                    }
                    return value(std::move(out));
                }
            } else if (obj.is_dict()) {
                if (name == "items") {
                    value_list out;
                    for (const auto& [k, v] : obj.dict()) out.push_back(value::tuple(value_list{value(k), v}));
                    return value(std::move(out));
                }
                if (name == "keys" || name == "values") {
                    value_list out;
                    for (const auto& [k, v] : obj.dict()) out.push_back(name == "keys" ? value(k) : v);
                    return value(std::move(out));
                }
                if (name == "get") {
                    const value v = obj.get(arg(a, kw, 0, "key").to_string());
                    return v.is_undefined() ? arg(a, kw, 1, "default", value::none()) : v;
                }
            } else if (obj.is_list()) {
                if (name == "index" || name == "count") {
                    const value x = arg(a, kw, 0, "value");
                    std::int64_t c = 0;
                    for (std::size_t k = 0; k < obj.list().size(); ++k)
                        if (equal(obj.list()[k], x)) {
                            if (name == "index") return value(static_cast<std::int64_t>(k));
                            ++c;
                        }
                    if (name == "index") template_error("value not in list", line);
                    return value(c);
                }
                if (name == "append" || name == "pop" || name == "insert" || name == "extend")
                    template_error("lists cannot be changed in a sandboxed template ('" + name + "')", line);
            } else if (obj.is_undefined()) {
                template_error("'" + name + "' called on an undefined value", line);
            }
            template_error(std::string(obj.type_name()) + " has no method '" + name + "'", line);
        }

        static value_list split(const std::string& s, const value& sep, std::int64_t maxsplit, bool from_right) {
            value_list out;
            if (!sep.is_string()) {  // runs of whitespace, no empty pieces
                std::vector<std::string> words;
                std::size_t k = 0;
                while (k < s.size()) {
                    while (k < s.size() && std::isspace(static_cast<unsigned char>(s[k]))) ++k;
                    if (k >= s.size()) break;
                    std::size_t e = k;
                    while (e < s.size() && !std::isspace(static_cast<unsigned char>(s[e]))) ++e;
                    words.push_back(s.substr(k, e - k));
                    k = e;
                }
                for (auto& w : words) out.emplace_back(std::move(w));
                (void)maxsplit;
                (void)from_right;
                return out;
            }
            const std::string& d = sep.str();
            if (d.empty()) template_error("split(): empty separator");
            std::vector<std::string> parts;
            if (!from_right) {
                std::size_t b = 0;
                for (std::size_t p = s.find(d); p != std::string::npos && (maxsplit < 0 || static_cast<std::int64_t>(parts.size()) < maxsplit);
                     p = s.find(d, b)) {
                    parts.push_back(s.substr(b, p - b));
                    b = p + d.size();
                }
                parts.push_back(s.substr(b));
            } else {
                std::size_t e = s.size();
                std::vector<std::string> rev;
                while (maxsplit < 0 || static_cast<std::int64_t>(rev.size()) < maxsplit) {
                    if (e < d.size()) break;
                    const std::size_t p = s.rfind(d, e - d.size());
                    if (p == std::string::npos) break;
                    rev.push_back(s.substr(p + d.size(), e - p - d.size()));
                    e = p;
                }
                parts.push_back(s.substr(0, e));
                parts.insert(parts.end(), rev.rbegin(), rev.rend());
            }
            for (auto& p : parts) out.emplace_back(std::move(p));
            return out;
        }

        static std::string replace_all(const std::string& s, const std::string& from, const std::string& to, std::int64_t count, int line) {
            if (from.empty()) template_error("replace(): empty pattern is not supported", line);
            std::string out;
            std::size_t b = 0;
            std::int64_t done = 0;
            for (std::size_t p = s.find(from); p != std::string::npos && (count < 0 || done < count); p = s.find(from, b), ++done) {
                out.append(s, b, p - b).append(to);
                b = p + from.size();
                if (out.size() > max_output) template_error("the rendered text is too long", line);
            }
            return out.append(s, b, std::string::npos);
        }

        static value filter_case(const std::string& name, const value& v) {
            std::string s = v.to_string();
            if (name == "capitalize") {
                for (std::size_t k = 0; k < s.size(); ++k) s[k] = static_cast<char>(k == 0 ? std::toupper(static_cast<unsigned char>(s[k])) : std::tolower(static_cast<unsigned char>(s[k])));
            } else {  // title
                bool start = true;
                for (char& c : s) {
                    const auto u = static_cast<unsigned char>(c);
                    c = static_cast<char>(start ? std::toupper(u) : std::tolower(u));
                    start = !std::isalnum(u);
                }
            }
            return value(std::move(s));
        }

        // A filter applied to `v` (e.a[0] is the filtered expression; its value is `v`).
        value call_filter(const expr& e, const value& v) {
            value_list a;
            kwargs kw;
            args_of(e, 1, a, kw);
            return filter(e.name, v, a, kw, e.line);
        }

        value filter(const std::string& name, const value& v, value_list& a, kwargs& kw, int line) {
            if (name == "trim") return method(v.is_string() ? v : value(v.to_string()), "strip", a, kw, line);
            if (name == "upper" || name == "lower") return method(value(v.to_string()), name, a, kw, line);
            if (name == "capitalize" || name == "title") return filter_case(name, v);
            if (name == "length" || name == "count") return value(static_cast<std::int64_t>(v.length()));
            if (name == "string") return value(v.to_string());
            if (name == "safe") return v.is_markup() ? v : value::markup(v.to_string());
            if (name == "e" || name == "escape" || name == "forceescape")
                return v.is_markup() && name != "forceescape" ? v : value::markup(value::html_escape(v.to_string()));
            if (name == "tojson") {
                // HF's signature: tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)
                const bool ascii = arg(a, kw, 0, "ensure_ascii").truthy();
                const value ind = arg(a, kw, 1, "indent");
                const value seps = arg(a, kw, 2, "separators");
                std::string isep, ksep = ": ";
                if (seps.is_list() && seps.list().size() == 2) isep = seps.list()[0].to_string(), ksep = seps.list()[1].to_string();
                return value(v.to_json(ind.is_int() ? static_cast<int>(ind.as_int()) : -1, isep, ksep, arg(a, kw, 3, "sort_keys").truthy(), ascii));
            }
            if (name == "default" || name == "d") {
                const bool boolean = arg(a, kw, 1, "boolean").truthy();
                if (v.is_undefined() || (boolean && !v.truthy())) return arg(a, kw, 0, "default_value", value(std::string()));
                return v;
            }
            if (name == "replace") return method(value(v.to_string()), "replace", a, kw, line);
            if (name == "join") {
                const std::string sep = arg(a, kw, 0, "d", value(std::string())).to_string();
                const value attr = arg(a, kw, 1, "attribute");
                std::string out;
                bool first = true;
                for (const value& x : iterate(v, line)) {
                    if (!first) out += sep;
                    out += (attr.is_undefined() ? x : attribute(x, attr.to_string(), line)).to_string();
                    first = false;
                }
                return value(std::move(out));
            }
            if (name == "first" || name == "last") {
                const value_list items = iterate(v, line);
                if (items.empty()) return {};
                return name == "first" ? items.front() : items.back();
            }
            if (name == "list") return v.is_list() ? v.as_list() : value(iterate(v, line));
            if (name == "reverse") {
                if (v.is_string()) {
                    auto ch = utf8_chars(v.str());
                    std::string out;
                    for (auto it = ch.rbegin(); it != ch.rend(); ++it) out += *it;
                    return value(std::move(out));
                }
                value_list items = iterate(v, line);
                std::reverse(items.begin(), items.end());
                return value(std::move(items));
            }
            if (name == "items") return method(v, "items", a, kw, line);
            if (name == "dictsort") {
                value_list items = method(v, "items", a, kw, line).list();
                std::stable_sort(items.begin(), items.end(), [](const value& x, const value& y) { return x.list()[0].str() < y.list()[0].str(); });
                return value(std::move(items));
            }
            if (name == "int") {
                if (v.is_string()) {
                    try {
                        return value(static_cast<std::int64_t>(std::stoll(v.str())));
                    } catch (...) {
                        return arg(a, kw, 0, "default", value(0));
                    }
                }
                if (v.is_number() || v.is_bool()) return value(v.as_int());
                return arg(a, kw, 0, "default", value(0));
            }
            if (name == "float") {
                if (v.is_string()) {
                    try {
                        return value(std::stod(v.str()));
                    } catch (...) {
                        return arg(a, kw, 0, "default", value(0.0));
                    }
                }
                if (v.is_number() || v.is_bool()) return value(v.as_float());
                return arg(a, kw, 0, "default", value(0.0));
            }
            if (name == "abs") return v.is_float() ? value(std::fabs(v.as_float())) : value(v.as_int() < 0 ? -v.as_int() : v.as_int());
            if (name == "round") {
                const double p = std::pow(10.0, static_cast<double>(arg(a, kw, 0, "precision", value(0)).as_int()));
                return value(std::nearbyint(v.as_float() * p) / p);
            }
            if (name == "indent") {
                const value w = arg(a, kw, 0, "width", value(4));
                const std::string pad = w.is_string() ? w.str() : std::string(static_cast<std::size_t>(std::max<std::int64_t>(0, w.as_int())), ' ');
                const bool first = arg(a, kw, 1, "first").truthy(), blank = arg(a, kw, 2, "blank").truthy();
                const std::string s = v.to_string();
                std::string out;
                std::size_t b = 0;
                bool is_first = true;
                for (;;) {
                    const std::size_t nl = s.find('\n', b);
                    const std::string ln = s.substr(b, nl == std::string::npos ? std::string::npos : nl - b);
                    if ((!is_first || first) && (blank || !ln.empty())) out += pad;
                    out += ln;
                    if (nl == std::string::npos) break;
                    out += '\n';
                    b = nl + 1;
                    is_first = false;
                }
                return value(std::move(out));
            }
            if (name == "unique") {
                value_list out;
                for (const value& x : iterate(v, line))
                    if (std::none_of(out.begin(), out.end(), [&](const value& y) { return equal(x, y); })) out.push_back(x);
                return value(std::move(out));
            }
            if (name == "sort") {
                value_list items = iterate(v, line);
                const bool rev = arg(a, kw, 0, "reverse").truthy();
                const value attr = arg(a, kw, 2, "attribute");
                auto key = [&](const value& x) { return attr.is_undefined() ? x : attribute(x, attr.to_string(), line); };
                std::stable_sort(items.begin(), items.end(), [&](const value& x, const value& y) {
                    return rev ? compare("<", key(y), key(x), line) : compare("<", key(x), key(y), line);
                });
                return value(std::move(items));
            }
            if (name == "selectattr" || name == "rejectattr" || name == "select" || name == "reject") {
                const bool by_attr = name == "selectattr" || name == "rejectattr";
                const bool keep_when = name == "selectattr" || name == "select";
                const std::string attr = by_attr ? (a.empty() ? std::string() : a[0].to_string()) : std::string();
                const std::size_t test_at = by_attr ? 1 : 0;
                value_list out;
                if (!v.truthy()) return value::generator({});  // jinja2 yields nothing for a false value
                for (const value& x : iterate(v, line)) {
                    const value subject = by_attr ? attribute_or_undefined(x, attr) : x;
                    bool r = false;
                    if (a.size() <= test_at) {
                        r = subject.truthy();
                    } else {
                        value_list targs(a.begin() + static_cast<std::ptrdiff_t>(test_at) + 1, a.end());
                        r = test(a[test_at].to_string(), subject, targs, line);
                    }
                    if (r == keep_when) out.push_back(x);
                }
                return value::generator(std::move(out));
            }
            if (name == "map") {
                const value attr = arg(a, kw, 99, "attribute");
                value_list out;
                if (!v.truthy()) return value::generator({});
                if (!attr.is_undefined()) {
                    const value dflt = arg(a, kw, 99, "default");
                    for (const value& x : iterate(v, line)) {
                        value y = attribute_or_undefined(x, attr.to_string());
                        out.push_back(y.is_undefined() && !dflt.is_undefined() ? dflt : y);
                    }
                    return value::generator(std::move(out));
                }
                if (a.empty()) template_error("map() needs a filter name or attribute=", line);
                const std::string f = a[0].to_string();
                value_list rest(a.begin() + 1, a.end());
                for (const value& x : iterate(v, line)) {
                    value_list fa = rest;
                    kwargs none;
                    out.push_back(filter(f, x, fa, none, line));
                }
                return value::generator(std::move(out));
            }
            if (name == "sum") {
                double total = 0;
                bool all_int = true;
                for (const value& x : iterate(v, line)) total += x.as_float(), all_int = all_int && !x.is_float();
                return all_int ? value(static_cast<std::int64_t>(total)) : value(total);
            }
            if (name == "min" || name == "max") {
                const value_list items = iterate(v, line);
                if (items.empty()) return {};
                value best = items[0];
                for (const value& x : items)
                    if (compare(name == "min" ? "<" : ">", x, best, line)) best = x;
                return best;
            }
            if (name == "wordcount") return value(static_cast<std::int64_t>(split(v.to_string(), value(), -1, false).size()));
            if (name == "format") {
                value_list l = a;
                return value(percent_format(v.to_string(), value(std::move(l)), line));
            }
            template_error("unsupported filter '" + name + "'", line);
        }

        value attribute_or_undefined(const value& x, const std::string& path) {
            value cur = x;
            std::size_t b = 0;
            for (;;) {  // "a.b" walks attributes
                const std::size_t dot = path.find('.', b);
                const std::string part = path.substr(b, dot == std::string::npos ? std::string::npos : dot - b);
                if (!cur.is_dict()) return {};
                cur = cur.get(part);
                if (dot == std::string::npos) return cur;
                b = dot + 1;
            }
        }

        value_list iterate(const value& v, int line) {
            if (v.is_list()) return v.list();
            if (v.is_undefined()) return {};
            if (v.is_dict()) {
                value_list out;
                for (const auto& kv : v.dict()) out.emplace_back(kv.first);
                return out;
            }
            if (v.is_string()) {
                value_list out;
                for (const auto& ch : utf8_chars(v.str())) out.emplace_back(ch);
                return out;
            }
            template_error(std::string("cannot iterate over a ") + (v.is_undefined() ? "undefined value" : v.type_name()), line);
        }

        bool run_test(const expr& e) {
            // `x is defined` must not fail on an undefined x's attributes: evaluate leniently.
            value subject;
            try {
                subject = eval(*e.a[0]);
            } catch (const error&) {
                if (e.name == "defined" || e.name == "undefined") subject = value();
                else throw;
            }
            value_list a;
            kwargs kw;
            args_of(e, 1, a, kw);
            return test(e.name, subject, a, e.line);
        }

        bool test(const std::string& name, const value& v, value_list& a, int line) {
            if (name == "defined") return !v.is_undefined();
            if (name == "undefined") return v.is_undefined();
            if (name == "none") return v.is_none();
            if (name == "string") return v.is_string();
            if (name == "mapping") return v.is_dict();
            if (name == "iterable") return v.is_list() || v.is_dict() || v.is_string();
            if (name == "sequence") return v.is_list() || v.is_dict() || v.is_string();
            if (name == "number") return v.is_number();
            if (name == "integer") return v.is_int();
            if (name == "float") return v.is_float();
            if (name == "boolean") return v.is_bool();
            if (name == "true") return v.is_bool() && v.as_bool();
            if (name == "false") return v.is_bool() && !v.as_bool();
            if (name == "callable") return v.is_callable();
            if (name == "even" || name == "odd") return (v.as_int() % 2 == 0) == (name == "even");
            if (name == "divisibleby") return !a.empty() && a[0].as_int() != 0 && v.as_int() % a[0].as_int() == 0;
            if (name == "eq" || name == "equalto" || name == "==" || name == "sameas") return !a.empty() && equal(v, a[0]);
            if (name == "ne" || name == "!=") return a.empty() || !equal(v, a[0]);
            if (name == "lt" || name == "<" || name == "lessthan") return !a.empty() && compare("<", v, a[0], line);
            if (name == "gt" || name == ">" || name == "greaterthan") return !a.empty() && compare(">", v, a[0], line);
            if (name == "le" || name == "<=") return !a.empty() && compare("<=", v, a[0], line);
            if (name == "ge" || name == ">=") return !a.empty() && compare(">=", v, a[0], line);
            if (name == "in") return !a.empty() && contains(a[0], v, line);
            if (name == "lower" || name == "upper") {
                const std::string s = v.to_string();
                return std::none_of(s.begin(), s.end(), [&](char c) {
                    return name == "lower" ? std::isupper(static_cast<unsigned char>(c)) : std::islower(static_cast<unsigned char>(c));
                });
            }
            template_error("unsupported test '" + name + "'", line);
        }
    };

    body body_;
};

}  // namespace lmtk::jinja
