// Tool calling (include/lmtk/serve/tool_calls.hpp): syntax detection on the real templates,
// the call grammars (every well-formed call of each syntax is a sentence, calls of unknown tools
// or with arguments the schema refuses are not), reading outputs back, the streaming hold-back,
// and request bodies' key order (core::ordered_members).
#include <catch2/catch.hpp>

#include "support/models.hpp"

#include <lmtk/core/json.hpp>
#include <lmtk/lmtk.hpp>
#include <lmtk/sample/grammar.hpp>
#include <lmtk/serve/engine.hpp>
#include <lmtk/serve/tool_calls.hpp>
#include <lmtk/tokenize/load.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

using namespace lmtk;
using namespace lmtk::serve;
using ojson = nlohmann::ordered_json;

namespace {

std::string read_template(const std::string& name) {
    const char* dir = std::getenv("LMTK_TEST_DATA");
    const std::filesystem::path p = std::filesystem::path(dir ? dir : "tests/data") / "chat_templates" / name;
    std::ifstream f(p, std::ios::binary);
    REQUIRE(f);
    std::stringstream s;
    s << f.rdbuf();
    return s.str();
}

tool_request weather_tools(tool_choice::kind_t kind = tool_choice::required, bool parallel = true) {
    tool_request tr;
    tr.tools = read_tool_defs(ojson::parse(R"([
        {"type": "function", "function": {"name": "get_weather", "description": "Weather now",
         "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"enum": ["C", "F"]}},
                        "required": ["city", "unit"]}}},
        {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}])"));
    tr.choice.kind = kind;
    tr.parallel = parallel;
    return tr;
}

bool sentence(const std::string& gbnf, const std::string& text) {
    sample::grammar_matcher m(std::make_shared<const sample::grammar>(sample::parse_gbnf(gbnf)));
    return m.accept(text) && m.complete();
}

}  // namespace

TEST_CASE("tool syntax follows the chat template", "[serve][tools]") {
    CHECK(detect_tool_syntax(read_template("Qwen-Qwen2.5-7B-Instruct.jinja")) == tool_syntax::hermes);
    CHECK(detect_tool_syntax(read_template("NousResearch-Hermes-3-Llama-3.1-8B-tool_use.jinja")) == tool_syntax::hermes);
    CHECK(detect_tool_syntax(read_template("meta-llama-Llama-3.1-8B-Instruct.jinja")) == tool_syntax::llama3);
    CHECK(detect_tool_syntax(read_template("meta-llama-Llama-3.3-70B-Instruct.jinja")) == tool_syntax::llama3);
    CHECK(detect_tool_syntax(read_template("mistralai-Mistral-Nemo-Instruct-2407.jinja")) == tool_syntax::mistral);
    CHECK(detect_tool_syntax(read_template("google-gemma-2-2b-it.jinja")) == tool_syntax::generic);
    CHECK(detect_tool_syntax("") == tool_syntax::generic);
}

TEST_CASE("tool definitions and tool_choice are checked", "[serve][tools]") {
    CHECK_THROWS_WITH(read_tool_defs(ojson::parse(R"([{"type": "function"}])")), Catch::Contains("function' must be an object"));
    CHECK_THROWS_WITH(read_tool_defs(ojson::parse(R"([{"type": "retrieval", "function": {"name": "x"}}])")),
                      Catch::Contains("only \"function\" tools"));
    CHECK_THROWS_WITH(read_tool_defs(ojson::parse(R"([{"function": {"name": "a"}}, {"function": {"name": "a"}}])")),
                      Catch::Contains("two tools are named 'a'"));
    const auto tr = weather_tools();
    const json named = json::parse(R"({"type": "function", "function": {"name": "get_time"}})");
    CHECK(read_tool_choice(&named, tr.tools).kind == tool_choice::named);
    const json unknown = json::parse(R"({"type": "function", "function": {"name": "launch"}})");
    CHECK_THROWS_WITH(read_tool_choice(&unknown, tr.tools), Catch::Contains("not among 'tools'"));
    const json required = "required";
    CHECK_THROWS_WITH(read_tool_choice(&required, {}), Catch::Contains("needs 'tools'"));
    const json bad = "sometimes";
    CHECK_THROWS(read_tool_choice(&bad, tr.tools));
}

