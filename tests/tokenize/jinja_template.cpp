// lmtk::jinja (tokenize/jinja/): the chat-template interpreter. Byte-identical agreement with
// transformers' apply_chat_template over 70 real templates is checked by
// tests/reference/test_chat_templates.py; this file pins Python's semantics in small cases (each
// expected string is what jinja2 3.1 prints, checked by hand with the venv's jinja2) and the
// refusals of hostile templates: every one an lmtk::error naming the problem, never a crash.
#include <lmtk/tokenize/jinja/template.hpp>

#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include <string>

namespace {

using lmtk::jinja::template_program;

std::string render(const std::string& source, const char* context = "{}") {
    return template_program(source).render(nlohmann::ordered_json::parse(context));
}

std::string error_of(const std::string& source, const char* context = "{}") {
    try {
        (void)render(source, context);
    } catch (const lmtk::error& e) {
        return e.what();
    }
    return "(no error)";
}

}  // namespace

TEST_CASE("jinja: Python's str() of every type, and json.dumps for tojson") {
    CHECK(render("{{ none }}|{{ true }}|{{ 1.0 }}|{{ 1e20 }}|{{ 0.1 + 0.2 }}|{{ 7 // 2 }}|{{ -7 // 2 }}|{{ 7 / 2 }}") ==
          "None|True|1.0|1e+20|0.30000000000000004|3|-4|3.5");
    CHECK(render("{{ ['a', 1, none, [true]] }}|{{ {'k': 'v', 'n': 2} }}") == "['a', 1, None, [True]]|{'k': 'v', 'n': 2}");
    CHECK(render("{{ {'b': [1, 2], 'a': 'é\"'} | tojson }}") == "{\"b\": [1, 2], \"a\": \"é\\\"\"}");
    CHECK(render("{{ {'a': 1} | tojson(indent=2) }}") == "{\n  \"a\": 1\n}");
    CHECK(render(R"({{ x | tojson }})", R"({"x": {"z": 1, "a": [null, 2.5]}})") == R"({"z": 1, "a": [null, 2.5]})");
}

TEST_CASE("jinja: whitespace control as transformers sets it (trim_blocks, lstrip_blocks)") {
    CHECK(render("a\n  {% if true %}\nb\n  {% endif %}\nc") == "a\nb\nc");
    CHECK(render("a  {%- if true -%}  b  {%- endif %}") == "ab");
    CHECK(render("a\n  {%+ if true %}b{% endif %}") == "a\n  b");
    CHECK(render("{# comment #}x") == "x");
}

TEST_CASE("jinja: loops, namespaces, macros, filters and tests") {
    const char* msgs = R"({"messages": [{"role": "user", "content": " hi "}, {"role": "assistant", "content": "yo"}]})";
    CHECK(render("{% for m in messages %}{{ loop.index }}{{ m.role[0] }}{{ m['content'] | trim }}{% if not loop.last %},{% endif %}{% endfor %}", msgs) ==
          "1uhi,2ayo");
    CHECK(render("{% set ns = namespace(n=0) %}{% for i in range(10) if i is odd %}{% set ns.n = ns.n + i %}{% endfor %}{{ ns.n }}") == "25");
    CHECK(render("{% for i in range(5) %}{% if i == 3 %}{% break %}{% endif %}{{ i }}{% endfor %}") == "012");
    CHECK(render("{% for a, b in [[1, 2], [3, 4]] %}{{ a * b }};{% else %}empty{% endfor %}{% for x in [] %}{% else %}empty{% endfor %}") ==
          "2;12;empty");
    CHECK(render("{% macro f(a, b='d') %}[{{ a }}{{ b }}]{% endmacro %}{{ f(1) }}{{ f(b=2, a=0) }}") == "[1d][02]");
    CHECK(render("{{ messages | selectattr('role', 'equalto', 'user') | map(attribute='role') | list }}", msgs) == "['user']");
    CHECK(render("{{ 'a,b'.split(',') | join('-') }}|{{ 'Hi' | upper }}{{ 'x' * 3 }}|{{ [3, 1, 2] | sort | first }}|{{ 'abc'[::-1] }}") ==
          "a-b|HIxxx|1|cba");
    CHECK(render("{{ x is defined }}{{ none is none }}{{ 'a' is string }}{{ 3 is divisibleby 3 }}{{ [1] is iterable }}") ==
          "FalseTrueTrueTrueTrue");
    CHECK(render("{{ 'a' if false }}|{{ 'b' if false else 'c' }}|{{ missing }}|{{ missing is defined }}") == "|c||False");
    CHECK(error_of("{{ missing.attr }}") != "(no error)");  // jinja2: UndefinedError
    CHECK(render("{% set x %}captured {{ 1 + 1 }}{% endset %}{{ x | length }}") == "10");
    CHECK(render("{{ '%s-%d' | format('x', 3) }}|{{ 'Hello World'.split(' ') }}|{{ ' x '.strip() }}|{{ 'ab'.startswith('a') }}") ==
          "x-3|['Hello', 'World']|x|True");
    CHECK(render("{{ {'b': 1, 'a': 2} | items | list }}|{{ {'k': 1}.get('z', 'dflt') }}") == "[('b', 1), ('a', 2)]|dflt");
    CHECK(render("{{ (1, 'a') }}{{ (1,) }}{{ (1, 2) | list }}{{ (1, 2) | tojson }}") == "(1, 'a')(1,)[1, 2][1, 2]");
}