TEST_CASE("call grammars take well-formed calls of the declared tools only", "[serve][tools]") {
    const auto tr = weather_tools();
    const std::string call = R"({"name": "get_weather", "arguments": {"city": "Paris", "unit": "C"}})";
    const std::string hermes = tool_call_gbnf(tool_syntax::hermes, tr);
    CHECK(sentence(hermes, "<tool_call>\n" + call + "\n</tool_call>"));
    CHECK(sentence(hermes, "<tool_call>\n" + call + "\n</tool_call>\n<tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}\n</tool_call>"));
    CHECK_FALSE(sentence(hermes, "<tool_call>\n{\"name\": \"launch\", \"arguments\": {}}\n</tool_call>"));
    CHECK_FALSE(sentence(hermes, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>"));
    CHECK_FALSE(sentence(hermes, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"unit\": \"K\"}}\n</tool_call>"));
    CHECK_FALSE(sentence(hermes, "Sure! <tool_call>\n" + call + "\n</tool_call>"));

    // One call only when parallel_tool_calls is false.
    const std::string single = tool_call_gbnf(tool_syntax::hermes, weather_tools(tool_choice::required, false));
    CHECK(sentence(single, "<tool_call>\n" + call + "\n</tool_call>"));
    CHECK_FALSE(sentence(single, "<tool_call>\n" + call + "\n</tool_call>\n<tool_call>\n" + call + "\n</tool_call>"));

    const std::string llama3 = tool_call_gbnf(tool_syntax::llama3, tr);
    CHECK(sentence(llama3, R"({"name": "get_weather", "parameters": {"city": "Oslo", "unit": "F"}})"));
    CHECK_FALSE(sentence(llama3, call));  // Llama 3 writes "parameters"

    const std::string mistral = tool_call_gbnf(tool_syntax::mistral, tr);
    CHECK(sentence(mistral, "[TOOL_CALLS][" + call + "]"));
    CHECK(sentence(mistral, "[TOOL_CALLS][" + call + ", {\"name\": \"get_time\", \"arguments\": {}}]"));

    const std::string generic_auto = tool_call_gbnf(tool_syntax::generic, weather_tools(tool_choice::automatic));
    CHECK(sentence(generic_auto, "{\"tool_calls\": [" + call + "]}"));
    CHECK(sentence(generic_auto, R"({"response": "It is sunny."})"));
    const std::string generic_required = tool_call_gbnf(tool_syntax::generic, tr);
    CHECK_FALSE(sentence(generic_required, R"({"response": "It is sunny."})"));

    tool_request named = tr;
    named.choice = {tool_choice::named, "get_time"};
    const std::string only_time = tool_call_gbnf(tool_syntax::hermes, named);
    CHECK(sentence(only_time, "<tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}\n</tool_call>"));
    CHECK_FALSE(sentence(only_time, "<tool_call>\n" + call + "\n</tool_call>"));

    tool_request unenforceable = tr;
    unenforceable.tools[0].parameters = ojson::parse(R"({"type": "object", "properties": {"n": {"type": "integer", "multipleOf": 3}}})");
    CHECK_THROWS_WITH(tool_call_gbnf(tool_syntax::hermes, unenforceable), Catch::Contains("get_weather") && Catch::Contains("multipleOf"));
}

TEST_CASE("outputs are read back into content and calls", "[serve][tools]") {
    const auto tools = weather_tools().tools;
    auto out = parse_tool_output(tool_syntax::hermes,
                                 "Let me check.<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"unit\": \"C\", \"city\": \"Paris\"}}\n</tool_call>",
                                 tools);
    REQUIRE(out.calls.size() == 1);
    CHECK(out.content == "Let me check.");
    CHECK(out.calls[0].name == "get_weather");
    CHECK(out.calls[0].arguments.dump() == R"({"unit":"C","city":"Paris"})");  // the model's key order

    out = parse_tool_output(tool_syntax::generic, R"( {"tool_calls": [{"name": "get_time", "arguments": {}}, {"name": "get_weather", "arguments": {"city": "Rome", "unit": "F"}}]})", tools);
    REQUIRE(out.calls.size() == 2);
    CHECK(out.calls[1].arguments["city"] == "Rome");
    CHECK(out.content.empty());
    out = parse_tool_output(tool_syntax::generic, R"({"response": "Hello"})", tools);
    CHECK(out.calls.empty());
    CHECK(out.content == "Hello");

    out = parse_tool_output(tool_syntax::mistral, R"([TOOL_CALLS][{"name": "get_time", "arguments": {}}])", tools);
    REQUIRE(out.calls.size() == 1);
    out = parse_tool_output(tool_syntax::llama3, R"({"name": "get_weather", "parameters": {"city": "Oslo", "unit": "C"}})", tools);
    REQUIRE(out.calls.size() == 1);
    CHECK(out.calls[0].arguments["city"] == "Oslo");
    out = parse_tool_output(tool_syntax::llama3, "I will call it. { \"name\" : \"get_time\" , \"parameters\" : { } } ", tools);
    REQUIRE(out.calls.size() == 1);  // blanks where the grammar allows them
    CHECK(out.content == "I will call it. ");

    // Not calls: unknown tools, broken JSON, text after the calls. The whole text stays content.
    for (const std::string text : {"<tool_call>\n{\"name\": \"launch\", \"arguments\": {}}\n</tool_call>",
                                   "<tool_call>\n{\"name\": \"get_time\", \"argu", "plain text"}) {
        out = parse_tool_output(tool_syntax::hermes, text, tools);
        CHECK(out.calls.empty());
        CHECK(out.content == text);
    }
}

TEST_CASE("streaming holds back only what may be a call", "[serve][tools]") {
    tool_stream lazy(tool_syntax::hermes, true);
    CHECK(lazy.feed("Let me ") == "Let me ");
    CHECK(lazy.feed("check <tool") == "check ");  // "<tool" may open a call
    CHECK(lazy.feed("_call>\n{\"name\"") == "");
    CHECK(lazy.feed("anything") == "");
    CHECK(lazy.shown() == "Let me check ");
    CHECK(lazy.rest_of("Let me check ") == "");

    tool_stream not_a_call(tool_syntax::hermes, true);
    CHECK(not_a_call.feed("a <b") == "a <b");
    CHECK(not_a_call.feed("<t") == "");
    CHECK(not_a_call.feed("able>") == "<table>");

    tool_stream from_start(tool_syntax::generic, false);
    CHECK(from_start.feed(R"({"response": "hi"})") == "");
    CHECK(from_start.rest_of("hi") == "hi");
}

TEST_CASE("request members keep the client's key order, within bounds", "[serve][tools]") {
    const std::string body = R"({"model": "m", "tools": [{"function": {"parameters": {"properties": {"zeta": {}, "alpha": {}}}}}],
                                  "messages": [], "format": {"b": 1, "a": 2}})";
    const ojson o = core::ordered_members(body, {"tools", "format"});
    CHECK(o.size() == 2);
    CHECK(o["format"].dump() == R"({"b":1,"a":2})");
    CHECK(o["tools"][0]["function"]["parameters"]["properties"].begin().key() == "zeta");
    // An object with too many keys is refused instead of being built one linear search at a time;
    // many objects of fewer keys are fine.
    std::string big = R"({"tools": [{)";
    for (int i = 0; i < 1100; ++i) big += (i ? ",\"k" : "\"k") + std::to_string(i) + "\": 0";
    big += "}]}";
    CHECK_THROWS_WITH(core::ordered_members(big, {"tools"}), Catch::Contains("more than 1024 keys"));
    CHECK(core::ordered_members(big, {"format"}).empty());  // keys of members not asked for are not counted
    std::string many = R"({"messages": [)";
    for (int i = 0; i < 3000; ++i) many += std::string(i ? "," : "") + R"({"role": "user", "content": "hi"})";
    many += "]}";
    CHECK(core::ordered_members(many, {"messages"})["messages"].size() == 3000);
}

TEST_CASE("a lazy grammar holds from its trigger on, and only then", "[serve][tools]") {
    // stories260K, greedy: "Once upon a time, there was a little girl named Lily. She loved..."
    // With the trigger "girl", the text up to it is the model's own; from "girl" on, the grammar
    // decides (a name the model would never pick, then the end).
    using model_t = model::llama<>;
    const model_t m(test::model_path("stories260K.gguf"));
    const auto tok = tokenize::load_tokenizer(m.source());
    serve::engine_options eo;
    eo.context.n_threads = 1;
    eo.context.n_ctx = 256;
    serve::engine<model_t> eng(m, tok, eo);
    const auto run = [&](const std::string& gbnf, const std::string& trigger) {
        serve::request rq;
        rq.prompt = tok.encode("Once upon a time", true, false);
        rq.max_tokens = 40;
        rq.sampling.temperature = 0.0f;
        rq.grammar = std::make_shared<const sample::grammar>(sample::parse_gbnf(gbnf));
        rq.grammar_trigger = trigger;
        auto ticket = eng.enter();
        auto lease = ticket.wait(rq.prompt, nullptr);
        return eng.run(**lease, rq, [](std::string_view, std::span<const lmtk::token_logprobs>) { return true; });
    };
    const serve::result free_run = run("root ::= \"x\"", "zzz");  // never triggered: the greedy text
    CHECK(free_run.text.rfind(", there was a little girl named Lily.", 0) == 0);
    CHECK(free_run.finish == lmtk::finish_reason::max_tokens);

    const serve::result r = run(R"(root ::= "girl" " named" " " ("Zed" | "Quax") "!")", "girl");
    CHECK((r.text == ", there was a little girl named Zed!" || r.text == ", there was a little girl named Quax!"));
    CHECK(r.finish != lmtk::finish_reason::max_tokens);  // the grammar was complete: it ended

    // A trigger that the grammar cannot take leaves the output free (and the caller finds no call).
    const serve::result off = run(R"(root ::= "boy")", "girl");
    CHECK(off.text.rfind(", there was a little girl named Lily.", 0) == 0);
}