TEST_CASE("jinja: the template's own refusals become errors with its message") {
    CHECK(error_of("{{ raise_exception('System role not supported') }}").find("System role not supported") != std::string::npos);
}

TEST_CASE("jinja: unsupported constructs are named, at parse time") {
    CHECK(error_of("{% for x in y recursive %}{% endfor %}").find("recursive for loops are not supported") != std::string::npos);
    CHECK(error_of("{% include 'x' %}").find("line 1") != std::string::npos);
    CHECK(error_of("{% if x %}").find("missing {% endif %}") != std::string::npos);
    CHECK(error_of("{{ 1 + }}").find("line 1") != std::string::npos);
}

TEST_CASE("jinja: hostile templates are refused, not crashes") {
    const int n = 5000;  // deep enough to overflow the stack of a recursive parser or destructor
    auto rep = [](const std::string& s, int k) {
        std::string out;
        for (int i = 0; i < k; ++i) out += s;
        return out;
    };
    CHECK(error_of("{{ " + rep("(", n) + "1" + rep(")", n) + " }}").find("nests too deeply") != std::string::npos);
    CHECK(error_of("{{ 1" + rep(" + 1", n) + " }}").find("nests too deeply") != std::string::npos);
    CHECK(error_of("{{ " + rep("-", n) + "1 }}").find("nests too deeply") != std::string::npos);
    CHECK(error_of("{{ " + rep("not ", n) + "1 }}").find("nests too deeply") != std::string::npos);
    CHECK(error_of(rep("{% if 1 %}", n) + "x" + rep("{% endif %}", n)).find("nests too deeply") != std::string::npos);
    CHECK(error_of("{% filter " + rep("upper|", n) + "upper %}x{% endfilter %}").find("too deeply") != std::string::npos);
    CHECK(error_of("{% set ns = namespace(x=[]) %}{% for i in range(100000) %}{% set ns.x = [ns.x] %}{% endfor %}{{ ns.x }}")
              .find("nests too deeply") != std::string::npos);
    CHECK(error_of("{% set ns = namespace(a=1) %}{% set ns.a = [ns] %}{{ ns }}").find("cannot hold a namespace") != std::string::npos);
    CHECK(error_of("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}").find("too deeply") != std::string::npos);
    CHECK(error_of("{% for i in range(100000000) %}{% endfor %}").find("too long") != std::string::npos);
    CHECK(error_of("{% for i in range(2000) %}{% for j in range(2000) %}{% endfor %}{% endfor %}").find("runs too long") !=
          std::string::npos);
    CHECK(error_of("{{ 'x' * 100000000 }}").find("too long") != std::string::npos);
    CHECK(error_of("{{ 'ab' * 9223372036854775807 }}").find("too long") != std::string::npos);
    // Found by fuzz_chat_template (UBSan: signed overflow); Python's ints are unbounded, lmtk's refuse.
    CHECK(error_of("{{ -9223372036854775807 - 2 }}").find("integer overflow") != std::string::npos);
    CHECK(error_of("{{ 2 ** 70 }}").find("integer overflow") != std::string::npos);
    CHECK(error_of("{{ (-9223372036854775807 - 1) // -1 }}").find("integer overflow") != std::string::npos);
    CHECK(render("{{ 3 - 5 }}|{{ 2 ** 10 }}|{{ -(3) }}|{{ 7 % -3 }}") == "-2|1024|-3|-2");
    CHECK(error_of("{% for i in range(100000) %}{{ 'y' * 1000 }}{% endfor %}").find("too long") != std::string::npos);
}
